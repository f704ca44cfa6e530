//! `flashback backup verify DIR`: a backup is proven by restoring it. Checks the manifest,
//! restores into a scratch copy, opens it as a server would (start-up imports the flash
//! journal and opens the tracking queue at its stored cursor), runs the recovery an instance
//! runs (tracking writer, outbox, flash orders, sweeper), then every audit. On success the
//! verification is recorded in the live store, for the gauge every instance exports.

use std::collections::BTreeMap;
use std::path::Path;

use flashback_core::{Cursor, IdGenerator, PageLimit};
use flashback_store::{BackupVerification, StoreOptions};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;

use super::manifest::{Kind, Manifest};
use super::plan::Plan;
use super::restore::restore_into;
use super::scratch::Scratch;
use crate::AppState;
use crate::config::Config;

/// What recovery on the restored copy did.
#[derive(Debug, Default, Serialize)]
pub struct Recovery {
    /// Tracking events the writer stored from the restored queue.
    pub track_events_written: u64,
    /// Outbox events delivered.
    pub outbox_delivered: usize,
    /// Orders made from flash-sale reservations.
    pub flash_orders_made: usize,
    /// The sweep's work.
    pub sweep: crate::trade::sweeper::SweepReport,
    /// Flash sales ended.
    pub sales_ended: u32,
}

/// The audits' reports.
#[derive(Debug, Default, Serialize)]
pub struct Audits {
    /// `audit trade`.
    pub trade: Value,
    /// `audit ledger`.
    pub ledger: Value,
    /// `audit flash-sale <id>`, by sale.
    pub flash_sales: BTreeMap<String, Value>,
}

/// The verification's report (printed as JSON).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The backup directory.
    pub backup: String,
    /// When the backup was taken.
    pub created: String,
    /// Its store backend.
    pub backend: String,
    /// Files checked against the manifest.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Notes on checks that could not run fully.
    pub notes: Vec<String>,
    /// Recovery on the restored copy.
    pub recovery: Recovery,
    /// Every audit.
    pub audits: Audits,
    /// Violations found, in all.
    pub violations: usize,
    /// Whether the backup is proven.
    pub ok: bool,
    /// Whether the verification was recorded in the live store.
    pub recorded: bool,
}

/// Verifies the backup in `dir` (see the module documentation); `record` writes a successful
/// verification to the live store `config` names. Errors when the backup cannot be read or
/// restored; a restored copy that fails an audit is a report with `ok: false`.
pub async fn verify(config: &Config, dir: &Path, record: bool) -> anyhow::Result<Report> {
    let path = dir.to_owned();
    let manifest = tokio::task::spawn_blocking(move || Manifest::read_checked(&path)).await??;
    let live = Plan::of(config)?;
    let mut report = Report {
        backup: dir.canonicalize().unwrap_or_else(|_| dir.to_owned()).display().to_string(),
        created: manifest.created.clone(),
        backend: manifest.backend.clone(),
        files: manifest.files.len(),
        bytes: manifest.bytes(),
        ..Report::default()
    };
    let scratch = Scratch::create(&manifest, &live).await?;
    let outcome = prove(config, dir, &manifest, &scratch, &mut report).await;
    scratch.remove().await;
    outcome?;
    report.ok = report.violations == 0;
    if report.ok && record {
        record_success(config, &manifest, &report).await?;
        report.recorded = true;
    }
    Ok(report)
}

async fn prove(
    config: &Config,
    dir: &Path,
    m: &Manifest,
    scratch: &Scratch,
    report: &mut Report,
) -> anyhow::Result<()> {
    restore_into(m, dir, &scratch.target, false).await?;
    let (root, names) = (scratch.dir().clone(), m.of(Kind::Sqlite).map(|f| f.path.clone()).collect::<Vec<_>>());
    tokio::task::spawn_blocking(move || quick_check(&root, &names)).await??;
    if m.of(Kind::RedisRdb).next().is_some()
        && let Some(note) = super::redis_rdb::check(&dir.join(super::redis_rdb::FILE)).await?
    {
        report.notes.push(note);
    }
    let state =
        AppState::build(scratch.config(config, m)?).await.map_err(|e| e.context("opening the restored copy"))?;
    let outcome = recover_and_audit(&state, report).await;
    state.store.close().await;
    state.shards.close().await;
    state.track.store.close().await;
    outcome
}

