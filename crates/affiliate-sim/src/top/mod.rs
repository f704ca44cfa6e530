//! The TOP gateway, `/router/rest`: parameters from the query string and a form body, the
//! common checks (method, app key, timestamp, signature) and TOP's error shape; the two
//! methods live in their own modules.

mod orders;
mod refunds;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::config::HOUR_MS;
use crate::server::SimState;
use crate::signing::verify_top_sign;
use crate::wire::parse_beijing;

/// The order feed.
pub const ORDER_DETAILS_METHOD: &str = "taobao.tbk.order.details.get";
/// The same feed under the service-provider name (same parameters and rows).
pub const SC_ORDER_DETAILS_METHOD: &str = "taobao.tbk.sc.order.details.get";
/// The refund (维权) feed.
pub const RELATION_REFUND_METHOD: &str = "taobao.tbk.relation.refund";

/// TOP's default `page_size`.
const DEFAULT_PAGE_SIZE: u32 = 20;

/// A TOP error: `{"error_response":{"code":…,"msg":…,"sub_code":…,"sub_msg":…,"request_id":…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopError {
    code: u32,
    msg: String,
    sub_code: Option<&'static str>,
    sub_msg: Option<String>,
}

impl TopError {
    fn platform(code: u32, msg: &str) -> Self {
        TopError { code, msg: msg.to_owned(), sub_code: None, sub_msg: None }
    }

    /// A business-parameter error: code 15, `isv.invalid-parameter`.
    pub(crate) fn invalid_param(sub_msg: impl Into<String>) -> Self {
        TopError {
            code: 15,
            msg: "Remote service error".to_owned(),
            sub_code: Some("isv.invalid-parameter"),
            sub_msg: Some(sub_msg.into()),
        }
    }

    fn missing_arg(name: &str) -> Self {
        TopError {
            code: 40,
            msg: format!("Missing required arguments:{name}"),
            sub_code: Some("isv.missing-parameter"),
            sub_msg: Some(name.to_owned()),
        }
    }

    fn to_json(&self, request_id: &str) -> Value {
        let mut body = Map::new();
        body.insert("code".into(), self.code.into());
        body.insert("msg".into(), self.msg.clone().into());
        if let Some(sub_code) = self.sub_code {
            body.insert("sub_code".into(), sub_code.into());
        }
        if let Some(sub_msg) = &self.sub_msg {
            body.insert("sub_msg".into(), sub_msg.clone().into());
        }
        body.insert("request_id".into(), request_id.into());
        json!({ "error_response": body })
    }
}

/// Request parameters, merged from the query string and (for POST) the form body; a name
/// given twice keeps its last value.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(pub BTreeMap<String, String>);

impl Params {
    /// A non-empty value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, TopError> {
        self.get(name)
            .map(|v| v.trim().parse::<T>().map_err(|_| TopError::invalid_param(format!("{name}参数格式错误"))))
            .transpose()
    }

    pub fn time(&self, name: &str) -> Result<Option<i64>, TopError> {
        self.get(name)
            .map(|v| {
                parse_beijing(v)
                    .ok_or_else(|| TopError::invalid_param(format!("{name}格式错误，应为yyyy-MM-dd HH:mm:ss")))
            })
            .transpose()
    }

    /// `page_no` (default 1, at least 1) and `page_size` (default 20, 1..=max).
    pub fn paging(&self, max_page_size: u32) -> Result<(u32, u32), TopError> {
        let page_no = self.number::<u32>("page_no")?.unwrap_or(1);
        if page_no == 0 {
            return Err(TopError::invalid_param("page_no必须大于0"));
        }
        let page_size = self.number::<u32>("page_size")?.unwrap_or(DEFAULT_PAGE_SIZE.min(max_page_size));
        if page_size == 0 || page_size > max_page_size {
            return Err(TopError::invalid_param(format!("page_size取值范围为1~{max_page_size}")));
        }
        Ok((page_no, page_size))
    }
}

/// Checks a `[start, end]` window against the network's limit.
pub(crate) fn check_window(start_ms: i64, end_ms: i64, max_window_ms: i64) -> Result<(), TopError> {
    if end_ms < start_ms {
        return Err(TopError::invalid_param("结束时间不能早于开始时间"));
    }
    if end_ms - start_ms > max_window_ms {
        return Err(TopError::invalid_param(format!("查询时间跨度不能超过{}", span_text(max_window_ms))));
    }
    Ok(())
}

