-- Each user's rebate rows form a list (see the MySQL migration of the same name for the
-- design); the per-user index goes.
ALTER TABLE rebate_orders ADD COLUMN list_no INTEGER;
ALTER TABLE rebate_orders ADD COLUMN prev_source TEXT;
ALTER TABLE rebate_orders ADD COLUMN prev_line_key TEXT;

CREATE TABLE rebate_lists (
    user_id       INTEGER NOT NULL PRIMARY KEY,
    listed        INTEGER NOT NULL DEFAULT 0,
    head_source   TEXT,
    head_line_key TEXT
);

-- Rows written before: listed in the order they were created.
UPDATE rebate_orders SET list_no = c.n, prev_source = c.ps, prev_line_key = c.pk
FROM (SELECT source, line_key,
             ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY created_at_ms, source, line_key) AS n,
             LAG(source) OVER (PARTITION BY user_id ORDER BY created_at_ms, source, line_key) AS ps,
             LAG(line_key) OVER (PARTITION BY user_id ORDER BY created_at_ms, source, line_key) AS pk
      FROM rebate_orders WHERE user_id IS NOT NULL) AS c
WHERE rebate_orders.source = c.source AND rebate_orders.line_key = c.line_key;
INSERT INTO rebate_lists (user_id, listed, head_source, head_line_key)
SELECT user_id, list_no, source, line_key
FROM (SELECT user_id, list_no, source, line_key,
             ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY list_no DESC) AS r
      FROM rebate_orders WHERE user_id IS NOT NULL)
WHERE r = 1;

DROP INDEX rebate_orders_by_user;
