//! A stand-in for a Taobao-Union-style affiliate network (淘宝联盟), served over real HTTP for
//! our tests and for `flashback serve --demo`.
//!
//! The network holds a deterministic data set (same [`SimConfig`], same orders, every time) and
//! shows it as of its own movable clock ([`SimClock`]): rows carry only the events that have
//! happened, and been reported, by the network's "now".
//!
//! # Rust API
//!
//! - [`start`]`(config: SimConfig, listen: SocketAddr) -> anyhow::Result<RunningSim>`: builds the
//!   data set and serves it (port 0 picks a free port); ready when it returns.
//! - [`RunningSim`]: `addr: SocketAddr`, `clock: SimClock` (public fields); `base_url() -> String`
//!   (`http://127.0.0.1:PORT`), `router_url() -> String` (`…/router/rest`),
//!   `orders() -> &[SimOrder]`, `config() -> &SimConfig`,
//!   `flush_postbacks().await -> Option<PostbackStats>`, `shutdown(self).await -> anyhow::Result<()>`.
//!   Dropping it stops its tasks without waiting.
//! - [`dataset`]`(config: &SimConfig) -> Vec<SimOrder>`: every line item's full timeline
//!   ([`SimOrder::events`]), to compute what a client should end up with:
//!   [`SimOrder::as_of`]`(now_ms) -> Option<OrderRow>` (the current row: query types 2, 3, 4),
//!   [`SimOrder::stale_as_of`] (what query type 1 serves), [`SimOrder::row_at_event`]`(i)` (a
//!   postback body), [`SimOrder::refund_as_of`]`(now_ms) -> Option<RefundRow>`,
//!   [`SimOrder::report_fee`] (the settlement report's fee), [`settlement_report`].
//! - [`SimClock`] (a shared handle): `fixed(now_ms)`, `scaled(start_ms, scale)`, `wall()`,
//!   `now_ms()`, `set_ms(now_ms)`, `advance_ms(delta) -> i64`, `scale()`, `set_scale(scale)`.
//! - Signing: [`top_sign`], [`sign_params`], [`verify_top_sign`], [`postback_signature`],
//!   [`verify_postback_signature`]. Wire formats (money, rates, Beijing times): [`wire`].
//!
//! All times in the Rust API are Unix milliseconds; all money is fen (`i64`); trade ids are
//! `u64` (strings on the order feed, numbers on the refund feed, as TOP has them).
//!
//! # TOP gateway: `GET|POST /router/rest`
//!
//! Parameters come from the query string and, for POST, an `application/x-www-form-urlencoded`
//! body (merged; the body wins). Common parameters: `method`, `app_key`, `timestamp`
//! (`YYYY-MM-DD HH:MM:SS` Beijing or Unix ms; its format is checked, its skew is not, since the
//! network's clock moves), `sign_method` (must be `hmac-sha256`), `sign`; `v`, `format`
//! (`json` only), `simplify`, `session` and unknown parameters are accepted and signed over.
//!
//! **Signature** ([`top_sign`]): take every parameter except `sign` whose name and value are
//! non-empty, sort by name (byte order), concatenate `name1value1name2value2…` (values as sent,
//! before URL encoding), HMAC-SHA256 with the app secret as key, uppercase hex.
//!
//! **Errors** come back as HTTP 200 with
//! `{"error_response":{"code":N,"msg":"…","sub_code":"…","sub_msg":"…","request_id":"…"}}`
//! (`sub_*` only where listed), checked in this order: 21 `Missing method`; 22 `Invalid method`;
//! 28 `Missing app key`; 29 `Invalid app key`; 30 `Missing timestamp`; 31 `Invalid timestamp`;
//! 23 `Invalid format`; 41 `Invalid arguments:sign_method` (`isv.invalid-parameter`);
//! 24 `Missing signature`; 25 `Invalid signature`; then per method 40
//! `Missing required arguments:NAME` (`isv.missing-parameter`, sub_msg NAME) and 15
//! `Remote service error` (`isv.invalid-parameter`), e.g. sub_msg `查询时间跨度不能超过3小时`.
//!
//! ## `method=taobao.tbk.order.details.get` (also `taobao.tbk.sc.order.details.get`)
//!
//! - `query_type`: 1 `tk_create_time` (default), 2 `tk_paid_time`, 3 `tk_earning_time` (settled
//!   rows only), 4 `modified_time`.
//! - `start_time`, `end_time` (required, Beijing): rows with the queried time in
//!   `[start_time, end_time]`, both ends inclusive; at most `max_window_ms` apart (default 3 h).
//! - `tk_status` (optional filter: 3, 12, 13, 14), `page_size` (1..=`max_page_size`, default 20),
//!   `page_no` (default 1), `position_index`, `jump_type` (1 forward, default; -1 back).
//!   Rows are ordered by (queried time, trade id). Without `position_index`, `page_no` pages by
//!   offset; with it (copy the previous answer's, from page 2 on), the page starts after that
//!   page's last row (or, with `jump_type=-1`, ends before its first row) and `page_no` is only
//!   echoed. `has_pre`/`has_next`: rows exist before/after this page in the window.
//!
//! Answer: `{"tbk_order_details_get_response":{"data":{"has_next":bool,"has_pre":bool,"page_no":N,`
//! `"page_size":N,"position_index":"…","results":{"publisher_order_dto":[OrderRow…]}},"request_id":"…"}}`
//! (under `tbk_sc_order_details_get_response` for the `sc` name: TOP names the key after the
//! method). `results` is present, possibly empty. An [`OrderRow`] in JSON:
//! `trade_id`, `trade_parent_id` (strings); `item_id`, `item_num`, `tk_status`, `adzone_id`,
//! `site_id`, `refund_tag` (numbers); `relation_id`, `special_id` (numbers, absent when the order
//! has none); `item_title`, `order_type` (`天猫`/`淘宝`); `item_price`, `alipay_total_price`,
//! `pay_price` (`"0.00"` until tk_status 14), `pub_share_pre_fee`, `pub_share_fee` (`"0.00"`
//! until tk_status 3), `total_commission_rate` (`"0.0500"`) as strings; `click_time`,
//! `tk_create_time`, `tk_paid_time`, `tk_earning_time` (absent until settled), `modified_time`
//! as Beijing `YYYY-MM-DD HH:MM:SS`.
//!
//! ## `method=taobao.tbk.relation.refund`
//!
//! Options as TOP takes them, one JSON parameter `search_option` (e.g.
//! `{"search_type":5,"start_time":"…","end_time":"…","page_no":1,"page_size":100}`; numbers or
//! strings), or the same names as flat parameters. `search_type`: 1 `tk_refund_time` (default),
//! 2 `earning_time`, 3 `tk_refund_suit_time`, 4 `tb_trade_create_time`, 5 `modified_time` (TOP's
//! numbering). `start_time` (required), `end_time` (default `start_time + max_window_ms`; at most
//! that far), `page_no`, `page_size` (offset paging), `biz_type` (1 rows with a relation id, 2
//! with a special id, absent/3 all), `refund_type` ignored. Ordered by (that time, trade id).
//!
//! Answer: `{"tbk_relation_refund_response":{"result":{"data":{"page_no":N,"page_size":N,`
//! `"total_count":N,"results":{"result":[RefundRow…]}}},"request_id":"…"}}`. A [`RefundRow`]:
//! `tb_trade_id`, `tb_trade_parent_id`, `relation_id`/`special_id` (absent when none),
//! `refund_status` (4 open, 2 succeeded, 3 failed), `refund_type` (1) as numbers;
//! `refund_fee`, `tk_commission_fee_refund_pub` (the clawback) as money strings;
//! `tb_auction_title`; `tb_trade_create_time`, `earning_time`, `tk_refund_time`,
//! `tk_refund_suit_time` (absent while open), `modified_time` as Beijing times.
//!
//! # Control endpoints
//!
//! - `GET /sim/clock` → `{"now_ms":i64,"now":"YYYY-MM-DD HH:MM:SS","scale":f64}`.
//! - `POST /sim/clock` with JSON `{"now_ms":i64}` or `{"advance_ms":i64}` (not both; 400), and/or
//!   `{"scale":f64}` → the same view.
//! - `POST /sim/postbacks/flush` → once every postback due now is delivered or given up:
//!   `{"delivered":n,"duplicates":n,"failed":n,"attempts":n,"remaining":n}` (totals since start,
//!   [`PostbackStats`]); 404 `{"error":…}` without postbacks.
//! - `GET /sim/settlement-report?month=YYYY-MM` → `text/csv; charset=utf-8`, header
//!   `trade_id,trade_parent_id,tk_status,pub_share_fee,tk_earning_time,refund_fee`, one line per
//!   line item whose settlement (Beijing month) is visible now, ordered by settlement time then
//!   trade id; `refund_fee` is the buyer refund of a succeeded refund visible now, else `0.00`.
//!   400 on a bad month.
//!
//! # Postbacks
//!
//! With [`SimConfig::postback`] set, each row-changing event (paid, invalidated, received,
//! settled, refund opened) of the chosen orders ([`SimOrder::postback`]) is pushed once visible
//! on the network's clock: `POST <url>`, `content-type: application/json`, body one [`OrderRow`]
//! (the row right after the event), header
//! `X-Affiliate-Signature: t=<Unix seconds, real time>,v1=<lowercase hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
//! Non-2xx or errors are retried after `initial_backoff`, doubling (≤ 10 s), up to
//! `max_attempts`, then given up (the feed still has the event). Events with
//! [`SimEvent::duplicate_postback`] are delivered a second time right after the first.
//! Delivery is serial in (visible time, trade id, event) order; moving the clock wakes the pusher.
//!
//! # What the data does on purpose
//!
//! - Stale snapshots: for orders with [`SimOrder::stale_on_create_query`], `query_type=1` serves
//!   the state before the latest row event (older status, older `modified_time`); other query
//!   types and postbacks serve the current row. Keep the row with the newest `modified_time`.
//! - Late reports: orders with [`SimOrder::reported_delay_ms`] > 0 show each event that long
//!   after it happened, with `modified_time` the event's time: only overlapping polls catch them.
//! - Settled fees below the estimate for some orders; refunds after settlement (refund_tag 1).
//! - Duplicated postbacks; settlement-report fees that differ from the feed for orders with
//!   [`SimOrder::report_fee_fen`].

