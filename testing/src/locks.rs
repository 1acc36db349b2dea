//! Lock helpers for tests: hold a lock from another connection, wait until a
//! backend waits on a namespace, check what a session holds. They go
//! through the runtime's public API only (`Namespace::marker`,
//! `pg_locks::HELD_BY_THIS_SESSION`), as any test of an application could,
//! and ask `pg_locks` exactly what leases and the lock manager ask.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use pglock_runtime::{Error, LockId, LockKey, Mode, Namespace, NamespaceFor, pg_locks};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Postgres, Transaction};

/// A lock held by a transaction of its own, for a test to contend with.
/// [`LockHolder::release`] commits; dropping it rolls back. Either way the
/// lock ends.
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// use pglock_runtime::{Mode, Namespace};
/// static JOBS: Namespace = Namespace::named("jobs");
///
/// let holder = pglock_testing::hold_lock(pool, &JOBS, &7_i64, Mode::Exclusive).await?;
/// let mut tx = pool.begin().await?;
/// assert!(!JOBS.lock(&7_i64).try_acquire(&mut tx).await?);
/// holder.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LockHolder {
    tx: Transaction<'static, Postgres>,
    pid: i32,
    id: LockId,
}

impl LockHolder {
    /// The holding backend's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The lock id held.
    pub fn id(&self) -> LockId {
        self.id
    }

    /// Ends the holding transaction (commit), and with it the lock.
    ///
    /// ```no_run
    /// # async fn run(holder: pglock_testing::LockHolder) -> Result<(), pglock_runtime::Error> {
    /// holder.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(self) -> Result<(), Error> {
        self.tx.commit().await.map_err(Error::from)
    }
}

/// Takes `key` in `namespace` in a new transaction on `pool`, waiting as
/// long as it takes, and keeps it until the returned holder is released or
/// dropped.
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// use pglock_runtime::{Mode, Namespace};
/// static JOBS: Namespace = Namespace::named("jobs");
///
/// // Two shared holders do not block each other; an exclusive taker would wait.
/// let first = pglock_testing::hold_lock(pool, &JOBS, &1_i64, Mode::Shared).await?;
/// let second = pglock_testing::hold_lock(pool, &JOBS, &1_i64, Mode::Shared).await?;
/// assert_ne!(first.pid(), second.pid());
/// # Ok(()) }
/// ```
pub async fn hold_lock<K, N>(
    pool: &PgPool,
    namespace: &N,
    key: &K,
    mode: Mode,
) -> Result<LockHolder, Error>
where
    K: LockKey + ?Sized,
    N: NamespaceFor<K> + ?Sized,
{
    let mut tx = pool.begin().await?;
    let lock = namespace.namespace().lock(key).with_mode(mode);
    let id = lock.id();
    lock.acquire(&mut tx).await?;
    let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await?;
    Ok(LockHolder { tx, pid, id })
}

/// Polls `pg_stat_activity` until some backend waits for an advisory lock
/// in a statement whose marker names `namespace` (for a lock family, pass
/// its [`namespace()`](pglock_runtime::LockFamily::namespace)), and returns
/// its pid, or `None` when none did within `within`.
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// use std::time::Duration;
/// use pglock_runtime::{Mode, Namespace};
/// static JOBS: Namespace = Namespace::named("jobs");
///
/// let holder = pglock_testing::hold_lock(pool, &JOBS, &1_i64, Mode::Exclusive).await?;
/// let contender = tokio::spawn({
///     let pool = pool.clone();
///     async move {
///         let mut tx = pool.begin().await?;
///         JOBS.lock(&1_i64).acquire(&mut tx).await?;
///         tx.commit().await?;
///         Ok::<_, pglock_runtime::Error>(())
///     }
/// });
/// let waiter = pglock_testing::wait_for_waiter(pool, &JOBS, Duration::from_secs(10)).await?;
/// assert!(waiter.is_some(), "the contender waits for job 1");
/// holder.release().await?;
/// contender.await.expect("the contender ran")?;
/// # Ok(()) }
/// ```
pub async fn wait_for_waiter(
    pool: &PgPool,
    namespace: &Namespace,
    within: Duration,
) -> Result<Option<i32>, Error> {
    let marker = namespace.marker();
    let deadline = Instant::now() + within;
    loop {
        let waiter: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_catalog.pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' \
               AND starts_with(query, $1) ORDER BY query_start LIMIT 1",
        )
        .bind(marker)
        .fetch_optional(pool)
        .await?;
        if waiter.is_some() || Instant::now() >= deadline {
            return Ok(waiter);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The pids of the backends of this database that wait for `id`, first
/// come first (`$1`, `$2`: [`pg_locks::encode`]).
static WAITERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT l.pid FROM pg_catalog.pg_locks l WHERE {} AND NOT l.granted \
           AND l.database = (SELECT oid FROM pg_catalog.pg_database \
                             WHERE datname = pg_catalog.current_database()) \
         ORDER BY l.waitstart, l.pid",
        pg_locks::MATCHES
    )
});

