//! The registry: catalog files joined with registered element crates.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use crate::element::{Element, ElementFactory};
use crate::spec::{compact, line_of_field, Authentication, ElementSpec, OAuthSpec, Source};

use crate::spec::CatalogError;

/// The element used for catalog files that no crate claims: everything comes
/// from the spec, and the [`Element`] defaults implement standard OAuth 2.0.
#[derive(Debug, Clone)]
pub(crate) struct GenericElement {
    spec: ElementSpec,
}

impl GenericElement {
    /// Wraps a spec.
    pub(crate) fn new(spec: ElementSpec) -> Self {
        GenericElement { spec }
    }
}

impl Element for GenericElement {
    fn spec(&self) -> &ElementSpec {
        &self.spec
    }
}

/// The generic element of a compiled layer: its spec stays encoded until
/// first used (its key and id are known without it), so a process that
/// serves a few elements of a large catalog decodes only those, and an
/// element never used costs its index entry, not a spec.
struct CompiledElement {
    compiled: Compiled,
    spec: OnceLock<Box<ElementSpec>>,
}

impl fmt::Debug for CompiledElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As the generic element of a parsed file prints: the same element.
        f.debug_struct("GenericElement")
            .field("spec", self.spec())
            .finish()
    }
}

impl Element for CompiledElement {
    fn spec(&self) -> &ElementSpec {
        self.spec.get_or_init(|| {
            // The bytes were encoded by this same code from a checked spec
            // (`RegistryBuilder::compile_layer`), their bounds were checked
            // by `add_compiled_layer`, and elements-catalog's tests decode
            // every built-in body: this cannot fail.
            Box::new(self.compiled.decode().unwrap_or_else(|e| panic!("{e}")))
        })
    }

    fn key(&self) -> &str {
        self.compiled.meta.key
    }

    fn id(&self) -> u64 {
        self.compiled.meta.id
    }
}

/// One element of a compiled layer: its index entry and its encoded spec.
#[derive(Debug, Clone)]
struct Compiled {
    meta: compact::IndexEntry<'static>,
    body: &'static [u8],
}

impl Compiled {
    fn decode(&self) -> Result<ElementSpec, CatalogError> {
        compact::decode_body(self.body).map_err(|e| CatalogError {
            file: self.meta.file.to_owned(),
            line: None,
            message: format!("the compiled catalog entry does not decode: {e}"),
        })
    }

    fn listing(&self) -> Listing<'static> {
        Listing {
            id: self.meta.id,
            key: self.meta.key,
            name: self.meta.name,
            hub: self.meta.hub,
            authentication: self.meta.authentication,
        }
    }
}

/// An element of a builder: parsed from a file, or still encoded. (Only
/// the builder holds entries; boxing the spec would cost an allocation per
/// parsed file.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Entry {
    Parsed(ElementSpec),
    Compiled(Compiled),
}

impl Entry {
    fn id(&self) -> u64 {
        match self {
            Entry::Parsed(spec) => spec.id,
            Entry::Compiled(c) => c.meta.id,
        }
    }

    fn key(&self) -> &str {
        match self {
            Entry::Parsed(spec) => &spec.key,
            Entry::Compiled(c) => c.meta.key,
        }
    }

    fn file(&self) -> &str {
        match self {
            Entry::Parsed(spec) => &spec.source.file,
            Entry::Compiled(c) => c.meta.file,
        }
    }

    fn id_line(&self) -> usize {
        match self {
            Entry::Parsed(spec) => spec.source.id_line,
            Entry::Compiled(c) => c.meta.id_line,
        }
    }

    fn key_line(&self) -> usize {
        match self {
            Entry::Parsed(spec) => spec.source.key_line,
            Entry::Compiled(c) => c.meta.key_line,
        }
    }

    fn aliases_line(&self) -> usize {
        match self {
            Entry::Parsed(spec) => spec.source.aliases_line,
            Entry::Compiled(c) => c.meta.aliases_line,
        }
    }

    fn aliases(&self) -> Vec<&str> {
        match self {
            Entry::Parsed(spec) => spec.aliases.iter().map(String::as_str).collect(),
            Entry::Compiled(c) => c.meta.aliases.clone(),
        }
    }

