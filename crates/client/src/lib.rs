#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! A typed async client of the elements HTTP API (the Cloud Elements
//! platform API, base path `/elements/api-v2`), over reqwest.
//!
//! Every route is a method: typed requests ([`CreateInstance`],
//! [`UpdateInstance`], [`ListInstances`], [`OAuthUrlRequest`], ...), typed
//! answers ([`Instance`], [`Element`], [`Page`], [`Credentials`], ...) and
//! one error type, [`Error`], whose [`ApiError`] holds the status, Cloud
//! Elements' JSON error body and the request id. The proxy routes are an
//! escape hatch returning the raw [`reqwest::Response`].
//!
//! A typed call is `Ok` only on its route's documented success status (201
//! for `POST` webhooks and connect sessions, 202 for a redelivery, 204 for a
//! webhook delete, 200 elsewhere); another 2xx is
//! [`Error::UnexpectedStatus`]. A refusal keeps its status even when its body
//! cannot be read ([`ApiError::read_error`]), and its whole body as text
//! ([`ApiError::raw`], [`Error::body_text`]).
//!
//! Credentials are set per client and never printed: [`Client::with_account`]
//! (`Authorization: User <secret>, Organization <secret>`),
//! [`Client::with_element`] (`Element <token>`), or both.
//!
//! The seed guide's two calls: the OAuth URL (no credentials), then an
//! instance from the tokens the callback received.
//!
//! ```no_run
//! use elements_client::{Client, CreateInstance, OAuthUrlRequest, ProviderData};
//!
//! # async fn run() -> Result<(), elements_client::Error> {
//! let anonymous = Client::new("http://127.0.0.1:8080")?;
//! let url = anonymous
//!     .oauth_url(
//!         "hubspot",
//!         &OAuthUrlRequest::new()
//!             .api_key("123456789d-1234-12e4-bda9-12345b8bf20")
//!             .api_secret("123456")
//!             .scope("contacts-rw offline")
//!             .callback_url("http://demonstrab.ly"),
//!     )
//!     .await?;
//! assert_eq!(
//!     url.oauth_url,
//!     "https://app.hubspot.com/auth/authenticate?client_id=123456789d-1234-12e4-bda9-12345b8bf20\
//!      &portalId=123456&redirect_uri=http%3A%2F%2Fdemonstrab.ly&scope=contacts-rw%20offline"
//! );
//!
//! let client = anonymous.with_account("<USER SECRET>", "<ORG SECRET>");
//! let instance = client
//!     .create_instance(
//!         &CreateInstance::new("hubspot", "Test")
//!             .provider_data(
//!                 ProviderData::tokens("<ACCESS TOKEN>", "<REFRESH TOKEN>")
//!                     .apikey("my-client-id")
//!                     .expires_in("1800"),
//!             )
//!             .configuration("oauth.api.key", "my-client-id")
//!             .configuration("oauth.api.secret", "123456")
//!             .configuration("oauth.callback.url", "www.samplecallbackurl.com")
//!             .configuration("oauth.scope", "contacts-rw+offline")
//!             .tag("demo"),
//!     )
//!     .await?;
//! assert_eq!(instance.element.metadata.id, 43);
//! // The instance token is answered once: keep it.
//! let token = instance.token.expect("returned by the create");
//! let credentials = Client::new("http://127.0.0.1:8080")?
//!     .with_element(token)
//!     .credentials(instance.id)
//!     .await?;
//! println!("{:?}", credentials.access_token); // Some(Secret(********))
//! # Ok(())
//! # }
//! ```
//!
//! A refusal names what was wrong:
//!
//! ```no_run
//! # async fn run(client: elements_client::Client) {
//! use elements_client::{CreateInstance, Error};
//!
//! match client.create_instance(&CreateInstance::new("hubspot", "Test")).await {
//!     Err(Error::Api(e)) => {
//!         assert_eq!(e.status, 400);
//!         assert_eq!(e.missing()[0], "oauth.api.key");
//!         eprintln!("{} (request {:?})", e.message(), e.request_id);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # }
//! ```

use std::fmt;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

mod error;
mod secret;
mod types;

pub use error::{ApiError, Error, ErrorBody};
pub use reqwest;
pub use secret::Secret;
pub use types::*;

/// The API's base path.
pub const BASE_PATH: &str = "/elements/api-v2";

/// The response header naming the instance an answer is about.
pub const INSTANCE_ID_HEADER: &str = "elements-instance-id";

/// A client of one elements server, with the credentials it sends.
///
/// Cheap to clone (the connection pool is shared). `Debug` shows which
/// credentials are set, never their values.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The server's root (`http://host:port`, or with a path prefix).
    root: Url,
    user_secret: Option<Secret>,
    organization_secret: Option<Secret>,
    element_token: Option<Secret>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &Option<Secret>| if s.is_some() { "set" } else { "none" };
        f.debug_struct("Client")
            .field("root", &self.root.as_str())
            .field("account", &set(&self.user_secret))
            .field("element", &set(&self.element_token))
            .finish()
    }
}

