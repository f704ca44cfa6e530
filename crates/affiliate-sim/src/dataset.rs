//! The data set: every order's full timeline, made deterministically from the config's seed.
//!
//! Each parent order (`trade_parent_id`) has one to three line items (`trade_id`; a parent with
//! one item reuses its id, as Taobao does). A line item is clicked, created and paid, then
//! either invalidated soon after, or received and later settled; a few settled ones are
//! refunded afterwards. Draws come from independent streams per parent, per item and per
//! feature, so changing, say, the postback share never changes an order.

use std::collections::HashSet;

use crate::catalogue::CATALOGUE;
use crate::config::{DAY_MS, HOUR_MS, SimConfig, TrackingId};
use crate::rng::{Rng, mix, stream};

const MINUTE_MS: i64 = 60_000;
const SECOND_MS: i64 = 1000;

/// Probability that a line item is invalidated (tk_status 13) after payment.
pub const INVALID_SHARE: f64 = 0.12;
/// Probability that a settled line item is refunded afterwards.
pub const REFUND_SHARE: f64 = 0.08;
/// Probability that a line item's settled fee differs from its estimate.
pub const FEE_ADJUSTED_SHARE: f64 = 0.2;
/// Probability that a line item is served as a stale snapshot to `query_type=1`.
pub const STALE_SHARE: f64 = 0.05;
/// Probability that an order's events are reported late.
pub const LATE_SHARE: f64 = 0.05;
/// Probability that a settled line item's fee differs in the settlement report.
pub const REPORT_DIFFERENCE_SHARE: f64 = 0.03;

/// One line item with its whole life.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOrder {
    /// Position in the data set (ordered by click time, then trade id).
    pub index: usize,
    /// `trade_id`: the line item's key, unique. Rendered as a string on the order feed.
    pub trade_id: u64,
    /// `trade_parent_id`: the buyer's order; shared by its line items.
    pub trade_parent_id: u64,
    /// `item_id`.
    pub item_id: u64,
    /// `item_title`.
    pub item_title: String,
    /// `item_price`: unit price, fen.
    pub item_price_fen: i64,
    /// `item_num`.
    pub item_num: u32,
    /// `order_type`: `"天猫"` or `"淘宝"`.
    pub order_type: String,
    /// `alipay_total_price`: what the buyer paid for the line (after coupons), fen.
    pub alipay_total_price_fen: i64,
    /// `total_commission_rate`, in 1/10000 (`500` is `"0.0500"`).
    pub commission_rate_bp: u32,
    /// `pub_share_pre_fee`: the estimate at payment, fen (`alipay_total_price × rate`, floored).
    pub pub_share_pre_fee_fen: i64,
    /// `pub_share_fee` once settled, fen (0 for items that never settle). Sometimes below the
    /// estimate; never above it.
    pub settled_fee_fen: i64,
    /// Whose order this is.
    pub attribution: Attribution,
    /// `relation_id` as reported (absent for claimable orders).
    pub relation_id: Option<u64>,
    /// `special_id` as reported.
    pub special_id: Option<u64>,
    /// `adzone_id`.
    pub adzone_id: u64,
    /// `site_id`.
    pub site_id: u64,
    /// `click_time` (Unix ms, whole seconds like every time here).
    pub click_time_ms: i64,
    /// `tk_create_time`.
    pub tk_create_time_ms: i64,
    /// `tk_paid_time`: the row exists on the network from this event on.
    pub tk_paid_time_ms: i64,
    /// Everything that happens to the line item, in time order; the first is `Paid`.
    pub events: Vec<SimEvent>,
    /// The refund after settlement, if any.
    pub refund: Option<SimRefund>,
    /// How long after each event's time the network shows it (0 for most orders). A late
    /// event's `modified_time` is earlier than the moment it can be seen.
    pub reported_delay_ms: i64,
    /// Whether `query_type=1` serves this item's previous state (see [`SimOrder::stale_as_of`]).
    pub stale_on_create_query: bool,
    /// `Some(fee)` when the settlement report deliberately shows a `pub_share_fee` different
    /// from the feed's.
    pub report_fee_fen: Option<i64>,
    /// Whether this item's row events are pushed as postbacks.
    pub postback: bool,
}

