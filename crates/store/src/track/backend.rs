//! The tracking store's SQL, written once for SQLite and MariaDB by a macro; the dialects
//! differ only in DDL types, upserts, integer division and row locks.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use flashback_core::Day;
use flashback_core::hll::Sketch;
use sqlx::{MySqlPool, QueryBuilder, Row, SqlitePool};

use super::{DayCount, EventFilter, HourCount, QueueCursor, TrackEvent};
use crate::{StoreError, StoreOptions, StoreResult};

/// Rows per multi-row statement (10 binds a row stays under both databases' limits).
const CHUNK: usize = 1_000;

#[derive(Debug)]
pub(super) enum Db {
    Sqlite { writer: SqlitePool, reader: SqlitePool },
    MySql(MySqlPool),
}

fn id_bytes(id: u128) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// A text column's value. Read as bytes: MariaDB reports `VARCHAR … COLLATE utf8mb4_bin`
/// columns as `VARBINARY`, which sqlx will not decode into a `String`.
fn text(bytes: Vec<u8>) -> StoreResult<String> {
    String::from_utf8(bytes).map_err(|_| corrupt("a text column is not UTF-8"))
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { table: "track", reason: reason.into() }
}

fn id_from(bytes: &[u8]) -> StoreResult<u128> {
    let b: [u8; 16] = bytes.try_into().map_err(|_| corrupt("event id is not 16 bytes"))?;
    Ok(u128::from_be_bytes(b))
}

fn day_number(day: Day) -> i64 {
    i64::from(day.number())
}

fn day_from(n: i64) -> StoreResult<Day> {
    u32::try_from(n).ok().and_then(Day::from_number).ok_or_else(|| corrupt(format!("bad day {n}")))
}

