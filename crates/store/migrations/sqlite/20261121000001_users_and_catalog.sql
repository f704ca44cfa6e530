-- Accounts, merchants, categories, products and inventory.
-- Ids are made by the application (time-ordered 63-bit); times are Unix milliseconds.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('user', 'merchant', 'admin')),
    created_at_ms INTEGER NOT NULL
);

-- One merchant per merchant account.
CREATE TABLE merchants (
    id            INTEGER PRIMARY KEY,
    owner_user_id INTEGER NOT NULL UNIQUE REFERENCES users (id),
    name          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE categories (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE COLLATE NOCASE, -- as MySQL's _ci collation
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE products (
    id               INTEGER PRIMARY KEY,
    merchant_id      INTEGER NOT NULL REFERENCES merchants (id),
    category_id      INTEGER NOT NULL REFERENCES categories (id),
    sku              TEXT    NOT NULL,
    title            TEXT    NOT NULL,
    description      TEXT    NOT NULL,
    images           TEXT    NOT NULL, -- JSON array of URLs
    list_price_minor INTEGER NOT NULL CHECK (list_price_minor >= 0),
    status           TEXT    NOT NULL CHECK (status IN ('on_shelf', 'off_shelf')),
    created_at_ms    INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL,
    UNIQUE (merchant_id, sku)
);

-- Keyset listings: newest first within a category or a merchant, optionally by status.
CREATE INDEX products_by_category ON products (category_id, status, id);
CREATE INDEX products_by_merchant ON products (merchant_id, status, id);

-- One row per SKU; every change bumps version, so writers can make changes conditional.
CREATE TABLE inventory (
    product_id    INTEGER PRIMARY KEY REFERENCES products (id),
    available     INTEGER NOT NULL CHECK (available >= 0),
    regions       TEXT    NOT NULL, -- JSON array of region codes
    version       INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
