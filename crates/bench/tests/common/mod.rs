//! What the bench's end-to-end tests share: the binaries they run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The `flashback-bench` binary under test.
pub const BENCH: &str = env!("CARGO_BIN_EXE_flashback-bench");

/// The `flashback` binary beside the bench binary, built once per test binary (so it is never
/// stale) with the profile the test was built with.
pub fn flashback() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The profile, from the directory the bench binary is in.
        let dir = PathBuf::from(BENCH).parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned());
        let profile = match dir.as_deref() {
            None | Some("debug") => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "flashback", "--bin", "flashback", "--profile", &profile])
            .status()
            .expect("running cargo build for the flashback binary");
        assert!(status.success(), "cargo build -p flashback --bin flashback failed");
        let path = PathBuf::from(BENCH).with_file_name("flashback");
        assert!(path.is_file(), "no flashback binary at {}", path.display());
        path
    })
}