/// SQLite's own structural check of every restored file.
fn quick_check(root: &Path, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        let c = rusqlite::Connection::open_with_flags(root.join(name), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let verdict: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        anyhow::ensure!(verdict == "ok", "backup file {name}: SQLite's quick_check says {verdict}");
    }
    Ok(())
}

async fn recover_and_audit(state: &AppState, report: &mut Report) -> anyhow::Result<()> {
    let err = |e: crate::trade::TradeError| anyhow::anyhow!("{e}");
    let r = &mut report.recovery;
    while let Some(n) = crate::track::drain_once(state).await? {
        r.track_events_written = r.track_events_written.saturating_add(n);
    }
    r.outbox_delivered = crate::trade::outbox::drain(state).await.map_err(err)?;
    // Each pass makes up to 500 orders and marks their reservations; a pass that makes none ends it.
    for _ in 0..100_000 {
        let made = crate::flash_sale::orders::create_orders_once(state).await.map_err(err)?;
        r.flash_orders_made += made;
        if made == 0 {
            break;
        }
    }
    r.sweep = crate::trade::sweeper::sweep_once(state).await.map_err(err)?;
    r.sales_ended = crate::flash_sale::end_due_sales(state).await?;
    r.outbox_delivered += crate::trade::outbox::drain(state).await.map_err(err)?;

    let trade = crate::trade::audit::audit(state).await.map_err(err)?;
    let ledger = crate::rebate::audit::audit(state).await?;
    report.violations = trade.violations.len() + ledger.violations.len();
    report.audits.trade = serde_json::to_value(&trade)?;
    report.audits.ledger = serde_json::to_value(&ledger)?;
    let limit = PageLimit::try_from(100).unwrap_or_default();
    let mut after = None;
    loop {
        let sales = state.store.flash_sales(None, after, limit).await?;
        for sale in &sales {
            let audit = crate::flash_sale::audit::audit(state, sale.id).await.map_err(err)?;
            report.violations += audit.violations.len();
            report.audits.flash_sales.insert(sale.id.to_string(), serde_json::to_value(&audit)?);
        }
        match sales.last() {
            Some(last) if sales.len() == usize::from(limit.get()) => after = Some(Cursor { before_id: last.id.get() }),
            _ => break,
        }
    }
    Ok(())
}

/// Records the verification in the live store (opening it applies pending migrations).
async fn record_success(config: &Config, m: &Manifest, report: &Report) -> anyhow::Result<()> {
    let options = StoreOptions {
        url: config.store.url.as_ref().map(|u| u.expose_secret().to_owned()),
        data_dir: config.data_dir.clone(),
        max_connections: 1,
        acquire_timeout: config.store.acquire_timeout,
        breaker: config.breaker.settings(),
    };
    let store = flashback_store::open(&options).await?;
    let node = config.node_id.unwrap_or_else(|| rand::random_range(0..=flashback_core::id::MAX_NODE));
    let now = crate::trade::now_ms();
    let verification = BackupVerification {
        id: IdGenerator::new(node)?.next_at(u64::try_from(now).unwrap_or(0)),
        verified_at_ms: now,
        backup_created_ms: m.created_at_ms,
        location: report.backup.chars().take(1024).collect(),
        files: i64::try_from(m.files.len()).unwrap_or(i64::MAX),
        bytes: i64::try_from(m.bytes()).unwrap_or(i64::MAX),
    };
    let recorded = store.record_backup_verification(&verification).await;
    store.close().await;
    Ok(recorded?)
}