fn span_text(ms: i64) -> String {
    if ms % HOUR_MS == 0 {
        format!("{}小时", ms / HOUR_MS)
    } else if ms % 60_000 == 0 {
        format!("{}分钟", ms / 60_000)
    } else {
        format!("{}秒", ms / 1000)
    }
}

/// `taobao.tbk.order.details.get` → `tbk_order_details_get_response`, TOP's naming rule.
fn response_key(method: &str) -> String {
    format!("{}_response", method.strip_prefix("taobao.").unwrap_or(method).replace('.', "_"))
}

/// `GET|POST /router/rest`. TOP answers errors with HTTP 200 and an `error_response` body, and
/// so does this.
pub(crate) async fn gateway(
    State(state): State<Arc<SimState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let request_id = state.next_request_id();
    let mut params = Params::default();
    if let Some(query) = query {
        params.0.extend(url::form_urlencoded::parse(query.as_bytes()).into_owned());
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if method == Method::POST
        && (content_type.is_empty() || content_type.starts_with("application/x-www-form-urlencoded"))
    {
        params.0.extend(url::form_urlencoded::parse(&body).into_owned());
    }
    let api = params.get("method").unwrap_or("").to_owned();
    let answer = match dispatch(&state, &params) {
        Ok(mut inner) => {
            inner.insert("request_id".into(), request_id.clone().into());
            tracing::debug!(top.method = %api, request_id, "answered");
            let mut outer = Map::new();
            outer.insert(response_key(&api), Value::Object(inner));
            Value::Object(outer)
        }
        Err(error) => {
            tracing::debug!(top.method = %api, top.code = error.code, top.sub_msg = ?error.sub_msg, "refused");
            error.to_json(&request_id)
        }
    };
    Json(answer).into_response()
}

fn dispatch(state: &SimState, params: &Params) -> Result<Map<String, Value>, TopError> {
    let method = params.get("method").ok_or_else(|| TopError::platform(21, "Missing method"))?;
    if ![ORDER_DETAILS_METHOD, SC_ORDER_DETAILS_METHOD, RELATION_REFUND_METHOD].contains(&method) {
        return Err(TopError::platform(22, "Invalid method"));
    }
    authenticate(state, params)?;
    let now_ms = state.clock.now_ms();
    if method == RELATION_REFUND_METHOD {
        refunds::relation_refund(state, params, now_ms)
    } else {
        orders::order_details(state, params, now_ms)
    }
}

fn authenticate(state: &SimState, params: &Params) -> Result<(), TopError> {
    let app_key = params.get("app_key").ok_or_else(|| TopError::platform(28, "Missing app key"))?;
    if app_key != state.config.app_key {
        return Err(TopError::platform(29, "Invalid app key"));
    }
    let timestamp = params.get("timestamp").ok_or_else(|| TopError::platform(30, "Missing timestamp"))?;
    if parse_beijing(timestamp).is_none() && timestamp.parse::<i64>().is_err() {
        return Err(TopError::platform(31, "Invalid timestamp"));
    }
    if params.get("format").is_some_and(|f| f != "json") {
        return Err(TopError::platform(23, "Invalid format"));
    }
    if params.get("sign_method") != Some("hmac-sha256") {
        return Err(TopError {
            code: 41,
            msg: "Invalid arguments:sign_method".to_owned(),
            sub_code: Some("isv.invalid-parameter"),
            sub_msg: Some("sign_method仅支持hmac-sha256".to_owned()),
        });
    }
    if params.get("sign").is_none() {
        return Err(TopError::platform(24, "Missing signature"));
    }
    if !verify_top_sign(&params.0, &state.config.app_secret) {
        return Err(TopError::platform(25, "Invalid signature"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_keys_follow_top_naming() {
        assert_eq!(response_key(ORDER_DETAILS_METHOD), "tbk_order_details_get_response");
        assert_eq!(response_key(SC_ORDER_DETAILS_METHOD), "tbk_sc_order_details_get_response");
        assert_eq!(response_key(RELATION_REFUND_METHOD), "tbk_relation_refund_response");
    }

    #[test]
    fn the_window_limit_is_inclusive_and_named_in_hours() {
        assert_eq!(check_window(0, 3 * HOUR_MS, 3 * HOUR_MS), Ok(()));
        let err = check_window(0, 3 * HOUR_MS + 1000, 3 * HOUR_MS).unwrap_err();
        assert_eq!(err.sub_msg.as_deref(), Some("查询时间跨度不能超过3小时"));
        assert!(check_window(10, 0, 3 * HOUR_MS).is_err());
        assert_eq!(span_text(20 * 60_000), "20分钟");
    }
}
