//! Criterion micro-benchmarks of the hot pure functions:
//! `cargo bench -p elements-bench --bench micro`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use elements_core::{Configuration, OAuthUrlRequest};

fn seed_request() -> OAuthUrlRequest {
    OAuthUrlRequest {
        api_key: Some("123456789d-1234-12e4-bda9-12345b8bf20".into()),
        api_secret: Some("123456".into()),
        scope: Some("contacts-rw offline".into()),
        callback_url: Some("http://demonstrab.ly".into()),
        ..Default::default()
    }
}

fn oauth_url(c: &mut Criterion) {
    let registry = elements_catalog::builtin().expect("built-in catalog");
    let hubspot = registry.get("hubspot").expect("hubspot").clone();
    let request = seed_request();
    assert_eq!(
        hubspot.oauth_url(&request).expect("seed url").url,
        "https://app.hubspot.com/auth/authenticate?client_id=123456789d-1234-12e4-bda9-12345b8bf20&portalId=123456&redirect_uri=http%3A%2F%2Fdemonstrab.ly&scope=contacts-rw%20offline"
    );
    c.bench_function("oauth_url/hubspot_seed", |b| {
        b.iter(|| hubspot.oauth_url(black_box(&request)))
    });
}

fn registry_lookup(c: &mut Criterion) {
    let registry = elements_catalog::builtin().expect("built-in catalog");
    let mut group = c.benchmark_group("registry");
    group.bench_function("by_key/hubspot", |b| {
        b.iter(|| registry.by_key(black_box("hubspot")).is_some())
    });
    group.bench_function("by_id/43", |b| {
        b.iter(|| registry.by_id(black_box(43)).is_some())
    });
    group.bench_function("get/\"43\" (key or id)", |b| {
        b.iter(|| registry.get(black_box("43")).is_some())
    });
    group.bench_function("get/unknown", |b| {
        b.iter(|| registry.get(black_box("hubspto")).is_none())
    });
    group.bench_function("build/builtin", |b| {
        b.iter(|| elements_catalog::builtin().expect("built-in catalog").len())
    });
    group.finish();
}

fn configuration_validation(c: &mut Criterion) {
    let registry = elements_catalog::builtin().expect("built-in catalog");
    let hubspot = registry.get("hubspot").expect("hubspot").clone();
    let mut complete = Configuration::new();
    complete.insert("oauth.api.key", "my-client-id");
    complete.insert("oauth.api.secret", "123456");
    complete.insert("oauth.callback.url", "www.samplecallbackurl.com");
    complete.insert("oauth.scope", "contacts-rw+offline");
    assert!(hubspot.validate_configuration(&complete).is_ok());
    let mut missing = Configuration::new();
    missing.insert("oauth.api.key", "my-client-id");
    assert!(hubspot.validate_configuration(&missing).is_err());
    let mut group = c.benchmark_group("validate_configuration");
    group.bench_function("hubspot/complete", |b| {
        b.iter(|| hubspot.validate_configuration(black_box(&complete)).is_ok())
    });
    group.bench_function("hubspot/missing_three", |b| {
        b.iter(|| hubspot.validate_configuration(black_box(&missing)).is_err())
    });
    group.finish();
}

fn catalog_parse(c: &mut Criterion) {
    let text = elements_bench::scenarios::element_toml(1);
    assert!(elements_core::ElementSpec::parse("bench-0001.toml", &text).is_ok());
    c.bench_function("catalog/parse_one_generated_element", |b| {
        b.iter(|| elements_core::ElementSpec::parse("bench-0001.toml", black_box(&text)).is_ok())
    });
}

criterion_group!(
    benches,
    oauth_url,
    registry_lookup,
    configuration_validation,
    catalog_parse
);
criterion_main!(benches);