/// Polls `pg_locks` until at least `count` backends wait for the lock `id`
/// (in any mode, from any code), and returns their pids, first come first;
/// when fewer waited within `within`, returns those that did.
///
/// A test that starts contenders and must know they all queue before it
/// lets the holder go waits for them here, instead of sleeping.
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// use std::time::Duration;
/// use pglock_runtime::{Mode, Namespace};
/// static JOBS: Namespace = Namespace::named("jobs");
///
/// let holder = pglock_testing::hold_lock(pool, &JOBS, &1_i64, Mode::Exclusive).await?;
/// let mut contenders = Vec::new();
/// for _ in 0..2 {
///     let pool = pool.clone();
///     contenders.push(tokio::spawn(async move {
///         let mut tx = pool.begin().await?;
///         JOBS.lock(&1_i64).acquire(&mut tx).await?;
///         tx.commit().await?;
///         Ok::<_, pglock_runtime::Error>(())
///     }));
/// }
/// let waiters =
///     pglock_testing::wait_for_waiters(pool, JOBS.id(&1_i64), 2, Duration::from_secs(10)).await?;
/// assert_eq!(waiters.len(), 2, "both contenders queue for job 1");
/// holder.release().await?;
/// for contender in contenders {
///     contender.await.expect("a contender ran")?;
/// }
/// # Ok(()) }
/// ```
pub async fn wait_for_waiters(
    pool: &PgPool,
    id: LockId,
    count: usize,
    within: Duration,
) -> Result<Vec<i32>, Error> {
    let (encoded, objsubid) = pg_locks::encode(id);
    let deadline = Instant::now() + within;
    loop {
        let waiters: Vec<i32> = sqlx::query_scalar(WAITERS.as_str())
            .bind(encoded)
            .bind(objsubid)
            .fetch_all(pool)
            .await?;
        if waiters.len() >= count || Instant::now() >= deadline {
            return Ok(waiters);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether the session of `conn` holds `key` in `namespace` in `mode`, as
/// `pg_locks` shows it: a lock taken in a transaction still open on `conn`,
/// or a session lock, counts; a lock held by another session, or in another
/// database of the server, does not (see
/// [`pg_locks::HELD_BY_THIS_SESSION`]).
///
/// ```no_run
/// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
/// use pglock_runtime::{Mode, Namespace};
/// static JOBS: Namespace = Namespace::named("jobs");
///
/// JOBS.lock(&1_i64).acquire(tx).await?;
/// assert!(pglock_testing::holds(tx, &JOBS, &1_i64, Mode::Exclusive).await?);
/// assert!(!pglock_testing::holds(tx, &JOBS, &1_i64, Mode::Shared).await?);
/// # Ok(()) }
/// ```
pub async fn holds<K, N>(
    conn: &mut PgConnection,
    namespace: &N,
    key: &K,
    mode: Mode,
) -> Result<bool, Error>
where
    K: LockKey + ?Sized,
    N: NamespaceFor<K> + ?Sized,
{
    let (encoded, objsubid) = pg_locks::encode(namespace.namespace().id(key));
    sqlx::query_scalar(pg_locks::HELD_BY_THIS_SESSION)
        .bind(encoded)
        .bind(objsubid)
        .bind(pg_locks::mode_name(mode))
        .fetch_one(conn)
        .await
        .map_err(Error::from)
}

/// Panics unless the session of `conn` holds `key` in `namespace` in
/// `mode`; see [`holds`].
///
/// ```no_run
/// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) {
/// use pglock_runtime::{Mode, Namespace};
/// static JOBS: Namespace = Namespace::named("jobs");
///
/// JOBS.lock(&1_i64).acquire(tx).await.expect("lock");
/// pglock_testing::assert_holds(tx, &JOBS, &1_i64, Mode::Exclusive).await;
/// # }
/// ```
pub async fn assert_holds<K, N>(conn: &mut PgConnection, namespace: &N, key: &K, mode: Mode)
where
    K: LockKey + ?Sized,
    N: NamespaceFor<K> + ?Sized,
{
    let lock = namespace.namespace().lock(key).with_mode(mode).identity();
    match holds(conn, namespace, key, mode).await {
        Ok(true) => {}
        Ok(false) => panic!("this session does not hold {lock}"),
        Err(error) => panic!("could not read pg_locks: {error}"),
    }
}
