//! The common case of [`crate::standard::check_callback_url`] without a
//! URL parse (issue 19: `url::Url::parse` was a third of the HubSpot
//! `oauth/url` handler's samples, the seed's own `http://demonstrab.ly`
//! included).
//!
//! [`plainly_valid`] answers `true` only for a URL the full check accepts:
//! a lower-case `http://` or `https://`, a host of plain DNS labels whose
//! last label starts with a letter (so the URL standard cannot read it as
//! an IPv4 address), an optional port of at most 65535, and a path and
//! query of characters that need no escaping or decoding decision. Anything
//! else (upper-case schemes, IP addresses, `xn--` labels, user information,
//! percent signs in the host, fragments, ...) answers `false` and gets the
//! full check. The tests hold the fast path to the full check on generated
//! URLs.

/// Whether `raw` is certainly a URL the full callback check accepts.
pub(crate) fn plainly_valid(raw: &str) -> bool {
    let rest = if let Some(rest) = raw.strip_prefix("https://") {
        rest
    } else if let Some(rest) = raw.strip_prefix("http://") {
        rest
    } else {
        return false;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    plain_host(host) && port.is_none_or(plain_port) && tail.bytes().all(plain_tail_byte)
}

/// Dot-separated labels of letters, digits and hyphens, none empty, none
/// an IDNA `xn--` label, the last one starting with a letter.
fn plain_host(host: &str) -> bool {
    let mut last = "";
    for label in host.split('.') {
        let plain = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label
                .get(..4)
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case("xn--"));
        if !plain {
            return false;
        }
        last = label;
    }
    last.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
}

/// One to five digits, at most 65535.
fn plain_port(port: &str) -> bool {
    (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| p <= 65_535)
}

/// A path or query byte the URL standard keeps as it is (no escaping, no
/// dot segment, no backslash, no percent sign, no fragment).
fn plain_tail_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'?' | b'=' | b'&' | b'-' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standard::check_callback_url_parsed as check_callback_url;
    use proptest::prelude::*;

    #[test]
    fn the_usual_callbacks_take_the_fast_path() {
        for url in [
            "http://demonstrab.ly",
            "https://app.test:8443/cb?x=1",
            "https://my-app.example.com/oauth/callback",
            "http://localhost:3000/auth/hubspot/callback?next=home",
            "https://www.samplecallbackurl.com",
        ] {
            assert!(plainly_valid(url), "{url}");
            assert!(check_callback_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn anything_unusual_gets_the_full_check() {
        for url in [
            "HTTPS://app.test/cb",
            "https://127.0.0.1/cb",
            "https://0x7f.1/cb",
            "https://1.2.3.4.5/cb",
            "https://app.123/cb",
            "https://xn--nxasmq6b.example/cb",
            "https://user@app.test/cb",
            "https://app.test/cb#frag",
            "https://app.test/a/../b",
            "https://app.test/%2e%2e/b",
            "https://app%2etest/cb",
            "https://app.test:99999/cb",
            "https://app.test:/cb",
            "https://app..test/cb",
            "https://app.test./cb",
            "https:///app.test",
            "https://",
            "https://[::1]/cb",
            "https://app.test\\cb",
            "http:/app.test",
        ] {
            assert!(!plainly_valid(url), "{url}");
        }
    }

    /// URL-ish strings from pieces chosen to hit the rules' edges.
    fn urlish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("http://"),
            Just("https://"),
            Just("HTTP://"),
            Just("a"),
            Just("Z"),
            Just("0"),
            Just("9"),
            Just("0x"),
            Just("xn--"),
            Just("-"),
            Just("."),
            Just(":"),
            Just("/"),
            Just("?"),
            Just("="),
            Just("&"),
            Just("_"),
            Just("~"),
            Just("%"),
            Just("%2e"),
            Just("#"),
            Just("@"),
            Just("\\"),
            Just(" "),
            Just("\t"),
            Just("é"),
            Just("65535"),
            Just("65536"),
            Just("[::1]"),
            Just("localhost"),
            Just("example"),
            Just("com"),
        ];
        (
            prop_oneof![Just("http://"), Just("https://")],
            prop::collection::vec(piece, 0..14),
        )
            .prop_map(|(scheme, pieces)| format!("{scheme}{}", pieces.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        /// The fast path never accepts what the full check refuses.
        #[test]
        fn the_fast_path_accepts_only_what_the_full_check_accepts(url in urlish()) {
            if plainly_valid(&url) {
                prop_assert!(check_callback_url(&url).is_ok(), "{}", url);
            }
        }
    }
}
