-- One order shard: the orders of the buyers whose gene (a 10-bit hash of the user id) maps here, their
-- points, the idempotency keys of their requests, and this shard's outbox of events.

CREATE TABLE orders (
    id              INTEGER PRIMARY KEY, -- time-ordered; low 10 bits are the buyer's gene
    buyer_id        INTEGER NOT NULL,
    merchant_id     INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending_payment', 'paid', 'shipped', 'completed', 'cancelled', 'refunded')),
    total_minor     INTEGER NOT NULL CHECK (total_minor >= 0),
    points_used     INTEGER NOT NULL CHECK (points_used >= 0),
    payable_minor   INTEGER NOT NULL CHECK (payable_minor >= 0),
    expires_at_ms   INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);
CREATE INDEX orders_by_buyer ON orders (buyer_id, id);
CREATE INDEX orders_by_merchant ON orders (merchant_id, id);
CREATE INDEX orders_by_state ON orders (state, expires_at_ms);

CREATE TABLE order_lines (
    order_id         INTEGER NOT NULL REFERENCES orders (id),
    product_id       INTEGER NOT NULL,
    sku              TEXT    NOT NULL,
    title            TEXT    NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_minor INTEGER NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, product_id)
);

-- A request replayed with the same key returns the same order.
CREATE TABLE idempotency_keys (
    buyer_id      INTEGER NOT NULL,
    idem_key      TEXT    NOT NULL,
    request_hash  TEXT    NOT NULL,
    order_id      INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (buyer_id, idem_key)
);

-- Points are money: the balance never goes negative and every change is a ledger entry,
-- applied once per reference (e.g. 'redeem:<order>', 'award:<order>').
CREATE TABLE points_accounts (
    user_id       INTEGER PRIMARY KEY,
    balance       INTEGER NOT NULL CHECK (balance >= 0),
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE points_ledger (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL,
    delta         INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    reference     TEXT    NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX points_ledger_by_user ON points_ledger (user_id, id);

-- Transactional outbox: an event is written in the same transaction as the change it reports.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    event_type       TEXT    NOT NULL,
    aggregate_id     INTEGER NOT NULL,
    payload          TEXT    NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    dispatched_at_ms INTEGER
);
CREATE INDEX outbox_pending ON outbox (dispatched_at_ms, id);

-- Consumers record each event they applied, in the same transaction as its effect.
CREATE TABLE processed_messages (
    consumer      TEXT    NOT NULL,
    event_id      INTEGER NOT NULL,
    processed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
