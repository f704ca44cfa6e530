//! `flashback restore --from DIR`: a checked backup into the configured data directory and
//! databases. Nothing is written until the manifest, the configuration's shape, the target's
//! emptiness and the absence of a running server have all been checked.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::dump::{self, Database};
use super::files;
use super::manifest::{Entry, Kind, Manifest};
use super::plan::{JOURNALS, Plan};
use crate::config::Config;

/// Where a restore writes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The data directory (SQLite files, journals, keys).
    pub data_dir: PathBuf,
    /// The database each dumped role (`main`, `shard-<i>`, `track`) is loaded into.
    pub databases: HashMap<String, Database>,
}

/// What a restore did.
#[derive(Debug, Default, Serialize)]
pub struct Restored {
    /// Files written under the data directory.
    pub files: Vec<String>,
    /// Databases loaded, as `role → database`.
    pub databases: Vec<String>,
    /// What the operator must still do.
    pub notes: Vec<String>,
}

/// The roles a backup's databases fill (`other` SQLite files aside), with their files.
fn roles(m: &Manifest) -> HashMap<&str, &Entry> {
    m.files
        .iter()
        .filter(|f| matches!(f.kind, Kind::Sqlite | Kind::MysqlDump))
        .filter_map(|f| f.role.as_deref().filter(|r| *r != "other").map(|r| (r, f)))
        .collect()
}

/// Checks that the backup fits the configuration: the same backend, the same order shards, the
/// same files.
pub fn check_fits(m: &Manifest, plan: &Plan) -> anyhow::Result<()> {
    anyhow::ensure!(
        m.backend == plan.backend(),
        "the backup is of a {} store, the configuration has a {} store",
        m.backend,
        plan.backend()
    );
    let have = roles(m);
    let mut want: HashMap<&str, Option<&str>> = HashMap::new();
    for f in plan.sqlite.iter().filter(|f| f.role != "other") {
        want.insert(&f.role, Some(&f.name));
    }
    for d in &plan.mysql {
        want.insert(&d.role, None);
    }
    let (backup_shards, config_shards) = (m.shard_count(), want.keys().filter(|r| r.starts_with("shard-")).count());
    anyhow::ensure!(
        backup_shards == config_shards,
        "the backup holds {backup_shards} order shards, the configuration has {config_shards} (trade.shards / trade.shard_urls)"
    );
    for (role, name) in &want {
        let entry = have.get(role).with_context(|| format!("the backup holds no `{role}` database"))?;
        if let Some(name) = name {
            anyhow::ensure!(
                entry.path == *name,
                "the backup's `{role}` database is {}, the configuration reads {name}",
                entry.path
            );
        }
    }
    if let Some(extra) = have.keys().find(|r| !want.contains_key(*r)) {
        anyhow::bail!("the backup holds a `{extra}` database the configuration has no place for");
    }
    Ok(())
}

/// `flashback restore`: checks the backup in `from` and restores it as `config` says.
pub async fn restore(config: &Config, from: &Path, force: bool) -> anyhow::Result<Restored> {
    let dir = from.to_owned();
    let manifest = tokio::task::spawn_blocking(move || Manifest::read_checked(&dir)).await??;
    let plan = Plan::of(config)?;
    check_fits(&manifest, &plan)?;
    let target = Target {
        data_dir: config.data_dir.clone(),
        databases: plan.mysql.iter().map(|d| (d.role.clone(), d.db.clone())).collect(),
    };
    restore_into(&manifest, from, &target, force).await
}

