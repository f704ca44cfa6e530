//! Scaled out: MySQL databases dumped with `mariadb-dump --single-transaction` and loaded with
//! the `mariadb` client (Debian's MariaDB client tools).
//!
//! The databases of one server are dumped by one `mariadb-dump --databases …` run: one
//! transaction, `START TRANSACTION WITH CONSISTENT SNAPSHOT`, so the main database and every
//! order shard on that server are read at one instant (a saga's two halves cannot be split
//! between two snapshots). The output is split at its `USE` lines into one file per database,
//! each loadable into a database of any name. Databases on different servers are dumped one
//! server after another, which is not one instant: docs/OPERATIONS.md says what that costs.
//!
//! Credentials go to the tools in an options file readable by its owner only, never on the
//! command line (where `ps` would show them).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::files::{self, Written};
use super::manifest::{Entry, Kind};
use super::plan::MySqlDb;

/// A MySQL database and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct Database {
    /// Host name or address (always reached over TCP).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    password: Option<String>,
    /// The database's name.
    pub name: String,
    /// The URL it came from, pointing at `name` (a secret: it may hold the password).
    url: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}/{}", self.user, self.host, self.port, self.name)
    }
}

/// Percent-decoding of a URL's user or password.
fn decode(raw: &str) -> anyhow::Result<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).context("a bad %-escape in a URL")?;
            out.push(byte);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).context("a URL's user or password is not UTF-8")
}

/// Names this module puts between backticks: letters, digits, `_` and `$`, at most 64.
fn check_name(name: &str) -> anyhow::Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
    anyhow::ensure!(plain, "database name {name:?}: backup handles names of letters, digits, _ and $ only");
    Ok(())
}

impl Database {
    /// Reads `mysql://user:password@host:port/name` (as the store does); `key` names the setting.
    pub fn parse(raw: &str, key: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(raw).map_err(|e| anyhow::anyhow!("{key}: not a URL ({e})"))?;
        let name = url.path().trim_start_matches('/').to_owned();
        check_name(&name).with_context(|| key.to_owned())?;
        Ok(Self {
            host: url.host_str().filter(|h| !h.is_empty()).unwrap_or("localhost").to_owned(),
            port: url.port().unwrap_or(3306),
            user: decode(url.username())?,
            password: url.password().map(decode).transpose()?,
            name,
            url: raw.to_owned(),
        })
    }

    /// The same server and credentials, another database.
    pub fn with_name(&self, name: &str) -> anyhow::Result<Self> {
        check_name(name)?;
        let mut url = url::Url::parse(&self.url)?;
        url.set_path(&format!("/{name}"));
        Ok(Self { name: name.to_owned(), url: url.to_string(), ..self.clone() })
    }

    /// The URL of this database, with the original's credentials and parameters (a secret).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether both name one database of one server.
    pub fn same_database(&self, other: &Self) -> bool {
        (self.host.as_str(), self.port, self.name.as_str()) == (other.host.as_str(), other.port, other.name.as_str())
    }

    fn same_login(&self, other: &Self) -> bool {
        (self.host.as_str(), self.port, self.user.as_str(), self.password.as_deref())
            == (other.host.as_str(), other.port, other.user.as_str(), other.password.as_deref())
    }
}

/// An options file with one server's login, deleted on drop.
struct Login(PathBuf);

impl Login {
    fn write(db: &Database) -> anyhow::Result<Self> {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut text =
            format!("[client]\nprotocol=TCP\nhost={}\nport={}\nuser={}\n", quote(&db.host), db.port, quote(&db.user));
        if let Some(p) = &db.password {
            text.push_str(&format!("password={}\n", quote(p)));
        }
        let path = std::env::temp_dir().join(format!("flashback-login-{}.cnf", uuid::Uuid::new_v4().simple()));
        crate::keys::write_private(&path, text.as_bytes()).context("writing the MySQL login file")?;
        Ok(Self(path))
    }

