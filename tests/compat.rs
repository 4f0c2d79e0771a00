//! Cloud Elements compatibility of the instance routes (Issue 17) and the
//! paging of `GET /instances` (Issue 12.8): a real server on 127.0.0.1:0
//! over a real SQLite file, a real HTTP client.

mod common;

use std::time::Instant;

use base64::Engine as _;
use common::*;
use elements_client::{CreateInstance, ElementRef, Instance, ListInstances, Page, UpdateInstance};
use reqwest::Method;
use serde_json::{json, Value};

async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = server.authed(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, headers)
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn named(name: &str, tags: &[&str]) -> CreateInstance {
    let mut body = seed_instance("at-1", "rt-1").tags(tags.iter().copied());
    body.name = name.to_owned();
    body
}

async fn create(server: &TestServer, body: &CreateInstance) -> Instance {
    server
        .api()
        .create_instance(body)
        .await
        .expect("POST /instances")
}

fn names(page: &Page<Instance>) -> Vec<String> {
    page.items.iter().map(|i| i.name.clone()).collect()
}

#[tokio::test]
async fn list_pages_with_cursor_and_paging_headers() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    for n in 0..5 {
        create(&server, &named(&format!("i{n}"), &["t"])).await;
    }
    let query = ListInstances::new().page_size(2);
    let page1 = api.instances(&query.clone().hydrate(false)).await.unwrap();
    assert_eq!(names(&page1), ["i4", "i3"]);
    assert_eq!(page1.returned_count, Some(2));
    assert_eq!(page1.total_count, Some(5));
    let token = page1.next_page_token.expect("a next page");
    let page2 = api
        .instances(&query.clone().next_page(token))
        .await
        .unwrap();
    assert_eq!(names(&page2), ["i2", "i1"]);
    assert_eq!(page2.total_count, None, "counted on the first page only");
    let token = page2.next_page_token.unwrap();
    let page3 = api.instances(&query.next_page(token)).await.unwrap();
    assert_eq!(names(&page3), ["i0"]);
    assert_eq!(page3.returned_count, Some(1));
    assert_eq!(page3.next_page_token, None, "the last page");
    // Without pageSize: the default page size (200) holds all five.
    let all = api.instances(&ListInstances::new()).await.unwrap();
    assert_eq!(names(&all).len(), 5);
    assert_eq!(all.next_page_token, None);
    server.stop().await;
}

#[tokio::test]
async fn page_size_is_capped_by_max_page_size() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.limits.default_page_size = 2;
    config.limits.max_page_size = 3;
    let server = TestServer::start(config).await;
    let api = server.api();
    for n in 0..4 {
        create(&server, &named(&format!("i{n}"), &["t"])).await;
    }
    let page = api.instances(&ListInstances::new()).await.unwrap();
    assert_eq!(names(&page), ["i3", "i2"], "default_page_size applies");
    assert!(page.next_page_token.is_some());
    let err = refused(api.instances(&ListInstances::new().page_size(4)).await);
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message(),
        "`pageSize` must be a whole number from 1 to 3 (max_page_size)"
    );
    let err = refused(
        api.instances(&ListInstances::new().next_page("bm90LWEtdG9rZW4"))
            .await,
    );
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message(),
        "`nextPage` is not a page token from `Elements-Next-Page-Token`"
    );
    // Raw: an unknown parameter (CEQL's `where`) is deliberately malformed
    // input the typed query cannot express.
    let (status, body, _) = send(
        &server,
        Method::GET,
        "/instances?where=name%3D%27x%27",
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown query parameter `where`"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn search_text_and_tags_combine() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    create(&server, &named("Acme CRM", &["prod", "crm"])).await;
    create(&server, &named("acme billing", &["prod"])).await;
    create(&server, &named("Other CRM", &["prod", "crm"])).await;
    create(&server, &named("50%_off", &["x\"crm\""])).await;
    let list = |query: ListInstances| {
        let api = api.clone();
        async move { api.instances(&query).await.unwrap() }
    };
    let page = list(ListInstances::new().search("ACME")).await;
    assert_eq!(names(&page), ["acme billing", "Acme CRM"]);
    assert_eq!(page.total_count, None, "not counted when filtered");
    let page = list(ListInstances::new().search("acme").tag("crm")).await;
    assert_eq!(names(&page), ["Acme CRM"]);
    let page = list(ListInstances::new().tag("crm").tag("prod")).await;
    assert_eq!(
        names(&page),
        ["Other CRM", "Acme CRM"],
        "a tag containing `\"crm\"` is not the tag `crm`"
    );
    // LIKE wildcards in the search are literal.
    let page = list(ListInstances::new().search("%_")).await;
    assert_eq!(names(&page), ["50%_off"]);
    let page = list(ListInstances::new().search("nothing")).await;
    assert!(page.items.is_empty());
    assert_eq!(page.returned_count, Some(0));
    server.stop().await;
}

