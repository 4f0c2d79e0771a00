//! Organization-private elements (issue 17): elements an organization adds
//! through the API, stored in the database, visible to it alone, and the
//! per-organization `active` switch (for built-in and private elements).
//!
//! **One lookup.** Every element lookup made for an authenticated
//! organization goes through [`lookup`] (or [`lookup_usable`] where a
//! deactivated element must be refused: new instances, `oauth/url`, connect
//! sessions). The organization's own elements come first, by key, alias or
//! id, so an organization may shadow a built-in key *for itself* (a clone of
//! `hubspot` keeps the key `hubspot`); other organizations, and anonymous
//! catalog requests, only ever see the built-ins.
//!
//! **Ids.** A private element's id is [`ID_BASE`] + its row id; the
//! catalog's ids are far below (startup refuses nothing here: catalog files
//! use small ids, and [`lookup`] never resolves an id at or above
//! [`ID_BASE`] to a built-in).
//!
//! **Cache.** Each organization's private catalog (its elements, its
//! deactivated keys and its callback allow-list) is cached per replica for
//! at most [`MAX_AGE`]; a write
//! on this replica calls [`Cache::invalidate`], the one invalidation point
//! (to be hooked to the PostgreSQL NOTIFY bus so other replicas drop it at
//! once; until then they see a change within [`MAX_AGE`]).
//!
//! **Same rules as files.** A JSON element is converted to the TOML of the
//! catalog format and parsed by the core parser and checker; errors name the
//! field and the rule as file errors do, without the line. On top of the
//! file rules (private elements are tenant input, and the server calls their
//! token URLs): every URL must be https, and every literal host must pass the
//! `custom_host` host rules (no IP address, no `localhost`, within
//! `--allowed-custom-hosts` when set).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use elements_core::{Element, ElementSpec};
use elements_store::PrivateElementRow;

use crate::error::ApiError;
use crate::AppState;

/// The first private element id: `ID_BASE + row id`.
pub const ID_BASE: u64 = 1_000_000_000;

/// How long a replica may serve an organization's cached private catalog.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Organizations cached at most; beyond it the cache is emptied (a cheap
/// bound: entries live one second anyway).
const MAX_ORGANIZATIONS: usize = 10_000;

/// A private element: served by the generic (TOML-only) element, standard
/// OAuth 2.0 read from its spec. An element crate's quirks (HubSpot's legacy
/// URL) do not apply to a private element, even one with the crate's key.
#[derive(Debug)]
pub struct PrivateElement {
    spec: ElementSpec,
}

impl Element for PrivateElement {
    fn spec(&self) -> &ElementSpec {
        &self.spec
    }
}

/// One stored private element, parsed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The element.
    pub element: Arc<dyn Element>,
    /// The stored row (its TOML text without `id`).
    pub row: PrivateElementRow,
}

impl Entry {
    /// The TOML file of the element (`GET .../export`).
    pub fn toml(&self) -> String {
        format!("id = {}\n{}", self.element.id(), self.row.spec_toml)
    }
}

/// An organization's private catalog.
#[derive(Debug, Default)]
pub struct OrgCatalog {
    /// Its private elements, in id order.
    pub entries: Vec<Entry>,
    by_key: HashMap<String, usize>,
    /// The keys it has deactivated for itself.
    pub inactive: HashSet<String>,
    /// Its callback URL allow-list (empty: any), cached with the catalog:
    /// `oauth/url` and `POST /instances` check it on every call (issue 19:
    /// it was a database read per call).
    pub callback_urls: Vec<String>,
}

