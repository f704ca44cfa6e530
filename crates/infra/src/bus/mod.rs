//! The scaled-out event bus on RabbitMQ: the outbox relay and event consumers.
//!
//! The relay ([`RabbitBus::relay_once`], [`RabbitBus::spawn_relay`]) reads each order shard's
//! outbox and publishes the events, persistent and with publisher confirms, to the durable
//! topic exchange `<prefix>.events` with the event type as routing key; only confirmed events
//! are marked dispatched. Consumers ([`RabbitBus::consume`]) read durable queues bound to that
//! exchange, ack after their handler succeeds, retry failures with an attempt header, and send
//! what keeps failing to `<prefix>.dead-letters`. Delivery is at least once end to end; handlers
//! dedupe by event id ([`apply_once`]). A [`WorkQueue`] is a plain bounded work queue (publisher
//! confirms, prefetch, ack after the work) for queues that are not event subscriptions. The embedded dispatcher in the server plays the same part
//! in process when no broker is configured.

mod connection;
mod consumer;
mod dedupe;
mod error;
mod message;
mod relay;
mod replay;
mod work_queue;

pub use connection::{BusSettings, RabbitBus};
pub use consumer::Subscription;
pub use dedupe::apply_once;
pub use error::{BusError, BusResult, HandlerError};
pub use message::{AGGREGATE_HEADER, ATTEMPT_HEADER, Delivery};
pub use replay::Replayed;
pub use work_queue::{COUNT_HEADER, Published, WorkItem, WorkQueue, WorkTag};
