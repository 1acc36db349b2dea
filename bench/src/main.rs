//! pglock-bench: what a pglock advisory lock costs per critical section,
//! side by side with the bare SQL and the alternatives, on one server.
//!
//! ```text
//! cargo run --release -p pglock-bench -- --quick    # under a minute
//! cargo run --release -p pglock-bench               # the full run of docs/PERFORMANCE.md
//! ```
//!
//! Every variant runs on its own connections, made with the same options,
//! against the same server. Variants that are compared with each other, and
//! whose operations take about as long, form a group (per transport: the
//! single-lock variants with the baseline; the statement-shaped capped wait
//! and hand-written; each many-keys size; each task count of the hand-off). A
//! group's variants take turns in short slices (2 ms; hand-offs 50 ms), in
//! a rotated order, until the group's time of the round is used up. A
//! variant's figure is the median over rounds of its operations per second
//! in the round; a ratio is the median of the per-round ratios, with its
//! spread (the range that holds the median with about 95 % confidence), and
//! a target whose spread crosses its bar is undecided. So the two sides of a
//! ratio run milliseconds apart and share the machine's state: on a busy
//! machine, a burst of someone else's work slows both alike.
//!
//! Every variant's round trips per operation are counted through a proxy
//! of the bench's own (`round_trips`), and the main variants run again
//! through it at 0, 0.25 and 1 ms of delay each way (`delayed`).
//!
//! It also writes SVG charts of the hand-off, of the many-keys variants and
//! of throughput against delay (`--charts DIR`), the ones
//! `docs/PERFORMANCE.md` shows.
//!
//! `--only begin` (and the full run) measures begin + lock + commit through a
//! proxy that delays every chunk (see `begin.rs`).
//!
//! The server is `DATABASE_URL` when set, else pglock's throwaway test
//! server, measured over its unix socket and over TCP loopback.

mod alloc;
mod allocations;
mod begin;
mod charts;
mod checks;
mod delayed;
mod manager;
mod ops;
mod proxy;
mod report;
mod round_trips;
mod semaphore;
mod stats;
mod subject;

use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use pglock::testing::{self, TestServer};
use pglock::{Namespace, SessionTry};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::ops::{HANDOFF_TASKS, Op};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Held (a session lock) for the whole run: two benches on one server
/// would measure each other, and their many-keys variants, which take keys
/// in different orders on purpose, would deadlock each other.
static ONE_RUN_AT_A_TIME: Namespace = Namespace::named("pglock-bench:run");

/// A hand-off's slice: long enough to get all its tasks going.
const HANDOFF_SLICE: Duration = Duration::from_millis(50);

/// The least each variant runs before it is measured.
const WARM_UP: Duration = Duration::from_millis(20);

const USAGE: &str = "\
usage: pglock-bench [--quick] [--rounds N] [--group-ms N] [--slice-ms N]
                    [--transport unix|tcp|both] [--only TEXT] [--charts DIR]

  --quick           3 rounds of 150 ms per group: under a minute
  --rounds N        rounds, each giving one sample per variant (full run: 15)
  --group-ms N      time of each group of compared variants per round (full run: 400)
  --slice-ms N      one turn of a single-connection variant (2; hand-offs: 50)
  --transport T     unix socket, TCP loopback, or both (default; without
                    DATABASE_URL only: DATABASE_URL is measured as given)
  --only TEXT       only one group of compared variants: single, statements,
                    handoff_tN, many_keys_N, or all of handoff or many_keys;
                    or the variants whose name contains TEXT (with the
                    baseline); `--only manager` runs the lock manager's group,
                    `--only delayed` the groups through the delaying proxy,
                    `--only begin` begin + lock + commit at a network delay,
                    `--only semaphore` the semaphores' group
  --charts DIR      where to write the SVG charts (default target/pglock-bench)