    /// The spec, decoded first if need be (to be changed by an override or
    /// given to an element crate).
    fn parsed(&mut self) -> Result<&mut ElementSpec, CatalogError> {
        if let Entry::Compiled(c) = self {
            *self = Entry::Parsed(c.decode()?);
        }
        match self {
            Entry::Parsed(spec) => Ok(spec),
            Entry::Compiled(_) => unreachable!("decoded above"),
        }
    }
}

/// What a listing of the catalog prints of an element (`elements list`),
/// known without decoding the spec of a compiled element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing<'a> {
    /// The element's id.
    pub id: u64,
    /// Its key.
    pub key: &'a str,
    /// Its display name.
    pub name: &'a str,
    /// Its hub.
    pub hub: &'a str,
    /// How it authenticates.
    pub authentication: Authentication,
}

impl<'a> Listing<'a> {
    fn of(spec: &'a ElementSpec) -> Self {
        Listing {
            id: spec.id,
            key: &spec.key,
            name: &spec.name,
            hub: &spec.hub,
            authentication: spec.authentication,
        }
    }
}

/// Every error found while building a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogErrors(pub Vec<CatalogError>);

impl fmt::Display for CatalogErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CatalogErrors {}

/// Replacement endpoints for one element's `[oauth]` section, for pointing an
/// element at a staging or fake provider without recompiling.
///
/// ```
/// use elements_core::{OAuthOverride, RegistryBuilder};
///
/// let toml = r#"
/// id = 9004
/// key = "staged"
/// name = "Staged"
/// description = "d"
/// image = "elements/provider_staged.png"
/// hub = "general"
/// authentication = "oauth2"
/// existing_account_description = "e"
/// config_description = "c"
///
/// [oauth]
/// authorization_url = "https://staged.example/authorize"
/// token_url = "https://staged.example/token"
/// "#;
/// let mut builder = RegistryBuilder::new();
/// builder.add_layer([("staged.toml", toml)]);
/// builder.override_oauth(
///     "staged",
///     OAuthOverride {
///         token_url: Some("http://127.0.0.1:9999/token".into()),
///         ..Default::default()
///     },
/// );
/// let registry = builder.build().unwrap();
/// let oauth = registry.get("staged").unwrap().spec().oauth.as_ref().unwrap();
/// assert_eq!(oauth.token_url, "http://127.0.0.1:9999/token");
/// assert_eq!(oauth.refresh_url(), "http://127.0.0.1:9999/token");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthOverride {
    /// Replaces `authorization_url`.
    #[serde(default)]
    pub authorization_url: Option<String>,
    /// Replaces `token_url`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Replaces `refresh_url`.
    #[serde(default)]
    pub refresh_url: Option<String>,
    /// Replaces named entries of `endpoints`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
}

/// Collects catalog layers and endpoint overrides, then builds a [`Registry`].
///
/// Later layers override earlier ones by key (the built-in catalog first, then
/// each `--elements-dir`). Within a layer, keys and ids must be unique.
#[derive(Debug, Default)]
pub struct RegistryBuilder {
    specs: BTreeMap<String, Entry>,
    errors: Vec<CatalogError>,
    overrides: Vec<(String, OAuthOverride)>,
    /// `api_base_url` overrides by key (credential kinds).
    api_base_urls: Vec<(String, String)>,
}