/// A header's value as text.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header(headers, name).and_then(|v| v.parse().ok())
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:8080`; a
    /// URL ending in `/elements/api-v2` is taken too), without credentials.
    pub fn new(base_url: impl AsRef<str>) -> Result<Client, Error> {
        Self::with_http_client(base_url, reqwest::Client::new())
    }

    /// [`Client::new`] over a reqwest client of the caller's (timeouts,
    /// proxies, TLS roots).
    pub fn with_http_client(
        base_url: impl AsRef<str>,
        http: reqwest::Client,
    ) -> Result<Client, Error> {
        let raw = base_url.as_ref().trim();
        let trimmed = raw.trim_end_matches('/');
        let trimmed = trimmed.strip_suffix(BASE_PATH).unwrap_or(trimmed);
        let root = Url::parse(&format!("{trimmed}/"))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .filter(|u| u.query().is_none() && u.fragment().is_none())
            .ok_or_else(|| {
                Error::BaseUrl(
                    "expected an absolute http(s) URL without query or fragment".to_owned(),
                )
            })?;
        Ok(Client {
            http,
            root,
            user_secret: None,
            organization_secret: None,
            element_token: None,
        })
    }

    /// This client with `Authorization: User <user_secret>, Organization
    /// <organization_secret>` (kept with any `Element` token already set).
    pub fn with_account(
        mut self,
        user_secret: impl Into<Secret>,
        organization_secret: impl Into<Secret>,
    ) -> Client {
        self.user_secret = Some(user_secret.into());
        self.organization_secret = Some(organization_secret.into());
        self
    }

    /// This client with `Element <token>` (kept with any account already set).
    pub fn with_element(mut self, token: impl Into<Secret>) -> Client {
        self.element_token = Some(token.into());
        self
    }

    /// This client with no credentials.
    pub fn anonymous(mut self) -> Client {
        self.user_secret = None;
        self.organization_secret = None;
        self.element_token = None;
        self
    }

    /// The server's root URL (`/healthz`, `/metrics` and the console live here).
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The URL of an API path (`/instances`), with the base path prepended.
    pub fn url(&self, path: &str) -> Url {
        self.url_at(&format!("{BASE_PATH}{path}"))
    }

    fn url_at(&self, absolute_path: &str) -> Url {
        let mut url = self.root.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        let (path, query) = absolute_path
            .split_once('?')
            .map_or((absolute_path, None), |(p, q)| (p, Some(q)));
        url.set_path(&format!("{prefix}{path}"));
        url.set_query(query);
        url
    }

    /// The URL of `/elements/api-v2/<segments...>`, each segment
    /// percent-encoded as one path segment.
    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.url("");
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn authorization(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let (Some(user), Some(org)) = (&self.user_secret, &self.organization_secret) {
            parts.push(format!(
                "User {}, Organization {}",
                user.expose(),
                org.expose()
            ));
        }
        if let Some(token) = &self.element_token {
            parts.push(format!("Element {}", token.expose()));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    fn authorize(&self, builder: RequestBuilder) -> RequestBuilder {
        match self.authorization() {
            None => builder,
            Some(text) => match HeaderValue::from_str(&text) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    builder.header(AUTHORIZATION, value)
                }
                // Not header text: reqwest fails the request at `send`,
                // with an error that does not hold the value.
                Err(_) => builder.header(AUTHORIZATION, text),
            },
        }
    }

    /// The raw escape hatch: a request to an API path (`/instances?x=y`)
    /// with this client's credentials, for anything the typed methods do
    /// not cover (sending deliberately malformed input, reading headers).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.authorize(self.http.request(method, self.url(path)))
    }

    fn at(&self, method: Method, url: Url) -> RequestBuilder {
        self.authorize(self.http.request(method, url))
    }

    /// Sends, and answers the response when its status is `expected` (the
    /// route's documented success status); another success status is
    /// [`Error::UnexpectedStatus`], a 4xx or 5xx an [`Error::Api`].
    async fn send(
        &self,
        builder: RequestBuilder,
        expected: StatusCode,
    ) -> Result<reqwest::Response, Error> {
        let response = builder.send().await?;
        check_status(response, expected).await
    }

    async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, Error> {
        let status = response.status();
        let request_id = header(response.headers(), "x-request-id");
        let bytes = response.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            status,
            message: e.to_string(),
            request_id,
        })
    }

    /// A JSON answer of a route whose success is 200.
    async fn json<T: DeserializeOwned>(&self, builder: RequestBuilder) -> Result<T, Error> {
        self.json_as(builder, StatusCode::OK).await
    }

    /// A JSON answer of a route whose success is `expected`.
    async fn json_as<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
        expected: StatusCode,
    ) -> Result<T, Error> {
        Self::decode(self.send(builder, expected).await?).await
    }

    /// An answer whose body does not matter, of a route whose success is
    /// `expected`.
    async fn empty(&self, builder: RequestBuilder, expected: StatusCode) -> Result<(), Error> {
        self.send(builder, expected).await.map(drop)
    }

    async fn page<T: DeserializeOwned>(&self, builder: RequestBuilder) -> Result<Page<T>, Error> {
        let response = self.send(builder, StatusCode::OK).await?;
        let headers = response.headers().clone();
        Ok(Page {
            items: Self::decode(response).await?,
            returned_count: header_u64(&headers, "elements-returned-count"),
            next_page_token: header(&headers, "elements-next-page-token"),
            total_count: header_u64(&headers, "elements-total-count"),
        })
    }

    fn with_body<B: Serialize + ?Sized>(builder: RequestBuilder, body: &B) -> RequestBuilder {
        builder.json(body)
    }

    // ------------------------------------------------------------- catalog

    /// `GET /elements`: the catalog, sorted by id.
    pub async fn elements(&self) -> Result<Vec<Element>, Error> {
        self.json(self.at(Method::GET, self.api_url(&["elements"])))
            .await
    }

    /// `GET /elements/keys`: every element key, sorted by id.
    pub async fn element_keys(&self) -> Result<Vec<String>, Error> {
        self.json(self.at(Method::GET, self.api_url(&["elements", "keys"])))
            .await
    }

    /// `GET /elements/{keyOrId}`: one element (a 404 suggests close keys).
    pub async fn element(&self, key_or_id: &str) -> Result<Element, Error> {
        self.json(self.at(Method::GET, self.api_url(&["elements", key_or_id])))
            .await
    }

    /// `GET /elements/{keyOrId}/configuration`: its configuration entries.
    pub async fn element_configuration(&self, key_or_id: &str) -> Result<Vec<ConfigEntry>, Error> {
        let url = self.api_url(&["elements", key_or_id, "configuration"]);
        self.json(self.at(Method::GET, url)).await
    }

    /// `GET /elements/{keyOrId}/oauth/url`: where to send the user. The
    /// parameters go in the query, as the seed sends them (`apiSecret`
    /// included); [`Client::oauth_url_post`] keeps them out of the URL.
    ///
    /// ```no_run
    /// # async fn run(client: elements_client::Client) -> Result<(), elements_client::Error> {
    /// use elements_client::OAuthUrlRequest;
    ///
    /// // HubSpot's current flow, with a state.
    /// let url = client
    ///     .oauth_url(
    ///         "hubspot",
    ///         &OAuthUrlRequest::new()
    ///             .api_key("CID")
    ///             .scope("contacts")
    ///             .callback_url("https://app.example/cb")
    ///             .state("xyz")
    ///             .param("oauth.flow", "current"),
    ///     )
    ///     .await?;
    /// assert!(url.oauth_url.starts_with("https://app.hubspot.com/oauth/authorize?"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn oauth_url(
        &self,
        key_or_id: &str,
        request: &OAuthUrlRequest,
    ) -> Result<OAuthUrl, Error> {
        let mut url = self.api_url(&["elements", key_or_id, "oauth", "url"]);
        {
            let pairs = request.pairs();
            if !pairs.is_empty() {
                url.query_pairs_mut().extend_pairs(pairs);
            }
        }
        self.json(self.at(Method::GET, url)).await
    }

    /// `POST /elements/{keyOrId}/oauth/url`: the same answer, with the
    /// parameters in a JSON body.
    pub async fn oauth_url_post(
        &self,
        key_or_id: &str,
        request: &OAuthUrlRequest,
    ) -> Result<OAuthUrl, Error> {
        let body: serde_json::Map<String, serde_json::Value> = request
            .pairs()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
            .collect();
        let url = self.api_url(&["elements", key_or_id, "oauth", "url"]);
        self.json(Self::with_body(self.at(Method::POST, url), &body))
            .await
    }

    // ---------------------------------------- organization-private elements
    //
    // The element body is any JSON object with the fields of a catalog TOML
    // file (docs/adding-an-element.md); the server checks it with the same
    // parser and URL-safety rules as a file.

    /// `POST /elements` (User, Organization): a new element private to the
    /// organization (`private: true` in the answer).
    pub async fn create_element<B: Serialize + ?Sized>(
        &self,
        element: &B,
    ) -> Result<Element, Error> {
        let url = self.api_url(&["elements"]);
        self.json(Self::with_body(self.at(Method::POST, url), element))
            .await
    }

    /// `PUT /elements/{keyOrId}`: replaces one of the organization's own
    /// elements (its id stays).
    pub async fn replace_element<B: Serialize + ?Sized>(
        &self,
        key_or_id: &str,
        element: &B,
    ) -> Result<Element, Error> {
        let url = self.api_url(&["elements", key_or_id]);
        self.json(Self::with_body(self.at(Method::PUT, url), element))
            .await
    }

    /// `DELETE /elements/{keyOrId}`: deletes one of the organization's own
    /// elements (409 while instances use it).
    pub async fn delete_element(&self, key_or_id: &str) -> Result<(), Error> {
        self.empty(
            self.at(Method::DELETE, self.api_url(&["elements", key_or_id])),
            StatusCode::OK,
        )
        .await
    }

    /// `PUT /elements/{keyOrId}/active`: re-activates an element for the
    /// organization.
    pub async fn activate_element(&self, key_or_id: &str) -> Result<Element, Error> {
        let url = self.api_url(&["elements", key_or_id, "active"]);
        self.json(self.at(Method::PUT, url)).await
    }

    /// `DELETE /elements/{keyOrId}/active`: deactivates an element (built-in
    /// or own) for the organization: new instances and `oauth/url` are
    /// refused; existing instances keep working.
    pub async fn deactivate_element(&self, key_or_id: &str) -> Result<Element, Error> {
        let url = self.api_url(&["elements", key_or_id, "active"]);
        self.json(self.at(Method::DELETE, url)).await
    }

    /// `POST /elements/{keyOrId}/clone`: a private copy, with `changes`
    /// (fields to replace, e.g. `{"key": "my-hubspot"}`) when given.
    pub async fn clone_element<B: Serialize + ?Sized>(
        &self,
        key_or_id: &str,
        changes: Option<&B>,
    ) -> Result<Element, Error> {
        let builder = self.at(
            Method::POST,
            self.api_url(&["elements", key_or_id, "clone"]),
        );
        let builder = match changes {
            Some(body) => Self::with_body(builder, body),
            None => builder,
        };
        self.json(builder).await
    }

    /// `GET /elements/{keyOrId}/export`: the element's TOML file.
    pub async fn export_element(&self, key_or_id: &str) -> Result<String, Error> {
        let url = self.api_url(&["elements", key_or_id, "export"]);
        Ok(self
            .send(self.at(Method::GET, url), StatusCode::OK)
            .await?
            .text()
            .await?)
    }

    // ----------------------------------------------------------- instances

    /// `POST /instances` (User, Organization): a new instance; its answer
    /// carries the instance token, once.
    pub async fn create_instance(&self, body: &CreateInstance) -> Result<Instance, Error> {
        let url = self.api_url(&["instances"]);
        self.json(Self::with_body(self.at(Method::POST, url), body))
            .await
    }

    /// `POST /elements/{keyOrId}/instances`: a new instance of the element
    /// the path names (`body.element` may be `None`; if given it must name
    /// the same element).
    pub async fn create_element_instance(
        &self,
        key_or_id: &str,
        body: &CreateInstance,
    ) -> Result<Instance, Error> {
        let url = self.api_url(&["elements", key_or_id, "instances"]);
        self.json(Self::with_body(self.at(Method::POST, url), body))
            .await
    }

    /// `GET /instances`: one page of the organization's instances, newest
    /// first. Follow [`Page::next_page_token`] with
    /// [`ListInstances::next_page`].
    ///
    /// ```no_run
    /// # async fn run(client: elements_client::Client) -> Result<(), elements_client::Error> {
    /// use elements_client::ListInstances;
    ///
    /// let mut query = ListInstances::new().page_size(100).tag("crm");
    /// loop {
    ///     let page = client.instances(&query).await?;
    ///     for instance in &page.items {
    ///         println!("{} {}", instance.id, instance.name);
    ///     }
    ///     match page.next_page_token {
    ///         Some(token) => query = query.next_page(token),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn instances(&self, query: &ListInstances) -> Result<Page<Instance>, Error> {
        let mut url = self.api_url(&["instances"]);
        Self::set_query(&mut url, query);
        self.page(self.at(Method::GET, url)).await
    }

    /// `GET /elements/{keyOrId}/instances`: [`Client::instances`] of one element.
    pub async fn element_instances(
        &self,
        key_or_id: &str,
        query: &ListInstances,
    ) -> Result<Page<Instance>, Error> {
        let mut url = self.api_url(&["elements", key_or_id, "instances"]);
        Self::set_query(&mut url, query);
        self.page(self.at(Method::GET, url)).await
    }

    fn set_query(url: &mut Url, query: &ListInstances) {
        let pairs = query.pairs();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
    }

    /// `GET /instances/count`: instances per element.
    pub async fn instance_count(&self) -> Result<InstanceCount, Error> {
        let url = self.api_url(&["instances", "count"]);
        self.json(self.at(Method::GET, url)).await
    }

    fn instance_url(&self, id: i64, rest: &[&str]) -> Url {
        let id = id.to_string();
        let mut segments = vec!["instances", id.as_str()];
        segments.extend_from_slice(rest);
        self.api_url(&segments)
    }

    /// `GET /instances/{id}` (without its token).
    pub async fn instance(&self, id: i64) -> Result<Instance, Error> {
        self.json(self.at(Method::GET, self.instance_url(id, &[])))
            .await
    }

    /// `PUT /instances/{id}`: a full update (`name` required; configuration
    /// replaced; `providerData` re-provisions).
    pub async fn replace_instance(
        &self,
        id: i64,
        body: &UpdateInstance,
    ) -> Result<Instance, Error> {
        let url = self.instance_url(id, &[]);
        self.json(Self::with_body(self.at(Method::PUT, url), body))
            .await
    }

    /// `PATCH /instances/{id}`: changes what `body` gives (configuration
    /// entries merged).
    pub async fn update_instance(&self, id: i64, body: &UpdateInstance) -> Result<Instance, Error> {
        let url = self.instance_url(id, &[]);
        self.json(Self::with_body(self.at(Method::PATCH, url), body))
            .await
    }

    /// `DELETE /instances/{id}` (its token stops working).
    pub async fn delete_instance(&self, id: i64) -> Result<(), Error> {
        self.empty(
            self.at(Method::DELETE, self.instance_url(id, &[])),
            StatusCode::OK,
        )
        .await
    }

    /// `PUT /instances/{id}/enabled`.
    pub async fn enable_instance(&self, id: i64) -> Result<Instance, Error> {
        let url = self.instance_url(id, &["enabled"]);
        self.json(self.at(Method::PUT, url)).await
    }

    /// `DELETE /instances/{id}/enabled`.
    pub async fn disable_instance(&self, id: i64) -> Result<Instance, Error> {
        let url = self.instance_url(id, &["enabled"]);
        self.json(self.at(Method::DELETE, url)).await
    }

    /// `GET /instances/{id}/configuration`: entries, secrets `********`.
    pub async fn instance_configuration(&self, id: i64) -> Result<Vec<ConfigurationEntry>, Error> {
        let url = self.instance_url(id, &["configuration"]);
        self.json(self.at(Method::GET, url)).await
    }

    /// `GET /instances/{id}/configuration/{configId}`: one entry.
    pub async fn configuration_entry(
        &self,
        id: i64,
        config_id: u64,
    ) -> Result<ConfigurationEntry, Error> {
        let config_id = config_id.to_string();
        let url = self.instance_url(id, &["configuration", &config_id]);
        self.json(self.at(Method::GET, url)).await
    }

    /// `PATCH /instances/{id}/configuration/{configId}`: sets its value.
    pub async fn set_configuration_entry(
        &self,
        id: i64,
        config_id: u64,
        value: impl Into<Secret>,
    ) -> Result<ConfigurationEntry, Error> {
        let config_id = config_id.to_string();
        let url = self.instance_url(id, &["configuration", &config_id]);
        let body = serde_json::json!({ "propertyValue": value.into() });
        self.json(Self::with_body(self.at(Method::PATCH, url), &body))
            .await
    }

    /// `GET /instances/{id}/credentials` (User and Organization, or the
    /// instance's `Element` token): what to add to provider calls,
    /// refreshed first when needed.
    pub async fn credentials(&self, id: i64) -> Result<Credentials, Error> {
        let url = self.instance_url(id, &["credentials"]);
        self.json(self.at(Method::GET, url)).await
    }

    /// `GET /instances/{id}/credentials?method=&url=`: an `oauth1`
    /// instance's signed `Authorization` header for exactly that request.
    pub async fn oauth1_signature(
        &self,
        id: i64,
        method: &str,
        request_url: &str,
    ) -> Result<Credentials, Error> {
        let mut url = self.instance_url(id, &["credentials"]);
        url.query_pairs_mut()
            .append_pair("method", method)
            .append_pair("url", request_url);
        self.json(self.at(Method::GET, url)).await
    }

    /// `POST /instances/{id}/token/rotate`: a new instance token (the old
    /// one stops at once).
    pub async fn rotate_instance_token(&self, id: i64) -> Result<Secret, Error> {
        let url = self.instance_url(id, &["token", "rotate"]);
        let answer: Rotated = self.json(self.at(Method::POST, url)).await?;
        answer
            .token
            .ok_or_else(|| Self::missing_field("token", StatusCode::OK))
    }

    // ------------------------------------- the instance of the Element token

    /// `GET /instances/configuration`: the configuration of the instance
    /// of this client's `Element` token.
    pub async fn own_configuration(&self) -> Result<Vec<ConfigurationEntry>, Error> {
        let url = self.api_url(&["instances", "configuration"]);
        self.json(self.at(Method::GET, url)).await
    }

    /// `PATCH /instances`: updates the instance of the `Element` token.
    pub async fn update_own_instance(&self, body: &UpdateInstance) -> Result<Instance, Error> {
        let url = self.api_url(&["instances"]);
        self.json(Self::with_body(self.at(Method::PATCH, url), body))
            .await
    }

    /// `DELETE /instances`: deletes the instance of the `Element` token.
    pub async fn delete_own_instance(&self) -> Result<(), Error> {
        self.empty(
            self.at(Method::DELETE, self.api_url(&["instances"])),
            StatusCode::OK,
        )
        .await
    }

    // ------------------------------------------------------- organizations

    /// `GET /organizations/me/callback-urls`: the allow-list (empty: none).
    pub async fn callback_urls(&self) -> Result<Vec<String>, Error> {
        let url = self.api_url(&["organizations", "me", "callback-urls"]);
        self.json(self.at(Method::GET, url)).await
    }

    /// `PUT /organizations/me/callback-urls`: replaces the allow-list.
    pub async fn set_callback_urls(&self, urls: &[String]) -> Result<Vec<String>, Error> {
        let url = self.api_url(&["organizations", "me", "callback-urls"]);
        self.json(Self::with_body(self.at(Method::PUT, url), urls))
            .await
    }

    /// `POST /organizations/me/secret/rotate`: a new organization secret
    /// for every user of the organization (the old one stops at once;
    /// this client keeps sending the old one).
    pub async fn rotate_organization_secret(&self) -> Result<Secret, Error> {
        let url = self.api_url(&["organizations", "me", "secret", "rotate"]);
        self.rotated_secret(url).await
    }

    /// `POST /users/me/secret/rotate`: a new user secret for the caller.
    pub async fn rotate_user_secret(&self) -> Result<Secret, Error> {
        let url = self.api_url(&["users", "me", "secret", "rotate"]);
        self.rotated_secret(url).await
    }

    async fn rotated_secret(&self, url: Url) -> Result<Secret, Error> {
        let answer: Rotated = self.json(self.at(Method::POST, url)).await?;
        answer
            .secret
            .ok_or_else(|| Self::missing_field("secret", StatusCode::OK))
    }

    fn missing_field(field: &str, status: StatusCode) -> Error {
        Error::Decode {
            status,
            message: format!("the answer has no `{field}`"),
            request_id: None,
        }
    }

    /// `GET /organizations/me/webhooks`: the organization's webhooks.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>, Error> {
        let url = self.api_url(&["organizations", "me", "webhooks"]);
        self.json(self.at(Method::GET, url)).await
    }

    /// `POST /organizations/me/webhooks`: a new webhook; its answer carries
    /// the `whsec_` signing secret, once.
    pub async fn create_webhook(&self, body: &CreateWebhook) -> Result<Webhook, Error> {
        let url = self.api_url(&["organizations", "me", "webhooks"]);
        self.json_as(
            Self::with_body(self.at(Method::POST, url), body),
            StatusCode::CREATED,
        )
        .await
    }

    /// `DELETE /organizations/me/webhooks/{id}`.
    pub async fn delete_webhook(&self, id: i64) -> Result<(), Error> {
        let id = id.to_string();
        let url = self.api_url(&["organizations", "me", "webhooks", &id]);
        self.empty(self.at(Method::DELETE, url), StatusCode::NO_CONTENT)
            .await
    }

    /// `GET /organizations/me/events?limit=`: the newest events (1 to 500;
    /// `None`: 100) and their deliveries.
    pub async fn events(&self, limit: Option<u32>) -> Result<Vec<Event>, Error> {
        let mut url = self.api_url(&["organizations", "me", "events"]);
        if let Some(limit) = limit {
            url.query_pairs_mut()
                .append_pair("limit", &limit.to_string());
        }
        self.json(self.at(Method::GET, url)).await
    }

    /// `POST /organizations/me/events/{id}/redeliver`: sends the event
    /// again to every webhook it went to.
    pub async fn redeliver_event(&self, id: &str) -> Result<Redelivery, Error> {
        let url = self.api_url(&["organizations", "me", "events", id, "redeliver"]);
        self.json_as(self.at(Method::POST, url), StatusCode::ACCEPTED)
            .await
    }

    // ------------------------------------------------------------- connect

    /// `POST /connect/sessions`: a hosted connect session; send the user
    /// to its `url`.
    pub async fn create_connect_session(
        &self,
        body: &CreateConnectSession,
    ) -> Result<ConnectSession, Error> {
        let url = self.api_url(&["connect", "sessions"]);
        self.json_as(
            Self::with_body(self.at(Method::POST, url), body),
            StatusCode::CREATED,
        )
        .await
    }

    // --------------------------------------------------------------- proxy

    /// The proxy escape hatch, unsent: `{method} /instances/{id}/proxy/{path}`
    /// with this client's credentials; add headers and a body, then send.
    /// `path` may carry a query (`crm/v3/objects/contacts?limit=1`).
    pub fn proxy_request(&self, instance: i64, method: Method, path: &str) -> RequestBuilder {
        let path = path.trim_start_matches('/');
        self.request(method, &format!("/instances/{instance}/proxy/{path}"))
    }

    /// `{method} /instances/{id}/proxy/{path}`, sent without a body: the
    /// provider's answer as it came (or ours, marked `Elements-Error: true`),
    /// whatever its status.
    pub async fn proxy(
        &self,
        instance: i64,
        method: Method,
        path: &str,
    ) -> Result<reqwest::Response, Error> {
        Ok(self.proxy_request(instance, method, path).send().await?)
    }

    /// The hub entrance, unsent: `{method} /hubs/{hub}/{path}` (needs the
    /// `Element` token); normalised resources are mapped by the element.
    pub fn hub_request(&self, hub: &str, method: Method, path: &str) -> RequestBuilder {
        let path = path.trim_start_matches('/');
        let mut url = self.api_url(&["hubs", hub]);
        let base = url.path().to_owned();
        let (p, q) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        url.set_path(&format!("{base}/{p}"));
        url.set_query(q);
        self.at(method, url)
    }

    /// `{method} /hubs/{hub}/{path}`, sent without a body.
    pub async fn hub(
        &self,
        hub: &str,
        method: Method,
        path: &str,
    ) -> Result<reqwest::Response, Error> {
        Ok(self.hub_request(hub, method, path).send().await?)
    }

    // ---------------------------------------------------------- operations

    /// `GET /healthz`: the process is up.
    pub async fn healthz(&self) -> Result<Readiness, Error> {
        self.json(self.http.get(self.url_at("/healthz"))).await
    }

    /// `GET /readyz`: database reachable, key check passed, migrations
    /// applied. Both answers are `Ok`: 200 (`status: "ready"`) and 503
    /// (`status: "not ready"`, with a `message` and each check's reason);
    /// see [`Readiness::is_ready`].
    pub async fn readyz(&self) -> Result<Readiness, Error> {
        let response = self.http.get(self.url_at("/readyz")).send().await?;
        match response.status() {
            StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE => Self::decode(response).await,
            // Neither 200 nor 503: an unexpected success or a refusal.
            _ => match check_status(response, StatusCode::OK).await {
                Ok(response) => Self::decode(response).await,
                Err(e) => Err(e),
            },
        }
    }

    /// `GET /metrics`: the Prometheus text (on the main listener unless the
    /// server moved it to `--metrics-listen`; then make a client of that
    /// address).
    pub async fn metrics(&self) -> Result<String, Error> {
        Ok(self
            .send(self.http.get(self.url_at("/metrics")), StatusCode::OK)
            .await?
            .text()
            .await?)
    }

    // ------------------------------------------ conva (wave 4) additions

    /// `POST /instances` whose `providerData` also carries keys beyond the
    /// typed [`ProviderData`] fields, as the server documents: values the
    /// provider added to the OAuth callback that the element captures
    /// (`callback_capture`, e.g. QuickBooks' `realmId`) and token-response
    /// fields the element keeps (`[oauth.token_response] keep`, e.g.
    /// Salesforce's `instance_url`), for an app that ran the callback or
    /// the code exchange itself. The server uses only the keys the element
    /// declares and ignores the rest. A key that `body.provider_data`
    /// already sets keeps the typed value.
    ///
    /// ```no_run
    /// # async fn run(client: elements_client::Client) -> Result<(), elements_client::Error> {
    /// use std::collections::BTreeMap;
    /// use elements_client::{CreateInstance, ProviderData};
    ///
    /// let body = CreateInstance::new("quickbooks", "Acme books")
    ///     .provider_data(ProviderData::code("<CODE>"))
    ///     .configuration("oauth.api.key", "<CLIENT ID>")
    ///     .configuration("oauth.api.secret", "<CLIENT SECRET>")
    ///     .configuration("oauth.callback.url", "https://app.example/cb");
    /// let fields = BTreeMap::from([("realmId".to_owned(), serde_json::json!("4620816365"))]);
    /// let instance = client.create_instance_with_provider_fields(&body, &fields).await?;
    /// assert_eq!(instance.configuration["realmId"], "4620816365");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_instance_with_provider_fields(
        &self,
        body: &CreateInstance,
        fields: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<Instance, Error> {
        let body = with_provider_fields(body, fields);
        let url = self.api_url(&["instances"]);
        self.json(Self::with_body(self.at(Method::POST, url), &body))
            .await
    }

    // ------------------------------------------ convb (issue 18 "also")

    /// `POST /instances?verify=false`: [`Client::create_instance`] without
    /// the element's `[verify]` request, so the credential is stored
    /// without being tried at the provider (the background health check
    /// still runs). Without `verify=false` the deployment decides
    /// (`verify_on_create`, on by default).
    ///
    /// ```no_run
    /// # async fn run(client: elements_client::Client) -> Result<(), elements_client::Error> {
    /// use elements_client::CreateInstance;
    ///
    /// let instance = client
    ///     .create_instance_unverified(
    ///         &CreateInstance::new("sendgrid", "mail").configuration("api.key", "SG.key"),
    ///     )
    ///     .await?;
    /// assert_eq!(instance.element.metadata.key, "sendgrid");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_instance_unverified(
        &self,
        body: &CreateInstance,
    ) -> Result<Instance, Error> {
        let mut url = self.api_url(&["instances"]);
        url.query_pairs_mut().append_pair("verify", "false");
        self.json(Self::with_body(self.at(Method::POST, url), body))
            .await
    }
}

