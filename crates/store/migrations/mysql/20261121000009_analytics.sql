-- Real-time analytics: per-minute rollups of the order events (paid orders, GMV and units,
-- cancellations, refunds), the same per product for top-SKU lists, and the ids of the events
-- already counted. A rollup increment and its event id commit in one transaction, so an event
-- delivered again (at-least-once outbox, a restart) is counted once. Money in minor units;
-- minutes are Unix milliseconds of the minute's start (UTC). Old applied ids are pruned after
-- `analytics.dedup_retention_ms`.
CREATE TABLE analytics_minutes (
    minute_ms        BIGINT NOT NULL PRIMARY KEY,
    paid_orders      BIGINT NOT NULL DEFAULT 0,
    gmv_minor        BIGINT NOT NULL DEFAULT 0,
    units            BIGINT NOT NULL DEFAULT 0,
    cancelled_orders BIGINT NOT NULL DEFAULT 0,
    refunded_orders  BIGINT NOT NULL DEFAULT 0,
    refunded_minor   BIGINT NOT NULL DEFAULT 0
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE analytics_sku_minutes (
    minute_ms  BIGINT      NOT NULL,
    product_id BIGINT      NOT NULL,
    sku        VARCHAR(64) NOT NULL,
    units      BIGINT      NOT NULL DEFAULT 0,
    gmv_minor  BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute_ms, product_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE analytics_applied (
    event_id      BIGINT NOT NULL PRIMARY KEY,
    applied_at_ms BIGINT NOT NULL,
    KEY analytics_applied_by_time (applied_at_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
