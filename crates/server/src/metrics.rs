//! This instance's Prometheus registry and the HTTP (RED) and auth metrics it holds.
//!
//! Each app instance owns its registry (as crates.io does) rather than using a process-global
//! recorder: tests start many instances in one process and must read each one's own numbers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use flashback_core::breaker::BreakerState;
use flashback_infra::CacheMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabel {
    pub dependency: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// All metrics of one instance.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by method, route template and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by method and route template.
    pub latency: HistogramFamily,
    /// Requests being handled now.
    pub in_flight: Gauge,
    /// Requests refused by the server's own protections, by reason.
    pub shed: Family<ReasonLabel, Counter>,
    /// Login attempts refused, by reason.
    pub login_rejected: Family<ReasonLabel, Counter>,
    /// Flash-sale purchase attempts by outcome (`accepted` or the reason refused).
    pub flash_admission: Family<ReasonLabel, Counter>,
    /// Rebate order rows changed, by the state they moved to.
    pub rebate_rows: Family<ReasonLabel, Counter>,
    /// Rebate inputs refused (kept for review), by reason.
    pub rebate_rejected: Family<ReasonLabel, Counter>,
    /// Lines that disagree with the last reconciled settlement report, by kind.
    pub rebate_reconciliation: Family<ReasonLabel, Gauge>,
    /// The network's total minus ours in the last reconciled report, minor units.
    pub rebate_reconciliation_gap: Gauge,
    /// Tracking events by outcome: `accepted`, or why they were not (`bot`, `duplicate`,
    /// `invalid`, `rate_limited`, `queue_full`).
    pub track_events: Family<ReasonLabel, Counter>,
    /// Tracking events the writer stored in daily tables (duplicates excluded).
    pub track_written: Counter,
    /// Tracking events queued and not yet written.
    pub track_backlog: Gauge,
    /// 1 while this instance holds the lease on a job (see `crate::lease`), else 0.
    pub leases_held: Family<JobLabel, Gauge>,
    /// Each dependency's circuit breaker: 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<DependencyLabel, Gauge>,
    /// Each dependency's last health check: 1 up, 0 down.
    pub dependency_up: Family<DependencyLabel, Gauge>,
    /// 1 while the instance serves without a dependency it can do without.
    pub degraded: Gauge,
    /// Outbox events not yet dispatched, over every shard this instance reads.
    pub outbox_pending: Gauge,
    /// Accepted flash-sale purchases still only in the memory engine's journal.
    pub flash_journal_pending: Gauge,
    /// Messages waiting in the dead-letter queue (RabbitMQ only).
    pub dead_letters: Gauge,
    /// Cache counters, shared with the caches.
    pub cache: CacheMetrics,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("flashback_http_requests", "HTTP requests by route and status", requests.clone());
        let latency = HistogramFamily::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("flashback_http_request_duration_seconds", "HTTP request latency", latency.clone());
        let in_flight = Gauge::default();
        registry.register("flashback_http_requests_in_flight", "Requests being handled", in_flight.clone());
        let shed = Family::<ReasonLabel, Counter>::default();
        registry.register("flashback_http_shed", "Requests refused with 503 to protect the server", shed.clone());
        let login_rejected = Family::<ReasonLabel, Counter>::default();
        registry.register("flashback_auth_login_rejected", "Refused logins by reason", login_rejected.clone());
        let flash_admission = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "flashback_flash_admission",
            "Flash-sale purchase attempts by outcome: accepted, or the reason refused",
            flash_admission.clone(),
        );
        let rebate_rows = Family::<ReasonLabel, Counter>::default();
        registry.register("flashback_rebate_rows", "Rebate order rows changed, by new state", rebate_rows.clone());
        let rebate_rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "flashback_rebate_rejected",
            "Rebate inputs refused and kept for review",
            rebate_rejected.clone(),
        );
        let rebate_reconciliation = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "flashback_rebate_reconciliation_differences",
            "Lines disagreeing with the last reconciled settlement report, by kind",
            rebate_reconciliation.clone(),
        );
        let rebate_reconciliation_gap = Gauge::default();
        registry.register(
            "flashback_rebate_reconciliation_gap_minor",
            "The network's settled total minus ours in the last reconciled report",
            rebate_reconciliation_gap.clone(),
        );
        let track_events = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "flashback_track_events",
            "Tracking events by outcome: accepted, or the reason dropped or refused",
            track_events.clone(),
        );
        let track_written = Counter::default();
        registry.register("flashback_track_written", "Tracking events stored by the writer", track_written.clone());
        let track_backlog = Gauge::default();
        registry.register(
            "flashback_track_backlog",
            "Tracking events queued and not yet written",
            track_backlog.clone(),
        );
        let leases_held = Family::<JobLabel, Gauge>::default();
        registry.register(
            "flashback_lease_held",
            "1 while this instance holds the lease on a periodic job (sweeper, rebate-sweep, taobao-poller)",
            leases_held.clone(),
        );
        let breaker_state = Family::<DependencyLabel, Gauge>::default();
        registry.register(
            "flashback_breaker_state",
            "Circuit breaker of each dependency: 0 closed, 1 open (failing fast), 2 half-open (probing)",
            breaker_state.clone(),
        );
        let dependency_up = Family::<DependencyLabel, Gauge>::default();
        registry.register(
            "flashback_dependency_up",
            "Each dependency as last checked: 1 up, 0 down",
            dependency_up.clone(),
        );
        let degraded = Gauge::default();
        registry.register(
            "flashback_degraded",
            "1 while this instance serves with a dependency it can do without down",
            degraded.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "flashback_outbox_pending",
            "Outbox events not yet dispatched, over every order shard",
            outbox_pending.clone(),
        );
        let flash_journal_pending = Gauge::default();
        registry.register(
            "flashback_flash_journal_pending",
            "Accepted flash-sale purchases still only in the memory engine's journal",
            flash_journal_pending.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "flashback_events_dead_letters",
            "Messages waiting in the dead-letter queue (RabbitMQ only)",
            dead_letters.clone(),
        );
        let cache = CacheMetrics::register(&mut registry);
        Self {
            registry,
            requests,
            latency,
            in_flight,
            shed,
            login_rejected,
            flash_admission,
            rebate_rows,
            rebate_rejected,
            rebate_reconciliation,
            rebate_reconciliation_gap,
            track_events,
            track_written,
            track_backlog,
            leases_held,
            breaker_state,
            dependency_up,
            degraded,
            outbox_pending,
            flash_journal_pending,
            dead_letters,
            cache,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Exports `breaker`'s state in `flashback_breaker_state` and logs each change.
    pub fn watch_breaker(&self, breaker: &flashback_core::breaker::Breaker) {
        let gauge = self.breaker_state.clone();
        breaker.observe(Box::new(move |name, state| {
            let was = gauge.get_or_create(&DependencyLabel { dependency: name.to_owned() }).set(state as i64);
            match state {
                BreakerState::Open if was == BreakerState::Closed as i64 => {
                    tracing::warn!(dependency = name, "circuit breaker open: failing fast")
                }
                BreakerState::Closed if was != BreakerState::Closed as i64 => {
                    tracing::info!(dependency = name, "circuit breaker closed: calls go through again")
                }
                _ => {}
            }
        }));
    }

    /// Counts one refusal of `reason`.
    pub fn shed(&self, reason: &'static str) {
        self.shed.get_or_create(&ReasonLabel { reason }).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
