//! An element crate that declares unsupported catalog fields: files that set
//! them are refused, naming the field; a declared name that is not a field
//! is refused too (a typo would otherwise switch the check off).

use elements_core::{Element, ElementFactory, ElementSpec, RegistryBuilder};

#[derive(Debug)]
struct Partial {
    spec: ElementSpec,
}

impl Element for Partial {
    fn spec(&self) -> &ElementSpec {
        &self.spec
    }
}

elements_core::inventory::submit! {
    ElementFactory::new("partial", |spec| Box::new(Partial { spec }))
        .unsupported_fields(&["oauth.pkce", "oauth.token_params"])
}

elements_core::inventory::submit! {
    ElementFactory::new("typo", |spec| Box::new(Partial { spec }))
        .unsupported_fields(&["oauth.pkc"])
}

fn file(id: u64, key: &str, oauth_extra: &str) -> String {
    format!(
        "id = {id}\nkey = \"{key}\"\nname = \"N\"\ndescription = \"d\"\nimage = \"i\"\n\
         hub = \"h\"\nauthentication = \"oauth2\"\nexisting_account_description = \"e\"\n\
         config_description = \"c\"\n[oauth]\nauthorization_url = \"https://{key}.test/a\"\n\
         token_url = \"https://{key}.test/t\"\n{oauth_extra}"
    )
}

#[test]
fn fields_a_crate_does_not_read_are_refused_and_declared_names_are_checked() {
    let reason = "is served by its own code, which does not support this field \
                  (remove it or leave it at its default)";
    let mut builder = RegistryBuilder::new();
    builder.add_layer([
        ("typo.toml", file(9101, "typo", "")),
        (
            "partial.toml",
            file(
                9102,
                "partial",
                "scope_param = \"user_scope\"\npkce = true\n[oauth.token_params]\nresource = \"r\"\n",
            ),
        ),
    ]);
    let errors = builder.build().unwrap_err().to_string();
    // The order of registered crates is the linker's: compare as a set.
    let mut lines: Vec<&str> = errors.lines().collect();
    lines.sort_unstable();
    let pkce = format!("partial.toml:14: field `oauth.pkce`: element `partial` {reason}");
    let params = format!("partial.toml:15: field `oauth.token_params`: element `partial` {reason}");
    assert_eq!(
        lines,
        [
            "<registered elements>: element crate registered for key `partial`, but no \
             catalog file declares it",
            "<registered elements>: the element crate for `typo` declares `oauth.pkc` \
             unsupported, which is not an optional field of [oauth] (one of \
             oauth.refresh_url, oauth.scope_separator, oauth.scope_param, oauth.pkce, \
             oauth.state_required, oauth.client_auth, oauth.default_scope, \
             oauth.authorization_params, oauth.token_params, oauth.token_response, \
             oauth.endpoints, oauth.response_type, oauth.authorization_param_names, \
             oauth.omit_authorization_params, oauth.fixed_scope, oauth.token_request_format, \
             oauth.revocation_url, oauth.callback_capture)",
            pkce.as_str(),
            params.as_str(),
        ]
    );
}
