//! The core of *elements*: what a connector ("element") is, how the catalog
//! describes one, and how the registry finds it.
//!
//! # Why the design is what it is
//!
//! An element is mostly **data**: an id, a key, a name, the provider's OAuth
//! endpoints and the configuration an instance needs. That data lives in one
//! TOML file per element (see [`ElementSpec`]), so adding a provider with standard
//! OAuth 2.0 needs no code at all: the default methods of the [`Element`]
//! trait implement the standard flow from the file's `[oauth]` section.
//!
//! Some providers have **quirks** (HubSpot's legacy `portalId` URL, a token
//! endpoint that wants a different grant). Such an element is a small crate
//! with one struct implementing [`Element`], overriding only the methods that
//! differ, and one `inventory::submit!` of an [`ElementFactory`]. The
//! [`Registry`] joins code and data by key when it is built and refuses to
//! start on any inconsistency, naming the file and line at fault.
//!
//! The crate does no I/O. Talking to a provider's token endpoint is split into
//! a pure half (build a [`ProviderRequest`], parse a [`ProviderResponse`]) and
//! an injected [`Transport`] that the caller supplies; reading catalog files
//! from disk is the caller's business too (it hands us names and text).
//!
//! # The API
//!
//! Every public item has one path, at the crate root, except the two
//! namespaces [`standard`] (the standard OAuth 2.0 building blocks, for
//! element crates that differ only in part) and [`keys`] (well-known
//! configuration keys).
//!
//! - an element: [`Element`], registered with an [`ElementFactory`];
//! - the catalog format: [`ElementSpec`] (its doc comment is the format's
//!   reference) and [`OAuthSpec`], [`TokenResponseSpec`], [`ConfigEntry`],
//!   [`Authentication`], [`ClientAuth`], [`Source`], [`CatalogError`];
//! - the registry: [`RegistryBuilder`], [`Registry`], [`OAuthOverride`],
//!   [`CatalogErrors`];
//! - OAuth as data: [`OAuthUrlRequest`], [`OAuthUrl`], [`CodeExchange`],
//!   [`RefreshRequest`], [`ProviderRequest`], [`ProviderResponse`],
//!   [`TokenSet`], [`Transport`] and the errors [`OAuthError`],
//!   [`ProviderError`], [`TransportError`]; [`QueryBuilder`] writes URLs the
//!   seed's way; [`lenient_seconds`] reads an `expires_in`;
//! - credential kinds: how a credential is applied ([`CredentialSpec`],
//!   [`BasicSpec`], [`apply_credential`] giving an [`AppliedCredential`],
//!   [`CredentialError`]), the client credentials grant
//!   ([`client_credentials_request`]) and OAuth 1.0a ([`OAuth1Spec`],
//!   [`SignatureMethod`], [`oauth1_authorization`] of an [`OAuth1Request`],
//!   the [`SignedRequest`]s of [`oauth1_request_token_request`] and
//!   [`oauth1_access_token_request`], [`oauth1_authorize_url`],
//!   [`oauth1_consumer`], [`ACCESS_TOKEN_PLACEHOLDER`]);
//! - values: [`Configuration`], [`MissingConfiguration`], [`Secret`].
//!
//! The `schema` feature adds `json_schema()`, the JSON Schema of a catalog
//! file (`docs/element.schema.json`).
//!
//! ```
//! use elements_core::{OAuthUrlRequest, RegistryBuilder};
//!
//! let toml = r#"
//! id = 9001
//! key = "example"
//! name = "Example"
//! description = "An example provider"
//! image = "elements/provider_example.png"
//! hub = "general"
//! authentication = "oauth2"
//! existing_account_description = "Give your application access to your Example account"
//! config_description = "Create an Example account first"
//!
//! [oauth]
//! authorization_url = "https://example.com/oauth/authorize"
//! token_url = "https://example.com/oauth/token"
//! "#;
//! let mut builder = RegistryBuilder::new();
//! builder.add_layer([("example.toml", toml)]);
//! let registry = builder.build().unwrap();
//!
//! let element = registry.get("example").unwrap();
//! let url = element
//!     .oauth_url(&OAuthUrlRequest {
//!         api_key: Some("client".into()),
//!         callback_url: Some("https://app.test/cb".into()),
//!         scope: Some("read write".into()),
//!         ..Default::default()
//!     })
//!     .unwrap();
//! assert_eq!(
//!     url.url,
//!     "https://example.com/oauth/authorize?response_type=code&client_id=client\
//!      &redirect_uri=https%3A%2F%2Fapp.test%2Fcb&scope=read%20write"
//! );
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod callback_url;
mod config;
mod credential;
mod element;
mod encode;
mod oauth;
mod registry;
mod secret;
mod spec;

pub use config::{Configuration, MissingConfiguration};
pub use credential::{
    apply as apply_credential, client_credentials_request, oauth1_access_token_request,
    oauth1_authorization, oauth1_authorize_url, oauth1_consumer, oauth1_request_token_request,
    AppliedCredential, BasicSpec, CredentialError, CredentialSpec, OAuth1Request, OAuth1Spec,
    SignatureMethod, SignedRequest, ACCESS_TOKEN_PLACEHOLDER,
};
pub use element::{keys, standard, Element, ElementFactory};
pub use encode::QueryBuilder;
pub use oauth::{
    lenient_seconds, CodeExchange, OAuthError, OAuthUrl, OAuthUrlRequest, ProviderError,
    ProviderRequest, ProviderResponse, RefreshRequest, TokenSet, Transport, TransportError,
};
pub use registry::{CatalogErrors, Listing, OAuthOverride, Registry, RegistryBuilder};
pub use secret::Secret;
#[cfg(feature = "schema")]
pub use spec::json_schema;
pub use spec::{
    check_custom_host, Authentication, CatalogError, ClientAuth, ConfigEntry, ElementSpec,
    OAuthSpec, ProxySpec, ResourceSpec, Source, TokenRequestFormat, TokenResponseSpec, VerifySpec,
};

// Re-exported so element crates can register without depending on inventory
// themselves, and always against the same version as the registry.
#[doc(hidden)]
pub use inventory;
