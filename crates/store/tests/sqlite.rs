//! The storage conformance suite against SQLite files.

use flashback_store::testing::{self, TestStore};

async fn make() -> Option<TestStore> {
    Some(testing::sqlite().await)
}

flashback_store::conformance_suite!(make);
