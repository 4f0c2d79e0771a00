//! URL and parameter templates: `{name}` placeholders filled from request
//! parameters or instance configuration; the rules are documented on
//! [`ElementSpec`](crate::ElementSpec).

use std::fmt;

use crate::encode::encode_component;

/// Which part of a URL template a placeholder stands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The scheme (`https`): placeholders are not allowed.
    Scheme,
    /// The host: the value must be one DNS label.
    Host,
    /// Part of a host label, or in the last two labels
    /// (`accounts.zoho.{region_domain}`, `ca-{environment}.adyen.com`): the
    /// value must be one of the entry's declared `allowed_values`.
    RestrictedHost,
    /// The whole origin at the start of a template
    /// (`{salesforce.instance_url}/services/data`): the entry must declare
    /// `custom_host = true`; the value must be `https://` and a host that
    /// passes [`check_custom_host`], nothing else.
    Origin,
    /// The whole host (`https://{host}/...`): the entry must declare
    /// `custom_host = true`; the value must pass [`check_custom_host`].
    WholeHost,
    /// The port: placeholders are not allowed.
    Port,
    /// The path: the value is percent-encoded, `.` and `..` refused.
    Path,
    /// The query: the value is percent-encoded.
    Query,
    /// A parameter value: inserted as is (encoded later, with the parameter).
    Value,
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text copied as is.
    Literal(&'a str),
    /// A `{name}` placeholder and where it stands.
    Placeholder {
        /// The configuration key it names.
        name: &'a str,
        /// Its position in the URL (or [`Position::Value`]).
        position: Position,
    },
}

/// A template that does not follow the syntax or the placement rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(pub String);

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SyntaxError {}

/// Why a template could not be filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillError {
    /// These names have no value (every one of them, in template order,
    /// without repetitions).
    Missing(Vec<String>),
    /// A value cannot stand where its placeholder is.
    Invalid {
        /// The placeholder's name.
        name: String,
        /// Why the value is refused.
        reason: String,
    },
    /// The template itself is malformed (possible only for templates that did
    /// not come through the catalog parser, e.g. endpoint overrides).
    Syntax(SyntaxError),
}

impl fmt::Display for FillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FillError::Missing(names) => write!(f, "missing values: {}", names.join(", ")),
            FillError::Invalid { name, reason } => write!(f, "invalid value of `{name}`: {reason}"),
            FillError::Syntax(e) => write!(f, "invalid template: {e}"),
        }
    }
}

impl std::error::Error for FillError {}

fn name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Splits a template into literals and placeholders, without positions
/// (every placeholder is [`Position::Value`]).
fn split(template: &str) -> Result<Vec<Piece<'_>>, SyntaxError> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let open = rest.find('{');
        let close = rest.find('}');
        match (open, close) {
            (None, None) => {
                pieces.push(Piece::Literal(rest));
                break;
            }
            (Some(o), Some(c)) if o < c => {
                if o > 0 {
                    pieces.push(Piece::Literal(&rest[..o]));
                }
                let name = &rest[o + 1..c];
                if !name_is_valid(name) {
                    return Err(SyntaxError(format!(
                        "placeholder `{{{name}}}`: a name is letters, digits, `.`, `_` or `-`"
                    )));
                }
                pieces.push(Piece::Placeholder {
                    name,
                    position: Position::Value,
                });
                rest = &rest[c + 1..];
            }
            (Some(_), _) => {
                return Err(SyntaxError(
                    "unmatched `{` (braces only delimit placeholders)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(SyntaxError(
                    "unmatched `}` (braces only delimit placeholders)".into(),
                ))
            }
        }
    }
    Ok(pieces)
}

/// Parses a parameter-value template (`authorization_params`, `token_params`).
pub fn parse_value(template: &str) -> Result<Vec<Piece<'_>>, SyntaxError> {
    split(template)
}

