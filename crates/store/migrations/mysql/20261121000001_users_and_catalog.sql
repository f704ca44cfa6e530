-- Accounts, merchants, categories, products and inventory.
-- Ids are made by the application (time-ordered 63-bit); times are Unix milliseconds.

CREATE TABLE users (
    id            BIGINT       NOT NULL PRIMARY KEY,
    username      VARCHAR(32)  NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    role          VARCHAR(16)  NOT NULL,
    created_at_ms BIGINT       NOT NULL,
    UNIQUE KEY users_username (username),
    CONSTRAINT users_role CHECK (role IN ('user', 'merchant', 'admin'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- One merchant per merchant account.
CREATE TABLE merchants (
    id            BIGINT       NOT NULL PRIMARY KEY,
    owner_user_id BIGINT       NOT NULL,
    name          VARCHAR(200) NOT NULL,
    created_at_ms BIGINT       NOT NULL,
    UNIQUE KEY merchants_owner (owner_user_id),
    CONSTRAINT merchants_owner_fk FOREIGN KEY (owner_user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE categories (
    id            BIGINT       NOT NULL PRIMARY KEY,
    name          VARCHAR(200) NOT NULL,
    created_at_ms BIGINT       NOT NULL,
    UNIQUE KEY categories_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE products (
    id               BIGINT       NOT NULL PRIMARY KEY,
    merchant_id      BIGINT       NOT NULL,
    category_id      BIGINT       NOT NULL,
    sku              VARCHAR(64)  NOT NULL, -- upper-cased by the application
    title            VARCHAR(200) NOT NULL,
    description      TEXT         NOT NULL,
    images           TEXT         NOT NULL, -- JSON array of URLs
    list_price_minor BIGINT       NOT NULL,
    status           VARCHAR(16)  NOT NULL,
    created_at_ms    BIGINT       NOT NULL,
    updated_at_ms    BIGINT       NOT NULL,
    UNIQUE KEY products_merchant_sku (merchant_id, sku),
    -- Keyset listings: newest first within a category or a merchant, optionally by status.
    KEY products_by_category (category_id, status, id),
    KEY products_by_merchant (merchant_id, status, id),
    CONSTRAINT products_price CHECK (list_price_minor >= 0),
    CONSTRAINT products_status CHECK (status IN ('on_shelf', 'off_shelf')),
    CONSTRAINT products_merchant_fk FOREIGN KEY (merchant_id) REFERENCES merchants (id),
    CONSTRAINT products_category_fk FOREIGN KEY (category_id) REFERENCES categories (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- One row per SKU; every change bumps version, so writers can make changes conditional.
CREATE TABLE inventory (
    product_id    BIGINT NOT NULL PRIMARY KEY,
    available     BIGINT NOT NULL,
    regions       TEXT   NOT NULL, -- JSON array of region codes
    version       BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    CONSTRAINT inventory_available CHECK (available >= 0),
    CONSTRAINT inventory_product_fk FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
