//! The connection to RabbitMQ, the settings it runs with, and the exchanges every user shares.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use flashback_core::breaker::{Breaker, BreakerSettings};

use super::error::{BusError, BusResult, timed};

/// Where the broker is, what our names start with, and how long each kind of call may take.
#[derive(Clone)]
pub struct BusSettings {
    /// `amqp://user:pass@host:5672/vhost` (`amqps://` for TLS). Never logged.
    pub url: String,
    /// Every exchange and queue this bus declares is named `<exchange_prefix>.…`.
    pub exchange_prefix: String,
    /// Opening the TCP connection and the AMQP handshake.
    pub connect_timeout: Duration,
    /// Any single round trip: declare, bind, publish, ack, qos, close.
    pub call_timeout: Duration,
    /// Waiting for the broker to confirm one relay batch (all its events together).
    pub confirm_timeout: Duration,
    /// How long a consumer waits before republishing an event its handler failed on.
    pub retry_delay: Duration,
    /// Events read from a shard's outbox per relay round.
    pub relay_batch: u32,
    /// The longest pause between relay attempts after errors (backoff doubles up to this).
    pub max_backoff: Duration,
    /// The breaker in front of reconnecting: after this many failed connects in a row, calls
    /// that need a new connection fail fast for its open period, then one probes.
    pub breaker: BreakerSettings,
}

impl BusSettings {
    /// Settings with the defaults: 5 s to connect, 5 s per call, 10 s per confirmed batch,
    /// 1 s before a retry, batches of 200, backoff up to 1 s (a broker that returns is used
    /// again within a second), the breaker's defaults.
    pub fn new(url: &str, exchange_prefix: &str) -> Self {
        Self {
            url: url.to_owned(),
            exchange_prefix: exchange_prefix.to_owned(),
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(10),
            retry_delay: Duration::from_secs(1),
            relay_batch: 200,
            max_backoff: Duration::from_secs(1),
            breaker: BreakerSettings::default(),
        }
    }

    fn validate(&self) -> BusResult<()> {
        let p = &self.exchange_prefix;
        let ok_chars = p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if p.is_empty() || p.len() > 100 || !ok_chars {
            return Err(BusError::Invalid(format!("exchange prefix {p:?} must be 1 to 100 of A-Z a-z 0-9 . - _")));
        }
        if self.relay_batch == 0 {
            return Err(BusError::Invalid("relay_batch must be at least 1".into()));
        }
        Ok(())
    }
}

impl std::fmt::Debug for BusSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusSettings")
            .field("url", &"<redacted>")
            .field("exchange_prefix", &self.exchange_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("retry_delay", &self.retry_delay)
            .field("relay_batch", &self.relay_batch)
            .field("max_backoff", &self.max_backoff)
            .field("breaker", &self.breaker)
            .finish()
    }
}

/// One AMQP connection with a publisher-confirm channel, and the shared topology declared:
/// the durable topic exchange `<prefix>.events` (routing key = event type) and the
/// dead-letter fanout exchange `<prefix>.dead` feeding the durable queue `<prefix>.dead-letters`.
///
/// [`RabbitBus::new`] connects on the first call, so an instance starts while the broker is
/// away. The connection comes back by itself: when the broker restarts or drops it, the next call
/// that needs it (a channel for a consumer or a work queue, the relay's publisher, the
/// readiness check) connects again with the same settings and declares the topology again.
/// Channels opened on the old connection are dead; their users open new ones (consumers are
/// restarted by whoever started them, work queues reopen their channels on their next call).
///
/// Cloning is cheap; clones share the connection, which closes when the last clone goes.
#[derive(Clone)]
pub struct RabbitBus {
    inner: Arc<Inner>,
}

struct Inner {
    settings: BusSettings,
    /// In front of reconnecting (see [`BusSettings::breaker`]); `rabbitmq` in metrics.
    breaker: Arc<Breaker>,
    /// The connection in use, replaced when it is found closed; `None` until the first one.
    link: std::sync::Mutex<Option<Arc<Link>>>,
    /// Held while connecting again, so that callers who find the connection gone together
    /// make one new connection, not one each.
    reconnecting: tokio::sync::Mutex<()>,
}

