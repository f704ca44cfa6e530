-- Payments of this shard's orders, as the payment provider reported them. A notification is
-- applied once per payment id; a payment that arrives for an order that is no longer waiting
-- (expired, cancelled) is recorded and refunded, never fulfilled.
CREATE TABLE payments (
    payment_id    VARCHAR(64) NOT NULL PRIMARY KEY,
    order_id      BIGINT      NOT NULL,
    amount_minor  BIGINT      NOT NULL,
    state         VARCHAR(16) NOT NULL,
    created_at_ms BIGINT      NOT NULL,
    updated_at_ms BIGINT      NOT NULL,
    KEY payments_by_order (order_id),
    CONSTRAINT payments_amount CHECK (amount_minor >= 0),
    CONSTRAINT payments_state CHECK (state IN ('created', 'succeeded', 'refunded'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
