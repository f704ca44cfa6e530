//! `flashback-bench rebate`: the rebate ingest path and the ledger, embedded, in this process.
//!
//! It builds an instance's state on a temporary data directory (the embedded SQLite store, as
//! `flashback serve` would), makes buyers with tracking ids and a two-level referral chain, then
//! 1. ingest: order rows as Taobao's feed sends them (JSON with decimal strings and Beijing
//!    times) are parsed, attributed, split and posted through the feed poller's pipeline
//!    (batches of `--batch` rows, each prepared while the one before is written); rows/s
//!    counts every row from parse to commit;
//!    then the rows reported paid are reported settled (the update path: each moves a stored
//!    row on); update rows/s counts them;
//! 2. postings: balanced ledger transactions (four entries each) posted in batches; postings/s
//!    counts entries;
//!
//! 3. the floor (`rebate_floor`): the stored rows and their ledger transactions written again
//!    into a fresh copy of the schema through the same driver with none of the ingest's work —
//!    what this disk allows; the ingest's ratio to it says how much of the time is ours; and
//!    likewise the postings as plain inserts;
//!
//! and verifies: every row landed once, the full ledger audit after the ingest (balances against
//! the rows) and the ledger's own audit after the postings.

use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use flashback_core::{Account, Role, Tier, UserId};
use flashback_server::config::Config;
use flashback_server::rebate::ingest::Pipeline;
use flashback_server::rebate::taobao::{format_top_time, order_row};
use flashback_store::{NewTxn, Posting, RebateProfile, TrackingKind};
use serde_json::{Value, json};

/// `rebate` flags.
#[derive(Debug, Clone, Args)]
pub struct RebateArgs {
    /// Order rows to ingest.
    #[arg(long, default_value_t = 200_000)]
    pub rows: usize,
    /// Rows per ingest batch (a feed page is 100; a poll gathers pages into batches of
    /// `rebate.ingest_batch_rows`, whose default this is).
    #[arg(long, default_value_t = flashback_server::config::RebateConfig::default().ingest_batch_rows)]
    pub batch: usize,
    /// Buyers the rows are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub users: usize,
    /// Ledger transactions to post (four entries each).
    #[arg(long, default_value_t = 100_000)]
    pub transactions: usize,
    /// Transactions per posting batch.
    #[arg(long, default_value_t = 2_000)]
    pub posting_batch: usize,
    /// Print one JSON object on the last line of standard output.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark; `Ok(false)` when verification failed.
pub async fn main(args: RebateArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.rows > 0 && args.batch > 0 && args.users > 1 && args.posting_batch > 0,
        "sizes must be positive"
    );
    let dir = tempfile::Builder::new().prefix("flashback-bench-rebate-").tempdir()?;
    let mut config = Config { data_dir: dir.path().to_owned(), log_level: "warn".into(), ..Config::default() };
    config.rebate.hold = std::time::Duration::ZERO;
    config.auth.argon2_memory_kib = 8;
    config.auth.argon2_iterations = 1;
    let state = flashback_server::AppState::build(config).await.context("building the embedded instance")?;
    let machine = crate::report::Machine::detect();
    eprintln!(
        "bench: rebate ingest on {} cpus ({}), load {:?}, embedded SQLite in {}",
        machine.cpus,
        machine.cpu_model,
        machine.load_avg_1m,
        dir.path().display()
    );

    // Buyers, each with a tracking id; buyer i was invited by buyer i/2 (two levels of shares).
    let mut users: Vec<UserId> = Vec::with_capacity(args.users);
    for i in 0..args.users {
        let name = flashback_core::Username::parse(&format!("rb{i}"))?;
        let password = flashback_core::Password::parse(format!("rb-password-{i}"))?;
        let (user, _) = flashback_server::auth::create_account(&state, name, password, Role::User, None)
            .await
            .map_err(|e| anyhow::anyhow!("creating buyer {i}: {e}"))?;
        let inviter = (i > 0).then(|| users[i / 2]);
        state
            .store
            .upsert_rebate_profile(RebateProfile { user_id: user.id, tier: Tier::Standard, inviter_id: inviter })
            .await?;
        state.store.bind_tracking_id(&format!("{}", 8_000_000 + i), user.id, TrackingKind::SpecialId, 0).await?;
        users.push(user.id);
    }

