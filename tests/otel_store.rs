//! Issue 18 (OpenTelemetry): store calls are spans. With `--otlp-endpoint`,
//! every store call made while serving a request is exported as a client
//! span under the request's span, named `store.<operation>`, with
//! `db.system` and `db.operation.name` and nothing else of the call: no SQL
//! parameter, id, token or secret. Store calls outside a request
//! (background loops) export nothing. The real binary, on SQLite and on a
//! throwaway PostgreSQL cluster, exports to a fake OTLP/HTTP collector
//! (tests/common).

mod common;

use std::collections::BTreeSet;

use common::*;
use elements_store::Keyring;
use elements_testkit::pg::PgCluster;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

const ORG: &str = "otel-store-org-secret-3a9d";
const USER: &str = "otel-store-user-secret-c71e";
const ACCESS: &str = "otel-store-access-token-5b20";
const REFRESH: &str = "otel-store-refresh-token-e48f";

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn string(value: &str) -> Option<AnyValue> {
    Some(AnyValue::StringValue(value.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_are_child_spans_of_their_request_without_secrets() {
    let dir = data_dir();
    let data = dir.path().join("data");
    exercise(&["--data-dir", data.to_str().unwrap()], &[], "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_the_store_spans_say_postgresql() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let url = pg.create_database("otel_store").unwrap();
    let key = Keyring::encode_key(&Keyring::generate_key());
    exercise(
        &["--database-url", &url],
        &[("ELEMENTS_MASTER_KEY", &key)],
        "postgresql",
    )
    .await;
}

/// Runs the real binary on the database `args` name, with the exporter:
/// creates, reads and lists an instance, stops, then checks what arrived
/// (`system`: the expected `db.system`).
async fn exercise(args: &[&str], envs: &[(&str, &str)], system: &str) {
    let (endpoint, got) = otlp_collector().await;
    let mut args = args.to_vec();
    args.extend(["--otlp-endpoint", &endpoint]);
    let mut envs = envs.to_vec();
    envs.extend([
        ("ELEMENTS_ORGANIZATION_SECRET", ORG),
        ("ELEMENTS_USER_SECRET", USER),
    ]);
    let mut server = Binary::serve(&args, &envs);
    let client = reqwest::Client::new();
    let auth = format!("User {USER}, Organization {ORG}");
    let r = client
        .post(server.url("/instances"))
        .header("Authorization", &auth)
        .json(&seed_instance_body(ACCESS, REFRESH))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    // The first read of the instance: a store read.
    let r = client
        .get(server.url(&format!("/instances/{id}")))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The list is always read from the store.
    let r = client
        .get(server.url("/instances"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A graceful stop flushes the exporter.
    assert!(server.terminate().success());

    for (_, body) in got.lock().unwrap().iter() {
        for secret in [ORG, USER, ACCESS, REFRESH, token.as_str()] {
            assert!(!contains(body, secret), "an export carries {secret}");
        }
    }
    let spans = otlp_spans(&got);
    let request = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no span {name}: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let children = |parent: &Span| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
            .collect()
    };

    let read = request("GET /elements/api-v2/instances/{id}");
    let under_read = children(read);
    let instance = under_read
        .iter()
        .find(|s| s.name == "store.instance")
        .unwrap_or_else(|| {
            panic!(
                "no store.instance under the read: {:?}",
                under_read.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(instance.kind, 3, "a client span");
    assert_eq!(attribute(instance, "db.system").cloned(), string(system));
    assert_eq!(
        attribute(instance, "db.operation.name").cloned(),
        string("instance")
    );
    let list = request("GET /elements/api-v2/instances");
    assert!(
        children(list)
            .iter()
            .any(|s| s.name == "store.instance_page"),
        "{:?}",
        children(list).iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let create = request("POST /elements/api-v2/instances");
    assert!(
        children(create)
            .iter()
            .any(|s| s.name == "store.create_instance"),
        "{:?}",
        children(create).iter().map(|s| &s.name).collect::<Vec<_>>()
    );

    // Every store span: under an exported span, its name its operation,
    // and no attribute but these two (no argument of the call).
    let store: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("store."))
        .collect();
    assert!(store.len() >= 3, "{store:?}");
    let id_text = id.to_string();
    for span in store {
        assert!(
            spans
                .iter()
                .any(|p| p.span_id == span.parent_span_id && p.trace_id == span.trace_id),
            "{} has no exported parent",
            span.name
        );
        // (`target`: the exporter's layer names every span's target, the
        // constant `elements::otel`.)
        if let Some(target) = attribute(span, "target") {
            assert_eq!(Some(target.clone()), string("elements::otel"));
        }
        let keys: BTreeSet<&str> = span
            .attributes
            .iter()
            .map(|a| a.key.as_str())
            .filter(|k| *k != "target")
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["db.operation.name", "db.system"]),
            "{}",
            span.name
        );
        assert_eq!(
            attribute(span, "db.operation.name").cloned(),
            string(span.name.trim_start_matches("store."))
        );
        assert_eq!(attribute(span, "db.system").cloned(), string(system));
        for a in &span.attributes {
            let text = format!("{:?}", a.value);
            assert!(
                !text.contains(&id_text),
                "{} carries the instance id",
                span.name
            );
        }
    }
}
