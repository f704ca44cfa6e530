-- Runs once, on the primary's first start (mounted into /docker-entrypoint-initdb.d by
-- deploy/compose.yaml), after the image has created the `flashback` database and user: the two
-- order shard databases (trade.shard_urls), on the same server here. It is written to the
-- binary log, so the replica gets them too.
CREATE DATABASE IF NOT EXISTS flashback_orders_0;
CREATE DATABASE IF NOT EXISTS flashback_orders_1;
GRANT ALL PRIVILEGES ON flashback_orders_0.* TO 'flashback'@'%';
GRANT ALL PRIVILEGES ON flashback_orders_1.* TO 'flashback'@'%';
