//! Helpers for tests against the real broker (this crate's and the server's).

/// Has the broker close every connection whose name carries `prefix` (the bus names its
/// connection `flashback <exchange prefix>`), as a broker restart or a cut network would.
/// Uses `rabbitmqctl`, the broker's own tool, on the machine running the broker; panics if it
/// cannot, or if no such connection is open.
pub fn drop_connections_at_broker(prefix: &str) {
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "--no-table-headers", "-q"])
        .output()
        .expect("rabbitmqctl (the broker's own tool) runs beside the broker");
    let text = String::from_utf8_lossy(&listed.stdout);
    let name = format!("flashback {prefix}");
    let pids: Vec<&str> =
        text.lines().filter(|l| l.contains(&name)).filter_map(|l| l.split_whitespace().next()).collect();
    assert!(!pids.is_empty(), "no connection named {name:?} in:\n{text}");
    for pid in pids {
        let closed = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test: the broker drops the connection"])
            .output()
            .expect("rabbitmqctl runs");
        assert!(closed.status.success(), "closing {pid}: {}", String::from_utf8_lossy(&closed.stderr));
    }
}
