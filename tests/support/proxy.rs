//! A TCP proxy in front of a server on this machine, for tests of what a
//! network does to a connection: it can hold the server's answers back (a
//! slow link), or stop forwarding in both directions while keeping both
//! sides open (a black hole: a peer gone silent without closing anything,
//! as behind a dropped route or a frozen host). It also counts the server's
//! ReadyForQuery messages: one per round trip (each Sync, each simple
//! query).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// What every connection through one proxy obeys and reports.
#[derive(Default)]
struct Link {
    answer_delay_ms: AtomicU64,
    black_hole: AtomicBool,
    ready_for_query: AtomicUsize,
}

/// A proxy on a loopback port that forwards every connection it accepts to
/// `127.0.0.1:upstream_port`, for as long as the test process runs.
pub struct Proxy {
    port: u16,
    link: Arc<Link>,
}

impl Proxy {
    /// A proxy to the server listening on `127.0.0.1:upstream_port`.
    pub fn to(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's port").port();
        let link = Arc::new(Link::default());
        let accepted = Arc::clone(&link);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let server =
                    TcpStream::connect(("127.0.0.1", upstream_port)).expect("connect upstream");
                client.set_nodelay(true).expect("TCP_NODELAY");
                server.set_nodelay(true).expect("TCP_NODELAY");
                let (client_in, server_out) = (
                    client.try_clone().expect("clone the client socket"),
                    server.try_clone().expect("clone the server socket"),
                );
                let requests = Arc::clone(&accepted);
                thread::spawn(move || forward(client_in, server_out, &requests, None));
                let answers = Arc::clone(&accepted);
                thread::spawn(move || {
                    forward(server, client, &answers, Some(&mut Messages::default()));
                });
            }
        });
        Proxy { port, link }
    }

    /// The URL of the server through the proxy (as the kit's superuser,
    /// without TLS, so that the proxy can read the messages).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Holds each chunk of the server's answers back for `delay` from now
    /// on; `Duration::ZERO` forwards them at once again.
    pub fn delay_answers(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.link.answer_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Stops forwarding in both directions, closing neither side: whatever
    /// is sent from now on is held, unread past the first chunk, until
    /// [`heal`](Self::heal).
    pub fn black_hole(&self) {
        self.link.black_hole.store(true, Ordering::SeqCst);
    }

    /// Forwards again, held bytes first.
    pub fn heal(&self) {
        self.link.black_hole.store(false, Ordering::SeqCst);
    }

    /// The ReadyForQuery messages the server has sent through the proxy.
    pub fn round_trips(&self) -> usize {
        self.link.ready_for_query.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` chunk by chunk as `link` says, counting the
/// ReadyForQuery messages in the stream when given its `messages` parser;
/// at the end of `from`, ends `to`'s writing side.
fn forward(
    mut from: TcpStream,
    mut to: TcpStream,
    link: &Link,
    mut messages: Option<&mut Messages>,
) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while link.black_hole.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
        }
        if let Some(messages) = messages.as_deref_mut() {
            let ready = messages.ready_for_query_in(&buffer[..n]);
            link.ready_for_query.fetch_add(ready, Ordering::SeqCst);
            let ms = link.answer_delay_ms.load(Ordering::SeqCst);
            if ms > 0 {
                thread::sleep(Duration::from_millis(ms));
            }
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Where a stream of server messages is between chunks: every message is a
/// type byte and a big-endian length that counts itself.
#[derive(Default)]
struct Messages {
    header: Vec<u8>,
    skip: usize,
}

impl Messages {
    /// The ReadyForQuery (`Z`) messages that begin in `chunk`.
    fn ready_for_query_in(&mut self, mut chunk: &[u8]) -> usize {
        let mut ready = 0;
        while !chunk.is_empty() {
            if self.skip > 0 {
                let step = self.skip.min(chunk.len());
                self.skip -= step;
                chunk = &chunk[step..];
                continue;
            }
            let step = (5 - self.header.len()).min(chunk.len());
            self.header.extend_from_slice(&chunk[..step]);
            chunk = &chunk[step..];
            if let [kind, a, b, c, d] = self.header[..] {
                if kind == b'Z' {
                    ready += 1;
                }
                self.skip = (u32::from_be_bytes([a, b, c, d]) as usize).saturating_sub(4);
                self.header.clear();
            }
        }
        ready
    }
}
