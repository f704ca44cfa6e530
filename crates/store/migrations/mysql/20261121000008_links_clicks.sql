-- Tracked links (a short code per user and item, redirecting to the network's link with the
-- user's tracking embedded) and their clicks: when, a keyed hash of the client address (never
-- the address), the user agent. A user's claim of an unattributed order is checked against
-- their clicks on its item.
CREATE TABLE links (
    code          VARCHAR(16)  NOT NULL PRIMARY KEY,
    user_id       BIGINT       NOT NULL,
    item_id       VARCHAR(64)  NOT NULL,
    target_url    VARCHAR(1024) NOT NULL,
    created_at_ms BIGINT       NOT NULL,
    KEY links_by_user (user_id),
    CONSTRAINT links_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE clicks (
    id         BIGINT       NOT NULL PRIMARY KEY,
    code       VARCHAR(16)  NOT NULL,
    user_id    BIGINT       NOT NULL,
    item_id    VARCHAR(64)  NOT NULL,
    at_ms      BIGINT       NOT NULL,
    ip_hash    CHAR(64)     NOT NULL,
    user_agent VARCHAR(255) NOT NULL,
    KEY clicks_by_user_item (user_id, item_id, at_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
