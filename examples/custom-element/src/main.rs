//! A downstream application with an element of its own.
//!
//! 1. The element: its data in `elements/acmecrm.toml`, its quirk in code
//!    (`AcmeCrm::oauth_url`), registered with `inventory` through
//!    `elements_core::inventory`.
//! 2. The registry: the built-in catalog (`elements_catalog::builder()`) plus
//!    a layer with this crate's file.
//! 3. The API: `elements_server::routes::elements::router()` merged into
//!    this application's own axum router, next to its own routes (its
//!    routes carry their full path, `/elements/api-v2/elements/...`).
//!
//! Usage: `custom-element <listen address> <data directory>`; prints
//! `listening on http://<address>` once it accepts connections.

use axum::routing::get;
use axum::Router;
use elements_core::{
    standard, Element, ElementFactory, ElementSpec, OAuthError, OAuthUrl, OAuthUrlRequest,
};
use elements_server::ServerConfig;

/// The element's catalog file, compiled in.
const ACMECRM_TOML: &str = include_str!("../elements/acmecrm.toml");

/// Acme CRM: standard OAuth 2.0 from its TOML file, plus one quirk.
#[derive(Debug)]
struct AcmeCrm {
    spec: ElementSpec,
}

impl Element for AcmeCrm {
    fn spec(&self) -> &ElementSpec {
        &self.spec
    }

    /// Acme's consent page needs `acme_ui=compact`.
    fn oauth_url(&self, req: &OAuthUrlRequest) -> Result<OAuthUrl, OAuthError> {
        let mut url = standard::authorization_url(&self.spec, req)?;
        url.url.push_str("&acme_ui=compact");
        Ok(url)
    }
}

elements_core::inventory::submit! {
    ElementFactory::new("acmecrm", |spec| Box::new(AcmeCrm { spec }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let data_dir = args.next().unwrap_or_else(|| "custom-element-data".into());

    // The built-in catalog, then this crate's layer (later layers win by key).
    let mut builder = elements_catalog::builder();
    builder.add_layer([("acmecrm.toml", ACMECRM_TOML)]);
    let registry = builder
        .build()
        .map_err(|errors| anyhow::anyhow!("the catalog is invalid:\n{errors}"))?;

    let config = ServerConfig {
        data_dir: data_dir.into(),
        ..Default::default()
    };
    let store = elements_server::startup::open_store(&config).await?;
    let state = elements_server::startup::state(&config, registry, store);

    let app = Router::new()
        .route("/", get(|| async { "my application" }))
        .merge(elements_server::routes::elements::router().with_state(state));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
