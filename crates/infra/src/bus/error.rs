//! What can go wrong on the bus, in terms callers branch on.

use std::time::Duration;

use flashback_store::StoreError;

/// An error from the RabbitMQ bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The settings cannot work (an empty or oddly spelt prefix, a name too long for AMQP).
    #[error("invalid bus settings: {0}")]
    Invalid(String),
    /// A call to the broker took longer than its timeout.
    #[error("{op} timed out after {} ms", .after.as_millis())]
    Timeout {
        /// What was being done (`connect`, `publish`, `confirm`, `ack`, …).
        op: &'static str,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The broker refused to take responsibility for a published event.
    #[error("broker nacked event {event_id}")]
    Nacked {
        /// The first event it refused.
        event_id: i64,
    },
    /// The broker ended a consumer that was not asked to stop (its queue was deleted, the
    /// channel closed).
    #[error("consumer on {queue} was cancelled by the broker")]
    ConsumerCancelled {
        /// The full queue name.
        queue: String,
    },
    /// A delivery could not be acked or rejected because its channel had already closed; the
    /// broker redelivers it.
    #[error("the channel of {queue} closed before a delivery was settled")]
    ChannelClosed {
        /// The full queue name.
        queue: String,
    },
    /// The broker did not answer the last connection attempts; the bus fails fast until its
    /// breaker lets the next attempt through.
    #[error("rabbitmq circuit open")]
    CircuitOpen,
    /// The AMQP client failed (connection lost, channel closed, protocol error).
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The order shard failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BusError {
    /// Whether the broker side failed (the connection, a channel, the broker's answer): anything
    /// but a store failure or bad settings. The bus connects again by itself when the
    /// connection is found closed; this tells a caller to stop talking to the broker for now.
    pub fn is_broker_failure(&self) -> bool {
        !matches!(self, BusError::Store(_) | BusError::Invalid(_))
    }
}

/// Shorthand for bus results.
pub type BusResult<T> = Result<T, BusError>;

/// Runs `fut` for at most `after`; a late call becomes [`BusError::Timeout`].
pub(crate) async fn timed<T, E>(
    op: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> BusResult<T>
where
    BusError: From<E>,
{
    match tokio::time::timeout(after, fut).await {
        Ok(result) => result.map_err(BusError::from),
        Err(_) => Err(BusError::Timeout { op, after }),
    }
}

/// What an event handler's error says about its cause.
pub trait HandlerError: std::fmt::Display {
    /// Whether a dependency was unavailable (the store, Redis): the event did nothing wrong,
    /// so it waits and is tried again rather than counting an attempt towards dead-lettering.
    fn is_transient(&self) -> bool {
        false
    }
}

impl HandlerError for StoreError {
    fn is_transient(&self) -> bool {
        self.is_unavailable() || self.is_retryable()
    }
}

impl HandlerError for BusError {
    fn is_transient(&self) -> bool {
        match self {
            BusError::Store(e) => e.is_unavailable() || e.is_retryable(),
            other => other.is_broker_failure(),
        }
    }
}

impl HandlerError for &str {}

impl HandlerError for String {}