    // The feed's rows, as JSON, generated up front (not timed): a mix of paid, received,
    // settled and invalid, a tenth with tracking ids we never issued.
    let now = flashback_server::trade::now_ms();
    let rows: Vec<Value> = (0..args.rows).map(|i| feed_row(i, args.users, now)).collect();
    eprintln!("bench: ingesting {} rows in batches of {}", args.rows, args.batch);
    settle();
    let (applied, ingest_secs) = ingest(&state, &rows, args.batch).await?;
    let rows_per_sec = rate(args.rows, ingest_secs);
    eprintln!("bench: {} rows in {ingest_secs:.2} s = {rows_per_sec:.0} rows/s", args.rows);
    let mut problems: Vec<String> = Vec::new();
    if applied != args.rows {
        problems.push(format!("{applied} rows applied of {}", args.rows));
    }

    // Status changes: every row reported paid is now reported settled (an hour later), as the
    // feed's sweep by modification time would bring them. Each moves a stored row on.
    let updates: Vec<Value> =
        (0..args.rows).filter(|i| matches!(i % 10, 4..=6)).map(|i| settled(i, args.users, now)).collect();
    eprintln!("bench: moving {} stored rows on (paid -> settled) in batches of {}", updates.len(), args.batch);
    settle();
    let (moved, update_secs) = ingest(&state, &updates, args.batch).await?;
    let update_rows_per_sec = rate(updates.len(), update_secs);
    eprintln!("bench: {} rows moved on in {update_secs:.2} s = {update_rows_per_sec:.0} rows/s", updates.len());
    if moved != updates.len() {
        problems.push(format!("{moved} rows moved on of {}", updates.len()));
    }
    let audit = flashback_server::rebate::audit::audit(&state).await?;
    problems.extend(audit.violations.iter().cloned());

    // Balanced transactions straight to the ledger.
    eprintln!("bench: posting {} transactions in batches of {}", args.transactions, args.posting_batch);
    let mut posted = 0;
    let txns: Vec<NewTxn> = (0..args.transactions).map(|i| txn(&state, i, &users, now)).collect();
    settle();
    let started = Instant::now();
    for batch in txns.chunks(args.posting_batch) {
        let outcomes = state.store.post_batch(batch).await?;
        posted += outcomes.iter().filter(|o| **o == flashback_store::Posted::New).count() * 4;
    }
    let post_secs = started.elapsed().as_secs_f64();
    let postings_per_sec = rate(posted, post_secs);
    eprintln!("bench: {posted} postings in {post_secs:.2} s = {postings_per_sec:.0} postings/s");
    let ledger = state.store.audit_ledger().await?;
    problems.extend(ledger.violations.iter().cloned());
    if posted != args.transactions * 4 {
        problems.push(format!("{posted} postings of {}", args.transactions * 4));
    }
    // The floor: the same rows and their ledger transactions written with none of our work.
    let mut stored = Vec::with_capacity(args.rows);
    let mut after = None;
    loop {
        let page = state.store.rebate_orders_page(after.clone(), 5_000).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.source.clone(), last.line_key.clone()));
        stored.extend(page);
    }
    stored.sort_by_key(|r| r.created_at_ms);
    eprintln!("bench: floor: writing the {} stored rows again with none of the ingest's work", stored.len());
    let floor_dir = tempfile::Builder::new().prefix("flashback-bench-rebate-floor-").tempdir()?;
    let mut floor = crate::rebate_floor::fresh(floor_dir.path()).await?;
    settle();
    let floor_rows_per_sec = crate::rebate_floor::rows(&mut floor, &stored, args.batch).await?;
    drop(stored);
    eprintln!(
        "bench: floor {floor_rows_per_sec:.0} rows/s; the ingest ran at {:.2}x the floor",
        ratio(rows_per_sec, floor_rows_per_sec)
    );
    settle();
    let floor_postings_per_sec = crate::rebate_floor::postings(&mut floor, &txns, args.posting_batch).await?;
    floor.close().await;
    eprintln!(
        "bench: floor {floor_postings_per_sec:.0} postings/s; the ledger ran at {:.2}x the floor",
        ratio(postings_per_sec, floor_postings_per_sec)
    );
    drop(txns);
    let verified = problems.is_empty();
    for p in problems.iter().take(20) {
        eprintln!("bench: violation: {p}");
    }
    let summary = json!({
        "bench": "rebate",
        "store": "sqlite",
        "machine": machine,
        "rows": args.rows,
        "batch": args.batch,
        "rows_per_sec": rows_per_sec.round(),
        "floor_rows_per_sec": floor_rows_per_sec.round(),
        "rows_ratio_to_floor": (ratio(rows_per_sec, floor_rows_per_sec) * 100.0).round() / 100.0,
        "update_rows": updates.len(),
        "update_rows_per_sec": update_rows_per_sec.round(),
        "transactions": args.transactions,
        "postings": posted,
        "postings_per_sec": postings_per_sec.round(),
        "floor_postings_per_sec": floor_postings_per_sec.round(),
        "postings_ratio_to_floor": (ratio(postings_per_sec, floor_postings_per_sec) * 100.0).round() / 100.0,
        "ledger_transactions": ledger.transactions,
        "violations": problems.len(),
        "verified": verified,
    });
    eprintln!(
        "rebate bench: {rows_per_sec:.0} rows/s (parse, attribute, split, post), {postings_per_sec:.0} postings/s; verified {}",
        if verified { "yes" } else { "NO" }
    );
    state.store.close().await;
    state.shards.close().await;
    if args.json {
        println!("{summary}");
    } else {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(verified)
}

