//! Parsing a catalog file and checking it, every error with file, line and field.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use toml::Spanned;
use url::Url;

use super::format::RawSpec;
use super::template;
use super::{Authentication, ConfigEntry, ElementSpec, OAuthSpec, Source};

/// Authorization URL parameters the standard flow writes itself.
const STANDARD_AUTHORIZATION_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// Token endpoint form fields the standard flow writes itself.
const STANDARD_TOKEN_FIELDS: &[&str] = &[
    "grant_type",
    "code",
    "redirect_uri",
    "client_id",
    "client_secret",
    "refresh_token",
    "code_verifier",
];

/// An error in one catalog file: `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError {
    /// The file name as given to the parser.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for CatalogError {}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of `name = ...` at or after byte `from` (inside `[section]` when
/// given), else the line of `from`.
fn line_of_key(text: &str, from: usize, section: Option<&str>, name: &str) -> usize {
    let mut start = from.min(text.len());
    if let Some(section) = section {
        if let Some(i) = text[start..].find(&format!("[{section}]")) {
            start += i;
        }
    }
    let mut offset = start;
    for line in text[start..].split_inclusive('\n') {
        let trimmed = line.trim_start();
        let key = trimmed
            .strip_prefix('"')
            .and_then(|t| t.strip_prefix(name).and_then(|t| t.strip_prefix('"')))
            .or_else(|| trimmed.strip_prefix(name));
        if key.is_some_and(|rest| rest.trim_start().starts_with('=')) {
            return line_of(text, offset);
        }
        offset += line.len();
    }
    line_of(text, from)
}

/// The line where a dotted field (`oauth.pkce`, `oauth.token_params`) of a
/// catalog file is set: its `[table]` header, else its `key = ...` line.
pub(crate) fn line_of_field(text: &str, field: &str) -> usize {
    if let Some(i) = text.find(&format!("[{field}]")) {
        return line_of(text, i);
    }
    let (section, name) = match field.rsplit_once('.') {
        Some((section, name)) => (Some(section), name),
        None => (None, field),
    };
    line_of_key(text, 0, section, name)
}

fn key_is_valid(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

/// An absolute `http` or `https` URL as the URL standard reads it, with the
/// scheme written `http://` or `https://` (the standard would also take
/// `HTTPS:host`) and no white space or control characters (which it would
/// drop). `{name}` placeholders are URL text to the parser; their placement
/// is checked by [`template::parse_url`].
fn url_is_valid(url: &str) -> bool {
    !url.contains(|c: char| c.is_whitespace() || c.is_control())
        && Url::parse(url).is_ok_and(|parsed| {
            matches!(parsed.scheme(), "http" | "https")
                && url
                    .strip_prefix(parsed.scheme())
                    .is_some_and(|rest| rest.starts_with("://"))
        })
}

/// Checks the templates and parameters of one file, collecting errors with
/// the line of the field at fault.
struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    entries: BTreeMap<&'a str, &'a ConfigEntry>,
    errors: Vec<CatalogError>,
}