/// Whose order a line item is, by its tracking id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// One of our users: `config.tracking_ids[index]`.
    User {
        /// Index into `SimConfig::tracking_ids`.
        index: usize,
        /// The tracking id.
        tracking_id: TrackingId,
    },
    /// A relation or special id that is not one of ours.
    Unknown,
    /// No id at all: claimable by order number.
    Claimable,
}

/// One thing that happened to a line item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimEvent {
    /// What happened.
    pub kind: EventKind,
    /// When it happened: the `modified_time` it carries.
    pub at_ms: i64,
    /// When the network starts showing it: `at_ms + reported_delay_ms`.
    pub visible_at_ms: i64,
    /// Whether its postback is delivered twice (only for pushed row events).
    pub duplicate_postback: bool,
}

/// The kinds of event, with the `tk_status` (order rows) or `refund_status` they lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Paid: the row appears with tk_status 12.
    Paid,
    /// Closed after payment: tk_status 13.
    Invalidated,
    /// Buyer confirmed receipt: tk_status 14 (`pay_price` filled).
    Received,
    /// Commission settled: tk_status 3, `tk_earning_time`, `pub_share_fee`.
    Settled,
    /// A refund was opened after settlement: refund_tag 1 on the row; refund_status 4.
    RefundOpened,
    /// The refund succeeded: refund_status 2 (refund feed only).
    RefundSucceeded,
    /// The refund failed: refund_status 3 (refund feed only).
    RefundFailed,
}

impl EventKind {
    /// Whether the event changes the order row (and its `modified_time`); refund outcomes
    /// show only on the refund feed.
    pub fn changes_order_row(self) -> bool {
        !matches!(self, EventKind::RefundSucceeded | EventKind::RefundFailed)
    }
}

/// A refund after settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimRefund {
    /// `refund_fee`: refunded to the buyer, fen (≤ `alipay_total_price`).
    pub refund_fee_fen: i64,
    /// `tk_commission_fee_refund_pub`: commission clawed back, fen (≤ the settled fee).
    pub commission_refund_fen: i64,
    /// `tk_refund_time`.
    pub opened_at_ms: i64,
    /// `tk_refund_suit_time`.
    pub resolved_at_ms: i64,
    /// Refund status 2 (succeeded) or 3 (failed) at `resolved_at_ms`.
    pub succeeded: bool,
}

/// The whole data set for `config`, ordered by click time (and trade id). Same config, same
/// data, every time.
pub fn dataset(config: &SimConfig) -> Vec<SimOrder> {
    let n = config.orders;
    let mut orders = Vec::with_capacity(n);
    let ours: HashSet<u64> =
        config.tracking_ids.iter().flat_map(|t| [t.relation_id(), t.special_id()]).flatten().collect();
    let id_base = 2_000_000_000_000_000_000 + (mix(config.seed ^ stream::IDS) % 1_000_000_000_000) * 100_000;
    let n_i64 = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
    let slot_ms = (config.span_ms / n_i64).max(SECOND_MS);
    let (mut group, mut start) = (0u64, 0usize);
    while start < n {
        let mut g = Rng::for_stream(config.seed, stream::GROUP, group);
        let size = match g.unit() {
            x if x < 0.7 => 1,
            x if x < 0.9 => 2,
            _ => 3,
        }
        .min(n - start);
        let parent = Parent::draw(config, &mut g, &ours, group, start, n_i64, slot_ms, id_base);
        for line in 0..size {
            orders.push(line_item(config, &parent, start + line, line, size));
        }
        group += 1;
        start += size;
    }
    orders
}

/// What a parent order's line items share.
struct Parent {
    id: u64,
    order_type: &'static str,
    attribution: Attribution,
    relation_id: Option<u64>,
    special_id: Option<u64>,
    adzone_id: u64,
    click_ms: i64,
    create_ms: i64,
    paid_ms: i64,
    received_ms: i64,
    settled_ms: i64,
    reported_delay_ms: i64,
}