impl OrgCatalog {
    fn build(rows: Vec<PrivateElementRow>, inactive: Vec<String>) -> Self {
        let mut catalog = OrgCatalog {
            inactive: inactive.into_iter().collect(),
            ..Default::default()
        };
        for row in rows {
            let id = ID_BASE + u64::try_from(row.row_id).unwrap_or(0);
            let text = format!("id = {id}\n{}", row.spec_toml);
            match ElementSpec::parse(&format!("private element {id}"), &text) {
                Ok(spec) => {
                    let i = catalog.entries.len();
                    catalog.by_key.insert(spec.key.clone(), i);
                    for alias in &spec.aliases {
                        catalog.by_key.entry(alias.clone()).or_insert(i);
                    }
                    catalog.entries.push(Entry {
                        element: Arc::new(PrivateElement { spec }),
                        row,
                    });
                }
                // Stored text that no longer parses (a format change):
                // logged, and the element is left out, never a 500.
                Err(errors) => tracing::warn!(
                    element_id = id,
                    error = %errors.first().map(|e| e.message.as_str()).unwrap_or(""),
                    "a stored private element does not parse; it is not served"
                ),
            }
        }
        catalog
    }

    /// The private element with this key, alias or id.
    pub fn get(&self, key_or_id: &str) -> Option<&Entry> {
        match parse_id(key_or_id) {
            Some(id) => self.entries.iter().find(|e| e.element.id() == id),
            None => self.by_key.get(key_or_id).map(|&i| &self.entries[i]),
        }
    }

    /// Whether `key` (an element's canonical key) is active for the organization.
    pub fn is_active(&self, key: &str) -> bool {
        !self.inactive.contains(key)
    }
}

fn parse_id(key_or_id: &str) -> Option<u64> {
    (!key_or_id.is_empty() && key_or_id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| key_or_id.parse().ok())
        .flatten()
        .or_else(|| {
            // All digits but too large for u64: an id no element has.
            (!key_or_id.is_empty() && key_or_id.bytes().all(|b| b.is_ascii_digit()))
                .then_some(u64::MAX)
        })
}

/// The per-replica cache of organizations' private catalogs.
#[derive(Debug)]
pub struct Cache {
    entries: Mutex<HashMap<i64, (Instant, Arc<OrgCatalog>)>>,
    /// Bumped by every invalidation, after the removal: the validity of
    /// each thread's first level ([`crate::cache::first`]).
    epoch: AtomicU64,
    /// This cache among the process's (for the first level).
    id: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            entries: Mutex::default(),
            epoch: AtomicU64::new(0),
            id: crate::cache::first::cache_id(),
        }
    }
}

thread_local! {
    /// The organization catalogs' per-thread first level
    /// ([`crate::cache::first`]): every authenticated element lookup asks
    /// for its organization's catalog.
    static FIRST: std::cell::RefCell<crate::cache::first::FirstLevel<i64, (Instant, Arc<OrgCatalog>)>> =
        const { std::cell::RefCell::new(crate::cache::first::FirstLevel::new()) };
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops the organization's cached catalog: the one invalidation point
    /// (every write calls it; a change notification from another replica
    /// should call it too).
    pub fn invalidate(&self, organization_id: i64) {
        let mut map = self.lock();
        map.remove(&organization_id);
        // After the removal: a reader that read the old epoch may have
        // found the old entry, and a reader that reads the new one cannot.
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (Instant, Arc<OrgCatalog>)>> {
        // A panic while holding this lock leaves a valid map.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh(&self, organization_id: i64) -> Option<Arc<OrgCatalog>> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let found = FIRST.with_borrow_mut(|first| {
            first.get(self.id, epoch, &organization_id, |(at, _)| {
                at.elapsed() < MAX_AGE
            })
        });
        if let Some((_, catalog)) = found {
            return Some(catalog);
        }
        let (at, catalog) = {
            let map = self.lock();
            map.get(&organization_id)
                .filter(|(at, _)| at.elapsed() < MAX_AGE)
                .map(|(at, c)| (*at, c.clone()))?
        };
        FIRST.with_borrow_mut(|first| {
            first.keep(self.id, epoch, organization_id, (at, catalog.clone()))
        });
        Some(catalog)
    }

    fn put(&self, organization_id: i64, at: Instant, catalog: Arc<OrgCatalog>) {
        let mut map = self.lock();
        if map.len() >= MAX_ORGANIZATIONS {
            map.retain(|_, (t, _)| t.elapsed() < MAX_AGE);
            if map.len() >= MAX_ORGANIZATIONS {
                map.clear();
            }
        }
        map.insert(organization_id, (at, catalog));
    }
}

