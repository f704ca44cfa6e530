-- Withdrawals (see the MySQL migration of the same name).
CREATE TABLE withdrawals (
    id            INTEGER NOT NULL PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    amount_minor  INTEGER NOT NULL CHECK (amount_minor > 0),
    payee         TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('requested', 'approved', 'paid', 'rejected', 'failed')),
    day           INTEGER NOT NULL,
    day_slot      INTEGER NOT NULL CHECK (day_slot > 0),
    transfer_no   TEXT    NOT NULL UNIQUE,
    reason        TEXT,
    reviewer_id   INTEGER,
    provider_ref  TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (user_id, day, day_slot)
);
CREATE INDEX withdrawals_by_state ON withdrawals (state, id);
CREATE INDEX withdrawals_by_user ON withdrawals (user_id, id);
