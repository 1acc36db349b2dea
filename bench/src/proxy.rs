//! The bench's TCP proxy: it counts the round trips of whatever runs
//! through it, and can add a fixed delay each way, as a network between an
//! application and its database would.
//!
//! A round trip is a wait of the client for the server: the proxy counts
//! one each time the server's bytes arrive after the client sent something
//! since the server's last bytes. However the client's request is cut into
//! writes and the server's answer into reads, a sequential client gets the
//! same count on every machine and every run: the server answers only
//! after it has read the request, so the request is always seen first; and
//! the client sends its next request only after it has read the answer to
//! the last, which the proxy has read in full before forwarding its end.
//! So several statements sent in one flush (a pipelined burst, several
//! Syncs in one write) are one round trip, a statement sent but not
//! answered (sqlx's Terminate, a queued Close) is none, and an answer in
//! many packets is one.
//!
//! The delay holds each chunk for the given time after it was read, in
//! both directions, keeping the order: a round trip costs two delays more
//! than on the bare link. Threads sleep until a little before a chunk is
//! due and then yield until it is, so that a quarter of a millisecond is
//! not rounded to the timer's millisecond.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::BoxError;

/// Below this much time left before a chunk is due, the delivering thread
/// stops sleeping (the kernel may oversleep by about this much) and
/// yields until it is.
const SPIN: Duration = Duration::from_micros(120);

/// Where the proxy forwards its connections.
#[derive(Clone, Debug)]
pub(crate) enum Upstream {
    Tcp(String, u16),
    Unix(PathBuf),
}

impl Upstream {
    /// The server that `url` names, over TCP or its unix socket.
    pub(crate) fn of(url: &str) -> Result<Upstream, BoxError> {
        let options = PgConnectOptions::from_str(url)?;
        let port = options.get_port();
        Ok(match options.get_socket() {
            Some(dir) => Upstream::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            None if options.get_host().starts_with('/') => {
                Upstream::Unix(PathBuf::from(options.get_host()).join(format!(".s.PGSQL.{port}")))
            }
            None => Upstream::Tcp(options.get_host().to_owned(), port),
        })
    }

    fn connect(&self) -> io::Result<Box<dyn Socket>> {
        Ok(match self {
            Upstream::Tcp(host, port) => {
                let stream = TcpStream::connect((host.as_str(), *port))?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            Upstream::Unix(path) => Box::new(UnixStream::connect(path)?),
        })
    }
}

/// Either end of a forwarded connection.
trait Socket: Read + Write + Send {
    fn duplicate(&self) -> io::Result<Box<dyn Socket>>;
    fn close_write(&self);
}

impl Socket for TcpStream {
    fn duplicate(&self) -> io::Result<Box<dyn Socket>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Socket for UnixStream {
    fn duplicate(&self) -> io::Result<Box<dyn Socket>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// What all the connections through one proxy share.
struct Shared {
    delay: Duration,
    round_trips: AtomicU64,
}

/// A proxy on a loopback port, forwarding every connection it accepts to
/// its upstream, for as long as the bench runs.
pub(crate) struct Proxy {
    port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Starts a proxy to `upstream` that holds each chunk for `delay`
    /// (`Duration::ZERO`: forwards at once) in each direction.
    pub(crate) fn start(upstream: Upstream, delay: Duration) -> Result<Proxy, BoxError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            delay,
            round_trips: AtomicU64::new(0),
        });
        let accepted = Arc::clone(&shared);
        thread::Builder::new()
            .name("bench-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { break };
                    // A connection that can't be forwarded is closed: the
                    // client sees its connect fail.
                    let _ = serve(client, &upstream, &accepted);
                }
            })?;
        Ok(Proxy { port, shared })
    }

    /// How to connect through the proxy, as `options` would connect
    /// directly (without TLS: the proxy forwards bytes, and TLS would make
    /// them no different, but the handshake is a connect-time round trip
    /// that only the proxied connections would pay). A server reached over
    /// its unix socket is connected to as the same user, to the same
    /// database (sqlx can't unset a socket path, so the options are new).
    pub(crate) fn connect_options(
        &self,
        options: &PgConnectOptions,
    ) -> Result<PgConnectOptions, BoxError> {
        let options = match options.get_socket() {
            Some(_) => {
                let fresh = PgConnectOptions::new_without_pgpass()
                    .username(options.get_username())
                    .application_name(options.get_application_name().unwrap_or("pglock-bench"));
                match options.get_database() {
                    Some(database) => fresh.database(database),
                    None => fresh,
                }
            }
            None => options.clone(),
        };
        Ok(options
            .host("127.0.0.1")
            .port(self.port)
            .ssl_mode(PgSslMode::Disable))
    }

    /// The round trips of every connection through the proxy so far.
    pub(crate) fn round_trips(&self) -> u64 {
        self.shared.round_trips.load(Ordering::SeqCst)
    }

    /// The one-way delay it adds.
    pub(crate) fn delay(&self) -> Duration {
        self.shared.delay
    }
}

