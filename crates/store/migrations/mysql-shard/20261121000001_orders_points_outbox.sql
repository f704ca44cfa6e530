-- One order shard: the orders of the buyers whose gene (a 10-bit hash of the user id) maps here, their
-- points, the idempotency keys of their requests, and this shard's outbox of events.

CREATE TABLE orders (
    id              BIGINT      NOT NULL PRIMARY KEY, -- time-ordered; low 10 bits are the buyer's gene
    buyer_id        BIGINT      NOT NULL,
    merchant_id     BIGINT      NOT NULL,
    state           VARCHAR(20) NOT NULL,
    total_minor     BIGINT      NOT NULL,
    points_used     BIGINT      NOT NULL,
    payable_minor   BIGINT      NOT NULL,
    expires_at_ms   BIGINT      NOT NULL,
    created_at_ms   BIGINT      NOT NULL,
    updated_at_ms   BIGINT      NOT NULL,
    KEY orders_by_buyer (buyer_id, id),
    KEY orders_by_merchant (merchant_id, id),
    KEY orders_by_state (state, expires_at_ms),
    CONSTRAINT orders_state CHECK (state IN ('pending_payment', 'paid', 'shipped', 'completed', 'cancelled', 'refunded')),
    CONSTRAINT orders_amounts CHECK (total_minor >= 0 AND points_used >= 0 AND payable_minor >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE order_lines (
    order_id         BIGINT       NOT NULL,
    product_id       BIGINT       NOT NULL,
    sku              VARCHAR(64)  NOT NULL,
    title            VARCHAR(200) NOT NULL,
    quantity         BIGINT       NOT NULL,
    unit_price_minor BIGINT       NOT NULL,
    PRIMARY KEY (order_id, product_id),
    CONSTRAINT order_lines_order_fk FOREIGN KEY (order_id) REFERENCES orders (id),
    CONSTRAINT order_lines_amounts CHECK (quantity > 0 AND unit_price_minor >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- A request replayed with the same key returns the same order.
CREATE TABLE idempotency_keys (
    buyer_id      BIGINT       NOT NULL,
    idem_key      VARCHAR(128) COLLATE utf8mb4_bin NOT NULL, -- keys are case-sensitive
    request_hash  VARCHAR(128) NOT NULL,
    order_id      BIGINT       NOT NULL,
    created_at_ms BIGINT       NOT NULL,
    PRIMARY KEY (buyer_id, idem_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Points are money: the balance never goes negative and every change is a ledger entry,
-- applied once per reference (e.g. 'redeem:<order>', 'award:<order>').
CREATE TABLE points_accounts (
    user_id       BIGINT NOT NULL PRIMARY KEY,
    balance       BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    CONSTRAINT points_accounts_balance CHECK (balance >= 0)
) ENGINE = InnoDB;

CREATE TABLE points_ledger (
    id            BIGINT      NOT NULL PRIMARY KEY,
    user_id       BIGINT      NOT NULL,
    delta         BIGINT      NOT NULL,
    reason        VARCHAR(32) NOT NULL,
    reference     VARCHAR(96) NOT NULL,
    created_at_ms BIGINT      NOT NULL,
    UNIQUE KEY points_ledger_reference (reference),
    KEY points_ledger_by_user (user_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Transactional outbox: an event is written in the same transaction as the change it reports.
CREATE TABLE outbox (
    id               BIGINT      NOT NULL PRIMARY KEY,
    event_type       VARCHAR(64) NOT NULL,
    aggregate_id     BIGINT      NOT NULL,
    payload          MEDIUMTEXT  NOT NULL,
    created_at_ms    BIGINT      NOT NULL,
    dispatched_at_ms BIGINT      NULL,
    KEY outbox_pending (dispatched_at_ms, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Consumers record each event they applied, in the same transaction as its effect.
CREATE TABLE processed_messages (
    consumer        VARCHAR(64) NOT NULL,
    event_id        BIGINT      NOT NULL,
    processed_at_ms BIGINT      NOT NULL,
    PRIMARY KEY (consumer, event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
