//! Each user's list of the rebate rows they are paid from, newest first.
//!
//! A row joins lists once, when it first has a buyer (reported with a tracking id, or claimed
//! later), in the transaction that writes it: its buyer's, its buyer's inviter's and that
//! inviter's inviter's. A user's entries share one numbering, 1 upwards
//! (`rebate_lists.listed` is the last number given):
//!
//! - rows they bought are linked, each to the one they bought before (`rebate_orders.list_no`,
//!   `prev_source`, `prev_line_key`; the newest is `rebate_lists.head_*`), so a buyer's list
//!   needs no index by user on the widest, busiest table;
//! - rows they earn an inviter's share of are entries of `rebate_shares`, keyed by (user,
//!   number), each naming the newest row the user had bought when it was numbered, so a page
//!   that ends on a share knows where the bought rows continue.
//!
//! `rebates_of` merges the two by number; `rebate_list_breaks` checks both.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;

use crate::{RebateOrder, StoreError};

/// Why a row is in a user's list: whose share of it they are paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebateRole {
    /// They bought it.
    Buyer,
    /// They invited the buyer.
    Inviter,
    /// They invited the buyer's inviter.
    GrandInviter,
}

impl RebateRole {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            RebateRole::Buyer => "buyer",
            RebateRole::Inviter => "inviter",
            RebateRole::GrandInviter => "grand_inviter",
        }
    }

    /// The role a stored name stands for.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "buyer" => Some(RebateRole::Buyer),
            "inviter" => Some(RebateRole::Inviter),
            "grand_inviter" => Some(RebateRole::GrandInviter),
            _ => None,
        }
    }
}

/// One entry of a user's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRebate {
    /// Its number in the user's list (1 was the first row to become theirs).
    pub no: i64,
    /// Whose share the user is paid.
    pub role: RebateRole,
    /// The row.
    pub row: RebateOrder,
}

impl ListedRebate {
    /// The user's share of the row's commission, in this role.
    pub fn share(&self) -> i64 {
        match self.role {
            RebateRole::Buyer => self.row.buyer_share,
            RebateRole::Inviter => self.row.inviter_share,
            RebateRole::GrandInviter => self.row.grand_share,
        }
    }

    /// The cursor that continues a listing after this entry.
    pub fn cursor(&self) -> RebateCursor {
        RebateCursor { no: self.no, source: self.row.source.clone(), line_key: self.row.line_key.clone() }
    }
}

/// The last entry a page showed, written `no.source.line_key` (a source's name has no dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebateCursor {
    /// Its number.
    pub no: i64,
    /// Its row's source.
    pub source: String,
    /// Its row's line key.
    pub line_key: String,
}

impl RebateCursor {
    /// Reads a cursor written by [`fmt::Display`]; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        let (no, rest) = raw.split_once('.')?;
        let (source, line_key) = rest.split_once('.')?;
        let digits = !no.is_empty() && no.len() <= 18 && no.bytes().all(|b| b.is_ascii_digit());
        let no: i64 = no.parse().ok().filter(|n| digits && *n > 0)?;
        (!source.is_empty() && !line_key.is_empty()).then(|| Self {
            no,
            source: source.to_owned(),
            line_key: line_key.to_owned(),
        })
    }
}

impl fmt::Display for RebateCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.no, self.source, self.line_key)
    }
}

/// A row's key: (source, line key).
pub(crate) type Key = (String, String);

/// One user's list as it stands: the last number given and the newest row they bought.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RowList {
    pub(crate) count: i64,
    pub(crate) head: Option<Key>,
}

impl RowList {
    pub(crate) fn of(count: i64, source: Option<String>, line_key: Option<String>) -> Self {
        Self { count, head: source.zip(line_key) }
    }

    /// Puts a bought row at the head: its number and the row bought before it.
    pub(crate) fn push(&mut self, source: &str, line_key: &str) -> (i64, Option<Key>) {
        self.count += 1;
        (self.count, self.head.replace((source.to_owned(), line_key.to_owned())))
    }

    /// Numbers a share: its number and the newest row bought before it.
    pub(crate) fn share(&mut self) -> (i64, Option<Key>) {
        self.count += 1;
        (self.count, self.head.clone())
    }
}

/// A bought row's place in its buyer's list: (source, line key, its number, the row before).
pub(crate) type Listed = (String, String, i64, Option<Key>);

/// An inviter's entry for a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Share {
    pub(crate) user: i64,
    pub(crate) no: i64,
    pub(crate) source: String,
    pub(crate) line_key: String,
    pub(crate) role: RebateRole,
    pub(crate) head: Option<Key>,
}

/// The inviters a row pays, with their roles.
pub(crate) fn inviters(row: &RebateOrder) -> impl Iterator<Item = (i64, RebateRole)> {
    [(row.inviter_id, RebateRole::Inviter), (row.grand_inviter_id, RebateRole::GrandInviter)]
        .into_iter()
        .filter_map(|(u, role)| u.map(|u| (u.get(), role)))
}

