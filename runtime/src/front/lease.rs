//! Leases: session locks for long holders that say when they are lost.
//!
//! A leader or a singleton job holds its lock for hours. If the connection
//! breaks (the backend is terminated, the server restarts, the network
//! fails), the server has already freed the lock and someone else may hold
//! it: the holder must learn so, in bounded time, and never silently.

use std::fmt;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::events;
use crate::engine::measure::HoldMeter;
use crate::error::Error;
use crate::front::session::{HeldLock, IntoOwnedConnection, SessionGuard, SessionLock};
use crate::identity::LockIdentity;
use crate::sql::pg_locks;

impl SessionLock<'_> {
    /// Takes the lock as a [`Lease`]: a guard that keeps checking its
    /// connection and says when the lock was lost.
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// # static LEADER: pglock_runtime::Namespace = pglock_runtime::Namespace::named("leader");
    /// use pglock_runtime::LeaseOptions;
    /// let mut lease = LEADER
    ///     .session_lock(&"cluster")
    ///     .acquire_lease(pool.acquire().await?, LeaseOptions::default())
    ///     .await?;
    /// tokio::select! {
    ///     lost = lease.lost() => eprintln!("no longer the leader: {lost}"),
    ///     _ = lead() => {}
    /// }
    /// # Ok(()) }
    /// # async fn lead() {}
    /// ```
    pub async fn acquire_lease(
        self,
        connection: impl IntoOwnedConnection,
        options: LeaseOptions,
    ) -> Result<Lease, Error> {
        let guard = self.acquire(connection).await?;
        Ok(Lease::start(guard, options))
    }
}

/// How a [`Lease`] watches its connection.
///
/// ```
/// use std::time::Duration;
/// use pglock_runtime::LeaseOptions;
///
/// let options = LeaseOptions::default().check_every(Duration::from_millis(500));
/// assert_eq!(options.detection_bound(), Duration::from_millis(500) + Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    check_interval: Duration,
    check_timeout: Duration,
}

impl Default for LeaseOptions {
    /// A check every 5 s that may take up to 5 s: a loss is reported within
    /// 10 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use pglock_runtime::LeaseOptions;
    /// let five = Duration::from_secs(5);
    /// assert_eq!(LeaseOptions::default(), LeaseOptions::default().check_every(five).check_timeout(five));
    /// ```
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(5),
            check_timeout: Duration::from_secs(5),
        }
    }
}

impl LeaseOptions {
    /// How often the connection is checked (a query that the lock is still
    /// held by this session).
    pub fn check_every(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// How long one check may take before the lease counts as lost.
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    pub(crate) fn interval(&self) -> Duration {
        self.check_interval
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.check_timeout
    }

    /// The longest time between a loss and its report.
    pub fn detection_bound(&self) -> Duration {
        self.check_interval.saturating_add(self.check_timeout)
    }
}

/// The state of a lease, as [`Lease::watch`] publishes it.
///
/// ```no_run
/// # fn run(lease: &pglock_runtime::Lease) {
/// use pglock_runtime::LeaseState;
/// match &*lease.watch().borrow() {
///     LeaseState::Held => println!("still held"),
///     LeaseState::Lost(lost) => eprintln!("{lost}"),
///     _ => {}
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseState {
    /// The lock is held.
    Held,
    /// The lock was lost.
    Lost(LeaseLost),
}

/// A lost lease: which lock, and why it is known to be gone.
///
/// ```no_run
/// # async fn run(mut lease: pglock_runtime::Lease) {
/// let lost: pglock_runtime::LeaseLost = lease.lost().await;
/// eprintln!("{lost}"); // lease on leader/… (exclusive) lost: the connection failed: …
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLost {
    lock: LockIdentity,
    reason: String,
}

impl LeaseLost {
    /// The lock that was held.
    pub fn lock(&self) -> &LockIdentity {
        &self.lock
    }

    /// What the check found, such as "the session no longer holds the lock".
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl LeaseLost {
    pub(crate) fn new(lock: LockIdentity, reason: String) -> Self {
        Self { lock, reason }
    }
}

/// Resolves when `state` says the lock is lost.
pub(crate) async fn until_lost(
    state: &mut watch::Receiver<LeaseState>,
    lock: &LockIdentity,
) -> LeaseLost {
    loop {
        if let LeaseState::Lost(lost) = &*state.borrow_and_update() {
            return lost.clone();
        }
        if state.changed().await.is_err() {
            // The task that watches the lock ended without publishing a
            // loss: it can only have been stopped with the runtime.
            return LeaseLost::new(
                lock.clone(),
                "the task watching the lock stopped".to_owned(),
            );
        }
    }
}

impl fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lease on {} lost: {}", self.lock, self.reason)
    }
}

