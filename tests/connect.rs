//! Connect end to end: a real server over a real SQLite file, the fake
//! OAuth provider's authorize page (Allow / Deny), a tiny "app" on
//! 127.0.0.1 (its return page and a popup opener using /connect.js), all
//! driven by a real headless Chromium.

mod common;

use std::path::PathBuf;

use axum::response::Html;
use axum::routing::get;
use common::*;
use elements_client::{Client, CreateConnectSession, Instance, ListInstances};
use elements_core::OAuthOverride;
use elements_server::{startup, AppState};
use elements_testkit::browser::Browser;
use elements_testkit::provider::FakeProvider;
use reqwest::redirect::Policy;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn screenshot(name: &str) -> PathBuf {
    let dir = std::env::var_os("ELEMENTS_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir.join(format!("{name}.png"))
}

/// The app: `/done` shows where the browser came back to, `/opener` opens
/// the connect popup with connect.js and writes the outcome into the DOM.
async fn start_app(elements_base: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let opener = format!(
        "<!doctype html><title>App</title>\
         <script src=\"{elements_base}/elements/api-v2/connect.js\"></script>\
         <button id=\"open\">Connect</button>\
         <script>\
         document.getElementById('open').addEventListener('click', function () {{\
           var url = new URLSearchParams(location.search).get('url');\
           ElementsConnect.open(url).then(function (o) {{\
             var p = document.createElement('pre'); p.id = 'outcome';\
             p.textContent = JSON.stringify(o); document.body.appendChild(p);\
           }});\
         }});\
         </script>"
    );
    let app = axum::Router::new()
        .route(
            "/done",
            get(|| async { Html("<!doctype html><title>Back in the app</title><h1>Back</h1>") }),
        )
        .route("/opener", get(move || async move { Html(opener) }));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    base
}

struct Setup {
    base: String,
    state: AppState,
    /// The typed client, with the account's secrets.
    api: Client,
    /// Raw, without redirects: what a browser sends to the hosted pages
    /// and the callback (whose status and `Location` are asserted), and
    /// the fake provider's consent form.
    client: reqwest::Client,
    provider: FakeProvider,
    app: String,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Setup {
    /// A server whose public URL is its own address, GitLab and HubSpot
    /// pointed at the fake provider's authorize page, and an app whose
    /// `/done` is the organization's only allowed callback.
    async fn start(session_seconds: i64) -> Setup {
        let provider = FakeProvider::start().await;
        let dir = data_dir();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut config = config_in(dir.path());
        config.public_url = Some(format!("{base}/"));
        config.connect_session_seconds = session_seconds;
        config.overrides.insert(
            "gitlab".into(),
            OAuthOverride {
                authorization_url: Some(provider.consent_url()),
                token_url: Some(provider.token_url()),
                ..Default::default()
            },
        );
        config.overrides.insert(
            "hubspot".into(),
            OAuthOverride {
                token_url: Some(provider.token_url()),
                endpoints: [(
                    "current_authorization_url".to_owned(),
                    provider.consent_url(),
                )]
                .into_iter()
                .collect(),
                ..Default::default()
            },
        );
        let registry = startup::registry(&config).unwrap();
        let store = startup::open_store(&config).await.unwrap();
        let created = startup::create_account(store.as_ref(), "acme", "a@acme.test", "A", "L")
            .await
            .unwrap();
        let account = Account {
            organization_secret: created.organization.secret,
            user_secret: created.user.secret,
        };
        let state = startup::state(&config, registry, store);
        let (tx, rx) = oneshot::channel();
        let app_state = state.clone();
        tokio::spawn(async move {
            elements_server::serve(listener, app_state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let app = start_app(base.clone()).await;
        let setup = Setup {
            api: account.client(&base),
            base,
            state,
            client: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            provider,
            app,
            _dir: dir,
            _stop: tx,
        };
        let allowed = vec![setup.done_url()];
        assert_eq!(
            setup.api.set_callback_urls(&allowed).await.unwrap(),
            allowed
        );
        setup
    }

    fn done_url(&self) -> String {
        format!("{}/done", self.app)
    }

    async fn instances(&self) -> Vec<Instance> {
        self.api
            .instances(&ListInstances::new())
            .await
            .unwrap()
            .items
    }

    /// Creates a session; answers (token, url).
    async fn session(&self, body: &CreateConnectSession) -> (String, String) {
        let answer = self.api.create_connect_session(body).await.unwrap();
        let token = answer.token.expose().to_owned();
        let url = answer.url.expose().to_owned();
        assert_eq!(
            url,
            format!("{}/elements/api-v2/connect/{token}", self.base)
        );
        assert!(answer.expires_at.ends_with('Z'), "{}", answer.expires_at);
        (token, url)
    }

    fn gitlab(&self) -> CreateConnectSession {
        CreateConnectSession::new("gitlab", "Acme GitLab", self.done_url())
            .tags(["acme"])
            .configuration("oauth.api.key", "test-client")
            .configuration("oauth.api.secret", "test-secret")
            .configuration("oauth.scope", "read_user api")
            .end_user("customer-42")
    }
}

/// Nothing secret in what the browser shows.
fn assert_clean(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{s:?} appears in {text}");
    }
}

#[tokio::test]
async fn redirect_mode_connects_gitlab_with_pkce_and_the_link_works_once() {
    let setup = Setup::start(900).await;
    let (token, url) = setup.session(&setup.gitlab()).await;

    // The page's headers, as any client sees them (raw: a browser's page,
    // its headers asserted).
    let response = setup.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        csp.contains(&format!("form-action 'self' {}", setup.app)),
        "{csp}"
    );
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");

    let browser = Browser::start().await.expect("a headless Chromium");
    browser.goto(&url).await.unwrap();
    assert_eq!(browser.title().await.unwrap(), "Connect GitLab · Connect");
    assert_eq!(browser.text("#instance-name").await.unwrap(), "Acme GitLab");
    assert_eq!(browser.text("#scope").await.unwrap(), "read_user api");
    browser.screenshot_to(&screenshot("connect")).await.unwrap();

    browser.click("#continue").await.unwrap();
    browser.wait_for("#allow").await.unwrap();
    let at_provider = browser.url().await.unwrap();
    assert!(at_provider.contains("code_challenge="), "{at_provider}");
    assert!(!at_provider.contains("code_verifier"), "{at_provider}");
    browser.click("#allow").await.unwrap();
    // The page clicked on may have an `h1` too: wait for the redirect.
    browser.wait_for_url(&setup.done_url()).await.unwrap();

    let instances = setup.instances().await;
    assert_eq!(instances.len(), 1, "{instances:?}");
    let id = instances[0].id;
    assert_eq!(instances[0].name, "Acme GitLab");
    assert_eq!(instances[0].element.metadata.key, "gitlab");
    let final_url = browser.url().await.unwrap();
    assert_eq!(final_url, format!("{}?instanceId={id}", setup.done_url()));
    assert_eq!(setup.provider.code_exchanges(), 1);
    // The instance has the provider's tokens.
    let stored = setup.state.store.instance_any(id).await.unwrap().unwrap();
    assert!(setup
        .provider
        .is_access_token_valid(stored.tokens.access_token.as_ref().unwrap().expose()));
    assert_eq!(
        stored.configuration.get("oauth.callback.url"),
        Some(format!("{}/elements/api-v2/oauth/callback", setup.base).as_str())
    );
    let source = browser.source().await.unwrap();
    assert_clean(
        &format!("{final_url}{source}"),
        &["code=", "state=", "test-secret", &token],
    );

    // The link is spent (raw: the hosted page's status).
    browser.goto(&url).await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Link already used");
    let response = setup.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 410);
    assert_eq!(setup.instances().await.len(), 1);
    browser.close().await.unwrap();
}

#[tokio::test]
async fn denying_at_the_provider_returns_the_error_and_stores_nothing() {
    let setup = Setup::start(900).await;
    let (_, url) = setup.session(&setup.gitlab()).await;
    let browser = Browser::start().await.expect("a headless Chromium");
    browser.goto(&url).await.unwrap();
    browser.click("#continue").await.unwrap();
    browser.wait_for("#deny").await.unwrap();
    browser.click("#deny").await.unwrap();
    // The page clicked on may have an `h1` too: wait for the redirect.
    browser.wait_for_url(&setup.done_url()).await.unwrap();
    assert_eq!(
        browser.url().await.unwrap(),
        format!(
            "{}?error=access_denied&errorDescription=the+user+denied+access+at+the+provider",
            setup.done_url()
        )
    );
    assert!(setup.instances().await.is_empty());
    assert_eq!(setup.provider.code_exchanges(), 0);
    // The app's webhooks learn of it: a `connect.failed` event.
    let events = setup.api.events(None).await.unwrap();
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "connect.failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].payload["data"]["error"], "access_denied");
    assert_eq!(failed[0].payload["data"]["element"], "gitlab");
    browser.close().await.unwrap();
}

/// Starts the provider leg over HTTP and lets the fake provider allow it:
/// answers the callback URL the provider redirected to. Raw: what a
/// browser does (a redirect whose `Location` is read, the fake provider's
/// consent form).
async fn allowed_callback(setup: &Setup, token: &str) -> String {
    let response = setup
        .client
        .get(format!(
            "{}/elements/api-v2/connect/{token}/authorize",
            setup.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let to_provider = response.headers()["location"].to_str().unwrap().to_owned();
    let query = to_provider.split_once('?').unwrap().1.to_owned();
    let response = setup
        .client
        .post(setup.provider.consent_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("{query}&decision=allow"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    response.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_tampered_state_and_a_replayed_callback_are_refused_in_the_browser() {
    let setup = Setup::start(900).await;
    let (_, _) = setup.session(&setup.gitlab()).await;
    let (token, _) = setup.session(&setup.gitlab()).await;
    let callback = allowed_callback(&setup, &token).await;
    assert!(callback.starts_with(&format!(
        "{}/elements/api-v2/oauth/callback?code=",
        setup.base
    )));
    let code = callback
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap()
        .to_owned();
    let browser = Browser::start().await.expect("a headless Chromium");

    // Tampered: one character of the state changed.
    let tampered = {
        let i = callback.find("state=").unwrap() + 6;
        let mut t = callback.clone();
        let c = if &t[i..i + 1] == "A" { "B" } else { "A" };
        t.replace_range(i..i + 1, c);
        t
    };
    browser.goto(&tampered).await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Sign-in not recognised");
    assert!(browser
        .text("#message")
        .await
        .unwrap()
        .contains("Nothing was stored"));
    assert_clean(&browser.source().await.unwrap(), &[&code, "test-secret"]);
    assert!(setup.instances().await.is_empty());
    assert_eq!(setup.provider.code_exchanges(), 0);

    // The genuine answer still works, once.
    browser.goto(&callback).await.unwrap();
    browser.wait_for("h1").await.unwrap();
    let instances = setup.instances().await;
    assert_eq!(instances.len(), 1);
    let id = instances[0].id;
    assert_eq!(
        browser.url().await.unwrap(),
        format!("{}?instanceId={id}", setup.done_url())
    );

    // Replayed.
    browser.goto(&callback).await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Sign-in already used");
    assert_clean(&browser.source().await.unwrap(), &[&code]);
    assert_eq!(setup.instances().await.len(), 1);
    assert_eq!(setup.provider.code_exchanges(), 1);
    // No state at all (raw: a deliberately malformed callback).
    let response = setup
        .client
        .get(format!(
            "{}/elements/api-v2/oauth/callback?code=x",
            setup.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("no valid `state`"));
    browser.close().await.unwrap();
}

#[tokio::test]
async fn an_expired_session_shows_a_clear_page_and_stores_nothing() {
    // A lifetime of zero: every session is expired as soon as it exists.
    let setup = Setup::start(0).await;
    let (token, url) = setup.session(&setup.gitlab()).await;
    let browser = Browser::start().await.expect("a headless Chromium");
    browser.goto(&url).await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Link expired");
    browser.goto(&format!("{url}/authorize")).await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Link expired");
    assert!(!browser
        .url()
        .await
        .unwrap()
        .contains(&setup.provider.base_url()));
    assert_clean(&browser.source().await.unwrap(), &[&token, "test-secret"]);
    assert!(setup.instances().await.is_empty());
    // An unknown token.
    browser
        .goto(&format!("{}/elements/api-v2/connect/nope", setup.base))
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Link not valid");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn popup_mode_resolves_the_promise_in_the_opener() {
    let setup = Setup::start(900).await;
    let (_, url) = setup.session(&setup.gitlab().mode("popup")).await;
    let browser = Browser::start().await.expect("a headless Chromium");
    let opener = format!(
        "{}/opener?url={}",
        setup.app,
        percent_encoding::utf8_percent_encode(&url, percent_encoding::NON_ALPHANUMERIC)
    );
    browser.goto(&opener).await.unwrap();
    let client = browser.client();
    let main = client.window().await.unwrap();
    browser.click("#open").await.unwrap();
    let mut popup = None;
    for _ in 0..50 {
        let windows = client.windows().await.unwrap();
        if let Some(w) = windows.into_iter().find(|w| *w != main) {
            popup = Some(w);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    client
        .switch_to_window(popup.expect("the popup opened"))
        .await
        .unwrap();
    browser.wait_for("#continue").await.unwrap();
    browser.click("#continue").await.unwrap();
    browser.wait_for("#allow").await.unwrap();
    browser.click("#allow").await.unwrap();
    client.switch_to_window(main).await.unwrap();
    let outcome = browser
        .wait_for("#outcome")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let instances = setup.instances().await;
    assert_eq!(instances.len(), 1);
    let id = instances[0].id;
    assert_eq!(outcome, format!("{{\"instanceId\":{id}}}"));
    assert_eq!(browser.url().await.unwrap(), opener);
    browser.close().await.unwrap();
}

#[tokio::test]
async fn hubspot_current_flow_connects_and_the_legacy_flow_is_refused() {
    let setup = Setup::start(900).await;
    let hubspot = |flow: &str| {
        CreateConnectSession::new("hubspot", "Acme HubSpot", setup.done_url())
            .configuration("oauth.api.key", "test-client")
            .configuration("oauth.api.secret", "test-secret")
            .configuration("oauth.scope", "contacts")
            .configuration("oauth.flow", flow)
    };
    let err = refused(setup.api.create_connect_session(&hubspot("legacy")).await);
    assert_eq!(err.status, 400);
    assert!(
        err.message()
            .contains("set `configuration.oauth.flow` to `current`"),
        "{err}"
    );
    let (_, url) = setup.session(&hubspot("current")).await;
    let browser = Browser::start().await.expect("a headless Chromium");
    browser.goto(&url).await.unwrap();
    browser.click("#continue").await.unwrap();
    browser.wait_for("#allow").await.unwrap();
    browser.click("#allow").await.unwrap();
    // The page clicked on may have an `h1` too: wait for the redirect.
    browser.wait_for_url(&setup.done_url()).await.unwrap();
    let instances = setup.instances().await;
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].element.metadata.key, "hubspot");
    let id = instances[0].id;
    assert_eq!(
        browser.url().await.unwrap(),
        format!("{}?instanceId={id}", setup.done_url())
    );
    browser.close().await.unwrap();
}

#[tokio::test]
async fn an_api_key_form_refuses_a_blank_key_then_connects_with_a_real_one() {
    let setup = Setup::start(900).await;
    let (token, url) = setup
        .session(&CreateConnectSession::new(
            "sendgrid",
            "Acme SendGrid",
            setup.done_url(),
        ))
        .await;
    let browser = Browser::start().await.expect("a headless Chromium");
    browser.goto(&url).await.unwrap();
    assert_eq!(browser.title().await.unwrap(), "Connect SendGrid · Connect");
    let input = browser.find("input[name='api.key']").await.unwrap();
    assert_eq!(
        input.attr("type").await.unwrap().as_deref(),
        Some("password")
    );
    assert_eq!(
        browser.find_all("#credentials input").await.unwrap().len(),
        1
    );
    browser
        .screenshot_to(&screenshot("connect-form"))
        .await
        .unwrap();

    // "Wrong": SendGrid declares no verification, so wrong is a key of
    // spaces only (the browser's `required` lets it through; we refuse).
    browser.fill("input[name='api.key']", "   ").await.unwrap();
    browser.click("#connect").await.unwrap();
    browser.wait_for("#form-error").await.unwrap();
    assert_eq!(browser.text("#form-error").await.unwrap(), "Enter API Key.");
    assert!(setup.instances().await.is_empty());

    browser
        .fill("input[name='api.key']", "SG.right-key-123")
        .await
        .unwrap();
    browser.click("#connect").await.unwrap();
    // The form page has an `h1` too: wait for the redirect itself.
    browser.wait_for_url(&setup.done_url()).await.unwrap();
    let instances = setup.instances().await;
    assert_eq!(instances.len(), 1);
    let id = instances[0].id;
    let final_url = browser.url().await.unwrap();
    assert_eq!(final_url, format!("{}?instanceId={id}", setup.done_url()));
    assert_clean(&final_url, &["SG.right-key-123", &token]);
    let stored = setup.state.store.instance_any(id).await.unwrap().unwrap();
    assert_eq!(
        stored.configuration.get("api.key"),
        Some("SG.right-key-123")
    );

    // Used twice: the form again is refused, nothing more stored (raw: the
    // browser's form post to the hosted page).
    let response = setup
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("api.key=another")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 410);
    assert!(response.text().await.unwrap().contains("Link already used"));
    assert_eq!(setup.instances().await.len(), 1);
    browser.close().await.unwrap();
}

#[tokio::test]
async fn session_creation_checks_the_allow_list_and_the_public_url() {
    let setup = Setup::start(900).await;
    let mut evil = setup.gitlab();
    evil.redirect_url = "https://evil.example/cb".into();
    let err = refused(setup.api.create_connect_session(&evil).await);
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message(),
        "`redirectUrl` is not in the organization's allow-list of callback URLs"
    );
    // Raw (the client's escape hatch) once: a created session is a 201,
    // which the typed call does not show.
    let response = setup
        .api
        .request(reqwest::Method::POST, "/connect/sessions")
        .json(&setup.gitlab())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // Without a public URL: 503 naming the setting.
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let err = refused(server.api().create_connect_session(&setup.gitlab()).await);
    assert_eq!(err.status, 503);
    let message = err.message();
    assert!(message.contains("--public-url"), "{message}");
    assert!(message.contains("ELEMENTS_PUBLIC_URL"), "{message}");
    assert!(setup.instances().await.is_empty());
    server.stop().await;
}

/// The whole flow against the real binary (trace logging) over `store`:
/// the log never holds the session token, the state, the code, the client
/// secret or the tokens. Answers (log text, data directory).
async fn binary_flow(store: &[&str], dir: &std::path::Path) -> String {
    let fake = FakeProvider::start().await;
    let client_secret = format!("client-secret-{:032x}", rand::random::<u128>());
    fake.add_client("connect-client", &client_secret);
    let config = dir.join("elements.toml");
    std::fs::write(
        &config,
        format!(
            "public_url = \"http://elements.invalid\"\n\
             [elements.gitlab.oauth]\n\
             authorization_url = \"{}\"\n\
             token_url = \"{}\"\n",
            fake.consent_url(),
            fake.token_url()
        ),
    )
    .unwrap();
    let log_path = dir.join("server.log");
    let org = format!("org-{:032x}", rand::random::<u128>());
    let user = format!("user-{:032x}", rand::random::<u128>());
    let key = elements_store::Keyring::encode_key(&elements_store::Keyring::generate_key());
    let mut args = store.to_vec();
    args.extend(["--config", config.to_str().unwrap()]);
    let mut server = Binary::serve_logging_to(
        &args,
        &[
            ("ELEMENTS_LOG", "trace"),
            ("ELEMENTS_MASTER_KEY", &key),
            ("ELEMENTS_ORGANIZATION_SECRET", &org),
            ("ELEMENTS_USER_SECRET", &user),
        ],
        std::fs::File::create(&log_path).unwrap(),
    );
    let api = Client::new(&server.base).unwrap().with_account(&user, &org);
    let answer = api
        .create_connect_session(
            &CreateConnectSession::new("gitlab", "Logged GitLab", "https://app.example/connected")
                .configuration("oauth.api.key", "connect-client")
                .configuration("oauth.api.secret", &client_secret),
        )
        .await
        .unwrap();
    let token = answer.token.expose().to_owned();
    assert_eq!(
        answer.url.expose(),
        format!("http://elements.invalid/elements/api-v2/connect/{token}")
    );
    // Raw, without redirects: what the browser does (the redirects'
    // `Location` are asserted; the consent form is the fake provider's).
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(server.url(&format!("/connect/{token}/authorize")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let to_provider = response.headers()["location"].to_str().unwrap().to_owned();
    let response = client
        .post(fake.consent_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "{}&decision=allow",
            to_provider.split_once('?').unwrap().1
        ))
        .send()
        .await
        .unwrap();
    let back = response.headers()["location"].to_str().unwrap().to_owned();
    let query = back
        .strip_prefix("http://elements.invalid/elements/api-v2/oauth/callback?")
        .expect("the provider returns to the public URL's callback")
        .to_owned();
    let response = client
        .get(server.url(&format!("/oauth/callback?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let instances = api.instances(&ListInstances::new()).await.unwrap().items;
    assert_eq!(instances.len(), 1);
    let id = instances[0].id;
    assert_eq!(
        location,
        format!("https://app.example/connected?instanceId={id}")
    );
    let access = api
        .credentials(id)
        .await
        .unwrap()
        .access_token
        .expect("an access token")
        .into_inner();
    assert!(fake.is_access_token_valid(&access));
    assert!(server.terminate().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("connect: connected"), "{log}");
    let code = query
        .split('&')
        .find_map(|p| p.strip_prefix("code="))
        .unwrap();
    let state = query
        .split('&')
        .find_map(|p| p.strip_prefix("state="))
        .unwrap();
    for (what, secret) in [
        ("session token", token.as_str()),
        ("state", state),
        ("code", code),
        ("client secret", client_secret.as_str()),
        ("access token", access.as_str()),
    ] {
        assert!(
            !log.contains(secret),
            "the {what} is in the log: {}",
            log.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let stored = all_bytes(dir);
    for (what, secret) in [
        ("session token", token.as_str()),
        ("state", state),
        ("client secret", client_secret.as_str()),
    ] {
        assert!(
            !contains(&stored, secret),
            "the {what} is stored in plaintext"
        );
    }
    log
}

#[tokio::test]
async fn the_binary_over_sqlite_keeps_secrets_out_of_the_log_and_the_files() {
    let dir = data_dir();
    let data = dir.path().join("data");
    binary_flow(&["--data-dir", data.to_str().unwrap()], dir.path()).await;
}

#[tokio::test]
async fn the_binary_over_postgresql_runs_the_same_flow() {
    let pg = elements_testkit::pg::PgCluster::start().expect("a throwaway PostgreSQL cluster");
    let url = pg.create_database("connect").unwrap();
    let dir = data_dir();
    binary_flow(&["--database-url", &url], dir.path()).await;
}

/// Runs one SQL statement on the test server's SQLite file (a second
/// connection, as an operator's shell would); answers the first row's
/// columns joined by `|` (empty for statements without rows).
async fn sqlite(setup: &Setup, statement: &str) -> String {
    use sqlx::{Connection as _, Row as _};
    let url = format!(
        "sqlite://{}",
        setup._dir.path().join("elements.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let row = sqlx::query(statement)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    let out = row.map_or(String::new(), |row| {
        (0..row.len())
            .map(|i| {
                row.try_get::<String, _>(i)
                    .or_else(|_| row.try_get::<i64, _>(i).map(|n| n.to_string()))
                    .unwrap()
            })
            .collect::<Vec<_>>()
            .join("|")
    });
    conn.close().await.unwrap();
    out
}

#[tokio::test]
async fn a_session_that_expires_at_the_provider_returns_an_error_and_is_swept() {
    let setup = Setup::start(900).await;
    let (token, _) = setup.session(&setup.gitlab()).await;
    let callback = allowed_callback(&setup, &token).await;
    // Time passes while the user is at the provider: forge the expiry.
    sqlite(&setup, "UPDATE connect_sessions SET expires_at = 1").await;
    let browser = Browser::start().await.expect("a headless Chromium");
    browser.goto(&callback).await.unwrap();
    browser.wait_for("h1").await.unwrap();
    assert_eq!(
        browser.url().await.unwrap(),
        format!(
            "{}?error=expired_session&errorDescription=the+connect+session+expired+before+the+provider+answered",
            setup.done_url()
        )
    );
    assert!(setup.instances().await.is_empty());
    assert_eq!(setup.provider.code_exchanges(), 0);
    // Used up and its secrets wiped; the next session creation sweeps it.
    assert_eq!(
        sqlite(
            &setup,
            "SELECT stage, configuration_enc IS NULL, verifier_enc IS NULL FROM connect_sessions"
        )
        .await,
        "done|1|1"
    );
    setup.session(&setup.gitlab()).await;
    assert_eq!(
        sqlite(
            &setup,
            "SELECT COUNT(*) FROM connect_sessions WHERE expires_at = 1"
        )
        .await,
        "0"
    );
    assert_eq!(
        sqlite(&setup, "SELECT COUNT(*) FROM connect_sessions").await,
        "1"
    );
    browser.close().await.unwrap();
}

#[tokio::test]
async fn other_provider_errors_and_a_missing_code_reach_the_app_sanitized() {
    let setup = Setup::start(900).await;
    for (query, expected) in [
        (
            "error=temporarily_unavailable",
            "error=provider_error&errorDescription=the+provider+answered+with+error+%60temporarily_unavailable%60",
        ),
        (
            "error=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "error=provider_error&errorDescription=the+provider+answered+with+an+error",
        ),
        (
            "nothing=here",
            "error=invalid_response&errorDescription=the+provider%27s+answer+carries+no+authorization+code",
        ),
    ] {
        let (token, _) = setup.session(&setup.gitlab()).await;
        // Raw: a browser's redirects, their `Location` asserted.
        let response = setup
            .client
            .get(format!("{}/elements/api-v2/connect/{token}/authorize", setup.base))
            .send()
            .await
            .unwrap();
        let to_provider = response.headers()["location"].to_str().unwrap().to_owned();
        let state = to_provider
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("state="))
            .unwrap()
            .to_owned();
        let response = setup
            .client
            .get(format!(
                "{}/elements/api-v2/oauth/callback?{query}&state={state}",
                setup.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303, "{query}");
        assert_eq!(
            response.headers()["location"].to_str().unwrap(),
            format!("{}?{expected}", setup.done_url())
        );
    }
    assert!(setup.instances().await.is_empty());
    assert_eq!(setup.provider.code_exchanges(), 0);
}
