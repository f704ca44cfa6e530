-- The reservation's state CHECK as comparisons instead of `state IN (...)`: SQLite evaluates
-- an IN list of more than two values by building a temporary b-tree of the list for every row
-- it writes (see 20261204000012_rebate_lists), and the memory engine's importer writes every
-- accepted purchase here. The rule is the same. SQLite cannot change a CHECK in place, so the
-- table is rebuilt (no foreign key names it) with its indexes as they were.
CREATE TABLE flash_reservations_checked (
    id            INTEGER PRIMARY KEY,
    sale_id       INTEGER NOT NULL REFERENCES flash_sales (id),
    user_id       INTEGER NOT NULL,
    quantity      INTEGER NOT NULL CHECK (quantity > 0),
    state         TEXT    NOT NULL CHECK (state = 'reserved' OR state = 'ordered' OR state = 'released'),
    order_id      INTEGER,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
INSERT INTO flash_reservations_checked (id, sale_id, user_id, quantity, state, order_id, created_at_ms, updated_at_ms)
SELECT id, sale_id, user_id, quantity, state, order_id, created_at_ms, updated_at_ms FROM flash_reservations;
DROP TABLE flash_reservations;
ALTER TABLE flash_reservations_checked RENAME TO flash_reservations;
CREATE INDEX flash_reservations_by_sale_user ON flash_reservations (sale_id, user_id);
CREATE INDEX flash_reservations_by_state ON flash_reservations (state, id);