#[tokio::test]
async fn count_groups_instances_by_element() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    let empty = api.instance_count().await.unwrap();
    assert_eq!(
        to_json(&empty),
        json!({"totalInstances": 0, "elementInstances": []})
    );
    create(&server, &named("a", &["t"])).await;
    create(&server, &named("b", &["t"])).await;
    let mut github = named("g", &["t"]);
    github.element = Some(ElementRef::key("github"));
    create(&server, &github).await;
    let counted = api.instance_count().await.unwrap();
    assert_eq!(
        to_json(&counted),
        json!({"totalInstances": 3, "elementInstances": [
            {"element": "github", "count": 1},
            {"element": "hubspot", "count": 2}
        ]})
    );
    let other = server.other_account("other").await.client(&server.base);
    assert_eq!(other.instance_count().await.unwrap().total_instances, 0);
    server.stop().await;
}

#[tokio::test]
async fn put_replaces_and_reprovisions() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    let created = create(&server, &named("before", &["a"])).await;
    let id = created.id;
    let token = created.token.unwrap();
    // Missing configuration: the same error as on create.
    let err = refused(
        api.replace_instance(
            id,
            &UpdateInstance::new()
                .name("after")
                .configuration("oauth.api.key", "k"),
        )
        .await,
    );
    assert_eq!(err.status, 400, "{err}");
    let message = err.message();
    assert!(
        message.contains("oauth.api.secret") && message.contains("oauth.callback.url"),
        "{message}"
    );
    let err = refused(
        api.replace_instance(id, &UpdateInstance::new().tags(["x"]))
            .await,
    );
    assert_eq!(
        (err.status.as_u16(), err.message()),
        (400, "`name` is required")
    );

    // Raw: the body carries read-only fields (`id`, `token`) a client sends
    // back, which the typed update cannot; the answer's header is asserted.
    let mut full = seed_instance_body("at-new", "rt-new");
    full["name"] = json!("after");
    full["tags"] = json!(["b", "c"]);
    full["id"] = json!(id);
    full["token"] = json!("ignored");
    let (status, body, headers) = send(
        &server,
        Method::PUT,
        &format!("/instances/{id}"),
        Some(full),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "after");
    assert_eq!(body["tags"], json!(["b", "c"]));
    assert_eq!(body["id"], id);
    assert!(
        body.get("token").is_none(),
        "the token is shown only at creation"
    );
    assert_eq!(
        header(&headers, "elements-instance-id"),
        Some(id.to_string().as_str())
    );
    let credentials = server
        .anonymous()
        .with_element(token)
        .credentials(id)
        .await
        .unwrap();
    assert_eq!(
        credentials.access_token.unwrap().expose(),
        "at-new",
        "re-provisioned"
    );

    let other = server.other_account("other").await.client(&server.base);
    let err = refused(
        other
            .replace_instance(id, &UpdateInstance::new().name("stolen"))
            .await,
    );
    assert_eq!(err.status, 404);
    assert_eq!(api.instance(id).await.unwrap().name, "after");
    server.stop().await;
}

