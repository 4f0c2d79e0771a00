//! The catalog: `/elements...`. No credentials needed.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use elements_core::{Element, OAuthUrlRequest};

use super::{PathParam, QueryPairs};
use crate::auth::OptionalAccount;
use crate::element_view::ElementJson as _;
use crate::error::ApiError;
use crate::wire::OAuthUrlResponse;
use crate::AppState;

/// The catalog routes, with their full paths (`/elements/api-v2/elements...`):
/// an embedding application merges them into its own router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(api!("/elements"), get(list))
        .route(api!("/elements/keys"), get(keys))
        .route(api!("/elements/{key_or_id}"), get(show))
        .route(
            api!("/elements/{key_or_id}/configuration"),
            get(configuration),
        )
        .route(
            api!("/elements/{key_or_id}/oauth/url"),
            get(oauth_url).post(oauth_url_post),
        )
}

/// Queries longer than this get no "did you mean": no element key is near
/// this long (the longest built-in key is about 20 characters), and edit
/// distance costs the product of the lengths, so a 60,000-character key
/// would cost each anonymous request tens of milliseconds.
pub const MAX_SUGGESTION_QUERY: usize = 100;

/// The element named by a key or id, or a 404 that suggests close keys.
pub fn find<'a>(state: &'a AppState, key_or_id: &str) -> Result<&'a Arc<dyn Element>, ApiError> {
    state.registry.get(key_or_id).ok_or_else(|| {
        let shown: String = key_or_id
            .chars()
            .take(100)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        let suggestions = if key_or_id.len() <= MAX_SUGGESTION_QUERY {
            state.registry.suggest(key_or_id)
        } else {
            Vec::new()
        };
        let mut message = format!("no element with key or id `{shown}`");
        if !suggestions.is_empty() {
            message.push_str(&format!("; did you mean {}?", suggestions.join(", ")));
        }
        ApiError::NotFound(message)
    })
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/elements",
    tag = "catalog",
    responses(
        (status = 200, description = "Every element, sorted by id", body = Vec<crate::element_view::ElementView>),
    )
)]
async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(own) = crate::private_elements::list_for(&state, &headers).await {
        return own;
    }
    let all: Vec<_> = state.registry.iter().map(|e| e.spec().view()).collect();
    Json(all).into_response()
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/elements/keys",
    tag = "catalog",
    responses(
        (status = 200, description = "Every element key, sorted by id", body = Vec<String>, example = json!(["hubspot", "github"])),
    )
)]
async fn keys(State(state): State<AppState>) -> Response {
    let all: Vec<&str> = state.registry.iter().map(|e| e.key()).collect();
    Json(all).into_response()
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/elements/{key_or_id}",
    tag = "catalog",
    params(
        ("key_or_id" = String, Path, example = "hubspot", description = "An element key (`hubspot`) or id (`43`)"),
    ),
    responses(
        (status = 200, description = "The element: the seed's eleven fields, hub, authentication, configuration", body = crate::element_view::ElementView),
        (status = 404, description = "No such element; the message suggests close keys", body = crate::error::ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    PathParam(key_or_id): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (element, private) =
        crate::private_elements::find_for(&state, &headers, &key_or_id).await?;
    let mut view = serde_json::to_value(element.spec().view())
        .map_err(|e| ApiError::Internal(format!("element view: {e}")))?;
    crate::private_elements::mark(private, &mut view);
    if let Some(entries) = view.get_mut("configuration") {
        strip_null_defaults(entries);
    }
    Ok(Json(view).into_response())
}

/// compat: Cloud Elements leaves `defaultValue` out when there is none,
/// never `null`.
fn strip_null_defaults(entries: &mut serde_json::Value) {
    for entry in entries.as_array_mut().into_iter().flatten() {
        if let Some(object) = entry.as_object_mut() {
            if object.get("defaultValue").is_some_and(|v| v.is_null()) {
                object.remove("defaultValue");
            }
        }
    }
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/elements/{key_or_id}/configuration",
    tag = "catalog",
    params(
        ("key_or_id" = String, Path, example = "hubspot", description = "An element key (`hubspot`) or id (`43`)"),
    ),
    responses(
        (status = 200, description = "The element's configuration entries", body = Vec<crate::openapi::ConfigEntrySchema>),
        (status = 404, description = "No such element; the message suggests close keys", body = crate::error::ErrorBody),
    )
)]
async fn configuration(
    State(state): State<AppState>,
    PathParam(key_or_id): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (element, _) = crate::private_elements::find_for(&state, &headers, &key_or_id).await?;
    let mut entries = serde_json::to_value(element.configuration())
        .map_err(|e| ApiError::Internal(format!("element configuration: {e}")))?;
    strip_null_defaults(&mut entries);
    Ok(Json(entries).into_response())
}

/// The largest query parameter value accepted.
const MAX_PARAM: usize = 2048;

/// The `oauth/url` query as a request: known names to their fields, any
/// other name to `params`. Refuses repeated names, oversized values and
/// control characters (nothing raw is ever reflected).
pub fn oauth_url_request(pairs: Vec<(String, String)>) -> Result<OAuthUrlRequest, ApiError> {
    let shown =
        |name: &str| -> String { name.chars().filter(|c| !c.is_control()).take(64).collect() };
    // Checked in order first, the names borrowed (no copy of each name).
    let mut seen = BTreeSet::new();
    for (name, value) in &pairs {
        if value.len() > MAX_PARAM || name.len() > 256 {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{}` is too long",
                shown(name)
            )));
        }
        if value.chars().chain(name.chars()).any(char::is_control) {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{}` must not contain control characters",
                shown(name)
            )));
        }
        if !seen.insert(name.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{}` is given more than once",
                shown(name)
            )));
        }
    }
    let mut request = OAuthUrlRequest::default();
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "apiKey" => &mut request.api_key,
            "apiSecret" => &mut request.api_secret,
            "scope" => &mut request.scope,
            "callbackUrl" => &mut request.callback_url,
            "state" => &mut request.state,
            "codeVerifier" => &mut request.code_verifier,
            _ => {
                request.params.insert(name, value);
                continue;
            }
        };
        *slot = Some(value);
    }
    Ok(request)
}

/// The provider's authorization URL (the seed's step 1). Credentials are optional: a
/// caller that sends them gets its organization's callback allow-list enforced.
#[utoipa::path(
    get,
    path = "/elements/api-v2/elements/{key_or_id}/oauth/url",
    tag = "catalog",
    security((), ("UserOrganization" = [])),
    params(
        ("key_or_id" = String, Path, example = "hubspot", description = "An element key (`hubspot`) or id (`43`)"),
        ("apiKey" = Option<String>, Query, description = "The OAuth client id", example = "123456789d-1234-12e4-bda9-12345b8bf20"),
        ("apiSecret" = Option<String>, Query, description = "The client secret (HubSpot's legacy flow: the portal id)", example = "123456"),
        ("scope" = Option<String>, Query, description = "Scopes", example = "contacts-rw offline"),
        ("callbackUrl" = Option<String>, Query, description = "The callback URL registered with the provider", example = "http://demonstrab.ly"),
        ("state" = Option<String>, Query, description = "Passed through to the callback"),
        ("codeVerifier" = Option<String>, Query, description = "PKCE elements: a caller-chosen RFC 7636 verifier (else the server makes one)"),
        ("oauth.flow" = Option<String>, Query, description = "HubSpot: `legacy` (default) or `current`; other elements take their own configuration keys as parameters too"),
    ),
    responses(
        (status = 200, description = "Where to send the user; PKCE elements also answer `codeVerifier` (never cached)", body = crate::wire::OAuthUrlResponse, example = crate::openapi::seed_oauth_url),
        (status = 400, description = "A parameter is missing (`missing` lists every one) or wrong, or (for a caller that sends its organization's credentials) `callbackUrl` is not on the organization's allow-list", body = crate::error::ErrorBody),
        (status = 404, description = "No such element; the message suggests close keys", body = crate::error::ErrorBody),
        (status = 409, description = "The element is deactivated for the calling organization (PUT /elements/{keyOrId}/active re-activates it)", body = crate::error::ErrorBody),
    )
)]
async fn oauth_url(
    State(state): State<AppState>,
    PathParam(key_or_id): PathParam<String>,
    QueryPairs(pairs): QueryPairs,
    caller: OptionalAccount,
) -> Result<Response, ApiError> {
    oauth_url_for(&state, &key_or_id, pairs, caller).await
}

/// compat: `POST .../oauth/url` with the parameters as a JSON object
/// (`apiKey`, `apiSecret`, `callbackUrl`, `scope`, `state`, element fields):
/// the same answer as the `GET` with them as query parameters. Strings,
/// numbers and booleans are taken as text; a query string is refused (one
/// source of parameters).
#[utoipa::path(
    post,
    path = "/elements/api-v2/elements/{key_or_id}/oauth/url",
    tag = "catalog",
    security((), ("UserOrganization" = [])),
    params(
        ("key_or_id" = String, Path, example = "hubspot", description = "An element key (`hubspot`) or id (`43`)"),
    ),
    request_body(content = HashMap<String, crate::openapi::OAuthUrlValue>, description = "The GET's query parameters as one JSON object (strings, numbers or booleans; null is left out)", example = json!({"apiKey": "123456789d-1234-12e4-bda9-12345b8bf20", "apiSecret": "123456", "scope": "contacts-rw offline", "callbackUrl": "http://demonstrab.ly"})),
    responses(
        (status = 200, description = "Where to send the user; PKCE elements also answer `codeVerifier` (never cached)", body = crate::wire::OAuthUrlResponse, example = crate::openapi::seed_oauth_url),
        (status = 400, description = "A parameter is missing (`missing` lists every one) or wrong, or (for a caller that sends its organization's credentials) `callbackUrl` is not on the organization's allow-list", body = crate::error::ErrorBody),
        (status = 404, description = "No such element; the message suggests close keys", body = crate::error::ErrorBody),
        (status = 409, description = "The element is deactivated for the calling organization (PUT /elements/{keyOrId}/active re-activates it)", body = crate::error::ErrorBody),
    )
)]
async fn oauth_url_post(
    State(state): State<AppState>,
    PathParam(key_or_id): PathParam<String>,
    QueryPairs(query): QueryPairs,
    caller: OptionalAccount,
    crate::body::JsonBody(body): crate::body::JsonBody<crate::body::UniqueMap<serde_json::Value>>,
) -> Result<Response, ApiError> {
    if let Some((name, _)) = query.first() {
        return Err(ApiError::BadRequest(format!(
            "query parameter `{}`: `POST .../oauth/url` takes its parameters in the JSON body",
            name.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        )));
    }
    let mut pairs = Vec::with_capacity(body.0.len());
    for (name, value) in body.0 {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => continue,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "`{}` must be a string, a number or a boolean",
                    name.chars()
                        .filter(|c| !c.is_control())
                        .take(64)
                        .collect::<String>()
                )))
            }
        };
        pairs.push((name, text));
    }
    oauth_url_for(&state, &key_or_id, pairs, caller).await
}

async fn oauth_url_for(
    state: &AppState,
    key_or_id: &str,
    pairs: Vec<(String, String)>,
    caller: OptionalAccount,
) -> Result<Response, ApiError> {
    // The seed's call has no credentials; a caller that sends them gets its
    // organization's callback allow-list enforced.
    let organization = caller.0.map(|p| p.organization_id);
    let element = crate::private_elements::find_usable(state, organization, key_or_id).await?;
    let mut request = oauth_url_request(pairs)?;
    if element.spec().oauth.is_none() {
        return Err(ApiError::BadRequest(format!(
            "element `{}` does not use OAuth",
            element.key()
        )));
    }
    if let Some(verifier) = &request.code_verifier {
        crate::pkce::check_code_verifier(verifier, "codeVerifier")?;
    }
    if element.uses_pkce() && request.code_verifier.is_none() {
        request.code_verifier = Some(crate::pkce::new_code_verifier());
    }
    let url = element.oauth_url(&request)?;
    // format: a custom host must be within the deployment's allow-list.
    element.spec().check_custom_hosts(
        &|k| request.params.get(k).cloned(),
        &state.allowed_custom_hosts,
    )?;
    if let (Some(org), Some(callback)) = (organization, request.callback_url.as_deref()) {
        super::organizations::check_allowed(state, org, callback).await?;
    }
    let verifier = if element.uses_pkce() {
        request.code_verifier.as_deref()
    } else {
        None
    };
    // The answer may carry a PKCE verifier: a secret, never cached.
    Ok(crate::headers::json_no_store(&OAuthUrlResponse {
        element: element.key(),
        oauth_url: &url.url,
        code_verifier: verifier,
    }))
}
