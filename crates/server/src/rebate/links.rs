//! Links, clicks and claims.
//!
//! - `POST /api/v1/me/links`: converts an item link into the user's tracked link: a short code
//!   whose redirect target carries the user's tracking (`sub_id=<code>`, and the user's
//!   network ids when bound).
//! - `GET /r/{code}`: records the click (time, a keyed hash of the client address — never the
//!   address itself — and the user agent) and redirects.
//! - `POST /api/v1/me/rebate-claims`: a user claims an order the network could not attribute
//!   (no tracking id on its rows), by its order number. Accepted only if no one holds it and the
//!   user clicked a link to its item shortly before it was paid; otherwise refused and kept for
//!   review. Attribution then moves the shares from the platform to the user through the ingest
//!   path.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use super::ingest;
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::client_ip::ClientIp;
use crate::http::extract::{Json, Path};
use crate::trade::now_ms;

/// How long before an order's payment a click on its item still counts for a claim.
pub const CLAIM_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// A link to convert.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// The network's item id.
    #[schema(value_type = crate::http::schema::Code64)]
    pub item_id: String,
    /// The item's page at the network (`https://…`, at most 900 characters).
    #[schema(value_type = crate::http::schema::HttpsUrl)]
    pub url: String,
}

/// A tracked link.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkView {
    pub code: String,
    /// Share this: `/r/<code>` on this server.
    pub short_path: String,
    /// Where it redirects, with your tracking embedded.
    pub target_url: String,
}

fn code() -> String {
    const ALPHABET: &[u8] = b"23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";
    (0..10).map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())])).collect()
}

/// Convert an item link into your tracked short link.
#[utoipa::path(post, path = "/api/v1/me/links", tag = "rebates", security(("bearer" = [])), request_body = LinkBody,
    responses((status = 201, body = LinkView), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<LinkBody>,
) -> Result<(StatusCode, axum::Json<LinkView>), Problem> {
    let item = body.item_id.trim();
    if item.is_empty() || item.len() > 64 || !item.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Problem::invalid("item_id: 1 to 64 letters, digits, - or _"));
    }
    let url = url::Url::parse(body.url.trim()).map_err(|_| Problem::invalid("url: not a URL"))?;
    if url.scheme() != "https" || url.host_str().is_none() || body.url.len() > 900 {
        return Err(Problem::invalid("url: an https URL of at most 900 characters"));
    }
    for _ in 0..5 {
        let code = code();
        let mut target = url.clone();
        target.query_pairs_mut().append_pair("sub_id", &code);
        let link = flashback_store::Link {
            code: code.clone(),
            user_id: caller.id,
            item_id: item.to_owned(),
            target_url: target.to_string(),
            created_at_ms: now_ms(),
        };
        match state.store.create_link(&link).await {
            Ok(()) => {
                return Ok((
                    StatusCode::CREATED,
                    axum::Json(LinkView { short_path: format!("/r/{code}"), code, target_url: link.target_url }),
                ));
            }
            Err(flashback_store::StoreError::Conflict(_)) => continue,
            Err(e) => return Err(Problem::from_store(&e)),
        }
    }
    Err(Problem::unavailable("busy", "could not pick a free code; retry").retry_after(1))
}

fn ip_hash(key: &[u8], ip: std::net::IpAddr) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(ip.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Follow a tracked link: the click is recorded and you are redirected.
#[utoipa::path(get, path = "/r/{code}", tag = "rebates", params(("code" = String, Path, description = "Link code")),
    responses((status = 302, description = "To the item, tracking embedded"), (status = 404, body = Problem)))]
pub async fn follow(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, Problem> {
    let not_found = || Problem::not_found("link_not_found", "link");
    if code.is_empty() || code.len() > 16 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(not_found());
    }
    let link = state.store.link(&code).await.map_err(|e| Problem::from_store(&e))?.ok_or_else(not_found)?;
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let click = flashback_store::Click {
        id: state.ids.write_ids().event,
        code: link.code.clone(),
        user_id: link.user_id,
        item_id: link.item_id.clone(),
        at_ms: now_ms(),
        ip_hash: ip_hash(&state.rebate.click_key, ip),
        user_agent: agent.chars().take(255).collect(),
    };
    if let Err(e) = state.store.record_click(&click).await {
        // The visitor still gets where they were going; the click is lost, and logged.
        tracing::warn!(link = %link.code, error = %e, "click not recorded");
    }
    let location = HeaderValue::from_str(&link.target_url).map_err(|_| not_found())?;
    Ok((
        StatusCode::FOUND,
        [(header::LOCATION, location), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
    ))
}

/// A claim of an order by its number.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// The network's order number (`trade_parent_id`) or line number (`trade_id`).
    #[schema(value_type = crate::http::schema::Code64)]
    pub order_no: String,
}

/// What a claim did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimView {
    /// The line items now yours.
    pub claimed: Vec<String>,
}

/// Claim an order the network could not attribute, by its order number.
#[utoipa::path(post, path = "/api/v1/me/rebate-claims", tag = "rebates", security(("bearer" = [])),
    request_body = ClaimBody,
    responses((status = 200, body = ClaimView), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<ClaimBody>,
) -> Result<axum::Json<ClaimView>, Problem> {
    let no = body.order_no.trim();
    if no.is_empty() || no.len() > 64 || !no.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(Problem::invalid("order_no: 1 to 64 letters, digits, - or _"));
    }
    let store_err = |e: flashback_store::StoreError| Problem::from_store(&e);
    let source = super::taobao::SOURCE;
    let mut rows = state.store.rebate_orders_of_parent(source, no).await.map_err(store_err)?;
    if rows.is_empty() {
        rows.extend(state.store.rebate_order(source, no).await.map_err(store_err)?);
    }
    if rows.is_empty() {
        return Err(Problem::not_found("order_not_found", "order (it may not be reported yet)"));
    }
    let refuse = |code: &'static str, status: StatusCode, why: &str| Problem::new(status, code, why.to_owned());
    if rows.iter().any(|r| r.user_id.is_some_and(|u| u != caller.id)) {
        let why = format!("claim of order {no} held by another user");
        ingest::reject(&state, source, Some(no), &why, &caller.id.to_string()).await;
        return Err(refuse("already_attributed", StatusCode::CONFLICT, "this order belongs to someone else"));
    }
    let mut claimed = Vec::new();
    for row in rows.iter().filter(|r| r.user_id.is_none()) {
        let paid = row.paid_at_ms.unwrap_or(row.created_at_ms);
        let from = row.click_ms.map_or(paid - CLAIM_WINDOW_MS, |c| c - 10 * 60 * 1000);
        if !state.store.clicked(caller.id, &row.item_id, from, paid).await.map_err(store_err)? {
            let why = format!("claim of order {no}: no click on item {} before it was paid", row.item_id);
            ingest::reject(&state, source, Some(&row.line_key), &why, &caller.id.to_string()).await;
            return Err(refuse(
                "claim_not_verified",
                StatusCode::UNPROCESSABLE_ENTITY,
                "you did not follow a link to this item shortly before the order was paid",
            ));
        }
        ingest::reevaluate(&state, row, Some(caller.id)).await.map_err(Problem::from)?;
        claimed.push(row.line_key.clone());
    }
    Ok(axum::Json(ClaimView { claimed }))
}
