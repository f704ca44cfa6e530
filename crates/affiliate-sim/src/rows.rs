//! What the network shows of a line item at an instant: the order row (`publisher_order_dto`)
//! and the refund row (`taobao.tbk.relation.refund`'s `result`).

use serde::{Deserialize, Serialize};

use crate::dataset::{EventKind, SimOrder};
use crate::wire::{format_beijing, format_fen, format_rate_bp};

/// tk_status: settled (结算).
pub const TK_SETTLED: u8 = 3;
/// tk_status: paid (付款).
pub const TK_PAID: u8 = 12;
/// tk_status: invalid (失效).
pub const TK_INVALID: u8 = 13;
/// tk_status: received (确认收货 / 订单成功).
pub const TK_RECEIVED: u8 = 14;

/// refund_status: the refund succeeded (维权成功).
pub const REFUND_SUCCEEDED: u8 = 2;
/// refund_status: the refund failed (维权失败).
pub const REFUND_FAILED: u8 = 3;
/// refund_status: the refund is open (维权创建).
pub const REFUND_OPEN: u8 = 4;

/// One `publisher_order_dto`: a line item as the order feed and postbacks show it. Field names
/// and JSON types are TOP's: ids of orders are strings, other ids and statuses are numbers,
/// money is a yuan string with two decimals, times are Beijing `YYYY-MM-DD HH:MM:SS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    /// The line item's id (unique).
    pub trade_id: String,
    /// The buyer's order id (shared by its line items; equals `trade_id` for one-item orders).
    pub trade_parent_id: String,
    /// The product.
    pub item_id: u64,
    /// The product's title.
    pub item_title: String,
    /// Units bought.
    pub item_num: u32,
    /// Unit price.
    pub item_price: String,
    /// `"天猫"` or `"淘宝"`.
    pub order_type: String,
    /// 12 paid, 13 invalid, 14 received, 3 settled.
    pub tk_status: u8,
    /// What the buyer paid for the line.
    pub alipay_total_price: String,
    /// The amount confirmed at receipt: `"0.00"` until tk_status 14, then `alipay_total_price`.
    pub pay_price: String,
    /// The commission estimate made at payment.
    pub pub_share_pre_fee: String,
    /// The settled commission: `"0.00"` until tk_status 3.
    pub pub_share_fee: String,
    /// Commission rate, four decimals (`"0.0500"` is 5 %).
    pub total_commission_rate: String,
    /// Channel relation id; absent when the order has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation_id: Option<u64>,
    /// Member special id; absent when the order has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub special_id: Option<u64>,
    /// The ad zone.
    pub adzone_id: u64,
    /// Our media id.
    pub site_id: u64,
    /// When the buyer clicked our link.
    pub click_time: String,
    /// When the order was created.
    pub tk_create_time: String,
    /// When it was paid.
    pub tk_paid_time: String,
    /// When it settled; absent until tk_status 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tk_earning_time: Option<String>,
    /// When the row last changed.
    pub modified_time: String,
    /// 1 once a refund (维权) was opened on the line item, else 0.
    pub refund_tag: u8,
}

/// One refund (维权) row of `taobao.tbk.relation.refund`. TOP types the trade ids here as
/// numbers (unlike the order feed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRow {
    /// The line item (`trade_id` on the order feed).
    pub tb_trade_id: u64,
    /// The buyer's order (`trade_parent_id`).
    pub tb_trade_parent_id: u64,
    /// Channel relation id, when the order has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation_id: Option<u64>,
    /// Member special id, when the order has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub special_id: Option<u64>,
    /// 4 open, 2 succeeded, 3 failed.
    pub refund_status: u8,
    /// Refunded to the buyer.
    pub refund_fee: String,
    /// Commission clawed back from us when the refund succeeds.
    pub tk_commission_fee_refund_pub: String,
    /// The product's title.
    pub tb_auction_title: String,
    /// When the order was created.
    pub tb_trade_create_time: String,
    /// When the order settled.
    pub earning_time: String,
    /// When the refund was opened.
    pub tk_refund_time: String,
    /// When the refund was decided; absent while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tk_refund_suit_time: Option<String>,
    /// When the refund row last changed.
    pub modified_time: String,
    /// 1: we are the second party (二方).
    pub refund_type: u8,
}

/// The state of an order row, in numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub status: u8,
    pub modified_ms: i64,
    pub earning_ms: Option<i64>,
    pub refund_tag: u8,
    pub received: bool,
}

/// The state of a refund row, in numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefundSnapshot {
    pub status: u8,
    pub modified_ms: i64,
    pub suit_ms: Option<i64>,
}

impl SimOrder {
    /// The row as the network shows it at `now_ms` (only events visible by then); `None`
    /// before the line item is paid (or before its payment is visible).
    pub fn as_of(&self, now_ms: i64) -> Option<OrderRow> {
        self.snapshot(now_ms, false).map(|s| self.render(&s))
    }

    /// The row `query_type=1` serves at `now_ms`. For most line items it is [`Self::as_of`]; for
    /// those with `stale_on_create_query` it is the state before the latest visible row event
    /// (older status, older `modified_time`), or the current row if only the payment is
    /// visible.
    pub fn stale_as_of(&self, now_ms: i64) -> Option<OrderRow> {
        self.snapshot(now_ms, self.stale_on_create_query).map(|s| self.render(&s))
    }

    /// The row right after `events[event]`, as postbacks carry it; `None` when that event does
    /// not change the row (refund outcomes) or is out of range.
    pub fn row_at_event(&self, event: usize) -> Option<OrderRow> {
        let e = self.events.get(event).filter(|e| e.kind.changes_order_row())?;
        self.as_of(e.visible_at_ms)
    }

