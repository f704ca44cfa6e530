//! The `flashback` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use flashback_core::{Password, Role, Title, Username};

use crate::audit::{Recheck, confirmed};
use crate::config::{Config, LogFormat};
use crate::{App, AppState, auth, demo, telemetry};

/// Flashback: a high-concurrency cashback commerce platform.
///
/// With no configuration it serves on 127.0.0.1:8080 with SQLite files under ./data.
/// Configuration comes from built-in defaults, then --config FILE, then FLASHBACK_* variables
/// (FLASHBACK_LISTEN, FLASHBACK_DATA_DIR, FLASHBACK_STORE_URL, ...), then these flags.
#[derive(Debug, Parser)]
#[command(name = "flashback", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// A flashback.toml to read (see docs/OPERATIONS.md).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where SQLite files and the token key live [default: ./data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format [default: pretty].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Load the demo data set (idempotent) and exit.
    Demo,
    /// Check invariants against the live store; exits non-zero on any violation. Work in flight
    /// (a sweep, a saga, an event on its way) is given time: what looks wrong is looked at
    /// again twice, two seconds apart, and reported only if it stayed wrong.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Back up the data directory or databases while the server runs (`backup --to DIR`), or
    /// prove a backup (`backup verify DIR`).
    Backup(BackupArgs),
    /// Restore a backup into the configured data directory or databases.
    Restore(RestoreArgs),
    /// Domain events on RabbitMQ.
    #[command(subcommand)]
    Events(EventsCommand),
}

/// `events` subcommands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Put dead-lettered events back on the queue each died in, attempts counted afresh (once
    /// the cause is fixed). Prints what it did as JSON.
    ReplayDeadLetters {
        /// Replay at most this many [default: every message there when the command starts].
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
}

/// `backup` flags.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    /// A new (or empty) directory to write the backup into.
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
}

/// `backup` subcommands.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Restore a backup into scratch places, run recovery and every audit, print a JSON report;
    /// exits non-zero on any violation. Records a success in the live store.
    Verify {
        /// The backup directory.
        dir: PathBuf,
        /// Do not record the verification in the live store.
        #[arg(long)]
        no_record: bool,
    },
}

/// `restore` flags.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup directory.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Replace a data directory or databases that are not empty.
    #[arg(long)]
    pub force: bool,
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Stock, reservations, order states and points.
    Trade,
    /// One flash sale: units, per-user limits, one order or one release per reservation.
    FlashSale {
        /// The sale's id.
        id: String,
    },
    /// The rebate ledger: every transaction balances, every balance equals its entries, and
    /// the balances are what the rebate rows and withdrawals say.
    Ledger,
}

/// `serve` flags.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Load the demo data first, if absent.
    #[arg(long)]
    pub demo: bool,
}

/// `user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account.
    Add(UserAddArgs),
}

/// `user add` flags.
#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// Login name (3–32 of letters, digits, _ . -).
    #[arg(long)]
    pub username: String,
    /// Password (8–128 characters).
    #[arg(long)]
    pub password: String,
    /// user, merchant or admin.
    #[arg(long, default_value = "user")]
    pub role: String,
    /// For merchant accounts: the shop's name [default: the username].
    #[arg(long)]
    pub merchant_name: Option<String>,
}

