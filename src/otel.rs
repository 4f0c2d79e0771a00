//! The optional OpenTelemetry trace export (`--otlp-endpoint`,
//! `ELEMENTS_OTLP_ENDPOINT`): OTLP over HTTP/protobuf to
//! `<endpoint>/v1/traces`, batched on the SDK's own thread, service name
//! `elements`. Without the setting nothing here runs: no exporter, no
//! thread, and the server creates no span (`elements_server::trace`).

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// The exporter's HTTP client: the project's reqwest client, its requests
/// run on the server's tokio runtime (the SDK's batch thread has no
/// reactor of its own).
#[derive(Debug)]
struct Client {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let answered = self
            .runtime
            .spawn(async move {
                let r = client.execute(request).await?;
                let mut response = Response::builder().status(r.status());
                if let Some(headers) = response.headers_mut() {
                    *headers = r.headers().clone();
                }
                let body = r.bytes().await?;
                Ok::<_, reqwest::Error>(response.body(body))
            })
            .await??;
        Ok(answered?)
    }
}

/// The traces URL of a collector's base URL (`/v1/traces` appended unless
/// already there).
fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(endpoint)
        .with_context(|| format!("--otlp-endpoint `{endpoint}` is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("--otlp-endpoint `{endpoint}` must be an http or https URL");
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    })
}

/// The installed exporter.
pub struct Otel {
    provider: SdkTracerProvider,
}

impl Otel {
    /// Builds the exporter for `endpoint` (requests run on `runtime`).
    pub fn start(endpoint: &str, runtime: tokio::runtime::Handle) -> anyhow::Result<Otel> {
        let client = Client {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("the OTLP HTTP client")?,
            runtime,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(traces_url(endpoint)?)
            .with_http_client(client)
            .build()
            .context("the OTLP span exporter")?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("elements")
                    .build(),
            )
            .build();
        Ok(Otel { provider })
    }

    /// The tracer of the `tracing` layer.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("elements")
    }

    /// Exports what is buffered and stops the batch thread (call while the
    /// runtime still runs, outside it).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OpenTelemetry: flushing spans at shutdown failed");
        }
    }
}
