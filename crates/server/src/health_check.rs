//! health (issue 16): the `[verify]` request of an element, run when an
//! instance is created and again by the background health check, and the
//! retention of old events.
//!
//! The request is the element's `[verify]` method and path under its
//! `api_base_url` (or the deployment's override of it), with the
//! instance's credential applied as its kind declares (as the proxy does).
//! An expected status means the credential works; 401 and 403 mean the
//! provider rejected it; anything else, a 5xx or a timeout is a transient
//! failure. The background check claims due instances through the store
//! (`next_check_at` moved forward in the claiming statement, so replicas
//! never check one instance concurrently), runs a bounded number at once,
//! and feeds each outcome to [`Store::record_check`], which writes the
//! state change and its event in one transaction.

use std::sync::Arc;
use std::time::Duration;

use elements_core::{
    apply_credential, oauth1_authorization, oauth1_consumer, Authentication, Configuration,
    ElementSpec, OAuth1Request, Secret,
};
use elements_store::{CheckOutcome, Tokens};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::watch;

/// Health check and retention settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Run `[verify]` on `POST /instances` (`?verify=false` skips it per request).
    pub verify_on_create: bool,
    /// How often each instance is checked again; zero disables the
    /// background check.
    pub period: Duration,
    /// Checks in flight at once per process.
    pub concurrency: usize,
    /// Time allowed for one verify request.
    pub timeout: Duration,
    /// How often the background task looks for due checks.
    pub poll_interval: Duration,
    /// Delivered and dead-lettered events older than this are deleted;
    /// zero keeps them for ever.
    pub event_retention: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            verify_on_create: true,
            period: Duration::from_secs(6 * 3600),
            concurrency: 8,
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(5),
            event_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Settings {
    /// Applies the settings given (config file, flags, environment).
    pub fn apply(
        &mut self,
        verify_on_create: Option<bool>,
        interval_seconds: Option<u64>,
        retention_days: Option<u64>,
    ) {
        if let Some(v) = verify_on_create {
            self.verify_on_create = v;
        }
        if let Some(s) = interval_seconds {
            self.period = Duration::from_secs(s);
            // Look for due checks at least as often as one period.
            if s > 0 {
                self.poll_interval = self.poll_interval.min(Duration::from_secs(s));
            }
        }
        if let Some(d) = retention_days {
            self.event_retention = Duration::from_secs(d.min(100 * 365) * 24 * 3600);
        }
    }
}

/// Rows deleted per retention statement.
const RETENTION_BATCH: i64 = 500;

/// What one verify request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An expected status.
    Ok,
    /// 401 or 403: the provider rejected the credential.
    Rejected(u16),
    /// Another status, a timeout, a connection failure (the message names
    /// it; never a token).
    Transient(String),
}

/// The verifier: settings and its HTTP client.
#[derive(Debug)]
pub struct Checker {
    /// The settings.
    pub settings: Settings,
    client: reqwest::Client,
}

impl Default for Checker {
    fn default() -> Self {
        Checker::new(Settings::default())
    }
}

impl Checker {
    /// A checker with these settings.
    pub fn new(settings: Settings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the TLS backend initializes");
        Checker { settings, client }
    }

    /// Runs `spec`'s `[verify]` request with this credential; `None` if the
    /// element declares none. `Err` when the request cannot be built (the
    /// credential cannot be applied, the base URL does not fill).
    pub async fn verify(
        &self,
        spec: &ElementSpec,
        configuration: &Configuration,
        tokens: &Tokens,
    ) -> Option<Result<Verdict, String>> {
        let v = spec.verify.as_ref()?;
        let (url, headers) = match request(spec, configuration, tokens) {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let method = reqwest::Method::from_bytes(v.method.as_bytes()).unwrap_or_default();
        let sent = self
            .client
            .request(method, url)
            .headers(headers)
            .send()
            .await;
        Some(Ok(match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                if v.expect.contains(&status) {
                    Verdict::Ok
                } else if status == 401 || status == 403 {
                    Verdict::Rejected(status)
                } else {
                    Verdict::Transient(format!("the verify request answered {status}"))
                }
            }
            Err(e) if e.is_timeout() => Verdict::Transient(format!(
                "the verify request timed out after {} ms",
                self.settings.timeout.as_millis()
            )),
            Err(e) if e.is_connect() => {
                Verdict::Transient("the verify request could not connect".into())
            }
            Err(_) => Verdict::Transient("the verify request failed".into()),
        }))
    }
}

