//! Begin + lock + commit at a network delay (`--only begin`): a
//! transaction begun already holding its lock
//! (`NS.lock(&k).timeout(5s).begin(&pool)`: the lock statement and `BEGIN`
//! in one round trip) against the bare `pool.begin()` +
//! `SELECT pg_advisory_xact_lock($1)` + `commit()`.
//!
//! Each variant runs on a pool of its own (two connections, so that the
//! check sqlx makes of a connection it takes back runs while the other one
//! works), through a proxy of its own that holds every chunk for a fixed
//! delay each way and counts the server's ReadyForQuery messages: one per
//! round trip. The pools come in two kinds: with sqlx's default check of a
//! connection before it is handed out (`test_before_acquire`, a round trip
//! of its own, paid by both variants alike), and without it. The variants of
//! one delay and one kind take turns, in a rotated order, round after round;
//! a ratio is the median of the per-round ratios with its spread. Prints its
//! own JSON lines.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use pglock::{Namespace, bare_sql};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

use crate::ops::{TIMEOUT, bigint};
use crate::stats::{median, paired_ratio_spread, spread_pct};
use crate::{BoxError, Options, rotated};

static BEGIN: Namespace = Namespace::named("pglock-bench:begin");

/// The bar for the one-message begin over the bare pattern, at
/// 1 ms each way.
const TARGET: f64 = 1.4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// `pool.begin()`, the bare lock statement, `commit()`.
    Bare,
    /// `BEGIN.lock(&k).timeout(5s).begin(&pool)`, `commit()`.
    Begin,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::Begin => "begin",
        }
    }
}

struct Lane {
    variant: Variant,
    checked: bool,
    pool: PgPool,
    proxy: Proxy,
    key: i64,
    rates: Vec<f64>,
    ops: u64,
}

