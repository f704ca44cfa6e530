//! Signed, expiring access tokens (JWT, HS256), verified from the key alone: no store round
//! trip on the hot path. The token carries the account id, its role and, for a merchant
//! account, the merchant it runs.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use flashback_core::{MerchantId, Role, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::http::Problem;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mid: Option<String>,
    iat: u64,
    exp: u64,
}

/// Keys and rules for issuing and checking tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    /// Tokens already verified, by their exact text: a buyer sends the same token with every
    /// request, and decoding and checking it (base64, JSON, HMAC) cost more than the rest of a
    /// refused purchase. A hit still checks the expiry; a verdict older than [`VERIFIED_FOR`]
    /// is checked again, and the least used are evicted when the cache is full. Tokens are
    /// not revocable (they are checked from the key alone), so remembering a verdict changes
    /// no answer.
    verified: quick_cache::sync::Cache<Box<str>, Verdict>,
}

/// A remembered verification: who the token stands for, its expiry and when it was checked
/// (Unix seconds).
#[derive(Debug, Clone, Copy)]
struct Verdict {
    caller: Caller,
    exp: u64,
    checked_at: u64,
}

/// How long a verified token is remembered before it is verified again.
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// Verified tokens remembered at most.
const VERIFIED_MAX: usize = 100_000;

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from the configured secret, or from `data_dir/token.key` (created on first use).
    pub fn load(secret: Option<&SecretString>, data_dir: &Path, ttl: Duration) -> anyhow::Result<Self> {
        let bytes = match secret {
            Some(s) => s.expose_secret().as_bytes().to_vec(),
            None => crate::keys::key_file(data_dir, "token.key", "auth.token_secret")?,
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(&bytes),
            decoding: DecodingKey::from_secret(&bytes),
            validation,
            ttl,
            verified: quick_cache::sync::Cache::new(VERIFIED_MAX),
        })
    }

    /// How long issued tokens last.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for this account.
    pub fn issue(&self, user: UserId, role: Role, merchant: Option<MerchantId>) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub: user.to_string(),
            role,
            mid: merchant.map(|m| m.to_string()),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    /// The caller a token stands for, if its signature and expiry check out.
    pub fn verify(&self, token: &str) -> Option<Caller> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        if let Some(v) = self.verified.get(token)
            && now.saturating_sub(v.checked_at) < VERIFIED_FOR.as_secs()
        {
            // The same rule as the full check: expired once `exp` is more than the leeway past.
            return (v.exp.saturating_add(self.validation.leeway) >= now).then_some(v.caller);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        let c = data.claims;
        let caller = Caller {
            id: UserId::parse(&c.sub).ok()?,
            role: c.role,
            merchant: match c.mid {
                Some(m) => Some(MerchantId::parse(&m).ok()?),
                None => None,
            },
        };
        self.verified.insert(token.into(), Verdict { caller, exp: c.exp, checked_at: now });
        Some(caller)
    }
}

/// The authenticated caller of a request, from its bearer token.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The account.
    pub id: UserId,
    /// Its role when the token was issued.
    pub role: Role,
    /// The merchant it runs, for merchant accounts.
    pub merchant: Option<MerchantId>,
}

impl Caller {
    /// 403 `forbidden` unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), Problem> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(Problem::new(StatusCode::FORBIDDEN, "forbidden", "your role may not do this"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthenticated("unauthenticated", "send Authorization: Bearer <token>"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or_else(|| unauthenticated("unauthenticated", "send Authorization: Bearer <token>"))?;
        state
            .auth
            .tokens
            .verify(token.trim())
            .ok_or_else(|| unauthenticated("invalid_token", "the token is invalid or expired"))
    }
}

fn unauthenticated(code: &'static str, detail: &'static str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, code, detail).challenge_bearer()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::load(
            Some(&SecretString::from(secret.to_owned())),
            Path::new("/nonexistent"),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    #[test]
    fn a_token_verifies_with_its_key_and_not_with_another() {
        let a = keys("a-secret-that-is-at-least-32-bytes-long");
        let b = keys("b-secret-that-is-at-least-32-bytes-long");
        let token = a.issue(UserId::new(7).unwrap(), Role::Merchant, Some(MerchantId::new(9).unwrap())).unwrap();
        let caller = a.verify(&token).unwrap();
        assert_eq!((caller.id.get(), caller.role, caller.merchant.map(MerchantId::get)), (7, Role::Merchant, Some(9)));
        assert!(b.verify(&token).is_none());
        let mut tampered = token.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert!(a.verify(&tampered).is_none());
        assert!(a.verify("not.a.token").is_none());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let a = keys("a-secret-that-is-at-least-32-bytes-long");
        let claims = Claims { sub: "7".into(), role: Role::Admin, mid: None, iat: 1, exp: 2 };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &a.encoding).unwrap();
        assert!(a.verify(&token).is_none());
    }

    #[test]
    fn a_remembered_token_answers_as_before_and_expires_on_time() {
        let a = keys("a-secret-that-is-at-least-32-bytes-long");
        let token = a.issue(UserId::new(7).unwrap(), Role::User, None).unwrap();
        let first = a.verify(&token).unwrap();
        let again = a.verify(&token).unwrap();
        assert_eq!((first.id, first.role), (again.id, again.role));
        // A verdict remembered for a token whose expiry has since passed is not used.
        let claims = Claims { sub: "8".into(), role: Role::User, mid: None, iat: 1, exp: 2 };
        let stale = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &a.encoding).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        a.verified.insert(stale.as_str().into(), Verdict { caller: first, exp: 2, checked_at: now });
        assert!(a.verify(&stale).is_none());
        // A verdict older than VERIFIED_FOR is checked again: this one, forged into the cache
        // for a token that does not verify, is not believed once it is old.
        let forged = "not.a.token";
        a.verified.insert(forged.into(), Verdict { caller: first, exp: now + 3600, checked_at: now });
        assert!(a.verify(forged).is_some(), "a fresh verdict is used as it stands");
        let old = now - VERIFIED_FOR.as_secs();
        a.verified.insert(forged.into(), Verdict { caller: first, exp: now + 3600, checked_at: old });
        assert!(a.verify(forged).is_none());
        // Nor does the cache let another key's token in.
        let b = keys("b-secret-that-is-at-least-32-bytes-long");
        assert!(b.verify(&token).is_none());
    }
}