#[tokio::test]
async fn patch_ignores_read_only_fields_and_merges_configuration() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let created = create(&server, &named("p", &["a"])).await;
    let id = created.id;
    let token = created.token.clone().unwrap();
    // A client sends back what it read, plus its change. Raw: the typed
    // update cannot carry the read-only fields whose ignoring is the point.
    let mut echoed = to_json(&created);
    echoed["name"] = json!("renamed");
    echoed["configuration"] = json!({"oauth.scope": "contacts"});
    echoed["providerData"] = json!({"access_token": "at-patched", "expires_in": 1800});
    let (status, body, _) = send(
        &server,
        Method::PATCH,
        &format!("/instances/{id}"),
        Some(echoed),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "renamed");
    assert_eq!(body["tags"], json!(["a"]), "unchanged");
    assert_eq!(body["configuration"]["oauth.scope"], "contacts");
    assert_eq!(
        body["configuration"]["oauth.callback.url"], "www.samplecallbackurl.com",
        "kept"
    );
    assert_eq!(body["configuration"]["oauth.api.key"], "********");
    let credentials = server
        .anonymous()
        .with_element(token)
        .credentials(id)
        .await
        .unwrap();
    assert_eq!(credentials.access_token.unwrap().expose(), "at-patched");
    // The typed PATCH merges the same way.
    let patched = server
        .api()
        .update_instance(
            id,
            &UpdateInstance::new().configuration("oauth.scope", "crm.objects.read"),
        )
        .await
        .unwrap();
    assert_eq!(patched.name, "renamed");
    assert_eq!(patched.configuration["oauth.scope"], "crm.objects.read");
    assert_eq!(
        patched.configuration["oauth.callback.url"],
        "www.samplecallbackurl.com"
    );
    server.stop().await;
}

#[tokio::test]
async fn configuration_entries_one_by_one() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    let id = create(&server, &named("c", &["a"])).await.id;
    let all = api.instance_configuration(id).await.unwrap();
    let scope = all.iter().find(|e| e.key == "oauth.scope").unwrap().clone();
    let one = api.configuration_entry(id, scope.id).await.unwrap();
    assert_eq!(one, scope);
    let one = api
        .set_configuration_entry(id, scope.id, "crm.objects.read")
        .await
        .unwrap();
    assert_eq!(one.property_value, "crm.objects.read");
    assert_eq!((one.id, one.key.as_str()), (scope.id, "oauth.scope"));
    let err = refused(api.configuration_entry(id, 99).await);
    assert_eq!(
        (err.status.as_u16(), err.message()),
        (
            404,
            format!("instance {id} has no configuration entry 99").as_str()
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn element_token_routes_act_on_its_instance() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let created = create(&server, &named("scoped", &["a"])).await;
    let id = created.id;
    let scoped = server.api().with_element(created.token.unwrap());
    let config = scoped.own_configuration().await.unwrap();
    assert_eq!(config.len(), 4);
    let body = scoped
        .update_own_instance(&UpdateInstance::new().tags(["z"]))
        .await
        .unwrap();
    assert_eq!((body.id, body.tags), (id, vec!["z".to_owned()]));
    // Without an Element token the route names what it needs.
    let err = refused(
        server
            .api()
            .update_own_instance(&UpdateInstance::new().tags(["z"]))
            .await,
    );
    assert_eq!(err.status, 400);
    assert!(err.message().contains("`Element` token"), "{err}");
    scoped.delete_own_instance().await.unwrap();
    let err = refused(server.api().instance(id).await);
    assert_eq!(err.status, 404, "deleted");
    // The token of a deleted instance: 401, as any bad credential.
    let err = refused(scoped.own_configuration().await);
    assert_eq!(err.status, 401, "{err}");
    let err = refused(scoped.credentials(id).await);
    assert_eq!(err.status, 401);
    server.stop().await;
}

#[tokio::test]
async fn element_scoped_instances_list_and_create() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    create(&server, &named("h", &["a"])).await;
    let mut body = named("g", &["a"]);
    body.element = None;
    let created = api.create_element_instance("github", &body).await.unwrap();
    assert_eq!(created.element.metadata.key, "github");
    assert!(created.token.is_some());
    let list = api
        .element_instances("github", &ListInstances::new())
        .await
        .unwrap();
    assert_eq!(names(&list), ["g"]);
    assert!(list.items[0].created_date.ends_with('Z'));
    let list = api
        .element_instances("43", &ListInstances::new())
        .await
        .unwrap();
    assert_eq!(names(&list), ["h"], "by element id too");
    body.element = Some(ElementRef::key("hubspot"));
    let err = refused(api.create_element_instance("github", &body).await);
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message(),
        "`element` names another element than the path (`github`)"
    );
    server.stop().await;
}

