//! Leases: session locks for long holders that say when they are lost.
//!
//! A leader or a singleton job holds its lock for hours. If the connection
//! breaks (the backend is terminated, the server restarts, the network
//! fails), the server has already freed the lock and someone else may hold
//! it: the holder must learn so, in bounded time, and never silently.

use std::fmt;
use std::time::Instant;

use sqlx::postgres::PgConnection;
use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::events;
use crate::engine::measure::HoldMeter;
use crate::error::Error;
use crate::front::fencing::FencingToken;
use crate::front::keepalive::ServerKeepalive;
use crate::front::loss::{CheckOptions, HoldState, Loss, until_lost};
use crate::front::semaphore::Permit;
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
    /// use pglock_runtime::CheckOptions;
    /// let mut lease = LEADER
    ///     .session_lock(&"cluster")
    ///     .acquire_lease(pool.acquire().await?, CheckOptions::default())
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
        options: CheckOptions,
    ) -> Result<Lease, Error> {
        lease_on(connection, options, |conn| self.acquire(conn)).await
    }
}

/// A lease on the guard `acquire` takes on `connection`, once the server's
/// keepalives are set ([`prepare`]).
pub(crate) async fn lease_on<F>(
    connection: impl IntoOwnedConnection,
    options: CheckOptions,
    acquire: impl FnOnce(PgConnection) -> F,
) -> Result<Lease, Error>
where
    F: Future<Output = Result<SessionGuard, Error>>,
{
    let mut conn = connection.into_owned_connection();
    prepare(&mut conn, options).await?;
    let guard = acquire(conn).await?;
    Ok(Lease::start(guard, options))
}

/// Sets the server's keepalives of a lease's session from its `options`:
/// before the lock is asked for, so that the server never holds it for a
/// silent client longer than the holder takes to notice.
pub(crate) async fn prepare(conn: &mut PgConnection, options: CheckOptions) -> Result<(), Error> {
    let keepalive = ServerKeepalive::for_checks(&options);
    match tokio::time::timeout(options.timeout(), keepalive.apply(conn)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(Error::from_sqlx(error)),
        Err(_) => Err(Error::from_sqlx(unanswered(options))),
    }
}

/// A session lock held by a background task that checks, at a configurable
/// interval, that its connection still holds the lock, and publishes a loss
/// the moment it sees one (see [`CheckOptions::detection_bound`]).
///
/// When the network stops answering, the lease reports the loss within its
/// detection bound, and the server frees the lock only later, within
/// [`CheckOptions::server_release_bound`] of the last packet it got: at
/// acquisition the lease sets its session's TCP keepalives and
/// `tcp_user_timeout` so (the connection keeps them after
/// [`Lease::release`]). No one else can take the lock while the holder
/// still believes it holds it.
///
/// Made by [`SessionLock::acquire_lease`]. Dropping the lease closes
/// the connection (freeing the lock); [`Lease::release`] unlocks and returns
/// the connection. Needs a tokio runtime.
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// # static LEADER: pglock_runtime::Namespace = pglock_runtime::Namespace::named("leader");
/// # async fn schedule_due_jobs(pool: &sqlx::PgPool) {}
/// use pglock_runtime::CheckOptions;
/// let conn = pool.acquire().await?;
/// let lease = LEADER.session_lock(&"scheduler").acquire_lease(conn, CheckOptions::default()).await?;
/// while lease.is_held() {
///     schedule_due_jobs(pool).await;
/// }
/// # Ok(()) }
/// ```
pub struct Lease {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<HoldState>,
    held: HeldLock,
}

enum Command {
    Release(oneshot::Sender<Result<PgConnection, Error>>),
}

impl Lease {
    pub(crate) fn start(guard: SessionGuard, options: CheckOptions) -> Self {
        let (conn, held, meter) = guard.into_parts();
        let held = held.with_release_timeout(options.timeout());
        let (commands, command_rx) = mpsc::channel(1);
        let (state_tx, state) = watch::channel(HoldState::Held);
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
        matches!(*self.state.borrow(), HoldState::Held)
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
    pub async fn lost(&mut self) -> Loss {
        let lock = &self.held.lock;
        until_lost(&mut self.state, lock).await
    }

    /// A receiver of the lease's state, for holders that watch several
    /// things at once.
    pub fn watch(&self) -> watch::Receiver<HoldState> {
        self.state.clone()
    }

    /// Unlocks and returns the connection. Fails with [`Error::LockLost`]
    /// when the lease was lost before, its session is found over at the
    /// release, or the unlock gets no answer within the check timeout (the
    /// connection is then closed).
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

    /// The fencing token taken when the lock was granted; `None` unless
    /// asked for with [`SessionLock::with_fencing_token`].
    pub fn fencing_token(&self) -> Option<FencingToken> {
        self.held.token
    }

    /// Which permit of a semaphore the lease holds; `None` for a lock. See
    /// [`SessionSemaphore::acquire_lease`](crate::SessionSemaphore::acquire_lease).
    pub fn permit(&self) -> Option<Permit> {
        self.held.permit
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

/// The error of a connection that did not answer within the check timeout.
fn unanswered(options: CheckOptions) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the connection did not answer within {:?}",
            options.timeout()
        ),
    ))
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
    options: CheckOptions,
    mut commands: mpsc::Receiver<Command>,
    state: watch::Sender<HoldState>,
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
            () = tokio::time::sleep(options.interval()) => {
                match tokio::time::timeout(options.timeout(), still_held(&mut conn, &held)).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => break "the session no longer holds the lock".to_owned(),
                    Ok(Err(error)) => break format!("the connection failed: {error}"),
                    Err(_) => break format!("the connection did not answer within {:?}", options.timeout()),
                }
            }
        }
    };
    events::lease_lost(&held.lock, acquired.elapsed(), &reason);
    drop(meter);
    drop(conn);
    let _ = state.send(HoldState::Lost(Loss::new(held.lock.clone(), reason)));
    // Answer a late release with the loss, until the lease is dropped.
    while let Some(Command::Release(reply)) = commands.recv().await {
        let _ = reply.send(Err(held.lost()));
    }
}