/// The organization's private catalog, from the cache when fresh.
pub async fn catalog(state: &AppState, organization_id: i64) -> Result<Arc<OrgCatalog>, ApiError> {
    if let Some(catalog) = state.private_elements.fresh(organization_id) {
        return Ok(catalog);
    }
    // Taken before the read: a write after this instant is never hidden
    // for longer than MAX_AGE.
    let at = Instant::now();
    let (rows, inactive) = state.store.private_catalog(organization_id).await?;
    let callback_urls = state.store.callback_urls(organization_id).await?;
    let catalog = Arc::new(OrgCatalog {
        callback_urls,
        ..OrgCatalog::build(rows, inactive)
    });
    state
        .private_elements
        .put(organization_id, at, catalog.clone());
    Ok(catalog)
}

/// The element named by a key, alias or id for an organization: its own
/// first, then the built-ins (a built-in found by id whose key the
/// organization shadows resolves to the organization's element). Unknown is
/// a 404 that suggests close built-in keys.
pub async fn lookup(
    state: &AppState,
    organization_id: i64,
    key_or_id: &str,
) -> Result<Arc<dyn Element>, ApiError> {
    let catalog = catalog(state, organization_id).await?;
    Ok(resolve(state, &catalog, key_or_id)?.0)
}

/// The element and whether it is the organization's own.
pub fn resolve(
    state: &AppState,
    catalog: &OrgCatalog,
    key_or_id: &str,
) -> Result<(Arc<dyn Element>, bool), ApiError> {
    if let Some(entry) = catalog.get(key_or_id) {
        return Ok((entry.element.clone(), true));
    }
    if parse_id(key_or_id).is_some_and(|id| id >= ID_BASE) {
        return Err(crate::routes::elements::find(state, key_or_id)
            .err()
            .unwrap_or_else(|| not_found(key_or_id)));
    }
    let builtin = crate::routes::elements::find(state, key_or_id)?;
    match catalog.get(builtin.key()) {
        Some(entry) => Ok((entry.element.clone(), true)),
        None => Ok((builtin.clone(), false)),
    }
}

fn not_found(key_or_id: &str) -> ApiError {
    let shown: String = key_or_id
        .chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    ApiError::NotFound(format!("no element with key or id `{shown}`"))
}

/// [`lookup`], refusing an element the organization has deactivated (409
/// naming it): for new instances, `oauth/url` and connect sessions.
/// Existing instances of a deactivated element keep working.
pub async fn lookup_usable(
    state: &AppState,
    organization_id: i64,
    key_or_id: &str,
) -> Result<Arc<dyn Element>, ApiError> {
    let catalog = catalog(state, organization_id).await?;
    usable_in(state, &catalog, key_or_id)
}

/// [`lookup_usable`] in a catalog the caller already holds.
pub fn usable_in(
    state: &AppState,
    catalog: &OrgCatalog,
    key_or_id: &str,
) -> Result<Arc<dyn Element>, ApiError> {
    let (element, _) = resolve(state, catalog, key_or_id)?;
    if !catalog.is_active(element.key()) {
        return Err(inactive(element.key()));
    }
    Ok(element)
}

/// The error for a deactivated element.
pub fn inactive(key: &str) -> ApiError {
    ApiError::Conflict(format!(
        "element `{key}` is deactivated for this organization \
         (PUT /elements/{key}/active to activate it)"
    ))
}

/// [`lookup_usable`] for an optional organization: anonymous callers get
/// the built-ins only.
pub async fn find_usable(
    state: &AppState,
    organization_id: Option<i64>,
    key_or_id: &str,
) -> Result<Arc<dyn Element>, ApiError> {
    match organization_id {
        Some(org) => lookup_usable(state, org, key_or_id).await,
        None => crate::routes::elements::find(state, key_or_id).cloned(),
    }
}