#[tokio::test]
async fn cors_only_for_allowed_origins_and_exposes_paging_headers() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.limits.cors_allowed_origins = vec!["https://app.example.com".into()];
    let server = TestServer::start(config).await;
    let allowed = server
        .authed(Method::GET, "/instances")
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = allowed.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for name in [
        "elements-next-page-token",
        "elements-returned-count",
        "elements-total-count",
        "x-request-id",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    let preflight = server
        .client
        .request(Method::OPTIONS, server.url("/instances"))
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "PATCH")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert!(preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("PATCH"));
    let other = server
        .authed(Method::GET, "/instances")
        .header("Origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    server.stop().await;

    // Default: no origin is allowed, no CORS header at all.
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let response = server
        .authed(Method::GET, "/instances")
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    server.stop().await;
}

/// A recorded Cloud Elements client session, replayed call by call:
/// `tests/data/compat/session.json`. `{{id}}`, `{{token}}` and
/// `{{next}}` are filled from earlier answers.
#[tokio::test]
async fn replay_a_recorded_client_session() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    replay(&server).await;
    server.stop().await;
}

/// The same session on PostgreSQL (a throwaway cluster), then a search and
/// a tag filter with LIKE wildcards: the paging and update queries run on
/// both engines.
#[tokio::test]
async fn replay_on_postgres() {
    let pg = elements_testkit::pg::PgCluster::start().expect("PostgreSQL (scripts/setup.sh)");
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.database_url = Some(pg.create_database("compat").expect("database"));
    let server = TestServer::start(config).await;
    replay(&server).await;
    create(&server, &named("50%_off", &["x\"crm\""])).await;
    create(&server, &named("Acme CRM", &["crm"])).await;
    let api = server.api();
    let page = api
        .instances(&ListInstances::new().search("%_"))
        .await
        .unwrap();
    assert_eq!(names(&page), ["50%_off"]);
    let page = api
        .instances(&ListInstances::new().search("ACME").tag("crm"))
        .await
        .unwrap();
    assert_eq!(names(&page), ["Acme CRM"]);
    server.stop().await;
}

