-- Each user's rebate rows form a list, newest first, the way each ledger account's entries
-- form a chain (20261204000011): a row names the row before it in its buyer's list
-- (`prev_source`, `prev_line_key`) and its place there (`list_no`, from 1); `rebate_lists`
-- names each user's newest row and how many are listed. A row joins its buyer's list once,
-- when it first has a buyer (reported with a tracking id, or claimed later), in the same
-- transaction that writes it, so `GET /api/v1/me/rebates` walks back from the head, one
-- primary-key read per row, and no index by user is needed. `flashback audit ledger` checks
-- that every user's rows form one unbroken list ending at its head.
--
-- The index by (user_id, updated_at_ms) goes on both backends: it took a random leaf page per
-- new row and moved an entry on every update, the largest single cost of ingesting rows on
-- SQLite (measured: without it the embedded ingest ran ~20 % faster).
ALTER TABLE rebate_orders
    ADD COLUMN list_no       BIGINT      NULL,
    ADD COLUMN prev_source   VARCHAR(32) NULL,
    ADD COLUMN prev_line_key VARCHAR(64) NULL;

CREATE TABLE rebate_lists (
    user_id       BIGINT      NOT NULL PRIMARY KEY,
    listed        BIGINT      NOT NULL DEFAULT 0,
    head_source   VARCHAR(32) NULL,
    head_line_key VARCHAR(64) NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Rows written before: listed in the order they were created.
UPDATE rebate_orders r
JOIN (SELECT source, line_key,
             ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY created_at_ms, source, line_key) AS n,
             LAG(source) OVER (PARTITION BY user_id ORDER BY created_at_ms, source, line_key) AS ps,
             LAG(line_key) OVER (PARTITION BY user_id ORDER BY created_at_ms, source, line_key) AS pk
      FROM rebate_orders WHERE user_id IS NOT NULL) AS c ON r.source = c.source AND r.line_key = c.line_key
SET r.list_no = c.n, r.prev_source = c.ps, r.prev_line_key = c.pk;
INSERT INTO rebate_lists (user_id, listed, head_source, head_line_key)
SELECT h.user_id, h.list_no, h.source, h.line_key
FROM (SELECT user_id, list_no, source, line_key,
             ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY list_no DESC) AS r
      FROM rebate_orders WHERE user_id IS NOT NULL) AS h
WHERE h.r = 1;

ALTER TABLE rebate_orders DROP INDEX rebate_orders_by_user;
