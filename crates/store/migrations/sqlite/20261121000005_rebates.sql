-- Rebates (see the MySQL migration of the same name for the design notes).
CREATE TABLE rebate_profiles (
    user_id       INTEGER NOT NULL PRIMARY KEY REFERENCES users (id),
    tier          TEXT    NOT NULL CHECK (tier IN ('standard', 'silver', 'gold')),
    inviter_id    INTEGER REFERENCES users (id),
    created_at_ms INTEGER NOT NULL,
    CHECK (inviter_id IS NULL OR inviter_id <> user_id)
);
CREATE INDEX rebate_profiles_by_inviter ON rebate_profiles (inviter_id);

CREATE TABLE tracking_ids (
    code          TEXT    NOT NULL PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    kind          TEXT    NOT NULL CHECK (kind IN ('special_id', 'relation_id', 'sub_id')),
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tracking_ids_by_user ON tracking_ids (user_id);

CREATE TABLE rebate_orders (
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
    state               TEXT    NOT NULL CHECK (state IN ('estimated', 'received', 'settled', 'available', 'invalid', 'reversed')),
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
    PRIMARY KEY (source, line_key),
    CHECK (buyer_share + inviter_share + grand_share + platform_share = commission_minor)
) WITHOUT ROWID;
CREATE INDEX rebate_orders_by_user ON rebate_orders (user_id, updated_at_ms);
CREATE INDEX rebate_orders_due ON rebate_orders (state, available_at_ms);
CREATE INDEX rebate_orders_by_parent ON rebate_orders (source, parent_key);

CREATE TABLE rebate_rejects (
    id         INTEGER NOT NULL PRIMARY KEY,
    source     TEXT    NOT NULL,
    line_key   TEXT,
    reason     TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    at_ms      INTEGER NOT NULL
);
CREATE INDEX rebate_rejects_by_time ON rebate_rejects (at_ms);
