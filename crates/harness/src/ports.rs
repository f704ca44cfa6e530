//! Free loopback ports.

use std::net::TcpListener;

/// A loopback port nothing listens on right now (the kernel's pick). Another process may take
/// it before the service binds it; starters retry on "Address already in use".
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}