impl Lane {
    /// One begin + lock + commit.
    async fn once(&self) -> Result<(), BoxError> {
        match self.variant {
            Variant::Bare => {
                let mut tx = self.pool.begin().await?;
                sqlx::query(bare_sql::XACT_LOCK)
                    .bind(bigint(&BEGIN, self.key))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Variant::Begin => {
                let tx = BEGIN
                    .lock(&self.key)
                    .timeout(TIMEOUT)
                    .begin(&self.pool)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Runs for `turn`; returns the operations done and the time they took.
    async fn run_for(&mut self, turn: Duration) -> Result<(u64, Duration), BoxError> {
        let started = Instant::now();
        let mut done = 0;
        while started.elapsed() < turn {
            self.once().await?;
            done += 1;
        }
        Ok((done, started.elapsed()))
    }
}

/// Runs the group over the transport at `url`; returns its JSON lines.
pub(crate) async fn run(
    url: &str,
    transport: &str,
    options: &Options,
) -> Result<Vec<String>, BoxError> {
    let connect = PgConnectOptions::from_str(url)?;
    let delays: &[Duration] = if options.quick {
        &[Duration::from_millis(1)]
    } else {
        &[Duration::ZERO, Duration::from_millis(1)]
    };
    let turn = if options.quick {
        Duration::from_millis(60)
    } else {
        Duration::from_millis(250)
    };
    let mut lines = Vec::new();
    for &delay in delays {
        for checked in [false, true] {
            let mut lanes = Vec::new();
            for (index, variant) in [Variant::Bare, Variant::Begin].into_iter().enumerate() {
                let proxy = Proxy::start(&connect, delay)?;
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .min_connections(2)
                    .test_before_acquire(checked)
                    .connect_with(proxy.client_options(&connect))
                    .await?;
                let mut lane = Lane {
                    variant,
                    checked,
                    pool,
                    proxy,
                    key: index as i64,
                    rates: Vec::new(),
                    ops: 0,
                };
                lane.run_for(turn / 2).await?;
                lanes.push(lane);
            }
            let trips_before: Vec<u64> = lanes.iter().map(|lane| lane.proxy.ready()).collect();
            let order: Vec<usize> = (0..lanes.len()).collect();
            for round in 0..options.rounds {
                for index in rotated(&order, round) {
                    let (done, took) = lanes[index].run_for(turn).await?;
                    lanes[index].ops += done;
                    lanes[index].rates.push(done as f64 / took.as_secs_f64());
                }
            }
            for (lane, before) in lanes.iter().zip(trips_before) {
                let trips = (lane.proxy.ready() - before) as f64 / lane.ops as f64;
                lines.push(lane_line(lane, delay, trips, transport));
            }
            lines.push(ratio_line(&lanes[1], &lanes[0], delay, transport));
            for lane in lanes {
                lane.pool.close().await;
            }
        }
    }
    Ok(lines)
}

fn lane_line(lane: &Lane, delay: Duration, trips: f64, transport: &str) -> String {
    let (low, high) = spread_pct(&lane.rates);
    format!(
        "{{\"variant\": \"begin_lock_commit_{}_{}_d{}us@{transport}\", \"tx_per_s\": {:.1}, \"spread_pct\": [{low:.1}, {high:.1}], \"round_trips\": {trips:.2}, \"delay_us_each_way\": {}, \"test_before_acquire\": {}, \"transport\": \"{transport}\"}}",
        lane.variant.name(),
        checked_name(lane.checked),
        delay.as_micros(),
        median(&lane.rates),
        delay.as_micros(),
        lane.checked,
    )
}

fn ratio_line(begin: &Lane, bare: &Lane, delay: Duration, transport: &str) -> String {
    let ratio = paired_ratio_spread(&begin.rates, &bare.rates);
    format!(
        "{{\"variant\": \"begin_vs_bare_{}_d{}us@{transport}\", \"ratio\": {:.3}, \"ratio_spread\": [{:.3}, {:.3}], \"target\": {TARGET}, \"verdict\": \"{}\", \"rounds\": {}, \"transport\": \"{transport}\"}}",
        checked_name(begin.checked),
        delay.as_micros(),
        ratio.median,
        ratio.low,
        ratio.high,
        ratio.verdict(TARGET).name(),
        begin.rates.len(),
    )
}

fn checked_name(checked: bool) -> &'static str {
    if checked { "checked" } else { "unchecked" }
}

/// A proxy on a loopback port to the server of `connect`, for as long as
/// the bench runs: every chunk, each way, is forwarded `delay` after it
/// arrived, and the server's ReadyForQuery messages are counted.
struct Proxy {
    port: u16,
    ready: Arc<AtomicU64>,
}

/// Where the server listens.
#[derive(Clone)]
enum Upstream {
    Tcp(String, u16),
    Unix(std::path::PathBuf),
}

/// Either kind of stream, as the forwarding threads use it.
trait Pipe: Read + Write + Send {
    fn split(&self) -> std::io::Result<Box<dyn Pipe>>;
    fn end_writes(&self);
}

impl Pipe for TcpStream {
    fn split(&self) -> std::io::Result<Box<dyn Pipe>> {
        Ok(Box::new(self.try_clone()?))
    }

    fn end_writes(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Pipe for UnixStream {
    fn split(&self) -> std::io::Result<Box<dyn Pipe>> {
        Ok(Box::new(self.try_clone()?))
    }

    fn end_writes(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Proxy {
    fn start(connect: &PgConnectOptions, delay: Duration) -> Result<Proxy, BoxError> {
        let (host, port) = (connect.get_host().to_owned(), connect.get_port());
        let upstream = match connect.get_socket() {
            Some(dir) => Upstream::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            None if host.starts_with('/') => {
                Upstream::Unix(format!("{host}/.s.PGSQL.{port}").into())
            }
            None => Upstream::Tcp(host, port),
        };
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let ready = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&ready);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let counted = Arc::clone(&counted);
                let upstream = upstream.clone();
                thread::spawn(move || {
                    if let Err(error) = link(client, &upstream, delay, counted) {
                        eprintln!("pglock-bench: begin proxy: {error}");
                    }
                });
            }
        });
        Ok(Proxy { port, ready })
    }

    /// `connect`'s options, through the proxy: over TCP, without TLS (the
    /// proxy reads the server's messages). A server reached over its unix
    /// socket is connected to as the same user, to the same database.
    fn client_options(&self, connect: &PgConnectOptions) -> PgConnectOptions {
        let options = match connect.get_socket() {
            Some(_) => {
                let options =
                    PgConnectOptions::new_without_pgpass().username(connect.get_username());
                match connect.get_database() {
                    Some(database) => options.database(database),
                    None => options,
                }
            }
            None => connect.clone(),
        };
        options
            .host("127.0.0.1")
            .port(self.port)
            .ssl_mode(PgSslMode::Disable)
    }

    fn ready(&self) -> u64 {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Forwards one client connection both ways, through a delay line each way.
fn link(
    client: TcpStream,
    upstream: &Upstream,
    delay: Duration,
    ready: Arc<AtomicU64>,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let server: Box<dyn Pipe> = match upstream {
        Upstream::Tcp(host, port) => {
            let server = TcpStream::connect((host.as_str(), *port))?;
            server.set_nodelay(true)?;
            Box::new(server)
        }
        Upstream::Unix(path) => Box::new(UnixStream::connect(path)?),
    };
    let client: Box<dyn Pipe> = Box::new(client);
    let (client_in, server_out) = (client.split()?, server.split()?);
    thread::spawn(move || delay_line(client_in, server_out, delay, None));
    delay_line(server, client, delay, Some(&ready));
    Ok(())
}

/// Copies `from` to `to`, each chunk `delay` after it was read, counting
/// ReadyForQuery messages into `ready` when given.
fn delay_line(
    mut from: Box<dyn Pipe>,
    mut to: Box<dyn Pipe>,
    delay: Duration,
    ready: Option<&AtomicU64>,
) {
    let (sender, receiver) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = thread::spawn(move || {
        for (due, chunk) in receiver {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        to.end_writes();
    });
    let mut messages = Messages::default();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(ready) = ready {
            ready.fetch_add(messages.ready_for_query_in(&buffer[..n]), Ordering::Relaxed);
        }
        if sender
            .send((Instant::now() + delay, buffer[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(sender);
    let _ = writer.join();
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
    fn ready_for_query_in(&mut self, mut chunk: &[u8]) -> u64 {
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
                ready += u64::from(kind == b'Z');
                self.skip = (u32::from_be_bytes([a, b, c, d]) as usize).saturating_sub(4);
                self.header.clear();
            }
        }
        ready
    }
}
