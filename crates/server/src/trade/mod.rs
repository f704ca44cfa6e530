//! The trade core: orders sharded by buyer, stock reserved by saga, points, payments, expiry,
//! order queries across shards, and the outbox that carries order events onwards.

pub mod audit;
pub mod bus;
pub mod error;
pub mod faults;
pub mod lifecycle;
pub mod outbox;
pub mod payments;
pub mod place;
pub mod queries;
pub mod simulated;
pub mod sweeper;
pub mod views;

use std::path::Path;
use std::sync::Arc;

use secrecy::ExposeSecret;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::TradeError;

use crate::AppState;
use crate::config::{PaymentProviderKind, TradeConfig};

/// What the trade core needs at run time besides the stores.
#[derive(Debug)]
pub struct TradeRuntime {
    /// The payment provider, behind its breaker.
    pub provider: Arc<crate::outbound::GuardedPayments>,
    /// The built-in simulated provider (whose pay links the simulated route checks; it takes
    /// payments only while it is the configured provider).
    pub simulator: Arc<simulated::SimulatedProvider>,
    /// The key notifications are signed with.
    pub payment_key: Vec<u8>,
    /// Injected crashes, for recovery tests.
    pub faults: faults::Faults,
}

impl TradeRuntime {
    /// Builds the runtime: the payment key from config or `data_dir/payment.key`; the
    /// provider behind a breaker made with `breaker`.
    pub fn new(
        config: &TradeConfig,
        data_dir: &Path,
        breaker: flashback_core::breaker::BreakerSettings,
    ) -> anyhow::Result<Self> {
        let payment_key = match &config.payment_secret {
            Some(s) => s.expose_secret().as_bytes().to_vec(),
            None => crate::keys::key_file(data_dir, "payment.key", "trade.payment_secret")?,
        };
        let simulator =
            Arc::new(simulated::SimulatedProvider::new(payment_key.clone(), config.simulated_payment_delay));
        let inner: Arc<dyn payments::PaymentProvider> = match config.payment_provider {
            PaymentProviderKind::Simulated => {
                tracing::warn!(
                    "trade.payment_provider = \"simulated\": payments are SIMULATED, anyone holding a pay link marks \
                     an order paid and no money moves; never use this with real shoppers"
                );
                simulator.clone()
            }
            PaymentProviderKind::None => Arc::new(payments::NoProvider),
        };
        let provider = Arc::new(crate::outbound::GuardedPayments::new(inner, breaker));
        Ok(Self { provider, simulator, payment_key, faults: faults::Faults::default() })
    }
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The trade routes; the simulated provider's pay page only while it is the configured one.
pub fn routes(config: &TradeConfig) -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(place::place_order, queries::my_orders))
        .routes(routes!(queries::get_order))
        .routes(routes!(lifecycle::cancel))
        .routes(routes!(lifecycle::ship))
        .routes(routes!(lifecycle::complete))
        .routes(routes!(lifecycle::refund))
        .routes(routes!(payments::create_payment))
        .routes(routes!(payments::notify))
        .routes(routes!(queries::merchant_orders))
        .routes(routes!(queries::all_orders))
        .routes(routes!(queries::my_points));
    match config.payment_provider {
        PaymentProviderKind::Simulated => router.routes(routes!(simulated::complete)),
        PaymentProviderKind::None => router,
    }
}

/// Starts the sweeper and the event delivery: RabbitMQ when configured, else in process.
pub fn spawn_background(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![sweeper::spawn(state), crate::flash_sale::orders::spawn(state)];
    tasks.extend(Arc::clone(&state.flash.engine).background(state.shutdown.clone()));
    tasks.push(crate::rebate::spawn(state));
    match &state.bus {
        Some(rabbit) => tasks.extend(bus::spawn(state, rabbit)),
        None => tasks.push(outbox::spawn(state, std::time::Duration::from_millis(100))),
    }
    tasks
}