/// `response` when its status is `expected`; otherwise
/// [`Error::UnexpectedStatus`] (another success status) or [`Error::Api`].
async fn check_status(
    response: reqwest::Response,
    expected: StatusCode,
) -> Result<reqwest::Response, Error> {
    let got = response.status();
    if got == expected {
        Ok(response)
    } else if got.is_success() {
        Err(Error::UnexpectedStatus {
            expected,
            got,
            request_id: header(response.headers(), "x-request-id"),
        })
    } else {
        Err(error::from_response(response).await)
    }
}

/// `body` as JSON, with `fields` added to its `providerData` (created when
/// absent) where it does not already hold the key.
fn with_provider_fields(
    body: &CreateInstance,
    fields: &std::collections::BTreeMap<String, serde_json::Value>,
) -> serde_json::Value {
    // Serializing these types cannot fail (string keys, string and JSON
    // values); were it to, the server would refuse the `null` body with a
    // 400 naming the problem rather than this client panicking.
    let mut json = serde_json::to_value(body).unwrap_or(serde_json::Value::Null);
    if let Some(object) = json.as_object_mut() {
        let data = object
            .entry("providerData")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let Some(data) = data.as_object_mut() {
            for (key, value) in fields {
                data.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    json
}

#[derive(serde::Deserialize)]
struct Rotated {
    #[serde(default)]
    secret: Option<Secret>,
    #[serde(default)]
    token: Option<Secret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_credentials() {
        let client = Client::new("http://127.0.0.1:8080")
            .unwrap()
            .with_account("user-SECRET-1", "org-SECRET-2")
            .with_element("element-TOKEN-3");
        let shown = format!("{client:?}");
        for secret in ["user-SECRET-1", "org-SECRET-2", "element-TOKEN-3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("account: \"set\""), "{shown}");
        assert_eq!(
            client.authorization().unwrap(),
            "User user-SECRET-1, Organization org-SECRET-2, Element element-TOKEN-3"
        );
        assert_eq!(client.clone().anonymous().authorization(), None);
    }

    #[test]
    fn base_urls_are_normalized_and_checked() {
        for base in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/elements/api-v2",
            "http://h:1/elements/api-v2/",
        ] {
            let client = Client::new(base).unwrap();
            assert_eq!(
                client.url("/instances").as_str(),
                "http://h:1/elements/api-v2/instances",
                "{base}"
            );
            assert_eq!(client.url_at("/healthz").as_str(), "http://h:1/healthz");
        }
        let prefixed = Client::new("https://h/tenant/").unwrap();
        assert_eq!(
            prefixed.api_url(&["elements", "a/b c"]).as_str(),
            "https://h/tenant/elements/api-v2/elements/a%2Fb%20c"
        );
        for bad in ["h:1", "ftp://h", "http://h/?q=1", "not a url"] {
            assert!(matches!(Client::new(bad), Err(Error::BaseUrl(_))), "{bad}");
        }
    }

    #[test]
    fn proxy_paths_keep_their_query() {
        let client = Client::new("http://h").unwrap();
        let request = client
            .proxy_request(7, Method::GET, "/crm/v3/objects/contacts?limit=1")
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://h/elements/api-v2/instances/7/proxy/crm/v3/objects/contacts?limit=1"
        );
        let request = client
            .hub_request("marketing", Method::GET, "contacts?a=b")
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://h/elements/api-v2/hubs/marketing/contacts?a=b"
        );
    }

    #[test]
    fn credentials_are_sensitive_headers() {
        let client = Client::new("http://h").unwrap().with_element("tok");
        let request = client
            .request(Method::GET, "/instances/configuration")
            .build()
            .unwrap();
        let value = &request.headers()[AUTHORIZATION];
        assert!(value.is_sensitive());
        assert_eq!(value, "Element tok");
        // Not header text: refused at send, the value nowhere in the error.
        let bad = Client::new("http://h")
            .unwrap()
            .with_element("tok\nX-Evil: 1");
        let err = bad.request(Method::GET, "/x").build().unwrap_err();
        assert!(!format!("{err:?} {err}").contains("Evil"));
    }
    /// A one-connection HTTP server on loopback that answers every request
    /// with `answer` (bytes as written) and closes; its base URL.
    async fn answering(answer: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_refusal_whose_body_breaks_keeps_its_status() {
        // 503 promising 100 bytes, sending 9, then closing.
        let base = answering(
            "HTTP/1.1 503 Service Unavailable\r\nx-request-id: req-9\r\n\
             content-length: 100\r\ncontent-type: application/json\r\n\r\n{\"message",
        )
        .await;
        let err = Client::new(base).unwrap().instance(1).await.unwrap_err();
        assert_eq!(
            err.status(),
            Some(StatusCode::SERVICE_UNAVAILABLE),
            "{err:?}"
        );
        let api = err.api().expect("a refusal, not a transport error");
        assert_eq!(api.request_id.as_deref(), Some("req-9"));
        assert!(api.read_error.is_some(), "{api:?}");
        assert_eq!(api.body, None);
    }

    #[tokio::test]
    async fn another_success_status_than_documented_is_an_error() {
        // A webhook create answered 200 instead of 201.
        let base =
            answering("HTTP/1.1 200 OK\r\nx-request-id: req-7\r\ncontent-length: 2\r\n\r\n{}")
                .await;
        let client = Client::new(&base).unwrap();
        let err = client
            .create_webhook(&CreateWebhook::new("https://h/hook"))
            .await
            .unwrap_err();
        match &err {
            Error::UnexpectedStatus {
                expected,
                got,
                request_id,
            } => {
                assert_eq!(*expected, StatusCode::CREATED);
                assert_eq!(*got, StatusCode::OK);
                assert_eq!(request_id.as_deref(), Some("req-7"));
            }
            other => panic!("{other:?}"),
        }
        // And a 201 where 200 is documented (the instance create).
        let base = answering("HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").await;
        let err = Client::new(&base)
            .unwrap()
            .create_instance(&CreateInstance::new("hubspot", "x"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnexpectedStatus {
                    expected: StatusCode::OK,
                    got: StatusCode::CREATED,
                    ..
                }
            ),
            "{err:?}"
        );
        // 204 for the webhook delete, 202 for redeliver: taken.
        let base = answering("HTTP/1.1 204 No Content\r\n\r\n").await;
        Client::new(&base).unwrap().delete_webhook(3).await.unwrap();
        let base = answering("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
        let err = Client::new(&base)
            .unwrap()
            .delete_webhook(3)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::OK));
        assert!(matches!(
            err,
            Error::UnexpectedStatus {
                expected: StatusCode::NO_CONTENT,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_refusal_keeps_its_whole_body_as_text() {
        let base = answering(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
             content-length: 45\r\n\r\n{\"requestId\":\"r\",\"message\":\"m\",\"hint\":\"zz-1\"}",
        )
        .await;
        let err = Client::new(&base).unwrap().elements().await.unwrap_err();
        assert_eq!(err.api().unwrap().message(), "m");
        assert_eq!(
            err.body_text(),
            Some(r#"{"requestId":"r","message":"m","hint":"zz-1"}"#)
        );
    }

    // ------------------------------------------ conva (wave 4) additions

    #[test]
    fn provider_fields_join_provider_data_and_never_replace_typed_ones() {
        let fields = std::collections::BTreeMap::from([
            ("realmId".to_owned(), serde_json::json!(4620816365_u64)),
            ("code".to_owned(), serde_json::json!("not this one")),
        ]);
        let body = CreateInstance::new("keeper", "k").provider_data(ProviderData::code("c-1"));
        let json = with_provider_fields(&body, &fields);
        assert_eq!(
            json["providerData"],
            serde_json::json!({"code": "c-1", "realmId": 4620816365_u64})
        );
        assert_eq!(json["element"]["key"], "keeper");
        // No providerData yet: one is made for the fields.
        let json = with_provider_fields(&CreateInstance::new("keeper", "k"), &fields);
        assert_eq!(json["providerData"]["code"], "not this one");
    }
}