/// Everyone whose list the rows join, in user order (the order lists are locked in, so that
/// concurrent writers never wait on each other in a circle).
pub(crate) fn members(rows: &[&RebateOrder]) -> BTreeSet<i64> {
    rows.iter().flat_map(|r| r.user_id.map(|u| u.get()).into_iter().chain(inviters(r).map(|(u, _)| u))).collect()
}

/// Rows that have just got their first buyer joining the lists of their buyers and inviters,
/// in the order written, with the lists as they stood: each bought row's link, each share.
pub(crate) fn join(rows: &[&RebateOrder], lists: &mut HashMap<i64, RowList>) -> (Vec<Listed>, Vec<Share>) {
    let mut links = Vec::with_capacity(rows.len());
    let mut shares = Vec::new();
    for r in rows {
        let Some(buyer) = r.user_id else { continue };
        let (no, prev) = lists.entry(buyer.get()).or_default().push(&r.source, &r.line_key);
        links.push((r.source.clone(), r.line_key.clone(), no, prev));
        for (user, role) in inviters(r) {
            let (no, head) = lists.entry(user).or_default().share();
            shares.push(Share { user, no, source: r.source.clone(), line_key: r.line_key.clone(), role, head });
        }
    }
    (links, shares)
}

/// The JSON parameters of the list statements: each bought row's link
/// `[[source, line_key, no, prev_source, prev_line_key], …]` and each list's new state
/// `[[user, count, head_source, head_line_key], …]` (the head null while they bought nothing).
pub(crate) fn lists_json(links: &[Listed], lists: &HashMap<i64, RowList>) -> Result<(String, String), StoreError> {
    let links: Vec<serde_json::Value> = links
        .iter()
        .map(|(s, k, n, prev)| {
            let (ps, pk) = prev.as_ref().map(|(s, k)| (s.as_str(), k.as_str())).unzip();
            serde_json::json!([s, k, n, ps, pk])
        })
        .collect();
    let heads: Vec<serde_json::Value> = lists
        .iter()
        .map(|(u, l)| {
            let (s, k) = l.head.as_ref().map(|(s, k)| (s.as_str(), k.as_str())).unzip();
            serde_json::json!([u, l.count, s, k])
        })
        .collect();
    let json = |v: serde_json::Result<String>| {
        v.map_err(|e| StoreError::Corrupt { table: "rebate_lists", reason: e.to_string() })
    };
    Ok((json(serde_json::to_string(&links))?, json(serde_json::to_string(&heads))?))
}

/// The audit's first check: each list's numbers are 1 to the last number given, once each,
/// over the rows bought and the shares together. Rows: (user, listed, entries, lowest,
/// highest, distinct).
pub(crate) const NUMBERING: &str = "SELECT l.user_id, l.listed, e.n, e.lo, e.hi, e.d FROM rebate_lists l LEFT JOIN \
     (SELECT user_id, COUNT(*) AS n, MIN(no) AS lo, MAX(no) AS hi, COUNT(DISTINCT no) AS d FROM \
      (SELECT user_id, list_no AS no FROM rebate_orders WHERE user_id IS NOT NULL \
       UNION ALL SELECT user_id, list_no FROM rebate_shares) AS x GROUP BY user_id) e ON e.user_id = l.user_id \
     WHERE COALESCE(e.n, 0) <> l.listed OR e.lo <> 1 OR e.hi <> e.n OR e.d <> e.n LIMIT ?";