/// Parses a URL template and places each placeholder, enforcing the rules of
/// the [module documentation](self).
///
/// A placeholder that is a whole label in front of two literal labels is
/// [`Position::Host`]; one that is the whole host after `https://` is
/// [`Position::WholeHost`]; any other placeholder in the host (part of a
/// label, or in the last two labels) is [`Position::RestrictedHost`]. The
/// catalog checker requires the matching declarations of the entries.
pub fn parse_url(template: &str) -> Result<Vec<Piece<'_>>, SyntaxError> {
    let pieces = split(template)?;
    // Walk the literal text to know where each placeholder stands. A
    // placeholder counts as one opaque character of the part it is in.
    let mut position = Position::Scheme;
    let mut scheme_seen = String::new();
    let mut out = Vec::with_capacity(pieces.len());
    // Host labels: (has placeholder, has literal), and the index in `out`
    // of each host placeholder with its label's index.
    let mut labels: Vec<(bool, bool)> = vec![(false, false)];
    let mut host_placeholders: Vec<(usize, usize)> = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Literal(text) => {
                if scheme_seen == "origin" && out.len() == 1 && !text.starts_with(['/', '?']) {
                    return Err(SyntaxError(
                        "a placeholder at the start of a URL is its whole origin and must be \
                         followed by `/`, `?` or nothing"
                            .into(),
                    ));
                }
                for c in text.chars() {
                    match position {
                        Position::Scheme => {
                            scheme_seen.push(c);
                            if scheme_seen.ends_with("://") {
                                position = Position::Host;
                            }
                        }
                        Position::Host => match c {
                            '.' => {
                                if labels.last() == Some(&(false, false)) {
                                    return Err(SyntaxError("empty label in the host".into()));
                                }
                                labels.push((false, false));
                            }
                            ':' => position = Position::Port,
                            '/' => position = Position::Path,
                            '?' => position = Position::Query,
                            '@' => {
                                return Err(SyntaxError(
                                    "user information (`@`) is not allowed in the host".into(),
                                ))
                            }
                            _ => labels.last_mut().expect("one label at least").1 = true,
                        },
                        Position::Port => match c {
                            '/' => position = Position::Path,
                            '?' => position = Position::Query,
                            _ => {}
                        },
                        Position::Path if c == '?' => position = Position::Query,
                        _ => {}
                    }
                }
                out.push(Piece::Literal(text));
            }
            Piece::Placeholder { name, .. } => {
                match position {
                    Position::Scheme if out.is_empty() => {
                        // The whole origin: `{origin}` then `/`, `?` or the end.
                        out.push(Piece::Placeholder {
                            name,
                            position: Position::Origin,
                        });
                        position = Position::Path;
                        scheme_seen = "origin".into();
                        continue;
                    }
                    Position::Scheme => {
                        return Err(SyntaxError(format!(
                            "placeholder `{{{name}}}` in the scheme: the URL must start with \
                             `https://` or `http://`"
                        )))
                    }
                    Position::Port => {
                        return Err(SyntaxError(format!(
                            "placeholder `{{{name}}}` in the port is not allowed"
                        )))
                    }
                    Position::Host => {
                        let label = labels.last_mut().expect("one label at least");
                        if label.0 {
                            return Err(SyntaxError(format!(
                                "placeholder `{{{name}}}` follows another placeholder in one \
                                 host label"
                            )));
                        }
                        label.0 = true;
                        host_placeholders.push((out.len(), labels.len() - 1));
                    }
                    _ => {}
                }
                out.push(Piece::Placeholder { name, position });
            }
        }
    }
    let whole_host = labels.len() == 1 && labels[0] == (true, false);
    for (index, label) in host_placeholders {
        let Piece::Placeholder { name, .. } = out[index] else {
            continue;
        };
        let position = if whole_host {
            if !scheme_seen.eq_ignore_ascii_case("https://") {
                return Err(SyntaxError(format!(
                    "placeholder `{{{name}}}` is the whole host: only allowed after `https://`"
                )));
            }
            Position::WholeHost
        } else if labels[label] == (true, false) && labels.len() - label > 2 {
            Position::Host
        } else {
            Position::RestrictedHost
        };
        out[index] = Piece::Placeholder { name, position };
    }
    Ok(out)
}

