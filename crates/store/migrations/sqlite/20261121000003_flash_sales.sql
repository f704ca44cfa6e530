-- Flash sales. A sale's stock is carved out of its product's inventory when the sale is
-- created (in the same transaction, by a conditional decrement) and what is unsold goes back
-- when it ends. Each accepted purchase is a reservation row, the durable record every engine
-- recovers from: remaining = stock - units of reservations not released.
CREATE TABLE flash_sales (
    id               INTEGER PRIMARY KEY,
    merchant_id      INTEGER NOT NULL REFERENCES merchants (id),
    product_id       INTEGER NOT NULL REFERENCES products (id),
    sale_price_minor INTEGER NOT NULL CHECK (sale_price_minor >= 0),
    stock            INTEGER NOT NULL CHECK (stock > 0),
    -- Units not reserved, kept by the `sql` engine's conditional update; other engines derive it.
    remaining        INTEGER NOT NULL CHECK (remaining >= 0),
    per_user_limit   INTEGER NOT NULL CHECK (per_user_limit > 0),
    starts_at_ms     INTEGER NOT NULL,
    ends_at_ms       INTEGER NOT NULL,
    require_token    INTEGER NOT NULL CHECK (require_token IN (0, 1)),
    state            TEXT    NOT NULL CHECK (state IN ('open', 'ended')),
    returned_units   INTEGER NOT NULL DEFAULT 0 CHECK (returned_units >= 0),
    created_at_ms    INTEGER NOT NULL,
    CHECK (ends_at_ms > starts_at_ms)
);
CREATE INDEX flash_sales_by_state ON flash_sales (state, ends_at_ms);

CREATE TABLE flash_reservations (
    id            INTEGER PRIMARY KEY,
    sale_id       INTEGER NOT NULL REFERENCES flash_sales (id),
    user_id       INTEGER NOT NULL,
    quantity      INTEGER NOT NULL CHECK (quantity > 0),
    state         TEXT    NOT NULL CHECK (state IN ('reserved', 'ordered', 'released')),
    order_id      INTEGER,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX flash_reservations_by_sale_user ON flash_reservations (sale_id, user_id);
CREATE INDEX flash_reservations_by_state ON flash_reservations (state, id);
