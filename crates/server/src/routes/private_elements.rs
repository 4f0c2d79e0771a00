//! Organization-private elements through the API (issue 17):
//! `POST /elements`, `PUT/DELETE /elements/{keyOrId}`,
//! `PUT/DELETE /elements/{keyOrId}/active`, `POST /elements/{keyOrId}/clone`
//! and `GET /elements/{keyOrId}/export`. `GET /elements/{keyOrId}` and the
//! list are `routes/elements.rs`, which resolve through
//! [`crate::private_elements`].

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use elements_core::{Element, ElementSpec};

use super::PathParam;
use crate::auth::Account;
use crate::body::JsonBody;
use crate::element_view::ElementJson as _;
use crate::error::ApiError;
use crate::private_elements::{self as private, View, ID_BASE};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(api!("/elements"), post(create))
        .route(api!("/elements/{key_or_id}"), put(replace).delete(remove))
        .route(
            api!("/elements/{key_or_id}/active"),
            put(activate).delete(deactivate),
        )
        .route(api!("/elements/{key_or_id}/clone"), post(clone))
        .route(api!("/elements/{key_or_id}/export"), get(export))
}

/// Nesting deeper than this is refused (the format's deepest field is three
/// levels down).
const MAX_DEPTH: usize = 8;

/// A JSON value as TOML; `path` names the field in errors.
fn to_toml(value: serde_json::Value, path: &str, depth: usize) -> Result<toml::Value, ApiError> {
    let field = |rule: &str| ApiError::BadRequest(format!("field `{path}`: {rule}"));
    if depth > MAX_DEPTH {
        return Err(field("is nested too deeply"));
    }
    Ok(match value {
        serde_json::Value::Null => {
            return Err(field(
                "must not be null (leave the field out for its default)",
            ))
        }
        serde_json::Value::Bool(b) => toml::Value::Boolean(b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) if n.is_f64() => toml::Value::Float(f),
            _ => return Err(field("must be a number that fits in 64 bits")),
        },
        serde_json::Value::String(s) => toml::Value::String(s),
        serde_json::Value::Array(items) => toml::Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| to_toml(v, &format!("{path}[{i}]"), depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => toml::Value::Table(
            map.into_iter()
                .map(|(k, v)| {
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    to_toml(v, &sub, depth + 1).map(|v| (k, v))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// A JSON element body as a TOML table (its `id`, if any, is dropped: the
/// server assigns private ids).
fn table_of(body: serde_json::Value) -> Result<toml::Table, ApiError> {
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object: an element with the fields of the catalog format"
                .into(),
        ));
    }
    let toml::Value::Table(mut table) = to_toml(body, "", 0)? else {
        unreachable!("an object converts to a table")
    };
    table.remove("id");
    Ok(table)
}

/// Checks an element table with the catalog parser and checker, then the
/// private elements' URL rules; returns the spec and the stored text (the
/// TOML without `id`).
fn validate(state: &AppState, table: &toml::Table) -> Result<(ElementSpec, String), ApiError> {
    let text = toml::to_string(table)
        .map_err(|e| ApiError::BadRequest(format!("the element is not valid TOML data: {e}")))?;
    let full = format!("id = {ID_BASE}\n{text}");
    let spec = ElementSpec::parse("element", &full).map_err(|errors| {
        let messages: Vec<String> = errors
            .iter()
            .take(5)
            .map(|e| match e.line.and_then(|line| field_at(&full, line)) {
                // A file error names the field through its line; without
                // the line, the field is named instead.
                Some(field) if !e.message.contains("field `") => {
                    format!("field `{field}`: {}", e.message)
                }
                _ => e.message.clone(),
            })
            .collect();
        ApiError::BadRequest(format!("invalid element: {}", messages.join("; ")))
    })?;
    check_urls(state, &spec)?;
    spec.check_custom_hosts(&|_| None, &state.allowed_custom_hosts)
        .map_err(|e| ApiError::BadRequest(format!("invalid element: {e}")))?;
    Ok((spec, text))
}

/// The field path of a line of TOML text as `toml::to_string` writes it
/// (`key = value` lines under `[table]` and `[[array]]` headers):
/// `oauth.pkce`, `configuration[1].secret`.
fn field_at(text: &str, line: usize) -> Option<String> {
    let mut section = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|r| r.strip_suffix("]]"))
        {
            let n = counts.entry(name.to_owned()).or_insert(0);
            section = format!("{name}[{n}]");
            *n += 1;
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = name.to_owned();
        }
        if i + 1 == line {
            let key = trimmed.split_once('=')?.0.trim().trim_matches('"');
            return Some(if section.is_empty() {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            });
        }
    }
    None
}

/// Private elements are tenant input whose token URLs the server calls:
/// every URL must be https, and every literal host must pass the
/// `custom_host` rules (no IP address, no `localhost`, within the
/// deployment's `--allowed-custom-hosts` when set). Placeholders in a host
/// were already checked by the parser (declared entries, whole labels,
/// `custom_host`).
fn check_urls(state: &AppState, spec: &ElementSpec) -> Result<(), ApiError> {
    let mut urls: Vec<(String, &str)> = Vec::new();
    if let Some(url) = &spec.api_base_url {
        urls.push(("api_base_url".into(), url));
    }
    if let Some(o) = &spec.oauth {
        // Empty for `oauth2_client_credentials`, which has no authorization
        // step (the checker requires it for `oauth2`).
        if !o.authorization_url.is_empty() {
            urls.push(("oauth.authorization_url".into(), &o.authorization_url));
        }
        urls.push(("oauth.token_url".into(), &o.token_url));
        if let Some(url) = &o.refresh_url {
            urls.push(("oauth.refresh_url".into(), url));
        }
        if let Some(url) = &o.revocation_url {
            urls.push(("oauth.revocation_url".into(), url));
        }
        for (name, url) in &o.endpoints {
            urls.push((format!("oauth.endpoints.{name}"), url));
        }
    }
    if let Some(o) = &spec.oauth1 {
        urls.push(("oauth1.request_token_url".into(), &o.request_token_url));
        urls.push(("oauth1.authorize_url".into(), &o.authorize_url));
        urls.push(("oauth1.access_token_url".into(), &o.access_token_url));
    }
    for (field, url) in urls {
        // A whole-origin placeholder (`{salesforce.instance_url}/...`): the
        // parser has checked it names a `custom_host` entry, whose values
        // are held to these same rules when they are given.
        if url.starts_with('{') {
            continue;
        }
        let Some(rest) = url.strip_prefix("https://") else {
            return Err(ApiError::BadRequest(format!(
                "field `{field}`: must be an https URL (private elements)"
            )));
        };
        let host = rest
            .split(['/', '?', '#'])
            .next()
            .unwrap_or("")
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(rest.split(['/', '?', '#']).next().unwrap_or(""), |(h, _)| h);
        if host.contains('{') {
            continue;
        }
        elements_core::check_custom_host(host, &state.allowed_custom_hosts).map_err(|rule| {
            ApiError::BadRequest(format!(
                "field `{field}`: host `{}` {rule} (private elements)",
                host.chars().take(100).collect::<String>()
            ))
        })?;
    }
    Ok(())
}

/// The element JSON answered by these routes.
fn element_json(element: &dyn Element, view: View) -> Result<Response, ApiError> {
    let mut json = serde_json::to_value(element.spec().view())
        .map_err(|e| ApiError::Internal(format!("element view: {e}")))?;
    view.mark(&mut json);
    Ok(Json(json).into_response())
}

/// The organization's own element named by `key_or_id` (its key, alias or
/// id): a built-in is refused (403, naming clone), anything else is a 404.
async fn own(
    state: &AppState,
    org: i64,
    key_or_id: &str,
) -> Result<(private::Entry, bool), ApiError> {
    let catalog = private::catalog(state, org).await?;
    let (element, is_private) = private::resolve(state, &catalog, key_or_id)?;
    if !is_private {
        return Err(ApiError::Forbidden(format!(
            "element `{}` is built in: only an organization's own elements can be changed or \
             deleted (POST /elements/{}/clone makes one)",
            element.key(),
            element.key()
        )));
    }
    let entry = catalog
        .entries
        .iter()
        .find(|e| e.element.id() == element.id())
        .cloned()
        .ok_or_else(|| ApiError::Internal("a resolved private element has no entry".into()))?;
    let active = catalog.is_active(element.key());
    Ok((entry, active))
}

/// Refuses a key or alias that one of the organization's other elements
/// already uses (as its key or an alias).
async fn check_unique(
    state: &AppState,
    org: i64,
    spec: &ElementSpec,
    except_row: Option<i64>,
) -> Result<(), ApiError> {
    let catalog = private::catalog(state, org).await?;
    for other in catalog
        .entries
        .iter()
        .filter(|e| Some(e.row.row_id) != except_row)
    {
        let theirs = other.element.spec();
        let names = std::iter::once(&theirs.key).chain(theirs.aliases.iter());
        for name in names {
            if *name == spec.key {
                return Err(ApiError::Conflict(format!(
                    "field `key`: this organization already has an element `{name}` \
                     (id {})",
                    theirs.id
                )));
            }
            if spec.aliases.contains(name) {
                return Err(ApiError::Conflict(format!(
                    "field `aliases`: `{name}` is already used by this organization's element \
                     `{}`",
                    theirs.key
                )));
            }
        }
    }
    Ok(())
}

async fn store_new(state: &AppState, org: i64, table: toml::Table) -> Result<Response, ApiError> {
    let (spec, text) = validate(state, &table)?;
    check_unique(state, org, &spec, None).await?;
    let row = state
        .store
        .insert_private_element(org, &spec.key, &text)
        .await;
    state.private_elements.invalidate(org);
    let row = row?;
    let catalog = private::catalog(state, org).await?;
    let entry = catalog
        .entries
        .iter()
        .find(|e| e.row.row_id == row.row_id)
        .ok_or_else(|| ApiError::Internal("a new private element does not parse".into()))?;
    let active = catalog.is_active(&spec.key);
    element_json(
        entry.element.as_ref(),
        View {
            private: true,
            active,
        },
    )
}

/// `POST /elements`: a new private element from a JSON element.
#[utoipa::path(
    post,
    path = "/elements/api-v2/elements",
    tag = "private-elements",
    security(("UserOrganization" = [])),
    request_body(content = Object, description = "An element whose fields are those of the TOML catalog format (docs/adding-an-element.md)", example = json!({"key": "my-crm", "name": "My CRM", "hub": "crm", "authentication": "oauth2", "oauth": {"authorization_url": "https://crm.example.com/oauth/authorize", "token_url": "https://crm.example.com/oauth/token"}})),
    responses(
        (status = 200, description = "The new private element (`private: true`)", body = crate::element_view::ElementView),
        (status = 409, description = "The organization already has an element with this key", body = crate::error::ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    Account { principal }: Account,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let table = table_of(body)?;
    store_new(&state, principal.organization_id, table).await
}

/// `PUT /elements/{keyOrId}`: replaces one of the organization's own
/// elements (its id stays). A key change is refused while instances use
/// the old key.
#[utoipa::path(
    put,
    path = "/elements/api-v2/elements/{key_or_id}",
    tag = "private-elements",
    security(("UserOrganization" = [])),
    params(
        ("key_or_id" = String, Path, example = "my-crm", description = "The element's key or id"),
    ),
    request_body(content = Object, description = "The whole element, in the TOML format's fields"),
    responses(
        (status = 200, description = "The replaced element", body = crate::element_view::ElementView),
        (status = 403, description = "The element is built in: only the organization's own elements can be replaced (POST /elements/{keyOrId}/clone makes one)", body = crate::error::ErrorBody),
        (status = 404, description = "No such element for this organization", body = crate::error::ErrorBody),
        (status = 409, description = "The key would change while instances use it, or collides", body = crate::error::ErrorBody),
    )
)]
async fn replace(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(key_or_id): PathParam<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let org = principal.organization_id;
    let (entry, active) = own(&state, org, &key_or_id).await?;
    let table = table_of(body)?;
    let (spec, text) = validate(&state, &table)?;
    check_unique(&state, org, &spec, Some(entry.row.row_id)).await?;
    if spec.key != entry.row.key {
        refuse_with_instances(&state, org, &entry.row.key, "its key cannot change").await?;
    }
    let updated = state
        .store
        .update_private_element(org, entry.row.row_id, &spec.key, &text)
        .await;
    state.private_elements.invalidate(org);
    if !updated? {
        return Err(ApiError::NotFound(format!(
            "no element with key or id `{}`",
            entry.row.key
        )));
    }
    let element = private::lookup(&state, org, &entry.element.id().to_string()).await?;
    element_json(
        element.as_ref(),
        View {
            private: true,
            active: active && spec.key == entry.row.key,
        },
    )
}