    /// A command of `tool` reading this login (the options file must come first).
    fn command(&self, tool: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(tool);
        cmd.arg(format!("--defaults-extra-file={}", self.0.display())).kill_on_drop(true);
        cmd
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `mariadb` with `sql` against `db` (or no database); returns its tab-separated output.
pub async fn query(db: &Database, use_db: bool, sql: &str) -> anyhow::Result<String> {
    let login = Login::write(db)?;
    let mut cmd = login.command("mariadb");
    cmd.args(["--batch", "--skip-column-names", "--default-character-set=utf8mb4", "-e", sql]);
    if use_db {
        cmd.arg(format!("--database={}", db.name));
    }
    let out = cmd.output().await.context("running mariadb (Debian: apt install mariadb-client)")?;
    anyhow::ensure!(out.status.success(), "mariadb on {db:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The tables `db` holds (none if it does not exist).
pub async fn tables(db: &Database) -> anyhow::Result<Vec<String>> {
    let sql = format!("SELECT table_name FROM information_schema.tables WHERE table_schema = '{}'", db.name);
    Ok(query(db, false, &sql).await?.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
}

/// Creates `db` if it does not exist.
pub async fn create(db: &Database) -> anyhow::Result<()> {
    let sql = format!("CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci", db.name);
    query(db, false, &sql).await.map(drop)
}

/// Drops `db` and everything in it.
pub async fn drop_database(db: &Database) -> anyhow::Result<()> {
    query(db, false, &format!("DROP DATABASE IF EXISTS `{}`", db.name)).await.map(drop)
}

/// Drops every table of `db` (a forced restore over a database in use before).
pub async fn drop_tables(db: &Database) -> anyhow::Result<()> {
    let names = tables(db).await?;
    if names.is_empty() {
        return Ok(());
    }
    for n in &names {
        anyhow::ensure!(!n.contains('`'), "table name {n:?} in {db:?}");
    }
    let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    query(db, true, &format!("SET FOREIGN_KEY_CHECKS = 0; DROP TABLE IF EXISTS {}", list.join(", "))).await.map(drop)
}

/// Loads the dump at `file` into `db` (which must exist).
pub async fn load(db: &Database, file: &Path) -> anyhow::Result<()> {
    let login = Login::write(db)?;
    let input = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let out = login
        .command("mariadb")
        .args(["--batch", "--default-character-set=utf8mb4", &format!("--database={}", db.name)])
        .stdin(Stdio::from(input))
        .output()
        .await
        .context("running mariadb (Debian: apt install mariadb-client)")?;
    anyhow::ensure!(
        out.status.success(),
        "loading {} into {db:?}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// One open output file of a split dump.
struct Part {
    file: tokio::fs::File,
    hash: Sha256,
    bytes: u64,
}

impl Part {
    async fn write(&mut self, line: &[u8]) -> anyhow::Result<()> {
        self.file.write_all(line).await?;
        self.hash.update(line);
        self.bytes = self.bytes.checked_add(line.len() as u64).context("dump size overflows")?;
        Ok(())
    }
}

/// Dumps every database (grouped by server, one consistent transaction per server) into
/// `to/mysql/<role>.sql`.
pub async fn dump_all(dbs: &[MySqlDb], to: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut groups: Vec<Vec<&MySqlDb>> = Vec::new();
    for db in dbs {
        match groups.iter_mut().find(|g| g.first().is_some_and(|first| first.db.same_login(&db.db))) {
            Some(g) => g.push(db),
            None => groups.push(vec![db]),
        }
    }
    let mut entries = Vec::new();
    for group in groups {
        entries.extend(dump_server(&group, to).await?);
    }
    Ok(entries)
}

async fn dump_server(group: &[&MySqlDb], to: &Path) -> anyhow::Result<Vec<Entry>> {
    let first = &group.first().context("an empty dump group")?.db;
    let login = Login::write(first)?;
    let mut cmd = login.command("mariadb-dump");
    cmd.args([
        "--single-transaction",
        "--quick",
        "--no-create-db",
        "--skip-add-locks",
        "--hex-blob",
        "--triggers",
        "--default-character-set=utf8mb4",
        "--databases",
    ]);
    cmd.args(group.iter().map(|d| d.db.name.as_str())).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().context("running mariadb-dump (Debian: apt install mariadb-client)")?;
    let stdout = child.stdout.take().context("mariadb-dump's output")?;
    let mut lines = BufReader::new(stdout);
    std::fs::create_dir_all(to.join("mysql"))?;
    let (mut header, mut line) = (Vec::new(), Vec::new());
    let mut parts: Vec<(String, Part)> = Vec::new();
    let mut current: Option<usize> = None;
    let mut last_line = Vec::new();
    while lines.read_until(b'\n', &mut line).await? > 0 {
        let used = group.iter().find(|d| line.trim_ascii_end() == format!("USE `{}`;", d.db.name).as_bytes());
        if let Some(d) = used {
            let path = format!("mysql/{}.sql", d.role);
            let file = tokio::fs::File::create_new(to.join(&path)).await.with_context(|| format!("creating {path}"))?;
            let mut part = Part { file, hash: Sha256::new(), bytes: 0 };
            part.write(&header).await?;
            parts.push((d.role.clone(), part));
            current = Some(parts.len() - 1);
        } else if let Some(p) = current.and_then(|i| parts.get_mut(i)) {
            p.1.write(&line).await?;
        } else {
            header.extend_from_slice(&line);
        }
        if !line.trim_ascii().is_empty() {
            last_line = std::mem::take(&mut line);
        }
        line.clear();
    }
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "mariadb-dump of {first:?}…: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    anyhow::ensure!(last_line.starts_with(b"-- Dump completed"), "mariadb-dump of {first:?}… ended early");
    let mut entries = Vec::new();
    for d in group {
        let Some((_, part)) = parts.iter().position(|(r, _)| *r == d.role).map(|i| parts.swap_remove(i)) else {
            anyhow::bail!("mariadb-dump's output holds no database {}", d.db.name);
        };
        part.file.sync_all().await?;
        let written = Written { bytes: part.bytes, sha256: hex::encode(part.hash.finalize()) };
        let mut entry = Entry::new(format!("mysql/{}.sql", d.role), Kind::MysqlDump, written).with_role(&d.role);
        entry.database = Some(d.db.name.clone());
        entries.push(entry);
    }
    files::sync_dir(&to.join("mysql"))?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_their_parts_and_odd_names_are_refused() {
        let db = Database::parse("mysql://us%40er:p%3Ass@db.local:3307/shop_1", "store.url").expect("parse");
        assert_eq!(
            (db.host.as_str(), db.port, db.user.as_str(), db.name.as_str()),
            ("db.local", 3307, "us@er", "shop_1")
        );
        assert_eq!(db.password.as_deref(), Some("p:ss"));
        assert!(!format!("{db:?}").contains("p:ss"), "Debug never shows the password");
        let plain = Database::parse("mariadb://root@127.0.0.1/x", "k").expect("parse");
        assert_eq!((plain.port, plain.password), (3306, None));
        for bad in ["mysql://u@h/", "mysql://u@h/a-b", "mysql://u@h/a%60b", "not a url"] {
            assert!(Database::parse(bad, "store.url").is_err(), "{bad}");
        }
        let scratch = db.with_name("shop_1_v0a1b2c3").expect("scratch name");
        assert_eq!(scratch.url(), "mysql://us%40er:p%3Ass@db.local:3307/shop_1_v0a1b2c3");
        assert!(db.with_name("x; DROP").is_err());
    }
}
