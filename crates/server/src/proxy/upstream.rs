//! The proxy's HTTP client: hyper-util's pooled HTTP/1.1 client over
//! rustls (ring, Mozilla's roots from `webpki-roots`), with no layer of its
//! own between the proxy and the connection: no redirects (a provider's 3xx
//! goes back to the caller unchanged), no retries (the proxy's policy is in
//! `forward.rs`), no URL re-parsing and no header copies.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_rustls::ConfigBuilderExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ProxySettings;

/// The connector: plain TCP for `http` upstreams, rustls for `https`.
pub(super) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The pooled client (request bodies are axum's: buffered or streamed).
pub(super) type Upstream = Client<Connector, Body>;

/// Idle connections kept per upstream host.
const IDLE_PER_HOST: usize = 64;
/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The TLS configuration: ring, TLS 1.2 and 1.3, `webpki-roots` (the roots
/// reqwest's `rustls-tls` used).
pub(super) fn tls_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_webpki_roots()
        .with_no_client_auth()
}

/// The client for `settings` with this TLS configuration.
pub(super) fn client(settings: &ProxySettings, tls: rustls::ClientConfig) -> Upstream {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(settings.timeout.min(Duration::from_secs(10))));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// Whether a failed exchange may be tried again (for a replayable request):
/// the connection could not be made, or broke (reset, closed before the
/// answer); not when our own request body failed.
pub(super) fn transient(e: &hyper_util::client::legacy::Error) -> bool {
    if e.is_connect() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            return !h.is_user();
        }
        source = s.source();
    }
    true
}

/// Whether a failed exchange failed by a timeout (connecting, as reqwest's
/// `connect_timeout` did: answered 504 like a response that did not come).
pub(super) fn timed_out(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// The provider's response body, cut off with an error when no data
/// arrives for `timeout` (the time between reads, as reqwest's
/// `read_timeout` did). The timer is only set when a read has to wait.
pub(super) struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl TimedBody {
    pub(super) fn new(inner: Incoming, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            sleep: None,
            armed: false,
        }
    }
}

/// The error that ends a body whose provider stopped sending.
#[derive(Debug)]
struct Stalled(Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the provider sent no data for {} ms", self.0.as_millis())
    }
}

impl std::error::Error for Stalled {}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let sleep = match &mut this.sleep {
            Some(sleep) => {
                if !this.armed {
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.timeout);
                }
                sleep
            }
            None => this
                .sleep
                .insert(Box::pin(tokio::time::sleep(this.timeout))),
        };
        this.armed = true;
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(Stalled(this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The provider's answer as axum's body.
pub(super) fn body(inner: Incoming, timeout: Duration) -> Body {
    Body::new(TimedBody::new(inner, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// A self-signed certificate for `localhost` and 127.0.0.1 (test only).
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBmDCCAT6gAwIBAgIURFOZ6LbRWQheqIp6BUgdEiaVCGwwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNzE3NDgwN1oYDzIxMjYxMTAz
MTc0ODA3WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAR85s41rsxTTdr7cw8XcRihSq5xSI179C0gb0V/WMOcO4/imD83AE09
v0dUpxS/WCBgoBmYDiM3utpNaq3SPE31o2wwajAdBgNVHQ4EFgQUSg+lV9z/Php6
Y3igfpCTR0SWslswHwYDVR0jBBgwFoAUSg+lV9z/Php6Y3igfpCTR0SWslswGgYD
VR0RBBMwEYIJbG9jYWxob3N0hwR/AAABMAwGA1UdEwEB/wQCMAAwCgYIKoZIzj0E
AwIDSAAwRQIgSc84SbH96oxL5Xv+RB/eLE4dXqME11RtCGJBt6hCScsCIQCHU2AM
URInBUgDZne2ek3EqqiMwqSnNkSCL8EftEA/Gw==
-----END CERTIFICATE-----";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglDNU+bgkbSw9acOG
DlT3gSf4fWYK+jvfUe/J4ST5mymhRANCAAR85s41rsxTTdr7cw8XcRihSq5xSI17
9C0gb0V/WMOcO4/imD83AE09v0dUpxS/WCBgoBmYDiM3utpNaq3SPE31
-----END PRIVATE KEY-----";

    /// One HTTPS exchange through the client, against a local rustls server
    /// whose certificate the client trusts: TLS works, the answer streams
    /// back through [`TimedBody`], the connection goes back to the pool.
    #[tokio::test]
    async fn an_https_upstream_is_reached_over_rustls() {
        let cert = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(|r: hyper::Request<Incoming>| async move {
                            let text = format!("{} {}", r.method(), r.uri());
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(Bytes::from(text)),
                            ))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });

        // The production configuration refuses the unknown certificate...
        let settings = ProxySettings::default();
        let strict = client(&settings, tls_config());
        let uri = format!("https://localhost:{port}/v3/ping?x=1");
        let refused = strict
            .request(hyper::Request::get(&uri).body(Body::empty()).unwrap())
            .await
            .unwrap_err();
        assert!(refused.is_connect(), "{refused:?}");

        // ... one that trusts it gets through, twice on one connection.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let trusting = client(&settings, tls);
        let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..2 {
            let response = trusting
                .request(hyper::Request::get(&uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let text = body(response.into_body(), settings.timeout)
                .collect()
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(text, "GET /v3/ping?x=1");
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst) - before,
            1
        );
    }
}
