-- Where each polled feed got to (a network's order feed by create time, by modified time,
-- its refund feed), so a restart resumes instead of starting over.
CREATE TABLE sync_cursors (
    name          VARCHAR(64) NOT NULL PRIMARY KEY,
    position_ms   BIGINT      NOT NULL,
    updated_at_ms BIGINT      NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
