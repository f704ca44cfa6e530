//! The events a `track` run sends, built before any timing: a deterministic event per index
//! (popular objects viewed far more than the rest, tens of thousands of visitors, three
//! actions), batched as request bodies with a few events re-sent in a later batch.

use std::io::Write as _;

use anyhow::Context;
use flashback_store::track::TrackEvent;
use serde_json::json;

/// The actions sent, with their share of events in per mille.
pub const ACTIONS: [(&str, u64); 3] = [("view", 800), ("click", 150), ("add_to_cart", 50)];

/// What to build.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Events sent in all, re-sends included.
    pub events: usize,
    /// Events per request body.
    pub batch: usize,
    /// Distinct objects (`sku` ids).
    pub objects: u64,
    /// Distinct visitors.
    pub visitors: u64,
    /// Re-sent events per million sent.
    pub duplicates_per_million: u64,
    /// The run's module: only this run's events carry it.
    pub module: String,
    /// High bits of every event id: unique to the run.
    pub id_prefix: u64,
    /// Client time of the events, Unix ms.
    pub now_ms: i64,
    /// Gzip the bodies.
    pub gzip: bool,
}

/// The bodies and what they hold.
#[derive(Debug)]
pub struct Built {
    /// Request bodies, in sending order.
    pub bodies: Vec<Vec<u8>>,
    /// Events in each body (for accounting).
    pub sizes: Vec<usize>,
    /// Distinct events sent.
    pub unique: u64,
    /// Events sent a second time (in a later batch).
    pub duplicates: u64,
    /// Distinct events per action, in [`ACTIONS`] order.
    pub per_action: [u64; 3],
    /// Bytes of all bodies, as sent.
    pub bytes: u64,
}

/// SplitMix64: a fast, well-mixed hash of `x` (one step of the generator).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The fields of event `i`, the same every time it is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its id.
    pub id: u128,
    /// Index into [`ACTIONS`].
    pub action: usize,
    /// Object number: low numbers are the popular ones.
    pub object: u64,
    /// Visitor number.
    pub visitor: u64,
    /// Signed in (a user id) or not (an anonymous id).
    pub signed_in: bool,
    /// How long before sending it happened, ms.
    pub age_ms: i64,
    /// Position on the page (a property).
    pub position: u64,
}

impl Shape {
    /// Event number `i` of the run.
    pub fn event(&self, i: u64) -> Event {
        let h = mix(self.id_prefix ^ mix(i));
        let (h2, h3) = (mix(h), mix(h ^ 0x5555));
        let pick = h % 1000;
        let action = if pick < ACTIONS[0].1 {
            0
        } else if pick < ACTIONS[0].1 + ACTIONS[1].1 {
            1
        } else {
            2
        };
        // Popularity falls steeply: object = objects × u³ for a uniform u in [0, 1) (21 bits),
        // which puts half the events on the top eighth of the objects.
        let u = u128::from(h2 >> 43);
        let object = u64::try_from((u * u * u * u128::from(self.objects)) >> 63).unwrap_or(0).min(self.objects - 1);
        Event {
            id: (u128::from(self.id_prefix) << 64) | u128::from(i),
            action,
            object,
            visitor: h3 % self.visitors,
            signed_in: h3 % 5 == 0,
            age_ms: i64::try_from((h >> 20) % 5_000).unwrap_or(0),
            position: (h >> 40) % 50,
        }
    }

    fn json(&self, e: &Event) -> serde_json::Value {
        let mut v = json!({
            "event_id": uuid(e.id),
            "module": self.module,
            "action": ACTIONS[e.action].0,
            "object_type": "sku",
            "object_id": format!("{}", 100_000 + e.object),
            "client_ts": self.now_ms - e.age_ms,
            "sent_at": self.now_ms,
            "properties": { "position": e.position, "source": if e.position < 10 { "feed" } else { "search" } },
        });
        if e.signed_in {
            v["user_id"] = json!(1 + e.visitor);
        } else {
            v["anonymous_id"] = json!(format!("anon-{:08x}", mix(e.visitor) & 0xffff_ffff));
        }
        v
    }

