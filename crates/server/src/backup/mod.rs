//! Backups that are proven: `flashback backup --to DIR`, `flashback restore --from DIR` and
//! `flashback backup verify DIR`, and the gauge of the last verified backup.
//!
//! A backup is taken while the server serves, in an order that keeps every write acknowledged
//! before it began: Redis first (`redis_rdb`); then the SQLite files pinned in groups, each at
//! one instant without a commit (`snapshot`), with the journal whose entries go to that group
//! held open in that instant (`journals`); the MySQL databases of each server dumped in one
//! transaction (`dump`); then the journals read, the SQLite pages copied, keys, and the
//! manifest last (`manifest`), so a backup without one is incomplete. A restore checks the manifest, the
//! configuration's shape and the target before it writes anything (`restore`). A verification
//! restores into scratch places (`scratch`) and runs recovery and every audit (`verify`).

mod dump;
mod files;
pub mod gauge;
mod journals;
pub mod manifest;
mod plan;
mod redis_rdb;
mod restore;
mod scratch;
mod snapshot;
mod take;
mod verify;

pub use manifest::Manifest;
pub use restore::{Restored, restore};
pub use take::backup;
pub use verify::{Report, verify};
