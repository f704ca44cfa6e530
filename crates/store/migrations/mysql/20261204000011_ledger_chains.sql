-- Each account's entries form a chain: an entry names the account's entry before it
-- (`prev_txn_id`, `prev_seq`) and its place in the account's history (`chain_no`, from 1);
-- the account row names its newest entry (`head_txn_id`, `head_seq`) and how many it has
-- (`entry_count`). A posting extends the chains of the accounts it names in the same
-- transaction that moves their balances (the account rows are locked by that update), so a
-- statement is a walk back from the head, one primary-key read per entry, and needs no index
-- by account. `flashback audit ledger` checks that every account's entries form one unbroken
-- chain ending at its head.
--
-- On MySQL/MariaDB the per-account index stays: the foreign key from entries to accounts needs
-- an index on the column, and InnoDB's redo log does not rewrite whole pages per commit the
-- way SQLite's WAL does (the SQLite migration drops it).
ALTER TABLE ledger_accounts
    ADD COLUMN entry_count BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN head_txn_id BIGINT NULL,
    ADD COLUMN head_seq    INT    NULL;
ALTER TABLE ledger_entries
    ADD COLUMN chain_no    BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN prev_txn_id BIGINT NULL,
    ADD COLUMN prev_seq    INT    NULL;

-- Entries written before: chained in transaction order.
UPDATE ledger_entries e
JOIN (SELECT txn_id, seq,
             ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY txn_id, seq) AS n,
             LAG(txn_id) OVER (PARTITION BY account_id ORDER BY txn_id, seq) AS pt,
             LAG(seq) OVER (PARTITION BY account_id ORDER BY txn_id, seq) AS ps
      FROM ledger_entries) AS c ON e.txn_id = c.txn_id AND e.seq = c.seq
SET e.chain_no = c.n, e.prev_txn_id = c.pt, e.prev_seq = c.ps;
UPDATE ledger_accounts a
JOIN (SELECT account_id, txn_id, seq, chain_no AS n,
             ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY chain_no DESC) AS r
      FROM ledger_entries) AS h ON a.id = h.account_id AND h.r = 1
SET a.entry_count = h.n, a.head_txn_id = h.txn_id, a.head_seq = h.seq;
