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
pub fn parse_url(template: &str) -> Result<Vec<Piece<'_>>, SyntaxError> {
    let pieces = split(template)?;
    // Walk the literal text to know where each placeholder stands. A
    // placeholder counts as one opaque character of the part it is in.
    let mut position = Position::Scheme;
    let mut scheme_seen = String::new();
    let mut out = Vec::with_capacity(pieces.len());
    // Host labels: `true` for a label holding a placeholder (which must be the
    // whole label), for the "last two labels are literal" rule.
    let mut labels: Vec<(bool, bool)> = vec![(false, false)]; // (has placeholder, has literal)
    for piece in pieces {
        match piece {
            Piece::Literal(text) => {
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
                            _ => {
                                let label = labels.last_mut().expect("one label at least");
                                if label.0 {
                                    return Err(SyntaxError(
                                        "a placeholder in the host must be a whole label \
                                         (e.g. `https://{subdomain}.example.com`)"
                                            .into(),
                                    ));
                                }
                                label.1 = true;
                            }
                        },
                        Position::Port => match c {
                            '/' => position = Position::Path,
                            '?' => position = Position::Query,
                            _ => {}
                        },
                        Position::Path => {
                            if c == '?' {
                                position = Position::Query;
                            }
                        }
                        Position::Query | Position::Value => {}
                    }
                }
                out.push(Piece::Literal(text));
            }
            Piece::Placeholder { name, .. } => {
                match position {
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
                        if label.0 || label.1 {
                            return Err(SyntaxError(format!(
                                "placeholder `{{{name}}}` must be a whole label of the host \
                                 (e.g. `https://{{{name}}}.example.com`)"
                            )));
                        }
                        label.0 = true;
                    }
                    _ => {}
                }
                out.push(Piece::Placeholder { name, position });
            }
        }
    }
    if labels.iter().any(|l| l.0) {
        let literal_tail = labels.iter().rev().take_while(|l| !l.0).count();
        if literal_tail < 2 {
            return Err(SyntaxError(
                "the last two labels of a host with placeholders must be literal \
                 (e.g. `{subdomain}.example.com`), so a value cannot choose the domain"
                    .into(),
            ));
        }
    }
    Ok(out)
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

fn fill(
    pieces: &[Piece<'_>],
    lookup: &dyn Fn(&str) -> Option<String>,
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
                match position {
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
pub fn fill_url(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, FillError> {
    if !template.contains(['{', '}']) {
        return Ok(template.to_owned());
    }
    let pieces = parse_url(template).map_err(FillError::Syntax)?;
    fill(&pieces, lookup)
}

/// Fills a parameter-value template; values are inserted as is.
pub fn fill_value(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, FillError> {
    if !template.contains(['{', '}']) {
        return Ok(template.to_owned());
    }
    let pieces = parse_value(template).map_err(FillError::Syntax)?;
    fill(&pieces, lookup)
}

/// Fills several templates at once, so that the missing names of all of them
/// are reported together. Each item is (template, is a URL).
pub fn fill_all<'t>(
    templates: impl IntoIterator<Item = (&'t str, bool)>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, FillError> {
    let mut filled = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for (template, is_url) in templates {
        let result = if is_url {
            fill_url(template, lookup)
        } else {
            fill_value(template, lookup)
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
            ("https://{host}/x", "last two labels"),
            ("https://{a}.com/x", "last two labels"),
            ("https://x.{a}.com", "last two labels"),
            ("https://a{b}.example.com", "whole label"),
            ("https://{b}a.example.com", "whole label"),
            ("https://{a}{b}.example.com", "whole label"),
            ("{scheme}://example.com", "scheme"),
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
