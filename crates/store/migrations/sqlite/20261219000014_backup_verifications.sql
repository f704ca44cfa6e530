-- Backups proven by `flashback backup verify` (see the MySQL migration of the same name).
CREATE TABLE backup_verifications (
    id                INTEGER NOT NULL PRIMARY KEY,
    verified_at_ms    INTEGER NOT NULL,
    backup_created_ms INTEGER NOT NULL,
    location          TEXT    NOT NULL,
    files             INTEGER NOT NULL,
    bytes             INTEGER NOT NULL
);
CREATE INDEX backup_verifications_by_time ON backup_verifications (verified_at_ms);
