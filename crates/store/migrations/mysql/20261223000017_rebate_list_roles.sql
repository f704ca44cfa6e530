-- A user's list of rebate rows (20261204000012) holds every row they are paid from, not only
-- those they bought: a row that gets its first buyer joins the lists of the buyer, the buyer's
-- inviter and that inviter's inviter, in the statement that gives it the buyer
-- (`rebate_list.rs`). A list is still one chain through the rows: for each role, a row holds
-- its number in that user's list and the entry before it, now with that entry's role, and the
-- head names its role too. Nothing but the list heads is written besides the row itself, so
-- the ingest keeps its speed (an index or table of shares by user cost it 40 %).
ALTER TABLE rebate_orders
    ADD COLUMN prev_role           SMALLINT    NULL,
    ADD COLUMN inv_list_no         BIGINT      NULL,
    ADD COLUMN inv_prev_source     VARCHAR(32) NULL,
    ADD COLUMN inv_prev_line_key   VARCHAR(64) NULL,
    ADD COLUMN inv_prev_role       SMALLINT    NULL,
    ADD COLUMN grand_list_no       BIGINT      NULL,
    ADD COLUMN grand_prev_source   VARCHAR(32) NULL,
    ADD COLUMN grand_prev_line_key VARCHAR(64) NULL,
    ADD COLUMN grand_prev_role     SMALLINT    NULL;

ALTER TABLE rebate_lists ADD COLUMN head_role SMALLINT NULL;

-- Roles: 0 buyer, 1 inviter, 2 inviter's inviter. Every entry so far is a buyer's.
UPDATE rebate_orders SET prev_role = 0 WHERE prev_line_key IS NOT NULL;
UPDATE rebate_lists SET head_role = 0 WHERE head_line_key IS NOT NULL;

-- Rows written before: the inviters' entries join after each user's entries so far, in the
-- order the rows were created.
CREATE TABLE rebate_list_backfill AS
SELECT s.u, s.r, s.source, s.line_key,
       COALESCE(l.listed, 0) + ROW_NUMBER() OVER (PARTITION BY s.u ORDER BY s.created_at_ms, s.source, s.line_key, s.r) AS n,
       COALESCE(LAG(s.source) OVER (PARTITION BY s.u ORDER BY s.created_at_ms, s.source, s.line_key, s.r), l.head_source) AS ps,
       COALESCE(LAG(s.line_key) OVER (PARTITION BY s.u ORDER BY s.created_at_ms, s.source, s.line_key, s.r), l.head_line_key) AS pk,
       COALESCE(LAG(s.r) OVER (PARTITION BY s.u ORDER BY s.created_at_ms, s.source, s.line_key, s.r), l.head_role) AS pr
FROM (SELECT inviter_id AS u, 1 AS r, source, line_key, created_at_ms FROM rebate_orders
      WHERE user_id IS NOT NULL AND inviter_id IS NOT NULL
      UNION ALL
      SELECT grand_inviter_id, 2, source, line_key, created_at_ms FROM rebate_orders
      WHERE user_id IS NOT NULL AND grand_inviter_id IS NOT NULL) AS s
LEFT JOIN rebate_lists l ON l.user_id = s.u;

UPDATE rebate_orders o JOIN rebate_list_backfill b ON o.source = b.source AND o.line_key = b.line_key AND b.r = 1
SET o.inv_list_no = b.n, o.inv_prev_source = b.ps, o.inv_prev_line_key = b.pk, o.inv_prev_role = b.pr;
UPDATE rebate_orders o JOIN rebate_list_backfill b ON o.source = b.source AND o.line_key = b.line_key AND b.r = 2
SET o.grand_list_no = b.n, o.grand_prev_source = b.ps, o.grand_prev_line_key = b.pk, o.grand_prev_role = b.pr;

INSERT INTO rebate_lists (user_id, listed, head_source, head_line_key, head_role)
SELECT b.u, b.n, b.source, b.line_key, b.r FROM rebate_list_backfill b
WHERE b.n = (SELECT MAX(c.n) FROM rebate_list_backfill c WHERE c.u = b.u)
ON DUPLICATE KEY UPDATE listed = VALUES(listed), head_source = VALUES(head_source),
    head_line_key = VALUES(head_line_key), head_role = VALUES(head_role);

DROP TABLE rebate_list_backfill;
