//! Each user's list of the rebate rows they are paid from, newest first.
//!
//! A row joins lists once, when it first has a buyer (reported with a tracking id, or claimed
//! later), in the statement or transaction that gives it that buyer: its buyer's list, its
//! buyer's inviter's and that inviter's inviter's. A user's list is one chain through the rows,
//! the way each ledger account's entries form a chain: a row holds, for each role, its number
//! in that user's list and the entry before it (`list_no`, `prev_source`, `prev_line_key`,
//! `prev_role` for the buyer; the same with `inv_` and `grand_` for the inviters), and
//! `rebate_lists` names each user's newest entry and the last number given. Reading a page is
//! one primary-key read per entry, and writing one needs no index by user on the widest,
//! busiest table, nor any row beyond the list heads.

use std::collections::HashMap;
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
    /// Every role, in the order of their stored codes.
    pub const ALL: [RebateRole; 3] = [RebateRole::Buyer, RebateRole::Inviter, RebateRole::GrandInviter];

    /// The shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            RebateRole::Buyer => "buyer",
            RebateRole::Inviter => "inviter",
            RebateRole::GrandInviter => "grand_inviter",
        }
    }

    /// The role a shown name stands for.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The stored code (`prev_role`, `head_role`).
    pub(crate) fn code(self) -> i64 {
        match self {
            RebateRole::Buyer => 0,
            RebateRole::Inviter => 1,
            RebateRole::GrandInviter => 2,
        }
    }

    pub(crate) fn from_code(code: i64) -> Result<Self, StoreError> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .ok_or_else(|| StoreError::Corrupt { table: "rebate_lists", reason: format!("role {code}") })
    }

    /// The prefix of this role's link columns in `rebate_orders`.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            RebateRole::Buyer => "",
            RebateRole::Inviter => "inv_",
            RebateRole::GrandInviter => "grand_",
        }
    }

    /// The `rebate_orders` column naming who holds this role.
    pub(crate) fn holder(self) -> &'static str {
        match self {
            RebateRole::Buyer => "user_id",
            RebateRole::Inviter => "inviter_id",
            RebateRole::GrandInviter => "grand_inviter_id",
        }
    }

    /// Who holds this role on `row`.
    fn of(self, row: &RebateOrder) -> Option<i64> {
        match self {
            RebateRole::Buyer => row.user_id,
            RebateRole::Inviter => row.inviter_id,
            RebateRole::GrandInviter => row.grand_inviter_id,
        }
        .map(flashback_core::UserId::get)
    }
}

/// One entry of a user's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRebate {
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
        RebateCursor { role: self.role, source: self.row.source.clone(), line_key: self.row.line_key.clone() }
    }
}

/// The last entry a page showed, written `role.source.line_key` (neither a role's nor a
/// source's name has a dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebateCursor {
    /// Its role.
    pub role: RebateRole,
    /// Its row's source.
    pub source: String,
    /// Its row's line key.
    pub line_key: String,
}

impl RebateCursor {
    /// Reads a cursor written by [`fmt::Display`]; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        let (role, rest) = raw.split_once('.')?;
        let (source, line_key) = rest.split_once('.')?;
        let role = RebateRole::parse(role)?;
        (!source.is_empty() && !line_key.is_empty()).then(|| Self {
            role,
            source: source.to_owned(),
            line_key: line_key.to_owned(),
        })
    }
}

impl fmt::Display for RebateCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.role.as_str(), self.source, self.line_key)
    }
}

/// An entry's place: its row's (source, line key) and the role it is listed in.
pub(crate) type Entry = (String, String, RebateRole);

/// One user's list as it stands: the last number given and the newest entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RowList {
    pub(crate) count: i64,
    pub(crate) head: Option<Entry>,
}

impl RowList {
    /// A list as stored (`listed`, `head_source`, `head_line_key`, `head_role`).
    pub(crate) fn of(
        count: i64,
        source: Option<String>,
        line_key: Option<String>,
        role: Option<i64>,
    ) -> Result<Self, StoreError> {
        let head = match (source, line_key) {
            (Some(s), Some(k)) => Some((s, k, RebateRole::from_code(role.unwrap_or(-1))?)),
            _ => None,
        };
        Ok(Self { count, head })
    }

