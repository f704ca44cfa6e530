//! `flashback backup`, `backup verify` and `restore` scaled out, through the real binary: the
//! main database and both order shards dumped in one transaction while orders are placed and
//! paid, Redis snapshotted, the dumps verified in scratch databases that are dropped again,
//! and restored into other databases where a server finds every acknowledged write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flashback_core::Role;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::backup::{Acked, GAUGE, assert_every_write_found, flashback, json_out, order_load, stderr, track_load};
use crate::helpers::{Backends, TestApp};

/// Environment giving the binary the same stores as `config`.
fn env_of(config: &flashback_server::Config) -> Vec<(String, String)> {
    let shards: Vec<&str> = config.trade.shard_urls.iter().map(|u| u.expose_secret()).collect();
    let mut env = vec![
        ("FLASHBACK_STORE_URL".to_owned(), config.store.url.as_ref().unwrap().expose_secret().to_owned()),
        ("FLASHBACK_TRADE_SHARD_URLS".to_owned(), serde_json::to_string(&shards).unwrap()),
        ("FLASHBACK_FLASH_SALE_ENGINE".to_owned(), "sql".to_owned()),
    ];
    if let Some(redis) = &config.cache.redis_url {
        env.push(("FLASHBACK_CACHE_REDIS_URL".to_owned(), redis.expose_secret().to_owned()));
        env.push(("FLASHBACK_CACHE_REDIS_PREFIX".to_owned(), config.cache.redis_prefix.clone()));
    }
    env
}

/// Databases on the test server whose names start with `prefix`.
fn databases_like(prefix: &str) -> Vec<String> {
    let server = std::env::var(flashback_store::testing::MYSQL_URL_VAR).unwrap();
    let u = url::Url::parse(server.trim()).unwrap();
    let out = std::process::Command::new("mariadb")
        .args(["--protocol=TCP", "-N", "-B", "-h", u.host_str().unwrap(), "-P", &u.port().unwrap_or(3306).to_string()])
        .args(["-u", u.username()])
        .env("MYSQL_PWD", u.password().unwrap_or_default())
        .args([
            "-e",
            &format!("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '{prefix}%'"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaled_out_store_is_backed_up_under_load_verified_and_restored_elsewhere() {
    let Some(backends) = Backends::get("backup scaled out").await else { return };
    let Some(elsewhere) = flashback_store::testing::mysql("backup scaled out").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let mut config = backends.config(dir.path());
    config.track.per_client_per_sec = 1_000_000;
    let env = env_of(&config);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let live = Arc::new(TestApp::start(config.clone(), dir).await);
    let cat = live.category("Scaled backup goods").await;
    let merchant = live.token_for("sbshop", Role::Merchant).await;
    let product = live.product(&merchant, &cat, "SB-1", 100_000).await["id"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for b in 0..2 {
        let token = live.token_for(&format!("sbbuyer{b}"), Role::User).await;
        load.push(tokio::spawn(order_load(live.clone(), token, product.clone(), stop.clone())));
    }
    load.push(tokio::spawn(track_load(live.clone(), stop.clone())));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("scaled");
    let began = Instant::now();
    let out = flashback(&data_dir, &["backup", "--to", to.to_str().unwrap()], &env).await;
    stop.store(true, Ordering::Relaxed);
    assert!(out.status.success(), "backup: {}", stderr(&out));
    let mut acked = Acked::default();
    for task in load {
        acked.extend(task.await.unwrap());
    }
    let manifest: Value = serde_json::from_slice(&std::fs::read(to.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["backend"], "mysql");
    let kinds: Vec<String> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{}:{}", f["kind"].as_str().unwrap(), f["role"].as_str().unwrap_or("")))
        .collect();
    for want in ["mysql-dump:main", "mysql-dump:shard-0", "mysql-dump:shard-1", "redis-rdb:", "journal:"] {
        assert!(kinds.iter().any(|k| k == want), "{want} in {kinds:?}");
    }

    // Verified in scratch databases beside the originals, which are gone afterwards.
    let base = backends.mysql.options.url.as_deref().unwrap().rsplit('/').next().unwrap().to_owned();
    let out = flashback(&data_dir, &["backup", "verify", to.to_str().unwrap()], &env).await;
    let report = json_out(&out);
    assert!(out.status.success(), "verify: {report} {}", stderr(&out));
    assert_eq!((report["ok"].clone(), report["recorded"].clone()), (json!(true), json!(true)), "{report}");
    assert!(report["audits"]["trade"]["orders"].as_u64().unwrap() > 0, "{report}");
    let left: Vec<String> = databases_like(&base).into_iter().filter(|n| n.contains("_v")).collect();
    assert_eq!(left, Vec::<String>::new(), "scratch databases dropped");
    assert!(flashback_server::backup::gauge::refresh(&live.state).await.unwrap() > 0);
    assert!(live.metric(GAUGE).await > 0.0);

    // Restored into other databases: refused while they hold tables, unless --force.
    let mut target = config.clone();
    target.store.url = elsewhere.options.url.clone().map(SecretString::from);
    target.trade.shard_urls = elsewhere.shard_options.urls.iter().cloned().map(SecretString::from).collect();
    target.cache.redis_url = None;
    let restored_dir = tempfile::tempdir().unwrap();
    target.data_dir = restored_dir.path().to_owned();
    let target_env = env_of(&target);
    let target_env: Vec<(&str, &str)> = target_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let from = ["restore", "--from", to.to_str().unwrap()];
    let refused = flashback(restored_dir.path(), &from, &target_env).await;
    assert!(!refused.status.success() && stderr(&refused).contains("tables"), "{}", stderr(&refused));
    let forced = ["restore", "--force", "--from", to.to_str().unwrap()];
    let out = flashback(restored_dir.path(), &forced, &target_env).await;
    let restored_report = json_out(&out);
    assert!(out.status.success(), "restore: {}", stderr(&out));
    assert!(restored_report["notes"][0].as_str().unwrap().contains("redis"), "{restored_report}");

    let restored = TestApp::start(target, restored_dir).await;
    let checked = assert_every_write_found(&restored, &acked, began).await;
    assert!(checked > 20, "the load wrote enough to check ({checked})");
    let audit = flashback_server::trade::audit::audit(&restored.state).await.unwrap();
    assert!(audit.violations.is_empty(), "{:?}", audit.violations);
    restored.shutdown().await;
    Arc::try_unwrap(live).ok().expect("load tasks are done").shutdown().await;
    drop(elsewhere);
}
