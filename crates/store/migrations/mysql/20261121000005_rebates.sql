-- Rebates. A user's rebate profile (tier, inviter) and tracking ids (the ids networks return
-- on order rows: special_id, relation_id, or our sub-id). Each commissionable order row
-- reported by a network is one `rebate_orders` row keyed by (source, line item); it records
-- what it holds in the ledger (commission and split, pending or available) so each change
-- posts only the difference, in the same transaction as the row's compare-and-set on
-- `version`. Rows we could not accept are kept in `rebate_rejects` for review.
CREATE TABLE rebate_profiles (
    user_id       BIGINT      NOT NULL PRIMARY KEY,
    tier          VARCHAR(16) NOT NULL,
    inviter_id    BIGINT      NULL,
    created_at_ms BIGINT      NOT NULL,
    KEY rebate_profiles_by_inviter (inviter_id),
    CONSTRAINT rebate_profiles_tier CHECK (tier IN ('standard', 'silver', 'gold')),
    CONSTRAINT rebate_profiles_not_self CHECK (inviter_id IS NULL OR inviter_id <> user_id),
    CONSTRAINT rebate_profiles_user_fk FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT rebate_profiles_inviter_fk FOREIGN KEY (inviter_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE tracking_ids (
    code          VARCHAR(64) NOT NULL PRIMARY KEY,
    user_id       BIGINT      NOT NULL,
    kind          VARCHAR(16) NOT NULL,
    created_at_ms BIGINT      NOT NULL,
    KEY tracking_ids_by_user (user_id),
    CONSTRAINT tracking_ids_kind CHECK (kind IN ('special_id', 'relation_id', 'sub_id')),
    CONSTRAINT tracking_ids_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE rebate_orders (
    source              VARCHAR(32)  NOT NULL,
    line_key            VARCHAR(64)  NOT NULL,
    parent_key          VARCHAR(64)  NOT NULL,
    user_id             BIGINT       NULL,
    inviter_id          BIGINT       NULL,
    grand_inviter_id    BIGINT       NULL,
    tracking            VARCHAR(64)  NULL,
    item_id             VARCHAR(64)  NOT NULL,
    item_title          VARCHAR(255) NOT NULL,
    category            VARCHAR(64)  NULL,
    state               VARCHAR(16)  NOT NULL,
    network_status      VARCHAR(16)  NOT NULL,
    paid_minor          BIGINT       NOT NULL,
    estimate_minor      BIGINT       NOT NULL,
    settled_minor       BIGINT       NOT NULL,
    refunded_minor      BIGINT       NOT NULL,
    commission_minor    BIGINT       NOT NULL,
    buyer_share         BIGINT       NOT NULL,
    inviter_share       BIGINT       NOT NULL,
    grand_share         BIGINT       NOT NULL,
    platform_share      BIGINT       NOT NULL,
    shares_available    TINYINT      NOT NULL,
    click_ms            BIGINT       NULL,
    paid_at_ms          BIGINT       NULL,
    settled_at_ms       BIGINT       NULL,
    available_at_ms     BIGINT       NULL,
    network_modified_ms BIGINT       NOT NULL,
    version             BIGINT       NOT NULL,
    created_at_ms       BIGINT       NOT NULL,
    updated_at_ms       BIGINT       NOT NULL,
    PRIMARY KEY (source, line_key),
    KEY rebate_orders_by_user (user_id, updated_at_ms),
    KEY rebate_orders_due (state, available_at_ms),
    KEY rebate_orders_by_parent (source, parent_key),
    CONSTRAINT rebate_orders_state CHECK (state IN ('estimated', 'received', 'settled', 'available', 'invalid', 'reversed')),
    CONSTRAINT rebate_orders_amounts CHECK (paid_minor >= 0 AND estimate_minor >= 0 AND settled_minor >= 0
        AND refunded_minor >= 0 AND commission_minor >= 0 AND buyer_share >= 0 AND inviter_share >= 0
        AND grand_share >= 0 AND platform_share >= 0 AND version > 0 AND shares_available IN (0, 1)),
    CONSTRAINT rebate_orders_split CHECK (buyer_share + inviter_share + grand_share + platform_share = commission_minor)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE rebate_rejects (
    id       BIGINT       NOT NULL PRIMARY KEY,
    source   VARCHAR(32)  NOT NULL,
    line_key VARCHAR(64)  NULL,
    reason   VARCHAR(255) NOT NULL,
    payload  TEXT         NOT NULL,
    at_ms    BIGINT       NOT NULL,
    KEY rebate_rejects_by_time (at_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
