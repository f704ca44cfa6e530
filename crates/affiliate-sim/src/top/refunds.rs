//! `taobao.tbk.relation.refund`: refund (维权) rows whose chosen time falls in the window,
//! ordered by that time then trade id, paged by offset with a total count.

use serde_json::{Map, Value, json};

use super::{Params, TopError, check_window};
use crate::server::SimState;

pub(super) fn relation_refund(state: &SimState, params: &Params, now_ms: i64) -> Result<Map<String, Value>, TopError> {
    let options = search_options(params)?;
    let search_type = options.number::<u8>("search_type")?.unwrap_or(1);
    if !(1..=5).contains(&search_type) {
        return Err(TopError::invalid_param("search_type取值错误，可选1、2、3、4、5"));
    }
    let start_ms = options.time("start_time")?.ok_or_else(|| TopError::missing_arg("start_time"))?;
    let end_ms = options.time("end_time")?.unwrap_or(start_ms.saturating_add(state.config.max_window_ms));
    check_window(start_ms, end_ms, state.config.max_window_ms)?;
    let (page_no, page_size) = options.paging(state.config.max_page_size)?;
    let biz_type = options.number::<u8>("biz_type")?;

    let mut matched: Vec<_> = state
        .orders
        .iter()
        .filter(|order| match biz_type {
            Some(1) => order.relation_id.is_some(),
            Some(2) => order.special_id.is_some(),
            _ => true,
        })
        .filter_map(|order| {
            let refund = order.refund.as_ref()?;
            let snapshot = order.refund_snapshot(now_ms)?;
            let at = match search_type {
                1 => refund.opened_at_ms,
                2 => order.settled_at_ms()?,
                3 => snapshot.suit_ms?,
                4 => order.tk_create_time_ms,
                _ => snapshot.modified_ms,
            };
            (start_ms <= at && at <= end_ms).then_some(((at, order.trade_id), order, snapshot))
        })
        .collect();
    matched.sort_by_key(|(key, _, _)| *key);

    let size = usize::try_from(page_size).unwrap_or(usize::MAX);
    let skip = usize::try_from(page_no - 1).unwrap_or(usize::MAX).saturating_mul(size);
    let rows: Vec<_> =
        matched.iter().skip(skip).take(size).map(|(_, order, snapshot)| order.render_refund(snapshot)).collect();
    let data = json!({
        "page_no": page_no,
        "page_size": page_size,
        "total_count": matched.len(),
        "results": { "result": rows },
    });
    let mut inner = Map::new();
    inner.insert("result".into(), json!({ "data": data }));
    Ok(inner)
}

/// TOP passes this method's options as one JSON parameter, `search_option`; flat parameters
/// of the same names are accepted too (`search_option` wins).
fn search_options(params: &Params) -> Result<Params, TopError> {
    let Some(raw) = params.get("search_option") else {
        return Ok(params.clone());
    };
    let object: Map<String, Value> =
        serde_json::from_str(raw).map_err(|_| TopError::invalid_param("search_option不是合法的JSON对象"))?;
    let mut merged = params.clone();
    for (name, value) in object {
        let text = match value {
            Value::String(s) => s,
            Value::Null => continue,
            other => other.to_string(),
        };
        merged.0.insert(name, text);
    }
    Ok(merged)
}
