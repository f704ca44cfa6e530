-- Tracked links and their clicks (see the MySQL migration of the same name).
CREATE TABLE links (
    code          TEXT    NOT NULL PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    item_id       TEXT    NOT NULL,
    target_url    TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX links_by_user ON links (user_id);

CREATE TABLE clicks (
    id         INTEGER NOT NULL PRIMARY KEY,
    code       TEXT    NOT NULL,
    user_id    INTEGER NOT NULL,
    item_id    TEXT    NOT NULL,
    at_ms      INTEGER NOT NULL,
    ip_hash    TEXT    NOT NULL,
    user_agent TEXT    NOT NULL
);
CREATE INDEX clicks_by_user_item ON clicks (user_id, item_id, at_ms);