/// Restores a checked backup into `target`. Refuses a non-empty data directory or database
/// unless `force`, and a data directory whose journals a running server holds.
pub async fn restore_into(m: &Manifest, from: &Path, target: &Target, force: bool) -> anyhow::Result<Restored> {
    let local: Vec<&Entry> =
        m.files.iter().filter(|f| matches!(f.kind, Kind::Sqlite | Kind::Journal | Kind::Key)).collect();
    let dumps: Vec<&Entry> = m.of(Kind::MysqlDump).collect();
    let dir = &target.data_dir;
    refuse_if_served(dir)?;
    if !local.is_empty() && !force && !files::is_empty_or_missing(dir)? {
        anyhow::bail!(
            "{} is not empty: restore into an empty data directory, or pass --force to replace it",
            dir.display()
        );
    }
    let mut loads = Vec::new();
    for d in &dumps {
        let role = d.role.as_deref().unwrap_or_default();
        let db = target.databases.get(role).with_context(|| format!("no database configured for `{role}`"))?;
        let tables = dump::tables(db).await?;
        if !tables.is_empty() && !force {
            anyhow::bail!(
                "database {db:?} holds {} tables: restore into empty databases, or pass --force",
                tables.len()
            );
        }
        loads.push((*d, db));
    }

    let mut done = Restored::default();
    if !local.is_empty() {
        files::create_private_dir(dir)?;
        let locks = hold_journals(dir)?;
        if force {
            clear(dir, &local)?;
        }
        for f in &local {
            restore_file(from, dir, f)?;
            done.files.push(f.path.clone());
        }
        for sub in JOURNALS {
            if dir.join(sub).is_dir() {
                files::sync_dir(&dir.join(sub))?;
            }
        }
        files::sync_dir(dir)?;
        drop(locks);
    }
    for (d, db) in loads {
        dump::create(db).await?;
        if force {
            dump::drop_tables(db).await?;
        }
        dump::load(db, &from.join(&d.path)).await?;
        done.databases.push(format!("{} → {}", d.role.as_deref().unwrap_or_default(), db.name));
    }
    if m.of(Kind::RedisRdb).next().is_some() {
        done.notes.push(format!(
            "{}: Redis loads a snapshot only when it starts; see docs/OPERATIONS.md, Backups, to put it in place",
            super::redis_rdb::FILE
        ));
    }
    Ok(done)
}

/// Fails when a server holds a journal of `dir` (its lock is taken).
fn refuse_if_served(dir: &Path) -> anyhow::Result<()> {
    for sub in JOURNALS {
        let lock = dir.join(sub).join("LOCK");
        let Ok(file) = OpenOptions::new().write(true).open(&lock) else { continue };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                anyhow::bail!("a running server holds {}: stop it before restoring", dir.join(sub).display())
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(anyhow::Error::new(e).context(lock.display().to_string()));
            }
        }
    }
    Ok(())
}

/// Takes the journals' locks for the restore's duration, so a server cannot start on a half
/// restored directory's journals.
fn hold_journals(dir: &Path) -> anyhow::Result<Vec<File>> {
    let mut held = Vec::new();
    for sub in JOURNALS {
        std::fs::create_dir_all(dir.join(sub))?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(sub).join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => held.push(lock),
            Err(_) => anyhow::bail!("a server started on {} during the restore", dir.display()),
        }
    }
    Ok(held)
}

/// `--force`: removes the SQLite files (with their WAL and shared memory) and journal segments
/// a restored directory must not keep beside the backup's.
fn clear(dir: &Path, restoring: &[&Entry]) -> anyhow::Result<()> {
    let mut doomed: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if [".db", ".db-wal", ".db-shm", ".db-journal"].iter().any(|s| name.ends_with(s)) {
            doomed.push(path);
        }
    }
    for sub in JOURNALS {
        for s in crate::journal::segments(&dir.join(sub)).unwrap_or_default() {
            doomed.push(crate::journal::segment_path(&dir.join(sub), s));
        }
    }
    for f in restoring.iter().filter(|f| f.kind == Kind::Sqlite) {
        let path = dir.join(files::safe_relative(&f.path)?);
        doomed.extend(["-wal", "-shm", "-journal"].map(|s| files::with_suffix(&path, s)));
        doomed.push(path);
    }
    for path in doomed {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("removing {}", path.display()))),
        }
    }
    Ok(())
}

/// Copies one file into place through a temporary name, checking it against the manifest.
fn restore_file(from: &Path, dir: &Path, f: &Entry) -> anyhow::Result<()> {
    let rel = files::safe_relative(&f.path)?;
    let dest = dir.join(&rel);
    let tmp = files::with_suffix(&dest, ".restoring");
    let _ = std::fs::remove_file(&tmp);
    let written = files::copy_file(&from.join(&rel), &tmp)?;
    anyhow::ensure!(
        written.bytes == f.bytes && written.sha256 == f.sha256,
        "backup file {} changed while it was restored",
        f.path
    );
    if f.kind == Kind::Sqlite {
        for side in ["-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(files::with_suffix(&dest, side));
        }
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("moving {} into place", dest.display()))?;
    Ok(())
}
