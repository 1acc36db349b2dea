//! The semaphores' group (`--only semaphore`): uncontended acquire +
//! release of a permit of a semaphore of 8 with 0, 4 and 7 of its permits
//! taken by other sessions, against a plain lock, as a session guard on an
//! open connection and through the lock manager, the variants in turns.
//! Prints its own JSON lines.

use std::str::FromStr;
use std::time::Duration;

use pglock::{CheckOptions, LockManager, ManagerOptions, Namespace, SessionGuard};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::proxy::{Proxy, Upstream};
use crate::stats::{Stream, median, paired_ratio_spread, spread_pct};
use crate::{BoxError, Options, rotated};

static SEMAPHORES: Namespace = Namespace::named("pglock-bench:semaphore");

/// The semaphore's size.
const PERMITS: u32 = 8;

/// How many permits other sessions hold: none, half, all but one.
const TAKEN: [u32; 3] = [0, PERMITS / 2, PERMITS - 1];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Front {
    /// A session guard on an open connection.
    Session,
    /// A guard of the lock manager.
    Manager,
}

impl Front {
    fn name(self) -> &'static str {
        match self {
            Front::Session => "session",
            Front::Manager => "manager",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// A plain exclusive lock: the baseline of its front.
    Lock(Front),
    /// A permit, with this many of the others taken.
    Permit(Front, u32),
}

/// The semaphore a variant with `taken` permits held by others uses: a key
/// of its own.
fn key(taken: u32) -> i64 {
    i64::from(taken)
}

struct Pairs {
    manager: LockManager,
    conn: Option<PgConnection>,
}

impl Pairs {
    async fn once(&mut self, variant: Variant) -> Result<(), BoxError> {
        match variant {
            Variant::Lock(Front::Session) => {
                let conn = self.conn.take().expect("the open connection");
                let guard = SEMAPHORES.session_lock(&-1_i64).acquire(conn).await?;
                self.conn = Some(guard.release().await?);
            }
            Variant::Permit(Front::Session, taken) => {
                let conn = self.conn.take().expect("the open connection");
                let guard = SEMAPHORES
                    .session_semaphore(&key(taken), PERMITS)
                    .no_wait()
                    .acquire(conn)
                    .await?;
                self.conn = Some(guard.release().await?);
            }
            Variant::Lock(Front::Manager) => {
                let guard = self.manager.lock(&SEMAPHORES, &-1_i64).acquire().await?;
                guard.release().await?;
            }
            Variant::Permit(Front::Manager, taken) => {
                let guard = self
                    .manager
                    .semaphore(&SEMAPHORES, &key(taken), PERMITS)
                    .no_wait()
                    .acquire()
                    .await?;
                guard.release().await?;
            }
        }
        Ok(())
    }