/// Forwards one accepted connection, on threads of its own.
fn serve(client: TcpStream, upstream: &Upstream, shared: &Arc<Shared>) -> io::Result<()> {
    client.set_nodelay(true)?;
    {
        let server = upstream.connect()?;
        // Whether the client sent something the server has not answered yet.
        let pending = Arc::new(AtomicBool::new(false));
        let (client_in, server_in) = (client.duplicate()?, server.duplicate()?);
        let (requests, answers) = (Arc::clone(&pending), pending);
        let (to_server, to_client) = (Arc::clone(shared), Arc::clone(shared));
        thread::Builder::new()
            .name("bench-proxy-requests".into())
            .spawn(move || {
                forward(client_in, server, to_server.delay, || {
                    requests.store(true, Ordering::SeqCst);
                });
            })?;
        let counted = Arc::clone(shared);
        thread::Builder::new()
            .name("bench-proxy-answers".into())
            .spawn(move || {
                forward(server_in, Box::new(client), to_client.delay, || {
                    if answers.swap(false, Ordering::SeqCst) {
                        counted.round_trips.fetch_add(1, Ordering::SeqCst);
                    }
                });
            })?;
    }
    Ok(())
}

/// Copies `from` to `to`, calling `seen` for each chunk read before it is
/// forwarded, `delay` after it was read; at the end of `from`, ends `to`'s
/// writing side.
fn forward(
    mut from: Box<dyn Socket>,
    mut to: Box<dyn Socket>,
    delay: Duration,
    mut seen: impl FnMut(),
) {
    let mut buffer = vec![0u8; 64 * 1024];
    if delay.is_zero() {
        while let Ok(n @ 1..) = from.read(&mut buffer) {
            seen();
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        to.close_write();
        return;
    }
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    let delivery = thread::Builder::new()
        .name("bench-proxy-delay".into())
        .spawn(move || {
            for (read_at, chunk) in due {
                wait_until(read_at + delay);
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            to.close_write();
        });
    if delivery.is_err() {
        return;
    }
    while let Ok(n @ 1..) = from.read(&mut buffer) {
        let read_at = Instant::now();
        seen();
        if chunks.send((read_at, buffer[..n].to_vec())).is_err() {
            break;
        }
    }
}

/// Sleeps until shortly before `deadline`, then yields until it.
fn wait_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN {
            thread::sleep(left - SPIN);
        } else {
            thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers each `!` it reads with `ok` in two writes,
    /// and ignores every other byte.
    fn answering_server() -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("port").port();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { break };
                thread::spawn(move || {
                    let mut byte = [0u8; 1];
                    while let Ok(1) = conn.read(&mut byte) {
                        if byte[0] == b'!' {
                            let _ = conn.write_all(b"o").and_then(|()| conn.write_all(b"k"));
                        }
                    }
                });
            }
        });
        Upstream::Tcp("127.0.0.1".to_owned(), port)
    }

    fn client(proxy: &Proxy) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// Sends `writes` one after the other, then reads `answers` answers.
    fn exchange(stream: &mut TcpStream, writes: &[&[u8]], answers: usize) {
        for write in writes {
            stream.write_all(write).expect("write");
        }
        let mut answer = vec![0u8; 2 * answers];
        stream.read_exact(&mut answer).expect("read");
        assert_eq!(answer, b"ok".repeat(answers));
    }

    #[test]
    fn a_request_in_pieces_answered_in_pieces_is_one_round_trip() {
        let proxy = Proxy::start(answering_server(), Duration::ZERO).expect("proxy");
        let mut stream = client(&proxy);
        for done in 1..=20 {
            exchange(&mut stream, &[b"SEL", b"ECT", b" 1!"], 1);
            assert_eq!(proxy.round_trips(), done);
        }
    }

    #[test]
    fn a_pipelined_burst_is_one_round_trip_and_an_unanswered_write_none() {
        let proxy = Proxy::start(answering_server(), Duration::ZERO).expect("proxy");
        let mut stream = client(&proxy);
        // Three requests in one write, three answers: the client waited once.
        exchange(&mut stream, &[b"a!b!c!"], 3);
        assert_eq!(proxy.round_trips(), 1);
        // Bytes the server does not answer, then a request it answers: the
        // client waited once more.
        exchange(&mut stream, &[b"close", b"query!"], 1);
        assert_eq!(proxy.round_trips(), 2);
        // Two connections' round trips add up.
        let mut other = client(&proxy);
        exchange(&mut other, &[b"!"], 1);
        exchange(&mut stream, &[b"!"], 1);
        assert_eq!(proxy.round_trips(), 4);
    }

    #[test]
    fn a_delayed_round_trip_takes_at_least_both_delays() {
        let delay = Duration::from_micros(1_500);
        let proxy = Proxy::start(answering_server(), delay).expect("proxy");
        assert_eq!(proxy.delay(), delay);
        let mut stream = client(&proxy);
        for done in 1..=5 {
            let started = Instant::now();
            exchange(&mut stream, &[b"x", b"!"], 1);
            assert!(started.elapsed() >= 2 * delay, "{:?}", started.elapsed());
            assert_eq!(proxy.round_trips(), done);
        }
    }
}