impl Parent {
    #[expect(clippy::too_many_arguments, reason = "one call site, all plain inputs")]
    fn draw(
        config: &SimConfig,
        g: &mut Rng,
        ours: &HashSet<u64>,
        group: u64,
        first_index: usize,
        n: i64,
        slot_ms: i64,
        id_base: u64,
    ) -> Parent {
        let first = i64::try_from(first_index).unwrap_or(i64::MAX);
        let offset = i64::try_from(i128::from(config.span_ms) * i128::from(first) / i128::from(n)).unwrap_or(0);
        let click_ms = whole_seconds(config.epoch_ms + offset + g.range(0, slot_ms));
        let create_ms = click_ms + whole_seconds(g.range(10 * SECOND_MS, 30 * MINUTE_MS));
        let paid_ms = create_ms + whole_seconds(g.range(5 * SECOND_MS, 10 * MINUTE_MS));
        let received_ms = paid_ms + whole_seconds(g.range(2 * DAY_MS, 10 * DAY_MS));
        let settled_ms = received_ms + whole_seconds(g.range(HOUR_MS, 5 * DAY_MS));
        let reported_delay_ms =
            if g.chance(LATE_SHARE) { whole_seconds(g.range(5 * MINUTE_MS, 90 * MINUTE_MS)) } else { 0 };
        let order_type = if g.chance(0.6) { "天猫" } else { "淘宝" };

        let roll = g.unit();
        let (attribution, relation_id, special_id, adzone_id) = if roll < config.unattributed_share {
            unknown(config, ours, group)
        } else if roll < config.unattributed_share + config.claimable_share {
            (Attribution::Claimable, None, None, config.default_adzone_id)
        } else if config.tracking_ids.is_empty() {
            unknown(config, ours, group)
        } else {
            let index = g.index(config.tracking_ids.len());
            let tracking_id = config.tracking_ids[index];
            (
                Attribution::User { index, tracking_id },
                tracking_id.relation_id(),
                tracking_id.special_id(),
                tracking_id.adzone_id(),
            )
        };
        Parent {
            id: id_base + group * 16,
            order_type,
            attribution,
            relation_id,
            special_id,
            adzone_id,
            click_ms,
            create_ms,
            paid_ms,
            received_ms,
            settled_ms,
            reported_delay_ms,
        }
    }
}

/// An id that is not ours, as a relation or a special id.
fn unknown(config: &SimConfig, ours: &HashSet<u64>, group: u64) -> (Attribution, Option<u64>, Option<u64>, u64) {
    let mut rng = Rng::for_stream(config.seed, stream::UNKNOWN_ID, group);
    let as_relation = rng.chance(0.5);
    let id = loop {
        let id = 9_000_000_000 + rng.below(999_999_999);
        if !ours.contains(&id) {
            break id;
        }
    };
    let (relation_id, special_id) = if as_relation { (Some(id), None) } else { (None, Some(id)) };
    (Attribution::Unknown, relation_id, special_id, config.default_adzone_id)
}

