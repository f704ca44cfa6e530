//! Where `backup verify` restores: a scratch data directory and, scaled out, scratch databases
//! on the live servers (the originals' names plus a random suffix), removed again afterwards;
//! and the configuration that opens them as a server would, touching nothing live.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;

use super::dump::{self, Database};
use super::manifest::{Kind, Manifest};
use super::plan::Plan;
use super::restore::Target;
use crate::config::{Config, FlashEngine};
use crate::track::QueueKind;

/// A scratch copy's places.
#[derive(Debug)]
pub struct Scratch {
    /// The scratch data directory and databases.
    pub target: Target,
    created: Vec<Database>,
}

/// `name` plus `_v<suffix>`, within MySQL's 64 characters.
fn scratch_name(name: &str, suffix: &str) -> String {
    let keep = 64usize.saturating_sub(suffix.len() + 2);
    let base: String = name.chars().take(keep).collect();
    format!("{base}_v{suffix}")
}

impl Scratch {
    /// Makes the scratch directory, and a scratch database for every dump in `m`, each on the
    /// server the live configuration (`live`) uses for that role.
    pub async fn create(m: &Manifest, live: &Plan) -> anyhow::Result<Self> {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let dir = std::env::temp_dir().join(format!("flashback-verify-{suffix}"));
        super::files::create_private_dir(&dir)?;
        let mut scratch = Self { target: Target { data_dir: dir, databases: Default::default() }, created: Vec::new() };
        for d in m.of(Kind::MysqlDump) {
            let role = d.role.clone().unwrap_or_default();
            let server = match live.mysql.iter().find(|l| l.role == role).or_else(|| live.mysql.first()) {
                Some(l) => &l.db,
                None => {
                    scratch.remove().await;
                    anyhow::bail!(
                        "the backup holds MySQL dumps but the configuration names no MySQL server to verify them on"
                    );
                }
            };
            let original = d.database.as_deref().unwrap_or(&role);
            let db = server.with_name(&scratch_name(original, suffix))?;
            if let Err(e) = dump::create(&db).await {
                scratch.remove().await;
                return Err(e.context("creating a scratch database (the store's user needs CREATE and DROP)"));
            }
            scratch.created.push(db.clone());
            scratch.target.databases.insert(role, db);
        }
        Ok(scratch)
    }

    /// A configuration opening the scratch copy: the live one's settings, its places replaced,
    /// and nothing shared with the live deployment (no Redis, no broker, no affiliate poller).
    pub fn config(&self, live: &Config, m: &Manifest) -> anyhow::Result<Config> {
        let mut c = live.clone();
        c.data_dir = self.target.data_dir.clone();
        let sqlite_path =
            |role: &str| m.of(Kind::Sqlite).find(|f| f.role.as_deref() == Some(role)).map(|f| f.path.clone());
        let db_url = |role: &str| self.target.databases.get(role).map(|d| SecretString::from(d.url().to_owned()));
        c.store.url = match (db_url("main"), sqlite_path("main")) {
            (Some(url), _) => Some(url),
            (None, Some(p)) if p != "flashback.db" => Some(SecretString::from(format!("sqlite:{p}"))),
            _ => None,
        };
        let shards = m.shard_count();
        c.trade.shard_urls = Vec::new();
        c.trade.replica_urls = Vec::new();
        if c.store.url.as_ref().is_some_and(|u| !secrecy::ExposeSecret::expose_secret(u).starts_with("sqlite:")) {
            for i in 0..shards {
                c.trade
                    .shard_urls
                    .push(db_url(&format!("shard-{i}")).with_context(|| format!("the backup has no shard-{i}"))?);
            }
        } else {
            c.trade.shards = u16::try_from(shards).context("shard count")?;
        }
        c.track.store_url = match (db_url("track"), sqlite_path("track")) {
            (Some(url), _) => Some(url),
            (None, Some(p)) if p != "track.db" => Some(SecretString::from(format!("sqlite:{p}"))),
            _ => None,
        };
        c.track.queue = QueueKind::Local;
        c.track.writer_idle = Duration::from_millis(10);
        c.cache.redis_url = None;
        c.events.amqp_url = None;
        c.rebate.taobao_url = None;
        if c.flash_sale.engine == FlashEngine::Redis {
            c.flash_sale.engine = FlashEngine::Sql;
        }
        if c.flash_sale.engine == FlashEngine::Memory
            && c.store.url.as_ref().is_some_and(|u| !secrecy::ExposeSecret::expose_secret(u).starts_with("sqlite:"))
        {
            c.flash_sale.engine = FlashEngine::Sql;
        }
        Ok(c)
    }

    /// Removes the scratch directory and drops the scratch databases.
    pub async fn remove(&self) {
        for db in &self.created {
            if let Err(e) = dump::drop_database(db).await {
                tracing::warn!(database = %db.name, error = %format!("{e:#}"), "could not drop a scratch database");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.target.data_dir) {
            tracing::warn!(dir = %self.target.data_dir.display(), error = %e, "could not remove the scratch directory");
        }
    }

    /// The scratch data directory.
    pub fn dir(&self) -> &PathBuf {
        &self.target.data_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_keep_within_sixty_four_characters() {
        assert_eq!(scratch_name("shop", "0a1b2c3d"), "shop_v0a1b2c3d");
        let long = "x".repeat(64);
        let name = scratch_name(&long, "0a1b2c3d");
        assert_eq!(name.len(), 64);
        assert!(name.ends_with("_v0a1b2c3d"));
    }
}