The server is DATABASE_URL when set, else pglock's throwaway test server.
Prints a table, then one JSON line per variant and transport.
Fails if a main variant's round trips per operation changed.
Exits with 2 if an acquisition allocates more after warm-up than before.";

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) rounds: usize,
    pub(crate) group_time: Duration,
    pub(crate) slice: Duration,
    transport: Choice,
    pub(crate) only: Option<String>,
    charts: std::path::PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    Unix,
    Tcp,
    Both,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut options = Options {
            quick: false,
            rounds: 15,
            group_time: Duration::from_millis(400),
            slice: Duration::from_millis(2),
            transport: Choice::Both,
            only: None,
            charts: std::path::PathBuf::from("target/pglock-bench"),
        };
        let (mut rounds, mut group_ms, mut slice_ms) = (None, None, None);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--rounds" => rounds = Some(number(&value("--rounds")?, "--rounds")?),
                "--group-ms" => group_ms = Some(number(&value("--group-ms")?, "--group-ms")?),
                "--slice-ms" => slice_ms = Some(number(&value("--slice-ms")?, "--slice-ms")?),
                "--transport" => {
                    options.transport = match value("--transport")?.as_str() {
                        "unix" => Choice::Unix,
                        "tcp" => Choice::Tcp,
                        "both" => Choice::Both,
                        other => return Err(format!("unknown transport {other:?}")),
                    }
                }
                "--only" => options.only = Some(value("--only")?),
                "--charts" => options.charts = value("--charts")?.into(),
                "-h" | "--help" => return Err(String::new()),
                // `cargo bench` passes this; nothing to do.
                "--bench" => {}
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if options.quick {
            options.rounds = 3;
            options.group_time = Duration::from_millis(150);
        }
        options.rounds = rounds.unwrap_or(options.rounds).max(1);
        if let Some(ms) = group_ms {
            options.group_time = Duration::from_millis(ms.max(1) as u64);
        }
        if let Some(ms) = slice_ms {
            options.slice = Duration::from_millis(ms.max(1) as u64);
        }
        Ok(options)
    }

    /// The allocation measurement's size.
    fn plan(&self) -> allocations::Plan {
        allocations::Plan {
            warmup: if self.quick { 50 } else { 200 },
            windows: 5,
            per_window: if self.quick { 100 } else { 500 },
        }
    }

    fn slice_of(&self, group: Group) -> Duration {
        match group {
            Group::Handoff(_) => HANDOFF_SLICE,
            _ => self.slice,
        }
    }

    /// Whether `op` runs: every variant, or with `--only X` the baseline and
    /// the variants of the group or family of groups named `X`, or whose
    /// name contains `X`.
    fn wanted(&self, op: Op) -> bool {
        let Some(only) = self.only.as_deref() else {
            return true;
        };
        let group = Group::of(op);
        op == Op::Baseline
            || only == group.name()
            || only == group.family()
            || op.to_string().contains(only)
    }
}

fn number(text: &str, name: &str) -> Result<usize, String> {
    text.parse()
        .map_err(|_| format!("{name} takes a whole number, not {text:?}"))
}

/// One way to reach the server.
pub(crate) struct Transport {
    pub(crate) name: &'static str,
    url: String,
    /// The connections the hand-off variants share (they never run at the
    /// same time).
    handoff: Vec<PgConnection>,
}

/// One variant over one transport, and what it measured, round by round.
pub(crate) struct Lane {
    pub(crate) transport: usize,
    pub(crate) op: Op,
    group: Group,
    /// The baseline lane this lane's ratio is taken against: the one that
    /// takes turns with it, in the same slices (for the groups other than
    /// the baseline's own, a lane of its own that the report doesn't show).
    pub(crate) baseline: usize,
    /// Only a baseline for the lanes of its group; not reported.
    pub(crate) reference: bool,
    /// Its own connection (none for hand-offs, see [`Transport::handoff`]).
    own: Option<PgConnection>,
    /// Operations per second, one per round.
    pub(crate) rates: Vec<f64>,
    /// This round's operations and time so far.
    done: u64,
    spent: Duration,
}

/// Which variants take turns together: those compared with each other,
/// whose operations take about as long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Single,
    Statements,
    ManyKeys(usize),
    Handoff(usize),
}

impl Group {
    /// The group's name for `--only`: `single`, `statements`, `many_keys_N`,
    /// `handoff_tN`.
    fn name(self) -> String {
        match self {
            Group::Single => "single".to_owned(),
            Group::Statements => "statements".to_owned(),
            Group::ManyKeys(keys) => format!("many_keys_{keys}"),
            Group::Handoff(tasks) => format!("handoff_t{tasks}"),
        }
    }

