//! `GET /elements/api-v2/docs`: the API reference rendered on the server
//! from the OpenAPI document (askama escapes every value; no script, no
//! external resource).

use askama::Template;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::http::HeaderValue;
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

/// No script at all; the page's one `<style>` element.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A schema as shown: a label and, for a named component, its anchor.
pub struct SchemaRef {
    pub label: String,
    pub anchor: Option<String>,
}

pub struct Parameter {
    pub name: String,
    pub location: String,
    pub required: bool,
    pub schema: SchemaRef,
    pub description: String,
}

pub struct Body {
    pub content_type: String,
    pub schema: Option<SchemaRef>,
    pub example: Option<String>,
}

pub struct Answer {
    pub status: String,
    pub description: String,
    pub bodies: Vec<Body>,
}

pub struct Operation {
    pub anchor: String,
    pub method: String,
    pub path: String,
    pub summary: String,
    pub description: String,
    pub security: Vec<String>,
    pub parameters: Vec<Parameter>,
    pub request: Vec<Body>,
    pub responses: Vec<Answer>,
}

pub struct Tag {
    pub name: String,
    pub description: String,
    pub operations: Vec<Operation>,
}

pub struct Scheme {
    pub name: String,
    pub description: String,
}

pub struct Schema {
    pub name: String,
    pub description: String,
    pub json: String,
}

#[derive(Template)]
#[template(path = "openapi/docs.html")]
pub struct DocsPage {
    pub title: String,
    pub version: String,
    pub description: String,
    pub tags: Vec<Tag>,
    pub schemes: Vec<Scheme>,
    pub schemas: Vec<Schema>,
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// A short label for a schema: its component name, `array of ...`, or its type.
fn schema_ref(schema: &Value) -> SchemaRef {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r).to_owned();
        return SchemaRef {
            anchor: Some(format!("schema-{name}")),
            label: name,
        };
    }
    if let Some(items) = schema.get("items") {
        let inner = schema_ref(items);
        return SchemaRef {
            label: format!("array of {}", inner.label),
            anchor: inner.anchor,
        };
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            let parts: Vec<SchemaRef> = list.iter().map(schema_ref).collect();
            let anchor = parts.iter().find_map(|p| p.anchor.clone());
            let labels: Vec<String> = parts.into_iter().map(|p| p.label).collect();
            return SchemaRef {
                label: labels.join(" | "),
                anchor,
            };
        }
    }
    let label = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".to_owned(),
    };
    SchemaRef {
        label,
        anchor: None,
    }
}

