//! `flashback-affiliate-sim`: runs the simulated affiliate network on its own until Ctrl-C or
//! SIGTERM.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use flashback_affiliate_sim::wire::parse_beijing;
use flashback_affiliate_sim::{DAY_MS, DEFAULT_EPOCH_MS, PostbackConfig, SimClock, SimConfig, TrackingId, start};

/// A simulated Taobao-Union-style affiliate network: TOP order and refund feeds at
/// /router/rest, signed postbacks, a monthly settlement report, and a movable clock.
#[derive(Debug, Parser)]
#[command(name = "flashback-affiliate-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "FLASHBACK_SIM_LISTEN", default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Seed of the data set.
    #[arg(long, env = "FLASHBACK_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// Number of line items.
    #[arg(long, env = "FLASHBACK_SIM_ORDERS", default_value_t = 500)]
    orders: usize,
    /// First click, Beijing `YYYY-MM-DD HH:MM:SS` (default 2025-06-01 00:00:00).
    #[arg(long, env = "FLASHBACK_SIM_EPOCH")]
    epoch: Option<String>,
    /// Days the clicks are spread over.
    #[arg(long, env = "FLASHBACK_SIM_SPAN_DAYS", default_value_t = 30)]
    span_days: i64,
    /// The clock's start, Beijing `YYYY-MM-DD HH:MM:SS` (default: the end of the span).
    #[arg(long, env = "FLASHBACK_SIM_START")]
    start: Option<String>,
    /// Simulated milliseconds per real millisecond (0 freezes the clock).
    #[arg(long, env = "FLASHBACK_SIM_SCALE", default_value_t = 1.0)]
    scale: f64,
    /// Our users' relation ids (comma separated).
    #[arg(long, env = "FLASHBACK_SIM_RELATION_IDS", value_delimiter = ',', default_values_t = [2_700_000_001u64, 2_700_000_002])]
    relation_ids: Vec<u64>,
    /// Our users' special ids (comma separated).
    #[arg(long, env = "FLASHBACK_SIM_SPECIAL_IDS", value_delimiter = ',', default_values_t = [3_300_000_001u64, 3_300_000_002])]
    special_ids: Vec<u64>,
    /// The ad zone of our users' links.
    #[arg(long, env = "FLASHBACK_SIM_ADZONE_ID", default_value_t = 110_000_000_101)]
    adzone_id: u64,
    /// Fraction of orders with an id that is not ours.
    #[arg(long, env = "FLASHBACK_SIM_UNATTRIBUTED_SHARE", default_value_t = 0.1)]
    unattributed_share: f64,
    /// Fraction of orders with no id at all.
    #[arg(long, env = "FLASHBACK_SIM_CLAIMABLE_SHARE", default_value_t = 0.1)]
    claimable_share: f64,
    /// TOP app key.
    #[arg(long, env = "FLASHBACK_SIM_APP_KEY", default_value = "flashback-sim")]
    app_key: String,
    /// TOP app secret.
    #[arg(long, env = "FLASHBACK_SIM_APP_SECRET", default_value = "flashback-sim-secret", hide_env_values = true)]
    app_secret: String,
    /// Where to POST postbacks (none when absent).
    #[arg(long, env = "FLASHBACK_SIM_POSTBACK_URL")]
    postback_url: Option<String>,
    /// Postback signing secret.
    #[arg(
        long,
        env = "FLASHBACK_SIM_POSTBACK_SECRET",
        default_value = "flashback-sim-postback",
        hide_env_values = true
    )]
    postback_secret: String,
    /// Fraction of orders whose events are pushed.
    #[arg(long, env = "FLASHBACK_SIM_POSTBACK_SHARE", default_value_t = 1.0)]
    postback_share: f64,
}

fn beijing(name: &str, text: &str) -> anyhow::Result<i64> {
    parse_beijing(text).with_context(|| format!("--{name} must be YYYY-MM-DD HH:MM:SS (Beijing time)"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,flashback_affiliate_sim=info".into()),
        )
        .init();
    let args = Args::parse();
    let epoch_ms = args.epoch.as_deref().map(|t| beijing("epoch", t)).transpose()?.unwrap_or(DEFAULT_EPOCH_MS);
    let span_ms = args.span_days.checked_mul(DAY_MS).context("--span-days is too large")?;
    let start_ms = args.start.as_deref().map(|t| beijing("start", t)).transpose()?.unwrap_or(epoch_ms + span_ms);
    let tracking_ids = args
        .relation_ids
        .iter()
        .map(|&id| TrackingId::relation(id, args.adzone_id))
        .chain(args.special_ids.iter().map(|&id| TrackingId::special(id, args.adzone_id)))
        .collect();
    let postback = args
        .postback_url
        .map(|url| PostbackConfig { share: args.postback_share, ..PostbackConfig::new(url, args.postback_secret) });
    let config = SimConfig {
        seed: args.seed,
        orders: args.orders,
        epoch_ms,
        span_ms,
        tracking_ids,
        unattributed_share: args.unattributed_share,
        claimable_share: args.claimable_share,
        app_key: args.app_key,
        app_secret: args.app_secret,
        postback,
        time: SimClock::scaled(start_ms, args.scale),
        ..SimConfig::default()
    };
    let sim = start(config, args.listen).await?;
    println!("affiliate network simulator on {} (TOP gateway {})", sim.base_url(), sim.router_url());
    stop_signal().await?;
    sim.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    Ok(())
}