fn line_item(config: &SimConfig, parent: &Parent, index: usize, line: usize, size: usize) -> SimOrder {
    let index_u64 = u64::try_from(index).unwrap_or(u64::MAX);
    let mut r = Rng::for_stream(config.seed, stream::ITEM, index_u64);
    let item = CATALOGUE[r.index(CATALOGUE.len())];
    let item_num: u32 = match r.unit() {
        x if x < 0.75 => 1,
        x if x < 0.93 => 2,
        _ => 3,
    };
    let list_fen = item.price_fen * i64::from(item_num);
    let coupon_fen = if r.chance(0.3) { list_fen * r.range(5, 21) / 100 } else { 0 };
    let alipay_total_price_fen = list_fen - coupon_fen;
    let pub_share_pre_fee_fen = alipay_total_price_fen * i64::from(item.rate_bp) / 10_000;

    let delay = parent.reported_delay_ms;
    let event = |kind, at_ms| SimEvent { kind, at_ms, visible_at_ms: at_ms + delay, duplicate_postback: false };
    let mut events = vec![event(EventKind::Paid, parent.paid_ms)];
    let mut refund = None;
    let mut settled_fee_fen = 0;
    let invalid = r.chance(INVALID_SHARE);
    let fee_factor = if r.chance(FEE_ADJUSTED_SHARE) { r.range(70, 100) } else { 100 };
    let refunded = r.chance(REFUND_SHARE);
    let refund_full = r.chance(0.6);
    let refund_part = r.range(10, 90);
    let refund_open_after = whole_seconds(r.range(DAY_MS, 15 * DAY_MS));
    let refund_takes = whole_seconds(r.range(HOUR_MS, 4 * DAY_MS));
    let refund_succeeds = r.chance(0.85);
    let invalid_after = whole_seconds(r.range(10 * MINUTE_MS, 3 * DAY_MS));
    let stale_on_create_query = r.chance(STALE_SHARE);
    let report_differs = r.chance(REPORT_DIFFERENCE_SHARE);

    if invalid {
        events.push(event(EventKind::Invalidated, parent.paid_ms + invalid_after));
    } else {
        events.push(event(EventKind::Received, parent.received_ms));
        events.push(event(EventKind::Settled, parent.settled_ms));
        settled_fee_fen = pub_share_pre_fee_fen * fee_factor / 100;
        if refunded {
            let refund_fee_fen =
                if refund_full { alipay_total_price_fen } else { (alipay_total_price_fen * refund_part / 100).max(1) };
            let commission_refund_fen = settled_fee_fen * refund_fee_fen / alipay_total_price_fen.max(1);
            let opened_at_ms = parent.settled_ms + refund_open_after;
            let resolved_at_ms = opened_at_ms + refund_takes;
            events.push(event(EventKind::RefundOpened, opened_at_ms));
            let outcome = if refund_succeeds { EventKind::RefundSucceeded } else { EventKind::RefundFailed };
            events.push(event(outcome, resolved_at_ms));
            refund = Some(SimRefund {
                refund_fee_fen,
                commission_refund_fen,
                opened_at_ms,
                resolved_at_ms,
                succeeded: refund_succeeds,
            });
        }
    }
    let report_fee_fen = (!invalid && report_differs).then(|| {
        if settled_fee_fen >= 2 { settled_fee_fen - (settled_fee_fen / 10).max(1) } else { settled_fee_fen + 1 }
    });

    let mut postback_rng = Rng::for_stream(config.seed, stream::POSTBACK, index_u64);
    let postback = config.postback.as_ref().is_some_and(|p| postback_rng.chance(p.share));
    if let Some(p) = config.postback.as_ref().filter(|_| postback) {
        for e in events.iter_mut().filter(|e| e.kind.changes_order_row()) {
            e.duplicate_postback = postback_rng.chance(p.duplicate_share);
        }
    }

    let line_u64 = u64::try_from(line).unwrap_or(0);
    SimOrder {
        index,
        trade_id: if size == 1 { parent.id } else { parent.id + 1 + line_u64 },
        trade_parent_id: parent.id,
        item_id: item.item_id,
        item_title: item.title.to_owned(),
        item_price_fen: item.price_fen,
        item_num,
        order_type: parent.order_type.to_owned(),
        alipay_total_price_fen,
        commission_rate_bp: item.rate_bp,
        pub_share_pre_fee_fen,
        settled_fee_fen,
        attribution: parent.attribution,
        relation_id: parent.relation_id,
        special_id: parent.special_id,
        adzone_id: parent.adzone_id,
        site_id: config.site_id,
        click_time_ms: parent.click_ms,
        tk_create_time_ms: parent.create_ms,
        tk_paid_time_ms: parent.paid_ms,
        events,
        refund,
        reported_delay_ms: delay,
        stale_on_create_query,
        report_fee_fen,
        postback,
    }
}

fn whole_seconds(ms: i64) -> i64 {
    ms - ms.rem_euclid(SECOND_MS)
}
