//! The one error type every storage trait returns, with the cases callers branch on.

/// What went wrong in a storage call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row the call needs does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule would be broken (a taken username, a SKU the merchant already has).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// A referenced row does not exist (a product naming an unknown category).
    #[error("referenced {0} does not exist")]
    MissingReference(&'static str),
    /// A conditional write found the row in a different state (stale version, not enough stock).
    #[error("condition failed: {0}")]
    ConditionFailed(&'static str),
    /// The store cannot be reached right now (connection refused, pool exhausted or closed).
    #[error("store unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Stored data broke a rule the code relies on; a bug or a hand edit.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// The table holding the bad row.
        table: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// The store's connection settings are unusable (an unknown URL scheme).
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// Anything else from the driver.
    #[error("store error")]
    Other(#[source] sqlx::Error),
    /// An error of the embedded store's own writer (`rusqlite`, on the writer's connection).
    #[error("store error")]
    Embedded(#[source] rusqlite::Error),
}

impl StoreError {
    /// Whether the database aborted the transaction to break a deadlock (or a lock wait ran
    /// out); running the whole transaction again is the documented remedy.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Other(sqlx::Error::Database(db)) => {
                db.code().is_some_and(|c| {
                    c == "40001" || c == "1213" || c == "1205" || c == "HY000" && db.message().contains("Deadlock")
                }) || db.message().contains("Deadlock found")
            }
            _ => false,
        }
    }

    /// "The store is unavailable" without a driver error of its own: a breaker failing fast, or
    /// one failure reported to several callers.
    pub fn unavailable() -> Self {
        StoreError::Unavailable(sqlx::Error::PoolTimedOut)
    }

    /// Whether the error means "try later, the store is down" rather than "this request is wrong".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            sqlx::Error::RowNotFound => StoreError::NotFound("row"),
            other => StoreError::Other(other),
        }
    }
}

/// Maps constraint violations of a write to the business meaning the caller gives them.
///
/// `unique` names what a unique-key violation means here; `reference` what a foreign-key
/// violation means. Every other error goes through the plain `From<sqlx::Error>`.
pub(crate) fn on_write(e: sqlx::Error, unique: &'static str, reference: &'static str) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if db.is_unique_violation() {
            return StoreError::Conflict(unique);
        }
        if db.is_foreign_key_violation() {
            return StoreError::MissingReference(reference);
        }
    }
    StoreError::from(e)
}
