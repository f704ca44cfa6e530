-- Each user's rebate rows form a list (see the MySQL migration of the same name for the
-- design); the per-user index goes.
--
-- SQLite cannot add a column list and change a CHECK in place, so the table is rebuilt (no
-- foreign key names it): besides the list's columns, the state's CHECK is written as
-- comparisons instead of `state IN (...)`. SQLite evaluates an IN list of more than two
-- values by building a temporary b-tree of the list on every row it writes, a fifth of the
-- embedded writer's instructions on `flashback-bench rebate` (callgrind; in Python's sqlite3
-- a plain insert ran twice as fast with the comparisons). The rule is the same; the
-- indexes are rebuilt as they were (the index of rows due holds only the settled ones).
CREATE TABLE rebate_orders_listed (
    source              TEXT    NOT NULL,
    line_key            TEXT    NOT NULL,
    parent_key          TEXT    NOT NULL,
    user_id             INTEGER,
    inviter_id          INTEGER,
    grand_inviter_id    INTEGER,
    tracking            TEXT,
    item_id             TEXT    NOT NULL,
    item_title          TEXT    NOT NULL,
    category            TEXT,
    state               TEXT    NOT NULL CHECK (state = 'estimated' OR state = 'received' OR state = 'settled'
                                                OR state = 'available' OR state = 'invalid' OR state = 'reversed'),
    network_status      TEXT    NOT NULL,
    paid_minor          INTEGER NOT NULL CHECK (paid_minor >= 0),
    estimate_minor      INTEGER NOT NULL CHECK (estimate_minor >= 0),
    settled_minor       INTEGER NOT NULL CHECK (settled_minor >= 0),
    refunded_minor      INTEGER NOT NULL CHECK (refunded_minor >= 0),
    commission_minor    INTEGER NOT NULL CHECK (commission_minor >= 0),
    buyer_share         INTEGER NOT NULL CHECK (buyer_share >= 0),
    inviter_share       INTEGER NOT NULL CHECK (inviter_share >= 0),
    grand_share         INTEGER NOT NULL CHECK (grand_share >= 0),
    platform_share      INTEGER NOT NULL CHECK (platform_share >= 0),
    shares_available    INTEGER NOT NULL CHECK (shares_available IN (0, 1)),
    click_ms            INTEGER,
    paid_at_ms          INTEGER,
    settled_at_ms       INTEGER,
    available_at_ms     INTEGER,
    network_modified_ms INTEGER NOT NULL,
    version             INTEGER NOT NULL CHECK (version > 0),
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL,
    list_no             INTEGER,
    prev_source         TEXT,
    prev_line_key       TEXT,
    PRIMARY KEY (source, line_key),
    CHECK (buyer_share + inviter_share + grand_share + platform_share = commission_minor)
) WITHOUT ROWID;

-- Rows written before: listed in the order they were created.
INSERT INTO rebate_orders_listed (source, line_key, parent_key, user_id, inviter_id, grand_inviter_id, tracking, item_id, item_title, category, state, network_status, paid_minor, estimate_minor, settled_minor, refunded_minor, commission_minor, buyer_share, inviter_share, grand_share, platform_share, shares_available, click_ms, paid_at_ms, settled_at_ms, available_at_ms, network_modified_ms, version, created_at_ms, updated_at_ms, list_no, prev_source, prev_line_key)
SELECT o.source,
       o.line_key,
       o.parent_key,
       o.user_id,
       o.inviter_id,
       o.grand_inviter_id,
       o.tracking,
       o.item_id,
       o.item_title,
       o.category,
       o.state,
       o.network_status,
       o.paid_minor,
       o.estimate_minor,
       o.settled_minor,
       o.refunded_minor,
       o.commission_minor,
       o.buyer_share,
       o.inviter_share,
       o.grand_share,
       o.platform_share,
       o.shares_available,
       o.click_ms,
       o.paid_at_ms,
       o.settled_at_ms,
       o.available_at_ms,
       o.network_modified_ms,
       o.version,
       o.created_at_ms,
       o.updated_at_ms,
       c.n, c.ps, c.pk
FROM rebate_orders o
LEFT JOIN (SELECT source, line_key,
                  ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY created_at_ms, source, line_key) AS n,
                  LAG(source) OVER (PARTITION BY user_id ORDER BY created_at_ms, source, line_key) AS ps,
                  LAG(line_key) OVER (PARTITION BY user_id ORDER BY created_at_ms, source, line_key) AS pk
           FROM rebate_orders WHERE user_id IS NOT NULL) AS c ON o.source = c.source AND o.line_key = c.line_key;
DROP TABLE rebate_orders;
ALTER TABLE rebate_orders_listed RENAME TO rebate_orders;
CREATE INDEX rebate_orders_due ON rebate_orders (available_at_ms) WHERE state = 'settled';
CREATE INDEX rebate_orders_by_parent ON rebate_orders (source, parent_key);

CREATE TABLE rebate_lists (
    user_id       INTEGER NOT NULL PRIMARY KEY,
    listed        INTEGER NOT NULL DEFAULT 0,
    head_source   TEXT,
    head_line_key TEXT
);
INSERT INTO rebate_lists (user_id, listed, head_source, head_line_key)
SELECT user_id, list_no, source, line_key
FROM (SELECT user_id, list_no, source, line_key,
             ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY list_no DESC) AS r
      FROM rebate_orders WHERE user_id IS NOT NULL)
WHERE r = 1;