/// The organization of a catalog request: `None` without `Authorization`
/// (the seed's anonymous catalog), else the authenticated organization (a
/// wrong credential is the usual 401).
pub async fn organization_of(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<i64>, ApiError> {
    if !headers.contains_key(AUTHORIZATION) {
        return Ok(None);
    }
    Ok(Some(
        crate::auth::account_from_headers(state, headers)
            .await?
            .organization_id,
    ))
}

/// A catalog route's element for an optional organization, with whether it
/// is private and active for it.
pub async fn find_for(
    state: &AppState,
    headers: &HeaderMap,
    key_or_id: &str,
) -> Result<(Arc<dyn Element>, Option<View>), ApiError> {
    match organization_of(state, headers).await? {
        None => Ok((
            crate::routes::elements::find(state, key_or_id)?.clone(),
            None,
        )),
        Some(org) => {
            let catalog = catalog(state, org).await?;
            let (element, private) = resolve(state, &catalog, key_or_id)?;
            let active = catalog.is_active(element.key());
            Ok((element, Some(View { private, active })))
        }
    }
}

/// What an organization sees of an element beyond its spec.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// The organization's own element.
    pub private: bool,
    /// Not deactivated by the organization.
    pub active: bool,
}

impl View {
    /// Marks an element JSON object: `private: true` for the organization's
    /// own, `active: false` when it deactivated the element.
    pub fn mark(self, json: &mut serde_json::Value) {
        if let Some(object) = json.as_object_mut() {
            if self.private {
                object.insert("private".into(), serde_json::Value::Bool(true));
            }
            if !self.active {
                object.insert("active".into(), serde_json::Value::Bool(false));
            }
        }
    }
}

/// The element JSON of `GET /elements/{keyOrId}`, marked for the caller.
pub fn mark(view: Option<View>, json: &mut serde_json::Value) {
    if let Some(view) = view {
        view.mark(json);
    }
}

/// `GET /elements` with account headers: the built-ins (those the
/// organization shadows replaced by its own) and its own elements, in id
/// order, its own marked `private: true`, deactivated ones `active: false`.
/// `None` for an anonymous request (the built-ins, as before).
pub async fn list_for(state: &AppState, headers: &HeaderMap) -> Option<axum::response::Response> {
    use crate::element_view::ElementJson as _;
    use axum::response::IntoResponse as _;
    let org = match organization_of(state, headers).await {
        Ok(Some(org)) => org,
        Ok(None) => return None,
        Err(e) => return Some(e.into_response()),
    };
    let catalog = match catalog(state, org).await {
        Ok(catalog) => catalog,
        Err(e) => return Some(e.into_response()),
    };
    let builtins = state
        .registry
        .iter()
        .filter(|e| catalog.get(e.key()).is_none())
        .map(|e| (e.clone(), false));
    let own = catalog.entries.iter().map(|e| (e.element.clone(), true));
    let mut all = Vec::with_capacity(state.registry.len() + catalog.entries.len());
    for (element, private) in builtins.chain(own) {
        let mut json = match serde_json::to_value(element.spec().view()) {
            Ok(json) => json,
            Err(e) => {
                return Some(ApiError::Internal(format!("element view: {e}")).into_response())
            }
        };
        View {
            private,
            active: catalog.is_active(element.key()),
        }
        .mark(&mut json);
        all.push(json);
    }
    Some(axum::Json(all).into_response())
}

/// [`lookup_usable`] for a hosted connect session: the connect page is
/// rendered for built-in elements only, so a private element is refused
/// (400 naming it) rather than sent to a page that cannot show it.
pub async fn lookup_connect(
    state: &AppState,
    organization_id: i64,
    key_or_id: &str,
) -> Result<Arc<dyn Element>, ApiError> {
    let element = lookup_usable(state, organization_id, key_or_id).await?;
    if element.id() >= ID_BASE {
        return Err(ApiError::BadRequest(format!(
            "element `{}` is a private element: hosted connect sessions are not available for \
             private elements yet (create the instance with POST /instances)",
            element.key()
        )));
    }
    Ok(element)
}