impl RegistryBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one layer of catalog files, given as (file name, TOML text).
    /// Errors are collected and reported by [`RegistryBuilder::build`].
    pub fn add_layer<N, T>(&mut self, files: impl IntoIterator<Item = (N, T)>) -> &mut Self
    where
        N: AsRef<str>,
        T: AsRef<str>,
    {
        let files: Vec<(N, T)> = files.into_iter().collect();
        let texts: Vec<(&str, &str)> = files
            .iter()
            .map(|(name, text)| (name.as_ref(), text.as_ref()))
            .collect();
        let parsed = parse_all(&texts);
        let mut layer_keys: HashMap<String, Source> = HashMap::new();
        let mut layer_ids: HashMap<u64, Source> = HashMap::new();
        for ((_, text), parsed) in texts.iter().zip(parsed) {
            let spec = match parsed {
                Ok(spec) => spec,
                Err(errors) => {
                    self.errors.extend(errors);
                    continue;
                }
            };
            // A key or id already declared in this layer: (field, line,
            // value, where it was first declared).
            let clash = match (layer_keys.get(&spec.key), layer_ids.get(&spec.id)) {
                (Some(first), _) => Some((
                    "key",
                    spec.source.key_line,
                    format!("{:?}", spec.key),
                    first.file.as_str(),
                    first.key_line,
                )),
                (None, Some(first)) => Some((
                    "id",
                    spec.source.id_line,
                    spec.id.to_string(),
                    first.file.as_str(),
                    first.id_line,
                )),
                (None, None) => None,
            };
            if let Some((field, line, value, first_file, first_line)) = clash {
                self.errors.push(CatalogError {
                    file: spec.source.file.clone(),
                    line: Some(line),
                    message: format!(
                        "field `{field}`: {value} is already declared in {first_file}:{first_line}"
                    ),
                });
                continue;
            }
            let unsupported = unsupported_fields(&spec, Some(text));
            if !unsupported.is_empty() {
                self.errors.extend(unsupported);
                continue;
            }
            layer_keys.insert(spec.key.clone(), spec.source.clone());
            layer_ids.insert(spec.id, spec.source.clone());
            self.specs.insert(spec.key.clone(), Entry::Parsed(spec));
        }
        self
    }

    /// Parses and checks one layer of catalog files exactly as
    /// [`RegistryBuilder::add_layer`] and [`RegistryBuilder::build`] do
    /// (against the element crates linked into the calling program), and
    /// returns its compact form for [`RegistryBuilder::add_compiled_layer`]:
    /// what a build script embeds so that start-up parses no TOML. The form
    /// belongs to this version of the crate; it is not a storage format.
    ///
    /// ```
    /// use elements_core::RegistryBuilder;
    ///
    /// let toml = "id = 9006\nkey = \"gitlab\"\nname = \"GitLab\"\ndescription = \"d\"\n\
    ///             image = \"i\"\nhub = \"general\"\nauthentication = \"apikey\"\n\
    ///             existing_account_description = \"e\"\nconfig_description = \"c\"\n";
    /// let bytes: &'static [u8] =
    ///     Box::leak(RegistryBuilder::compile_layer([("gitlab.toml", toml)]).unwrap().into());
    /// let mut builder = RegistryBuilder::new();
    /// builder.add_compiled_layer(bytes);
    /// let registry = builder.build().unwrap();
    /// assert_eq!(registry.get("gitlab").unwrap().spec().name, "GitLab");
    ///
    /// // A file the registry would refuse is refused here, with the same errors.
    /// let err = RegistryBuilder::compile_layer([("bad.toml", "id = 0\nkey = \"x\"")]).unwrap_err();
    /// assert_eq!(err.to_string(), "bad.toml:1: missing field `name`");
    /// ```
    pub fn compile_layer<N, T>(
        files: impl IntoIterator<Item = (N, T)>,
    ) -> Result<Vec<u8>, CatalogErrors>
    where
        N: AsRef<str>,
        T: AsRef<str>,
    {
        let mut builder = RegistryBuilder::new();
        builder.add_layer(files);
        let registry = builder.build()?;
        Ok(compact::encode(registry.iter().map(|e| e.spec())))
    }

    /// Adds one layer compiled by [`RegistryBuilder::compile_layer`]. Its
    /// files were checked then, so nothing is parsed here: each element's
    /// spec stays encoded until the element is first used (an override or an
    /// element crate for its key decodes it at once).
    pub fn add_compiled_layer(&mut self, bytes: &'static [u8]) -> &mut Self {
        let layer = match compact::Layer::decode(bytes) {
            Ok(layer) => layer,
            Err(e) => {
                self.errors.push(CatalogError {
                    file: "<compiled catalog>".into(),
                    line: None,
                    message: format!("cannot decode the compiled catalog: {e}"),
                });
                return self;
            }
        };
        for meta in &layer.entries {
            let body = layer.body(meta);
            let mut entry = Entry::Compiled(Compiled {
                meta: meta.clone(),
                body,
            });
            // An element crate linked here but not where the layer was
            // compiled: check the fields it does not support now.
            let has_factory = inventory::iter::<ElementFactory>
                .into_iter()
                .any(|f| f.key == meta.key);
            if has_factory {
                match entry.parsed() {
                    Ok(spec) => {
                        let unsupported = unsupported_fields(spec, None);
                        if !unsupported.is_empty() {
                            self.errors.extend(unsupported);
                            continue;
                        }
                    }
                    Err(e) => {
                        self.errors.push(e);
                        continue;
                    }
                }
            }
            self.specs.insert(meta.key.to_owned(), entry);
        }
        self
    }

    /// Replaces endpoints of the element `key` (applied by `build`; an unknown
    /// key is an error).
    pub fn override_oauth(&mut self, key: &str, endpoints: OAuthOverride) -> &mut Self {
        self.overrides.push((key.to_owned(), endpoints));
        self
    }

    /// Replaces the `api_base_url` of the element `key` (applied by `build`;
    /// an unknown key or a URL that is not absolute http(s) is an error).
    pub fn override_api_base_url(&mut self, key: &str, url: &str) -> &mut Self {
        self.api_base_urls.push((key.to_owned(), url.to_owned()));
        self
    }

    /// Joins the catalog with the registered element crates.
    ///
    /// Refuses: any parse error, two files with the same key or id, an element
    /// crate registered for a key no file declares, two crates for one key,
    /// an override for an unknown element.
    pub fn build(self) -> Result<Registry, CatalogErrors> {
        let RegistryBuilder {
            mut specs,
            mut errors,
            overrides,
            api_base_urls,
        } = self;

        for (key, url) in api_base_urls {
            let absolute = url::Url::parse(&url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            match specs.get_mut(&key).map(Entry::parsed) {
                Some(Ok(spec)) if absolute => spec.api_base_url = Some(url),
                Some(Err(e)) => errors.push(e),
                found => errors.push(CatalogError {
                    file: "configuration".into(),
                    line: None,
                    message: match found {
                        None => format!("api_base_url override for unknown element `{key}`"),
                        Some(_) => format!(
                            "api_base_url override for `{key}`: {url:?} is not an absolute http(s) URL"
                        ),
                    },
                }),
            }
        }

        for (key, o) in overrides {
            let spec = match specs.get_mut(&key).map(Entry::parsed) {
                Some(Ok(spec)) => spec,
                Some(Err(e)) => {
                    errors.push(e);
                    continue;
                }
                None => {
                    errors.push(CatalogError {
                        file: "configuration".into(),
                        line: None,
                        message: format!("endpoint override for unknown element `{key}`"),
                    });
                    continue;
                }
            };
            let Some(oauth) = spec.oauth.as_mut() else {
                errors.push(CatalogError {
                    file: spec.source.file.clone(),
                    line: None,
                    message: format!("endpoint override for `{key}`, which does not use OAuth"),
                });
                continue;
            };
            if let Some(url) = o.authorization_url {
                oauth.authorization_url = url;
            }
            if let Some(url) = o.token_url {
                oauth.token_url = url;
            }
            if let Some(url) = o.refresh_url {
                oauth.refresh_url = Some(url);
            }
            oauth.endpoints.extend(o.endpoints);
        }

        let mut ids: HashMap<u64, &Entry> = HashMap::new();
        for entry in specs.values() {
            if let Some(first) = ids.insert(entry.id(), entry) {
                errors.push(CatalogError {
                    file: entry.file().to_owned(),
                    line: Some(entry.id_line()),
                    message: format!(
                        "field `id`: {} is already declared in {}:{} (key `{}`)",
                        entry.id(),
                        first.file(),
                        first.id_line(),
                        first.key()
                    ),
                });
            }
        }

        let mut factories: HashMap<&'static str, &ElementFactory> = HashMap::new();
        for factory in inventory::iter::<ElementFactory> {
            for field in factory.unsupported {
                if !OAuthSpec::OPTIONAL_FIELDS.contains(field) {
                    errors.push(CatalogError {
                        file: "<registered elements>".into(),
                        line: None,
                        message: format!(
                            "the element crate for `{}` declares `{field}` unsupported, which \
                             is not an optional field of [oauth] (one of {})",
                            factory.key,
                            OAuthSpec::OPTIONAL_FIELDS.join(", ")
                        ),
                    });
                }
            }
            if factories.insert(factory.key, factory).is_some() {
                errors.push(CatalogError {
                    file: "<registered elements>".into(),
                    line: None,
                    message: format!("two element crates register key `{}`", factory.key),
                });
            }
            if !specs.contains_key(factory.key) {
                errors.push(CatalogError {
                    file: "<registered elements>".into(),
                    line: None,
                    message: format!(
                        "element crate registered for key `{}`, but no catalog file declares it",
                        factory.key
                    ),
                });
            }
        }
        if !errors.is_empty() {
            return Err(CatalogErrors(errors));
        }

        let mut entries: Vec<Entry> = specs.into_values().collect();
        entries.sort_by_key(Entry::id);
        let mut by_key: HashMap<String, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key().to_owned(), i))
            .collect();
        // Aliases: refused when they clash with a key or another alias.
        let mut alias_errors = Vec::new();
        let mut alias_of: HashMap<&str, &Entry> = HashMap::new();
        let mut aliases: Vec<(String, usize)> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            for alias in entry.aliases() {
                let clash = if let Some(&j) = by_key.get(alias) {
                    let other = &entries[j];
                    Some(format!(
                        "is the key of the element in {}:{}",
                        other.file(),
                        other.key_line()
                    ))
                } else {
                    alias_of.get(alias).map(|other| {
                        format!(
                            "is already an alias of `{}` ({})",
                            other.key(),
                            other.file()
                        )
                    })
                };
                if let Some(clash) = clash {
                    alias_errors.push(CatalogError {
                        file: entry.file().to_owned(),
                        line: Some(entry.aliases_line()),
                        message: format!("field `aliases`: {alias:?} {clash}"),
                    });
                } else {
                    alias_of.insert(alias, entry);
                    aliases.push((alias.to_owned(), i));
                }
            }
        }
        if !alias_errors.is_empty() {
            return Err(CatalogErrors(alias_errors));
        }
        drop(alias_of);
        by_key.extend(aliases);

        let mut elements: Vec<Arc<dyn Element>> = Vec::with_capacity(entries.len());
        let mut listed = Vec::with_capacity(entries.len());
        let mut decode_errors = Vec::new();
        for mut entry in entries {
            let factory = factories.get(entry.key()).copied();
            if factory.is_some() {
                // An element crate builds from the whole spec.
                if let Err(e) = entry.parsed() {
                    decode_errors.push(e);
                    continue;
                }
            }
            let element: Arc<dyn Element> = match (factory, entry) {
                (Some(factory), Entry::Parsed(spec)) => {
                    listed.push(None);
                    Arc::from((factory.build)(spec))
                }
                (None, Entry::Parsed(spec)) => {
                    listed.push(None);
                    Arc::new(GenericElement::new(spec))
                }
                (_, Entry::Compiled(compiled)) => {
                    listed.push(Some(compiled.listing()));
                    Arc::new(CompiledElement {
                        compiled,
                        spec: OnceLock::new(),
                    })
                }
            };
            elements.push(element);
        }
        if !decode_errors.is_empty() {
            return Err(CatalogErrors(decode_errors));
        }
        let by_id = elements
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id(), i))
            .collect();
        Ok(Registry {
            elements,
            listed,
            by_key,
            by_id,
        })
    }
}