/// The audit's other checks, each a query (bound to how many it shows) returning (user,
/// source, line key) and what it means. With [`NUMBERING`] they prove each user's bought rows
/// one chain from their head (numbers distinct, every link to a lower number of the same buyer,
/// no row linked to twice, only the first without a link) and their shares exactly the rows
/// naming them as inviter or inviter's inviter.
pub(crate) const CHECKS: [(&str, &str); 7] = [
    (
        "SELECT NULL, r.source, r.line_key FROM rebate_orders r \
         WHERE (r.user_id IS NULL AND (r.list_no IS NOT NULL OR r.prev_line_key IS NOT NULL)) \
         OR (r.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM rebate_lists l WHERE l.user_id = r.user_id)) \
         UNION ALL SELECT s.user_id, s.source, s.line_key FROM rebate_shares s \
         WHERE NOT EXISTS (SELECT 1 FROM rebate_lists l WHERE l.user_id = s.user_id) LIMIT ?",
        "is in no list of the user it names",
    ),
    (
        "SELECT l.user_id, NULL, NULL FROM rebate_lists l \
         LEFT JOIN (SELECT user_id, MAX(list_no) AS top FROM rebate_orders WHERE user_id IS NOT NULL GROUP BY user_id) b \
         ON b.user_id = l.user_id \
         LEFT JOIN rebate_orders r ON r.source = l.head_source AND r.line_key = l.head_line_key \
         WHERE (b.top IS NULL AND l.head_line_key IS NOT NULL) \
         OR (b.top IS NOT NULL AND (r.source IS NULL OR r.user_id <> l.user_id OR r.list_no <> b.top)) LIMIT ?",
        "has a list head that is not their newest bought row",
    ),
    (
        "SELECT r.user_id, r.source, r.line_key FROM rebate_orders r \
         JOIN (SELECT user_id, MIN(list_no) AS first FROM rebate_orders WHERE user_id IS NOT NULL GROUP BY user_id) b \
         ON b.user_id = r.user_id \
         LEFT JOIN rebate_orders p ON p.source = r.prev_source AND p.line_key = r.prev_line_key \
         WHERE (r.list_no = b.first AND r.prev_line_key IS NOT NULL) \
         OR (r.list_no <> b.first AND (p.source IS NULL OR p.user_id <> r.user_id OR p.list_no >= r.list_no)) LIMIT ?",
        "is not linked to a row its buyer bought before",
    ),
    (
        "SELECT NULL, prev_source, prev_line_key FROM rebate_orders WHERE prev_line_key IS NOT NULL \
         GROUP BY prev_source, prev_line_key HAVING COUNT(*) > 1 LIMIT ?",
        "is linked to by more than one row",
    ),
    (
        "SELECT s.user_id, s.source, s.line_key FROM rebate_shares s \
         LEFT JOIN rebate_orders r ON r.source = s.source AND r.line_key = s.line_key \
         LEFT JOIN rebate_orders h ON h.source = s.head_source AND h.line_key = s.head_line_key \
         WHERE r.source IS NULL OR r.user_id IS NULL \
         OR NOT COALESCE((s.role = 'inviter' AND r.inviter_id = s.user_id) \
                 OR (s.role = 'grand_inviter' AND r.grand_inviter_id = s.user_id), FALSE) \
         OR (s.head_line_key IS NOT NULL AND (h.source IS NULL OR h.user_id <> s.user_id OR h.list_no >= s.list_no)) \
         LIMIT ?",
        "is a share the row does not pay in that role, or names a wrong row bought before it",
    ),
    (
        "SELECT NULL, source, line_key FROM rebate_shares GROUP BY source, line_key, role HAVING COUNT(*) > 1 LIMIT ?",
        "has a share listed twice",
    ),
    (
        "SELECT o.user_id, NULL, NULL FROM \
         (SELECT user_id, COUNT(*) AS n FROM \
          (SELECT inviter_id AS user_id FROM rebate_orders WHERE inviter_id IS NOT NULL AND user_id IS NOT NULL \
           UNION ALL SELECT grand_inviter_id FROM rebate_orders WHERE grand_inviter_id IS NOT NULL AND user_id IS NOT NULL) x \
          GROUP BY user_id) o \
         LEFT JOIN (SELECT user_id, COUNT(*) AS n FROM rebate_shares GROUP BY user_id) s ON s.user_id = o.user_id \
         WHERE o.n <> COALESCE(s.n, 0) LIMIT ?",
        "is named as inviter on more or fewer rows than their list holds shares of",
    ),
];

/// One break an audit check found, in words.
pub(crate) fn describe(says: &str, user: Option<i64>, source: Option<String>, key: Option<String>) -> String {
    let row = source.zip(key).map(|(s, k)| format!("rebate row {s}:{k}"));
    match (user, row) {
        (Some(u), Some(row)) => format!("user {u}: {row} {says}"),
        (Some(u), None) => format!("user {u} {says}"),
        (None, Some(row)) => format!("{row} {says}"),
        (None, None) => format!("a rebate list entry {says}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_what_they_write_and_nothing_else() {
        let c = RebateCursor { no: 12, source: "taobao".into(), line_key: "a.b".into() };
        assert_eq!(RebateCursor::parse(&c.to_string()), Some(c));
        for bad in ["", "12", "12.taobao", "12..k", "0.taobao.k", "-1.taobao.k", "+1.taobao.k", "x.taobao.k"] {
            assert_eq!(RebateCursor::parse(bad), None, "{bad}");
        }
        assert_eq!(RebateCursor::parse("9999999999999999999.t.k"), None);
    }

    #[test]
    fn a_share_takes_the_next_number_and_remembers_the_newest_bought_row() {
        let mut l = RowList::default();
        assert_eq!(l.share(), (1, None));
        assert_eq!(l.push("s", "a"), (2, None));
        assert_eq!(l.share(), (3, Some(("s".into(), "a".into()))));
        assert_eq!(l.push("s", "b"), (4, Some(("s".into(), "a".into()))));
        assert_eq!(l.count, 4);
    }
}
