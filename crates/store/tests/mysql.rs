//! The storage conformance suite against a real MySQL-compatible server
//! (`FLASHBACK_TEST_MYSQL_URL`, e.g. `mysql://root@127.0.0.1:3306`); skipped when unset.

use flashback_store::testing::{self, TestStore};

async fn make() -> Option<TestStore> {
    testing::mysql("MySQL storage").await
}

flashback_store::conformance_suite!(make);