async fn replay(server: &TestServer) {
    let session: Value =
        serde_json::from_str(include_str!("data/compat/session.json")).expect("session.json");
    let mut vars: Vec<(String, String)> = Vec::new();
    let fill = |text: &str, vars: &[(String, String)]| {
        vars.iter().fold(text.to_owned(), |t, (k, v)| {
            t.replace(&format!("{{{{{k}}}}}"), v)
        })
    };
    for (n, step) in session["steps"].as_array().unwrap().iter().enumerate() {
        let method = Method::from_bytes(step["method"].as_str().unwrap().as_bytes()).unwrap();
        let path = fill(step["path"].as_str().unwrap(), &vars);
        let body = step
            .get("body")
            .map(|b| serde_json::from_str(&fill(&b.to_string(), &vars)).unwrap());
        let (status, answer, headers) = send(server, method, &path, body).await;
        let expect: Value =
            serde_json::from_str(&fill(&step["expect"].to_string(), &vars)).unwrap();
        assert_eq!(
            status,
            expect["status"].as_u64().unwrap() as u16,
            "step {n} {path}: {answer}"
        );
        if let Some(fields) = expect["fields"].as_object() {
            for (pointer, value) in fields {
                // `null`: absent.
                let got = answer.pointer(pointer).unwrap_or(&Value::Null);
                assert_eq!(got, value, "step {n} {path}: {pointer} in {answer}");
            }
        }
        if let Some(wanted) = expect["headers"].as_object() {
            for (name, value) in wanted {
                assert_eq!(
                    header(&headers, name)
                        .map(Value::from)
                        .unwrap_or(Value::Null),
                    *value,
                    "step {n} {path}: header {name}"
                );
            }
        }
        if let Some(save) = step.get("save").and_then(Value::as_object) {
            for (var, from) in save {
                let from = from.as_str().unwrap();
                let value = match from.strip_prefix("header:") {
                    Some(h) => header(&headers, h).unwrap().to_owned(),
                    None => match answer.pointer(from).unwrap() {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                };
                vars.retain(|(k, _)| k != var);
                vars.push((var.clone(), value));
            }
        }
    }
}

/// Issue 12.8: a page deep in a million instances of one organization
/// costs what the first page costs (keyset on `(organization_id, seq)`).
/// The million rows are written with one SQL statement; 200 readable
/// instances made through the API sit at each end. Timings are printed
/// (`cargo test --test compat million -- --nocapture`), never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_a_million_instances_stays_flat() {
    const BULK: i64 = 1_000_000;
    const EDGE: i64 = 200;
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.limits.max_instances_per_organization = u64::MAX;
    let server = TestServer::start(config).await;
    for n in 0..EDGE {
        create(&server, &named(&format!("old-{n}"), &["t"])).await;
    }
    let url = format!("sqlite://{}", dir.path().join("elements.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (org, user): (i64, i64) =
        sqlx::query_as("SELECT organization_id, user_id FROM instances LIMIT 1")
            .fetch_one(&db)
            .await
            .unwrap();
    let started = Instant::now();
    sqlx::query(
        "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < $1) \
         INSERT INTO instances (id, seq, organization_id, user_id, element_key, element_id, name, \
         tags, configuration_enc, token_hash, created_at, updated_at) \
         SELECT 9000000000000000 + k, $2 + k, $3, $4, 'hubspot', 43, 'bulk-' || k, '[]', 'x', \
         randomblob(32), 0, 0 FROM n",
    )
    .bind(BULK)
    .bind(EDGE)
    .bind(org)
    .bind(user)
    .execute(&db)
    .await
    .unwrap();
    eprintln!("inserted {BULK} rows in {:?}", started.elapsed());
    db.close().await;
    for n in 0..EDGE {
        create(&server, &named(&format!("new-{n}"), &["t"])).await;
    }

    // The first page: the newest 200, and the total.
    let api = server.api();
    let first = api
        .instances(&ListInstances::new().page_size(200))
        .await
        .unwrap();
    assert_eq!(names(&first)[0], "new-199");
    assert_eq!(names(&first)[199], "new-0");
    assert_eq!(first.total_count, Some(1_000_400));
    // A page a million rows deep: the cursor just above the oldest 200
    // (white box: the token is base64url of `i1:<seq>`).
    let deep = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("i1:{}", EDGE + 1));
    let deep_path = format!("/instances?pageSize=200&nextPage={deep}");
    let deep_page = api
        .instances(&ListInstances::new().page_size(200).next_page(deep))
        .await
        .unwrap();
    assert_eq!(names(&deep_page)[0], "old-199");
    assert_eq!(names(&deep_page)[199], "old-0");

    let time = |path: String| {
        let server = &server;
        async move {
            let mut samples = Vec::new();
            for _ in 0..15 {
                let started = Instant::now();
                let (status, _, _) = send(server, Method::GET, &path, None).await;
                assert_eq!(status, 200);
                samples.push(started.elapsed());
            }
            samples.sort();
            samples[samples.len() / 2]
        }
    };
    let first_no_count = time("/instances?pageSize=200&hydrate=true&tags[]=t".into()).await;
    let first_page = time("/instances?pageSize=200".into()).await;
    let deep_page = time(deep_path).await;
    let count = time("/instances/count".into()).await;
    eprintln!(
        "median of 15, 200 rows each: first page {first_page:?} (with Elements-Total-Count), \
         first page filtered by tag (no count) {first_no_count:?}, page 1,000,000 rows deep {deep_page:?}; \
         GET /instances/count {count:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn post_oauth_url_answers_what_get_answers() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    // Raw: the exact bytes of the answer, and `apiSecret` sent as a JSON
    // number, as Cloud Elements clients may.
    let response = server
        .client
        .post(server.url("/elements/hubspot/oauth/url"))
        .json(&json!({
            "apiKey": "123456789d-1234-12e4-bda9-12345b8bf20",
            "apiSecret": 123456,
            "scope": "contacts-rw offline",
            "callbackUrl": "http://demonstrab.ly"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), SEED_OAUTH_ANSWER);
    let anonymous = server.anonymous();
    let posted = anonymous
        .oauth_url_post("hubspot", &seed_oauth_request())
        .await
        .unwrap();
    let got = anonymous
        .oauth_url("hubspot", &seed_oauth_request())
        .await
        .unwrap();
    assert_eq!(posted, got);
    assert_eq!(posted.oauth_url, SEED_OAUTH_URL);
    server.stop().await;
}

#[tokio::test]
async fn configuration_default_value_is_a_string_or_absent() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.anonymous();
    let listed = api.element_configuration("github").await.unwrap();
    let shown = api.element("github").await.unwrap().configuration;
    for (what, entries) in [("configuration", listed), ("element", shown)] {
        let key = entries.iter().find(|e| e.key == "oauth.api.key").unwrap();
        assert_eq!(key.default_value, None, "{what}: {key:?}");
        assert!(key.required);
        let scope = entries.iter().find(|e| e.key == "oauth.scope").unwrap();
        assert_eq!(
            scope.default_value.as_deref(),
            Some("repo read:user"),
            "{what}"
        );
    }
    // Raw: absent, never `null` (a typed `None` cannot tell them apart).
    for path in ["/elements/github/configuration", "/elements/github"] {
        let body: Value = server.get(path).send().await.unwrap().json().await.unwrap();
        let entries = if path.ends_with("configuration") {
            &body
        } else {
            &body["configuration"]
        };
        let entries = entries.as_array().expect("an array of entries");
        let key = entries
            .iter()
            .find(|e| e["key"] == "oauth.api.key")
            .unwrap();
        assert!(key.get("defaultValue").is_none(), "{path}: {key}");
    }
    server.stop().await;
}

#[tokio::test]
async fn instance_answers_name_their_instance() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let id = create(&server, &named("h", &["a"])).await.id;
    // Raw: the headers are what is asserted.
    let (status, _, headers) = send(&server, Method::GET, &format!("/instances/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "elements-instance-id"),
        Some(id.to_string().as_str())
    );
    assert!(header(&headers, "x-request-id").is_some_and(|v| !v.is_empty()));
    server.stop().await;
}

#[tokio::test]
async fn markup_is_removed_from_names_and_tags() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    let created = create(
        &server,
        &named(r#"<a href="https://evil.example">x</a>"#, &["<b>prod</b>"]),
    )
    .await;
    assert_eq!(created.name, "x");
    assert_eq!(created.tags, ["prod"]);
    let id = created.id;
    let body = api
        .update_instance(
            id,
            &UpdateInstance::new()
                .name("<i>R&amp;D</i> < 5")
                .tags(["<script>x</script>ok"]),
        )
        .await
        .unwrap();
    assert_eq!(body.name, "R&D < 5");
    assert_eq!(body.tags, ["ok"]);
    // A name of nothing but markup is an empty name.
    let err = refused(
        api.update_instance(id, &UpdateInstance::new().name("<script>x</script>"))
            .await,
    );
    assert_eq!(
        (err.status.as_u16(), err.message()),
        (400, "`name` must not be empty")
    );
    server.stop().await;
}
