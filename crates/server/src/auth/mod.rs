//! Accounts and authentication: register, log in, who am I; tokens, hashing and login limits.

mod limit;
mod password;
mod token;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use flashback_core::{MerchantId, Password, Role, Title, UserId, Username};
use flashback_store::{NewUser, Store, StoreError, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use limit::LoginLimiter;
pub use password::PasswordHasherPool;
pub use token::{Caller, TokenKeys};

use crate::AppState;
use crate::http::Problem;
use crate::http::client_ip::ClientIp;
use crate::http::extract::Json;

/// What the auth feature needs at run time.
#[derive(Debug)]
pub struct AuthService {
    /// Token keys.
    pub tokens: TokenKeys,
    /// Password hashing.
    pub hasher: PasswordHasherPool,
    /// Login limits.
    pub limiter: LoginLimiter,
}

/// The auth routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(register)).routes(routes!(login)).routes(routes!(me))
}

/// Credentials, for registering and logging in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsBody {
    /// 3–32 of letters, digits, `_ . -`; case-insensitive.
    #[schema(value_type = crate::http::schema::LoginName, example = "alice")]
    pub username: Username,
    /// 8–128 characters.
    #[schema(value_type = String, example = "correct horse battery", min_length = 8, max_length = 128)]
    pub password: Password,
}

/// An account as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// Account id (a string: ids are 64-bit).
    #[schema(value_type = String)]
    pub id: UserId,
    /// Login name.
    #[schema(value_type = String)]
    pub username: Username,
    /// `user`, `merchant` or `admin`.
    #[schema(value_type = String)]
    pub role: Role,
    /// The merchant this account runs, if any.
    #[schema(value_type = Option<String>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<MerchantId>,
}

impl UserView {
    fn new(u: User, merchant_id: Option<MerchantId>) -> Self {
        Self { id: u.id, username: u.username, role: u.role, merchant_id }
    }
}

/// A fresh access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Who it is for.
    pub user: UserView,
}

/// Creates an account (and, for a merchant account, its merchant). Used by the API, the CLI
/// and the demo loader alike.
pub async fn create_account(
    state: &AppState,
    username: Username,
    password: Password,
    role: Role,
    merchant_name: Option<Title>,
) -> Result<(User, Option<MerchantId>), CreateAccountError> {
    let password_hash = state.auth.hasher.hash(password).await.map_err(CreateAccountError::Unexpected)?;
    let id = state.ids.user();
    let user = state.store.create_user(NewUser { id, username: username.clone(), password_hash, role }).await.map_err(
        |e| match e {
            StoreError::Conflict(_) => CreateAccountError::UsernameTaken,
            other => CreateAccountError::Store(other),
        },
    )?;
    let merchant = if role == Role::Merchant {
        let name = match merchant_name {
            Some(n) => n,
            None => Title::parse(username.as_str()).map_err(|e| CreateAccountError::Unexpected(e.into()))?,
        };
        Some(
            state
                .store
                .create_merchant(state.ids.merchant(), user.id, name)
                .await
                .map_err(CreateAccountError::Store)?
                .id,
        )
    } else {
        None
    };
    Ok((user, merchant))
}

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    /// The username is taken.
    #[error("username is taken")]
    UsernameTaken,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// Anything else.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl From<CreateAccountError> for Problem {
    fn from(e: CreateAccountError) -> Self {
        match e {
            CreateAccountError::UsernameTaken => {
                Problem::new(StatusCode::CONFLICT, "username_taken", "that username is taken")
            }
            CreateAccountError::Store(e) => Problem::from_store(&e),
            CreateAccountError::Unexpected(e) => Problem::internal(e.as_ref()),
        }
    }
}

/// Register a shopper account.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = CredentialsBody,
    responses((status = 201, body = UserView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn register(
    State(state): State<AppState>,
    Json(body): Json<CredentialsBody>,
) -> Result<impl IntoResponse, Problem> {
    let (user, _) = create_account(&state, body.username, body.password, Role::User, None).await?;
    Ok((StatusCode::CREATED, axum::Json(UserView::new(user, None))))
}

/// Log in and get an access token. Wrong username and wrong password answer alike.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = CredentialsBody,
    responses((status = 200, body = TokenView), (status = 401, body = Problem), (status = 429, body = Problem)))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<CredentialsBody>,
) -> Result<axum::Json<TokenView>, Problem> {
    if let Err(refused) = state.auth.limiter.check(body.username.as_str(), ip) {
        state.metrics.login_rejected.get_or_create(&crate::metrics::ReasonLabel { reason: refused.reason }).inc();
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "too many login attempts; wait and retry",
        )
        .retry_after(whole_seconds_up(refused.retry_after)));
    }
    let creds = state.store.credentials(&body.username).await.map_err(|e| Problem::from_store(&e))?;
    let (user, hash) = match creds {
        Some(c) => (Some(c.user), Some(c.password_hash)),
        None => (None, None),
    };
    let ok = state.auth.hasher.verify(body.password, hash).await.map_err(|e| Problem::internal(e.as_ref()))?;
    let Some(user) = user.filter(|_| ok) else {
        state.metrics.login_rejected.get_or_create(&crate::metrics::ReasonLabel { reason: "credentials" }).inc();
        return Err(Problem::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong username or password"));
    };
    let merchant = merchant_of(state.store.as_ref(), &user).await?;
    let token = state.auth.tokens.issue(user.id, user.role, merchant).map_err(|e| Problem::internal(e.as_ref()))?;
    Ok(axum::Json(TokenView {
        token,
        token_type: "Bearer",
        expires_in: state.auth.tokens.ttl().as_secs(),
        user: UserView::new(user, merchant),
    }))
}

/// A duration in whole seconds, rounded up, for `Retry-After`.
fn whole_seconds_up(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

async fn merchant_of(store: &dyn Store, user: &User) -> Result<Option<MerchantId>, Problem> {
    if user.role != Role::Merchant {
        return Ok(None);
    }
    Ok(store.merchant_of(user.id).await.map_err(|e| Problem::from_store(&e))?.map(|m| m.id))
}

/// The calling account.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = Problem)))]
async fn me(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<UserView>, Problem> {
    let user = state.store.user(caller.id).await.map_err(|e| Problem::from_store(&e))?;
    // A valid token for a deleted account: the token outlived the account.
    let user =
        user.ok_or_else(|| Problem::new(StatusCode::UNAUTHORIZED, "invalid_token", "the account no longer exists"))?;
    Ok(axum::Json(UserView::new(user, caller.merchant)))
}

/// Keeps the login limiter's memory bounded.
pub fn spawn_limiter_pruning(state: &AppState) -> tokio::task::JoinHandle<()> {
    let auth = Arc::clone(&state.auth);
    let cancel = state.shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => auth.limiter.prune(),
            }
        }
    })
}
