-- Ledger accounts get integer ids (see the MySQL migration of the same name for why).
CREATE TABLE ledger_accounts (
    id            INTEGER NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    balance       INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
INSERT INTO ledger_accounts (name, balance, updated_at_ms)
    SELECT account, balance, updated_at_ms FROM ledger_balances ORDER BY account;
-- Entries of an account without a balance row (the audit reports them) keep their account.
INSERT INTO ledger_accounts (name, balance, updated_at_ms)
    SELECT DISTINCT account, 0, 0 FROM ledger_entries
    WHERE account NOT IN (SELECT name FROM ledger_accounts) ORDER BY account;

CREATE TABLE ledger_entries_by_id (
    txn_id        INTEGER NOT NULL REFERENCES ledger_txns (id),
    seq           INTEGER NOT NULL,
    account_id    INTEGER NOT NULL REFERENCES ledger_accounts (id),
    amount        INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (txn_id, seq)
) WITHOUT ROWID;
INSERT INTO ledger_entries_by_id (txn_id, seq, account_id, amount, created_at_ms)
    SELECT e.txn_id, e.seq, a.id, e.amount, e.created_at_ms
    FROM ledger_entries e JOIN ledger_accounts a ON a.name = e.account;
DROP TABLE ledger_entries;
ALTER TABLE ledger_entries_by_id RENAME TO ledger_entries;
CREATE INDEX ledger_entries_by_account ON ledger_entries (account_id, txn_id);
DROP TABLE ledger_balances;

-- Nothing reads transactions by reference; a row's transactions share its key prefix.
DROP INDEX ledger_txns_by_reference;

-- Only settled rows wait for their hold to pass; the others need no entry in this index.
DROP INDEX rebate_orders_due;
CREATE INDEX rebate_orders_due ON rebate_orders (available_at_ms) WHERE state = 'settled';