mod catalogue;
mod clock;
mod config;
mod dataset;
mod postback;
mod rng;
mod rows;
mod server;
mod settlement;
mod signing;
mod top;
pub mod wire;

pub use clock::SimClock;
pub use config::{ConfigError, DAY_MS, DEFAULT_EPOCH_MS, HOUR_MS, PostbackConfig, SimConfig, TrackingId};
pub use dataset::{
    Attribution, EventKind, FEE_ADJUSTED_SHARE, INVALID_SHARE, LATE_SHARE, REFUND_SHARE, REPORT_DIFFERENCE_SHARE,
    STALE_SHARE, SimEvent, SimOrder, SimRefund, dataset,
};
pub use postback::PostbackStats;
pub use rows::{
    OrderRow, REFUND_FAILED, REFUND_OPEN, REFUND_SUCCEEDED, RefundRow, TK_INVALID, TK_PAID, TK_RECEIVED, TK_SETTLED,
};
pub use server::{RunningSim, start};
pub use settlement::{SETTLEMENT_CSV_HEADER, SettlementLine, parse_month, settlement_csv, settlement_report};
pub use signing::{
    PostbackSignatureError, SIGNATURE_HEADER, postback_signature, sign_params, top_sign, verify_postback_signature,
    verify_top_sign,
};
pub use top::{ORDER_DETAILS_METHOD, RELATION_REFUND_METHOD, SC_ORDER_DETAILS_METHOD};
