-- Flash sales. A sale's stock is carved out of its product's inventory when the sale is
-- created (in the same transaction, by a conditional decrement) and what is unsold goes back
-- when it ends. Each accepted purchase is a reservation row, the durable record every engine
-- recovers from: remaining = stock - units of reservations not released.
CREATE TABLE flash_sales (
    id               BIGINT      NOT NULL PRIMARY KEY,
    merchant_id      BIGINT      NOT NULL,
    product_id       BIGINT      NOT NULL,
    sale_price_minor BIGINT      NOT NULL,
    stock            BIGINT      NOT NULL,
    -- Units not reserved, kept by the `sql` engine's conditional update; other engines derive it.
    remaining        BIGINT      NOT NULL,
    per_user_limit   BIGINT      NOT NULL,
    starts_at_ms     BIGINT      NOT NULL,
    ends_at_ms       BIGINT      NOT NULL,
    require_token    TINYINT     NOT NULL,
    state            VARCHAR(16) NOT NULL,
    returned_units   BIGINT      NOT NULL DEFAULT 0,
    created_at_ms    BIGINT      NOT NULL,
    KEY flash_sales_by_state (state, ends_at_ms),
    CONSTRAINT flash_sales_amounts CHECK (sale_price_minor >= 0 AND stock > 0 AND remaining >= 0
        AND per_user_limit > 0 AND returned_units >= 0 AND ends_at_ms > starts_at_ms),
    CONSTRAINT flash_sales_state CHECK (state IN ('open', 'ended')),
    CONSTRAINT flash_sales_token CHECK (require_token IN (0, 1)),
    CONSTRAINT flash_sales_merchant_fk FOREIGN KEY (merchant_id) REFERENCES merchants (id),
    CONSTRAINT flash_sales_product_fk FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE flash_reservations (
    id            BIGINT      NOT NULL PRIMARY KEY,
    sale_id       BIGINT      NOT NULL,
    user_id       BIGINT      NOT NULL,
    quantity      BIGINT      NOT NULL,
    state         VARCHAR(16) NOT NULL,
    order_id      BIGINT      NULL,
    created_at_ms BIGINT      NOT NULL,
    updated_at_ms BIGINT      NOT NULL,
    KEY flash_reservations_by_sale_user (sale_id, user_id),
    KEY flash_reservations_by_state (state, id),
    CONSTRAINT flash_reservations_quantity CHECK (quantity > 0),
    CONSTRAINT flash_reservations_state CHECK (state IN ('reserved', 'ordered', 'released')),
    CONSTRAINT flash_reservations_sale_fk FOREIGN KEY (sale_id) REFERENCES flash_sales (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
