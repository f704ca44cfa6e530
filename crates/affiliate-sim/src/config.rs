//! What the simulated network is: its data set's shape, its credentials and limits, where it
//! pushes postbacks, and its clock.

use std::fmt;
use std::time::Duration;

use crate::clock::SimClock;

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// One day in milliseconds.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The simulated network. Everything in the data set follows from `seed` and the fields up to
/// `claimable_share`; the rest is how the network serves it.
#[derive(Clone)]
pub struct SimConfig {
    /// Seeds every random choice.
    pub seed: u64,
    /// How many line items (orders) the data set has.
    pub orders: usize,
    /// When the data set's first click can happen (Unix ms).
    pub epoch_ms: i64,
    /// Clicks are spread evenly over `[epoch_ms, epoch_ms + span_ms)`.
    pub span_ms: i64,
    /// Our users' tracking ids; attributed orders pick one uniformly.
    pub tracking_ids: Vec<TrackingId>,
    /// Fraction of orders carrying a relation/special id that is not ours.
    pub unattributed_share: f64,
    /// Fraction of orders with no relation/special id at all (a user may claim them by order
    /// number).
    pub claimable_share: f64,
    /// The TOP app key callers must send.
    pub app_key: String,
    /// The TOP app secret requests are signed with.
    pub app_secret: String,
    /// The longest `start_time..end_time` window a feed query may ask for (TOP: 3 hours).
    pub max_window_ms: i64,
    /// The largest `page_size` (TOP: 100).
    pub max_page_size: u32,
    /// Our media id (`site_id`, the "2" in `mm_1_2_3`).
    pub site_id: u64,
    /// The ad zone of orders without one of our tracking ids.
    pub default_adzone_id: u64,
    /// Where and how to push postbacks; `None`: no postbacks.
    pub postback: Option<PostbackConfig>,
    /// The network's clock (a shared handle).
    pub time: SimClock,
}

impl Default for SimConfig {
    /// 500 orders from 2025-06-01 00:00 Beijing over 30 days, four users (two relation ids,
    /// two special ids), 10 % unattributed, 10 % claimable, a clock frozen at the epoch.
    fn default() -> Self {
        let epoch_ms = DEFAULT_EPOCH_MS;
        SimConfig {
            seed: 1,
            orders: 500,
            epoch_ms,
            span_ms: 30 * DAY_MS,
            tracking_ids: vec![
                TrackingId::relation(2_700_000_001, 110_000_000_101),
                TrackingId::relation(2_700_000_002, 110_000_000_101),
                TrackingId::special(3_300_000_001, 110_000_000_102),
                TrackingId::special(3_300_000_002, 110_000_000_102),
            ],
            unattributed_share: 0.1,
            claimable_share: 0.1,
            app_key: "flashback-sim".to_owned(),
            app_secret: "flashback-sim-secret".to_owned(),
            max_window_ms: 3 * HOUR_MS,
            max_page_size: 100,
            site_id: 2_024_060_001,
            default_adzone_id: 110_000_000_100,
            postback: None,
            time: SimClock::fixed(epoch_ms),
        }
    }
}

/// 2025-06-01 00:00:00 in Beijing, the default epoch.
pub const DEFAULT_EPOCH_MS: i64 = 1_748_707_200_000;

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("seed", &self.seed)
            .field("orders", &self.orders)
            .field("epoch_ms", &self.epoch_ms)
            .field("span_ms", &self.span_ms)
            .field("tracking_ids", &self.tracking_ids)
            .field("unattributed_share", &self.unattributed_share)
            .field("claimable_share", &self.claimable_share)
            .field("app_key", &self.app_key)
            .field("app_secret", &"<redacted>")
            .field("max_window_ms", &self.max_window_ms)
            .field("max_page_size", &self.max_page_size)
            .field("site_id", &self.site_id)
            .field("default_adzone_id", &self.default_adzone_id)
            .field("postback", &self.postback)
            .field("time", &self.time.now_ms())
            .finish()
    }
}

/// A configuration the network cannot run with.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid simulator config: {0}")]
pub struct ConfigError(pub String);

