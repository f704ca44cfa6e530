//! Migrating a ledger written before accounts had ids (`20261122000010_ledger_accounts`)
//! keeps every transaction, entry and balance, and rebate rows written before users' lists
//! (`20261204000012_rebate_lists`) are listed: the schema is built up to the migration before,
//! filled the old way, then opened as the store opens it. On SQLite, and on MySQL/MariaDB when
//! `FLASHBACK_TEST_MYSQL_URL` is set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flashback_core::{Account, UserId};
use flashback_store::{Store, StoreOptions, testing};
use sqlx::migrate::Migrator;

/// The first migration of the new layout.
const ACCOUNTS_MIGRATION: &str = "20261122000010";

/// A ledger in the old layout: two transactions over four accounts, balances kept in the
/// accounts' normal signs (credits negative in entries, positive in a pending balance).
const OLD_LEDGER: &str = "
INSERT INTO ledger_txns (id, idem_key, kind, reference, created_at_ms) VALUES
    (11, 'rebate:taobao:1:v1:estimated', 'rebate.estimated', 'taobao:1', 1000),
    (12, 'rebate:taobao:2:v1:estimated', 'rebate.estimated', 'taobao:2', 2000);
INSERT INTO ledger_entries (txn_id, seq, account, amount, created_at_ms) VALUES
    (11, 0, 'platform:receivable', 100, 1000),
    (11, 1, 'user:7:pending', -60, 1000),
    (11, 2, 'platform:revenue', -40, 1000),
    (12, 0, 'platform:receivable', 50, 2000),
    (12, 1, 'user:7:pending', -20, 2000),
    (12, 2, 'user:8:pending', -10, 2000),
    (12, 3, 'platform:revenue', -20, 2000);
INSERT INTO ledger_balances (account, balance, updated_at_ms) VALUES
    ('platform:receivable', 150, 2000),
    ('platform:revenue', 60, 2000),
    ('user:7:pending', 80, 2000),
    ('user:8:pending', 10, 2000);
INSERT INTO rebate_orders (source, line_key, parent_key, user_id, inviter_id, grand_inviter_id, tracking, item_id,
    item_title, category, state, network_status, paid_minor, estimate_minor, settled_minor, refunded_minor,
    commission_minor, buyer_share, inviter_share, grand_share, platform_share, shares_available, click_ms, paid_at_ms,
    settled_at_ms, available_at_ms, network_modified_ms, version, created_at_ms, updated_at_ms) VALUES
    ('taobao', '2', '2', 7, 8, NULL, NULL, 'i', 't', NULL, 'estimated', '12', 500, 50, 0, 0, 50, 20, 10, 0, 20, 0,
     NULL, NULL, NULL, NULL, 2000, 1, 2000, 9000),
    ('taobao', '1', '1', 7, NULL, NULL, NULL, 'i', 't', NULL, 'estimated', '12', 1000, 100, 0, 0, 100, 60, 0, 0, 40, 0,
     NULL, NULL, NULL, NULL, 1000, 1, 1000, 1000),
    ('taobao', '3', '3', NULL, NULL, NULL, NULL, 'i', 't', NULL, 'estimated', '12', 100, 10, 0, 0, 10, 0, 0, 0, 10, 0,
     NULL, NULL, NULL, NULL, 3000, 1, 3000, 3000),
    ('taobao', '4', '4', 9, 7, NULL, NULL, 'i', 't', NULL, 'estimated', '12', 300, 30, 0, 0, 30, 10, 5, 0, 15, 0,
     NULL, NULL, NULL, NULL, 2500, 1, 2500, 2500);
";

/// The migrations of `dialect` before the accounts migration, copied to `to`.
fn migrations_before(dialect: &str, to: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dialect);
    std::fs::create_dir_all(to).expect("migrations directory");
    for entry in std::fs::read_dir(&from).expect("migrations") {
        let path = entry.expect("migration").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.as_str() < ACCOUNTS_MIGRATION {
            std::fs::copy(&path, to.join(&name)).expect("copy migration");
        }
    }
    to.to_owned()
}

/// The keys of a user's rebate rows as listed.
async fn listed(store: &dyn Store, user: i64) -> Vec<String> {
    let rows = store.rebates_of(UserId::new(user).expect("user"), None, 10).await.expect("rebates");
    rows.into_iter().map(|e| format!("{}:{}", e.row.line_key, e.role.as_str())).collect()
}