impl Checker<'_> {
    /// The line of `name = ...` at or after byte `from` (inside `[section]`
    /// when given), else the line of `from`.
    fn line(&self, from: usize, section: Option<&str>, name: &str) -> usize {
        line_of_key(self.text, from, section, name)
    }

    fn push(&mut self, line: usize, message: String) {
        self.errors.push(CatalogError {
            file: self.file.to_owned(),
            line: Some(line),
            message,
        });
    }

    /// Checks the placeholders of a parsed template against the entries.
    fn placeholders(
        &mut self,
        line: usize,
        field: &str,
        pieces: &[template::Piece<'_>],
        secrets_ok: bool,
    ) {
        for piece in pieces {
            let template::Piece::Placeholder { name, position } = piece else {
                continue;
            };
            match self.entries.get(name).copied() {
                None => self.push(
                    line,
                    format!(
                        "field `{field}`: placeholder `{{{name}}}` names no [[configuration]] \
                         entry (declare one with key = {name:?})"
                    ),
                ),
                Some(entry) if entry.secret && !secrets_ok => self.push(
                    line,
                    format!(
                        "field `{field}`: placeholder `{{{name}}}` names a secret entry; \
                         secrets may only be used in `oauth.token_params`"
                    ),
                ),
                Some(entry)
                    if matches!(
                        position,
                        template::Position::WholeHost | template::Position::Origin
                    ) && !entry.custom_host =>
                {
                    self.push(
                        line,
                        format!(
                            "field `{field}`: placeholder `{{{name}}}` is the whole host, which \
                             could send client secrets and tokens anywhere; declare the entry \
                             `custom_host = true` (its values must then be https host names of \
                             two labels or more, no IP address or localhost, within the \
                             deployment's allowed_custom_hosts)"
                        ),
                    );
                }
                Some(entry)
                    if *position == template::Position::RestrictedHost
                        && entry.allowed_values.is_empty() =>
                {
                    self.push(
                        line,
                        format!(
                            "field `{field}`: placeholder `{{{name}}}` is part of a host label \
                             or in its last two labels, where a value could choose the \
                             domain; declare its values on the entry, e.g. \
                             allowed_values = [\"com\", \"eu\"] (or make it a whole label \
                             in front of two literal labels)"
                        ),
                    );
                }
                Some(entry) => {
                    let bad_default = entry.default_value.as_deref().filter(|d| {
                        *position == template::Position::Host && !template::is_host_label(d)
                    });
                    if let Some(d) = bad_default {
                        self.push(
                            line,
                            format!(
                                "field `{field}`: the default value {d:?} of `{name}` is not a \
                                 single host name label"
                            ),
                        );
                    }
                }
            }
        }
    }

    fn url(
        &mut self,
        from: usize,
        section: Option<&str>,
        field: &str,
        url: &str,
        secrets_ok: bool,
    ) {
        let name = field.rsplit('.').next().unwrap_or(field);
        let line = self.line(from, section, name);
        // A template that starts with a placeholder (its whole origin) is
        // checked as a URL with an example origin in its place.
        let as_url = match url.strip_prefix('{').and_then(|r| r.split_once('}')) {
            Some((_, rest)) => format!("https://origin.example{rest}"),
            None => url.to_owned(),
        };
        if !url_is_valid(&as_url) {
            self.push(
                line,
                format!("field `{field}`: {url:?} is not an absolute http(s) URL"),
            );
            return;
        }
        match template::parse_url(url) {
            Ok(pieces) => self.placeholders(line, field, &pieces, secrets_ok),
            Err(e) => self.push(line, format!("field `{field}`: {e}")),
        }
    }

    fn params(
        &mut self,
        from: usize,
        section: &str,
        params: &BTreeMap<String, String>,
        reserved: &[&str],
        secrets_ok: bool,
    ) {
        for (name, value) in params {
            let field = format!("{section}.{name}");
            let line = self.line(from, Some(section), name);
            if reserved.contains(&name.as_str()) {
                self.push(
                    line,
                    format!("field `{field}`: `{name}` is a standard parameter and is written by the flow itself"),
                );
            }
            match template::parse_value(value) {
                Ok(pieces) => self.placeholders(line, &field, &pieces, secrets_ok),
                Err(e) => self.push(line, format!("field `{field}`: {e}")),
            }
        }
    }

    /// The declarations of the entries: `allowed_values` are host labels
    /// when used in a host, a default is one of them, `custom_host` defaults
    /// pass the host rules.
    fn entry_declarations(&mut self, entries: &[Spanned<ConfigEntry>]) {
        for spanned in entries {
            let e = spanned.get_ref();
            let from = spanned.span().start;
            if !e.allowed_values.is_empty() {
                let line = self.line(from, None, "allowed_values");
                if let Some(bad) = e
                    .allowed_values
                    .iter()
                    .find(|v| !template::is_host_labels(v))
                {
                    self.push(
                        line,
                        format!(
                            "field `configuration.allowed_values`: {bad:?} of `{}` is not \
                             dot-separated host name labels",
                            e.key
                        ),
                    );
                }
                if let Some(d) = e
                    .default_value
                    .as_deref()
                    .filter(|d| !e.allowed_values.iter().any(|a| a == d))
                {
                    self.push(
                        line,
                        format!(
                            "field `configuration.default_value`: {d:?} of `{}` is not one of its \
                             allowed_values",
                            e.key
                        ),
                    );
                }
            }
            if e.custom_host {
                if let Some(Err(reason)) = e
                    .default_value
                    .as_deref()
                    .map(|d| template::check_custom_origin(d, &[]))
                {
                    let line = self.line(from, None, "default_value");
                    self.push(
                        line,
                        format!(
                            "field `configuration.default_value` of `{}`: a custom host {reason}",
                            e.key
                        ),
                    );
                }
                if e.secret {
                    let line = self.line(from, None, "custom_host");
                    self.push(
                        line,
                        format!(
                            "field `configuration.custom_host`: `{}` is secret; a host is not",
                            e.key
                        ),
                    );
                }
            }
        }
    }

    /// The line of `name` inside the `[section]` table, or of the
    /// `table = { ... }` line when the table is written inline.
    fn table_line(&self, from: usize, section: &str, name: &str) -> usize {
        if self.text.contains(&format!("[{section}]")) {
            return self.line(from, Some(section), name);
        }
        let (parent, table) = section.rsplit_once('.').unwrap_or(("", section));
        let parent = (parent != "oauth").then_some(parent);
        self.line(from, parent, table)
    }

    fn oauth(&mut self, from: usize, o: &OAuthSpec) {
        if let Some(url) = &o.revocation_url {
            self.url(from, None, "oauth.revocation_url", url, false);
        }
        if o.response_type.is_empty()
            || !o
                .response_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b' '))
        {
            let line = self.line(from, None, "response_type");
            self.push(
                line,
                format!(
                    "field `oauth.response_type`: {:?} is not a response type (letters, digits, \
                     `_`, spaces)",
                    o.response_type
                ),
            );
        }
        const RENAMABLE: &[&str] = &["response_type", "client_id", "redirect_uri", "state"];
        for (standard, renamed) in &o.authorization_param_names {
            let line = self.table_line(from, "oauth.authorization_param_names", standard);
            if !RENAMABLE.contains(&standard.as_str()) {
                self.push(
                    line,
                    format!(
                        "field `oauth.authorization_param_names.{standard}`: only {} may be renamed",
                        RENAMABLE.join(", ")
                    ),
                );
            }
            if renamed.is_empty()
                || STANDARD_AUTHORIZATION_PARAMS.contains(&renamed.as_str())
                || o.authorization_params.contains_key(renamed)
                || *renamed == o.scope_param
            {
                self.push(
                    line,
                    format!(
                        "field `oauth.authorization_param_names.{standard}`: {renamed:?} is empty \
                         or already names another parameter"
                    ),
                );
            }
        }
        const OMITTABLE: &[&str] = &["response_type", "client_id", "redirect_uri"];
        for omitted in &o.omit_authorization_params {
            if !OMITTABLE.contains(&omitted.as_str()) {
                let line = self.line(from, None, "omit_authorization_params");
                self.push(
                    line,
                    format!(
                        "field `oauth.omit_authorization_params`: {omitted:?} cannot be omitted \
                         (one of {})",
                        OMITTABLE.join(", ")
                    ),
                );
            }
        }
        // leftovers: scopes are sent as written; a `{placeholder}` there
        // would go to the provider literally, so it is refused.
        for (field, scope) in [
            ("default_scope", &o.default_scope),
            ("fixed_scope", &o.fixed_scope),
        ] {
            if scope.as_deref().is_some_and(|s| s.contains(['{', '}'])) {
                let line = self.line(from, None, field);
                self.push(
                    line,
                    format!(
                        "field `oauth.{field}`: scopes are sent as written and take no \
                         `{{placeholder}}`; write the scopes out (a caller may pass `scope` \
                         to `oauth/url`), or move the value into `authorization_params`, \
                         which may use placeholders"
                    ),
                );
            }
        }
        for name in &o.callback_capture {
            let line = self.line(from, None, "callback_capture");
            match self.entries.get(name.as_str()).copied() {
                None => self.push(
                    line,
                    format!(
                        "field `oauth.callback_capture`: {name:?} names no [[configuration]] \
                         entry (declare one with key = {name:?} and required = false)"
                    ),
                ),
                Some(e) if e.secret => self.push(
                    line,
                    format!("field `oauth.callback_capture`: {name:?} is a secret entry"),
                ),
                Some(_) => {}
            }
        }
        for (path, key) in &o.token_response.keep {
            let line = self.line(from, Some("oauth.token_response"), "keep");
            if path.is_empty() || path.split('.').any(str::is_empty) {
                self.push(
                    line,
                    format!(
                        "field `oauth.token_response.keep`: {path:?} is not a dotted path \
                         (names separated by single dots)"
                    ),
                );
            }
            match self.entries.get(key.as_str()).copied() {
                None => self.push(
                    line,
                    format!(
                        "field `oauth.token_response.keep`: {key:?} names no [[configuration]] \
                         entry (declare one with key = {key:?} and required = false)"
                    ),
                ),
                Some(e) if e.required || e.secret => self.push(
                    line,
                    format!(
                        "field `oauth.token_response.keep`: entry {key:?} must be \
                         required = false and not secret (it is filled from the token response)"
                    ),
                ),
                Some(_) => {}
            }
        }
        // Empty: left out, which only the client credentials kind may (see `kinds`).
        if !o.authorization_url.is_empty() {
            self.url(
                from,
                None,
                "oauth.authorization_url",
                &o.authorization_url,
                false,
            );
        }
        self.url(from, None, "oauth.token_url", &o.token_url, false);
        if let Some(url) = &o.refresh_url {
            self.url(from, None, "oauth.refresh_url", url, false);
        }
        for (name, url) in &o.endpoints {
            self.url(
                from,
                Some("oauth.endpoints"),
                &format!("oauth.endpoints.{name}"),
                url,
                false,
            );
        }
        let scope_param = o.scope_param.as_str();
        if scope_param.is_empty() || STANDARD_AUTHORIZATION_PARAMS.contains(&scope_param) {
            let line = self.line(from, None, "scope_param");
            self.push(
                line,
                format!(
                    "field `oauth.scope_param`: {scope_param:?} cannot name the scope parameter"
                ),
            );
        }
        let mut reserved = STANDARD_AUTHORIZATION_PARAMS.to_vec();
        reserved.push(scope_param);
        self.params(
            from,
            "oauth.authorization_params",
            &o.authorization_params,
            &reserved,
            false,
        );
        self.params(
            from,
            "oauth.token_params",
            &o.token_params,
            STANDARD_TOKEN_FIELDS,
            true,
        );
        for (name, path) in o.token_response.paths() {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                let line = self.line(from, Some("oauth.token_response"), name);
                self.push(
                    line,
                    format!(
                        "field `oauth.token_response.{name}`: {path:?} is not a dotted path \
                         (names separated by single dots)"
                    ),
                );
            }
        }
    }
}

