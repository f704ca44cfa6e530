//! Login rate limits per account and per client IP (GCRA, via governor), so password guessing
//! is slow whether it targets one account from many addresses or many accounts from one.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Keyed limiters for login attempts. Keys are forgotten once idle (see [`LoginLimiter::prune`]).
#[derive(Debug)]
pub struct LoginLimiter {
    per_account: DefaultKeyedRateLimiter<String>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
}

/// Which limit refused an attempt, and how long until it would pass.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// `account` or `ip`.
    pub reason: &'static str,
    /// When to retry.
    pub retry_after: Duration,
}

fn quota(per_minute: u32) -> Quota {
    let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(n).allow_burst(n)
}

impl LoginLimiter {
    /// Limits of `per_account` and `per_ip` attempts per minute (each also the burst size).
    pub fn new(per_account: u32, per_ip: u32) -> Self {
        Self { per_account: RateLimiter::keyed(quota(per_account)), per_ip: RateLimiter::keyed(quota(per_ip)) }
    }

    /// Takes one attempt for this account and address, or says which limit refuses it.
    pub fn check(&self, account: &str, ip: IpAddr) -> Result<(), Refused> {
        let now = DefaultClock::default().now();
        if let Err(not_until) = self.per_ip.check_key(&ip) {
            return Err(Refused { reason: "ip", retry_after: not_until.wait_time_from(now) });
        }
        if let Err(not_until) = self.per_account.check_key(&account.to_owned()) {
            return Err(Refused { reason: "account", retry_after: not_until.wait_time_from(now) });
        }
        Ok(())
    }

    /// Forgets keys whose limits have fully recovered; run periodically to bound memory.
    pub fn prune(&self) {
        self.per_account.retain_recent();
        self.per_ip.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_limited_across_addresses_and_an_address_across_accounts() {
        let l = LoginLimiter::new(3, 5);
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        for n in 0..3 {
            assert!(l.check("alice", ip(n)).is_ok());
        }
        let refused = l.check("alice", ip(9)).unwrap_err();
        assert_eq!(refused.reason, "account");
        assert!(refused.retry_after > Duration::ZERO);
        // ip(1) has made one attempt; four more accounts take it to its limit of five.
        for name in ["b1", "b2", "b3", "b4"] {
            assert!(l.check(name, ip(1)).is_ok());
        }
        assert_eq!(l.check("b5", ip(1)).unwrap_err().reason, "ip");
    }
}
