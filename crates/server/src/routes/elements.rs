//! The catalog: `/elements...`. No credentials needed.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
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

/// The `oauth/url` parameters as a request: known names to their fields,
/// any other name to `params`. Refuses repeated names, oversized values
/// and control characters (nothing raw is ever reflected).
pub fn oauth_url_request(pairs: Vec<(String, String)>) -> Result<OAuthUrlRequest, ApiError> {
    let mut request = RequestBuilder::default();
    for (name, value) in pairs {
        request.add(&name, value.into())?;
    }
    Ok(request.request)
}

/// [`oauth_url_request`] of a raw query string, decoded pair by pair
/// without copying the names (issue 19): exactly what `parse_query` then
/// `oauth_url_request` give, the same refusal included (a property test
/// holds the two together). The outer error is a pair that does not
/// decode (the query's own 400, which comes first); the inner one what
/// the parameters break.
pub fn oauth_url_request_from_query(
    raw: &str,
) -> Result<Result<OAuthUrlRequest, ApiError>, ApiError> {
    let mut request = RequestBuilder::default();
    let mut refused = None;
    for (name, value) in super::raw_pairs(raw) {
        let (name, value) = (
            super::decode_component(name)?,
            super::decode_component(value)?,
        );
        // Past a refusal, the rest is only checked to decode.
        if refused.is_none() {
            refused = request.add(&name, value).err();
        }
    }
    Ok(match refused {
        Some(refusal) => Err(refusal),
        None => Ok(request.request),
    })
}

/// Builds an [`OAuthUrlRequest`] one parameter at a time, in query order.
#[derive(Default)]
struct RequestBuilder {
    request: OAuthUrlRequest,
    /// Which known names were given (bit per slot), for the repeat check.
    given: u8,
}

impl RequestBuilder {
    fn add(&mut self, name: &str, value: Cow<'_, str>) -> Result<(), ApiError> {
        if value.len() > MAX_PARAM || name.len() > 256 {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{}` is too long",
                shown(name)
            )));
        }
        if has_control(&value) || has_control(name) {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{}` must not contain control characters",
                shown(name)
            )));
        }
        let request = &mut self.request;
        let (bit, slot) = match name {
            "apiKey" => (0, &mut request.api_key),
            "apiSecret" => (1, &mut request.api_secret),
            "scope" => (2, &mut request.scope),
            "callbackUrl" => (3, &mut request.callback_url),
            "state" => (4, &mut request.state),
            "codeVerifier" => (5, &mut request.code_verifier),
            _ => {
                if request.params.contains_key(name) {
                    return Err(repeated(name));
                }
                request.params.insert(name.to_owned(), value.into_owned());
                return Ok(());
            }
        };
        if self.given & (1 << bit) != 0 {
            return Err(repeated(name));
        }
        self.given |= 1 << bit;
        *slot = Some(value.into_owned());
        Ok(())
    }
}

/// Whether `text` has a control character (C0, DEL or C1); ASCII text is
/// checked byte by byte, without decoding characters.
fn has_control(text: &str) -> bool {
    if text.is_ascii() {
        text.bytes().any(|b| b.is_ascii_control())
    } else {
        text.chars().any(char::is_control)
    }
}

fn repeated(name: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "query parameter `{}` is given more than once",
        shown(name)
    ))
}

/// A parameter name as an error message shows it: control characters
/// dropped, at most 64 characters.
fn shown(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// The query of `GET .../oauth/url`, read as a request. A query that does
/// not decode is refused at once (as every route's query is); what its
/// parameters break is refused after the element is looked up.
pub struct OAuthQuery(Result<OAuthUrlRequest, ApiError>);

impl<S: Send + Sync> FromRequestParts<S> for OAuthQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        oauth_url_request_from_query(parts.uri.query().unwrap_or("")).map(OAuthQuery)
    }
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
    OAuthQuery(query): OAuthQuery,
    caller: OptionalAccount,
) -> Result<Response, ApiError> {
    oauth_url_for(&state, &key_or_id, query, caller).await
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
            shown(name)
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
                    shown(&name)
                )))
            }
        };
        pairs.push((name, text));
    }
    oauth_url_for(&state, &key_or_id, oauth_url_request(pairs), caller).await
}

async fn oauth_url_for(
    state: &AppState,
    key_or_id: &str,
    request: Result<OAuthUrlRequest, ApiError>,
    caller: OptionalAccount,
) -> Result<Response, ApiError> {
    // The seed's call has no credentials; a caller that sends them gets its
    // organization's callback allow-list enforced.
    let organization = caller.0.map(|p| p.organization_id);
    let element = crate::private_elements::find_usable(state, organization, key_or_id).await?;
    // The parameters' refusal comes after the element's 404.
    let mut request = request?;
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

#[cfg(test)]
mod tests {
    use super::has_control;

    #[test]
    fn control_characters_are_found_in_ascii_and_beyond() {
        for text in ["a\u{0}", "\u{1f}b", "x\u{7f}", "é\u{85}", "\u{9f}", "é\n"] {
            assert!(has_control(text), "{text:?}");
        }
        for text in ["", "plain ascii ~", "é", "東京", "\u{a0}"] {
            assert!(!has_control(text), "{text:?}");
        }
    }
}