/// Whether `host` may be the whole host of a provider URL
/// (`custom_host = true`): a lower-case DNS name of two labels or more,
/// 253 characters at most, not an IP literal, not `localhost` or a name
/// under it; and, when `allowed_domains` is not empty, one of them or a name
/// under one of them. The error says which rule is broken.
///
/// ```
/// use elements_core::check_custom_host;
///
/// assert!(check_custom_host("acme.my.salesforce.com", &[]).is_ok());
/// assert!(check_custom_host("keycloak.acme.com", &["acme.com".into()]).is_ok());
/// assert!(check_custom_host("evil.test", &["acme.com".into()]).is_err());
/// assert!(check_custom_host("127.0.0.1", &[]).is_err());
/// ```
pub fn check_custom_host(host: &str, allowed_domains: &[String]) -> Result<(), String> {
    if host.len() > 253 {
        return Err("must be a host name of at most 253 characters".into());
    }
    let labels: Vec<&str> = host.split('.').collect();
    if !labels.iter().all(|l| is_host_label(l)) || host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(
            "must be a lower-case host name (labels of letters, digits and `-` separated by \
             dots; no scheme, port, path, `:` or `@`)"
                .into(),
        );
    }
    if labels.len() < 2 {
        return Err("must be a fully qualified host name, not a single label".into());
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("must be a host name, not an IP address".into());
    }
    if labels.last() == Some(&"localhost") {
        return Err("must not be `localhost`".into());
    }
    if !allowed_domains.is_empty()
        && !allowed_domains.iter().any(|d| {
            let d = d.trim().trim_start_matches('.').to_ascii_lowercase();
            host == d || host.strip_suffix(&d).is_some_and(|p| p.ends_with('.'))
        })
    {
        return Err(format!(
            "is not within the domains this deployment allows (allowed_custom_hosts: {})",
            allowed_domains.join(", ")
        ));
    }
    Ok(())
}

/// Checks the value of a `custom_host` entry: a host ([`check_custom_host`])
/// or an origin, `https://` and such a host (as Salesforce's `instance_url`).
pub fn check_custom_origin(value: &str, allowed_domains: &[String]) -> Result<(), String> {
    match value.strip_prefix("https://") {
        Some(host) => check_custom_host(host, allowed_domains),
        None if value.contains("://") => Err("must be an https origin".into()),
        None => check_custom_host(value, allowed_domains),
    }
}

/// Whether `value` is one or more dot-separated host labels (an allowed
/// value of a restricted host placeholder, e.g. `com.au`).
pub fn is_host_labels(value: &str) -> bool {
    value.split('.').all(is_host_label)
}

/// The names of the placeholders of a template, in order, with repetitions.
/// Malformed templates give the names found before the error.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(o) = rest.find('{') {
        let Some(c) = rest[o..].find('}') else { break };
        let name = &rest[o + 1..o + c];
        if name_is_valid(name) {
            names.push(name);
        }
        rest = &rest[o + c + 1..];
    }
    names
}

