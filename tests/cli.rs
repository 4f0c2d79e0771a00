//! The `elements` binary: seed conformance, show, list, check, errors.

mod common;

use common::{elements, seed_element, SEED_OAUTH_ANSWER};
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn oauth_url_prints_the_seed_answer_byte_for_byte() {
    let out = elements(&[
        "oauth-url",
        "hubspot",
        "--api-key",
        "123456789d-1234-12e4-bda9-12345b8bf20",
        "--api-secret",
        "123456",
        "--scope",
        "contacts-rw offline",
        "--callback-url",
        "http://demonstrab.ly",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), format!("{SEED_OAUTH_ANSWER}\n"));
}

#[test]
fn oauth_url_current_flow_is_one_param_away() {
    let out = elements(&[
        "oauth-url",
        "43",
        "--api-key",
        "cid",
        "--scope",
        "contacts",
        "--callback-url",
        "https://app.test/cb",
        "--state",
        "s1",
        "--param",
        "oauth.flow=current",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        v["oauthUrl"],
        "https://app.hubspot.com/oauth/authorize?client_id=cid&redirect_uri=https%3A%2F%2Fapp.test%2Fcb&scope=contacts&state=s1"
    );
}

#[test]
fn show_by_key_and_id_contains_the_seed_element() {
    for key in ["hubspot", "43"] {
        let out = elements(&["show", key]);
        assert!(out.status.success());
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        for (field, expected) in seed_element().as_object().unwrap() {
            assert_eq!(&v[field], expected, "field {field} of `show {key}`");
        }
        assert_eq!(v["authentication"]["type"], "oauth2");
        let keys: Vec<&str> = v["configuration"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap())
            .collect();
        for k in [
            "oauth.api.key",
            "oauth.api.secret",
            "oauth.callback.url",
            "oauth.scope",
        ] {
            assert!(keys.contains(&k), "{k} in {keys:?}");
        }
    }
}

#[test]
fn list_is_sorted_by_id_and_has_json() {
    let out = elements(&["list", "--json"]);
    assert!(out.status.success());
    let v: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let ids: Vec<u64> = v.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert!(v.iter().any(|e| e["key"] == "hubspot"));
    let table = stdout(&elements(&["list"]));
    assert!(table
        .lines()
        .any(|l| l.contains("hubspot") && l.contains("43")));
}

#[test]
fn unknown_element_suggests_close_keys() {
    let out = elements(&["show", "hubspto"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown element `hubspto`") && err.contains("`hubspot`"),
        "{err}"
    );
}

#[test]
fn oauth_url_names_missing_parameters() {
    let out = elements(&["oauth-url", "hubspot", "--api-key", "k"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apiSecret, scope, callbackUrl"), "{err}");
}

#[test]
fn check_passes_on_the_catalog_and_fails_with_file_and_line() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = elements(&["check", &format!("{root}/elements")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!("{root}/elements/hubspot.toml"))
        .unwrap()
        .replace(
            "hub = \"marketing\"",
            "hub = \"marketing\"\nflavour = \"x\"",
        )
        .replace("key = \"hubspot\"", "key = \"hubspot2\"")
        .replace("id = 43", "id = 9043");
    std::fs::write(dir.path().join("broken.toml"), text).unwrap();
    let out = elements(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().next().unwrap();
    assert!(
        line.contains("broken.toml:") && line.contains("unknown field `flavour`"),
        "{err}"
    );
    let lineno: usize = line.split(':').nth(1).unwrap().parse().unwrap();
    assert!(lineno > 5, "{line}");
}

#[test]
fn elements_dir_adds_and_overrides() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!("{root}/elements/github.toml"))
        .unwrap()
        .replace("key = \"github\"", "key = \"gitlabish\"")
        .replace("id = 1201", "id = 99001");
    std::fs::write(dir.path().join("gitlabish.toml"), text).unwrap();
    let out = elements(&[
        "--elements-dir",
        dir.path().to_str().unwrap(),
        "show",
        "99001",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("\"gitlabish\""));
}

#[test]
fn accounts_create_prints_new_secrets_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = elements(&[
        "accounts",
        "create",
        "--organization",
        "Acme",
        "--email",
        "ada@acme.test",
        "--first-name",
        "Ada",
        "--last-name",
        "Lovelace",
        "--data-dir",
        data,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["organization"]["name"], "Acme");
    assert_eq!(v["user"]["emailAddress"], "ada@acme.test");
    let (org, user) = (
        v["organization"]["secret"].as_str().unwrap(),
        v["user"]["secret"].as_str().unwrap(),
    );
    assert!(org.len() >= 43 && user.len() >= 43 && org != user);
    // A second account in the same database gets other secrets.
    let out = elements(&[
        "accounts",
        "create",
        "--organization",
        "Globex",
        "--email",
        "g@x.test",
        "--data-dir",
        data,
    ]);
    let w: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_ne!(w["organization"]["secret"], v["organization"]["secret"]);
    assert_ne!(w["organization"]["id"], v["organization"]["id"]);
    // The secrets are not in the database files in clear.
    let bytes = common::all_bytes(dir.path());
    assert!(!common::contains(&bytes, org) && !common::contains(&bytes, user));
}
