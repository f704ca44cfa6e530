//! One run per engine: the server (self-started or a target), the fixture, warm-up, baseline,
//! storm, verification and audit; and `--compare`, which runs several engines in a row.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::api::{self, Api};
use crate::backends::{MysqlDatabases, RedisPrefix, redis_answers};
use crate::conn::Endpoint;
use crate::cpu::{CpuSample, CpuSplit};
use crate::load::{self, Phase, PhaseResult, rate};
use crate::report::{CompareRun, Machine, RunReport, compare_table, set_ratio_to_sql};
use crate::requests::{authorizations, healthz_load, purchase_load};
use crate::server::{Server, ServerSpec};
use crate::setup::{self, Fixture, Plan};
use crate::verify::{self, Audit};
use crate::{Engine, FlashSaleArgs};

/// The run was stopped with Ctrl-C.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted: the server was stopped and what the bench made was removed")
    }
}

impl std::error::Error for Interrupted {}

/// Runs the command; `Ok(verified)`.
pub async fn main(args: FlashSaleArgs) -> anyhow::Result<bool> {
    check(&args)?;
    if args.compare {
        return compare(&args).await;
    }
    let report = run_engine(&args, args.engine).await?;
    if args.json {
        eprintln!("{}", report.human());
        println!("{}", serde_json::to_string(&report).context("serialising the report")?);
    } else {
        println!("{}", report.human());
    }
    Ok(report.verified)
}

fn check(args: &FlashSaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients >= 1, "--clients: at least 1");
    anyhow::ensure!(args.users >= 1, "--users: at least 1");
    anyhow::ensure!((1..=1_000_000).contains(&args.stock), "--stock: 1 to 1,000,000 units");
    anyhow::ensure!((1..=100).contains(&args.per_user_limit), "--per-user-limit: 1 to 100");
    anyhow::ensure!(args.duration_secs >= 1, "--duration-secs: at least 1");
    if args.target.is_some() && args.compare {
        bail!("--compare starts its own servers; it cannot be combined with --target");
    }
    if args.target.is_some() && (args.store_url.is_some() || args.flashback.is_some()) {
        bail!("--store-url and --flashback configure a self-started server; drop them with --target");
    }
    if args.store_url.is_some() && !args.compare && args.engine == Engine::Memory {
        bail!(
            "the memory engine runs on the embedded SQLite store only (the server refuses it with MySQL); use --engine sql"
        );
    }
    let buyable = i64::try_from(args.users).unwrap_or(i64::MAX).saturating_mul(args.per_user_limit);
    if buyable < args.stock {
        eprintln!(
            "bench: note: {} buyers × limit {} < stock {}: the sale cannot sell out",
            args.users, args.per_user_limit, args.stock
        );
    }
    Ok(())
}

async fn compare(args: &FlashSaleArgs) -> anyhow::Result<bool> {
    let mut runs = Vec::new();
    for &engine in &args.engines {
        if engine == Engine::Redis
            && let Err(e) = redis_answers(&args.redis_url).await
        {
            eprintln!("bench: skipping the redis engine: Redis at {} does not answer ({e:#})", args.redis_url);
            runs.push(CompareRun::Skipped {
                engine: engine.name().into(),
                skipped: format!("Redis does not answer: {e:#}"),
            });
            continue;
        }
        eprintln!("bench: === engine {} ===", engine.name());
        match run_engine(args, engine).await {
            Ok(r) => {
                eprintln!("{}", r.human());
                runs.push(CompareRun::Done(Box::new(r)));
            }
            Err(e) if e.is::<Interrupted>() => return Err(e),
            Err(e) => {
                eprintln!("bench: engine {} failed: {e:#}", engine.name());
                runs.push(CompareRun::Failed {
                    engine: engine.name().into(),
                    error: format!("{e:#}"),
                    verified: false,
                });
            }
        }
    }
    set_ratio_to_sql(&mut runs);
    let verified = !runs.is_empty()
        && runs.iter().all(|r| match r {
            CompareRun::Done(r) => r.verified,
            CompareRun::Failed { .. } => false,
            CompareRun::Skipped { .. } => true,
        })
        && runs.iter().any(|r| matches!(r, CompareRun::Done(_)));
    let table = compare_table(&runs);
    if args.json {
        eprint!("{table}");
        let out = serde_json::json!({ "runs": runs, "verified": verified });
        println!("{}", serde_json::to_string(&out).context("serialising the report")?);
    } else {
        print!("{table}");
    }
    Ok(verified)
}

