//! The configuration file every instance of the drill (and its audits) runs with: the
//! scaled-out backends, shared secrets, and limits raised where all load comes from one address.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Order shard databases (must divide 1024).
pub const SHARDS: usize = 2;
/// The main database on the drill's MariaDB; shards are `<DATABASE>_orders_<i>`.
pub const DATABASE: &str = "flashback";
/// Prefix of the RabbitMQ exchanges and queues (the server's default).
pub const EXCHANGE_PREFIX: &str = "flashback";

/// Where the backends are.
#[derive(Debug, Clone)]
pub struct Backends {
    /// `mysql://root@127.0.0.1:<port>` (no database).
    pub mysql_server: String,
    /// `redis://127.0.0.1:<port>`.
    pub redis_url: String,
    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub amqp_url: String,
}

impl Backends {
    /// The main store's URL.
    pub fn store_url(&self) -> String {
        format!("{}/{DATABASE}", self.mysql_server)
    }

    /// The order shards' URLs, in shard order.
    pub fn shard_urls(&self) -> Vec<String> {
        (0..SHARDS).map(|i| format!("{}/{DATABASE}_orders_{i}", self.mysql_server)).collect()
    }
}

/// 32 random bytes as hex, from the kernel.
fn secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the drill's secrets")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A TOML string literal (JSON's escaping is valid TOML for the URLs and hex used here).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The file's text: one deployment on `backends`, with fresh secrets every instance shares.
pub fn render(backends: &Backends) -> anyhow::Result<String> {
    let shards: Vec<String> = backends.shard_urls().iter().map(|u| quoted(u)).collect();
    Ok(format!(
        r#"# The flashback-bench drill's deployment (data_dir comes per instance; node numbers are leased).
log_level = "warn"
log_format = "pretty"

[store]
url = {store}

[cache]
redis_url = {redis}

[auth]
token_secret = {token}
# Cheap hashing: logins are part of the load, the drill measures availability, not argon2.
argon2_memory_kib = 1024
argon2_iterations = 1
# Every request reaches the instances from nginx on 127.0.0.1.
login_per_ip_per_minute = 1000000
login_per_account_per_minute = 1000

[http]
trust_forwarded_for = true

[trade]
shard_urls = [{shards}]
payment_secret = {payment}

[events]
amqp_url = {amqp}
exchange_prefix = {prefix}

[flash_sale]
engine = "redis"
token_secret = {flash}
per_ip_per_sec = 100000

[track]
queue = "redis"
"#,
        store = quoted(&backends.store_url()),
        redis = quoted(&backends.redis_url),
        token = quoted(&secret()?),
        shards = shards.join(", "),
        payment = quoted(&secret()?),
        amqp = quoted(&backends.amqp_url),
        prefix = quoted(EXCHANGE_PREFIX),
        flash = quoted(&secret()?),
    ))
}

/// Writes the file into `dir` (mode 0600: it holds the secrets); returns its path.
pub fn write(dir: &Path, backends: &Backends) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("flashback.toml");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(render(backends)?.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_every_backend_and_fresh_secrets() {
        let b = Backends {
            mysql_server: "mysql://root@127.0.0.1:3307".into(),
            redis_url: "redis://127.0.0.1:6380".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5673/%2f".into(),
        };
        let (one, two) = (render(&b).unwrap(), render(&b).unwrap());
        assert!(one.contains(r#"url = "mysql://root@127.0.0.1:3307/flashback""#), "{one}");
        assert!(one.contains(r#""mysql://root@127.0.0.1:3307/flashback_orders_1""#), "{one}");
        assert!(one.contains(r#"amqp_url = "amqp://guest:guest@127.0.0.1:5673/%2f""#), "{one}");
        assert!(one.contains(r#"engine = "redis""#) && one.contains(r#"queue = "redis""#), "{one}");
        assert_ne!(one, two, "each drill gets its own secrets");
    }

    #[test]
    fn the_server_accepts_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let b = Backends {
            mysql_server: "mysql://root@127.0.0.1:3307".into(),
            redis_url: "redis://127.0.0.1:6380".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5673/%2f".into(),
        };
        let path = write(dir.path(), &b).unwrap();
        let config = flashback_server::config::Config::load(Some(&path)).unwrap();
        assert!(config.http.trust_forwarded_for);
        assert_eq!(config.trade.shard_urls.len(), SHARDS);
    }
}