    /// Pairs per second of `variant`, back to back for `slice`.
    async fn rate(&mut self, variant: Variant, slice: Duration) -> Result<f64, BoxError> {
        let mut stream = Stream::for_slice(slice);
        while stream.more() {
            self.once(variant).await?;
        }
        Ok(stream.per_second())
    }
}

/// Runs the group over one transport; returns its JSON lines.
pub(crate) async fn run(
    url: &str,
    transport: &str,
    options: &Options,
) -> Result<Vec<String>, BoxError> {
    let connect = PgConnectOptions::from_str(url)?;
    let _taken = take(&connect).await?;
    let trips = round_trips(url, &connect).await?;
    let mut pairs = Pairs {
        manager: LockManager::new(connect.clone(), ManagerOptions::default()),
        conn: Some(PgConnection::connect_with(&connect).await?),
    };
    let mut variants = Vec::new();
    for front in [Front::Session, Front::Manager] {
        variants.push(Variant::Lock(front));
        variants.extend(TAKEN.map(|taken| Variant::Permit(front, taken)));
    }
    // One unmeasured round warms the statements and connections up.
    let slice = options.group_time / 4;
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..=options.rounds {
        for variant in rotated(&variants, round) {
            let rate = pairs.rate(variant, slice).await?;
            if round > 0 {
                let index = variants
                    .iter()
                    .position(|v| *v == variant)
                    .expect("a variant");
                rates[index].push(rate);
            }
        }
    }
    pairs.manager.close().await;
    let rate_of = |wanted: Variant| {
        &rates[variants
            .iter()
            .position(|v| *v == wanted)
            .expect("a variant")]
    };
    let lines = variants
        .iter()
        .map(|&variant| {
            let (front, name) = match variant {
                Variant::Lock(front) => (front, "lock".to_owned()),
                Variant::Permit(front, taken) => {
                    (front, format!("permit_taken_{taken}_of_{PERMITS}"))
                }
            };
            let own = rate_of(variant);
            let trips = trips
                .iter()
                .find(|(counted, _)| *counted == variant)
                .map_or(f64::NAN, |(_, trips)| *trips);
            let ratio = paired_ratio_spread(own, rate_of(Variant::Lock(front)));
            let (low, high) = spread_pct(own);
            format!(
                "{{\"variant\": \"semaphore_{}_{name}@{transport}\", \"ops_per_sec\": {:.1}, \"spread_pct\": [{low:.2}, {high:.2}], \"ratio_to_lock\": {:.4}, \"ratio_spread\": [{:.4}, {:.4}], \"unit\": \"acquire+release/s\", \"round_trips\": {trips:.3}, \"rounds\": {}, \"transport\": \"{transport}\"}}",
                front.name(),
                median(own),
                ratio.median,
                ratio.low,
                ratio.high,
                own.len()
            )
        })
        .collect();
    Ok(lines)
}

/// The permits other sessions hold for the run: `taken` of the semaphore
/// of each variant, each on a connection of its own.
async fn take(connect: &PgConnectOptions) -> Result<Vec<SessionGuard>, BoxError> {
    let mut held = Vec::new();
    for taken in TAKEN {
        for _ in 0..taken {
            let conn = PgConnection::connect_with(connect).await?;
            let guard = SEMAPHORES
                .session_semaphore(&key(taken), PERMITS)
                .no_wait()
                .acquire(conn)
                .await?;
            held.push(guard);
        }
    }
    Ok(held)
}

/// Every variant's round trips per acquire + release, counted through the
/// bench's proxy (`crate::proxy`), with the permits of [`take`] held. A
/// manager's try goes through the permits one by one from a starting index
/// that turns with each acquisition, so its count is the mean over whole
/// turns of that index: the same in every run, since the permits taken
/// are consecutive from wherever the turn stood.
async fn round_trips(
    url: &str,
    connect: &PgConnectOptions,
) -> Result<Vec<(Variant, f64)>, BoxError> {
    let proxy = Proxy::start(Upstream::of(url)?, Duration::ZERO)?;
    let through = proxy.connect_options(connect)?;
    // Checks far apart: a check is the manager's background work, not the
    // acquisition's.
    let checks = CheckOptions::default().check_every(Duration::from_secs(600));
    let mut pairs = Pairs {
        manager: LockManager::new(through.clone(), ManagerOptions::default().checks(checks)),
        conn: Some(PgConnection::connect_with(&through).await?),
    };
    let turns = 2 * PERMITS as usize;
    let mut counts = Vec::new();
    for front in [Front::Session, Front::Manager] {
        for variant in [Variant::Lock(front)]
            .into_iter()
            .chain(TAKEN.map(|taken| Variant::Permit(front, taken)))
        {
            for _ in 0..turns {
                pairs.once(variant).await?;
            }
            let before = proxy.round_trips();
            for _ in 0..turns {
                pairs.once(variant).await?;
            }
            counts.push((
                variant,
                (proxy.round_trips() - before) as f64 / turns as f64,
            ));
        }
    }
    pairs.manager.close().await;
    if let Some(conn) = pairs.conn.take() {
        conn.close().await?;
    }
    Ok(counts)
}
