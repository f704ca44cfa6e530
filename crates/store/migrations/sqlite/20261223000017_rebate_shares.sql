-- The rows a user is paid from as inviter or inviter's inviter join their list of rebate rows
-- too (`rebate_list.rs`): one entry each, numbered with the rows they bought
-- (`rebate_lists.listed` is now the last number given to either), written in the transaction
-- that gives the row its first buyer. Each names the newest row the user had bought when it
-- was numbered (`head_*`), so a page that ends on a share knows where the bought rows go on.
CREATE TABLE rebate_shares (
    user_id       INTEGER NOT NULL,
    list_no       INTEGER NOT NULL,
    source        TEXT    NOT NULL,
    line_key      TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role = 'inviter' OR role = 'grand_inviter'),
    head_source   TEXT,
    head_line_key TEXT,
    PRIMARY KEY (user_id, list_no)
) WITHOUT ROWID;

-- Rows written before: their shares join after the entries each user has, in the order the
-- rows were created.
INSERT INTO rebate_shares (user_id, list_no, source, line_key, role, head_source, head_line_key)
SELECT s.user_id,
       COALESCE(l.listed, 0) + ROW_NUMBER() OVER (PARTITION BY s.user_id ORDER BY s.created_at_ms, s.source, s.line_key, s.role),
       s.source, s.line_key, s.role, l.head_source, l.head_line_key
FROM (SELECT inviter_id AS user_id, source, line_key, 'inviter' AS role, created_at_ms FROM rebate_orders
      WHERE inviter_id IS NOT NULL AND user_id IS NOT NULL
      UNION ALL
      SELECT grand_inviter_id, source, line_key, 'grand_inviter', created_at_ms FROM rebate_orders
      WHERE grand_inviter_id IS NOT NULL AND user_id IS NOT NULL) AS s
LEFT JOIN rebate_lists l ON l.user_id = s.user_id;

INSERT INTO rebate_lists (user_id, listed)
SELECT user_id, MAX(list_no) FROM rebate_shares WHERE true GROUP BY user_id
ON CONFLICT (user_id) DO UPDATE SET listed = excluded.listed;
