-- Flash purchases may carry the buyer's Idempotency-Key: it is written in the same row as the
-- reservation it made (never one without the other) and names at most one reservation per
-- buyer, so a retry finds its ticket. Keys are case-sensitive, as orders' keys are.
ALTER TABLE flash_reservations
    ADD COLUMN idempotency_key VARCHAR(128) COLLATE utf8mb4_bin NULL,
    ADD UNIQUE KEY flash_reservations_by_key (user_id, idempotency_key);

-- Purchases answered `202 pending` because the engine's answer was in doubt (Redis stalled past
-- its timeout and the fence that settles the attempt was not confirmed either). Any instance
-- settles them later: fenced before they ran (cancelled, nothing taken) or reserved.
CREATE TABLE flash_attempts (
    id              BIGINT       NOT NULL PRIMARY KEY,
    sale_id         BIGINT       NOT NULL,
    user_id         BIGINT       NOT NULL,
    quantity        BIGINT       NOT NULL,
    idempotency_key VARCHAR(128) COLLATE utf8mb4_bin NULL,
    state           VARCHAR(16)  NOT NULL,
    created_at_ms   BIGINT       NOT NULL,
    updated_at_ms   BIGINT       NOT NULL,
    KEY flash_attempts_by_state (state, id),
    CONSTRAINT flash_attempts_quantity CHECK (quantity > 0),
    CONSTRAINT flash_attempts_state CHECK (state IN ('pending', 'reserved', 'cancelled'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
