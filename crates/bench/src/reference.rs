//! The reference server: a bare axum handler that answers the seed's
//! oauth/url body (the same bytes, the same size) with no registry, store,
//! authentication, middleware or logging. It runs as its own process on the
//! same tokio runtime configuration as `elements serve` (multi-threaded, one
//! worker per core), so the two are measured the same way.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// The path of the seed's oauth/url call, without the query.
pub const OAUTH_URL_PATH: &str = "/elements/api-v2/elements/hubspot/oauth/url";

/// The seed's oauth/url query.
pub const SEED_OAUTH_QUERY: &str = "apiKey=123456789d-1234-12e4-bda9-12345b8bf20&apiSecret=123456&scope=contacts-rw%20offline&callbackUrl=http://demonstrab.ly";

/// The seed's oauth/url answer, byte for byte.
pub const SEED_OAUTH_ANSWER: &str = r#"{"element":"hubspot","oauthUrl":"https://app.hubspot.com/auth/authenticate?client_id=123456789d-1234-12e4-bda9-12345b8bf20&portalId=123456&redirect_uri=http%3A%2F%2Fdemonstrab.ly&scope=contacts-rw%20offline"}"#;

const SEED_URL: &str = "https://app.hubspot.com/auth/authenticate?client_id=123456789d-1234-12e4-bda9-12345b8bf20&portalId=123456&redirect_uri=http%3A%2F%2Fdemonstrab.ly&scope=contacts-rw%20offline";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    element: &'static str,
    oauth_url: &'static str,
}

async fn answer() -> Json<Answer> {
    Json(Answer {
        element: "hubspot",
        oauth_url: SEED_URL,
    })
}

/// The reference router: the oauth/url path and the credentials path both
/// answer the same body.
pub fn router() -> Router {
    Router::new()
        .route("/elements/api-v2/elements/{key}/oauth/url", get(answer))
        .route("/elements/api-v2/instances/{id}/credentials", get(answer))
}

/// Runs the reference server on `127.0.0.1:0` until killed.
pub fn serve() -> std::io::Result<()> {
    serve_router(router())
}

/// Serves `app` on `127.0.0.1:0` until killed, on a multi-threaded runtime
/// (one worker per core), printing the address as `elements serve` does.
fn serve_router(app: Router) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await
    })
}

/// Runs the reference forwarder on `127.0.0.1:0` until killed: a bare axum
/// handler that sends every request to `upstream` (`http://host:port`) with
/// hyper-util's pooled HTTP/1.1 client, as the proxy does (TCP_NODELAY, no
/// retries), and streams the answer back. No authentication, credential,
/// header rules, metrics or logging: the floor of any proxy on this
/// machine, so the proxy bench can tell the proxy's own cost from the cost
/// of a second HTTP hop.
pub fn serve_forwarder(upstream: &str) -> std::io::Result<()> {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::{IntoResponse, Response};
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use hyper_util::rt::TokioExecutor;

    type Upstream = Client<HttpConnector, Body>;

    async fn forward(
        State((client, base)): State<(Upstream, String)>,
        request: Request,
    ) -> Response {
        let (mut parts, body) = request.into_parts();
        let target = format!(
            "{base}{}",
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        match target.parse() {
            Ok(uri) => parts.uri = uri,
            Err(_) => return axum::http::StatusCode::BAD_REQUEST.into_response(),
        }
        match client.request(Request::from_parts(parts, body)).await {
            Ok(response) => response.map(Body::new),
            Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
        }
    }

    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(http);
    let base = upstream.trim_end_matches('/').to_owned();
    serve_router(Router::new().fallback(forward).with_state((client, base)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_body_is_the_seed_answer() {
        let body = serde_json::to_string(&Answer {
            element: "hubspot",
            oauth_url: SEED_URL,
        })
        .unwrap();
        assert_eq!(body, SEED_OAUTH_ANSWER);
    }
}
