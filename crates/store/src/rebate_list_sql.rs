//! The statements that read and check the users' lists of rebate rows (`rebate_list.rs`),
//! the same on both backends.

use crate::rebate_list::RebateRole;

/// `column` of the role coded in `role` (an SQL expression), on the row aliased `row`.
fn by_role(role: &str, row: &str, column: &str) -> String {
    format!("CASE {role} WHEN 0 THEN {row}.{column} WHEN 1 THEN {row}.inv_{column} ELSE {row}.grand_{column} END",)
}

/// Who holds the role coded in `role` on the row aliased `row`.
fn holder(role: &str, row: &str) -> String {
    format!("CASE {role} WHEN 0 THEN {row}.user_id WHEN 1 THEN {row}.inviter_id ELSE {row}.grand_inviter_id END")
}

/// One user's entries, newest first: back from the head of their list, or from the entry
/// before `after` (which must be theirs, in that role). Binds: the user (and, after a cursor,
/// its source and line key first), the most entries, the user again. Selects the role's code
/// and then [`crate::sql_rebate::ORDER_COLUMNS`].
pub(crate) fn walk(after: Option<RebateRole>) -> String {
    let start = match after {
        None => "SELECT head_source, head_line_key, head_role, CAST(1 AS SIGNED) FROM rebate_lists \
                 WHERE user_id = ? AND head_line_key IS NOT NULL"
            .to_owned(),
        Some(role) => {
            let p = role.prefix();
            format!(
                "SELECT {p}prev_source, {p}prev_line_key, {p}prev_role, CAST(1 AS SIGNED) FROM rebate_orders \
                 WHERE source = ? AND line_key = ? AND {} = ? AND {p}prev_line_key IS NOT NULL",
                role.holder()
            )
        }
    };
    format!(
        "WITH RECURSIVE list (s, k, r, n) AS ({start} \
             UNION ALL \
             SELECT {}, {}, {}, l.n + 1 FROM list l JOIN rebate_orders x ON x.source = l.s AND x.line_key = l.k \
             WHERE l.n < ? AND {} IS NOT NULL) \
         SELECT CAST(l.r AS SIGNED) AS role, {} FROM list l JOIN rebate_orders r ON r.source = l.s AND r.line_key = l.k \
         WHERE {} = ? ORDER BY l.n",
        by_role("l.r", "x", "prev_source"),
        by_role("l.r", "x", "prev_line_key"),
        by_role("l.r", "x", "prev_role"),
        by_role("l.r", "x", "prev_line_key"),
        crate::sql_rebate::ORDER_COLUMNS,
        holder("l.r", "r"),
    )
}

/// Every entry of every list as the rows hold it: (user `u`, role `r`, `source`, `line_key`,
/// number `n`, previous entry `ps`, `pk`, `pr`). A row is listed for each role it has someone
/// in, once it has a buyer.
const ENTRIES: &str = "SELECT user_id AS u, 0 AS r, source, line_key, list_no AS n, prev_source AS ps, \
       prev_line_key AS pk, prev_role AS pr FROM rebate_orders WHERE user_id IS NOT NULL \
     UNION ALL SELECT inviter_id, 1, source, line_key, inv_list_no, inv_prev_source, inv_prev_line_key, \
       inv_prev_role FROM rebate_orders WHERE user_id IS NOT NULL AND inviter_id IS NOT NULL \
     UNION ALL SELECT grand_inviter_id, 2, source, line_key, grand_list_no, grand_prev_source, \
       grand_prev_line_key, grand_prev_role FROM rebate_orders WHERE user_id IS NOT NULL AND grand_inviter_id IS NOT NULL";

/// Lists whose count is not their entries' or whose entries are not numbered 1 to the count:
/// (user, listed, entries, lowest, highest, distinct numbers). Binds the most shown.
pub(crate) fn miscounted() -> String {
    format!(
        "SELECT l.user_id, l.listed, s.c, s.lo, s.hi, s.d FROM rebate_lists l LEFT JOIN \
         (SELECT u, COUNT(*) AS c, MIN(n) AS lo, MAX(n) AS hi, COUNT(DISTINCT n) AS d FROM ({ENTRIES}) e GROUP BY u) s \
         ON s.u = l.user_id \
         WHERE COALESCE(s.c, 0) <> l.listed OR s.lo <> 1 OR s.hi <> s.c OR s.d <> s.c LIMIT ?"
    )
}

/// Rows listed where they should not be: links on a row without a buyer, or in a role nobody
/// holds; entries of a user who has no list. Binds the most shown.
pub(crate) fn misplaced() -> String {
    let linked = |p: &str| format!("{p}list_no IS NOT NULL OR {p}prev_line_key IS NOT NULL");
    format!(
        "SELECT r.source, r.line_key FROM rebate_orders r \
         WHERE (r.user_id IS NULL AND ({} OR {} OR {})) \
         OR (r.inviter_id IS NULL AND ({})) OR (r.grand_inviter_id IS NULL AND ({})) \
         UNION SELECT e.source, e.line_key FROM ({ENTRIES}) e \
         WHERE NOT EXISTS (SELECT 1 FROM rebate_lists l WHERE l.user_id = e.u) LIMIT ?",
        linked("r."),
        linked("r.inv_"),
        linked("r.grand_"),
        linked("r.inv_"),
        linked("r.grand_"),
    )
}

/// Users whose list head is not their newest entry. Binds the most shown.
pub(crate) fn misheaded() -> String {
    format!(
        "SELECT l.user_id FROM rebate_lists l \
         LEFT JOIN rebate_orders r ON r.source = l.head_source AND r.line_key = l.head_line_key \
         WHERE (l.listed > 0 AND (r.source IS NULL OR l.head_role IS NULL OR l.head_role NOT IN (0, 1, 2) \
           OR COALESCE({}, 0) <> l.user_id OR COALESCE({}, 0) <> l.listed)) \
         OR (l.listed = 0 AND l.head_line_key IS NOT NULL) LIMIT ?",
        holder("l.head_role", "r"),
        by_role("l.head_role", "r", "list_no"),
    )
}

/// Entries not linked to the entry numbered before them in the same list: (user, source,
/// line key). Binds the most shown.
pub(crate) fn unlinked() -> String {
    format!(
        "SELECT e.u, e.source, e.line_key FROM ({ENTRIES}) e \
         LEFT JOIN rebate_orders p ON p.source = e.ps AND p.line_key = e.pk \
         WHERE (e.n = 1 AND e.pk IS NOT NULL) \
         OR (e.n <> 1 AND (p.source IS NULL OR e.pr IS NULL OR e.pr NOT IN (0, 1, 2) \
           OR COALESCE({}, 0) <> e.u OR COALESCE({}, 0) <> e.n - 1)) LIMIT ?",
        holder("e.pr", "p"),
        by_role("e.pr", "p", "list_no"),
    )
}
