-- Runs once, on the replica's first start (mounted into /docker-entrypoint-initdb.d by
-- deploy/compose.yaml), after the image's entrypoint has pointed it at the primary: follow the
-- primary by GTID, so the replica can be re-pointed or promoted without binlog coordinates.
STOP REPLICA;
CHANGE MASTER TO MASTER_USE_GTID = slave_pos;
START REPLICA;
