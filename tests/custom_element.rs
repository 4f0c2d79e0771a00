//! Extending from outside the workspace: builds `examples/custom-element`
//! (its own crate, not a workspace member) with cargo, runs it on a free
//! port of 127.0.0.1, and checks over real HTTP that it serves its own
//! element (with the quirk of its code and its alias) and a built-in one.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// Kills the example when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn build_example() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // A target directory of its own: no lock contention with this build.
    let target = root.join("target").join("custom-element");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(root.join("examples/custom-element/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building examples/custom-element failed");
    target
        .join("debug")
        .join(format!("custom-element{}", std::env::consts::EXE_SUFFIX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_crate_serves_its_element_and_the_built_in_ones() {
    let binary = build_example();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(&binary)
        .arg("127.0.0.1:0")
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the example");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let base = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();

    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let r = client.get(path).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // Its own route and the elements API side by side.
    assert_eq!(
        get(format!("{base}/")).await,
        (200, "my application".into())
    );
    let (status, body) = get(format!("{base}/elements/api-v2/elements/acmecrm")).await;
    assert_eq!(status, 200, "{body}");
    let acme: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (acme["id"].as_u64(), acme["name"].as_str()),
        (Some(10001), Some("Acme CRM"))
    );
    assert_eq!(acme["aliases"], serde_json::json!(["acme"]));
    let (status, body) = get(format!("{base}/elements/api-v2/elements/acme")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["key"],
        "acmecrm"
    );
    // The quirk in code.
    let (status, body) = get(format!(
        "{base}/elements/api-v2/elements/acmecrm/oauth/url?apiKey=cid&callbackUrl=https%3A%2F%2Fapp.test%2Fcb"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let url: Value = serde_json::from_str(&body).unwrap();
    let url = url["oauthUrl"].as_str().unwrap();
    assert!(
        url.starts_with(
            "https://login.acme-crm.example/oauth/authorize?response_type=code&client_id=cid&"
        ) && url.ends_with("&acme_ui=compact"),
        "{url}"
    );
    // A built-in element, HubSpot with its own crate, is served too.
    let (status, body) = get(format!("{base}/elements/api-v2/elements/hubspot")).await;
    assert_eq!(status, 200, "{body}");
    let hubspot: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (hubspot["id"].as_u64(), hubspot["key"].as_str()),
        (Some(43), Some("hubspot"))
    );
    let (status, _) = get(format!("{base}/elements/api-v2/elements/nope")).await;
    assert_eq!(status, 404);
    drop(running);
}
