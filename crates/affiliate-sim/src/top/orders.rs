//! `taobao.tbk.order.details.get` (and its `sc` twin): rows whose queried time falls in the
//! window, in a stable order (that time, then trade id), paged by offset or by position.

use serde_json::{Map, Value, json};

use super::{Params, TopError, check_window};
use crate::dataset::SimOrder;
use crate::rows::{OrderRow, TK_INVALID, TK_PAID, TK_RECEIVED, TK_SETTLED};
use crate::server::SimState;

/// Which time `start_time..end_time` selects on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryType {
    /// 1: `tk_create_time` (serves stale snapshots for some rows).
    Create,
    /// 2: `tk_paid_time`.
    Paid,
    /// 3: `tk_earning_time` (settled rows only).
    Settle,
    /// 4: `modified_time`.
    Modified,
}

/// A row's place in the ordering: (queried time, trade id).
type Key = (i64, u64);

/// A parsed order query.
#[derive(Debug, Clone)]
pub(crate) struct OrderQuery {
    pub query_type: QueryType,
    pub start_ms: i64,
    pub end_ms: i64,
    pub tk_status: Option<u8>,
    pub page_no: u32,
    pub page_size: u32,
    /// The previous page's first and last keys.
    pub position: Option<(Key, Key)>,
    pub backward: bool,
}

/// One page of rows.
#[derive(Debug, Clone)]
pub(crate) struct OrderPage {
    pub rows: Vec<OrderRow>,
    pub has_next: bool,
    pub has_pre: bool,
    pub position_index: String,
}

impl OrderQuery {
    fn parse(params: &Params, max_window_ms: i64, max_page_size: u32) -> Result<Self, TopError> {
        let query_type = match params.number::<u8>("query_type")?.unwrap_or(1) {
            1 => QueryType::Create,
            2 => QueryType::Paid,
            3 => QueryType::Settle,
            4 => QueryType::Modified,
            _ => return Err(TopError::invalid_param("query_type取值错误，可选1、2、3、4")),
        };
        let start_ms = params.time("start_time")?.ok_or_else(|| TopError::missing_arg("start_time"))?;
        let end_ms = params.time("end_time")?.ok_or_else(|| TopError::missing_arg("end_time"))?;
        check_window(start_ms, end_ms, max_window_ms)?;
        let tk_status = params.number::<u8>("tk_status")?;
        if tk_status.is_some_and(|s| ![TK_SETTLED, TK_PAID, TK_INVALID, TK_RECEIVED].contains(&s)) {
            return Err(TopError::invalid_param("tk_status取值错误，可选3、12、13、14"));
        }
        let (page_no, page_size) = params.paging(max_page_size)?;
        let position = params.get("position_index").map(decode_position).transpose()?;
        let backward = match params.number::<i8>("jump_type")? {
            None | Some(1) => false,
            Some(-1) => true,
            Some(_) => return Err(TopError::invalid_param("jump_type取值错误，可选-1、1")),
        };
        Ok(OrderQuery { query_type, start_ms, end_ms, tk_status, page_no, page_size, position, backward })
    }
}

pub(super) fn order_details(state: &SimState, params: &Params, now_ms: i64) -> Result<Map<String, Value>, TopError> {
    let query = OrderQuery::parse(params, state.config.max_window_ms, state.config.max_page_size)?;
    let page = order_page(&state.orders, &query, now_ms);
    let data = json!({
        "has_next": page.has_next,
        "has_pre": page.has_pre,
        "page_no": query.page_no,
        "page_size": query.page_size,
        "position_index": page.position_index,
        "results": { "publisher_order_dto": page.rows },
    });
    let mut inner = Map::new();
    inner.insert("data".into(), data);
    Ok(inner)
}

/// The page `query` selects at `now_ms`.
pub(crate) fn order_page(orders: &[SimOrder], query: &OrderQuery, now_ms: i64) -> OrderPage {
    let stale_query = query.query_type == QueryType::Create;
    let mut matched: Vec<(Key, &SimOrder, _)> = orders
        .iter()
        .filter_map(|order| {
            let snapshot = order.snapshot(now_ms, stale_query && order.stale_on_create_query)?;
            let at = match query.query_type {
                QueryType::Create => order.tk_create_time_ms,
                QueryType::Paid => order.tk_paid_time_ms,
                QueryType::Settle => snapshot.earning_ms?,
                QueryType::Modified => snapshot.modified_ms,
            };
            let in_window = query.start_ms <= at && at <= query.end_ms;
            let status_ok = query.tk_status.is_none_or(|s| s == snapshot.status);
            (in_window && status_ok).then_some(((at, order.trade_id), order, snapshot))
        })
        .collect();
    matched.sort_by_key(|(key, _, _)| *key);

    let len = matched.len();
    let size = usize::try_from(query.page_size).unwrap_or(usize::MAX);
    let (lo, hi) = match query.position {
        None => {
            let skip = usize::try_from(query.page_no.saturating_sub(1)).unwrap_or(usize::MAX).saturating_mul(size);
            (skip.min(len), skip.saturating_add(size).min(len))
        }
        Some((first, _)) if query.backward => {
            let end = matched.partition_point(|(key, _, _)| *key < first);
            (end.saturating_sub(size), end)
        }
        Some((_, last)) => {
            let start = matched.partition_point(|(key, _, _)| *key <= last);
            (start, start.saturating_add(size).min(len))
        }
    };
    let page = &matched[lo..hi];
    let position_index = match (page.first(), page.last()) {
        (Some((first, _, _)), Some((last, _, _))) => encode_position(*first, *last),
        _ => query.position.map(|(first, last)| encode_position(first, last)).unwrap_or_default(),
    };
    OrderPage {
        rows: page.iter().map(|(_, order, snapshot)| order.render(snapshot)).collect(),
        has_next: hi < len,
        has_pre: lo > 0,
        position_index,
    }
}

fn encode_position(first: Key, last: Key) -> String {
    format!("{}_{}|{}_{}", first.0, first.1, last.0, last.1)
}

fn decode_position(text: &str) -> Result<(Key, Key), TopError> {
    let key = |part: &str| -> Option<Key> {
        let (at, id) = part.split_once('_')?;
        Some((at.parse().ok()?, id.parse().ok()?))
    };
    text.split_once('|')
        .and_then(|(first, last)| Some((key(first)?, key(last)?)))
        .ok_or_else(|| TopError::invalid_param("position_index无效"))
}
