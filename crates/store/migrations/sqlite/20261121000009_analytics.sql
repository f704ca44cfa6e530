-- Real-time analytics (see the MySQL migration of the same name).
CREATE TABLE analytics_minutes (
    minute_ms        INTEGER NOT NULL PRIMARY KEY,
    paid_orders      INTEGER NOT NULL DEFAULT 0,
    gmv_minor        INTEGER NOT NULL DEFAULT 0,
    units            INTEGER NOT NULL DEFAULT 0,
    cancelled_orders INTEGER NOT NULL DEFAULT 0,
    refunded_orders  INTEGER NOT NULL DEFAULT 0,
    refunded_minor   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE analytics_sku_minutes (
    minute_ms  INTEGER NOT NULL,
    product_id INTEGER NOT NULL,
    sku        TEXT    NOT NULL,
    units      INTEGER NOT NULL DEFAULT 0,
    gmv_minor  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute_ms, product_id)
) WITHOUT ROWID;

CREATE TABLE analytics_applied (
    event_id      INTEGER NOT NULL PRIMARY KEY,
    applied_at_ms INTEGER NOT NULL
);
CREATE INDEX analytics_applied_by_time ON analytics_applied (applied_at_ms);
