//! The tracking store: one table of events per day (`events_YYYYMMDD`, created on demand), and
//! rollups per day × scope × key × action holding page views and a visitor sketch, kept in the
//! same transaction as the events they count. Embedded it is its own SQLite file (`track.db`),
//! so tracking never waits for the orders' writer; scaled out it is a MariaDB database.
//!
//! Writes are idempotent by event id: ids already stored are skipped and only new events count
//! towards the rollups, so a batch delivered twice (a queue's redelivery, a client's retry)
//! changes nothing the second time. Within one day table the id is the primary key; an event
//! repeated on another day (its clock moved across midnight between two sends) is the one case
//! not caught here, which the ingest's dedup window covers.
//!
//! The schema is created at open (`CREATE TABLE IF NOT EXISTS`), not by the main store's
//! migrations: day tables come and go at run time, and on MariaDB the tables may share a
//! database with the main store without touching its migration history.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use flashback_core::Day;
use flashback_core::hll::Sketch;
use serde::{Deserialize, Serialize};

use crate::{StoreError, StoreOptions, StoreResult};

mod backend;

/// One tracked event, as queued and as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackEvent {
    /// The event id (a UUID): the idempotency key.
    #[serde(rename = "i")]
    pub id: u128,
    /// When it happened, Unix ms, corrected for the client's clock skew.
    #[serde(rename = "t")]
    pub ts_ms: i64,
    /// When the server received it.
    #[serde(rename = "r")]
    pub received_ms: i64,
    /// The signed-in user, if any.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    /// Who counts as the unique visitor: `u:<user id>` or `a:<anonymous id>`.
    #[serde(rename = "v")]
    pub visitor: String,
    /// The page or feature (`home`, `search`, `product`).
    #[serde(rename = "m")]
    pub module: String,
    /// What the visitor did (`view`, `click`, `add_to_cart`, `share`, `order`).
    #[serde(rename = "a")]
    pub action: String,
    /// The kind of thing acted on (`sku`, `banner`).
    #[serde(rename = "ot")]
    pub object_type: String,
    /// Which one.
    #[serde(rename = "oi")]
    pub object_id: String,
    /// Free-form properties, a JSON object as text.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<String>,
}

impl TrackEvent {
    /// The object key rollups use: `type:id`.
    pub fn object_key(&self) -> String {
        format!("{}:{}", self.object_type, self.object_id)
    }
}

/// What a rollup row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// One object (`type:id`).
    Object,
    /// One module.
    Module,
    /// Everything (the key is empty).
    All,
}

impl Scope {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Object => "object",
            Self::Module => "module",
            Self::All => "all",
        }
    }
}

/// Page views and a visitor sketch of one key on one day.
#[derive(Debug, Clone)]
pub struct DayCount {
    /// The day.
    pub day: Day,
    /// Page views (events) that day.
    pub pv: i64,
    /// That day's visitors.
    pub sketch: Sketch,
}

/// An hour of one day: events and exact distinct visitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HourCount {
    /// 0–23 from the day's start.
    pub hour: u8,
    /// Events.
    pub pv: i64,
    /// Distinct visitors (exact, from the day table).
    pub uv: i64,
}

/// Filters for queries that read day tables.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this module.
    pub module: Option<String>,
    /// Only this object (`type`, `id`).
    pub object: Option<(String, String)>,
}

/// Where a queue reader has got to, stored with the events it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCursor {
    /// The segment file number.
    pub segment: i64,
    /// The byte position in it.
    pub position: i64,
}

/// The tracking store.
#[derive(Debug)]
pub struct TrackStore {
    db: backend::Db,
    offset_ms: i64,
    /// Day tables known to exist (saves a `CREATE TABLE IF NOT EXISTS` per batch).
    days: Mutex<HashSet<Day>>,
}

fn is_duplicate_key(e: &StoreError) -> bool {
    match e {
        StoreError::Conflict(_) => true,
        StoreError::Other(sqlx::Error::Database(d)) => d.is_unique_violation(),
        _ => false,
    }
}

fn table(day: Day) -> String {
    format!("events_{}", day.number())
}

impl TrackStore {
    /// Opens the tracking store: MariaDB at `url` (`mysql://…`), or the SQLite file
    /// `data_dir/track.db` (or the `sqlite:` file named). Days start at `offset_ms` from UTC.
    pub async fn open(url: Option<&str>, options: &StoreOptions, offset_ms: i64) -> StoreResult<Self> {
        let db = match url {
            Some(u) if u.starts_with("mysql://") || u.starts_with("mariadb://") => {
                backend::Db::mysql(u, options).await?
            }
            Some(u) if u.starts_with("sqlite:") => {
                backend::Db::sqlite(&crate::sqlite::path_from_url(u, &options.data_dir), options).await?
            }
            Some(_) => {
                return Err(StoreError::Config("track store url must be mysql://, mariadb:// or sqlite:".into()));
            }
            None => backend::Db::sqlite(&options.data_dir.join("track.db"), options).await?,
        };
        db.create_schema().await?;
        let days = db.days().await?.into_iter().collect();
        Ok(Self { db, offset_ms, days: Mutex::new(days) })
    }

    /// Opens the SQLite file at `path` (tests and the benchmark).
    pub async fn open_file(path: &Path, options: &StoreOptions, offset_ms: i64) -> StoreResult<Self> {
        let url = format!("sqlite:{}", path.display());
        Self::open(Some(&url), options, offset_ms).await
    }