    /// Puts an entry at the head: its number and the entry before it.
    pub(crate) fn push(&mut self, source: &str, line_key: &str, role: RebateRole) -> Place {
        self.count += 1;
        (self.count, self.head.replace((source.to_owned(), line_key.to_owned(), role)))
    }
}

/// An entry's number in its list and the entry before it.
pub(crate) type Place = (i64, Option<Entry>);

/// A row's places in the lists of its buyer, inviter and inviter's inviter (in
/// [`RebateRole::ALL`] order; `None` where the row has nobody in that role).
pub(crate) type Places = [Option<Place>; 3];

/// The users a row is listed for, in [`RebateRole::ALL`] order: nobody until it has a buyer.
pub(crate) fn holders(row: &RebateOrder) -> [Option<i64>; 3] {
    let listed = row.user_id.is_some();
    RebateRole::ALL.map(|role| role.of(row).filter(|_| listed))
}

/// Puts a row at the heads of the lists of everyone it pays (`lists` holds each list as it
/// stands; one absent is empty): the row's places.
pub(crate) fn place(row: &RebateOrder, lists: &mut HashMap<i64, RowList>) -> Places {
    let users = holders(row);
    // In role order (`from_fn` calls in index order): a user in two roles gets two entries.
    std::array::from_fn(|i| {
        users[i].map(|u| lists.entry(u).or_default().push(&row.source, &row.line_key, RebateRole::ALL[i]))
    })
}

/// Takes back [`place`]'s places of a row that was not written after all.
pub(crate) fn unplace(row: &RebateOrder, places: Places, lists: &mut HashMap<i64, RowList>) {
    for (user, place) in holders(row).into_iter().zip(places).rev() {
        if let (Some(user), Some((_, prev))) = (user, place)
            && let Some(list) = lists.get_mut(&user)
        {
            list.count -= 1;
            list.head = prev;
        }
    }
}

/// The JSON parameters of the list statements: each joined row's links
/// `[[source, line_key, (no, prev_source, prev_line_key, prev_role) × 3], …]` and each list's
/// new head `[[user, count, source, line_key, role], …]`.
pub(crate) fn lists_json(
    joined: &[(&RebateOrder, Places)],
    lists: &HashMap<i64, RowList>,
) -> Result<(String, String), StoreError> {
    let links: Vec<Vec<serde_json::Value>> = joined
        .iter()
        .map(|(row, places)| {
            let mut link = vec![row.source.as_str().into(), row.line_key.as_str().into()];
            for place in places {
                let (no, prev) = place.as_ref().map(|(n, p)| (Some(*n), p.as_ref())).unwrap_or((None, None));
                link.extend([
                    no.into(),
                    prev.map(|p| p.0.as_str()).into(),
                    prev.map(|p| p.1.as_str()).into(),
                    prev.map(|p| p.2.code()).into(),
                ]);
            }
            link
        })
        .collect();
    let heads: Vec<(i64, i64, &str, &str, i64)> = lists
        .iter()
        .filter_map(|(u, l)| l.head.as_ref().map(|(s, k, r)| (*u, l.count, s.as_str(), k.as_str(), r.code())))
        .collect();
    let json = |v: serde_json::Result<String>| {
        v.map_err(|e| StoreError::Corrupt { table: "rebate_lists", reason: e.to_string() })
    };
    Ok((json(serde_json::to_string(&links))?, json(serde_json::to_string(&heads))?))
}

/// The link columns of every role, in [`Places`] order, for a statement's column list.
pub(crate) const LINK_COLUMNS: &str = "list_no, prev_source, prev_line_key, prev_role, \
     inv_list_no, inv_prev_source, inv_prev_line_key, inv_prev_role, \
     grand_list_no, grand_prev_source, grand_prev_line_key, grand_prev_role";
