//! `flashback backup --to DIR`: everything an instance keeps, taken while it serves, in the
//! order that keeps every acknowledged write (see the module documentation of `backup`).

use std::path::Path;

use anyhow::Context;

use super::files;
use super::journals;
use super::manifest::{Entry, FORMAT, Kind, Manifest};
use super::plan::{JOURNALS, KEY_FILES, Plan};
use super::{dump, redis_rdb, snapshot};
use crate::config::Config;

/// Takes a backup of what `config` points at into `to` (missing or empty); returns its
/// manifest, written last.
pub async fn backup(config: &Config, to: &Path) -> anyhow::Result<Manifest> {
    anyhow::ensure!(files::is_empty_or_missing(to)?, "{} is not empty: back up into a new directory", to.display());
    let plan = Plan::of(config)?;
    files::create_private_dir(to)?;
    let started = crate::trade::now_ms();
    let mut entries = Vec::new();
    // 1. Redis first: what its streams held is then either in the snapshot or already stored.
    if let Some(url) = &plan.redis_url {
        entries.push(redis_rdb::snapshot(url, to).await.context("the Redis snapshot")?);
    }
    // 2. The SQLite files, in groups each pinned at one instant with the journal whose
    //    entries go to it opened in that instant (before any MySQL dump starts): the catalog
    //    and the order shards (sagas span them) with the flash journal; the tracking store
    //    with its queue; any other file. Then MySQL, dumped per server.
    let group =
        |roles: &dyn Fn(&str) -> bool| plan.sqlite.iter().filter(|f| roles(&f.role)).cloned().collect::<Vec<_>>();
    let trade = group(&|r| r == "main" || r.starts_with("shard-"));
    let (tracking, others) = (group(&|r| r == "track"), group(&|r| r == "other"));
    let data_dir = plan.data_dir.clone();
    let (pinned, held) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (trade, flash) = snapshot::pin(&trade, || journals::hold(&data_dir, JOURNALS[0]))?;
        let (tracking, queue) = snapshot::pin(&tracking, || journals::hold(&data_dir, JOURNALS[1]))?;
        let (others, ()) = snapshot::pin(&others, || Ok(()))?;
        Ok(([trade, tracking, others], [flash, queue]))
    })
    .await??;
    if !plan.mysql.is_empty() {
        entries.extend(dump::dump_all(&plan.mysql, to).await.context("dumping the MySQL databases")?);
    }
    // 3. The journals, read now that every snapshot has begun (extended by the segments made
    //    since when the store their entries go to is MySQL); 4. the SQLite pages.
    let extend = JOURNALS.map(|name| !plan.journal_stored_in_sqlite(name));
    let dest = to.to_owned();
    let copied = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for (journal, extend) in held.into_iter().zip(extend) {
            if let Some(journal) = journal {
                out.extend(journal.copy_to(&dest, extend)?);
            }
        }
        for group in pinned {
            out.extend(group.copy_to(&dest)?);
        }
        Ok(out)
    })
    .await??;
    entries.extend(copied);
    // 5. Keys and small state files.
    for name in KEY_FILES {
        let path = plan.data_dir.join(name);
        if path.is_file() {
            let written = files::copy_file(&path, &to.join(name))?;
            entries.push(Entry::new(name.into(), Kind::Key, written));
        }
    }
    files::sync_dir(to)?;
    let manifest = Manifest {
        format: FORMAT,
        flashback_version: env!("CARGO_PKG_VERSION").into(),
        created_at_ms: started,
        created: rfc3339(started),
        backend: plan.backend().into(),
        files: entries,
    };
    manifest.write(to)?;
    Ok(manifest)
}

/// Unix ms as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}