/// Server configuration for the bench: quiet logs, fast password hashing, limits raised so
/// the engine is measured and not the funnel.
fn base_env(engine: Engine) -> Vec<(String, String)> {
    [
        ("FLASHBACK_LOG_LEVEL", "warn"),
        ("FLASHBACK_LOG_FORMAT", "pretty"),
        ("FLASHBACK_NODE_ID", "1"),
        ("FLASHBACK_FLASH_SALE_ENGINE", engine.name()),
        ("FLASHBACK_FLASH_SALE_GLOBAL_PER_SEC", "100000000"),
        ("FLASHBACK_FLASH_SALE_PER_SALE_PER_SEC", "100000000"),
        ("FLASHBACK_FLASH_SALE_PER_USER_PER_SEC", "1000000"),
        ("FLASHBACK_FLASH_SALE_PER_IP_PER_SEC", "100000000"),
        ("FLASHBACK_HTTP_MAX_CONCURRENCY", "16384"),
        ("FLASHBACK_HTTP_SHUTDOWN_GRACE_MS", "3000"),
        ("FLASHBACK_HTTP_DRAIN_DELAY_MS", "0"),
        ("FLASHBACK_AUTH_ARGON2_MEMORY_KIB", "8"),
        ("FLASHBACK_AUTH_ARGON2_ITERATIONS", "1"),
        ("FLASHBACK_AUTH_LOGIN_PER_IP_PER_MINUTE", "100000000"),
        ("FLASHBACK_AUTH_LOGIN_PER_ACCOUNT_PER_MINUTE", "1000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// One engine, on a self-started server or the target; cleans up what it made, also on Ctrl-C.
async fn run_engine(args: &FlashSaleArgs, engine: Engine) -> anyhow::Result<RunReport> {
    if let Some(target) = &args.target {
        let http = api::http_client(args.clients + 16)?;
        let api = Api::new(http, target.clone());
        let who = (args.admin_user.clone(), args.admin_password.clone());
        let run = measure(args, engine, &api, format!("target {target}"), who, None);
        return tokio::select! {
            r = run => r.map(|(report, _)| report),
            _ = tokio::signal::ctrl_c() => Err(Interrupted.into()),
        };
    }

    let binary = crate::server::locate(args.flashback.as_deref())?;
    let data_dir = tempfile::Builder::new().prefix("flashback-bench-").tempdir().context("making a data dir")?;
    let mut env = base_env(engine);
    let mut store = "sqlite".to_owned();
    let redis = if engine == Engine::Redis {
        let r = RedisPrefix::new(&args.redis_url).await.context("the redis engine needs Redis (--redis-url)")?;
        env.push(("FLASHBACK_CACHE_REDIS_URL".into(), args.redis_url.clone()));
        env.push(("FLASHBACK_CACHE_REDIS_PREFIX".into(), r.prefix.clone()));
        // With Redis configured the funnel also asks Redis for cluster-wide rates; off here,
        // so the engine is measured and not a limiter round trip the other engines skip.
        env.push(("FLASHBACK_FLASH_SALE_CLUSTER_GLOBAL_PER_SEC".into(), "0".into()));
        env.push(("FLASHBACK_FLASH_SALE_CLUSTER_PER_SALE_PER_SEC".into(), "0".into()));
        Some(r)
    } else {
        None
    };
    let mysql = match (&args.store_url, engine) {
        (Some(url), Engine::Sql | Engine::Redis) => {
            let dbs = MysqlDatabases::prepare(url).await?;
            env.push(("FLASHBACK_STORE_URL".into(), dbs.store_url.clone()));
            let shards = serde_json::to_string(&dbs.shard_urls).context("shard urls")?;
            env.push(("FLASHBACK_TRADE_SHARD_URLS".into(), shards));
            store = dbs.describe();
            Some(dbs)
        }
        (Some(_), Engine::Memory) => {
            eprintln!("bench: the memory engine runs on SQLite (the server refuses it with MySQL)");
            None
        }
        (None, _) => None,
    };
    env.extend(args.server_env.iter().cloned());
    let spec = ServerSpec { binary, data_dir: data_dir.path().to_owned(), env };
    let outcome = tokio::select! {
        r = self_started(args, engine, &spec, store) => r,
        _ = tokio::signal::ctrl_c() => Err(Interrupted.into()),
    };
    if let Some(r) = &redis {
        match r.clean().await {
            Ok(n) => eprintln!("bench: deleted {n} redis keys under {}", r.prefix),
            Err(e) => eprintln!("bench: warning: could not delete the redis keys under {}: {e:#}", r.prefix),
        }
    }
    if let Some(m) = &mysql
        && let Err(e) = m.drop_created().await
    {
        eprintln!("bench: warning: could not drop the bench databases: {e:#}");
    }
    outcome
}

/// Starts the server, measures, stops it, then audits its stores.
async fn self_started(
    args: &FlashSaleArgs,
    engine: Engine,
    spec: &ServerSpec,
    store: String,
) -> anyhow::Result<RunReport> {
    let http = api::http_client(args.clients + 16)?;
    // The demo data brings the merchant and categories the fixture uses.
    let server = Server::start(spec, &http, &["--demo"]).await?;
    let api = Api::new(http, server.base().clone());
    let who = ("merchant".to_owned(), "merchant-password".to_owned());
    let measured = measure(args, engine, &api, format!("self-started ({store})"), who, server.pid()).await;
    let (mut report, fixture) = match measured {
        Ok(r) => r,
        Err(e) => return Err(e.context(format!("the server's stderr ends:\n{}", server.tail()))),
    };
    let tail = server.tail();
    let stopped = server.stop().await?;
    if !stopped {
        eprintln!("bench: warning: the server did not exit cleanly; its stderr ends:\n{tail}");
    }
    report.server_stopped_cleanly = Some(stopped);
    report.audit = verify::audit(spec, &fixture.sale_id).await;
    report.verified = report.verified && report.audit.ok();
    Ok(report)
}

/// Fixture, warm-up, baseline, storm and the HTTP checks against `api`.
async fn measure(
    args: &FlashSaleArgs,
    engine: Engine,
    api: &Api,
    server: String,
    (admin_user, admin_password): (String, String),
    server_pid: Option<u32>,
) -> anyhow::Result<(RunReport, Fixture)> {
    let duration = Duration::from_secs(args.duration_secs);
    let settle = Duration::from_secs(args.settle_timeout_secs);
    let plan = Plan {
        users: args.users,
        stock: args.stock,
        per_user_limit: args.per_user_limit,
        // Outlasts warm-up, baseline, storm and settling, with room to spare.
        open_for: Duration::from_secs(args.warmup_secs) + 2 * duration + settle + Duration::from_secs(600),
        admin_user,
        admin_password,
    };
    let machine = Machine::detect();
    let fixture = setup::prepare(api, &plan).await?;
    let tokens: Vec<String> = fixture.buyers.iter().map(|b| b.token.clone()).collect();
    let tokens = authorizations(&tokens)?;
    let endpoint = Endpoint::new(api.base())?;
    let phase = |name, duration, progress| Phase { name, clients: args.clients, duration, stock: None, progress };

    if args.warmup_secs > 0 {
        healthz_load(&endpoint, &phase("warm-up", Duration::from_secs(args.warmup_secs), false), &tokens).await?;
    }
    eprintln!("bench: baseline: {} clients on GET /healthz for {} s", args.clients, args.duration_secs);
    let cpu = CpuSample::take(server_pid);
    let baseline = healthz_load(&endpoint, &phase("baseline", duration, true), &tokens).await?;
    let cpu_baseline = cpu.since(server_pid);
    eprintln!("bench: storm: {} clients buying sale {} for {} s", args.clients, fixture.sale_id, args.duration_secs);
    let storm_phase = Phase { stock: Some(args.stock), ..phase("storm", duration, true) };
    let cpu = CpuSample::take(server_pid);
    let storm = purchase_load(&endpoint, &storm_phase, &fixture.sale_id, &tokens).await?;
    let cpu_storm = cpu.since(server_pid);

    eprintln!("bench: verifying {} accepted purchases", storm.accepted.len());
    let verification =
        verify::verify(api, &fixture, &storm.accepted, args.stock, args.per_user_limit, storm.error_count(), settle)
            .await?;
    let mut report = assemble(args, engine, server, &fixture, &baseline, &storm, verification);
    report.machine = machine;
    report.cpu_baseline = cpu_baseline;
    report.cpu_storm = cpu_storm;
    Ok((report, fixture))
}

fn assemble(
    args: &FlashSaleArgs,
    engine: Engine,
    server: String,
    fixture: &Fixture,
    baseline: &PhaseResult,
    storm: &PhaseResult,
    verification: verify::Verification,
) -> RunReport {
    let accepted_units: i64 = storm.accepted.iter().map(|a| a.ticket.quantity).sum();
    let accepted_per_sec = storm.accepted.last().map_or(0.0, |last| rate(storm.accepted.len() as u64, last.at));
    let q = |h: &hdrhistogram::Histogram<u64>, q: f64| load::ms(h.value_at_quantile(q));
    let baseline_per_sec = baseline.per_sec();
    let attempts_per_sec = storm.per_sec();
    let mut verification = verification;
    if storm.accepted.is_empty() {
        verification.problems.push("no purchase was accepted, so nothing was verified".into());
    }
    let v = &verification;
    let mismatch_ok = v.taken_mismatch == 0 || (v.taken_mismatch > 0 && storm.error_count() > 0);
    let verified = !storm.accepted.is_empty()
        && v.oversold == 0
        && v.over_limit_users == 0
        && v.lost_reservations == 0
        && v.unsettled == 0
        && v.duplicate_orders == 0
        && v.bad_orders == 0
        && v.sale_remaining.is_some()
        && mismatch_ok;
    RunReport {
        engine: engine.name().into(),
        machine: Machine::detect(),
        clients: args.clients,
        users: args.users,
        stock: args.stock,
        per_user_limit: args.per_user_limit,
        duration_s: args.duration_secs,
        sale_id: fixture.sale_id.clone(),
        attempts: storm.attempts,
        attempts_per_sec,
        baseline_per_sec,
        ratio_to_baseline: if baseline_per_sec > 0.0 { attempts_per_sec / baseline_per_sec } else { 0.0 },
        ratio_to_sql: None,
        accepted: storm.accepted.len(),
        accepted_units,
        accepted_per_sec,
        sold_out_after_ms: storm.sold_out_after.map(|d| d.as_secs_f64() * 1000.0),
        rejected_by_reason: storm.rejected.clone(),
        errors: storm.error_count(),
        errors_by_kind: storm.errors.clone(),
        p50_ms: q(&storm.latency, 0.5),
        p99_ms: q(&storm.latency, 0.99),
        p999_ms: q(&storm.latency, 0.999),
        max_ms: load::ms(storm.latency.max()),
        baseline_p99_ms: q(&baseline.latency, 0.99),
        oversold: v.oversold,
        over_limit_users: v.over_limit_users,
        lost_reservations: v.lost_reservations,
        duplicate_orders: v.duplicate_orders,
        bad_orders: v.bad_orders,
        audit: if server.starts_with("target") {
            Audit::Skipped { why: "the bench did not start this server, so it cannot open its stores".into() }
        } else {
            Audit::Skipped { why: "not run yet".into() }
        },
        server,
        verification,
        server_stopped_cleanly: None,
        cpu_baseline: CpuSplit { bench_pct: None, server_pct: None },
        cpu_storm: CpuSplit { bench_pct: None, server_pct: None },
        verified,
    }
}