// --- credential kinds: which sections each kind needs, and their checks ---

/// The sections an authentication kind needs or refuses: (span, message).
fn kind_sections(raw: &RawSpec, auth: Authentication) -> Vec<(Range<usize>, String)> {
    let mut errors = Vec::new();
    let name = auth.as_str();
    let wants_oauth = matches!(
        auth,
        Authentication::Oauth2 | Authentication::Oauth2ClientCredentials
    );
    match (&raw.oauth, wants_oauth) {
        (None, true) => errors.push((
            raw.authentication.span(),
            format!("field `authentication`: `{name}` needs an [oauth] section"),
        )),
        (Some(oauth), false) => errors.push((
            oauth.span(),
            format!("field `oauth`: not allowed when authentication is `{name}`"),
        )),
        _ => {}
    }
    match (&raw.oauth1, auth == Authentication::Oauth1) {
        (None, true) => errors.push((
            raw.authentication.span(),
            format!("field `authentication`: `{name}` needs an [oauth1] section"),
        )),
        (Some(o), false) => errors.push((
            o.span(),
            format!("field `oauth1`: not allowed when authentication is `{name}`"),
        )),
        _ => {}
    }
    for r in &raw.resources {
        if let Err(why) = r.get_ref().check() {
            errors.push((
                r.span(),
                format!("field `resources`: `{}`: {why}", r.get_ref().name),
            ));
        }
    }
    if let (Some(c), Authentication::Oauth1) = (&raw.credential, auth) {
        errors.push((
            c.span(),
            "field `credential`: not allowed when authentication is `oauth1` (requests are signed)"
                .into(),
        ));
    }
    errors
}