/// One AMQP connection and its publisher-confirm channel.
struct Link {
    conn: Connection,
    publisher: Channel,
}

impl Link {
    fn is_open(&self) -> bool {
        self.conn.status().connected() && self.publisher.status().connected()
    }
}

impl std::fmt::Debug for RabbitBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBus").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

impl RabbitBus {
    /// Connects to `url` with the default timeouts and declares `<exchange_prefix>.events`,
    /// `<exchange_prefix>.dead` and `<exchange_prefix>.dead-letters`.
    pub async fn connect(url: &str, exchange_prefix: &str) -> BusResult<Self> {
        Self::connect_with(BusSettings::new(url, exchange_prefix)).await
    }

    /// Connects with explicit settings and declares the shared topology.
    pub async fn connect_with(settings: BusSettings) -> BusResult<Self> {
        let bus = Self::new(settings)?;
        bus.ensure_connected().await?;
        Ok(bus)
    }

    /// A bus with these settings that connects on its first call (and declares the topology
    /// then), so an instance can start while the broker is away. Fails only on bad settings.
    pub fn new(settings: BusSettings) -> BusResult<Self> {
        settings.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                breaker: Breaker::new("rabbitmq", settings.breaker),
                settings,
                link: std::sync::Mutex::new(None),
                reconnecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// A new connection with its publisher channel, the shared topology declared on it.
    async fn open_link(settings: &BusSettings) -> BusResult<Link> {
        // `Connection::connect` runs lapin's I/O on the ambient Tokio runtime (lapin's `tokio`
        // feature), so this must be called from within one. The name (shown by the broker's
        // tools) carries the prefix, so an operator can tell instances' connections apart.
        let name = format!("flashback {}", settings.exchange_prefix);
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let conn = timed("connect", settings.connect_timeout, Connection::connect(&settings.url, props)).await?;
        let publisher = timed("open channel", settings.call_timeout, conn.create_channel()).await?;
        timed("confirm select", settings.call_timeout, publisher.confirm_select(ConfirmSelectOptions::default()))
            .await?;
        let link = Link { conn, publisher };
        Self::declare_shared(settings, &link.publisher).await?;
        Ok(link)
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.inner.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn open_now(&self) -> Option<Arc<Link>> {
        self.current().filter(|link| link.is_open())
    }

    /// The connection, made again first if the one in use has closed.
    async fn link(&self) -> BusResult<Arc<Link>> {
        if let Some(link) = self.open_now() {
            return Ok(link);
        }
        let _one_at_a_time = self.inner.reconnecting.lock().await;
        if let Some(link) = self.open_now() {
            return Ok(link); // another caller connected meanwhile
        }
        let again = self.current().is_some();
        let Some(permit) = self.inner.breaker.permit() else {
            return Err(BusError::CircuitOpen);
        };
        let fresh = match Self::open_link(&self.inner.settings).await {
            Ok(link) => {
                permit.success();
                Arc::new(link)
            }
            Err(e) => {
                permit.failure();
                return Err(e);
            }
        };
        *self.inner.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&fresh));
        let prefix = &self.inner.settings.exchange_prefix;
        if again {
            tracing::info!(bus.prefix = %prefix, "connected to rabbitmq again");
        } else {
            tracing::info!(bus.prefix = %prefix, "connected to rabbitmq");
        }
        Ok(fresh)
    }

    /// Connects again if the connection has closed; `Ok` once it is open.
    pub async fn ensure_connected(&self) -> BusResult<()> {
        self.link().await.map(|_| ())
    }

    async fn declare_shared(settings: &BusSettings, ch: &Channel) -> BusResult<()> {
        let t = settings.call_timeout;
        let prefix = &settings.exchange_prefix;
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        let events = events_exchange(prefix).into();
        timed("declare exchange", t, ch.exchange_declare(events, ExchangeKind::Topic, durable, FieldTable::default()))
            .await?;
        let dead = dead_exchange(prefix);
        timed(
            "declare exchange",
            t,
            ch.exchange_declare(dead.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default()),
        )
        .await?;
        let letters = dead_letter_queue(prefix);
        timed(
            "declare queue",
            t,
            ch.queue_declare(letters.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default()),
        )
        .await?;
        let bind =
            ch.queue_bind(letters.into(), dead.into(), "#".into(), QueueBindOptions::default(), FieldTable::default());
        timed("bind queue", t, bind).await
    }

