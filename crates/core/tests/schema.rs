//! The checked-in JSON Schema of the catalog format must match the Rust types.
//!
//! Regenerate it with `UPDATE_SCHEMA=1 cargo test -p elements-core schema`.

use std::path::PathBuf;

fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/element.schema.json")
}

fn generated() -> String {
    let mut text =
        serde_json::to_string_pretty(&elements_core::json_schema()).expect("the schema serializes");
    text.push('\n');
    text
}

#[test]
fn schema_is_up_to_date() {
    let path = schema_path();
    let fresh = generated();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &fresh).expect("write docs/element.schema.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "docs/element.schema.json is out of date with the types in crates/core/src/spec/format.rs; \
         regenerate it with `UPDATE_SCHEMA=1 cargo test -p elements-core schema` and commit it"
    );
}

#[test]
fn schema_describes_the_format() {
    let schema = elements_core::json_schema();
    let props = &schema["properties"];
    for field in [
        "id",
        "key",
        "name",
        "authentication",
        "oauth",
        "configuration",
        "api_base_url",
    ] {
        assert!(props.get(field).is_some(), "no `{field}` in the schema");
    }
    // Unknown fields are refused by the parser, and so by the schema.
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    let oauth = &schema["$defs"]["OAuthSpec"];
    assert_eq!(oauth["additionalProperties"], serde_json::json!(false));
    for field in [
        "scope_param",
        "state_required",
        "token_response",
        "client_auth",
    ] {
        assert!(
            oauth["properties"].get(field).is_some(),
            "no `oauth.{field}`"
        );
    }
    // The doc comments are the descriptions.
    assert!(oauth["properties"]["token_url"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("exchanged")));
}
