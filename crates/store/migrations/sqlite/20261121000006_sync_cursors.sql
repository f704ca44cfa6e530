-- Where each polled feed got to (a network's order feed by create time, by modified time,
-- its refund feed), so a restart resumes instead of starting over.
CREATE TABLE sync_cursors (
    name          TEXT    NOT NULL PRIMARY KEY,
    position_ms   INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
