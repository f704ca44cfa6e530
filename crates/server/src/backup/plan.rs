//! What a configuration's backup holds: which SQLite files, which MySQL databases (by role),
//! which journals and keys under the data directory, and Redis.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

use super::dump::Database;
use super::files::relative_to;
use crate::config::Config;

/// The journals under the data directory, in the order they are read.
pub const JOURNALS: [&str; 2] = ["flash-journal", "track-queue"];
/// Keys and small state files an instance keeps in its data directory.
pub const KEY_FILES: [&str; 5] = ["token.key", "flash.key", "click.key", "payment.key", "track-consumer"];

/// One SQLite file to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteFile {
    /// Its path relative to the data directory (`/`-separated).
    pub name: String,
    /// `main`, `shard-<i>`, `track` or `other`.
    pub role: String,
    /// Where it is.
    pub path: PathBuf,
}

/// One MySQL database to dump, by role.
#[derive(Debug, Clone)]
pub struct MySqlDb {
    /// `main`, `shard-<i>` or `track`.
    pub role: String,
    /// Where it is.
    pub db: Database,
}

/// Everything a backup of `config` takes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The data directory.
    pub data_dir: PathBuf,
    /// SQLite files (embedded stores, and any other `.db` in the data directory).
    pub sqlite: Vec<SqliteFile>,
    /// MySQL databases (scaled out).
    pub mysql: Vec<MySqlDb>,
    /// Redis, when `cache.redis_url` is set.
    pub redis_url: Option<String>,
}

fn is_mysql(url: &str) -> bool {
    url.starts_with("mysql://") || url.starts_with("mariadb://")
}

/// The data-directory-relative name of a `sqlite:` file, refusing one outside it.
fn sqlite_name(url: &str, data_dir: &Path, key: &str) -> anyhow::Result<String> {
    let raw = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = Path::new(raw);
    if path.is_absolute() {
        return relative_to(path, data_dir).ok_or_else(|| {
            anyhow::anyhow!("{key} names {raw}, outside data_dir: backup copies SQLite files inside data_dir only")
        });
    }
    relative_to(&data_dir.join(path), data_dir)
        .ok_or_else(|| anyhow::anyhow!("{key}: {raw:?} is not a plain file name"))
}

impl Plan {
    /// What a backup of `config` holds. Refuses configurations it cannot back up whole.
    pub fn of(config: &Config) -> anyhow::Result<Self> {
        let dir = config.data_dir.clone();
        let (mut sqlite, mut mysql) = (Vec::new(), Vec::new());
        let add_sqlite = |sqlite: &mut Vec<SqliteFile>, name: String, role: String| {
            let path = dir.join(&name);
            sqlite.push(SqliteFile { name, role, path });
        };
        let main = config.store.url.as_ref().map(|u| u.expose_secret().to_owned());
        match main.as_deref() {
            Some(u) if is_mysql(u) => mysql.push(MySqlDb { role: "main".into(), db: Database::parse(u, "store.url")? }),
            Some(u) => add_sqlite(&mut sqlite, sqlite_name(u, &dir, "store.url")?, "main".into()),
            None => add_sqlite(&mut sqlite, "flashback.db".into(), "main".into()),
        }
        if config.trade.shard_urls.is_empty() {
            for i in 0..config.trade.shards {
                add_sqlite(&mut sqlite, format!("orders-{i}.db"), format!("shard-{i}"));
            }
        } else {
            for (i, u) in config.trade.shard_urls.iter().enumerate() {
                let db = Database::parse(u.expose_secret(), "trade.shard_urls")?;
                mysql.push(MySqlDb { role: format!("shard-{i}"), db });
            }
        }
        match (config.track.store_url.as_ref().map(|u| u.expose_secret()), main.as_deref()) {
            (Some(u), _) if is_mysql(u) => {
                let db = Database::parse(u, "track.store_url")?;
                // The tracking tables may share the main database: then its dump holds them.
                if !mysql.iter().any(|m| m.role == "main" && m.db.same_database(&db)) {
                    mysql.push(MySqlDb { role: "track".into(), db });
                }
            }
            (Some(u), _) => add_sqlite(&mut sqlite, sqlite_name(u, &dir, "track.store_url")?, "track".into()),
            (None, Some(m)) if is_mysql(m) => {} // in the main database
            (None, _) => add_sqlite(&mut sqlite, "track.db".into(), "track".into()),
        }
        let known: Vec<String> = sqlite.iter().map(|f| f.name.clone()).collect();
        for name in other_sqlite_files(&dir)? {
            if !known.contains(&name) {
                add_sqlite(&mut sqlite, name, "other".into());
            }
        }
        let redis_url = config.cache.redis_url.as_ref().map(|u| u.expose_secret().to_owned());
        Ok(Self { data_dir: dir, sqlite, mysql, redis_url })
    }

