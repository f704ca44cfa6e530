-- Backups proven by `flashback backup verify`: each successful verification (restored into a
-- scratch copy, recovered, every audit clean) appends a row. Every instance reads the newest
-- `verified_at_ms` into the gauge `flashback_backup_last_verified_timestamp_seconds`, so an
-- alert can fire when the last proven backup is too old. Times are Unix milliseconds;
-- `backup_created_ms` is when the verified backup was taken, `location` where it was read from.
CREATE TABLE backup_verifications (
    id                BIGINT        NOT NULL PRIMARY KEY,
    verified_at_ms    BIGINT        NOT NULL,
    backup_created_ms BIGINT        NOT NULL,
    location          VARCHAR(1024) NOT NULL,
    files             BIGINT        NOT NULL,
    bytes             BIGINT        NOT NULL,
    KEY backup_verifications_by_time (verified_at_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
