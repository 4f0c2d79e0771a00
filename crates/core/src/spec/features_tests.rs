//! Tests of the format features of issue 13 (part 2): host placeholders,
//! token request formats, parameter renames, fixed scopes, kept fields,
//! callback capture, revocation.

use crate::oauth::{OAuthUrlRequest, ProviderResponse, RefreshRequest};
use crate::{standard, Configuration, ElementSpec, OAuthError, Secret, TokenRequestFormat};

const HEAD: &str = "id = 7\nkey = \"demo\"\nname = \"Demo\"\ndescription = \"d\"\nimage = \"i\"\n\
hub = \"general\"\nauthentication = \"oauth2\"\nexisting_account_description = \"e\"\n\
config_description = \"c\"\n";

fn parse(rest: &str) -> Result<ElementSpec, String> {
    ElementSpec::parse("demo.toml", &format!("{HEAD}{rest}")).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn config(pairs: &[(&str, &str)]) -> Configuration {
    let mut c = Configuration::new();
    for (k, v) in [("oauth.api.key", "cid"), ("oauth.api.secret", "csecret")]
        .iter()
        .chain(pairs)
    {
        c.insert(*k, *v);
    }
    c
}

fn url_request(params: &[(&str, &str)]) -> OAuthUrlRequest {
    OAuthUrlRequest {
        api_key: Some("cid".into()),
        callback_url: Some("https://app.test/cb".into()),
        state: Some("st".into()),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

const KEYCLOAK: &str = "[oauth]\n\
authorization_url = \"https://{host}/realms/{realm}/protocol/openid-connect/auth\"\n\
token_url = \"https://{host}/realms/{realm}/protocol/openid-connect/token\"\n\
[[configuration]]\nkey = \"host\"\nname = \"Host\"\ncustom_host = true\n\
[[configuration]]\nkey = \"realm\"\nname = \"Realm\"\n";

#[test]
fn whole_host_needs_a_custom_host_entry_and_https() {
    let spec = parse(KEYCLOAK).unwrap();
    let url = standard::authorization_url(
        &spec,
        &url_request(&[("host", "sso.acme.com"), ("realm", "main")]),
    )
    .unwrap();
    assert!(
        url.url
            .starts_with("https://sso.acme.com/realms/main/protocol/openid-connect/auth?"),
        "{}",
        url.url
    );
    let refused = standard::authorization_url(
        &spec,
        &url_request(&[("host", "10.0.0.1"), ("realm", "main")]),
    )
    .unwrap_err();
    assert_eq!(
        refused,
        OAuthError::InvalidParameter {
            name: "host".into(),
            reason: "must be a host name, not an IP address".into()
        }
    );
    // The deployment allow-list (checked by the server with check_custom_hosts).
    let lookup = |n: &str| (n == "host").then(|| "sso.evil.test".to_owned());
    let err = spec
        .check_custom_hosts(&lookup, &["acme.com".to_owned()])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid parameter `host`: is not within the domains this deployment allows \
         (allowed_custom_hosts: acme.com)"
    );
    assert!(spec.check_custom_hosts(&lookup, &[]).is_ok());

    let undeclared = parse(&KEYCLOAK.replace("custom_host = true\n", "")).unwrap_err();
    assert!(
        undeclared.starts_with(
            "demo.toml:11: field `oauth.authorization_url`: placeholder `{host}` is the whole host"
        ),
        "{undeclared}"
    );
    assert!(undeclared.contains("declare the entry `custom_host = true`"));
    let http = parse(&KEYCLOAK.replace(
        "\"https://{host}/realms/{realm}/protocol/openid-connect/token",
        "\"http://{host}/t",
    ))
    .unwrap_err();
    assert!(
        http.starts_with("demo.toml:12: field `oauth.token_url`: placeholder `{host}` is the whole host: only allowed after `https://`"),
        "{http}"
    );
    let bad_default = parse(&KEYCLOAK.replace(
        "custom_host = true\n",
        "custom_host = true\ndefault_value = \"localhost\"\n",
    ))
    .unwrap_err();
    assert!(bad_default.contains("field `configuration.default_value` of `host`: a custom host must be a fully qualified host name"), "{bad_default}");
}

const ZOHO: &str = "[oauth]\n\
authorization_url = \"https://accounts.zoho.{region_domain}/oauth/v2/auth\"\n\
token_url = \"https://ca-{environment}.adyen.com/token\"\n\
[[configuration]]\nkey = \"region_domain\"\nname = \"Region\"\ndefault_value = \"com\"\n\
allowed_values = [\"com\", \"eu\", \"in\", \"com.au\", \"jp\"]\n\
[[configuration]]\nkey = \"environment\"\nname = \"Env\"\nallowed_values = [\"live\", \"test\"]\n";

#[test]
fn host_label_placeholders_need_declared_values() {
    let spec = parse(ZOHO).unwrap();
    let url =
        standard::authorization_url(&spec, &url_request(&[("region_domain", "com.au")])).unwrap();
    assert!(
        url.url
            .starts_with("https://accounts.zoho.com.au/oauth/v2/auth?"),
        "{}",
        url.url
    );
    let default = standard::authorization_url(&spec, &url_request(&[])).unwrap();
    assert!(default.url.starts_with("https://accounts.zoho.com/oauth/"));
    assert_eq!(
        standard::authorization_url(&spec, &url_request(&[("region_domain", "evil.test")]))
            .unwrap_err(),
        OAuthError::InvalidParameter {
            name: "region_domain".into(),
            reason: "must be one of com, eu, in, com.au, jp".into()
        }
    );
    let refresh = standard::refresh_request(
        &spec,
        &RefreshRequest {
            refresh_token: &Secret::new("rt"),
            configuration: &config(&[("environment", "live")]),
        },
    )
    .unwrap();
    assert_eq!(refresh.url, "https://ca-live.adyen.com/token");

    let undeclared =
        parse(&ZOHO.replace("allowed_values = [\"live\", \"test\"]\n", "")).unwrap_err();
    assert!(
        undeclared.starts_with("demo.toml:12: field `oauth.token_url`: placeholder `{environment}` is part of a host label"),
        "{undeclared}"
    );
    assert!(undeclared.contains("allowed_values = [\"com\", \"eu\"]"));
    let bad_value = parse(&ZOHO.replace("\"jp\"", "\"evil.com/x\"")).unwrap_err();
    assert!(bad_value.contains("demo.toml:17: field `configuration.allowed_values`: \"evil.com/x\" of `region_domain` is not dot-separated host name labels"), "{bad_value}");
    let bad_default =
        parse(&ZOHO.replace("default_value = \"com\"", "default_value = \"de\"")).unwrap_err();
    assert!(
        bad_default.contains("\"de\" of `region_domain` is not one of its allowed_values"),
        "{bad_default}"
    );
}

const RENAMES: &str = "[oauth]\n\
authorization_url = \"https://example.com/auth\"\n\
token_url = \"https://example.com/token\"\n\
response_type = \"code id_token\"\nfixed_scope = \"openid profile\"\n\
authorization_param_names = { client_id = \"client_key\", redirect_uri = \"redirect_url\" }\n\
omit_authorization_params = [\"response_type\"]\n";

#[test]
fn standard_parameters_can_be_renamed_omitted_and_scopes_fixed() {
    let spec = parse(RENAMES).unwrap();
    let mut req = url_request(&[]);
    req.scope = Some("email,openid".into());
    let url = standard::authorization_url(&spec, &req).unwrap().url;
    assert_eq!(
        url,
        "https://example.com/auth?client_key=cid&redirect_url=https%3A%2F%2Fapp.test%2Fcb\
         &scope=openid%20profile%20email&state=st"
    );
    let with_type =
        parse(&RENAMES.replace("omit_authorization_params = [\"response_type\"]\n", "")).unwrap();
    let url = standard::authorization_url(&with_type, &url_request(&[]))
        .unwrap()
        .url;
    assert!(
        url.starts_with("https://example.com/auth?response_type=code%20id_token&client_key=cid&"),
        "{url}"
    );
    assert!(url.contains("&scope=openid%20profile&"), "{url}");

    for (from, to, needle) in [
        ("client_id = \"client_key\"", "client_id = \"state\"", "demo.toml:15: field `oauth.authorization_param_names.client_id`: \"state\" is empty or already names another parameter"),
        ("client_id = \"client_key\"", "scope = \"s\"", "demo.toml:15: field `oauth.authorization_param_names.scope`: only response_type, client_id, redirect_uri, state may be renamed"),
        ("[\"response_type\"]", "[\"state\"]", "demo.toml:16: field `oauth.omit_authorization_params`: \"state\" cannot be omitted"),
        ("\"code id_token\"", "\"code&x=1\"", "demo.toml:13: field `oauth.response_type`: \"code&x=1\" is not a response type"),
    ] {
        let err = parse(&RENAMES.replace(from, to)).unwrap_err();
        assert!(err.contains(needle), "{needle}\n got {err}");
    }
}

#[test]
fn token_requests_may_be_json_or_query() {
    let base = "[oauth]\nauthorization_url = \"https://example.com/a\"\ntoken_url = \"https://example.com/t\"\n";
    let refresh = |spec: &ElementSpec| {
        standard::refresh_request(
            spec,
            &RefreshRequest {
                refresh_token: &Secret::new("rt"),
                configuration: &config(&[]),
            },
        )
        .unwrap()
    };
    assert_eq!(
        refresh(&parse(base).unwrap()).format,
        TokenRequestFormat::Form
    );
    for (name, want) in [
        ("json", TokenRequestFormat::Json),
        ("query", TokenRequestFormat::Query),
    ] {
        let spec = parse(&format!("{base}token_request_format = \"{name}\"\n")).unwrap();
        let r = refresh(&spec);
        assert_eq!(r.format, want);
        assert_eq!(r.get("grant_type"), Some("refresh_token"));
        assert_eq!(r.get("client_secret"), Some("csecret"));
    }
    let err = parse(&format!("{base}token_request_format = \"xml\"\n")).unwrap_err();
    assert!(
        err.starts_with("demo.toml:13:") && err.contains("unknown variant `xml`"),
        "{err}"
    );
}

const SALESFORCE: &str = "[oauth]\n\
authorization_url = \"https://{my_domain}/services/oauth2/authorize\"\n\
token_url = \"https://{my_domain}/services/oauth2/token\"\n\
revocation_url = \"https://{my_domain}/services/oauth2/revoke\"\n\
client_auth = \"basic\"\ncallback_capture = [\"realmId\"]\n\
[oauth.token_response]\nkeep = { instance_url = \"salesforce.instance_url\", \"team.id\" = \"team_id\" }\n\
[[configuration]]\nkey = \"my_domain\"\nname = \"My Domain\"\ncustom_host = true\n\
default_value = \"login.salesforce.com\"\n\
[[configuration]]\nkey = \"salesforce.instance_url\"\nname = \"Instance URL\"\nrequired = false\n\
[[configuration]]\nkey = \"team_id\"\nname = \"Team\"\nrequired = false\n\
[[configuration]]\nkey = \"realmId\"\nname = \"Realm\"\nrequired = false\n";

#[test]
fn kept_fields_captured_values_and_revocation() {
    let spec = parse(SALESFORCE).unwrap();
    let response = ProviderResponse {
        status: 200,
        body: br#"{"access_token":"a","instance_url":"https://acme.my.salesforce.com","team":{"id":"T1"}}"#.to_vec(),
    };
    assert_eq!(
        standard::kept_values(&spec, &response),
        [
            (
                "salesforce.instance_url".to_owned(),
                "https://acme.my.salesforce.com".to_owned()
            ),
            ("team_id".to_owned(), "T1".to_owned()),
        ]
    );
    let data = |n: &str| (n == "realmId").then(|| "4620816365".to_owned());
    assert_eq!(
        spec.captured_values(&data).unwrap(),
        [("realmId".to_owned(), "4620816365".to_owned())]
    );
    let bad = |_: &str| Some("a\nb".to_owned());
    assert!(
        matches!(spec.captured_values(&bad), Err(OAuthError::InvalidParameter { name, .. }) if name == "realmId")
    );

    let revoke = standard::revocation_request(
        &spec,
        &config(&[("my_domain", "acme.my.salesforce.com")]),
        &Secret::new("rt-1"),
        Some("refresh_token"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        revoke.url,
        "https://acme.my.salesforce.com/services/oauth2/revoke"
    );
    assert_eq!(revoke.get("token"), Some("rt-1"));
    assert_eq!(revoke.get("token_type_hint"), Some("refresh_token"));
    assert_eq!(
        revoke.basic_auth.as_ref().map(|(id, _)| id.as_str()),
        Some("cid")
    );
    assert!(!format!("{revoke:?}").contains("rt-1"));
    let none = parse(&SALESFORCE.replace(
        "revocation_url = \"https://{my_domain}/services/oauth2/revoke\"\n",
        "",
    ))
    .unwrap();
    assert_eq!(
        standard::revocation_request(&none, &config(&[]), &Secret::new("t"), None),
        Ok(None)
    );

    for (from, to, needle) in [
        ("\"team_id\" }", "\"nope\" }", "demo.toml:17: field `oauth.token_response.keep`: \"nope\" names no [[configuration]] entry"),
        ("key = \"team_id\"\nname = \"Team\"\nrequired = false", "key = \"team_id\"\nname = \"Team\"", "demo.toml:17: field `oauth.token_response.keep`: entry \"team_id\" must be required = false"),
        ("[\"realmId\"]", "[\"realm\"]", "demo.toml:15: field `oauth.callback_capture`: \"realm\" names no [[configuration]] entry"),
        ("/services/oauth2/revoke", "/{nope}", "demo.toml:13: field `oauth.revocation_url`: placeholder `{nope}` names no"),
    ] {
        let err = parse(&SALESFORCE.replace(from, to)).unwrap_err();
        assert!(err.contains(needle), "{needle}\n got {err}");
    }
}

#[test]
fn an_origin_placeholder_takes_a_kept_instance_url() {
    let text = format!(
        "{}api_base_url = \"{{salesforce.instance_url}}/services/data/v60.0\"\n{}",
        "",
        SALESFORCE.replace(
            "key = \"salesforce.instance_url\"\nname = \"Instance URL\"\nrequired = false\n",
            "key = \"salesforce.instance_url\"\nname = \"Instance URL\"\nrequired = false\ncustom_host = true\n"
        )
    );
    let spec = parse(&text).unwrap();
    let mut config = config(&[]);
    assert!(matches!(
        spec.base_url_for(&config),
        Err(OAuthError::MissingConfiguration(m)) if m.keys == ["salesforce.instance_url"]
    ));
    let response = ProviderResponse {
        status: 200,
        body: br#"{"access_token":"a","instance_url":"https://acme.my.salesforce.com"}"#.to_vec(),
    };
    for (k, v) in standard::kept_values(&spec, &response) {
        config.insert(k, v);
    }
    assert_eq!(
        spec.base_url_for(&config).unwrap().as_deref(),
        Some("https://acme.my.salesforce.com/services/data/v60.0")
    );
    // An instance_url that is no https origin of a proper host is not kept.
    let evil = ProviderResponse {
        status: 200,
        body: br#"{"access_token":"a","instance_url":"http://169.254.169.254"}"#.to_vec(),
    };
    assert!(standard::kept_values(&spec, &evil).is_empty());
    let mut c = Configuration::new();
    c.insert("salesforce.instance_url", "https://10.0.0.1");
    assert!(
        matches!(spec.base_url_for(&c), Err(OAuthError::InvalidParameter { reason, .. }) if reason.contains("IP address"))
    );
    // Without custom_host the origin placeholder is refused, naming the rule.
    let err = parse(&text.replace(
        "required = false\ncustom_host = true\n",
        "required = false\n",
    ))
    .unwrap_err();
    assert!(err.starts_with("demo.toml:10: field `api_base_url`: placeholder `{salesforce.instance_url}` is the whole host"), "{err}");
    let err = parse(&text.replace("}/services/data", "}x/services/data")).unwrap_err();
    assert!(
        err.contains("is its whole origin and must be followed by `/`"),
        "{err}"
    );
}