/// Files per parsing thread below which a layer is parsed on the calling
/// thread (a thread costs tens of microseconds, a file about twenty).
const FILES_PER_THREAD: usize = 64;

/// Parses every file of a layer, in order. Parsing is pure and independent
/// per file, so large layers (the built-in catalog, a directory of a
/// thousand files) are split into contiguous chunks parsed on scoped
/// threads, one per available core; the results come back in file order,
/// so errors and the layer's checks are exactly the sequential ones.
fn parse_all(files: &[(&str, &str)]) -> Vec<Result<ElementSpec, Vec<CatalogError>>> {
    let parse = |chunk: &[(&str, &str)]| -> Vec<_> {
        chunk
            .iter()
            .map(|(name, text)| ElementSpec::parse(name, text))
            .collect()
    };
    let threads = parallelism().min(files.len() / FILES_PER_THREAD);
    if threads <= 1 {
        return parse(files);
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut chunks = files.chunks(chunk);
        // The calling thread parses the first chunk itself.
        let first = chunks.next().unwrap_or_default();
        let handles: Vec<_> = chunks.map(|c| scope.spawn(move || parse(c))).collect();
        let mut all = parse(first);
        for handle in handles {
            match handle.join() {
                Ok(results) => all.extend(results),
                // A panic in a parser is a bug; surface it where it happened.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    })
}

/// The cores this process may use (asked once).
fn parallelism() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The fields of `spec` that the element crate registered for its key
/// declares unsupported but the file sets, as errors naming each.
fn unsupported_fields(spec: &ElementSpec, text: Option<&str>) -> Vec<CatalogError> {
    let factory = inventory::iter::<ElementFactory>
        .into_iter()
        .find(|f| f.key == spec.key);
    let (Some(factory), Some(oauth)) = (factory, &spec.oauth) else {
        return Vec::new();
    };
    oauth
        .non_default_fields()
        .into_iter()
        .filter(|field| factory.unsupported.contains(field))
        .map(|field| CatalogError {
            file: spec.source.file.clone(),
            line: text.map(|text| line_of_field(text, field)),
            message: format!(
                "field `{field}`: element `{}` is served by its own code, which does not \
                 support this field (remove it or leave it at its default)",
                spec.key
            ),
        })
        .collect()
}

/// The elements, by key and by id (O(1) each), listed in id order.
#[derive(Debug)]
pub struct Registry {
    elements: Vec<Arc<dyn Element>>,
    /// What a listing prints, for the elements still encoded (the others
    /// are listed from their spec).
    listed: Vec<Option<Listing<'static>>>,
    by_key: HashMap<String, usize>,
    by_id: HashMap<u64, usize>,
}

impl Registry {
    /// The element with this key or alias (`sfdc` is `salesforce`).
    pub fn by_key(&self, key: &str) -> Option<&Arc<dyn Element>> {
        self.by_key.get(key).map(|&i| &self.elements[i])
    }

    /// The element with this id.
    pub fn by_id(&self, id: u64) -> Option<&Arc<dyn Element>> {
        self.by_id.get(&id).map(|&i| &self.elements[i])
    }

    /// The element named by a key or a decimal id (as in `/elements/{keyOrId}`).
    pub fn get(&self, key_or_id: &str) -> Option<&Arc<dyn Element>> {
        if !key_or_id.is_empty() && key_or_id.bytes().all(|b| b.is_ascii_digit()) {
            key_or_id.parse().ok().and_then(|id| self.by_id(id))
        } else {
            self.by_key(key_or_id)
        }
    }

    /// All elements, sorted by id.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Arc<dyn Element>> {
        self.elements.iter()
    }

    /// What a listing prints of each element (`elements list`), sorted by
    /// id, without decoding the specs of a compiled layer.
    pub fn listing(&self) -> impl ExactSizeIterator<Item = Listing<'_>> {
        self.elements
            .iter()
            .zip(&self.listed)
            .map(|(element, listed)| listed.unwrap_or_else(|| Listing::of(element.spec())))
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Up to three keys closest to `query`, closest first, for "did you mean".
    ///
    /// ```
    /// let mut builder = elements_core::RegistryBuilder::new();
    /// builder.add_layer([(
    ///     "github.toml",
    ///     "id = 9005\nkey = \"github\"\nname = \"GitHub\"\ndescription = \"d\"\n\
    ///      image = \"i\"\nhub = \"general\"\nauthentication = \"apikey\"\n\
    ///      existing_account_description = \"e\"\nconfig_description = \"c\"\n",
    /// )]);
    /// let registry = builder.build().unwrap();
    /// assert_eq!(registry.get("9005").unwrap().key(), "github");
    /// assert_eq!(registry.suggest("gihtub"), ["github"]);
    /// ```
    pub fn suggest(&self, query: &str) -> Vec<&str> {
        let query = query.to_ascii_lowercase();
        let mut scored: Vec<(usize, &str)> = self
            .elements
            .iter()
            .map(|e| e.key())
            .filter_map(|key| {
                let distance = strsim::levenshtein(&query, key);
                let close = distance <= 2.max(key.len() / 3)
                    || (query.len() >= 3 && (key.contains(&query) || query.contains(key)));
                close.then_some((distance, key))
            })
            .collect();
        scored.sort();
        scored.into_iter().take(3).map(|(_, k)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: u64, key: &str) -> String {
        format!(
            "id = {id}\nkey = \"{key}\"\nname = \"N\"\ndescription = \"d\"\nimage = \"i\"\nhub = \"h\"\n\
             authentication = \"oauth2\"\nexisting_account_description = \"e\"\nconfig_description = \"c\"\n\
             [oauth]\nauthorization_url = \"https://{key}.test/auth\"\ntoken_url = \"https://{key}.test/token\"\n"
        )
    }

    fn build(layers: &[&[(&str, String)]]) -> Result<Registry, CatalogErrors> {
        let mut b = RegistryBuilder::new();
        for layer in layers {
            b.add_layer(layer.iter().map(|(n, t)| (*n, t.as_str())));
        }
        b.build()
    }

    #[test]
    fn lookups_and_order() {
        let r = build(&[&[("b.toml", file(20, "bee")), ("a.toml", file(10, "ant"))]]).unwrap();
        assert_eq!(r.iter().map(|e| e.id()).collect::<Vec<_>>(), [10, 20]);
        assert_eq!(r.get("20").unwrap().key(), "bee");
        assert_eq!(r.get("ant").unwrap().id(), 10);
        assert!(r.get("99999999999999999999999").is_none());
        assert!(r.get("Ant").is_none());
        assert_eq!(r.suggest("bea"), ["bee"]);
    }

    #[test]
    fn duplicates_in_a_layer_are_refused_with_file_and_line() {
        let err = build(&[&[("a.toml", file(1, "ant")), ("b.toml", file(2, "ant"))]]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "b.toml:2: field `key`: \"ant\" is already declared in a.toml:2"
        );
        let err = build(&[&[("a.toml", file(1, "ant")), ("b.toml", file(1, "bee"))]]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "b.toml:1: field `id`: 1 is already declared in a.toml:1"
        );
    }

    #[test]
    fn later_layers_override_by_key_but_ids_stay_unique() {
        let r = build(&[
            &[("a.toml", file(1, "ant"))],
            &[("x/a.toml", file(5, "ant"))],
        ])
        .unwrap();
        assert_eq!(r.get("ant").unwrap().id(), 5);
        let err = build(&[
            &[("a.toml", file(1, "ant"))],
            &[("x/b.toml", file(1, "bee"))],
        ])
        .unwrap_err();
        assert!(
            err.to_string().starts_with("x/b.toml:1: field `id`: 1"),
            "{err}"
        );
    }

    #[test]
    fn overrides_replace_endpoints() {
        let mut b = RegistryBuilder::new();
        b.add_layer([("a.toml", file(1, "ant"))]);
        b.override_oauth(
            "ant",
            OAuthOverride {
                token_url: Some("http://127.0.0.1:1/token".into()),
                ..Default::default()
            },
        );
        let r = b.build().unwrap();
        let oauth = r.get("ant").unwrap().spec().oauth.clone().unwrap();
        assert_eq!(oauth.token_url, "http://127.0.0.1:1/token");
        assert_eq!(oauth.refresh_url(), "http://127.0.0.1:1/token");
        let mut b = RegistryBuilder::new();
        b.override_oauth("nope", OAuthOverride::default());
        assert!(b
            .build()
            .unwrap_err()
            .to_string()
            .contains("unknown element `nope`"));
    }

    /// A compiled layer of `files`, as a build script embeds it.
    fn compiled(files: &[(&str, String)]) -> &'static [u8] {
        let bytes =
            RegistryBuilder::compile_layer(files.iter().map(|(n, t)| (*n, t.as_str()))).unwrap();
        Box::leak(bytes.into_boxed_slice())
    }

    #[test]
    fn a_compiled_layer_joins_later_layers_like_a_parsed_one() {
        let base = compiled(&[
            ("base/a.toml", file(1, "ant")),
            ("base/b.toml", with_aliases(2, "bee", r#"["honeybee"]"#)),
        ]);
        // Lookups, listing and specs without decoding until asked.
        let mut b = RegistryBuilder::new();
        b.add_compiled_layer(base);
        let r = b.build().unwrap();
        assert_eq!(r.get("honeybee").unwrap().key(), "bee");
        assert_eq!(r.get("1").unwrap().key(), "ant");
        let listed: Vec<_> = r.listing().map(|l| (l.id, l.key, l.name, l.hub)).collect();
        assert_eq!(listed, [(1, "ant", "N", "h"), (2, "bee", "N", "h")]);
        assert_eq!(r.get("ant").unwrap().spec().source.file, "base/a.toml");
        assert_eq!(r.get("bee").unwrap().spec().aliases, ["honeybee"]);

        // A later layer overrides by key.
        let mut b = RegistryBuilder::new();
        b.add_compiled_layer(base);
        b.add_layer([("x/a.toml", file(5, "ant"))]);
        let r = b.build().unwrap();
        assert_eq!(r.get("ant").unwrap().id(), 5);
        assert_eq!(r.iter().map(|e| e.id()).collect::<Vec<_>>(), [2, 5]);

        // Clashes name the compiled file and line as a parsed one would.
        let mut b = RegistryBuilder::new();
        b.add_compiled_layer(base);
        b.add_layer([("x/c.toml", file(1, "cat"))]);
        let err = b.build().unwrap_err();
        assert_eq!(
            err.to_string(),
            "x/c.toml:1: field `id`: 1 is already declared in base/a.toml:1 (key `ant`)"
        );
        let mut b = RegistryBuilder::new();
        b.add_compiled_layer(base);
        b.add_layer([("x/c.toml", with_aliases(3, "cat", r#"["ant"]"#))]);
        assert_eq!(
            b.build().unwrap_err().to_string(),
            "x/c.toml:3: field `aliases`: \"ant\" is the key of the element in base/a.toml:2"
        );
        let mut b = RegistryBuilder::new();
        b.add_compiled_layer(base);
        b.add_layer([("x/c.toml", with_aliases(3, "cat", r#"["honeybee"]"#))]);
        assert_eq!(
            b.build().unwrap_err().to_string(),
            "x/c.toml:3: field `aliases`: \"honeybee\" is already an alias of `bee` (base/b.toml)"
        );
    }

    #[test]
    fn compiled_layers_are_refused_as_parsed_ones_and_bad_bytes_are_an_error() {
        let err = RegistryBuilder::compile_layer([
            ("a.toml", file(1, "ant")),
            ("b.toml", file(2, "ant")),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "b.toml:2: field `key`: \"ant\" is already declared in a.toml:2"
        );
        let mut b = RegistryBuilder::new();
        b.add_compiled_layer(b"\xff\xff\xff");
        assert!(b
            .build()
            .unwrap_err()
            .to_string()
            .starts_with("<compiled catalog>: cannot decode the compiled catalog: "),);
    }

    fn with_aliases(id: u64, key: &str, aliases: &str) -> String {
        file(id, key).replacen("name = ", &format!("aliases = {aliases}\nname = "), 1)
    }

    #[test]
    fn aliases_resolve_and_clashes_are_refused() {
        let r = build(&[&[
            (
                "salesforce.toml",
                with_aliases(1, "salesforce", r#"["sfdc"]"#),
            ),
            ("close.toml", with_aliases(2, "close", r#"["closeio"]"#)),
        ]])
        .unwrap();
        assert_eq!(r.by_key("sfdc").unwrap().key(), "salesforce");
        assert_eq!(r.get("closeio").unwrap().key(), "close");
        assert_eq!(r.get("salesforce").unwrap().spec().aliases, ["sfdc"]);
        assert_eq!(r.len(), 2);

        let err = build(&[&[
            (
                "salesforce.toml",
                with_aliases(1, "salesforce", r#"["close"]"#),
            ),
            ("close.toml", file(2, "close")),
        ]])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "salesforce.toml:3: field `aliases`: \"close\" is the key of the element in close.toml:2"
        );
        let err = build(&[&[
            ("a.toml", with_aliases(1, "ant", r#"["x"]"#)),
            ("b.toml", with_aliases(2, "bee", r#"["x"]"#)),
        ]])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "b.toml:3: field `aliases`: \"x\" is already an alias of `ant` (a.toml)"
        );
        let err = build(&[&[("a.toml", with_aliases(1, "ant", r#"["Bad Alias"]"#))]]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("a.toml:3: field `aliases`: \"Bad Alias\" must be"),
            "{err}"
        );
    }
}