impl Checker<'_> {
    /// The `[oauth]` URL each OAuth 2.0 kind needs or refuses, the
    /// `[oauth1]` URLs and the `[credential]` templates.
    fn kinds(&mut self, raw: &RawSpec, auth: Authentication) {
        if let Some(url) = raw
            .api_base_url
            .as_ref()
            // A whole-origin placeholder (`{salesforce.instance_url}/...`)
            // is checked by the template rules: its entry must be
            // `custom_host`, and its value https.
            .filter(|u| !u.get_ref().starts_with("https://") && !u.get_ref().starts_with('{'))
        {
            let line = line_of(self.text, url.span().start);
            self.push(line, "field `api_base_url`: must be an https URL".into());
        }
        if let Some(oauth) = &raw.oauth {
            let from = oauth.span().start;
            let has_url = !oauth.get_ref().authorization_url.is_empty();
            match auth {
                Authentication::Oauth2 if !has_url => self.push(
                    line_of(self.text, from),
                    "field `oauth.authorization_url`: required when authentication is `oauth2`"
                        .into(),
                ),
                Authentication::Oauth2ClientCredentials if has_url => {
                    let line = self.line(from, None, "authorization_url");
                    self.push(
                        line,
                        "field `oauth.authorization_url`: not used by \
                         `oauth2_client_credentials` (remove it)"
                            .into(),
                    );
                }
                _ => {}
            }
        }
        if let Some(o) = &raw.oauth1 {
            let from = o.span().start;
            let o = o.get_ref();
            self.url(
                from,
                None,
                "oauth1.request_token_url",
                &o.request_token_url,
                false,
            );
            self.url(from, None, "oauth1.authorize_url", &o.authorize_url, false);
            self.url(
                from,
                None,
                "oauth1.access_token_url",
                &o.access_token_url,
                false,
            );
        }
        if let Some(c) = &raw.credential {
            let from = c.span().start;
            let entries = |name: &str| self.entries.contains_key(name);
            let found = crate::credential::check_credential(c.get_ref(), auth, &entries);
            for (field, message) in found {
                let line = match field.split('.').nth(1) {
                    Some(key) => self.line(from, Some("credential"), key),
                    None => line_of(self.text, from),
                };
                self.push(line, format!("field `{field}`: {message}"));
            }
        }
    }
}

