//! Which webhook URLs are accepted and which addresses are delivered to.
//!
//! A URL is `https` (or `http` when the deployment allows private
//! addresses), has a host and no user info. Unless the deployment allows
//! them, no private, loopback, link-local, unspecified, multicast or
//! otherwise non-global address is delivered to: literal addresses are
//! refused when the webhook is created, and host names are resolved by
//! [`FilteringResolver`] on every delivery, which drops such addresses, so
//! the connection goes to an address that was checked (no DNS rebinding
//! between the check and the connect).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The longest URL accepted.
pub const MAX_URL: usize = 2048;

/// Checks a webhook URL; the error names what is wrong.
pub fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, String> {
    if raw.len() > MAX_URL {
        return Err(format!("`url` is longer than {MAX_URL} characters"));
    }
    let url =
        url::Url::parse(raw).map_err(|e| format!("`url` is not a valid absolute URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => {
            return Err(
                "`url` must use https (plain http is allowed only when the deployment \
                        allows private webhook addresses)"
                    .into(),
            )
        }
        other => return Err(format!("`url` must use https, not `{other}`")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("`url` must not contain user info (`user:password@`)".into());
    }
    if url.fragment().is_some() {
        return Err("`url` must not contain a fragment (`#...`)".into());
    }
    let forbidden = match url.host() {
        None => return Err("`url` has no host".into()),
        Some(url::Host::Ipv4(ip)) => !is_global(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_global(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    };
    if forbidden && !allow_private {
        return Err(
            "`url` points at a private, loopback or link-local address; \
                    webhooks are delivered only to public addresses"
                .into(),
        );
    }
    Ok(url)
}

/// Whether an address may be delivered to without `allow_private`.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x2002)) // 6to4 (embeds any IPv4)
        }
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240) // reserved
}

/// A resolver that drops non-global addresses (unless allowed); a name
/// left with none fails to resolve, naming why.
#[derive(Debug, Clone)]
pub struct FilteringResolver {
    /// Keep private addresses too.
    pub allow_private: bool,
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_global(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "`{host}` resolves to no public address (private, loopback and link-local \
                     addresses are not delivered to)"
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// Whether a literal IP host of `url` may be delivered to (the resolver is
/// not asked about literal addresses).
pub fn literal_allowed(url: &url::Url, allow_private: bool) -> bool {
    allow_private
        || match url.host() {
            Some(url::Host::Ipv4(ip)) => is_global(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => is_global(IpAddr::V6(ip)),
            _ => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("https://app.example/hooks", false).is_ok());
        for (bad, says) in [
            ("http://app.example/hooks", "https"),
            ("ftp://app.example/", "`ftp`"),
            ("https://u:p@app.example/", "user info"),
            ("https://127.0.0.1/", "private"),
            ("https://[::1]/", "private"),
            ("https://10.1.2.3/", "private"),
            ("https://169.254.169.254/", "private"),
            ("https://[::ffff:127.0.0.1]/", "private"),
            ("https://localhost:8080/", "private"),
            ("not a url", "not a valid"),
        ] {
            let e = check_url(bad, false).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(check_url("http://127.0.0.1:9/", true).is_ok());
        assert!(is_global("8.8.8.8".parse().unwrap()));
        assert!(!is_global("fd00::1".parse().unwrap()));
        assert!(!is_global("100.64.0.1".parse().unwrap()));
    }
}
