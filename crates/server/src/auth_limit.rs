//! A per-client-address limit on failed authentications.
//!
//! Every 401 spends one unit of the client address's budget (a GCRA
//! limiter: `auth_failure_burst` at once, `auth_failures_per_minute`
//! replenished). Once the budget is spent the address is locked out until
//! the next unit is due: every request from it that carries an
//! `Authorization` header is answered 429 with `Retry-After` without being
//! checked — **a correct credential included**, or a guesser would learn
//! from a 200-versus-429 which guess was right. Requests without
//! credentials (the public catalog) are never refused, and successful
//! authentications spend nothing.
//!
//! The address is the TCP peer's (IPv6 by its /64 prefix, which one host
//! usually owns whole); `X-Forwarded-For` is not trusted. Behind a reverse
//! proxy every client shares the proxy's address: raise the budget or turn
//! the limiter off (`auth_failure_burst = 0`) there.
//!
//! Memory stays bounded: idle entries are dropped (`retain_recent`) every
//! [`PRUNE_EVERY`] failures, expired lockouts whenever the table grows past
//! [`MAX_LOCKOUTS`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};

/// Failures between two sweeps of idle limiter entries.
pub const PRUNE_EVERY: u64 = 1024;
/// Lockouts kept before expired ones are swept.
pub const MAX_LOCKOUTS: usize = 100_000;

/// The limiter; `None` inside when turned off.
pub struct AuthLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    lockouts: Mutex<HashMap<IpAddr, Instant>>,
    failures: AtomicU64,
}

impl std::fmt::Debug for AuthLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLimiter")
            .field("enabled", &self.limiter.is_some())
            .finish()
    }
}

impl AuthLimiter {
    /// `burst` failures at once, `per_minute` replenished; `burst == 0`
    /// turns the limiter off.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        let limiter = NonZeroU32::new(burst).map(|burst| {
            let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
            DefaultKeyedRateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst))
        });
        AuthLimiter {
            limiter,
            lockouts: Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
        }
    }

    /// The key of a client address: IPv4 as is (also when IPv4-mapped),
    /// IPv6 by its /64 prefix.
    pub fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
        }
    }

    /// Seconds left of the address's lockout, if it is locked out.
    pub fn locked(&self, ip: IpAddr) -> Option<u64> {
        self.limiter.as_ref()?;
        let key = Self::key(ip);
        let mut lockouts = self.lockouts.lock().unwrap_or_else(|e| e.into_inner());
        let until = *lockouts.get(&key)?;
        let now = Instant::now();
        if until <= now {
            lockouts.remove(&key);
            return None;
        }
        Some(seconds(until - now))
    }

    /// Records a failed authentication; `Some(seconds)` when it spent the
    /// last of the budget (the address is now locked out).
    pub fn failed(&self, ip: IpAddr) -> Option<u64> {
        let limiter = self.limiter.as_ref()?;
        let key = Self::key(ip);
        if self.failures.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let not_until = limiter.check_key(&key).err()?;
        let wait = not_until
            .wait_time_from(limiter.clock().now())
            .max(Duration::from_secs(1));
        let mut lockouts = self.lockouts.lock().unwrap_or_else(|e| e.into_inner());
        if lockouts.len() >= MAX_LOCKOUTS {
            let now = Instant::now();
            lockouts.retain(|_, until| *until > now);
        }
        lockouts.insert(key, Instant::now() + wait);
        tracing::warn!(
            client = %key,
            retry_after_seconds = seconds(wait),
            "too many failed authentications: client address locked out"
        );
        Some(seconds(wait))
    }
}

/// Whole seconds, rounded up, at least 1.
fn seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_then_a_lockout_for_that_address_only() {
        let limiter = AuthLimiter::new(3, 1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(limiter.failed(a), None);
        assert_eq!(limiter.failed(a), None);
        assert_eq!(limiter.locked(a), None);
        assert_eq!(limiter.failed(a), None);
        let retry = limiter.failed(a).expect("the fourth failure locks out");
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(limiter.locked(a).is_some());
        assert_eq!(limiter.locked(b), None);
        assert_eq!(limiter.failed(b), None);
    }

    #[test]
    fn ipv6_by_prefix_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(AuthLimiter::key(one), AuthLimiter::key(two));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            AuthLimiter::key(mapped),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn zero_burst_turns_it_off() {
        let limiter = AuthLimiter::new(0, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            assert_eq!(limiter.failed(a), None);
        }
        assert_eq!(limiter.locked(a), None);
    }
}
