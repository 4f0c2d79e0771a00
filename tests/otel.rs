//! Issue 18 item 3: the optional OpenTelemetry trace export. The real
//! binary exports to a fake OTLP/HTTP collector on 127.0.0.1 that decodes
//! every body as protobuf: one span per request named by its route
//! template, with method and status, flushed on graceful shutdown, and no
//! secret, token or query string in any exported byte. Without the setting
//! there is no exporter thread.

mod common;

use std::sync::Arc;

use common::*;
use elements_client::{Client, CreateInstance, OAuthUrlRequest};
use elements_testkit::api::{Expect, FakeApi};
use elements_testkit::provider::FakeProvider;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest::Method;

/// The names of the threads of process `pid`.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

const ORG: &str = "otel-org-secret-5d1f9a";
const USER: &str = "otel-user-secret-77b2c4";
const ACCESS: &str = "otel-access-token-0c3e";
const REFRESH: &str = "otel-refresh-token-9f41";
const QUERY_SECRET: &str = "otel-query-secret-a6d2";
const API_KEY: &str = "SG.otel-api-key-31c7";

/// The environment's account on `server`, typed.
fn account(server: &Binary) -> Client {
    Client::new(&server.base)
        .expect("base URL")
        .with_account(USER, ORG)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_by_route_template_without_secrets() {
    let (endpoint, got) = otlp_collector().await;
    let dir = data_dir();
    let data = dir.path().join("data");
    let config = dir.path().join("elements.toml");
    std::fs::write(
        &config,
        format!("[elements.sendgrid]\napi_base_url = \"{endpoint}/api\"\n"),
    )
    .unwrap();
    let mut server = Binary::serve(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--otlp-endpoint",
            &endpoint,
        ],
        &[
            ("ELEMENTS_ORGANIZATION_SECRET", ORG),
            ("ELEMENTS_USER_SECRET", USER),
        ],
    );
    assert!(
        threads(server.child.id())
            .iter()
            .any(|t| t.starts_with("OpenTelemetry")),
        "{:?}",
        threads(server.child.id())
    );
    let api = account(&server);

    let url = api
        .clone()
        .anonymous()
        .oauth_url(
            "hubspot",
            &OAuthUrlRequest::new()
                .api_key("k")
                .api_secret(QUERY_SECRET)
                .scope("s")
                .callback_url("https://app.example/cb"),
        )
        .await
        .unwrap();
    assert_eq!(url.element, "hubspot");
    let created = api
        .create_instance(&seed_instance(ACCESS, REFRESH))
        .await
        .unwrap();
    let token = created.token.unwrap().into_inner();
    let id = created.id;
    assert_eq!(api.instance(id).await.unwrap().id, id);
    let own = api
        .clone()
        .anonymous()
        .with_element(&token)
        .own_configuration()
        .await
        .unwrap();
    assert!(own.iter().any(|e| e.key == "oauth.api.key"), "{own:?}");

    // A proxied call: a server span with a client child span.
    let mail = api
        .create_instance(&CreateInstance::new("sendgrid", "mail").configuration("api.key", API_KEY))
        .await
        .unwrap();
    let r = api
        .proxy(
            mail.id,
            Method::GET,
            &format!("v3/mail?api_key={QUERY_SECRET}"),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A graceful stop flushes the batch (the batch delay is 5 s: the spans
    // arrive because of the shutdown, not the timer).
    assert!(server.terminate().success());

    let received = got.lock().unwrap().clone();
    assert!(!received.is_empty(), "no export arrived");
    let mut spans = Vec::new();
    for (kind, body) in &received {
        assert_eq!(kind, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for resource in request.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref()?.value.clone());
            assert_eq!(service, Some(AnyValue::StringValue("elements".into())));
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        for secret in [
            ORG,
            USER,
            ACCESS,
            REFRESH,
            QUERY_SECRET,
            token.as_str(),
            API_KEY,
            "apiSecret",
            "callbackUrl",
            "v3/mail",
        ] {
            assert!(!contains(body, secret), "an export carries {secret}");
        }
    }
    let find = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no span {name}: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let status = |span: &Span| attribute(span, "http.response.status_code").cloned();
    let url = find("GET /elements/api-v2/elements/{key_or_id}/oauth/url");
    assert_eq!(
        attribute(url, "http.route"),
        Some(&AnyValue::StringValue(
            "/elements/api-v2/elements/{key_or_id}/oauth/url".into()
        ))
    );
    assert_eq!(
        attribute(url, "http.request.method"),
        Some(&AnyValue::StringValue("GET".into()))
    );
    assert_eq!(status(url), Some(AnyValue::IntValue(200)));
    assert_eq!(
        status(find("POST /elements/api-v2/instances")),
        Some(AnyValue::IntValue(200))
    );
    assert_eq!(
        status(find("GET /elements/api-v2/instances/{id}")),
        Some(AnyValue::IntValue(200))
    );
    assert_eq!(
        status(find("GET /elements/api-v2/instances/configuration")),
        Some(AnyValue::IntValue(200))
    );
    let proxied = find("GET /elements/api-v2/instances/{id}/proxy/{*path}");
    assert_eq!(status(proxied), Some(AnyValue::IntValue(200)));
    let upstream = find("proxy upstream");
    assert_eq!(upstream.kind, 3, "a client span");
    assert_eq!(upstream.trace_id, proxied.trace_id);
    assert_eq!(upstream.parent_span_id, proxied.span_id);
    assert_eq!(
        attribute(upstream, "element"),
        Some(&AnyValue::StringValue("sendgrid".into()))
    );
    assert_eq!(
        attribute(upstream, "outcome"),
        Some(&AnyValue::StringValue("2xx".into()))
    );
    // Server spans, each its own trace root.
    assert!(spans
        .iter()
        .filter(|s| s.name.starts_with("GET /") || s.name.starts_with("POST /"))
        .all(|s| s.kind == 2 && s.parent_span_id.is_empty()));
}

#[tokio::test]
async fn without_the_setting_there_is_no_exporter_thread() {
    let dir = data_dir();
    let server = Binary::serve(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    let health = Client::new(&server.base).unwrap().healthz().await.unwrap();
    assert_eq!(health.status, "ok");
    let names = threads(server.child.id());
    assert!(!names.is_empty());
    assert!(
        !names.iter().any(|t| t.starts_with("OpenTelemetry")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_during_a_proxied_call_is_a_provider_call_child_span() {
    let (endpoint, got) = otlp_collector().await;
    let oauth = Arc::new(FakeProvider::start().await);
    let api = FakeApi::start().await;
    let dir = data_dir();
    let config = dir.path().join("elements.toml");
    std::fs::write(
        &config,
        format!(
            "[elements.hubspot]\napi_base_url = \"{}\"\n\n[elements.hubspot.oauth]\ntoken_url = \"{}\"\nrefresh_url = \"{}\"\n",
            api.base_url(),
            oauth.token_url(),
            oauth.legacy_refresh_url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut server = Binary::serve(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--otlp-endpoint",
            &endpoint,
        ],
        &[
            ("ELEMENTS_ORGANIZATION_SECRET", ORG),
            ("ELEMENTS_USER_SECRET", USER),
        ],
    );
    let client = account(&server);
    let (access, refresh) = oauth.issue_tokens("test-client");
    let id = client
        .create_instance(&seed_instance(&access, &refresh))
        .await
        .unwrap()
        .id;
    let valid = oauth.clone();
    api.expect(Expect::Bearer(Arc::new(move |t| {
        valid.is_access_token_valid(t)
    })));
    let path = "crm/v3/objects/contacts";
    let first = client.proxy(id, Method::GET, path).await.unwrap();
    assert_eq!(first.status(), 200);
    // The provider API now refuses that token: the proxy refreshes (a
    // detached provider call) and replays.
    api.expire_current();
    let r = client.proxy(id, Method::GET, path).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(oauth.refresh_calls() >= 1);
    assert!(server.terminate().success());

    for (_, body) in got.lock().unwrap().iter() {
        for secret in [ORG, USER, access.as_str(), refresh.as_str()] {
            assert!(!contains(body, secret), "an export carries {secret}");
        }
    }
    let spans = otlp_spans(&got);
    let provider: Vec<&Span> = spans.iter().filter(|s| s.name == "provider call").collect();
    assert!(!provider.is_empty(), "no provider call span");
    for call in provider {
        assert_eq!(call.kind, 3, "a client span");
        assert_eq!(
            attribute(call, "element"),
            Some(&AnyValue::StringValue("hubspot".into()))
        );
        assert_eq!(
            attribute(call, "outcome"),
            Some(&AnyValue::StringValue("ok".into()))
        );
        let parent = spans
            .iter()
            .find(|s| s.span_id == call.parent_span_id)
            .unwrap_or_else(|| {
                panic!(
                    "no parent of {call:?} in {:#?}",
                    spans
                        .iter()
                        .map(|s| (&s.name, &s.span_id, &s.parent_span_id))
                        .collect::<Vec<_>>()
                )
            });
        assert_eq!(parent.trace_id, call.trace_id);
        assert_eq!(
            parent.name,
            "GET /elements/api-v2/instances/{id}/proxy/{*path}"
        );
    }
}
