-- Payments of this shard's orders, as the payment provider reported them. A notification is
-- applied once per payment id; a payment that arrives for an order that is no longer waiting
-- (expired, cancelled) is recorded and refunded, never fulfilled.
CREATE TABLE payments (
    payment_id    TEXT    PRIMARY KEY,
    order_id      INTEGER NOT NULL,
    amount_minor  INTEGER NOT NULL CHECK (amount_minor >= 0),
    state         TEXT    NOT NULL CHECK (state IN ('created', 'succeeded', 'refunded')),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX payments_by_order ON payments (order_id);
