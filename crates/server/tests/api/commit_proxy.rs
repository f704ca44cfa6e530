//! A loopback TCP proxy between the server's store pool and MariaDB that stands in for the
//! network: it relays the MySQL protocol unchanged, except that it can lose the next `COMMIT`
//! of a transaction that carried given bytes (a sale id in a bound parameter): before the
//! server gets it, after (the server commits; its answer is lost), or held (the client's side
//! is closed, the server's kept open until the test sends the `COMMIT` late or drops it).
//!
//! MySQL packets: a 3-byte little-endian payload length, a sequence byte, the payload; a text
//! query is command byte 0x03 followed by the SQL. sqlx sends `BEGIN`, `COMMIT` and `ROLLBACK`
//! as text queries. The URL it hands out disables TLS, so the relay can read the packets.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// What becomes of the chosen `COMMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Lost with the connection before the server gets it: the server rolls back.
    Before,
    /// Delivered; the server's answer is lost with the connection.
    After,
    /// The client's connection closes at once; the server's stays open, its transaction (and
    /// locks) with it, until [`CommitProxy::release`].
    Hold,
}

#[derive(Default)]
struct Shared {
    armed: Mutex<Option<(Vec<u8>, Cut)>>,
    cuts: AtomicUsize,
    held: Mutex<Option<oneshot::Sender<bool>>>,
}

/// A running proxy; it stops accepting when dropped.
pub struct CommitProxy {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl CommitProxy {
    /// A proxy to the server `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (shared, upstream) = (Arc::clone(&shared), upstream.clone());
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(&upstream).await {
                            relay(client, server, &shared).await;
                        }
                    });
                }
            }
        });
        Self { addr, shared, accept }
    }

    /// `url` (`mysql://user@host:port/db`) through this proxy, without TLS.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = authority.rsplit_once('@').map_or(String::new(), |(u, _)| format!("{u}@"));
        format!("{scheme}://{user}{}/{path}?ssl-mode=disabled", self.addr)
    }

    /// Loses the next `COMMIT` of a transaction in which the client sent `needle`, as `cut` says.
    pub fn cut_next_commit(&self, needle: &[u8], cut: Cut) {
        *self.shared.armed.lock().unwrap() = Some((needle.to_vec(), cut));
    }

    /// How many commits were lost so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Ends a held `COMMIT`: delivered late to the server (`true`) or dropped with the
    /// server's connection, which rolls the transaction back (`false`).
    pub fn release(&self, deliver: bool) {
        let held = self.shared.held.lock().unwrap().take().expect("a held commit");
        held.send(deliver).expect("the relay waits");
    }
}

impl Drop for CommitProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// `authority` (`host:port`) of a `mysql://` URL.
pub fn authority(url: &str) -> String {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    authority.rsplit_once('@').map_or(authority, |(_, a)| a).to_owned()
}

async fn read_packet(from: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let mut packet = vec![0; 4];
    from.read_exact(&mut packet).await.ok()?;
    let len = usize::from(packet[0]) | usize::from(packet[1]) << 8 | usize::from(packet[2]) << 16;
    packet.resize(4 + len, 0);
    from.read_exact(&mut packet[4..]).await.ok()?;
    Some(packet)
}

fn is_query(payload: &[u8], sql: &str) -> bool {
    payload.first() == Some(&0x03) && payload[1..].eq_ignore_ascii_case(sql.as_bytes())
}

/// Whether to lose this packet, and how; `marked` says whether this connection's transaction
/// carried the needle so far.
fn decide(shared: &Shared, payload: &[u8], marked: &mut bool) -> Option<Cut> {
    let mut armed = shared.armed.lock().unwrap();
    let (needle, cut) = armed.as_ref()?;
    let commit = is_query(payload, "COMMIT");
    if commit && *marked {
        let cut = *cut;
        *armed = None;
        shared.cuts.fetch_add(1, Ordering::SeqCst);
        return Some(cut);
    }
    if commit || is_query(payload, "BEGIN") || is_query(payload, "ROLLBACK") {
        *marked = false;
    } else if payload.windows(needle.len()).any(|w| w == needle.as_slice()) {
        *marked = true;
    }
    None
}

async fn relay(client: TcpStream, server: TcpStream, shared: &Shared) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let answer_lost = AtomicBool::new(false);
    let up = async {
        let mut marked = false;
        loop {
            let packet = read_packet(&mut from_client).await?;
            match decide(shared, &packet[4..], &mut marked) {
                None => {}
                Some(Cut::Before) => return None,
                Some(Cut::After) => answer_lost.store(true, Ordering::SeqCst),
                Some(Cut::Hold) => return Some(packet),
            }
            to_server.write_all(&packet).await.ok()?;
        }
    };
    let down = async {
        let mut buf = vec![0; 64 * 1024];
        // The client waits for each answer before it sends more: once the commit is sent, what
        // the server sends is its answer.
        while let Ok(n @ 1..) = from_server.read(&mut buf).await {
            if answer_lost.load(Ordering::SeqCst) || to_client.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let held = tokio::select! {
        held = up => held,
        () = down => None,
    };
    // Returning drops both connections; a held commit keeps the server's open a while longer.
    let Some(commit) = held else { return };
    let (deliver, delivered) = oneshot::channel();
    *shared.held.lock().unwrap() = Some(deliver);
    drop((from_client, to_client));
    if delivered.await == Ok(true) {
        let _ = to_server.write_all(&commit).await;
        let _ = from_server.read(&mut [0; 1024]).await;
    }
}