    /// Whether the store a journal's entries are moved into (`flash-journal`: the main store,
    /// `track-queue`: the tracking store) is one of the SQLite files.
    pub fn journal_stored_in_sqlite(&self, journal: &str) -> bool {
        let role = if journal == "track-queue" { "track" } else { "main" };
        self.sqlite.iter().any(|f| f.role == role)
    }

    /// `sqlite` or `mysql`: the main store's backend.
    pub fn backend(&self) -> &'static str {
        if self.mysql.iter().any(|m| m.role == "main") { "mysql" } else { "sqlite" }
    }
}

/// Every `*.db` directly in the data directory, sorted.
fn other_sqlite_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", dir.display()))),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str().filter(|n| n.ends_with(".db"))
            && entry.file_type()?.is_file()
        {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn the_embedded_default_holds_the_store_its_shards_and_tracking() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("extra.db"), b"").expect("extra");
        std::fs::write(dir.path().join("notes.txt"), b"").expect("other file");
        let config = Config { data_dir: dir.path().to_owned(), ..Config::default() };
        let plan = Plan::of(&config).expect("plan");
        let names: Vec<&str> = plan.sqlite.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["flashback.db", "orders-0.db", "orders-1.db", "orders-2.db", "orders-3.db", "track.db", "extra.db"]
        );
        assert_eq!(plan.sqlite[6].role, "other");
        assert!(plan.mysql.is_empty() && plan.redis_url.is_none());
        assert_eq!(plan.backend(), "sqlite");
    }

    #[test]
    fn a_sqlite_file_outside_the_data_dir_is_refused() {
        let mut config = Config { data_dir: "/srv/data".into(), ..Config::default() };
        config.store.url = Some(SecretString::from("sqlite:/elsewhere/x.db".to_owned()));
        let e = Plan::of(&config).expect_err("outside").to_string();
        assert!(e.contains("store.url") && e.contains("outside data_dir"), "{e}");
        config.store.url = Some(SecretString::from("sqlite:sub/x.db".to_owned()));
        assert_eq!(Plan::of(&config).expect("inside").sqlite[0].name, "sub/x.db");
    }

    #[test]
    fn scaled_out_the_tracking_tables_ride_with_the_main_database_unless_elsewhere() {
        let mut config = Config { data_dir: "/nonexistent-flashback-test".into(), ..Config::default() };
        config.store.url = Some(SecretString::from("mysql://u:p@db:3306/main".to_owned()));
        config.trade.shard_urls =
            ["mysql://u:p@db/o0", "mysql://u:p@db/o1"].map(|u| SecretString::from(u.to_owned())).to_vec();
        let roles = |p: &Plan| p.mysql.iter().map(|m| m.role.clone()).collect::<Vec<_>>();
        let plan = Plan::of(&config).expect("plan");
        assert_eq!(roles(&plan), ["main", "shard-0", "shard-1"]);
        assert!(plan.sqlite.is_empty());
        assert_eq!(plan.backend(), "mysql");
        config.track.store_url = Some(SecretString::from("mysql://u:p@db:3306/tracking".to_owned()));
        assert_eq!(roles(&Plan::of(&config).expect("plan")), ["main", "shard-0", "shard-1", "track"]);
    }
}
