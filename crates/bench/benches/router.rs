//! The server's own per-request code, without the network (issue 19): one
//! request through the full router (`elements_server::router`, the one
//! middleware layer, the extractors, the handler, the answer's headers and
//! body) on a real SQLite store in a temporary directory, measured with
//! criterion. What the HTTP scenarios of `elements-bench` measure on top
//! of this is hyper, the sockets and the scheduler; this part is what our
//! code changes move, with a far smaller spread than a loaded 2-core VM.
//! No log subscriber is installed, so the access line is not formatted.
//! The reference router of the HTTP scenarios is measured the same way.
//!
//! Before the timings it prints the allocations each request makes (a
//! counting global allocator; the request is built before counting): a
//! figure that does not drift with the machine.
//!
//! `cargo bench -p elements-bench --bench router`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion};
use elements_server::startup;
use elements_server::ServerConfig;
use http_body_util::BodyExt as _;
use tower_service::Service as _;

const SEED_QUERY: &str = "apiKey=123456789d-1234-12e4-bda9-12345b8bf20&apiSecret=123456&scope=contacts-rw%20offline&callbackUrl=http://demonstrab.ly";

/// The system allocator, counting allocations (and reallocations).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Prints the allocations per request of `make`'s requests through `router`
/// (1,000 of them, built before counting).
fn print_allocations(
    runtime: &tokio::runtime::Runtime,
    router: &mut Router,
    label: &str,
    make: impl Fn() -> Request<Body>,
) {
    const N: u64 = 1000;
    let requests: Vec<_> = (0..N).map(|_| make()).collect();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for request in requests {
        runtime.block_on(call(router, request));
    }
    let made = ALLOCATIONS.load(Ordering::Relaxed) - before;
    eprintln!(
        "router/{label}: {:.1} allocations per request",
        made as f64 / N as f64
    );
}

struct Setup {
    router: Router,
    instance: i64,
    token: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    config.health_check.verify_on_create = false;
    let registry = startup::registry(&config).expect("catalog");
    let store = startup::open_store(&config).await.expect("store");
    let account = startup::create_account(store.as_ref(), "bench", "b@bench.test", "B", "B")
        .await
        .expect("account");
    let state = startup::state(&config, registry, Arc::clone(&store));
    let mut router = elements_server::router(state);
    let body = serde_json::json!({
        "element": {"key": "hubspot"},
        "providerData": {"access_token": "bench-access-token", "refresh_token": "bench-refresh-token", "expires_in": "31536000"},
        "configuration": {"oauth.api.key": "test-client", "oauth.api.secret": "123456", "oauth.callback.url": "https://app.test/cb", "oauth.scope": "contacts-rw offline"},
        "name": "Bench"
    });
    let request = Request::post("/elements/api-v2/instances")
        .header(
            "authorization",
            format!(
                "User {}, Organization {}",
                account.user.secret, account.organization.secret
            ),
        )
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let created: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    Setup {
        router,
        instance: created["id"].as_i64().unwrap(),
        token: created["token"].as_str().unwrap().to_owned(),
        _dir: dir,
    }
}

/// One request, its body read to the end; panics unless 200.
async fn call(router: &mut Router, request: Request<Body>) {
    let response = router.call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap();
    std::hint::black_box(body);
}

fn requests(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut s = runtime.block_on(setup());
    let credentials = format!("/elements/api-v2/instances/{}/credentials", s.instance);
    let authorization = format!("Element {}", s.token);
    let oauth_url = format!("/elements/api-v2/elements/hubspot/oauth/url?{SEED_QUERY}");
    let mut reference = elements_bench::reference::router();
    let reference_path = format!("/elements/api-v2/instances/{}/credentials", s.instance);
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    print_allocations(&runtime, &mut s.router, "GET /credentials", || {
        Request::get(&credentials)
            .header("authorization", &authorization)
            .body(Body::empty())
            .unwrap()
    });
    print_allocations(&runtime, &mut s.router, "GET oauth/url (seed)", || {
        get(&oauth_url)
    });
    print_allocations(
        &runtime,
        &mut reference,
        "reference (bare axum handler)",
        || get(&reference_path),
    );
    print_allocations(&runtime, &mut s.router, "GET /healthz", || get("/healthz"));
    let mut group = c.benchmark_group("router");
    group.bench_function("GET /credentials", |b| {
        b.iter(|| {
            let request = Request::get(&credentials)
                .header("authorization", &authorization)
                .body(Body::empty())
                .unwrap();
            runtime.block_on(call(&mut s.router, request));
        })
    });
    group.bench_function("GET oauth/url (seed)", |b| {
        b.iter(|| {
            let request = Request::get(&oauth_url).body(Body::empty()).unwrap();
            runtime.block_on(call(&mut s.router, request));
        })
    });
    // The reference of the HTTP scenarios (a bare axum handler answering
    // the seed's body), in-process the same way.
    group.bench_function("reference (bare axum handler)", |b| {
        b.iter(|| {
            let request = Request::get(&reference_path).body(Body::empty()).unwrap();
            runtime.block_on(call(&mut reference, request));
        })
    });
    group.bench_function("GET /healthz", |b| {
        b.iter(|| {
            let request = Request::get("/healthz").body(Body::empty()).unwrap();
            runtime.block_on(call(&mut s.router, request));
        })
    });
    group.finish();
}

criterion_group!(benches, requests);
criterion_main!(benches);
