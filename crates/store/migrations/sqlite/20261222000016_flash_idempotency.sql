-- Flash purchases may carry the buyer's Idempotency-Key: it is written in the same row as the
-- reservation it made (never one without the other) and names at most one reservation per
-- buyer, so a retry finds its ticket. The index holds keyed rows only, so purchases without a
-- key (the storm's usual case) write no index entry for it.
ALTER TABLE flash_reservations ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX flash_reservations_by_key ON flash_reservations (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Purchases answered `202 pending` because the engine's answer was in doubt (Redis stalled past
-- its timeout and the fence that settles the attempt was not confirmed either). Any instance
-- settles them later: fenced before they ran (cancelled, nothing taken) or reserved.
CREATE TABLE flash_attempts (
    id              INTEGER PRIMARY KEY,
    sale_id         INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    quantity        INTEGER NOT NULL CHECK (quantity > 0),
    idempotency_key TEXT,
    state           TEXT    NOT NULL CHECK (state = 'pending' OR state = 'reserved' OR state = 'cancelled'),
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);
CREATE INDEX flash_attempts_by_state ON flash_attempts (state, id);