/// 409 when the organization has instances of `key`.
async fn refuse_with_instances(
    state: &AppState,
    org: i64,
    key: &str,
    what: &str,
) -> Result<(), ApiError> {
    let count = state
        .store
        .instance_counts(org)
        .await?
        .into_iter()
        .find(|(k, _)| k == key)
        .map_or(0, |(_, n)| n);
    if count > 0 {
        return Err(ApiError::Conflict(format!(
            "element `{key}` has {count} instance(s): {what} until they are deleted"
        )));
    }
    Ok(())
}

/// `DELETE /elements/{keyOrId}`: deletes one of the organization's own
/// elements; refused (409, with the count) while instances use it.
#[utoipa::path(
    delete,
    path = "/elements/api-v2/elements/{key_or_id}",
    tag = "private-elements",
    security(("UserOrganization" = [])),
    params(
        ("key_or_id" = String, Path, example = "my-crm", description = "The element's key or id"),
    ),
    responses(
        (status = 200, description = "Deleted"),
        (status = 403, description = "The element is built in: only the organization's own elements can be deleted (DELETE /elements/{keyOrId}/active deactivates it)", body = crate::error::ErrorBody),
        (status = 404, description = "No such element for this organization", body = crate::error::ErrorBody),
        (status = 409, description = "Instances still use the element (the count is named)", body = crate::error::ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(key_or_id): PathParam<String>,
) -> Result<Response, ApiError> {
    let org = principal.organization_id;
    let (entry, _) = own(&state, org, &key_or_id).await?;
    refuse_with_instances(&state, org, &entry.row.key, "it cannot be deleted").await?;
    let deleted = state
        .store
        .delete_private_element(org, entry.row.row_id)
        .await;
    state.private_elements.invalidate(org);
    if !deleted? {
        return Err(ApiError::NotFound(format!(
            "no element with key or id `{}`",
            entry.row.key
        )));
    }
    Ok(StatusCode::OK.into_response())
}

async fn set_active(
    state: &AppState,
    org: i64,
    key_or_id: &str,
    active: bool,
) -> Result<Response, ApiError> {
    let catalog = private::catalog(state, org).await?;
    let (element, is_private) = private::resolve(state, &catalog, key_or_id)?;
    let result = state
        .store
        .set_element_active(org, element.key(), active)
        .await;
    state.private_elements.invalidate(org);
    result?;
    element_json(
        element.as_ref(),
        View {
            private: is_private,
            active,
        },
    )
}

/// `PUT /elements/{keyOrId}/active`: re-activates an element for the
/// organization.
#[utoipa::path(
    put,
    path = "/elements/api-v2/elements/{key_or_id}/active",
    tag = "private-elements",
    security(("UserOrganization" = [])),
    params(
        ("key_or_id" = String, Path, example = "my-crm", description = "The element's key or id"),
    ),
    responses(
        (status = 200, description = "The element, `active: true` for this organization", body = crate::element_view::ElementView),
        (status = 404, description = "No such element for this organization", body = crate::error::ErrorBody),
    )
)]
async fn activate(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(key_or_id): PathParam<String>,
) -> Result<Response, ApiError> {
    set_active(&state, principal.organization_id, &key_or_id, true).await
}