/// A session lock held by a background task that checks, at a configurable
/// interval, that its connection still holds the lock, and publishes a loss
/// the moment it sees one (see [`LeaseOptions::detection_bound`]).
///
/// Made by [`SessionLock::acquire_lease`]. Dropping the lease closes
/// the connection (freeing the lock); [`Lease::release`] unlocks and returns
/// the connection. Needs a tokio runtime.
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// # static LEADER: pglock_runtime::Namespace = pglock_runtime::Namespace::named("leader");
/// # async fn schedule_due_jobs(pool: &sqlx::PgPool) {}
/// use pglock_runtime::LeaseOptions;
/// let conn = pool.acquire().await?;
/// let lease = LEADER.session_lock(&"scheduler").acquire_lease(conn, LeaseOptions::default()).await?;
/// while lease.is_held() {
///     schedule_due_jobs(pool).await;
/// }
/// # Ok(()) }
/// ```
pub struct Lease {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<LeaseState>,
    held: HeldLock,
}

enum Command {
    Release(oneshot::Sender<Result<PgConnection, Error>>),
}

impl Lease {
    pub(crate) fn start(guard: SessionGuard, options: LeaseOptions) -> Self {
        let (conn, held, meter) = guard.into_parts();
        let (commands, command_rx) = mpsc::channel(1);
        let (state_tx, state) = watch::channel(LeaseState::Held);
        tokio::spawn(keep(
            conn,
            held.clone(),
            meter,
            options,
            command_rx,
            state_tx,
        ));
        Self {
            commands,
            state,
            held,
        }
    }

    /// Whether the lock is still held, as of the last check.
    pub fn is_held(&self) -> bool {
        matches!(*self.state.borrow(), LeaseState::Held)
    }

    /// Resolves when the lease is lost; use it in a `select!` beside the
    /// holder's work.
    ///
    /// ```no_run
    /// # async fn run(mut lease: pglock_runtime::Lease) {
    /// let lost = lease.lost().await;
    /// eprintln!("{lost}");
    /// # }
    /// ```
    pub async fn lost(&mut self) -> LeaseLost {
        let lock = &self.held.lock;
        until_lost(&mut self.state, lock).await
    }

    /// A receiver of the lease's state, for holders that watch several
    /// things at once.
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Unlocks and returns the connection. Fails with [`Error::LockLost`]
    /// when the lease was lost before.
    ///
    /// ```no_run
    /// # async fn run(lease: pglock_runtime::Lease) -> Result<(), pglock_runtime::Error> {
    /// // Stepping down: the next candidate's wait ends at once.
    /// let connection = lease.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(self) -> Result<PgConnection, Error> {
        let (reply, response) = oneshot::channel();
        if self.commands.send(Command::Release(reply)).await.is_err() {
            return Err(self.held.lost());
        }
        response.await.unwrap_or_else(|_| Err(self.held.lost()))
    }

    /// The lock held.
    pub fn lock(&self) -> &LockIdentity {
        &self.held.lock
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("lock", &self.held.lock)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

async fn still_held(conn: &mut PgConnection, held: &HeldLock) -> Result<bool, sqlx::Error> {
    let (encoded, objsubid) = pg_locks::encode(held.lock.id());
    sqlx::query_scalar(pg_locks::HELD_BY_THIS_SESSION)
        .bind(encoded)
        .bind(objsubid)
        .bind(pg_locks::mode_name(held.lock.mode()))
        .fetch_one(conn)
        .await
}

/// The lease's task: owns the connection, checks it, answers a release.
async fn keep(
    mut conn: PgConnection,
    held: HeldLock,
    meter: Option<HoldMeter>,
    options: LeaseOptions,
    mut commands: mpsc::Receiver<Command>,
    state: watch::Sender<LeaseState>,
) {
    let acquired = Instant::now();
    let reason = loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Release(reply)) => {
                    let result = held.unlock(&mut conn).await.map(|()| conn);
                    let _ = reply.send(result);
                    return;
                }
                None => {
                    events::lease_dropped(&held.lock);
                    return;
                }
            },
            () = tokio::time::sleep(options.check_interval) => {
                match tokio::time::timeout(options.check_timeout, still_held(&mut conn, &held)).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => break "the session no longer holds the lock".to_owned(),
                    Ok(Err(error)) => break format!("the connection failed: {error}"),
                    Err(_) => break format!("the connection did not answer within {:?}", options.check_timeout),
                }
            }
        }
    };
    events::lease_lost(&held.lock, acquired.elapsed(), &reason);
    drop(meter);
    drop(conn);
    let _ = state.send(LeaseState::Lost(LeaseLost::new(held.lock.clone(), reason)));
    // Answer a late release with the loss, until the lease is dropped.
    while let Some(Command::Release(reply)) = commands.recv().await {
        let _ = reply.send(Err(held.lost()));
    }
}
