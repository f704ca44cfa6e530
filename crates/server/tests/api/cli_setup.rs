//! Setting the binary up: data directories that are wrong say so plainly, commands that read
//! a store refuse a directory holding none, stray `FLASHBACK_*` variables are named in a
//! warning instead of stopping the server, and production refuses the simulated provider.

use std::path::Path;
use std::process::{Command, Output};

fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flashback"))
        .current_dir(cwd)
        .args(args)
        .envs(env.iter().copied())
        .env("FLASHBACK_AUTH_ARGON2_MEMORY_KIB", "64")
        .env("FLASHBACK_AUTH_ARGON2_ITERATIONS", "1")
        .env("FLASHBACK_LOG_LEVEL", "warn")
        .env("FLASHBACK_LOG_FORMAT", "json")
        .output()
        .expect("run flashback")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn commands_that_read_a_store_refuse_a_directory_holding_none_and_create_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    for args in [&["audit", "trade"][..], &["audit", "ledger"], &["audit", "flash-sale", "1"], &["backup", "--to", "b"]]
    {
        let out = run(cwd.path(), args, &[]);
        assert!(!out.status.success(), "{args:?} passed on an empty directory: {}", text(&out));
        assert!(text(&out).contains("no Flashback store at"), "{args:?}: {}", text(&out));
        assert!(!cwd.path().join("data").exists(), "{args:?} created ./data");
    }
    // Once a store exists there, the audit runs on it.
    let data = cwd.path().join("data");
    assert!(run(cwd.path(), &["migrate"], &[]).status.success());
    let out = run(cwd.path(), &["audit", "ledger", "--data-dir", data.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_file_in_place_of_the_data_directory_is_named_with_what_to_do() {
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("data");
    std::fs::write(&file, b"not a directory").unwrap();
    let out = run(cwd.path(), &["migrate", "--data-dir", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains(file.to_str().unwrap()) && said.contains("a file is in its place"), "{said}");
    assert!(said.contains("--data-dir"), "{said}");
    assert!(!said.contains("StoreOptions") && !said.contains("os error 17"), "{said}");
}

#[test]
fn a_stray_flashback_variable_is_named_in_a_warning_and_start_up_goes_on() {
    let cwd = tempfile::tempdir().unwrap();
    let out =
        run(cwd.path(), &["migrate"], &[("FLASHBACK_BIN", "/usr/local/bin/flashback"), ("FLASHBACK_STORE_URI", "x")]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("FLASHBACK_BIN") && said.contains("FLASHBACK_STORE_URI"), "{said}");
    assert!(said.contains("names no configuration key"), "{said}");
    // A known key with a bad value still stops it.
    let out = run(cwd.path(), &["migrate"], &[("FLASHBACK_STORE_MAX_CONNECTIONS", "lots")]);
    assert!(!out.status.success());
}

#[test]
fn production_refuses_to_start_with_the_simulated_payment_provider() {
    let cwd = tempfile::tempdir().unwrap();
    let out = run(cwd.path(), &["migrate"], &[("FLASHBACK_ENVIRONMENT", "production")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("trade.payment_provider"), "{}", text(&out));
    let out = run(
        cwd.path(),
        &["migrate"],
        &[("FLASHBACK_ENVIRONMENT", "production"), ("FLASHBACK_TRADE_PAYMENT_PROVIDER", "none")],
    );
    assert!(out.status.success(), "{}", text(&out));
}