/// Prints an audit report, closes the stores, and fails when it found violations.
async fn finish_audit(
    state: &AppState,
    report: anyhow::Result<(serde_json::Result<serde_json::Value>, usize)>,
) -> anyhow::Result<()> {
    let outcome = report.and_then(|(json, violations)| {
        println!("{}", serde_json::to_string_pretty(&json?)?);
        anyhow::ensure!(violations == 0, "{violations} violation(s) found");
        Ok(())
    });
    state.store.close().await;
    state.shards.close().await;
    outcome
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.global.config.as_deref())?;
    if let Some(dir) = cli.global.data_dir {
        config.data_dir = dir;
    }
    if let Some(format) = cli.global.log_format {
        config.log_format = format;
    }
    telemetry::init(config.log_format, &config.log_level);
    for name in &config.ignored_env {
        tracing::warn!(variable = %name, "ignored: this FLASHBACK_ environment variable names no configuration key");
    }
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => {
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            let mut app = App::build(config).await?;
            // Lives as long as the server: the stand-in affiliate network of the demo.
            let mut network = None;
            if args.demo {
                demo::load(&app.state).await.context("loading demo data")?;
                let mut own = app.local_addr();
                if own.ip().is_unspecified() {
                    own.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                app.spawn(demo::traffic::spawn(format!("http://{own}"), app.state.shutdown.clone()));
                if app.state.config.rebate.taobao_url.is_none() {
                    let (sim, connector) = demo::affiliate_network().await.context("starting the demo network")?;
                    tracing::info!(url = %sim.base_url(), "demo affiliate network (a stand-in for Taobao Union)");
                    app.spawn(crate::rebate::taobao::spawn_poller(&app.state, connector));
                    network = Some(sim);
                }
            }
            tracing::info!(addr = %app.local_addr(), store = app.state.store.backend(), "serving");
            // A second signal ends the drain at once.
            let skip = app.state.skip_drain.clone();
            let signal = async move {
                crate::app::shutdown_signal().await;
                tokio::spawn(async move {
                    crate::app::shutdown_signal().await;
                    skip.cancel();
                });
            };
            let served = app.run_until(signal).await;
            if let Some(sim) = network {
                sim.shutdown().await.context("stopping the demo network")?;
            }
            served
        }
        Command::Migrate => {
            // Opening the store applies pending migrations.
            let state = AppState::build_for_tool(config).await?;
            tracing::info!(store = state.store.backend(), "migrations applied");
            state.store.close().await;
            Ok(())
        }
        Command::User(UserCommand::Add(args)) => {
            let username = Username::parse(&args.username).context("--username")?;
            let password = Password::parse(args.password).context("--password")?;
            let role: Role = args.role.parse().context("--role")?;
            let merchant_name =
                args.merchant_name.as_deref().map(Title::parse).transpose().context("--merchant-name")?;
            let state = AppState::build_for_tool(config).await?;
            let (user, merchant) = auth::create_account(&state, username, password, role, merchant_name)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created {} {} (id {})", user.role, user.username, user.id);
            if let Some(m) = merchant {
                println!("merchant id {m}");
            }
            state.store.close().await;
            Ok(())
        }
        Command::Events(EventsCommand::ReplayDeadLetters { limit }) => {
            use secrecy::ExposeSecret;
            let url =
                config.events.amqp_url.as_ref().context("events.amqp_url is not set: no dead letters to replay")?;
            let bus = flashback_infra::bus::RabbitBus::connect(url.expose_secret(), &config.events.exchange_prefix)
                .await
                .context("connecting to RabbitMQ (events.amqp_url)")?;
            let done = bus.replay_dead_letters(limit.unwrap_or(u64::MAX)).await.context("replaying dead letters")?;
            println!("{}", serde_json::to_string(&done)?);
            let _ = bus.close().await;
            Ok(())
        }
        Command::Audit(AuditCommand::Trade) => {
            crate::data_dir::require_store(&config)?;
            let state = AppState::build_for_tool(config).await?;
            let report = confirmed(Recheck::default(), || crate::trade::audit::audit(&state))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"));
            finish_audit(&state, report.map(|r| (serde_json::to_value(&r), r.violations.len()))).await
        }
        Command::Audit(AuditCommand::Ledger) => {
            crate::data_dir::require_store(&config)?;
            let state = AppState::build_for_tool(config).await?;
            let report = confirmed(Recheck::default(), || crate::rebate::audit::audit(&state))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"));
            finish_audit(&state, report.map(|r| (serde_json::to_value(&r), r.violations.len()))).await
        }
        Command::Audit(AuditCommand::FlashSale { id }) => {
            let id = flashback_core::SaleId::parse(&id).context("sale id")?;
            crate::data_dir::require_store(&config)?;
            let state = AppState::build_for_tool(config).await?;
            let report = confirmed(Recheck::default(), || crate::flash_sale::audit::audit(&state, id))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"));
            finish_audit(&state, report.map(|r| (serde_json::to_value(&r), r.violations.len()))).await
        }
        Command::Backup(BackupArgs { command: Some(BackupCommand::Verify { dir, no_record }), .. }) => {
            let report = crate::backup::verify(&config, &dir, !no_record).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            anyhow::ensure!(report.ok, "{} violation(s) found in the restored backup", report.violations);
            Ok(())
        }
        Command::Backup(BackupArgs { to: Some(to), command: None }) => {
            crate::data_dir::require_store(&config)?;
            let manifest = crate::backup::backup(&config, &to)
                .await
                .with_context(|| format!("backing up into {} (incomplete: it has no manifest)", to.display()))?;
            let summary = serde_json::json!({
                "backup": to.display().to_string(),
                "created": manifest.created,
                "backend": manifest.backend,
                "files": manifest.files.len(),
                "bytes": manifest.bytes(),
            });
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::Backup(BackupArgs { to: None, command: None }) => {
            anyhow::bail!("backup: give --to DIR to take a backup, or `backup verify DIR` to prove one")
        }
        Command::Restore(args) => {
            let restored = crate::backup::restore(&config, &args.from, args.force).await?;
            println!("{}", serde_json::to_string_pretty(&restored)?);
            Ok(())
        }
        Command::Demo => {
            let state = AppState::build_for_tool(config).await?;
            demo::load(&state).await?;
            state.store.close().await;
            Ok(())
        }
    }
}
