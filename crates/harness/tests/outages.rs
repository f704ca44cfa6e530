//! The MariaDB and RabbitMQ starters as the drill uses them: a killed service starts again on
//! the same port with its data. Backend suites: each runs when its `FLASHBACK_TEST_*_URL` is
//! set (CI's switch for the backend suites; the services here are the tests' own) and says
//! `SKIPPED:` otherwise.

use std::io::Write as _;
use std::process::Command;

use flashback_harness::mariadb::MariaDb;
use flashback_harness::rabbitmq::RabbitMq;

fn enabled(suite: &str, var: &str) -> bool {
    let on = std::env::var_os(var).is_some();
    if !on {
        let _ = writeln!(std::io::stderr().lock(), "\nSKIPPED: {suite} backend suite ({var} is not set)");
    }
    on
}

/// Runs one statement with Debian's `mariadb` client; its output.
fn sql(db: &MariaDb, statement: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .args(["--protocol=tcp", "-h", "127.0.0.1", "-u", "root", "--batch", "--skip-column-names"])
        .arg(format!("--port={}", db.port()))
        .args(["-e", statement])
        .output()
        .map_err(|e| format!("running the mariadb client: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn a_killed_mariadbd_starts_again_on_its_port_with_its_committed_rows() {
    if !enabled("harness mariadbd", "FLASHBACK_TEST_MYSQL_URL") {
        return;
    }
    let mut db = MariaDb::start();
    let port = db.port();
    sql(
        &db,
        "CREATE DATABASE probe; CREATE TABLE probe.t (n INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO probe.t VALUES (7)",
    )
    .expect("write a row");
    db.kill();
    assert!(sql(&db, "SELECT 1").is_err(), "a killed server must not answer");
    db.restart();
    assert_eq!(db.port(), port);
    assert_eq!(sql(&db, "SELECT n FROM probe.t").expect("read the row back"), "7");
}

#[test]
fn a_killed_rabbitmq_node_starts_again_with_its_definitions_and_leaves_the_machines_node_alone() {
    if !enabled("harness RabbitMQ", "FLASHBACK_TEST_AMQP_URL") {
        return;
    }
    let mut node = RabbitMq::start();
    assert!(node.node().starts_with("flashback_harness_") && node.node().ends_with("@localhost"), "{}", node.node());
    assert_ne!(node.port(), 5672, "never the machine's broker port");
    node.ctl(&["add_vhost", "drill-probe"]).expect("add a vhost");
    node.kill();
    assert!(node.ctl(&["-q", "list_vhosts"]).is_err(), "a killed node must not answer");
    node.restart();
    let vhosts = node.ctl(&["-q", "list_vhosts"]).expect("list vhosts");
    assert!(vhosts.lines().any(|l| l.trim() == "drill-probe"), "the definition survived the kill: {vhosts}");
    assert!(node.queues().is_ok(), "queues can be listed");
    assert!(std::net::TcpStream::connect(("127.0.0.1", node.port())).is_ok(), "AMQP listens on the same port");
}