/// The verify URL and the credential headers.
fn request(
    spec: &ElementSpec,
    configuration: &Configuration,
    tokens: &Tokens,
) -> Result<(reqwest::Url, HeaderMap), String> {
    let v = spec.verify.as_ref().ok_or("no [verify] table")?;
    let base = spec
        .base_url_for(configuration)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("element `{}` declares no `api_base_url`", spec.key))?;
    let text = format!("{}{}", base.trim_end_matches('/'), v.path);
    let mut url = reqwest::Url::parse(&text)
        .map_err(|e| format!("the verify URL of element `{}` is invalid: {e}", spec.key))?;
    let mut headers = HeaderMap::new();
    let mut header = |name: &str, value: &Secret| -> Result<(), String> {
        let name = HeaderName::try_from(name)
            .map_err(|_| format!("the credential header `{name}` is not a valid header name"))?;
        let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
            format!("the credential header `{name}` has a value that is not a valid header value")
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
        Ok(())
    };
    if spec.authentication == Authentication::Oauth1 {
        let (consumer_key, consumer_secret) =
            oauth1_consumer(configuration).map_err(|m| m.to_string())?;
        let token = tokens
            .access_token
            .as_ref()
            .map(Secret::expose)
            .unwrap_or_default();
        let token_secret = tokens.refresh_token.clone().unwrap_or_default();
        let nonce = crate::pkce::random_token(16);
        let authorization = oauth1_authorization(&OAuth1Request {
            method: &v.method,
            url: url.as_str(),
            params: &[],
            consumer_key,
            consumer_secret: &consumer_secret,
            token: Some(token),
            token_secret: Some(&token_secret),
            callback: None,
            verifier: None,
            nonce: &nonce,
            timestamp: crate::tokens::now_seconds(),
            version: true,
        })
        .map_err(|e| e.to_string())?;
        header("Authorization", &authorization)?;
        return Ok((url, headers));
    }
    let applied = apply_credential(spec, configuration, tokens.access_token.as_ref())
        .map_err(|e| e.to_string())?;
    if !applied.query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in &applied.query {
            pairs.append_pair(name, value.expose());
        }
    }
    for (name, value) in &applied.headers {
        header(name, value)?;
    }
    Ok((url, headers))
}

/// Starts the background health check and event retention; stops when
/// `stop` turns true.
pub fn spawn(state: crate::AppState, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(state, stop))
}

