//! `flashback-bench`: the command line; `flash-sale` storms one sale and checks what it sold,
//! `rebate` times the rebate ingest and the ledger, `track` the behaviour-tracking ingest,
//! `drill` takes a deployment's parts away one at a time under load.
//!
//! Human output goes to standard error; standard output carries the final summary, or with
//! `--json` exactly one JSON object on its last line. The exit status is 0 only when every run
//! was verified; 1 when a run was not verified, 2 on an error, 130 on Ctrl-C.

mod api;
mod backends;
mod conn;
mod cpu;
mod drill;
mod load;
mod rebate;
mod rebate_floor;
mod report;
mod requests;
mod run;
mod server;
mod setup;
mod track;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Benchmarks of the flashback server.
#[derive(Debug, Parser)]
#[command(name = "flashback-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Storm one flash sale with concurrent buyers, compare with a /healthz baseline under the
    /// same load, then verify every accepted purchase became exactly one order.
    ///
    /// Without --target it starts its own `flashback serve` on a temporary data dir and a free
    /// loopback port, with the purchase funnel's rate limits raised so the engine is measured,
    /// not the limiter.
    FlashSale(Box<FlashSaleArgs>),
    /// The rebate ingest path (parse, attribute, split, post; batched) and ledger postings,
    /// embedded in this process on a temporary data dir, verified by the ledger audit.
    Rebate(rebate::RebateArgs),
    /// Tracking ingest through `POST /api/v1/track` (batches, durable on 202), the writer's
    /// drain into the day tables, and a raw bulk insert into the same store as the baseline;
    /// verified when every distinct event is stored exactly once.
    ///
    /// Without --target it starts its own `flashback serve` (embedded: local queue, SQLite)
    /// with only the per-client event rate raised, since all load comes from one address.
    Track(Box<track::TrackArgs>),
    /// A high-availability drill: two `flashback serve` instances behind nginx on MariaDB,
    /// Redis and RabbitMQ of its own (Debian's packages, free loopback ports), a steady mixed
    /// load through nginx, and in turn: SIGKILL an instance, SIGTERM one, kill Redis, MariaDB
    /// and RabbitMQ for --outage-secs each; then audits, acknowledged writes read back, dead
    /// letters. Exit status 1 when a target is missed (docs/OPERATIONS.md, "The drill").
    Drill(Box<drill::DrillArgs>),
}

/// The reserve engine a self-started server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// In process with group commit (embedded SQLite store only).
    Memory,
    /// One Lua script per attempt in Redis.
    Redis,
    /// One conditional-update transaction per attempt (SQLite, or MariaDB with --store-url).
    Sql,
}

impl Engine {
    /// The name the server's configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Memory => "memory",
            Engine::Redis => "redis",
            Engine::Sql => "sql",
        }
    }
}

/// `flash-sale` flags.
#[derive(Debug, Clone, Args)]
pub struct FlashSaleArgs {
    /// Concurrent clients (tokio tasks sharing one keep-alive HTTP/1.1 client).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Buyer accounts registered and logged in before the storm; clients take them in turn.
    #[arg(long, default_value_t = 5000)]
    pub users: usize,
    /// Units in the sale.
    #[arg(long, default_value_t = 2000)]
    pub stock: i64,
    /// Units one buyer may take.
    #[arg(long, default_value_t = 1)]
    pub per_user_limit: i64,
    /// Length of the baseline and of the storm, each.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Unrecorded load against /healthz before the baseline (warms connections and the server).
    #[arg(long, default_value_t = 1)]
    pub warmup_secs: u64,
    /// How long verification waits while no accepted ticket becomes an order (it waits as
    /// long as orders keep coming).
    #[arg(long, default_value_t = 60)]
    pub settle_timeout_secs: u64,
    /// An existing deployment (e.g. http://127.0.0.1:8080) instead of a self-started server;
    /// plain HTTP (the load clients speak HTTP/1.1 without TLS). Its engine and limits are its
    /// own; the audit subprocess is skipped.
    #[arg(long, value_name = "URL")]
    pub target: Option<url::Url>,
    /// The flashback binary [default: next to this binary, else on PATH].
    #[arg(long, value_name = "PATH")]
    pub flashback: Option<PathBuf>,
    /// A configuration variable for the self-started server, `FLASHBACK_KEY=value`
    /// (repeatable; after the bench's own, so it wins), e.g.
    /// `--server-env FLASHBACK_FLASH_SALE_ORDERS_PER_SEC=0`.
    #[arg(long, value_name = "KEY=VALUE", value_parser = server_env)]
    pub server_env: Vec<(String, String)>,
    /// The engine of the self-started server (with --target: only a label for the report).
    #[arg(long, value_enum, default_value_t = Engine::Memory)]
    pub engine: Engine,
    /// Redis for the redis engine; keys go under a unique prefix and are deleted afterwards.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Store for the sql and redis engines: mysql://user@host:3306[/db]. Without a database a
    /// unique one (and its order shards) is created and dropped afterwards; with one, it and
    /// `<db>_orders_0`, `<db>_orders_1` are created if missing and kept. Default: SQLite.
    #[arg(long, value_name = "URL")]
    pub store_url: Option<String>,
    /// With --target: an admin or merchant account that may create products and sales.
    #[arg(long, default_value = "admin")]
    pub admin_user: String,
    /// With --target: its password.
    #[arg(long, default_value = "admin-password")]
    pub admin_password: String,
    /// Print one JSON object as the last line of standard output (the summary goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Run several engines one after another, each on a fresh server, and compare them.
    #[arg(long)]
    pub compare: bool,
    /// With --compare: which engines, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "memory,redis,sql")]
    pub engines: Vec<Engine>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::FlashSale(args) => run::main(*args).await,
        Command::Rebate(args) => rebate::main(args).await,
        Command::Track(args) => track::main(*args).await,
        Command::Drill(args) => drill::main(*args).await,
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            // 130: the shell's code for a process stopped by SIGINT.
            ExitCode::from(if e.is::<run::Interrupted>() { 130 } else { 2 })
        }
    }
}

/// Parses `--server-env`: only `FLASHBACK_*` keys (the server's configuration).
fn server_env(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if key.starts_with("FLASHBACK_") && key.len() > "FLASHBACK_".len() => {
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected FLASHBACK_KEY=value, got {arg:?}")),
    }
}
