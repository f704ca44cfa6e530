-- Stock held for orders. Stock lives here and orders on their buyer's shard, so placing an
-- order is a saga keyed by the order id: one row per (order, product), created in the same
-- transaction as the conditional decrement of inventory, and moved held → sold (paid) or
-- held/sold → released (cancelled, expired, refunded before shipping) by compare-and-set.
CREATE TABLE stock_reservations (
    order_id      INTEGER NOT NULL,
    product_id    INTEGER NOT NULL REFERENCES products (id),
    quantity      INTEGER NOT NULL CHECK (quantity > 0),
    state         TEXT    NOT NULL CHECK (state IN ('held', 'sold', 'released')),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

-- The sweeper looks for old held reservations.
CREATE INDEX stock_reservations_by_state ON stock_reservations (state, created_at_ms);
CREATE INDEX stock_reservations_by_product ON stock_reservations (product_id, state);