    /// The breaker in front of reconnecting, for metrics.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.inner.breaker
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &BusSettings {
        &self.inner.settings
    }

    /// `<prefix>.events`, the topic exchange the relay publishes to.
    pub fn events_exchange(&self) -> String {
        events_exchange(&self.inner.settings.exchange_prefix)
    }

    /// `<prefix>.dead`, where rejected messages go.
    pub fn dead_exchange(&self) -> String {
        dead_exchange(&self.inner.settings.exchange_prefix)
    }

    /// `<prefix>.dead-letters`, the queue holding every dead-lettered message.
    pub fn dead_letter_queue(&self) -> String {
        dead_letter_queue(&self.inner.settings.exchange_prefix)
    }

    /// `<prefix>.<name>`, the full name of a consumer's queue.
    pub fn queue_name(&self, name: &str) -> String {
        format!("{}.{name}", self.inner.settings.exchange_prefix)
    }

    /// Whether the connection and its publishing channel are open now (a closed connection is
    /// made again by the next call that needs it, or by [`ensure_connected`](Self::ensure_connected)).
    pub fn is_connected(&self) -> bool {
        self.open_now().is_some()
    }

    /// The publisher-confirm channel, on a connection made again if it had closed.
    pub(crate) async fn publisher(&self) -> BusResult<Channel> {
        Ok(self.link().await?.publisher.clone())
    }

    /// A new channel on the shared connection (made again if it had closed).
    pub(crate) async fn open_channel(&self) -> BusResult<Channel> {
        let link = self.link().await?;
        timed("open channel", self.inner.settings.call_timeout, link.conn.create_channel()).await
    }

    /// Messages ready (not in flight to a consumer) in the queue with this full name.
    pub async fn message_count(&self, queue: &str) -> BusResult<u32> {
        let t = self.inner.settings.call_timeout;
        let ch = self.open_channel().await?;
        let name = ShortString::try_new(queue).map_err(|e| BusError::Invalid(e.to_string()))?;
        let passive = QueueDeclareOptions::default().passive();
        let q = timed("declare queue", t, ch.queue_declare(name, passive, FieldTable::default())).await?;
        timed("close channel", t, ch.close(200, "OK".into())).await?;
        Ok(q.message_count())
    }

    /// Deletes the consumer queues named (short names, as given to `consume`), the dead-letter
    /// queue and both exchanges, messages and all. For tests and decommissioning.
    pub async fn delete_topology(&self, consumer_queues: &[&str]) -> BusResult<()> {
        let t = self.inner.settings.call_timeout;
        let ch = self.open_channel().await?;
        let queues = consumer_queues.iter().map(|q| self.queue_name(q)).chain([self.dead_letter_queue()]);
        for q in queues {
            timed("delete queue", t, ch.queue_delete(q.into(), QueueDeleteOptions::default())).await?;
        }
        for x in [self.events_exchange(), self.dead_exchange()] {
            timed("delete exchange", t, ch.exchange_delete(x.into(), ExchangeDeleteOptions::default())).await?;
        }
        timed("close channel", t, ch.close(200, "OK".into())).await
    }

    /// Closes the connection (every clone's), within the call timeout. A later call that needs
    /// the connection opens a new one.
    pub async fn close(&self) -> BusResult<()> {
        let Some(link) = self.current() else { return Ok(()) };
        timed("close connection", self.inner.settings.call_timeout, link.conn.close(200, "OK".into())).await
    }
}

fn events_exchange(prefix: &str) -> String {
    format!("{prefix}.events")
}

fn dead_exchange(prefix: &str) -> String {
    format!("{prefix}.dead")
}

fn dead_letter_queue(prefix: &str) -> String {
    format!("{prefix}.dead-letters")
}
