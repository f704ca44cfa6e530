-- The double-entry ledger. A transaction is applied once per idempotency key; its entries
-- (debits positive, credits negative) sum to zero. Balances are derived from the entries;
-- `ledger_balances` keeps them current in the same transaction (in each account's normal
-- sign) so withdrawals can be conditional writes, and `flashback audit ledger` proves they
-- equal the sums of the entries.
CREATE TABLE ledger_txns (
    id            BIGINT       NOT NULL PRIMARY KEY,
    idem_key      VARCHAR(191) NOT NULL,
    kind          VARCHAR(32)  NOT NULL,
    reference     VARCHAR(191) NOT NULL,
    created_at_ms BIGINT       NOT NULL,
    UNIQUE KEY ledger_txns_idem_key (idem_key),
    KEY ledger_txns_by_reference (reference)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE ledger_entries (
    txn_id        BIGINT      NOT NULL,
    seq           INT         NOT NULL,
    account       VARCHAR(96) NOT NULL,
    amount        BIGINT      NOT NULL,
    created_at_ms BIGINT      NOT NULL,
    PRIMARY KEY (txn_id, seq),
    KEY ledger_entries_by_account (account, txn_id),
    CONSTRAINT ledger_entries_txn_fk FOREIGN KEY (txn_id) REFERENCES ledger_txns (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE ledger_balances (
    account       VARCHAR(96) NOT NULL PRIMARY KEY,
    balance       BIGINT      NOT NULL,
    updated_at_ms BIGINT      NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