    /// Event `i` as the store holds it (the raw-insert baseline inserts these).
    pub fn stored(&self, i: u64, received_ms: i64) -> TrackEvent {
        let e = self.event(i);
        TrackEvent {
            id: e.id,
            ts_ms: received_ms - e.age_ms,
            received_ms,
            user_id: e.signed_in.then(|| i64::try_from(1 + e.visitor).unwrap_or(1)),
            visitor: if e.signed_in {
                format!("u:{}", 1 + e.visitor)
            } else {
                format!("a:anon-{:08x}", mix(e.visitor) & 0xffff_ffff)
            },
            module: self.module.clone(),
            action: ACTIONS[e.action].0.to_owned(),
            object_type: "sku".into(),
            object_id: format!("{}", 100_000 + e.object),
            properties: Some(format!(
                r#"{{"position":{},"source":"{}"}}"#,
                e.position,
                if e.position < 10 { "feed" } else { "search" }
            )),
        }
    }

    /// Every body of the run. An event of a later batch is, with the configured odds, a re-send
    /// of an event from an earlier batch instead of a new one.
    pub fn build(&self) -> anyhow::Result<Built> {
        let mut built =
            Built { bodies: Vec::new(), sizes: Vec::new(), unique: 0, duplicates: 0, per_action: [0; 3], bytes: 0 };
        let mut sent = 0usize;
        while sent < self.events {
            let n = self.batch.min(self.events - sent);
            let before = built.unique;
            let mut events = Vec::with_capacity(n);
            for k in 0..n {
                let slot = u64::try_from(sent + k).unwrap_or(u64::MAX);
                let resend = before > 0 && mix(slot ^ 0xd0d0_d0d0) % 1_000_000 < self.duplicates_per_million;
                let e = if resend {
                    built.duplicates += 1;
                    self.event(mix(slot) % before)
                } else {
                    let e = self.event(built.unique);
                    built.unique += 1;
                    built.per_action[e.action] += 1;
                    e
                };
                events.push(self.json(&e));
            }
            let body = serde_json::to_vec(&json!({ "events": events })).context("encoding a batch")?;
            let body = if self.gzip { gzip(&body)? } else { body };
            built.bytes += body.len() as u64;
            built.bodies.push(body);
            built.sizes.push(n);
            sent += n;
        }
        Ok(built)
    }
}

fn gzip(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    enc.write_all(body).context("gzip")?;
    enc.finish().context("gzip")
}

/// `id` as a hyphenated UUID.
pub fn uuid(id: u128) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        id >> 96,
        (id >> 80) & 0xffff,
        (id >> 64) & 0xffff,
        (id >> 48) & 0xffff,
        id & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(events: usize) -> Shape {
        Shape {
            events,
            batch: 100,
            objects: 1_000,
            visitors: 50_000,
            duplicates_per_million: 5_000,
            module: "bench-test".into(),
            id_prefix: 42,
            now_ms: 1_700_000_000_000,
            gzip: false,
        }
    }

    #[test]
    fn every_event_sent_is_new_or_a_counted_resend_of_an_earlier_batch() {
        let s = shape(20_000);
        let built = s.build().expect("build");
        assert_eq!(built.unique + built.duplicates, 20_000);
        assert!(built.duplicates > 0, "some events are re-sent");
        assert_eq!(built.per_action.iter().sum::<u64>(), built.unique);
        let mut seen = std::collections::HashSet::new();
        let mut repeats = 0;
        for (b, body) in built.bodies.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_slice(body).expect("json");
            assert!(v["events"].as_array().expect("events").len() <= 100, "batch {b} within its size");
            for e in v["events"].as_array().expect("events") {
                let id = e["event_id"].as_str().expect("id").to_owned();
                if !seen.insert(id) {
                    repeats += 1;
                }
            }
        }
        assert_eq!(repeats, built.duplicates);
        assert_eq!(seen.len() as u64, built.unique);
    }

    #[test]
    fn ids_parse_as_uuids_and_popular_objects_dominate() {
        assert_eq!(uuid((42u128 << 64) | 7), "00000000-0000-002a-0000-000000000007");
        let s = shape(1);
        let top_tenth = (0..10_000).filter(|i| s.event(*i).object < 100).count();
        assert!(top_tenth > 4_000, "the top tenth of objects gets most events: {top_tenth}");
    }
}