/// What the store must show after the migration.
async fn check(store: &dyn Store) {
    let audit = store.audit_ledger().await.expect("audit");
    assert!(audit.violations.is_empty(), "{:?}", audit.violations);
    // Rebate rows written before lists existed: listed for their buyer and inviters in the
    // order they were created (not updated); a row without a buyer in no list.
    assert_eq!(store.rebate_list_breaks().await.expect("lists"), Vec::<String>::new());
    // An inviter's entries of rows written before (20261223000017) follow the entries they had.
    assert_eq!(listed(store, 7).await, ["4:inviter", "2:buyer", "1:buyer"]);
    assert_eq!(listed(store, 8).await, ["2:inviter"], "an inviter's share lists the row");
    assert_eq!(listed(store, 9).await, ["4:buyer"]);
    assert_eq!((audit.transactions, audit.entries, audit.accounts), (2, 7, 4));
    let seven = Account::Pending(UserId::new(7).expect("user"));
    let mut balances = store.balances().await.expect("balances");
    balances.sort();
    let mut expected = vec![
        (Account::Receivable, 150),
        (Account::Revenue, 60),
        (seven, 80),
        (Account::Pending(UserId::new(8).expect("user")), 10),
    ];
    expected.sort();
    assert_eq!(balances, expected);
    let lines = store.statement(seven, None, 10).await.expect("statement");
    let got: Vec<(i64, &str, i64)> = lines.iter().map(|l| (l.txn_id, l.account.as_str(), l.amount)).collect();
    assert_eq!(got, vec![(12, "user:7:pending", -20), (11, "user:7:pending", -60)]);
    // The migrated ledger goes on: a new posting to a migrated account and a new one.
    let txn = flashback_store::NewTxn {
        id: 13,
        key: "after-migration".into(),
        kind: "test".into(),
        reference: "after".into(),
        postings: vec![
            flashback_store::Posting::debit(Account::Receivable, 30),
            flashback_store::Posting::credit(seven, 20),
            flashback_store::Posting::credit(Account::Pending(UserId::new(9).expect("user")), 10),
        ],
        no_overdraft: Vec::new(),
        at_ms: 3000,
    };
    assert_eq!(store.post(&txn).await.expect("post"), flashback_store::Posted::New);
    // A migrated list goes on: the unclaimed row is claimed by user 7.
    let mut claimed = store.rebate_order("taobao", "3").await.expect("read").expect("row");
    claimed.user_id = Some(UserId::new(7).expect("user"));
    claimed.version = 2;
    let applied = store.apply_rebate(&claimed, Some(1), None).await.expect("claim");
    assert_eq!(applied, flashback_store::Applied::Done);
    assert_eq!(listed(store, 7).await, ["3:buyer", "4:inviter", "2:buyer", "1:buyer"]);
    assert_eq!(store.rebate_list_breaks().await.expect("lists"), Vec::<String>::new());
    assert_eq!(store.balance(seven).await.expect("balance"), 100);
    let audit = store.audit_ledger().await.expect("audit");
    assert!(audit.violations.is_empty(), "{:?}", audit.violations);
    assert_eq!((audit.transactions, audit.entries, audit.accounts), (3, 10, 5));
}

fn options(url: Option<String>, dir: &Path) -> StoreOptions {
    StoreOptions {
        url,
        data_dir: dir.to_owned(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
        breaker: Default::default(),
    }
}

#[tokio::test]
async fn an_old_sqlite_ledger_keeps_its_entries_and_balances() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let before = Migrator::new(migrations_before("sqlite", &dir.path().join("before"))).await.expect("migrator");
    let connect = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("flashback.db"))
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = sqlx::SqlitePool::connect_with(connect).await.expect("connect");
    before.run(&pool).await.expect("old migrations");
    sqlx::raw_sql(OLD_LEDGER).execute(&pool).await.expect("old ledger");
    pool.close().await;
    let store = flashback_store::open(&options(None, dir.path())).await.expect("open and migrate");
    check(store.as_ref()).await;
    store.close().await;
}

#[tokio::test]
async fn an_old_mysql_ledger_keeps_its_entries_and_balances() {
    let Some(db) = testing::empty_mysql("MySQL ledger migration").await else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    let before = Migrator::new(migrations_before("mysql", &dir.path().join("before"))).await.expect("migrator");
    let pool = sqlx::MySqlPool::connect(&db.url).await.expect("connect");
    before.run(&pool).await.expect("old migrations");
    sqlx::raw_sql(OLD_LEDGER).execute(&pool).await.expect("old ledger");
    pool.close().await;
    let store = flashback_store::open(&options(Some(db.url.clone()), dir.path())).await.expect("open and migrate");
    check(store.as_ref()).await;
    store.close().await;
}