impl SimConfig {
    /// Checks the ranges `start` relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError(what.to_owned()));
        let share = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if self.orders > 10_000_000 {
            return bad("orders must be at most 10,000,000");
        }
        if self.span_ms < 1000 {
            return bad("span_ms must be at least 1000");
        }
        if !share(self.unattributed_share)
            || !share(self.claimable_share)
            || self.unattributed_share + self.claimable_share > 1.0
        {
            return bad("unattributed_share and claimable_share must be in [0, 1] and sum to at most 1");
        }
        if self.app_key.is_empty() || self.app_secret.is_empty() {
            return bad("app_key and app_secret must not be empty");
        }
        if self.max_window_ms < 1000 {
            return bad("max_window_ms must be at least 1000");
        }
        if self.max_page_size == 0 {
            return bad("max_page_size must be positive");
        }
        if let Some(postback) = &self.postback {
            if !share(postback.share) || !share(postback.duplicate_share) {
                return bad("postback share and duplicate_share must be in [0, 1]");
            }
            if postback.max_attempts == 0 {
                return bad("postback max_attempts must be positive");
            }
            if url::Url::parse(&postback.url).is_err() {
                return bad("postback url must be an absolute URL");
            }
        }
        Ok(())
    }
}

/// One of our users' tracking ids, as the network knows them. TOP types both ids as 64-bit
/// numbers (they are assigned by the network when a user authorises our app).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackingId {
    /// A channel relation id (渠道关系 id), reported in `relation_id`.
    Relation {
        /// The relation id.
        relation_id: u64,
        /// The ad zone the user's links use.
        adzone_id: u64,
    },
    /// A member-operations id (会员运营 id), reported in `special_id`.
    Special {
        /// The special id.
        special_id: u64,
        /// The ad zone the user's links use.
        adzone_id: u64,
    },
}

impl TrackingId {
    /// A relation id on `adzone_id`.
    pub fn relation(relation_id: u64, adzone_id: u64) -> Self {
        TrackingId::Relation { relation_id, adzone_id }
    }

    /// A special id on `adzone_id`.
    pub fn special(special_id: u64, adzone_id: u64) -> Self {
        TrackingId::Special { special_id, adzone_id }
    }

    /// The relation id, if this is one.
    pub fn relation_id(&self) -> Option<u64> {
        match *self {
            TrackingId::Relation { relation_id, .. } => Some(relation_id),
            TrackingId::Special { .. } => None,
        }
    }

    /// The special id, if this is one.
    pub fn special_id(&self) -> Option<u64> {
        match *self {
            TrackingId::Special { special_id, .. } => Some(special_id),
            TrackingId::Relation { .. } => None,
        }
    }

    /// The ad zone.
    pub fn adzone_id(&self) -> u64 {
        match *self {
            TrackingId::Relation { adzone_id, .. } | TrackingId::Special { adzone_id, .. } => adzone_id,
        }
    }
}

/// Where the network pushes order events, and how hard it tries.
#[derive(Clone)]
pub struct PostbackConfig {
    /// Absolute URL each event is POSTed to.
    pub url: String,
    /// The shared secret of `X-Affiliate-Signature`.
    pub secret: String,
    /// Fraction of orders whose events are pushed (1.0: all).
    pub share: f64,
    /// Fraction of pushed events delivered twice (default 0.05).
    pub duplicate_share: f64,
    /// Attempts per delivery before giving up on it (default 5).
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles per attempt, at most 10 s (default 100 ms).
    pub initial_backoff: Duration,
    /// Timeout of one attempt (default 5 s).
    pub request_timeout: Duration,
    /// How often the background pusher looks for due events when the clock is not moved
    /// (default 200 ms; a clock change wakes it at once).
    pub tick: Duration,
}

impl PostbackConfig {
    /// Pushes every order's events to `url`, signed with `secret`, with the defaults above.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        PostbackConfig {
            url: url.into(),
            secret: secret.into(),
            share: 1.0,
            duplicate_share: 0.05,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            tick: Duration::from_millis(200),
        }
    }
}

impl fmt::Debug for PostbackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostbackConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("share", &self.share)
            .field("duplicate_share", &self.duplicate_share)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("request_timeout", &self.request_timeout)
            .field("tick", &self.tick)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::format_beijing;

    #[test]
    fn the_default_epoch_is_midnight_in_beijing() {
        assert_eq!(format_beijing(DEFAULT_EPOCH_MS), "2025-06-01 00:00:00");
        assert_eq!(SimConfig::default().validate(), Ok(()));
    }

    #[test]
    fn shares_that_do_not_fit_are_rejected() {
        let config = SimConfig { unattributed_share: 0.7, claimable_share: 0.5, ..SimConfig::default() };
        assert!(config.validate().is_err());
    }
}