async fn run(state: crate::AppState, mut stop: watch::Receiver<bool>) {
    let store = state.store.clone();
    let settings = state.health_check.settings.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        let mut busy = false;
        if !settings.event_retention.is_zero() {
            let before = elements_store::now_millis() - settings.event_retention.as_millis() as i64;
            match store.delete_old_events(before, RETENTION_BATCH).await {
                Ok(n) => busy |= n as i64 == RETENTION_BATCH,
                Err(e) => tracing::warn!(error = %e, "health: event retention failed"),
            }
        }
        if !settings.period.is_zero() {
            match check_due(&state).await {
                Ok(n) => busy |= n > 0,
                Err(e) => tracing::warn!(error = %e, "health: claiming checks failed"),
            }
        }
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(settings.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Claims the instances due now and checks them, a bounded number at once;
/// how many were claimed.
pub async fn check_due(state: &crate::AppState) -> Result<usize, elements_store::StoreError> {
    let settings = &state.health_check.settings;
    let store = &state.store;
    let period = settings.period.as_millis() as i64;
    let now = elements_store::now_millis();
    // Jitter: each instance's next check is spread over a tenth of the
    // period after it, by its (random) id.
    let ids = store
        .claim_health_checks(
            now,
            period,
            now + period,
            (period / 10).max(1),
            (settings.concurrency * 4) as i64,
        )
        .await?;
    let n = ids.len();
    let gate = Arc::new(tokio::sync::Semaphore::new(settings.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let (state, gate) = (state.clone(), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            check_one(&state, id).await;
        });
    }
    while set.join_next().await.is_some() {}
    Ok(n)
}

async fn check_one(state: &crate::AppState, id: i64) {
    let store = &state.store;
    let instance = match store.instance_any(id).await {
        Ok(Some(i)) if !i.disabled => i,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(instance_id = id, error = %e, "health: cannot read the instance");
            return;
        }
    };
    let Some(element) = state.registry.by_key(&instance.element_key) else {
        return;
    };
    if element.spec().verify.is_none() {
        return;
    }
    // A valid instance whose access token is about to expire is refreshed
    // first (a failed refresh is the refresher's to report).
    let instance = if instance.valid && instance.tokens.access_token.is_some() {
        match state.tokens.fresh(instance).await {
            Ok(i) => i,
            Err(_) => return,
        }
    } else if instance
        .tokens
        .expires_at
        .is_some_and(|t| t <= crate::tokens::now_seconds())
    {
        // An invalid instance whose access token has expired: a check
        // could only fail; it recovers when it is re-provisioned.
        return;
    } else {
        instance
    };
    let outcome = match state
        .health_check
        .verify(element.spec(), &instance.configuration, &instance.tokens)
        .await
    {
        None => return,
        Some(Err(e)) => {
            tracing::warn!(instance_id = id, error = %e, "health: cannot build the verify request");
            return;
        }
        Some(Ok(Verdict::Ok)) => CheckOutcome::Ok,
        Some(Ok(Verdict::Rejected(status))) => CheckOutcome::Rejected(format!(
            "the provider rejected the credential (the verify request answered {status})"
        )),
        Some(Ok(Verdict::Transient(message))) => CheckOutcome::Transient(message),
    };
    if let Err(e) = store.record_check(id, outcome).await {
        tracing::warn!(instance_id = id, error = %e, "health: recording a check failed");
    }
}

/// Whether `POST /instances` runs the element's `[verify]` request: the
/// deployment's `verify_on_create`, unless the request says `verify=false`.
/// Any other value of `verify` is a 400 naming it.
pub fn wanted(
    state: &crate::AppState,
    query: &[(String, String)],
) -> Result<bool, crate::error::ApiError> {
    let mut wanted = state.health_check.settings.verify_on_create;
    for (name, value) in query.iter().filter(|(n, _)| n == "verify") {
        wanted = match value.as_str() {
            "true" => wanted,
            "false" => false,
            other => {
                return Err(crate::error::ApiError::BadRequest(format!(
                    "query parameter `{name}` must be `true` or `false`, not {:?}",
                    other.chars().take(32).collect::<String>()
                )))
            }
        };
    }
    Ok(wanted)
}

/// Runs `spec`'s `[verify]` request with a new instance's credential,
/// before anything is stored (instances.rs `provision_instance`, and the
/// token manager after a code exchange or a client-credentials grant). A
/// 401/403 is a 400 saying the provider rejected the credential; another
/// failure a 502 naming the provider. Nothing when `spec` declares none.
pub async fn check_credential(
    checker: &Checker,
    spec: &ElementSpec,
    configuration: &Configuration,
    tokens: &Tokens,
) -> Result<(), crate::error::ApiError> {
    use crate::error::ApiError;
    let verdict = checker
        .verify(spec, configuration, tokens)
        .await
        .unwrap_or(Ok(Verdict::Ok))
        .map_err(|e| ApiError::BadRequest(format!("the credential cannot be verified: {e}")))?;
    match verdict {
        Verdict::Ok => Ok(()),
        Verdict::Rejected(status) => Err(ApiError::ProviderRefused {
            status: axum::http::StatusCode::BAD_REQUEST,
            message: format!(
                "the provider rejected the credential: {}'s verify request answered {status} \
                 (nothing was stored; pass verify=false to skip the check)",
                spec.name
            ),
            provider_message: format!("HTTP {status}"),
        }),
        Verdict::Transient(why) => Err(ApiError::BadGateway(format!(
            "the provider {} could not verify the credential: {why} (nothing was stored)",
            spec.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_from_the_config_file_with_their_defaults() {
        let defaults = crate::ServerConfig::default().health_check;
        assert!(defaults.verify_on_create);
        assert_eq!(defaults.period, Duration::from_secs(6 * 3600));
        assert_eq!(
            defaults.event_retention,
            Duration::from_secs(30 * 24 * 3600)
        );
        let file: crate::config::FileConfig = toml::from_str(
            "verify_on_create = false\nhealth_check_interval_seconds = 2\nevent_retention_days = 7\n",
        )
        .unwrap();
        let config = crate::ServerConfig::default().with_file(file);
        let s = config.health_check;
        assert!(!s.verify_on_create);
        assert_eq!(s.period, Duration::from_secs(2));
        assert_eq!(s.poll_interval, Duration::from_secs(2));
        assert_eq!(s.event_retention, Duration::from_secs(7 * 24 * 3600));
        let mut off = Settings::default();
        off.apply(None, Some(0), Some(0));
        assert!(off.period.is_zero() && off.event_retention.is_zero());
    }

    #[test]
    fn the_verify_request_carries_the_credential_as_declared() {
        let spec = elements_core::ElementSpec::parse(
            "demo.toml",
            "id = 7\nkey = \"demo\"\nname = \"Demo\"\ndescription = \"d\"\nimage = \"i\"\n\
             hub = \"general\"\nauthentication = \"apikey\"\nexisting_account_description = \"e\"\n\
             config_description = \"c\"\napi_base_url = \"https://api.example.com/v2/\"\n\
             [credential]\nquery = { key = \"{api.key}\" }\n\
             [[configuration]]\nkey = \"api.key\"\nname = \"Key\"\nsecret = true\n\
             [verify]\npath = \"/me?limit=1\"\n",
        )
        .unwrap();
        let mut configuration = Configuration::new();
        configuration.insert("api.key", "k 1");
        let (url, headers) = request(&spec, &configuration, &Tokens::default()).unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.example.com/v2/me?limit=1&key=k+1"
        );
        assert!(headers.is_empty());
        let missing = request(&spec, &Configuration::new(), &Tokens::default()).unwrap_err();
        assert!(missing.contains("api.key"), "{missing}");
    }
}
