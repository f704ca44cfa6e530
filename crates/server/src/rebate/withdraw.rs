//! Withdrawals: a user asks, the funds are held at once (a guarded ledger move, so racing
//! requests cannot take more than is available), an admin approves or rejects with a reason,
//! and an approved withdrawal is paid through a [`Payouts`] provider that is idempotent on our
//! transfer number. A failed payout releases the hold; an approved withdrawal whose payout
//! outcome was not heard (a crash, a timeout) is retried by the sweeper with the same number.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use flashback_core::{Account, Role};
use flashback_store::{NewTxn, Posting, WithdrawRefusal, Withdrawal, WithdrawalMove, WithdrawalState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::{Json, Path};
use crate::trade::now_ms;

/// What a payout provider said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payout {
    /// Paid; the provider's reference.
    Paid(String),
    /// Refused for good (bad payee, risk control); the reason.
    Failed(String),
}

/// A payout provider (Alipay's transfer-to-account, say). Calls with the same transfer
/// number must pay at most once and answer the same.
#[async_trait]
pub trait Payouts: Send + Sync + std::fmt::Debug {
    /// Pays `amount_minor` to `payee` under `transfer_no`; `Err` if the outcome is unknown.
    async fn transfer(&self, transfer_no: &str, payee: &str, amount_minor: i64) -> Result<Payout, String>;
}

/// A stand-in for Alipay's transfer API: idempotent on the transfer number, and failing for
/// payees whose account starts with `fail` (`PAYEE_NOT_EXIST`), so failures can be exercised.
#[derive(Debug, Default)]
pub struct SimulatedAlipay {
    done: Mutex<HashMap<String, (String, i64, Payout)>>,
}

impl SimulatedAlipay {
    /// How many distinct transfers were made (for tests: retries never pay twice).
    pub fn transfers(&self) -> usize {
        self.done.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[async_trait]
impl Payouts for SimulatedAlipay {
    async fn transfer(&self, transfer_no: &str, payee: &str, amount_minor: i64) -> Result<Payout, String> {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, a, outcome)) = done.get(transfer_no) {
            if p != payee || *a != amount_minor {
                return Err("transfer number reused with other details".into());
            }
            return Ok(outcome.clone());
        }
        let outcome = if payee.starts_with("fail") {
            Payout::Failed("PAYEE_NOT_EXIST".into())
        } else {
            Payout::Paid(format!("2088{:012}", done.len() + 1))
        };
        done.insert(transfer_no.to_owned(), (payee.to_owned(), amount_minor, outcome.clone()));
        Ok(outcome)
    }
}

fn txn(state: &AppState, key: String, kind: &str, w: &Withdrawal, postings: Vec<Posting>, guard: bool) -> NewTxn {
    NewTxn {
        id: state.ids.write_ids().event,
        key,
        kind: kind.into(),
        reference: format!("withdrawal:{}", w.id),
        postings,
        no_overdraft: if guard { vec![Account::Available(w.user_id)] } else { Vec::new() },
        at_ms: now_ms(),
    }
}

/// Moves the held funds back to available.
fn release(state: &AppState, w: &Withdrawal, why: &str) -> NewTxn {
    let a = w.amount_minor;
    txn(
        state,
        format!("withdrawal:{}:release", w.id),
        &format!("withdrawal.{why}"),
        w,
        vec![Posting::debit(Account::Withdrawing(w.user_id), a), Posting::credit(Account::Available(w.user_id), a)],
        false,
    )
}

/// A withdrawal as its owner and reviewers see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalView {
    pub id: String,
    pub user_id: String,
    pub amount_minor: i64,
    pub payee: String,
    /// `requested`, `approved`, `paid`, `rejected` or `failed`.
    pub state: &'static str,
    pub transfer_no: String,
    pub reason: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<&Withdrawal> for WithdrawalView {
    fn from(w: &Withdrawal) -> Self {
        Self {
            id: w.id.to_string(),
            user_id: w.user_id.to_string(),
            amount_minor: w.amount_minor,
            payee: w.payee.clone(),
            state: w.state.as_str(),
            transfer_no: w.transfer_no.clone(),
            reason: w.reason.clone(),
            created_at_ms: w.created_at_ms,
            updated_at_ms: w.updated_at_ms,
        }
    }
}