    /// The refund row at `now_ms`; `None` without a refund visible by then.
    pub fn refund_as_of(&self, now_ms: i64) -> Option<RefundRow> {
        self.refund_snapshot(now_ms).map(|s| self.render_refund(&s))
    }

    /// When the line item settles (its `tk_earning_time`), if it ever does.
    pub fn settled_at_ms(&self) -> Option<i64> {
        self.events.iter().find(|e| e.kind == EventKind::Settled).map(|e| e.at_ms)
    }

    /// The tk_status at the end of its life (3 or 13).
    pub fn final_status(&self) -> u8 {
        self.snapshot(i64::MAX, false).map_or(TK_PAID, |s| s.status)
    }

    /// The `pub_share_fee` the settlement report shows (fen), if the item settles: the settled
    /// fee, or the deliberately different `report_fee_fen`.
    pub fn report_fee(&self) -> Option<i64> {
        self.settled_at_ms().map(|_| self.report_fee_fen.unwrap_or(self.settled_fee_fen))
    }

    pub(crate) fn snapshot(&self, now_ms: i64, stale: bool) -> Option<Snapshot> {
        let visible: Vec<_> =
            self.events.iter().filter(|e| e.kind.changes_order_row() && e.visible_at_ms <= now_ms).collect();
        let take = if stale && visible.len() >= 2 { visible.len() - 1 } else { visible.len() };
        let mut snapshot: Option<Snapshot> = None;
        for e in &visible[..take] {
            let s = snapshot.get_or_insert(Snapshot {
                status: TK_PAID,
                modified_ms: e.at_ms,
                earning_ms: None,
                refund_tag: 0,
                received: false,
            });
            s.modified_ms = e.at_ms;
            match e.kind {
                EventKind::Paid | EventKind::RefundSucceeded | EventKind::RefundFailed => {}
                EventKind::Invalidated => s.status = TK_INVALID,
                EventKind::Received => {
                    s.status = TK_RECEIVED;
                    s.received = true;
                }
                EventKind::Settled => {
                    s.status = TK_SETTLED;
                    s.earning_ms = Some(e.at_ms);
                }
                EventKind::RefundOpened => s.refund_tag = 1,
            }
        }
        snapshot
    }

    pub(crate) fn render(&self, s: &Snapshot) -> OrderRow {
        OrderRow {
            trade_id: self.trade_id.to_string(),
            trade_parent_id: self.trade_parent_id.to_string(),
            item_id: self.item_id,
            item_title: self.item_title.clone(),
            item_num: self.item_num,
            item_price: format_fen(self.item_price_fen),
            order_type: self.order_type.clone(),
            tk_status: s.status,
            alipay_total_price: format_fen(self.alipay_total_price_fen),
            pay_price: format_fen(if s.received { self.alipay_total_price_fen } else { 0 }),
            pub_share_pre_fee: format_fen(self.pub_share_pre_fee_fen),
            pub_share_fee: format_fen(if s.earning_ms.is_some() { self.settled_fee_fen } else { 0 }),
            total_commission_rate: format_rate_bp(self.commission_rate_bp),
            relation_id: self.relation_id,
            special_id: self.special_id,
            adzone_id: self.adzone_id,
            site_id: self.site_id,
            click_time: format_beijing(self.click_time_ms),
            tk_create_time: format_beijing(self.tk_create_time_ms),
            tk_paid_time: format_beijing(self.tk_paid_time_ms),
            tk_earning_time: s.earning_ms.map(format_beijing),
            modified_time: format_beijing(s.modified_ms),
            refund_tag: s.refund_tag,
        }
    }

    pub(crate) fn refund_snapshot(&self, now_ms: i64) -> Option<RefundSnapshot> {
        self.refund.as_ref()?;
        let mut snapshot = None;
        for e in self.events.iter().filter(|e| e.visible_at_ms <= now_ms) {
            match e.kind {
                EventKind::RefundOpened => {
                    snapshot = Some(RefundSnapshot { status: REFUND_OPEN, modified_ms: e.at_ms, suit_ms: None });
                }
                EventKind::RefundSucceeded | EventKind::RefundFailed => {
                    let status = if e.kind == EventKind::RefundSucceeded { REFUND_SUCCEEDED } else { REFUND_FAILED };
                    snapshot = Some(RefundSnapshot { status, modified_ms: e.at_ms, suit_ms: Some(e.at_ms) });
                }
                _ => {}
            }
        }
        snapshot
    }

    pub(crate) fn render_refund(&self, s: &RefundSnapshot) -> RefundRow {
        let (refund_fee_fen, commission_refund_fen) =
            self.refund.as_ref().map_or((0, 0), |r| (r.refund_fee_fen, r.commission_refund_fen));
        RefundRow {
            tb_trade_id: self.trade_id,
            tb_trade_parent_id: self.trade_parent_id,
            relation_id: self.relation_id,
            special_id: self.special_id,
            refund_status: s.status,
            refund_fee: format_fen(refund_fee_fen),
            tk_commission_fee_refund_pub: format_fen(commission_refund_fen),
            tb_auction_title: self.item_title.clone(),
            tb_trade_create_time: format_beijing(self.tk_create_time_ms),
            earning_time: self.settled_at_ms().map(format_beijing).unwrap_or_default(),
            tk_refund_time: self.refund.as_ref().map(|r| format_beijing(r.opened_at_ms)).unwrap_or_default(),
            tk_refund_suit_time: s.suit_ms.map(format_beijing),
            modified_time: format_beijing(s.modified_ms),
            refund_type: 1,
        }
    }
}
