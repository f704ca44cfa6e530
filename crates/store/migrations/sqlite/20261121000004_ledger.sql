-- The double-entry ledger (see the MySQL migration of the same name for the design).
CREATE TABLE ledger_txns (
    id            INTEGER NOT NULL PRIMARY KEY,
    idem_key      TEXT    NOT NULL UNIQUE,
    kind          TEXT    NOT NULL,
    reference     TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX ledger_txns_by_reference ON ledger_txns (reference);

CREATE TABLE ledger_entries (
    txn_id        INTEGER NOT NULL REFERENCES ledger_txns (id),
    seq           INTEGER NOT NULL,
    account       TEXT    NOT NULL,
    amount        INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (txn_id, seq)
) WITHOUT ROWID;
CREATE INDEX ledger_entries_by_account ON ledger_entries (account, txn_id);

CREATE TABLE ledger_balances (
    account       TEXT    NOT NULL PRIMARY KEY,
    balance       INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