    /// Which backend (`sqlite` or `mysql`).
    pub fn backend(&self) -> &'static str {
        self.db.name()
    }

    /// The day an event at `ts_ms` belongs to.
    pub fn day_of(&self, ts_ms: i64) -> Day {
        Day::of(ts_ms, self.offset_ms)
    }

    /// When `day` starts, Unix ms.
    pub fn day_start_ms(&self, day: Day) -> i64 {
        day.start_ms(self.offset_ms)
    }

    async fn ensure_days(&self, days: &[Day]) -> StoreResult<()> {
        for &day in days {
            let known = self.days.lock().map(|d| d.contains(&day)).unwrap_or(false);
            if !known {
                self.db.create_day(day, &table(day)).await?;
                if let Ok(mut d) = self.days.lock() {
                    d.insert(day);
                }
            }
        }
        Ok(())
    }

    /// Stores a batch in one transaction: new events into their day tables, rollups for the
    /// new ones, and (when given) the queue cursor. Returns how many events were new.
    pub async fn write(&self, events: &[TrackEvent], cursor: Option<(&str, QueueCursor)>) -> StoreResult<u64> {
        // One event per id within the batch; the first wins.
        let mut seen = HashSet::with_capacity(events.len());
        let mut by_day: BTreeMap<Day, Vec<&TrackEvent>> = BTreeMap::new();
        for e in events {
            if seen.insert(e.id) {
                by_day.entry(self.day_of(e.ts_ms)).or_default().push(e);
            }
        }
        let days: Vec<Day> = by_day.keys().copied().collect();
        self.ensure_days(&days).await?;
        let batches: Vec<(Day, String, Vec<&TrackEvent>)> =
            by_day.into_iter().map(|(day, evs)| (day, table(day), evs)).collect();
        // Two writers that read the same redelivered batch race to insert the same ids; the
        // loser's transaction fails on the key and, run again, finds them stored.
        let mut tries = 0;
        loop {
            match crate::retry_deadlocks(|| self.db.write(&batches, cursor)).await {
                Err(e) if is_duplicate_key(&e) && tries < 5 => tries += 1,
                other => return other,
            }
        }
    }

    /// The cursor stored under `name`.
    pub async fn cursor(&self, name: &str) -> StoreResult<Option<QueueCursor>> {
        self.db.cursor(name).await
    }

    /// Page views and sketches of `key` in `scope` for `action`, one entry per day that has any.
    pub async fn counts(
        &self,
        scope: Scope,
        key: &str,
        action: &str,
        from: Day,
        to: Day,
    ) -> StoreResult<Vec<DayCount>> {
        self.db.counts(scope.as_str(), key, action, from, to).await
    }

    /// The `limit` keys of `scope` with the most page views for `action` over the days, with
    /// their totals; `prefix` narrows object keys to one type (`sku:`).
    pub async fn top(
        &self,
        scope: Scope,
        action: &str,
        from: Day,
        to: Day,
        prefix: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<(String, i64)>> {
        self.db.top(scope.as_str(), action, from, to, prefix, limit).await
    }

    /// Hour by hour of `day`: events and exact distinct visitors for `action`.
    pub async fn hourly(&self, day: Day, action: &str, filter: &EventFilter) -> StoreResult<Vec<HourCount>> {
        if !self.has_day(day).await? {
            return Ok(Vec::new());
        }
        self.db.hourly(&table(day), self.day_start_ms(day), action, filter).await
    }

    /// Every (visitor, action, time) of `day` for the actions given, for funnels.
    pub async fn steps(
        &self,
        day: Day,
        actions: &[String],
        filter: &EventFilter,
    ) -> StoreResult<Vec<(String, String, i64)>> {
        if !self.has_day(day).await? {
            return Ok(Vec::new());
        }
        self.db.steps(&table(day), actions, filter).await
    }

    async fn has_day(&self, day: Day) -> StoreResult<bool> {
        if self.days.lock().map(|d| d.contains(&day)).unwrap_or(false) {
            return Ok(true);
        }
        // Another instance's writer may have created it.
        Ok(self.db.days().await?.contains(&day))
    }

    /// The days that have a table, oldest first.
    pub async fn days(&self) -> StoreResult<Vec<Day>> {
        self.db.days().await
    }

    /// Drops the tables and rollups of days before `keep_from`; returns the days dropped.
    pub async fn drop_before(&self, keep_from: Day) -> StoreResult<Vec<Day>> {
        let old: Vec<Day> = self.db.days().await?.into_iter().filter(|d| *d < keep_from).collect();
        for &day in &old {
            self.db.drop_day(day, &table(day)).await?;
            if let Ok(mut d) = self.days.lock() {
                d.remove(&day);
            }
        }
        Ok(old)
    }

    /// Events stored, over every day table (verification).
    pub async fn stored_events(&self) -> StoreResult<i64> {
        let mut total = 0;
        for day in self.db.days().await? {
            total += self.db.count(&table(day)).await?;
        }
        Ok(total)
    }

    /// The baseline the benchmark compares the writer with: the same rows, inserted in one
    /// transaction with multi-row inserts into a scratch table, no dedup, no rollups.
    pub async fn raw_insert(&self, events: &[TrackEvent]) -> StoreResult<()> {
        self.db.raw_insert(events).await
    }

    /// Closes the pools.
    pub async fn close(&self) {
        self.db.close().await;
    }
}