/// A withdrawal request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawBody {
    /// How much, in minor units (at least `rebate.withdraw_min_minor`).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount_minor: i64,
    /// The Alipay account to pay: 1–64 characters, no control characters.
    #[schema(value_type = crate::http::schema::Text64)]
    pub payee: String,
}

/// Ask to withdraw: the amount is held from your available balance at once.
#[utoipa::path(post, path = "/api/v1/me/withdrawals", tag = "rebates", security(("bearer" = [])),
    request_body = WithdrawBody,
    responses((status = 201, body = WithdrawalView), (status = 409, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem)))]
pub async fn request(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<WithdrawBody>,
) -> Result<(StatusCode, axum::Json<WithdrawalView>), Problem> {
    let min = state.config.rebate.withdraw_min_minor;
    if body.amount_minor < min || body.amount_minor > flashback_core::money::MAX_MINOR {
        return Err(Problem::invalid(format!("amount_minor: at least {min}")));
    }
    let payee = body.payee.trim();
    if payee.is_empty() || payee.chars().count() > 64 || payee.chars().any(char::is_control) {
        return Err(Problem::invalid("payee: 1 to 64 characters"));
    }
    let now = now_ms();
    let id = state.ids.write_ids().event;
    let w = Withdrawal {
        id,
        user_id: caller.id,
        amount_minor: body.amount_minor,
        payee: payee.to_owned(),
        state: WithdrawalState::Requested,
        transfer_no: format!("FBW{id}"),
        reason: None,
        reviewer_id: None,
        provider_ref: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let a = w.amount_minor;
    let hold = txn(
        &state,
        format!("withdrawal:{id}:hold"),
        "withdrawal.hold",
        &w,
        vec![Posting::debit(Account::Available(caller.id), a), Posting::credit(Account::Withdrawing(caller.id), a)],
        true,
    );
    let day = now.div_euclid(86_400_000);
    let limit = state.config.rebate.withdraw_daily_count;
    match state.store.request_withdrawal(&w, day, limit, &hold).await {
        Ok(()) => Ok((StatusCode::CREATED, axum::Json(WithdrawalView::from(&w)))),
        Err(WithdrawRefusal::DailyLimit) => {
            let wait = u64::try_from((day + 1) * 86_400_000 - now).unwrap_or(0) / 1000 + 1;
            Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "withdrawal_limit_reached",
                format!("at most {limit} withdrawals a day"),
            )
            .retry_after(wait))
        }
        Err(WithdrawRefusal::Overdraft) => {
            Err(Problem::new(StatusCode::CONFLICT, "insufficient_balance", "your available balance is too low"))
        }
        Err(WithdrawRefusal::Ledger(e)) => Err(super::RebateError::Ledger(e).into()),
    }
}

/// A review decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// `approve` or `reject`.
    #[schema(value_type = crate::http::schema::Decision)]
    pub decision: String,
    /// Why (required to reject).
    pub reason: Option<String>,
}