/// A rollup row's key.
type RollupKey = (Day, &'static str, String, String);

/// New events' contributions to the rollups, sorted so that every writer locks rows in the
/// same order.
fn rollup_deltas(days: &[(Day, &[&TrackEvent])]) -> BTreeMap<RollupKey, (i64, Sketch)> {
    let mut deltas: BTreeMap<RollupKey, (i64, Sketch)> = BTreeMap::new();
    for (day, events) in days {
        for e in *events {
            let keys = [("object", e.object_key()), ("module", e.module.clone()), ("all", String::new())];
            for (scope, key) in keys {
                let d = deltas.entry((*day, scope, key, e.action.clone())).or_default();
                d.0 += 1;
                d.1.insert_key(&e.visitor);
            }
        }
    }
    deltas
}

macro_rules! track_sql {
    ($module:ident, $db:ty, $blob:literal, $idtype:literal, $text:literal, $engine:literal,
     $upsert_rollup:literal, $upsert_cursor:literal, $insert_ignore:literal, $int:literal, $div:literal, $lock:literal) => {
        pub(super) mod $module {
            use super::*;

            type Pool = sqlx::Pool<$db>;

            fn event_columns() -> String {
                format!(
                    "(id {id} NOT NULL PRIMARY KEY, ts_ms BIGINT NOT NULL, received_ms BIGINT NOT NULL, \
                     user_id BIGINT NULL, visitor {t}(80) NOT NULL, module {t}(64) NOT NULL, action {t}(64) NOT NULL, \
                     object_type {t}(32) NOT NULL, object_id {t}(64) NOT NULL, properties TEXT NULL)",
                    id = $idtype,
                    t = $text
                )
            }

            pub(crate) async fn create_schema(pool: &Pool) -> StoreResult<()> {
                let statements = [
                    format!("CREATE TABLE IF NOT EXISTS track_days (day BIGINT NOT NULL PRIMARY KEY){}", $engine),
                    format!(
                        "CREATE TABLE IF NOT EXISTS track_cursor (name {t}(64) NOT NULL PRIMARY KEY, \
                         seg BIGINT NOT NULL, pos BIGINT NOT NULL){e}",
                        t = $text,
                        e = $engine
                    ),
                    format!(
                        "CREATE TABLE IF NOT EXISTS track_rollups (day BIGINT NOT NULL, scope {t}(8) NOT NULL, \
                         rkey {t}(100) NOT NULL, action {t}(64) NOT NULL, pv BIGINT NOT NULL, sketch {b} NOT NULL, \
                         PRIMARY KEY (day, scope, rkey, action)){e}",
                        t = $text,
                        b = $blob,
                        e = $engine
                    ),
                ];
                for s in statements {
                    sqlx::query(&s).execute(pool).await?;
                }
                Ok(())
            }

            pub(crate) async fn create_day(pool: &Pool, day: Day, table: &str) -> StoreResult<()> {
                sqlx::query(&format!("CREATE TABLE IF NOT EXISTS {table} {}{}", event_columns(), $engine))
                    .execute(pool)
                    .await?;
                sqlx::query(concat!($insert_ignore, " INTO track_days (day) VALUES (?)", ""))
                    .bind(day_number(day))
                    .execute(pool)
                    .await
                    .map(|_| ())
                    .or_else(|e| match StoreError::from(e) {
                        StoreError::Conflict(_) => Ok(()),
                        other => Err(other),
                    })
            }

            pub(crate) async fn write(
                pool: &Pool,
                batches: &[(Day, String, Vec<&TrackEvent>)],
                cursor: Option<(&str, QueueCursor)>,
            ) -> StoreResult<u64> {
                let mut tx = pool.begin().await?;
                let mut fresh_by_day: Vec<(Day, Vec<&TrackEvent>)> = Vec::with_capacity(batches.len());
                for (day, table, events) in batches {
                    let mut stored: HashSet<u128> = HashSet::new();
                    for chunk in events.chunks(CHUNK) {
                        let mut q = QueryBuilder::<$db>::new(format!("SELECT id FROM {table} WHERE id IN ("));
                        let mut list = q.separated(", ");
                        for e in chunk {
                            list.push_bind(id_bytes(e.id));
                        }
                        q.push(")");
                        for row in q.build().fetch_all(&mut *tx).await? {
                            let bytes: Vec<u8> = row.try_get(0)?;
                            stored.insert(id_from(&bytes)?);
                        }
                    }
                    let fresh: Vec<&TrackEvent> = events.iter().copied().filter(|e| !stored.contains(&e.id)).collect();
                    for chunk in fresh.chunks(CHUNK) {
                        insert_events(&mut tx, table, chunk).await?;
                    }
                    fresh_by_day.push((*day, fresh));
                }
                let views: Vec<(Day, &[&TrackEvent])> = fresh_by_day.iter().map(|(d, e)| (*d, e.as_slice())).collect();
                let mut deltas = rollup_deltas(&views);
                merge_stored_sketches(&mut tx, &mut deltas).await?;
                let rows: Vec<(&RollupKey, &(i64, Sketch))> = deltas.iter().collect();
                for chunk in rows.chunks(CHUNK) {
                    let mut q = QueryBuilder::<$db>::new("INSERT INTO track_rollups (day, scope, rkey, action, pv, sketch) ");
                    q.push_values(chunk, |mut b, ((day, scope, key, action), (pv, sketch))| {
                        b.push_bind(day_number(*day))
                            .push_bind(*scope)
                            .push_bind(key.clone())
                            .push_bind(action.clone())
                            .push_bind(*pv)
                            .push_bind(sketch.to_bytes());
                    });
                    q.push($upsert_rollup);
                    q.build().execute(&mut *tx).await?;
                }
                if let Some((name, c)) = cursor {
                    sqlx::query(concat!("INSERT INTO track_cursor (name, seg, pos) VALUES (?, ?, ?) ", $upsert_cursor))
                        .bind(name)
                        .bind(c.segment)
                        .bind(c.position)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(fresh_by_day.iter().map(|(_, e)| e.len() as u64).sum())
            }

            async fn insert_events(
                tx: &mut sqlx::Transaction<'_, $db>,
                table: &str,
                events: &[&TrackEvent],
            ) -> StoreResult<()> {
                let mut q = QueryBuilder::<$db>::new(format!(
                    "INSERT INTO {table} (id, ts_ms, received_ms, user_id, visitor, module, action, object_type, \
                     object_id, properties) "
                ));
                q.push_values(events, |mut b, e| {
                    b.push_bind(id_bytes(e.id))
                        .push_bind(e.ts_ms)
                        .push_bind(e.received_ms)
                        .push_bind(e.user_id)
                        .push_bind(e.visitor.clone())
                        .push_bind(e.module.clone())
                        .push_bind(e.action.clone())
                        .push_bind(e.object_type.clone())
                        .push_bind(e.object_id.clone())
                        .push_bind(e.properties.clone());
                });
                q.build().execute(&mut **tx).await?;
                Ok(())
            }

            /// Reads (and on MariaDB locks) the stored rows the deltas touch and folds their
            /// sketches in, so the upsert writes the union.
            async fn merge_stored_sketches(
                tx: &mut sqlx::Transaction<'_, $db>,
                deltas: &mut BTreeMap<RollupKey, (i64, Sketch)>,
            ) -> StoreResult<()> {
                let mut groups: BTreeMap<(Day, &'static str, String), Vec<String>> = BTreeMap::new();
                for (day, scope, key, action) in deltas.keys() {
                    groups.entry((*day, *scope, action.clone())).or_default().push(key.clone());
                }
                for ((day, scope, action), keys) in groups {
                    for chunk in keys.chunks(CHUNK) {
                        let mut q = QueryBuilder::<$db>::new("SELECT rkey, sketch FROM track_rollups WHERE day = ");
                        q.push_bind(day_number(day)).push(" AND scope = ").push_bind(scope);
                        q.push(" AND action = ").push_bind(action.clone()).push(" AND rkey IN (");
                        let mut list = q.separated(", ");
                        for k in chunk {
                            list.push_bind(k.clone());
                        }
                        q.push(")").push($lock);
                        for row in q.build().fetch_all(&mut **tx).await? {
                            let key = text(row.try_get(0)?)?;
                            let bytes: Vec<u8> = row.try_get(1)?;
                            let stored = Sketch::from_bytes(&bytes).map_err(|e| corrupt(e.to_string()))?;
                            if let Some(d) = deltas.get_mut(&(day, scope, key, action.clone())) {
                                d.1.merge(&stored);
                            }
                        }
                    }
                }
                Ok(())
            }

            pub(crate) async fn cursor(pool: &Pool, name: &str) -> StoreResult<Option<QueueCursor>> {
                let row = sqlx::query("SELECT seg, pos FROM track_cursor WHERE name = ?")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?;
                Ok(match row {
                    Some(r) => Some(QueueCursor { segment: r.try_get(0)?, position: r.try_get(1)? }),
                    None => None,
                })
            }

            pub(crate) async fn counts(
                pool: &Pool,
                scope: &str,
                key: &str,
                action: &str,
                from: Day,
                to: Day,
            ) -> StoreResult<Vec<DayCount>> {
                let rows = sqlx::query(
                    "SELECT day, pv, sketch FROM track_rollups WHERE scope = ? AND rkey = ? AND action = ? \
                     AND day >= ? AND day <= ? ORDER BY day",
                )
                .bind(scope)
                .bind(key)
                .bind(action)
                .bind(day_number(from))
                .bind(day_number(to))
                .fetch_all(pool)
                .await?;
                rows.into_iter()
                    .map(|r| {
                        let bytes: Vec<u8> = r.try_get(2)?;
                        Ok(DayCount {
                            day: day_from(r.try_get(0)?)?,
                            pv: r.try_get(1)?,
                            sketch: Sketch::from_bytes(&bytes).map_err(|e| corrupt(e.to_string()))?,
                        })
                    })
                    .collect()
            }

            pub(crate) async fn top(
                pool: &Pool,
                scope: &str,
                action: &str,
                from: Day,
                to: Day,
                prefix: Option<&str>,
                limit: u32,
            ) -> StoreResult<Vec<(String, i64)>> {
                let mut q = QueryBuilder::<$db>::new(concat!("SELECT rkey, CAST(SUM(pv) AS ", $int, ") AS total "));
                q.push("FROM track_rollups WHERE scope = ").push_bind(scope.to_owned());
                q.push(" AND action = ").push_bind(action.to_owned());
                q.push(" AND day >= ").push_bind(day_number(from)).push(" AND day <= ").push_bind(day_number(to));
                if let Some(p) = prefix {
                    q.push(" AND rkey LIKE ").push_bind(format!("{}%", p.replace('%', "").replace('_', "\\_")));
                }
                q.push(" GROUP BY rkey ORDER BY total DESC, rkey LIMIT ").push_bind(i64::from(limit));
                let rows = q.build().fetch_all(pool).await?;
                rows.into_iter().map(|r| Ok((text(r.try_get(0)?)?, r.try_get(1)?))).collect()
            }

            fn push_filter(q: &mut QueryBuilder<'_, $db>, filter: &EventFilter) {
                if let Some(m) = &filter.module {
                    q.push(" AND module = ").push_bind(m.clone());
                }
                if let Some((t, id)) = &filter.object {
                    q.push(" AND object_type = ").push_bind(t.clone()).push(" AND object_id = ").push_bind(id.clone());
                }
            }

            pub(crate) async fn hourly(
                pool: &Pool,
                table: &str,
                start_ms: i64,
                action: &str,
                filter: &EventFilter,
            ) -> StoreResult<Vec<HourCount>> {
                let mut q = QueryBuilder::<$db>::new("SELECT (ts_ms - ");
                q.push_bind(start_ms).push(concat!(") ", $div, " 3600000 AS h, COUNT(*), COUNT(DISTINCT visitor) FROM "));
                q.push(table).push(" WHERE action = ").push_bind(action.to_owned());
                push_filter(&mut q, filter);
                q.push(" GROUP BY h ORDER BY h");
                let rows = q.build().fetch_all(pool).await?;
                rows.into_iter()
                    .map(|r| {
                        let h: i64 = r.try_get(0)?;
                        Ok(HourCount {
                            hour: u8::try_from(h).map_err(|_| corrupt(format!("hour {h} outside its day")))?,
                            pv: r.try_get(1)?,
                            uv: r.try_get(2)?,
                        })
                    })
                    .collect()
            }

            pub(crate) async fn steps(
                pool: &Pool,
                table: &str,
                actions: &[String],
                filter: &EventFilter,
            ) -> StoreResult<Vec<(String, String, i64)>> {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT visitor, action, ts_ms FROM {table} WHERE action IN ("));
                let mut list = q.separated(", ");
                for a in actions {
                    list.push_bind(a.clone());
                }
                q.push(")");
                push_filter(&mut q, filter);
                let rows = q.build().fetch_all(pool).await?;
                rows.into_iter().map(|r| Ok((text(r.try_get(0)?)?, text(r.try_get(1)?)?, r.try_get(2)?))).collect()
            }

            pub(crate) async fn days(pool: &Pool) -> StoreResult<Vec<Day>> {
                let rows = sqlx::query("SELECT day FROM track_days ORDER BY day").fetch_all(pool).await?;
                rows.into_iter().map(|r| day_from(r.try_get(0)?)).collect()
            }

            pub(crate) async fn drop_day(pool: &Pool, day: Day, table: &str) -> StoreResult<()> {
                sqlx::query(&format!("DROP TABLE IF EXISTS {table}")).execute(pool).await?;
                let mut tx = pool.begin().await?;
                sqlx::query("DELETE FROM track_rollups WHERE day = ?").bind(day_number(day)).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM track_days WHERE day = ?").bind(day_number(day)).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            pub(crate) async fn count(pool: &Pool, table: &str) -> StoreResult<i64> {
                let row = sqlx::query(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(pool).await?;
                Ok(row.try_get(0)?)
            }

            pub(crate) async fn raw_insert(pool: &Pool, events: &[TrackEvent]) -> StoreResult<()> {
                let table = "track_raw_baseline";
                sqlx::query(&format!("DROP TABLE IF EXISTS {table}")).execute(pool).await?;
                sqlx::query(&format!("CREATE TABLE {table} {}{}", event_columns(), $engine)).execute(pool).await?;
                let mut tx = pool.begin().await?;
                let refs: Vec<&TrackEvent> = events.iter().collect();
                for chunk in refs.chunks(CHUNK) {
                    insert_events(&mut tx, table, chunk).await?;
                }
                tx.commit().await?;
                sqlx::query(&format!("DROP TABLE {table}")).execute(pool).await?;
                Ok(())
            }
        }
    };
}

track_sql!(
    sqlite,
    sqlx::Sqlite,
    "BLOB",
    "BLOB",
    "VARCHAR",
    " WITHOUT ROWID",
    " ON CONFLICT (day, scope, rkey, action) DO UPDATE SET pv = pv + excluded.pv, sketch = excluded.sketch",
    "ON CONFLICT (name) DO UPDATE SET seg = excluded.seg, pos = excluded.pos",
    "INSERT OR IGNORE",
    "INTEGER",
    "/",
    ""
);

track_sql!(
    mysql,
    sqlx::MySql,
    "BLOB",
    "BINARY(16)",
    "VARCHAR",
    " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    " ON DUPLICATE KEY UPDATE pv = pv + VALUES(pv), sketch = VALUES(sketch)",
    "ON DUPLICATE KEY UPDATE seg = VALUES(seg), pos = VALUES(pos)",
    "INSERT IGNORE",
    "SIGNED",
    "DIV",
    " FOR UPDATE"
);

/// Dispatches to the backend's functions: the reads of SQLite go to its read pool.
macro_rules! dispatch {
    ($self:ident, $write:ident, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Db::Sqlite { writer, reader } => {
                let _ = reader;
                let pool = if $write { writer } else { reader };
                sqlite::$f(pool, $($arg),*).await
            }
            Db::MySql(pool) => mysql::$f(pool, $($arg),*).await,
        }
    };
}

impl Db {
    pub(super) async fn sqlite(path: &Path, options: &StoreOptions) -> StoreResult<Self> {
        let pools = crate::sqlite::SqlitePools::open(path, options).await?;
        let (writer, reader) = pools.into_parts();
        Ok(Self::Sqlite { writer, reader })
    }

    pub(super) async fn mysql(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        Ok(Self::MySql(crate::mysql::connect(url, options).await?))
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::MySql(_) => "mysql",
        }
    }

    pub(super) async fn create_schema(&self) -> StoreResult<()> {
        let write = true;
        dispatch!(self, write, create_schema())
    }

    pub(super) async fn create_day(&self, day: Day, table: &str) -> StoreResult<()> {
        let write = true;
        dispatch!(self, write, create_day(day, table))
    }

    pub(super) async fn write(
        &self,
        batches: &[(Day, String, Vec<&TrackEvent>)],
        cursor: Option<(&str, QueueCursor)>,
    ) -> StoreResult<u64> {
        let write = true;
        dispatch!(self, write, write(batches, cursor))
    }

    pub(super) async fn cursor(&self, name: &str) -> StoreResult<Option<QueueCursor>> {
        let write = true;
        dispatch!(self, write, cursor(name))
    }

    pub(super) async fn counts(
        &self,
        scope: &str,
        key: &str,
        action: &str,
        from: Day,
        to: Day,
    ) -> StoreResult<Vec<DayCount>> {
        let write = false;
        dispatch!(self, write, counts(scope, key, action, from, to))
    }

    pub(super) async fn top(
        &self,
        scope: &str,
        action: &str,
        from: Day,
        to: Day,
        prefix: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<(String, i64)>> {
        let write = false;
        dispatch!(self, write, top(scope, action, from, to, prefix, limit))
    }

    pub(super) async fn hourly(
        &self,
        table: &str,
        start_ms: i64,
        action: &str,
        filter: &EventFilter,
    ) -> StoreResult<Vec<HourCount>> {
        let write = false;
        dispatch!(self, write, hourly(table, start_ms, action, filter))
    }

    pub(super) async fn steps(
        &self,
        table: &str,
        actions: &[String],
        filter: &EventFilter,
    ) -> StoreResult<Vec<(String, String, i64)>> {
        let write = false;
        dispatch!(self, write, steps(table, actions, filter))
    }

    pub(super) async fn days(&self) -> StoreResult<Vec<Day>> {
        let write = true;
        dispatch!(self, write, days())
    }

    pub(super) async fn drop_day(&self, day: Day, table: &str) -> StoreResult<()> {
        let write = true;
        dispatch!(self, write, drop_day(day, table))
    }

    pub(super) async fn count(&self, table: &str) -> StoreResult<i64> {
        let write = false;
        dispatch!(self, write, count(table))
    }

    pub(super) async fn raw_insert(&self, events: &[TrackEvent]) -> StoreResult<()> {
        let write = true;
        dispatch!(self, write, raw_insert(events))
    }

    pub(super) async fn close(&self) {
        match self {
            Self::Sqlite { writer, reader } => {
                writer.close().await;
                reader.close().await;
            }
            Self::MySql(pool) => pool.close().await,
        }
    }
}
