-- Withdrawals. Funds are held at request (a guarded ledger move from available to
-- withdrawing in the same transaction), reviewed by an admin, and paid through a provider
-- idempotent on `transfer_no`; a rejection or a failed payout releases the hold. The daily
-- count limit is a conditional write too: each request takes the next `day_slot` of its
-- user's day, unique, so two racing requests cannot both take the last one.
CREATE TABLE withdrawals (
    id            BIGINT       NOT NULL PRIMARY KEY,
    user_id       BIGINT       NOT NULL,
    amount_minor  BIGINT       NOT NULL,
    payee         VARCHAR(64)  NOT NULL,
    state         VARCHAR(16)  NOT NULL,
    day           INT          NOT NULL,
    day_slot      INT          NOT NULL,
    transfer_no   VARCHAR(64)  NOT NULL,
    reason        VARCHAR(255) NULL,
    reviewer_id   BIGINT       NULL,
    provider_ref  VARCHAR(64)  NULL,
    created_at_ms BIGINT       NOT NULL,
    updated_at_ms BIGINT       NOT NULL,
    UNIQUE KEY withdrawals_transfer_no (transfer_no),
    UNIQUE KEY withdrawals_day_slot (user_id, day, day_slot),
    KEY withdrawals_by_state (state, id),
    KEY withdrawals_by_user (user_id, id),
    CONSTRAINT withdrawals_amount CHECK (amount_minor > 0 AND day_slot > 0),
    CONSTRAINT withdrawals_state CHECK (state IN ('requested', 'approved', 'paid', 'rejected', 'failed')),
    CONSTRAINT withdrawals_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
