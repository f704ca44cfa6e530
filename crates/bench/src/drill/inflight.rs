//! Which requests a killed instance took down with it: every request carries its own
//! `X-Request-Id`, which nginx's access log shows (`rid=`) beside the instances it was sent to
//! (`upstream="a, b"`), so a request in flight at the kill is attributed to the instance exactly.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use serde::Serialize;

use super::calls::request_id;
use super::record::{Sample, Verdict};

/// The instances each request (by `X-Request-Id`) was sent to, from the access log. Lines
/// without a `rid=` or an `upstream="…"` field are skipped.
pub fn upstreams_by_request(access_log: &str) -> HashMap<String, Vec<String>> {
    access_log
        .lines()
        .filter_map(|line| {
            let rid = field(line, " rid=")?.split_whitespace().next()?.to_owned();
            let upstreams = quoted(line, " upstream=\"")?;
            Some((rid, split_tries(upstreams).map(str::to_owned).collect()))
        })
        .collect()
}

/// The instances that answered something other than a 5xx in the access log's lines after the
/// first `skip`: those nginx is sending traffic to and that serve it.
pub fn serving(access_log: &str, skip: usize) -> HashSet<String> {
    let mut up = HashSet::new();
    for line in access_log.lines().skip(skip) {
        let (Some(addrs), Some(statuses)) = (quoted(line, " upstream=\""), quoted(line, " ustatus=\"")) else {
            continue;
        };
        for (addr, status) in split_tries(addrs).zip(split_tries(statuses)) {
            if status.parse::<u16>().is_ok_and(|s| s < 500) {
                up.insert(addr.to_owned());
            }
        }
    }
    up
}

/// The value of `marker…"` in `line`, up to the closing quote.
fn quoted<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    field(line, marker)?.split('"').next()
}

/// The entries of an `$upstream_*` variable: tries are separated by ", ", groups after an
/// internal redirect by " : ".
fn split_tries(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').flat_map(|a| a.split(" : ")).map(str::trim).filter(|a| !a.is_empty())
}

/// What follows `marker` in `line`.
fn field<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| &line[at + marker.len()..])
}

/// The requests of a SIGKILL phase against the instance that was killed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// Requests in flight when the kill happened that nginx had sent to the killed instance:
    /// these may fail.
    pub in_flight_on_killed: u64,
    /// Requests in flight at the kill that the access log does not show (their instance is
    /// unknown; not counted above).
    pub in_flight_unlogged: u64,
    /// Requests of the phase that failed (errors and refusals) and were not in flight on the
    /// killed instance: each misses the target.
    pub failed_otherwise: u64,
}

/// Attributes the phase's requests (sent in `[from_ms, to_ms)`) to the kill of `killed`,
/// signalled at `kill_ms.0` and reaped at `kill_ms.1` (all on the drill's clock): a request
/// in flight at any moment in between was in flight when the kill happened.
pub fn attribute(
    samples: &[Sample],
    log: &HashMap<String, Vec<String>>,
    killed: SocketAddr,
    kill_ms: (u64, u64),
    (from_ms, to_ms): (u64, u64),
) -> Attribution {
    let killed = killed.to_string();
    let mut a = Attribution::default();
    let mut allowed = HashSet::new();
    for s in samples.iter().filter(|s| s.start_ms <= kill_ms.1 && kill_ms.0 <= s.end_ms) {
        match log.get(&request_id(s.rid)) {
            Some(upstreams) if upstreams.contains(&killed) => {
                a.in_flight_on_killed += 1;
                allowed.insert(s.rid);
            }
            Some(_) => {}
            None => a.in_flight_unlogged += 1,
        }
    }
    a.failed_otherwise = samples
        .iter()
        .filter(|s| (from_ms..to_ms).contains(&s.start_ms) && s.verdict != Verdict::Ok && !allowed.contains(&s.rid))
        .count() as u64;
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::record::{Class, Failure};

    const LOG: &str = concat!(
        "127.0.0.1 [2026-12-07T03:43:27+00:00] \"GET /api/v1/products/1 HTTP/1.1\" 200 512 rt=0.004 ",
        "upstream=\"127.0.0.1:4001\" ustatus=\"200\" urt=\"0.004\" rid=drill-1\n",
        "127.0.0.1 [2026-12-07T03:43:28+00:00] \"POST /api/v1/track HTTP/1.1\" 502 150 rt=0.200 ",
        "upstream=\"127.0.0.1:4002\" ustatus=\"502\" urt=\"0.200\" rid=drill-2\n",
        "127.0.0.1 [2026-12-07T03:43:28+00:00] \"GET /api/v1/products/1 HTTP/1.1\" 200 512 rt=0.300 ",
        "upstream=\"127.0.0.1:4002, 127.0.0.1:4001\" ustatus=\"502, 200\" urt=\"0.2, 0.1\" rid=drill-3\n",
        "127.0.0.1 [2026-12-07T03:43:29+00:00] \"POST /api/v1/orders HTTP/1.1\" 502 150 rt=0.001 ",
        "upstream=\"127.0.0.1:4002\" ustatus=\"502\" urt=\"0.001\" rid=drill-4\n",
        "127.0.0.1 [2026-12-07T03:43:29+00:00] \"POST /api/v1/orders HTTP/1.1\" 201 150 rt=0.001 ",
        "upstream=\"- : 127.0.0.1:4001\" ustatus=\"- : 201\" urt=\"- : 0.001\" rid=drill-6\n",
        "garbage line\n",
    );

    fn s(rid: u64, start_ms: u64, end_ms: u64, verdict: Verdict) -> Sample {
        Sample { class: Class::Product, rid, start_ms, end_ms, verdict }
    }

    #[test]
    fn the_log_names_every_instance_a_request_was_sent_to() {
        let log = upstreams_by_request(LOG);
        assert_eq!(log.len(), 5);
        assert_eq!(log["drill-3"], vec!["127.0.0.1:4002".to_owned(), "127.0.0.1:4001".to_owned()]);
        assert_eq!(log["drill-6"], vec!["-".to_owned(), "127.0.0.1:4001".to_owned()]);
    }

    #[test]
    fn only_failures_in_flight_on_the_killed_instance_are_excused() {
        let log = upstreams_by_request(LOG);
        let bad = Verdict::Failed(Failure::BadGateway);
        let samples = [
            s(1, 90, 120, Verdict::Ok), // in flight, on the other instance
            s(2, 95, 300, bad),         // in flight on the killed one: excused
            s(3, 99, 400, Verdict::Ok), // in flight, retried elsewhere
            s(4, 200, 201, bad),        // sent after the kill: not excused
            s(5, 99, 101, bad),         // in flight, not in the log
        ];
        let killed: SocketAddr = "127.0.0.1:4002".parse().unwrap();
        let a = attribute(&samples, &log, killed, (100, 105), (0, 1000));
        assert_eq!(a, Attribution { in_flight_on_killed: 2, in_flight_unlogged: 1, failed_otherwise: 2 });
        // Sent while the kill was under way: in flight when it happened.
        let late = [s(2, 103, 300, bad)];
        assert_eq!(attribute(&late, &log, killed, (100, 105), (0, 1000)).failed_otherwise, 0);
    }

    #[test]
    fn an_instance_serves_again_once_it_answers_below_500() {
        assert_eq!(serving(LOG, 0), HashSet::from(["127.0.0.1:4001".to_owned()]));
        assert!(serving(LOG, 6).is_empty(), "only lines after the first `skip` count");
    }
}