/// Approve (and pay) or reject a requested withdrawal (admins).
#[utoipa::path(post, path = "/api/v1/admin/withdrawals/{id}/review", tag = "rebates", security(("bearer" = [])),
    params(("id" = String, Path, description = "Withdrawal id")), request_body = ReviewBody,
    responses((status = 200, body = WithdrawalView), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn review(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ReviewBody>,
) -> Result<axum::Json<WithdrawalView>, Problem> {
    caller.require(&[Role::Admin])?;
    let not_found = || Problem::not_found("withdrawal_not_found", "withdrawal");
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let w = state.store.withdrawal(id).await.map_err(|e| Problem::from_store(&e))?.ok_or_else(not_found)?;
    let wrong_state =
        || Problem::new(StatusCode::CONFLICT, "invalid_transition", "only a requested withdrawal can be reviewed");
    let ledger = |e| Problem::from(super::RebateError::Ledger(e));
    match body.decision.as_str() {
        "reject" => {
            let reason = body.reason.as_deref().map(str::trim).filter(|r| !r.is_empty() && r.chars().count() <= 255);
            let reason = reason.ok_or_else(|| Problem::invalid("reason: 1 to 255 characters, required to reject"))?;
            let release = release(&state, &w, "rejected");
            let moved = state
                .store
                .move_withdrawal(WithdrawalMove {
                    id,
                    from: WithdrawalState::Requested,
                    to: WithdrawalState::Rejected,
                    reason: Some(reason),
                    reviewer: Some(caller.id),
                    provider_ref: None,
                    txn: Some(&release),
                })
                .await
                .map_err(ledger)?
                .ok_or_else(wrong_state)?;
            Ok(axum::Json(WithdrawalView::from(&moved)))
        }
        "approve" => {
            let approved = state
                .store
                .move_withdrawal(WithdrawalMove {
                    id,
                    from: WithdrawalState::Requested,
                    to: WithdrawalState::Approved,
                    reason: None,
                    reviewer: Some(caller.id),
                    provider_ref: None,
                    txn: None,
                })
                .await
                .map_err(ledger)?
                .ok_or_else(wrong_state)?;
            let done = pay(&state, &approved).await.map_err(ledger)?.unwrap_or(approved);
            Ok(axum::Json(WithdrawalView::from(&done)))
        }
        _ => Err(Problem::invalid("decision: approve or reject")),
    }
}

/// Pays an approved withdrawal (again, after a crash: the provider is idempotent on the
/// transfer number). Returns the withdrawal as it ended, or `None` if the outcome is unknown
/// (it stays approved and the sweeper retries).
pub async fn pay(state: &AppState, w: &Withdrawal) -> Result<Option<Withdrawal>, flashback_store::LedgerError> {
    let outcome = match state.payouts.transfer(&w.transfer_no, &w.payee, w.amount_minor).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(withdrawal.id = w.id, error = %e, "payout outcome unknown; will retry");
            return Ok(None);
        }
    };
    let a = w.amount_minor;
    match outcome {
        Payout::Paid(reference) => {
            let paid = txn(
                state,
                format!("withdrawal:{}:paid", w.id),
                "withdrawal.paid",
                w,
                vec![Posting::debit(Account::Withdrawing(w.user_id), a), Posting::credit(Account::Cash, a)],
                false,
            );
            state
                .store
                .move_withdrawal(WithdrawalMove {
                    id: w.id,
                    from: WithdrawalState::Approved,
                    to: WithdrawalState::Paid,
                    reason: None,
                    reviewer: None,
                    provider_ref: Some(&reference),
                    txn: Some(&paid),
                })
                .await
        }
        Payout::Failed(why) => {
            let release = release(state, w, "failed");
            state
                .store
                .move_withdrawal(WithdrawalMove {
                    id: w.id,
                    from: WithdrawalState::Approved,
                    to: WithdrawalState::Failed,
                    reason: Some(&why),
                    reviewer: None,
                    provider_ref: None,
                    txn: Some(&release),
                })
                .await
        }
    }
}

/// Pays approved withdrawals whose outcome was never recorded. Returns how many finished.
pub async fn retry_approved(state: &AppState) -> Result<usize, super::RebateError> {
    let approved = state.store.withdrawals(None, Some(WithdrawalState::Approved), None, 100).await?;
    let mut finished = 0;
    for w in &approved {
        if pay(state, w).await?.is_some() {
            finished += 1;
        }
    }
    Ok(finished)
}
