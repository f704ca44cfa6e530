//! Password hashing with argon2id, always off the async runtime and with bounded parallelism.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use flashback_core::Password;
use tokio::sync::Semaphore;

/// Hashes and verifies passwords on the blocking pool, at most one per core at a time, so a
/// burst of logins cannot starve everything else of CPU.
#[derive(Clone)]
pub struct PasswordHasherPool {
    params: Params,
    permits: Arc<Semaphore>,
    /// A real hash of nothing anyone knows, verified when the username does not exist so that
    /// a login for an unknown name costs the same as one for a known name.
    decoy: Arc<String>,
}

impl std::fmt::Debug for PasswordHasherPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasherPool").field("params", &self.params).finish_non_exhaustive()
    }
}

impl PasswordHasherPool {
    /// A pool using argon2id with `memory_kib` and `iterations`.
    pub fn new(memory_kib: u32, iterations: u32) -> anyhow::Result<Self> {
        let params = Params::new(memory_kib, iterations, 1, None).map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let decoy = hash_with(&params, "decoy password that nobody has")?;
        Ok(Self { params, permits: Arc::new(Semaphore::new(cores)), decoy: Arc::new(decoy) })
    }

    /// The PHC string for `password`.
    pub async fn hash(&self, password: Password) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_with(&params, password.expose())).await?
    }

    /// Whether `password` matches `phc`; with `None`, checks against the decoy and returns false.
    pub async fn verify(&self, password: Password, phc: Option<String>) -> anyhow::Result<bool> {
        let _permit = self.permits.acquire().await?;
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.decoy.as_ref().clone());
        let ok = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("stored hash unreadable: {e}"))?;
            // The stored hash carries its own parameters, so older hashes keep verifying.
            Ok::<_, anyhow::Error>(Argon2::default().verify_password(password.expose().as_bytes(), &parsed).is_ok())
        })
        .await??;
        Ok(ok && known)
    }
}

fn hash_with(params: &Params, password: &str) -> anyhow::Result<String> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon.hash_password(password.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("hashing: {e}"))?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_own_password_and_unknown_accounts_never_verify() {
        let pool = PasswordHasherPool::new(64, 1).unwrap();
        let pw = |s: &str| Password::parse(s.to_owned()).unwrap();
        let phc = pool.hash(pw("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(pool.verify(pw("correct horse"), Some(phc.clone())).await.unwrap());
        assert!(!pool.verify(pw("wrong horse!"), Some(phc)).await.unwrap());
        assert!(!pool.verify(pw("decoy password that nobody has"), None).await.unwrap());
    }
}