/// `DELETE /elements/{keyOrId}/active`: deactivates an element (built-in or
/// own) for the organization: new instances and `oauth/url` are refused
/// (409 naming it); existing instances keep working.
#[utoipa::path(
    delete,
    path = "/elements/api-v2/elements/{key_or_id}/active",
    tag = "private-elements",
    security(("UserOrganization" = [])),
    params(
        ("key_or_id" = String, Path, example = "my-crm", description = "The element's key or id"),
    ),
    responses(
        (status = 200, description = "The element, `active: false` for this organization", body = crate::element_view::ElementView),
        (status = 404, description = "No such element for this organization", body = crate::error::ErrorBody),
    )
)]
async fn deactivate(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(key_or_id): PathParam<String>,
) -> Result<Response, ApiError> {
    set_active(&state, principal.organization_id, &key_or_id, false).await
}

/// The TOML text of an element as the organization sees it: its own
/// element's stored text, or a built-in's catalog file.
fn source_text(
    catalog: &private::OrgCatalog,
    element: &dyn Element,
    is_private: bool,
) -> Result<String, ApiError> {
    if is_private {
        return catalog
            .entries
            .iter()
            .find(|e| e.element.id() == element.id())
            .map(private::Entry::toml)
            .ok_or_else(|| ApiError::Internal("a resolved private element has no entry".into()));
    }
    elements_catalog::BUILTIN
        .iter()
        .find(|(file, _)| *file == element.spec().source.file)
        .map(|(_, text)| (*text).to_owned())
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "element `{}` comes from a deployment directory, not the built-in catalog: it \
                 cannot be exported or cloned",
                element.key()
            ))
        })
}