/// Whether `value` is one DNS label: 1 to 63 ASCII letters, digits or `-`,
/// not starting or ending with `-`.
pub fn is_host_label(value: &str) -> bool {
    (1..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// Checks a value against its entry's declarations: (name, position,
/// value) to `Err(reason)`. [`refuse_restricted`] when the template has no
/// entries.
pub type Check<'c> = &'c dyn Fn(&str, Position, &str) -> Result<(), String>;

/// The check without declarations: restricted and whole-host placeholders
/// are refused (nothing declares their allowed values).
pub fn refuse_restricted(_name: &str, position: Position, _value: &str) -> Result<(), String> {
    match position {
        Position::RestrictedHost => Err("no allowed values are declared for this placeholder \
             of the host"
            .into()),
        Position::WholeHost | Position::Origin => {
            Err("the entry is not declared `custom_host = true`".into())
        }
        _ => Ok(()),
    }
}

fn fill(
    pieces: &[Piece<'_>],
    lookup: &dyn Fn(&str) -> Option<String>,
    check: Check<'_>,
) -> Result<String, FillError> {
    let mut missing: Vec<String> = Vec::new();
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(text) => out.push_str(text),
            Piece::Placeholder { name, position } => {
                let Some(value) = lookup(name).filter(|v| !v.trim().is_empty()) else {
                    if !missing.iter().any(|m| m == name) {
                        missing.push((*name).to_owned());
                    }
                    continue;
                };
                let invalid = |reason: &str| FillError::Invalid {
                    name: (*name).to_owned(),
                    reason: reason.to_owned(),
                };
                check(name, *position, &value).map_err(|reason| invalid(&reason))?;
                match position {
                    Position::RestrictedHost => {
                        if !is_host_labels(&value) {
                            return Err(invalid("must be dot-separated host name labels"));
                        }
                        out.push_str(&value);
                    }
                    Position::WholeHost => {
                        check_custom_host(&value, &[]).map_err(|reason| invalid(&reason))?;
                        out.push_str(&value);
                    }
                    Position::Origin => {
                        if !value.starts_with("https://") {
                            return Err(invalid("must be an https origin (`https://host`)"));
                        }
                        check_custom_origin(&value, &[]).map_err(|reason| invalid(&reason))?;
                        out.push_str(&value);
                    }
                    Position::Host => {
                        if !is_host_label(&value) {
                            return Err(invalid(
                                "must be a single host name label (letters, digits and `-`, \
                                 at most 63 characters, no `.`, `/`, `:` or `@`)",
                            ));
                        }
                        out.push_str(&value);
                    }
                    Position::Path => {
                        if value == "." || value == ".." {
                            return Err(invalid("must not be `.` or `..`"));
                        }
                        out.push_str(&encode_component(&value));
                    }
                    Position::Query => out.push_str(&encode_component(&value)),
                    Position::Value => out.push_str(&value),
                    Position::Scheme | Position::Port => {
                        return Err(FillError::Syntax(SyntaxError(format!(
                            "placeholder `{{{name}}}` cannot stand in the scheme or the port"
                        ))))
                    }
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(FillError::Missing(missing))
    }
}

/// Fills a URL template. `lookup` gives the value of a name, if any.
#[cfg(test)]
pub fn fill_url(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, FillError> {
    if !template.contains(['{', '}']) {
        return Ok(template.to_owned());
    }
    fill_url_checked(template, lookup, &refuse_restricted)
}

/// Fills a URL template, checking each value with `check` (the entries'
/// declarations) first.
pub fn fill_url_checked(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    check: Check<'_>,
) -> Result<String, FillError> {
    if !template.contains(['{', '}']) {
        return Ok(template.to_owned());
    }
    let pieces = parse_url(template).map_err(FillError::Syntax)?;
    fill(&pieces, lookup, check)
}

/// Fills a parameter-value template; values are inserted as is.
#[cfg(test)]
pub fn fill_value(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, FillError> {
    if !template.contains(['{', '}']) {
        return Ok(template.to_owned());
    }
    fill_value_checked(template, lookup, &refuse_restricted)
}

fn fill_value_checked(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    check: Check<'_>,
) -> Result<String, FillError> {
    if !template.contains(['{', '}']) {
        return Ok(template.to_owned());
    }
    let pieces = parse_value(template).map_err(FillError::Syntax)?;
    fill(&pieces, lookup, check)
}

/// Fills several templates at once, so that the missing names of all of them
/// are reported together. Each item is (template, is a URL).
#[cfg(test)]
pub fn fill_all<'t>(
    templates: impl IntoIterator<Item = (&'t str, bool)>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, FillError> {
    fill_all_checked(templates, lookup, &refuse_restricted)
}

/// [`fill_all`], checking each value with `check` first.
pub fn fill_all_checked<'t>(
    templates: impl IntoIterator<Item = (&'t str, bool)>,
    lookup: &dyn Fn(&str) -> Option<String>,
    check: Check<'_>,
) -> Result<Vec<String>, FillError> {
    let mut filled = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for (template, is_url) in templates {
        let result = if is_url {
            fill_url_checked(template, lookup, check)
        } else {
            fill_value_checked(template, lookup, check)
        };
        match result {
            Ok(s) => filled.push(s),
            Err(FillError::Missing(names)) => {
                for name in names {
                    if !missing.contains(&name) {
                        missing.push(name);
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    if missing.is_empty() {
        Ok(filled)
    } else {
        Err(FillError::Missing(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_url_examples() {
        let t = "https://{subdomain}.zendesk.com/oauth/authorizations/new";
        let acme = |n: &str| (n == "subdomain").then(|| "acme".to_owned());
        assert_eq!(
            fill_url(t, &acme).unwrap(),
            "https://acme.zendesk.com/oauth/authorizations/new"
        );
        assert_eq!(
            fill_url(t, &|_| None),
            Err(FillError::Missing(vec!["subdomain".into()]))
        );
        let evil = |_: &str| Some("evil.com/x".to_owned());
        assert!(matches!(fill_url(t, &evil), Err(FillError::Invalid { .. })));
    }

    fn with<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn fills_host_path_and_query() {
        let t = "https://{subdomain}.example.com/{tenant}/auth?v={version}";
        let url = fill_url(
            t,
            &with(&[
                ("subdomain", "acme-1"),
                ("tenant", "a/b c"),
                ("version", "1&x=2"),
            ]),
        )
        .unwrap();
        assert_eq!(url, "https://acme-1.example.com/a%2Fb%20c/auth?v=1%26x%3D2");
    }

    #[test]
    fn names_every_missing_value_once() {
        let t = "https://{a}.example.com/{b}/{a}";
        assert_eq!(
            fill_url(t, &with(&[])),
            Err(FillError::Missing(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            fill_url(t, &with(&[("a", " "), ("b", "x")])),
            Err(FillError::Missing(vec!["a".into()]))
        );
        let all = fill_all(
            [
                ("https://{a}.example.com/x", true),
                ("{c}", false),
                ("https://x.test", true),
            ],
            &with(&[]),
        );
        assert_eq!(all, Err(FillError::Missing(vec!["a".into(), "c".into()])));
    }

    #[test]
    fn host_values_cannot_change_the_host() {
        let t = "https://{subdomain}.zendesk.com/oauth/tokens";
        for evil in [
            "evil.com/x",
            "a.b",
            "evil.com#",
            "x@evil.com",
            "evil.com:443",
            "-a",
            "a-",
            "a b",
            "é",
            "a%2eb",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(
                    fill_url(t, &with(&[("subdomain", evil)])),
                    Err(FillError::Invalid { .. })
                ),
                "{evil:?} was accepted"
            );
        }
        assert!(fill_url(t, &with(&[("subdomain", "Acme-2")])).is_ok());
    }

    #[test]
    fn path_values_cannot_climb() {
        let t = "https://login.example.com/{tenant}/oauth2";
        for bad in [".", ".."] {
            assert!(matches!(
                fill_url(t, &with(&[("tenant", bad)])),
                Err(FillError::Invalid { .. })
            ));
        }
        assert_eq!(
            fill_url(t, &with(&[("tenant", "../x")])).unwrap(),
            "https://login.example.com/..%2Fx/oauth2"
        );
    }

    #[test]
    fn placement_rules() {
        let ok = [
            "https://{subdomain}.zendesk.com/oauth/authorizations/new",
            "https://{account}.app.netsuite.com/x",
            "https://api.{region}.example.com:8443/{a}?b={c}",
            "https://login.example.com/{tenant}/oauth2/v2.0/authorize",
            "http://127.0.0.1:8080/{x}",
            "https://example.com/no/placeholders",
        ];
        for t in ok {
            assert!(parse_url(t).is_ok(), "{t}: {:?}", parse_url(t));
        }
        let bad = [
            ("http://{host}/x", "only allowed after `https://`"),
            ("https://{a}{b}.example.com", "follows another placeholder"),
            ("{scheme}://example.com", "whole origin"),
            ("https://example.com:{port}/x", "port"),
            ("https://{u}@example.com", "user information"),
            ("https://example.com/{a", "unmatched `{`"),
            ("https://example.com/a}", "unmatched `}`"),
            ("https://example.com/{a b}", "a name is"),
            ("https://example.com/{}", "a name is"),
            ("https://{a}..example.com", "empty label"),
        ];
        for (t, needle) in bad {
            let err = parse_url(t).expect_err(t);
            assert!(err.0.contains(needle), "{t}: {err}");
        }
    }

    fn position_of(t: &str, name: &str) -> Position {
        parse_url(t)
            .unwrap()
            .into_iter()
            .find_map(|p| match p {
                Piece::Placeholder { name: n, position } if n == name => Some(position),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn host_placeholders_are_placed_by_what_they_could_move() {
        use Position::*;
        for (t, name, want) in [
            ("https://{sub}.zendesk.com/x", "sub", Host),
            ("https://{host}/oauth/token", "host", WholeHost),
            ("https://{host}:8443/oauth/token", "host", WholeHost),
            (
                "https://accounts.zoho.{region_domain}/oauth",
                "region_domain",
                RestrictedHost,
            ),
            (
                "https://ca-{environment}.adyen.com/x",
                "environment",
                RestrictedHost,
            ),
            ("https://{a}.com/x", "a", RestrictedHost),
            ("https://x.{a}.com", "a", RestrictedHost),
            ("https://a{b}.example.com", "b", RestrictedHost),
        ] {
            assert_eq!(position_of(t, name), want, "{t}");
        }
    }

    #[test]
    fn restricted_and_whole_host_values_need_declarations() {
        let zoho = "https://accounts.zoho.{region_domain}/oauth/v2/token";
        let eu = with(&[("region_domain", "eu")]);
        // Without declarations (plain fill_url) they are refused.
        assert_eq!(
            fill_url(zoho, &eu),
            Err(FillError::Invalid {
                name: "region_domain".into(),
                reason: "no allowed values are declared for this placeholder of the host".into()
            })
        );
        let allowed = |_: &str, _: Position, v: &str| {
            ["com", "eu", "com.au"]
                .contains(&v)
                .then_some(())
                .ok_or_else(|| format!("must be one of com, eu, com.au (not {v:?})"))
        };
        assert_eq!(
            fill_url_checked(zoho, &eu, &allowed).unwrap(),
            "https://accounts.zoho.eu/oauth/v2/token"
        );
        assert_eq!(
            fill_url_checked(zoho, &with(&[("region_domain", "com.au")]), &allowed).unwrap(),
            "https://accounts.zoho.com.au/oauth/v2/token"
        );
        assert!(matches!(
            fill_url_checked(zoho, &with(&[("region_domain", "evil.test")]), &allowed),
            Err(FillError::Invalid { reason, .. }) if reason.contains("must be one of")
        ));
        let host = "https://{host}/realms/x/token";
        let any = |_: &str, _: Position, _: &str| Ok(());
        assert_eq!(
            fill_url_checked(host, &with(&[("host", "sso.acme.com")]), &any).unwrap(),
            "https://sso.acme.com/realms/x/token"
        );
        for (bad, needle) in [
            ("127.0.0.1", "IP address"),
            ("[::1]", "lower-case host name"),
            ("localhost", "single label"),
            ("a.localhost", "localhost"),
            ("intranet", "single label"),
            ("evil.com/x", "lower-case host name"),
            ("evil.com:1", "lower-case host name"),
            ("u@evil.com", "lower-case host name"),
            ("Evil.com", "lower-case host name"),
        ] {
            assert!(
                matches!(
                    fill_url_checked(host, &with(&[("host", bad)]), &any),
                    Err(FillError::Invalid { ref reason, .. }) if reason.contains(needle)
                ),
                "{bad}: {:?}",
                fill_url_checked(host, &with(&[("host", bad)]), &any)
            );
        }
        assert!(matches!(
            fill_url(host, &with(&[("host", "sso.acme.com")])),
            Err(FillError::Invalid { reason, .. }) if reason.contains("custom_host = true")
        ));
    }

    #[test]
    fn custom_hosts_respect_the_deployment_allow_list() {
        let list = ["acme.com".to_owned(), ".example.org".to_owned()];
        assert_eq!(check_custom_host("acme.com", &list), Ok(()));
        assert_eq!(check_custom_host("sso.acme.com", &list), Ok(()));
        assert_eq!(check_custom_host("a.b.example.org", &list), Ok(()));
        let err = check_custom_host("evilacme.com", &list).unwrap_err();
        assert!(err.contains("allowed_custom_hosts: acme.com"), "{err}");
        assert!(check_custom_host("acme.com.evil.test", &list).is_err());
    }

    #[test]
    fn lists_placeholders() {
        assert_eq!(
            placeholders("https://{a}.x.com/{b.c}?{a}"),
            ["a", "b.c", "a"]
        );
        assert!(placeholders("https://x.com").is_empty());
    }

    #[test]
    fn values_are_inserted_as_is() {
        assert_eq!(
            fill_value("api://{app}/.default x", &with(&[("app", "a b/c")])).unwrap(),
            "api://a b/c/.default x"
        );
    }
}
