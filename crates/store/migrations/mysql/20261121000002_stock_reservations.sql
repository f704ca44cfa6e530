-- Stock held for orders. Stock lives here and orders on their buyer's shard, so placing an
-- order is a saga keyed by the order id: one row per (order, product), created in the same
-- transaction as the conditional decrement of inventory, and moved held → sold (paid) or
-- held/sold → released (cancelled, expired, refunded before shipping) by compare-and-set.
CREATE TABLE stock_reservations (
    order_id      BIGINT      NOT NULL,
    product_id    BIGINT      NOT NULL,
    quantity      BIGINT      NOT NULL,
    state         VARCHAR(16) NOT NULL,
    created_at_ms BIGINT      NOT NULL,
    updated_at_ms BIGINT      NOT NULL,
    PRIMARY KEY (order_id, product_id),
    KEY stock_reservations_by_state (state, created_at_ms),
    KEY stock_reservations_by_product (product_id, state),
    CONSTRAINT stock_reservations_quantity CHECK (quantity > 0),
    CONSTRAINT stock_reservations_state CHECK (state IN ('held', 'sold', 'released')),
    CONSTRAINT stock_reservations_product_fk FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