/// Parses and applies feed rows as the feed poller applies a window (each batch parsed and
/// prepared while the one before is written); rows applied and the seconds it took.
async fn ingest(state: &flashback_server::AppState, rows: &[Value], batch: usize) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let mut pipeline = Pipeline::new(state);
    for chunk in rows.chunks(batch) {
        let lines = chunk.iter().map(order_row).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!(e))?;
        pipeline.push(&lines).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let applied = pipeline.finish().await.map_err(|e| anyhow::anyhow!("{e}"))?.applied;
    Ok((applied, started.elapsed().as_secs_f64()))
}

fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// Flushes what earlier phases left for the kernel to write, so that their write-back does not
/// slow the next timed phase's commits.
fn settle() {
    rustix::fs::sync();
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn fen(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// Row `i` of the feed, deterministic.
fn feed_row(i: usize, users: usize, now: i64) -> Value {
    let n = i64::try_from(i).unwrap_or(i64::MAX);
    let price = 1_000 + (n * 7_919) % 90_000;
    let estimate = price * (100 + n % 400) / 10_000;
    let (status, settled) = match i % 10 {
        0..=3 => (3, estimate - n % 7),
        4..=6 => (12, 0),
        7 | 8 => (14, 0),
        _ => (13, 0),
    };
    let at = now - 86_400_000 + n % 3_600_000;
    let mut row = json!({
        "trade_id": format!("{}", 9_000_000_000_u64 + u64::try_from(i).unwrap_or(0)),
        "trade_parent_id": format!("{}", 9_000_000_000_u64 + u64::try_from(i / 2).unwrap_or(0)),
        "item_id": 600_000 + n % 5_000,
        "item_title": format!("Bench item {}", n % 5_000),
        "tk_status": status,
        "alipay_total_price": fen(price),
        "pub_share_pre_fee": fen(estimate),
        "pub_share_fee": fen(settled.max(0)),
        "total_commission_rate": "0.0500",
        "click_time": format_top_time(at - 600_000),
        "tk_paid_time": format_top_time(at - 300_000),
        "modified_time": format_top_time(at),
    });
    if status == 3 {
        row["tk_earning_time"] = json!(format_top_time(at));
    }
    // A tenth carry a member id nobody holds; the rest belong to a buyer.
    if i % 10 != 5 {
        row["special_id"] = json!(8_000_000 + i % users);
    } else {
        row["special_id"] = json!(7_999_999);
    }
    row
}

/// Row `i` of the feed reported again, settled an hour after it was first reported.
fn settled(i: usize, users: usize, now: i64) -> Value {
    let mut row = feed_row(i, users, now);
    let n = i64::try_from(i).unwrap_or(i64::MAX);
    let at = now - 86_400_000 + n % 3_600_000 + 3_600_000;
    row["tk_status"] = json!(3);
    row["pub_share_fee"] = row["pub_share_pre_fee"].clone();
    row["tk_earning_time"] = json!(format_top_time(at));
    row["modified_time"] = json!(format_top_time(at));
    row
}

/// Ledger transaction `i`: a commission of 100 split 50 / 10 to a buyer and their inviter,
/// 40 to the platform.
fn txn(state: &flashback_server::AppState, i: usize, users: &[UserId], now: i64) -> NewTxn {
    let buyer = users[i % users.len()];
    let inviter = users[(i % users.len()) / 2];
    NewTxn {
        id: state.ids.write_ids().event,
        key: format!("bench:{i}"),
        kind: "bench".into(),
        reference: format!("bench:{i}"),
        postings: vec![
            Posting::debit(Account::Receivable, 100),
            Posting::credit(Account::Pending(buyer), 50),
            Posting::credit(Account::Pending(inviter), 10),
            Posting::credit(Account::Revenue, 40),
        ],
        no_overdraft: Vec::new(),
        at_ms: now,
    }
}