/// `GET /elements/{keyOrId}/export`: the element's TOML file
/// (`application/toml`), which `POST /elements` takes back as JSON.
#[utoipa::path(
    get,
    path = "/elements/api-v2/elements/{key_or_id}/export",
    tag = "private-elements",
    security(("UserOrganization" = [])),
    params(
        ("key_or_id" = String, Path, example = "my-crm", description = "The element's key or id"),
    ),
    responses(
        (status = 200, description = "The element's TOML file", content_type = "application/toml; charset=utf-8", body = String),
        (status = 404, description = "No such element for this organization", body = crate::error::ErrorBody),
        (status = 409, description = "The element comes from a deployment directory and cannot be exported", body = crate::error::ErrorBody),
    )
)]
async fn export(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(key_or_id): PathParam<String>,
) -> Result<Response, ApiError> {
    let catalog = private::catalog(&state, principal.organization_id).await?;
    let (element, is_private) = private::resolve(&state, &catalog, &key_or_id)?;
    let text = source_text(&catalog, element.as_ref(), is_private)?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/toml; charset=utf-8"),
    );
    Ok(response)
}

/// `POST /elements/{keyOrId}/clone`: a private copy of an element (built-in
/// or own). It keeps the key unless the optional JSON body changes fields
/// (`{"key": "my-hubspot", "name": "..."}`): a clone of `hubspot` is the
/// organization's `hubspot` from then on, for it alone.
#[utoipa::path(
    post,
    path = "/elements/api-v2/elements/{key_or_id}/clone",
    tag = "private-elements",
    security(("UserOrganization" = [])),
    params(
        ("key_or_id" = String, Path, example = "my-crm", description = "The element's key or id"),
    ),
    request_body(content = Option<Object>, description = "Optional: the fields to change in the copy (`{\"key\": \"my-hubspot\"}`)"),
    responses(
        (status = 200, description = "The organization's private copy", body = crate::element_view::ElementView),
        (status = 404, description = "No such element for this organization", body = crate::error::ErrorBody),
        (status = 409, description = "The organization already has an element with this key, or the source cannot be cloned", body = crate::error::ErrorBody),
    )
)]
async fn clone(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(key_or_id): PathParam<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let org = principal.organization_id;
    let changes = if body.iter().all(u8::is_ascii_whitespace) {
        toml::Table::new()
    } else {
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body must be a JSON object of the fields to change: {e}"
            ))
        })?;
        table_of(value)?
    };
    let catalog = private::catalog(&state, org).await?;
    let (element, is_private) = private::resolve(&state, &catalog, &key_or_id)?;
    let text = source_text(&catalog, element.as_ref(), is_private)?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| ApiError::Internal(format!("a catalog file does not parse: {e}")))?;
    table.remove("id");
    table.extend(changes);
    store_new(&state, org, table).await
}