fn bodies(content: Option<&Value>) -> Vec<Body> {
    content
        .and_then(Value::as_object)
        .map(|content| {
            content
                .iter()
                .map(|(content_type, media)| Body {
                    content_type: content_type.clone(),
                    schema: media.get("schema").map(schema_ref),
                    example: media
                        .get("example")
                        .and_then(|e| serde_json::to_string_pretty(e).ok()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The page's model, from the document as JSON.
pub fn model(doc: &Value) -> DocsPage {
    let mut tags: Vec<Tag> = doc
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| Tag {
            name: text(t.get("name")),
            description: text(t.get("description")),
            operations: Vec::new(),
        })
        .collect();
    let paths = doc.get("paths").and_then(Value::as_object);
    for (path, item) in paths.into_iter().flatten() {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            let parameters = op
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| Parameter {
                    name: text(p.get("name")),
                    location: text(p.get("in")),
                    required: p.get("required").and_then(Value::as_bool).unwrap_or(false),
                    schema: p.get("schema").map(schema_ref).unwrap_or(SchemaRef {
                        label: "any".into(),
                        anchor: None,
                    }),
                    description: text(p.get("description")),
                })
                .collect();
            let responses = op
                .get("responses")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(status, r)| Answer {
                    status: status.clone(),
                    description: text(r.get("description")),
                    bodies: bodies(r.get("content")),
                })
                .collect();
            let security = op
                .get("security")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .map(|req| {
                    if req.is_empty() {
                        "none".to_owned()
                    } else {
                        req.keys().cloned().collect::<Vec<_>>().join(" + ")
                    }
                })
                .collect();
            let tag = op
                .get("tags")
                .and_then(Value::as_array)
                .and_then(|t| t.first())
                .and_then(Value::as_str)
                .unwrap_or("other")
                .to_owned();
            let operation = Operation {
                anchor: format!(
                    "op-{}",
                    text(op.get("operationId"))
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                        .collect::<String>()
                ),
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                summary: text(op.get("summary")),
                description: text(op.get("description")),
                security,
                parameters,
                request: bodies(op.get("requestBody").and_then(|b| b.get("content"))),
                responses,
            };
            match tags.iter_mut().find(|t| t.name == tag) {
                Some(t) => t.operations.push(operation),
                None => tags.push(Tag {
                    name: tag,
                    description: String::new(),
                    operations: vec![operation],
                }),
            }
        }
    }
    tags.retain(|t| !t.operations.is_empty());
    let components = doc.get("components");
    let schemes = components
        .and_then(|c| c.get("securitySchemes"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, s)| Scheme {
            name: name.clone(),
            description: text(s.get("description")),
        })
        .collect();
    let schemas = components
        .and_then(|c| c.get("schemas"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, s)| Schema {
            name: name.clone(),
            description: text(s.get("description")),
            json: serde_json::to_string_pretty(s).unwrap_or_default(),
        })
        .collect();
    let info = doc.get("info");
    DocsPage {
        title: text(info.and_then(|i| i.get("title"))),
        version: text(info.and_then(|i| i.get("version"))),
        description: text(info.and_then(|i| i.get("description"))),
        tags,
        schemes,
        schemas,
    }
}

/// The rendered page (rendered once: the document does not change).
pub fn page() -> Response {
    static HTML: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    let html = HTML.get_or_init(|| {
        let doc = serde_json::to_value(super::document()).map_err(|e| e.to_string())?;
        model(&doc).render().map_err(|e| e.to_string())
    });
    let mut response = match html {
        Ok(html) => Html(html.clone()).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "API reference page failed");
            crate::error::ApiError::Internal("docs page".into()).into_response()
        }
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_from_the_document_is_escaped() {
        let doc = serde_json::json!({
            "info": {"title": "<script>alert(1)</script>", "version": "1"},
            "tags": [{"name": "t\"><xtag>", "description": "<img src=x>"}],
            "paths": {"/a/<xpath>": {"get": {
                "tags": ["t\"><xtag>"],
                "operationId": "x<y",
                "summary": "<em>s</em>",
                "parameters": [{"name": "<xparam>", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "&amp;", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/<xschema>"},
                    "example": {"k": "</pre><script>"}
                }}}}
            }}},
            "components": {"schemas": {"<xschema>": {"description": "<xdesc>", "type": "object"}}}
        });
        let html = model(&doc).render().unwrap();
        for raw in [
            "<script>",
            "<xtag>",
            "<img",
            "<xpath>",
            "<em>",
            "<xparam>",
            "<xschema>",
            "<xdesc>",
            "</pre><script>",
        ] {
            assert!(!html.contains(raw), "{raw} must be escaped:\n{html}");
        }
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
        assert!(html.contains("&#60;em&#62;s&#60;/em&#62;"));
        assert!(html.contains("&#38;amp;"));
        assert!(html.contains(r#"id="op-x-y""#));
    }

    #[test]
    fn the_real_document_renders_every_operation() {
        let doc = serde_json::to_value(crate::openapi::document()).unwrap();
        let page = model(&doc);
        let operations: usize = page.tags.iter().map(|t| t.operations.len()).sum();
        let described: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(operations, described);
        assert_eq!(page.schemes.len(), 3);
        assert!(page.schemas.iter().any(|s| s.name == "InstanceJson"));
        assert!(page
            .render()
            .unwrap()
            .contains("<h2 id=\"tag-catalog\">catalog</h2>"));
    }
}