impl Checker<'_> {
    /// health: the `[verify]` table (needs `api_base_url`).
    fn verify(&mut self, raw: &RawSpec) {
        let Some(v) = &raw.verify else { return };
        let from = v.span().start;
        if raw.api_base_url.is_none() {
            let line = line_of(self.text, from);
            self.push(
                line,
                "field `verify`: needs `api_base_url` (the path is under it)".into(),
            );
        }
        for (field, message) in v.get_ref().check() {
            let line = self.line(0, Some("verify"), field);
            self.push(line, format!("field `verify.{field}`: {message}"));
        }
    }
}

impl ElementSpec {
    /// Parses one catalog file. `file` is only used in error messages.
    ///
    /// Returns every error found in the file.
    pub fn parse(file: &str, text: &str) -> Result<ElementSpec, Vec<CatalogError>> {
        let err = |span: Range<usize>, message: String| CatalogError {
            file: file.to_owned(),
            line: Some(line_of(text, span.start)),
            message,
        };
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            vec![CatalogError {
                file: file.to_owned(),
                line: e.span().map(|s| line_of(text, s.start)),
                message: e.message().trim_end().to_owned(),
            }]
        })?;

        let mut errors = Vec::new();
        if !key_is_valid(raw.key.get_ref()) {
            errors.push(err(
                raw.key.span(),
                format!(
                    "field `key`: {:?} must be lower-case letters, digits, `-` or `_`",
                    raw.key.get_ref()
                ),
            ));
        }
        if let Some(aliases) = &raw.aliases {
            for alias in aliases.get_ref() {
                if !key_is_valid(alias) || alias == raw.key.get_ref() {
                    errors.push(err(
                        aliases.span(),
                        format!(
                            "field `aliases`: {alias:?} must be lower-case letters, digits, `-` \
                             or `_`, and not the element's own key"
                        ),
                    ));
                }
            }
        }
        if *raw.id.get_ref() == 0 {
            errors.push(err(raw.id.span(), "field `id`: must be positive".into()));
        }
        let auth = *raw.authentication.get_ref();
        errors.extend(
            kind_sections(&raw, auth)
                .into_iter()
                .map(|(span, message)| err(span, message)),
        );
        let mut checker = Checker {
            file,
            text,
            entries: raw
                .configuration
                .iter()
                .map(|e| (e.get_ref().key.as_str(), e.get_ref()))
                .collect(),
            errors: Vec::new(),
        };
        if let Some(url) = &raw.api_base_url {
            checker.url(url.span().start, None, "api_base_url", url.get_ref(), false);
        }
        if let Some(oauth) = &raw.oauth {
            checker.oauth(oauth.span().start, oauth.get_ref());
        }
        checker.entry_declarations(&raw.configuration);
        checker.kinds(&raw, auth);
        checker.verify(&raw);
        errors.append(&mut checker.errors);
        let mut seen = BTreeMap::new();
        for entry in &raw.configuration {
            let key = &entry.get_ref().key;
            if key.is_empty() {
                errors.push(err(
                    entry.span(),
                    "field `configuration.key`: must not be empty".into(),
                ));
            }
            if let Some(first) = seen.insert(key.clone(), line_of(text, entry.span().start)) {
                errors.push(err(
                    entry.span(),
                    format!(
                        "field `configuration.key`: {key:?} is declared twice (first on line {first})"
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        Ok(ElementSpec {
            source: Source {
                file: file.to_owned(),
                key_line: line_of(text, raw.key.span().start),
                id_line: line_of(text, raw.id.span().start),
                aliases_line: raw.aliases.as_ref().map_or_else(
                    || line_of(text, raw.key.span().start),
                    |a| line_of(text, a.span().start),
                ),
            },
            id: raw.id.into_inner(),
            key: raw.key.into_inner(),
            name: raw.name,
            description: raw.description,
            image: raw.image,
            active: raw.active,
            deleted: raw.deleted,
            trial_account: raw.trial_account,
            existing_account_description: raw.existing_account_description,
            config_description: raw.config_description,
            hub: raw.hub,
            authentication: auth,
            api_base_url: raw.api_base_url.map(Spanned::into_inner),
            aliases: raw.aliases.map(Spanned::into_inner).unwrap_or_default(),
            oauth: raw.oauth.map(Spanned::into_inner),
            credential: raw.credential.map(Spanned::into_inner),
            oauth1: raw.oauth1.map(Spanned::into_inner),
            resources: raw.resources.into_iter().map(Spanned::into_inner).collect(),
            proxy: raw.proxy,
            verify: raw.verify.map(Spanned::into_inner),
            configuration: raw
                .configuration
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientAuth, Configuration};

    const MINIMAL: &str = r#"id = 7
key = "demo"
name = "Demo"
description = "d"
image = "i"
hub = "general"
authentication = "apikey"
existing_account_description = "e"
config_description = "c"
"#;

    fn check_err(extra: &str, line: usize, needle: &str) {
        let text = format!("{MINIMAL}{extra}");
        let errs = ElementSpec::parse("demo.toml", &text).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.line == Some(line) && e.message.contains(needle)),
            "expected line {line} containing {needle:?}, got {errs:?}"
        );
    }

    #[test]
    fn urls_must_be_absolute_http_or_https() {
        for ok in [
            "https://example.com/a",
            "http://127.0.0.1:8080/token",
            "https://{subdomain}.zendesk.com/oauth/tokens",
            "https://login.example.com/{tenant}/oauth2/v2.0/authorize?x={y}",
        ] {
            assert!(url_is_valid(ok), "{ok}");
        }
        for bad in [
            "ftp://example.com/a",
            "HTTPS://example.com/a",
            "https:example.com/a",
            "/relative",
            "https://exa mple.com/a",
            "https://example.com/a\n",
            "https://",
        ] {
            assert!(!url_is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn minimal_parses() {
        let spec = ElementSpec::parse("demo.toml", MINIMAL).unwrap();
        assert_eq!((spec.id, spec.key.as_str()), (7, "demo"));
        assert!(spec.active && !spec.deleted && !spec.authentication.is_oauth());
        assert_eq!(spec.source.key_line, 2);
    }

    #[test]
    fn the_verify_table_is_checked_with_the_line_of_its_field() {
        let base = "api_base_url = \"https://api.example.com/v1\"\n";
        // MINIMAL has 9 lines; base is line 10, [verify] line 11.
        let ok = format!("{MINIMAL}{base}[verify]\npath = \"/me?limit=1\"\n");
        let spec = ElementSpec::parse("demo.toml", &ok).unwrap();
        let v = spec.verify.unwrap();
        assert_eq!((v.method.as_str(), v.path.as_str()), ("GET", "/me?limit=1"));
        assert_eq!(v.expect, vec![200]);
        check_err(
            &format!("{base}[verify]\nmethod = \"DELETE\"\npath = \"/me\"\n"),
            12,
            "field `verify.method`: \"DELETE\" is not one of GET, HEAD, POST",
        );
        check_err(
            &format!("{base}[verify]\npath = \"/a/../b\"\n"),
            12,
            "field `verify.path`",
        );
        check_err(
            &format!("{base}[verify]\npath = \"/me\"\nexpect = [200, 404]\n"),
            13,
            "field `verify.expect`: 404 is not a success status",
        );
        check_err(
            "[verify]\npath = \"/me\"\n",
            10,
            "field `verify`: needs `api_base_url`",
        );
        check_err(
            &format!("{base}[verify]\npath = \"/me\"\nbody = \"x\"\n"),
            13,
            "unknown field `body`",
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        check_err("colour = \"red\"\n", 10, "unknown field `colour`");
        check_err(
            "[[configuration]]\nkey = \"a\"\nname = \"A\"\nsecrets = true\n",
            13,
            "unknown field `secrets`",
        );
        check_err(
            "[oauth]\nauthorization_url = \"https://a\"\ntoken_url = \"https://b\"\n",
            10,
            "field `oauth`",
        );
        let bad_key = MINIMAL.replace("\"demo\"", "\"De mo\"");
        let errs = ElementSpec::parse("x.toml", &bad_key).unwrap_err();
        assert_eq!(errs[0].to_string().split(':').nth(1), Some("2"));
        assert!(errs[0].message.contains("field `key`"));
        let no_oauth = MINIMAL.replace("apikey", "oauth2");
        let errs = ElementSpec::parse("x.toml", &no_oauth).unwrap_err();
        assert_eq!(errs[0].line, Some(7));
        assert!(errs[0].message.contains("[oauth]"));
    }

    #[test]
    fn missing_field_is_named() {
        let text = MINIMAL.replace("name = \"Demo\"\n", "");
        let errs = ElementSpec::parse("x.toml", &text).unwrap_err();
        assert!(errs[0].message.contains("missing field `name`"), "{errs:?}");
    }

    #[test]
    fn templates_are_checked_with_the_line_of_the_field() {
        let oauth = "[oauth]\nauthorization_url = \"https://{sub}.example.com/a\"\n\
                     token_url = \"https://example.com/t\"\n";
        // Line 11: the placeholder names no configuration entry.
        let text = format!("{}{oauth}", MINIMAL.replace("apikey", "oauth2"));
        let errs = ElementSpec::parse("x.toml", &text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, Some(11));
        assert!(errs[0]
            .message
            .contains("placeholder `{sub}` names no [[configuration]]"));
        // Declared, it parses; a host default must be a label.
        let entry = "[[configuration]]\nkey = \"sub\"\nname = \"S\"\n";
        let ok = format!("{text}{entry}");
        let spec = ElementSpec::parse("x.toml", &ok).unwrap();
        assert_eq!(spec.placeholders(), ["sub"]);
        assert_eq!(spec.authorization_placeholders(), ["sub"]);
        let bad_default = format!("{ok}default_value = \"a.b\"\n");
        let errs = ElementSpec::parse("x.toml", &bad_default).unwrap_err();
        assert!(
            errs[0].message.contains("not a single host name label"),
            "{errs:?}"
        );
        // Secrets stay out of URLs.
        let secret = format!("{ok}secret = true\n");
        let errs = ElementSpec::parse("x.toml", &secret).unwrap_err();
        assert!(errs[0].message.contains("names a secret entry"), "{errs:?}");
        // Placement rules and syntax.
        let domain = text.replace("{sub}.example.com", "{sub}.com");
        let errs = ElementSpec::parse("x.toml", &format!("{domain}{entry}")).unwrap_err();
        assert!(errs[0].message.contains("last two labels"), "{errs:?}");
        let unmatched = text.replace("/a\"", "/{a\"");
        let errs = ElementSpec::parse("x.toml", &format!("{unmatched}{entry}")).unwrap_err();
        assert!(errs[0].message.contains("unmatched `{`"), "{errs:?}");
        assert_eq!(errs[0].line, Some(11));
    }

    #[test]
    fn new_oauth_fields_parse_and_are_checked() {
        let base = MINIMAL.replace("apikey", "oauth2");
        let text = format!(
            "{base}api_base_url = \"https://api.example.com/{{tenant}}\"\n\
             [oauth]\nauthorization_url = \"https://example.com/a\"\n\
             token_url = \"https://example.com/t\"\nclient_auth = \"none\"\n\
             scope_param = \"user_scope\"\nstate_required = true\n\
             [oauth.authorization_params]\naudience = \"{{tenant}}\"\n\
             [oauth.token_params]\nclient_assertion = \"{{key}}\"\n\
             [oauth.token_response]\naccess_token = \"data.token\"\n\
             [[configuration]]\nkey = \"tenant\"\nname = \"T\"\ndefault_value = \"common\"\n\
             [[configuration]]\nkey = \"key\"\nname = \"K\"\nsecret = true\n"
        );
        let spec = ElementSpec::parse("x.toml", &text).unwrap();
        let o = spec.oauth.as_ref().unwrap();
        assert_eq!(o.client_auth, ClientAuth::None);
        assert_eq!(o.scope_param, "user_scope");
        assert!(o.state_required);
        assert_eq!(o.token_response.access_token, "data.token");
        assert_eq!(o.token_response.refresh_token, "refresh_token");
        assert_eq!(spec.placeholders(), ["tenant", "key"]);
        assert_eq!(
            spec.base_url_for(&Configuration::new()).unwrap().as_deref(),
            Some("https://api.example.com/common")
        );
        // (Its JSON view, `apiBaseUrl`, is tested in elements-server's element_view.)
        assert_eq!(
            spec.api_base_url.as_deref(),
            Some("https://api.example.com/{tenant}")
        );

        let line_of_error = |from: &str, to: &str| {
            let errs = ElementSpec::parse("x.toml", &text.replace(from, to)).unwrap_err();
            (errs[0].line, errs[0].message.clone())
        };
        let (line, msg) = line_of_error("audience = ", "state = ");
        assert_eq!(line, Some(18));
        assert!(msg.contains("`state` is a standard parameter"), "{msg}");
        let (line, msg) = line_of_error("client_assertion", "code");
        assert_eq!(line, Some(20));
        assert!(msg.contains("oauth.token_params.code"), "{msg}");
        let (line, msg) = line_of_error("\"data.token\"", "\"data.\"");
        assert_eq!(line, Some(22));
        assert!(msg.contains("not a dotted path"), "{msg}");
        let (_, msg) = line_of_error("\"user_scope\"", "\"state\"");
        assert!(msg.contains("oauth.scope_param"), "{msg}");
        let (line, msg) = line_of_error("access_token = ", "access_tokens = ");
        assert_eq!(line, Some(22));
        assert!(msg.contains("unknown field `access_tokens`"), "{msg}");
        let (_, msg) = line_of_error("\"none\"", "\"jwt\"");
        assert!(msg.contains("unknown variant `jwt`"), "{msg}");
        // A secret may be used in token_params, not in the API base URL.
        let (line, msg) = line_of_error("example.com/{tenant}", "example.com/{key}");
        assert_eq!(line, Some(10));
        assert!(msg.contains("field `api_base_url`"), "{msg}");
    }

    #[test]
    fn non_default_fields_name_every_optional_oauth_field() {
        let base = MINIMAL.replace("apikey", "oauth2");
        let plain = format!(
            "{base}[oauth]\nauthorization_url = \"https://example.com/a\"\n\
             token_url = \"https://example.com/t\"\n"
        );
        let spec = ElementSpec::parse("x.toml", &plain).unwrap();
        assert!(spec.oauth.unwrap().non_default_fields().is_empty());
        let every = format!(
            "{plain}refresh_url = \"https://example.com/r\"\nscope_separator = \",\"\n\
             scope_param = \"user_scope\"\npkce = true\nstate_required = true\n\
             client_auth = \"basic\"\ndefault_scope = \"read\"\n\
             response_type = \"code id_token\"\n\
             authorization_param_names = {{ client_id = \"app_id\" }}\n\
             omit_authorization_params = [\"redirect_uri\"]\nfixed_scope = \"openid\"\n\
             token_request_format = \"json\"\n\
             revocation_url = \"https://example.com/revoke\"\ncallback_capture = [\"realm\"]\n\
             [oauth.authorization_params]\naudience = \"a\"\n\
             [oauth.token_params]\nresource = \"r\"\n\
             [oauth.token_response]\naccess_token = \"data.token\"\n\
             [oauth.endpoints]\nother = \"https://example.com/o\"\n\
             [[configuration]]\nkey = \"realm\"\nname = \"R\"\nrequired = false\n"
        );
        let spec = ElementSpec::parse("x.toml", &every).unwrap();
        assert_eq!(
            spec.oauth.unwrap().non_default_fields(),
            OAuthSpec::OPTIONAL_FIELDS
        );
        assert_eq!(line_of_field(&every, "oauth.pkce"), 16);
        assert_eq!(line_of_field(&every, "oauth.token_params"), 29);
    }

    #[test]
    fn duplicate_configuration_keys_are_refused() {
        check_err(
            "[[configuration]]\nkey = \"a\"\nname = \"A\"\n[[configuration]]\nkey = \"a\"\nname = \"B\"\n",
            13,
            "declared twice",
        );
    }
}