    /// The family of groups it belongs to, also a name for `--only`:
    /// `many_keys`, `handoff` (the other groups are their own family).
    fn family(self) -> &'static str {
        match self {
            Group::Single => "single",
            Group::Statements => "statements",
            Group::ManyKeys(_) => "many_keys",
            Group::Handoff(_) => "handoff",
        }
    }

    fn of(op: Op) -> Group {
        match op {
            Op::CappedStatements | Op::HandWrittenStatements => Group::Statements,
            Op::ManyKeys { keys, .. } if keys > 1 => Group::ManyKeys(keys),
            Op::Handoff { tasks, .. } => Group::Handoff(tasks),
            _ => Group::Single,
        }
    }
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("pglock-bench: {message}\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pglock-bench: no tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pglock-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<ExitCode, BoxError> {
    let started = Instant::now();
    let mut transports = transports(&options)?;
    let url = transports[0].url.clone();
    let run_lock = match ONE_RUN_AT_A_TIME
        .session_lock(&0_i64)
        .try_acquire(PgConnection::connect(&url).await?)
        .await?
    {
        SessionTry::Acquired(guard) => guard,
        SessionTry::Busy(_) => {
            return Err("another pglock-bench runs against this server: \
                        two would measure each other; try again when it is done"
                .into());
        }
    };
    let machine = report::Machine::describe(&url).await?;
    let manager_only = options.only.as_deref() == Some("manager");
    let delayed_only = options.only.as_deref() == Some("delayed");
    let begin_only = options.only.as_deref() == Some("begin");
    let semaphore_only = options.only.as_deref() == Some("semaphore");
    let tcp = tcp_url()?;
    checks::learn_capped_sql(&url).await?;
    let counts = round_trips::count(&tcp, &round_trips::all_subjects()).await?;
    print!("{}", round_trips::table(&counts));
    round_trips::check(&counts)?;
    let mut grows = false;
    if !manager_only && !delayed_only && !begin_only && !semaphore_only {
        checks::statements_restore(&url).await?;

        let steady = allocations::steady_state(&url, options.plan()).await?;

        // On a worker thread, like any task of an application: a future that
        // `block_on` polls on the main thread is woken across threads at every
        // round trip, which cost the baseline a quarter of its rate here.
        let (lanes, measured) = tokio::spawn(measure(options.clone(), transports)).await??;
        transports = measured;

        let names: Vec<&str> = transports.iter().map(|t| t.name).collect();
        grows = report::print(
            &options,
            &machine,
            (&names, &lanes, &counts),
            &steady,
            started.elapsed(),
        );
        for chart in charts::write(&options.charts, &names, &lanes)? {
            eprintln!("pglock-bench: chart {}", chart.display());
        }
    }
    if delayed_only || options.only.is_none() {
        let (url, group) = (tcp.clone(), options.clone());
        let groups = tokio::spawn(async move { delayed::run(&url, &group).await }).await??;
        print!("{}", delayed::report(&groups, &counts, &options));
        if let Some(chart) = charts::delays(&options.charts, &groups)? {
            eprintln!("pglock-bench: chart {}", chart.display());
        }
    }
    if manager_only || options.only.is_none() {
        manager::count_round_trips(&tcp).await?;
        for transport in &transports {
            let (url, name, group) = (transport.url.clone(), transport.name, options.clone());
            let lines =
                tokio::spawn(async move { manager::run(&url, name, &group).await }).await??;
            for line in lines {
                println!("{line}");
            }
        }
    }
    if semaphore_only || options.only.is_none() {
        for transport in &transports {
            let (url, name, group) = (transport.url.clone(), transport.name, options.clone());
            let lines =
                tokio::spawn(async move { semaphore::run(&url, name, &group).await }).await??;
            for line in lines {
                println!("{line}");
            }
        }
    }
    if begin_only || options.only.is_none() {
        for transport in &transports {
            let (url, name, group) = (transport.url.clone(), transport.name, options.clone());
            let lines = tokio::spawn(async move { begin::run(&url, name, &group).await }).await??;
            for line in lines {
                println!("{line}");
            }
        }
    }
    run_lock.release().await?.close().await?;
    Ok(if grows {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Connects every lane, warms it up, and runs the rounds.
async fn measure(
    options: Options,
    mut transports: Vec<Transport>,
) -> Result<(Vec<Lane>, Vec<Transport>), BoxError> {
    let mut lanes: Vec<Lane> = Vec::new();
    for (index, transport) in transports.iter_mut().enumerate() {
        let connect = PgConnectOptions::from_str(&transport.url)?;
        let ops: Vec<Op> = Op::all()
            .into_iter()
            .filter(|op| options.wanted(*op))
            .collect();
        for &op in &ops {
            let group = Group::of(op);
            let lane = |op: Op, reference: bool, own: Option<PgConnection>| Lane {
                transport: index,
                op,
                group,
                baseline: usize::MAX,
                reference,
                own,
                rates: Vec::new(),
                done: 0,
                spent: Duration::ZERO,
            };
            let first_of_its_group = !lanes
                .iter()
                .any(|l| l.transport == index && l.group == group);
            if first_of_its_group && group != Group::Single {
                let conn = PgConnection::connect_with(&connect).await?;
                lanes.push(lane(Op::Baseline, true, Some(conn)));
            }
            let own = match op {
                Op::Handoff { .. } => None,
                _ => Some(PgConnection::connect_with(&connect).await?),
            };
            lanes.push(lane(op, false, own));
        }
        let handoff_tasks = HANDOFF_TASKS.into_iter().max().unwrap_or(1);
        for _ in 0..handoff_tasks {
            transport
                .handoff
                .push(PgConnection::connect_with(&connect).await?);
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for index in 0..lanes.len() {
        let key = (lanes[index].transport, lanes[index].group);
        let same =
            |group: &&mut Vec<usize>| (lanes[group[0]].transport, lanes[group[0]].group) == key;
        match groups.iter_mut().find(same) {
            Some(group) => group.push(index),
            None => groups.push(vec![index]),
        }
    }
    for group in &groups {
        let baseline = group
            .iter()
            .copied()
            .find(|&lane| lanes[lane].op == Op::Baseline)
            .expect("every group has its baseline");
        for &lane in group {
            lanes[lane].baseline = baseline;
        }
    }

    // Warm-up: statements prepared, caches and buffers filled.
    for lane in 0..lanes.len() {
        let slice = options.slice_of(lanes[lane].group) * 2;
        run_lane(&mut lanes, &mut transports, lane, slice.max(WARM_UP)).await?;
    }
    for round in 0..options.rounds {
        for group in rotated(&groups, round) {
            let until = Instant::now() + options.group_time;
            let mut turn = round;
            loop {
                for &lane in &rotated(&group, turn) {
                    let slice = options.slice_of(lanes[lane].group);
                    let (done, spent) = run_lane(&mut lanes, &mut transports, lane, slice).await?;
                    lanes[lane].done += done;
                    lanes[lane].spent += spent;
                }
                turn += 1;
                if Instant::now() >= until {
                    break;
                }
            }
        }
        for lane in &mut lanes {
            lane.rates.push(lane.done as f64 / lane.spent.as_secs_f64());
            lane.done = 0;
            lane.spent = Duration::ZERO;
        }
    }

    for lane in &mut lanes {
        if let Some(conn) = lane.own.take() {
            conn.close().await?;
        }
    }
    for transport in &mut transports {
        for conn in transport.handoff.drain(..) {
            conn.close().await?;
        }
    }
    Ok((lanes, transports))
}

/// The servers' URLs: `DATABASE_URL` as given, or the test server over
/// the chosen transports.
fn transports(options: &Options) -> Result<Vec<Transport>, BoxError> {
    let url = testing::database_url()?;
    let transport = |name, url| Transport {
        name,
        url,
        handoff: Vec::new(),
    };
    if std::env::var_os("DATABASE_URL").is_some_and(|value| !value.is_empty()) {
        return Ok(vec![transport("database_url", url)]);
    }
    let server = TestServer::shared()?;
    Ok(match options.transport {
        Choice::Unix => vec![transport("unix", server.url())],
        Choice::Tcp => vec![transport("tcp", server.tcp_url())],
        Choice::Both => vec![
            transport("unix", server.url()),
            transport("tcp", server.tcp_url()),
        ],
    })
}

/// The server over TCP, for the proxy: `DATABASE_URL` as given, or the
/// test server's TCP address.
fn tcp_url() -> Result<String, BoxError> {
    if std::env::var_os("DATABASE_URL").is_some_and(|value| !value.is_empty()) {
        return Ok(testing::database_url()?);
    }
    Ok(TestServer::shared()?.tcp_url())
}

/// `items` in turn `turn`'s order: rotated by one more each turn, and
/// reversed every other turn, so that no variant always runs first or
/// always right after the same one.
pub(crate) fn rotated<T: Clone>(items: &[T], turn: usize) -> Vec<T> {
    let mut order = items.to_vec();
    if !order.is_empty() {
        let len = order.len();
        order.rotate_left(turn % len);
    }
    if turn % 2 == 1 {
        order.reverse();
    }
    order
}

/// Runs one lane for `slice`, repeating its operation until the slice is
/// over (at least once); returns how many operations were done and how
/// long they took. A single connection runs right here; a hand-off runs one
/// task per connection.
async fn run_lane(
    lanes: &mut [Lane],
    transports: &mut [Transport],
    lane: usize,
    slice: Duration,
) -> Result<(u64, Duration), BoxError> {
    let op = lanes[lane].op;
    if let Some(conn) = lanes[lane].own.as_mut() {
        let started = Instant::now();
        let deadline = started + slice;
        let mut done = 0;
        loop {
            done += op.run_once(conn).await?;
            let now = Instant::now();
            if now >= deadline {
                return Ok((done, now - started));
            }
        }
    }
    let Op::Handoff { tasks, .. } = op else {
        unreachable!("only hand-offs run without a connection of their own");
    };
    let transport = &mut transports[lanes[lane].transport];
    let conns = transport.handoff.split_off(transport.handoff.len() - tasks);
    let started = Instant::now();
    let deadline = started + slice;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let mut done = 0_u64;
                loop {
                    done += op.run_once(&mut conn).await?;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Ok::<_, BoxError>((conn, done, Instant::now()))
            })
        })
        .collect();
    let mut done = 0;
    let mut ended = started;
    for task in tasks {
        let (conn, count, at) = task.await??;
        transport.handoff.push(conn);
        done += count;
        ended = ended.max(at);
    }
    Ok((done, ended - started))
}
