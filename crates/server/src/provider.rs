//! The production [`Transport`]: reqwest, with timeouts, no redirects, a
//! bounded response size, and nothing of the request in any log line.

use std::time::Duration;

use async_trait::async_trait;
use elements_core::{
    Element, ProviderRequest, ProviderResponse, TokenRequestFormat, Transport, TransportError,
};

/// The largest provider response read.
pub const MAX_RESPONSE: usize = 256 * 1024;

/// Sends provider requests over HTTPS (or HTTP, for local fakes).
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// A transport whose requests time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("elements/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend initializes");
        HttpTransport { client }
    }
}

impl Default for HttpTransport {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

fn classify(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else if e.is_connect() {
        // Without the URL: it is ours, but the error text is enough.
        TransportError::Connect("connection failed".into())
    } else {
        TransportError::Other(e.without_url().to_string())
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: &ProviderRequest) -> Result<ProviderResponse, TransportError> {
        let form: Vec<(&str, &str)> = request
            .form
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        let builder = match request.format {
            TokenRequestFormat::Form => self.client.post(&request.url).form(&form),
            TokenRequestFormat::Json => {
                let object: serde_json::Map<String, serde_json::Value> = form
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                    .collect();
                self.client
                    .post(&request.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::Value::Object(object).to_string())
            }
            TokenRequestFormat::Query => self.client.get(&request.url).query(&form),
        };
        let mut builder = builder.header(reqwest::header::ACCEPT, "application/json");
        if let Some((id, secret)) = &request.basic_auth {
            builder = builder.basic_auth(id, Some(secret.expose()));
        }
        let mut response = builder.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_RESPONSE {
                return Err(TransportError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(ProviderResponse { status, body })
    }
}

/// A transport that records each call in the metrics
/// (`elements_provider_requests_total{element,outcome}` and its latency)
/// and its span, labelled by [`crate::metrics::element_label`]: a catalog
/// element's key, `private` for an organization's own element (its key is
/// tenant input, and unbounded) — never the URL, which may name a tenant.
pub struct Measured<'a> {
    inner: &'a dyn Transport,
    element: &'a str,
}

/// `inner`, measured as calls of `element`.
pub fn measured<'a>(inner: &'a dyn Transport, element: &'a dyn Element) -> Measured<'a> {
    Measured {
        inner,
        element: crate::metrics::element_label(element),
    }
}

#[async_trait]
impl Transport for Measured<'_> {
    async fn send(&self, request: &ProviderRequest) -> Result<ProviderResponse, TransportError> {
        use tracing::Instrument as _;
        let start = std::time::Instant::now();
        let span = crate::trace::provider_call(self.element);
        let result = if span.is_none() {
            self.inner.send(request).await
        } else {
            self.inner.send(request).instrument(span.clone()).await
        };
        let outcome = match &result {
            Ok(r) if (200..300).contains(&r.status) => "ok",
            Ok(_) => "status",
            Err(TransportError::Timeout) => "timeout",
            Err(TransportError::Connect(_)) => "connect",
            Err(TransportError::TooLarge) => "too_large",
            Err(_) => "error",
        };
        crate::trace::record_outcome(&span, outcome);
        crate::metrics::provider_call(self.element, outcome, start.elapsed());
        result
    }
}
