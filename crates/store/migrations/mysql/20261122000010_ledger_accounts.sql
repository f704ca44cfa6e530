-- Ledger accounts get integer ids. Every entry named its account as text (`user:<id>:pending`,
-- ~30 bytes) and the per-account index repeated it, so that index was the largest part of the
-- ledger and its text comparisons the slowest part of a posting. Accounts are now rows of
-- their own, holding the balance the old `ledger_balances` held (same meaning: kept current in
-- the same transaction, in the account's normal sign, proven equal to the entries by
-- `flashback audit ledger`); entries refer to them by id.
CREATE TABLE ledger_accounts (
    id            BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name          VARCHAR(96) NOT NULL,
    balance       BIGINT      NOT NULL,
    updated_at_ms BIGINT      NOT NULL,
    UNIQUE KEY ledger_accounts_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
INSERT INTO ledger_accounts (name, balance, updated_at_ms)
    SELECT account, balance, updated_at_ms FROM ledger_balances ORDER BY account;
-- Entries of an account without a balance row (the audit reports them) keep their account.
INSERT INTO ledger_accounts (name, balance, updated_at_ms)
    SELECT DISTINCT e.account, 0, 0 FROM ledger_entries e
    LEFT JOIN ledger_accounts a ON a.name = e.account WHERE a.id IS NULL ORDER BY e.account;

ALTER TABLE ledger_entries ADD COLUMN account_id BIGINT NULL AFTER seq;
UPDATE ledger_entries e JOIN ledger_accounts a ON a.name = e.account SET e.account_id = a.id;
ALTER TABLE ledger_entries
    DROP KEY ledger_entries_by_account,
    DROP COLUMN account,
    MODIFY account_id BIGINT NOT NULL,
    ADD KEY ledger_entries_by_account (account_id, txn_id),
    ADD CONSTRAINT ledger_entries_account_fk FOREIGN KEY (account_id) REFERENCES ledger_accounts (id);
DROP TABLE ledger_balances;

-- Nothing reads transactions by reference; a row's transactions share its key prefix.
ALTER TABLE ledger_txns DROP KEY ledger_txns_by_reference;
