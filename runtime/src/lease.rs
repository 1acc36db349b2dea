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

use crate::session::{HeldLock, SessionGuard};
use crate::{Error, LockId, Mode};

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
    ///
    /// ```
    /// # use std::time::Duration;
    /// let options = pglock_runtime::LeaseOptions::default().check_every(Duration::from_secs(1));
    /// ```
    pub fn check_every(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// How long one check may take before the lease counts as lost.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let options = pglock_runtime::LeaseOptions::default().check_timeout(Duration::from_secs(2));
    /// ```
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// The longest time between a loss and its report.
    ///
    /// ```
    /// assert_eq!(
    ///     pglock_runtime::LeaseOptions::default().detection_bound(),
    ///     std::time::Duration::from_secs(10)
    /// );
    /// ```
    pub fn detection_bound(&self) -> Duration {
        self.check_interval + self.check_timeout
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
    namespace: String,
    id: LockId,
    mode: Mode,
    reason: String,
}

impl LeaseLost {
    /// The label of the lock's namespace.
    ///
    /// ```no_run
    /// # async fn run(mut lease: pglock_runtime::Lease) {
    /// let lost = lease.lost().await;
    /// eprintln!("no longer holding a lock in {}", lost.namespace());
    /// # }
    /// ```
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The advisory lock id that was held.
    ///
    /// ```no_run
    /// # async fn run(mut lease: pglock_runtime::Lease) {
    /// let id = lease.id();
    /// assert_eq!(lease.lost().await.id(), id);
    /// # }
    /// ```
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The mode that was held.
    ///
    /// ```no_run
    /// # async fn run(mut lease: pglock_runtime::Lease) {
    /// if lease.lost().await.mode() == pglock_runtime::Mode::Exclusive {
    ///     eprintln!("another candidate may take over now");
    /// }
    /// # }
    /// ```
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What the check found.
    ///
    /// ```no_run
    /// # async fn run(mut lease: pglock_runtime::Lease) {
    /// let lost = lease.lost().await;
    /// eprintln!("lease lost: {}", lost.reason()); // e.g. "the session no longer holds the lock"
    /// # }
    /// ```
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lease on {}/{} ({}) lost: {}",
            self.namespace, self.id, self.mode, self.reason
        )
    }
}

/// A session lock held by a background task that checks, at a configurable
/// interval, that its connection still holds the lock, and publishes a loss
/// the moment it sees one (see [`LeaseOptions::detection_bound`]).
///
/// Made by [`crate::SessionLock::acquire_lease`]. Dropping the lease closes
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
        let (conn, held) = guard.into_parts();
        let (commands, command_rx) = mpsc::channel(1);
        let (state_tx, state) = watch::channel(LeaseState::Held);
        tokio::spawn(keep(conn, held.clone(), options, command_rx, state_tx));
        Self {
            commands,
            state,
            held,
        }
    }

    /// Whether the lock is still held, as of the last check.
    ///
    /// ```no_run
    /// # fn run(lease: &pglock_runtime::Lease) {
    /// if !lease.is_held() {
    ///     eprintln!("stop leading");
    /// }
    /// # }
    /// ```
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
        loop {
            if let LeaseState::Lost(lost) = &*self.state.borrow_and_update() {
                return lost.clone();
            }
            if self.state.changed().await.is_err() {
                // The task ended without publishing a loss: it can only have
                // been stopped with the runtime.
                return self.lost_with("the lease task stopped");
            }
        }
    }

    /// A receiver of the lease's state, for holders that watch several
    /// things at once.
    ///
    /// ```no_run
    /// # fn run(lease: &pglock_runtime::Lease) {
    /// let mut state = lease.watch();
    /// tokio::spawn(async move {
    ///     while state.changed().await.is_ok() {
    ///         println!("lease is now {:?}", *state.borrow());
    ///     }
    /// });
    /// # }
    /// ```
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Unlocks and returns the connection. Fails with [`Error::LockLost`]
    /// when the lease was lost before.
    ///
    /// ```no_run
    /// # async fn run(lease: pglock_runtime::Lease) -> Result<(), pglock_runtime::Error> {
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

    /// The advisory lock id held.
    ///
    /// ```no_run
    /// # async fn run(conn: sqlx::PgConnection) -> Result<(), pglock_runtime::Error> {
    /// # static LEADER: pglock_runtime::Namespace = pglock_runtime::Namespace::named("leader");
    /// let lock = LEADER.session_lock(&"cluster");
    /// let lease = lock.acquire_lease(conn, Default::default()).await?;
    /// assert_eq!(lease.id(), lock.id());
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> LockId {
        self.held.id
    }

    fn lost_with(&self, reason: &str) -> LeaseLost {
        LeaseLost {
            namespace: self.held.namespace.to_string(),
            id: self.held.id,
            mode: self.held.mode,
            reason: reason.to_owned(),
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("namespace", &self.held.namespace)
            .field("id", &self.held.id)
            .field("mode", &self.held.mode)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

/// Whether this session still holds the lock, in `pg_locks`. Through a
/// transaction pooler the query may reach another backend, which holds
/// nothing: that counts as lost too, as it is.
const STILL_HELD: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l \
     WHERE l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid() AND l.granted \
       AND l.mode = $4 \
       AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) \
       AND CASE WHEN $1::int8 IS NOT NULL \
                THEN l.objsubid = 1 AND ((l.classid::int8 << 32) | l.objid::int8) = $1::int8 \
                ELSE l.objsubid = 2 AND l.classid::int8 = ($2::int8 & 4294967295) \
                     AND l.objid::int8 = ($3::int8 & 4294967295) END)";

async fn still_held(conn: &mut PgConnection, held: &HeldLock) -> Result<bool, sqlx::Error> {
    let (bigint, class, object) = match held.id {
        LockId::BigInt(id) => (Some(id), None, None),
        LockId::Pair(class, object) => (None, Some(i64::from(class)), Some(i64::from(object))),
    };
    sqlx::query_scalar(STILL_HELD)
        .bind(bigint)
        .bind(class)
        .bind(object)
        .bind(held.mode.pg_locks_mode())
        .fetch_one(conn)
        .await
}

/// The lease's task: owns the connection, checks it, answers a release.
async fn keep(
    mut conn: PgConnection,
    held: HeldLock,
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
                    tracing::warn!(
                        target: "pglock",
                        namespace = &*held.namespace,
                        key = %held.id,
                        mode = %held.mode,
                        "lease dropped without release; closing its connection to free the lock"
                    );
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
    tracing::error!(
        target: "pglock",
        namespace = &*held.namespace,
        key = %held.id,
        mode = %held.mode,
        held_ms = acquired.elapsed().as_millis() as u64,
        reason = %reason,
        "lease lost: the advisory lock is no longer held"
    );
    drop(conn);
    let _ = state.send(LeaseState::Lost(LeaseLost {
        namespace: held.namespace.to_string(),
        id: held.id,
        mode: held.mode,
        reason,
    }));
    // Answer a late release with the loss, until the lease is dropped.
    while let Some(Command::Release(reply)) = commands.recv().await {
        let _ = reply.send(Err(held.lost()));
    }
}