/// The element `key` of an organization's instance, read from the store
/// without the cache: for the token manager (code exchange, client
/// credentials, refresh, the background refresher), which holds no
/// [`AppState`] and makes a provider call anyway. A store error is `None`
/// (the caller reports the element as unavailable and retries later),
/// never a fall back to a built-in the organization may shadow.
pub async fn element_for(
    store: &dyn elements_store::Store,
    registry: &elements_core::Registry,
    organization_id: i64,
    key: &str,
) -> Option<Arc<dyn Element>> {
    match store.private_catalog(organization_id).await {
        Ok((rows, inactive)) => {
            let catalog = OrgCatalog::build(rows, inactive);
            if let Some(entry) = catalog.get(key) {
                return Some(entry.element.clone());
            }
            registry.by_key(key).cloned()
        }
        Err(e) => {
            tracing::warn!(organization_id, error = %e, "reading private elements failed");
            None
        }
    }
}

impl Cache {
    /// The organization's cached catalog, whatever its age (for rendering,
    /// after an async [`catalog`] call has refreshed it).
    fn peek(&self, organization_id: i64) -> Option<Arc<OrgCatalog>> {
        self.lock().get(&organization_id).map(|(_, c)| c.clone())
    }
}

/// An instance's element for rendering it (synchronous: the organization's
/// catalog as cached; the instance routes refresh it first through
/// [`catalog`]): its organization's own element with its key, else the
/// built-in, else `None` (never a built-in for an instance created from a
/// private element, whose id is in the private range).
pub fn instance_element(
    state: &AppState,
    instance: &elements_store::Instance,
) -> Option<Arc<dyn Element>> {
    if let Some(catalog) = state.private_elements.peek(instance.organization_id) {
        if let Some(entry) = catalog.get(&instance.element_key) {
            return Some(entry.element.clone());
        }
    }
    if instance.element_id >= ID_BASE {
        return None;
    }
    state.registry.by_key(&instance.element_key).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(url: &str) -> Arc<OrgCatalog> {
        Arc::new(OrgCatalog {
            callback_urls: vec![url.to_owned()],
            ..OrgCatalog::default()
        })
    }

    fn url(c: Option<Arc<OrgCatalog>>) -> Option<String> {
        c.map(|c| c.callback_urls[0].clone())
    }

    #[test]
    fn the_threads_first_level_obeys_every_invalidation_and_its_own_cache() {
        let cache = Cache::new();
        cache.put(1, Instant::now(), catalog("https://one.test"));
        // The second and third reads come from this thread's first level.
        for _ in 0..3 {
            assert_eq!(url(cache.fresh(1)).as_deref(), Some("https://one.test"));
        }
        assert!(cache.fresh(2).is_none());
        let other = Cache::new();
        assert!(other.fresh(1).is_none(), "another cache, same thread");
        // An invalidation of any organization empties it.
        cache.invalidate(2);
        cache.put(1, Instant::now(), catalog("https://two.test"));
        assert_eq!(url(cache.fresh(1)).as_deref(), Some("https://two.test"));
        cache.invalidate(1);
        assert!(cache.fresh(1).is_none());
        // Past MAX_AGE nothing is served, from either level.
        cache.put(1, Instant::now() - MAX_AGE, catalog("https://old.test"));
        assert!(cache.fresh(1).is_none());
        // Bounded.
        for org in 0..(crate::cache::first::SIZE as i64 + 4) {
            cache.put(org, Instant::now(), catalog("https://many.test"));
        }
        for org in 0..(crate::cache::first::SIZE as i64 + 4) {
            assert!(cache.fresh(org).is_some());
        }
        FIRST.with_borrow(|first| assert!(first.len() <= crate::cache::first::SIZE));
    }
}
