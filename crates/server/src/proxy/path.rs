//! The path a caller asks the proxy for: refused when it could leave the
//! element's base URL, and mapped through the element's `[[resources]]`.

use elements_core::ResourceSpec;
use percent_encoding::percent_decode_str;

/// Why a requested path is refused (the 400's message).
pub fn check(tail: &str) -> Result<(), String> {
    let lower = tail.to_ascii_lowercase();
    if tail.starts_with('/') {
        return Err("the path must not start with `//`".into());
    }
    if tail.contains('\\') || lower.contains("%5c") {
        return Err("the path must not contain a backslash (`\\` or `%5C`)".into());
    }
    if lower.contains("%2f") {
        return Err("the path must not contain an encoded slash (`%2F`)".into());
    }
    if lower.contains("://") || lower.starts_with("http:") || lower.starts_with("https:") {
        return Err("the path must be relative to the element's API, not an absolute URL".into());
    }
    let decoded = percent_decode_str(tail).decode_utf8_lossy();
    if decoded.contains('@') {
        return Err("the path must not contain `@`".into());
    }
    if decoded.chars().any(char::is_control) {
        return Err("the path must not contain control characters".into());
    }
    if decoded.split('/').any(|s| s == ".." || s == ".") {
        return Err("the path must not contain `.` or `..` segments".into());
    }
    if decoded.contains("//") {
        return Err("the path must not contain empty segments (`//`)".into());
    }
    Ok(())
}

/// The provider path of the first resource matching `method` and `tail`
/// (without its leading `/`), its `{name}` segments carried over; `None`
/// when no resource matches (the path passes through unchanged).
pub fn map_resource(resources: &[ResourceSpec], method: &str, tail: &str) -> Option<String> {
    let got: Vec<&str> = tail.trim_end_matches('/').split('/').collect();
    for r in resources.iter().filter(|r| r.method == method) {
        let want: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
        if want.len() != got.len() {
            continue;
        }
        let mut bound: Vec<(&str, &str)> = Vec::new();
        let matched = want.iter().zip(&got).all(|(w, g)| {
            if let Some(name) = w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                bound.push((name, g));
                !g.is_empty()
            } else {
                w == g
            }
        });
        if !matched {
            continue;
        }
        let mapped = r
            .provider_path
            .trim_start_matches('/')
            .split('/')
            .map(|seg| {
                seg.strip_prefix('{')
                    .and_then(|s| s.strip_suffix('}'))
                    .and_then(|name| bound.iter().find(|(n, _)| *n == name))
                    .map_or(seg, |(_, v)| v)
            })
            .collect::<Vec<_>>()
            .join("/");
        return Some(mapped);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused_with_their_reason() {
        let cases = [
            ("../admin", "`..`"),
            ("a/%2e%2e/b", "`..`"),
            ("a%2Fb", "encoded slash"),
            ("a%5cb", "backslash"),
            ("a\\b", "backslash"),
            ("/evil.example/x", "`//`"),
            ("https://evil.example/x", "absolute URL"),
            ("user@evil.example", "`@`"),
            ("a%40b", "`@`"),
            ("a%0d%0aX: y", "control characters"),
            ("a//b", "empty segments"),
        ];
        for (path, reason) in cases {
            let err = check(path).unwrap_err();
            assert!(err.contains(reason), "{path}: {err}");
        }
        assert_eq!(check("crm/v3/objects/contacts"), Ok(()));
        assert_eq!(check(""), Ok(()));
    }

    #[test]
    fn resources_map_with_their_placeholders() {
        let r = |m: &str, p: &str, pp: &str| ResourceSpec {
            name: "contacts".into(),
            method: m.into(),
            path: p.into(),
            provider_path: pp.into(),
        };
        let rs = [
            r("GET", "/contacts", "/crm/v3/objects/contacts"),
            r("GET", "/contacts/{id}", "/crm/v3/objects/contacts/{id}"),
        ];
        assert_eq!(
            map_resource(&rs, "GET", "contacts/42").as_deref(),
            Some("crm/v3/objects/contacts/42")
        );
        assert_eq!(
            map_resource(&rs, "GET", "contacts").as_deref(),
            Some("crm/v3/objects/contacts")
        );
        assert_eq!(map_resource(&rs, "POST", "contacts"), None);
        assert_eq!(map_resource(&rs, "GET", "other"), None);
    }
}
