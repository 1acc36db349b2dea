//! Taking transaction-scoped advisory locks.
//!
//! Every acquisition starts with one prepared try statement: when the lock
//! is free, that round trip is the whole cost. When it is busy, one event
//! says so and one more statement waits, with `lock_timeout` capped and then
//! restored inside that same statement.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgArguments, PgConnection};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Connection, Postgres, Row};

use crate::cancel::AbandonGuard;
use crate::keys::{MAX_MARKER_LABEL, Namespace, sanitize_marker_label};
use crate::statements::{self, Scope, Statements, TryStatus};
use crate::{Error, LockId, Mode};

/// How long an acquisition may wait for a busy lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Try once; a busy lock is an error ([`Error::Busy`]).
    No,
    /// `No` for a caller that reports the busy lock itself (the attribute's
    /// `skip`, which says "skipped"), so that one event is said, not two.
    NoSilently,
    /// Wait under the caller's own `lock_timeout`, untouched.
    Unbounded,
    /// Wait at most this long: `lock_timeout` is capped for the wait.
    AtMost(Duration),
}

impl Wait {
    /// The cap in whole milliseconds (sub-millisecond rounds up), or an
    /// error for what PostgreSQL can't express.
    pub(crate) fn cap_ms(self) -> Result<Option<u32>, Error> {
        let Wait::AtMost(timeout) = self else {
            return Ok(None);
        };
        let millis = timeout.as_nanos().div_ceil(1_000_000);
        if millis == 0 || millis > i32::MAX as u128 {
            return Err(Error::InvalidTimeout { timeout });
        }
        Ok(Some(millis as u32))
    }
}

/// What an acquisition observed.
///
/// ```
/// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
/// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
/// let acquired = JOBS.lock(&7_i64).acquire(tx).await?;
/// if let Some(waited) = acquired.waited() {
///     println!("waited {waited:?} for job 7");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquired {
    waited: Option<Duration>,
}

impl Acquired {
    /// How long the lock was waited for; `None` when it was free.
    ///
    /// ```no_run
    /// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// use std::time::Duration;
    /// let acquired = JOBS.lock(&7_i64).acquire(tx).await?;
    /// if acquired.waited().is_some_and(|waited| waited > Duration::from_secs(1)) {
    ///     eprintln!("job 7 was slow to lock");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// Whether the lock was busy at first.
    ///
    /// ```no_run
    /// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let acquired = JOBS.lock(&7_i64).acquire(tx).await?;
    /// assert_eq!(acquired.was_contended(), acquired.waited().is_some());
    /// # Ok(()) }
    /// ```
    pub fn was_contended(&self) -> bool {
        self.waited.is_some()
    }
}

/// A transaction-scoped advisory lock to take: made by [`Namespace::lock`],
/// configured, then acquired on a connection that is inside a transaction.
/// The lock ends with the transaction (commit or rollback), never earlier.
///
/// By default the lock is exclusive and the wait is bounded only by the
/// caller's own `lock_timeout` and `statement_timeout`.
///
/// ```no_run
/// use std::time::Duration;
/// use pglock_runtime::{Error, Namespace};
///
/// static INVOICES: Namespace = Namespace::named("billing:invoice");
///
/// async fn settle(pool: &sqlx::PgPool, invoice: uuid::Uuid) -> Result<(), Error> {
///     let mut tx = pool.begin().await?;
///     INVOICES
///         .lock(&invoice)
///         .timeout(Duration::from_secs(5))
///         .acquire(&mut tx)
///         .await?;
///     // ... the invoice is ours until the transaction ends ...
///     tx.commit().await?;
///     Ok(())
/// }
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use = "a lock request does nothing until it is acquired"]
pub struct XactLock<'ns> {
    namespace: &'ns Namespace,
    id: LockId,
    mode: Mode,
    wait: Wait,
    savepoint: bool,
}

impl<'ns> XactLock<'ns> {
    pub(crate) fn new(namespace: &'ns Namespace, key_value: i64) -> Self {
        Self {
            namespace,
            id: namespace.id_of_value(key_value),
            mode: Mode::Exclusive,
            wait: Wait::Unbounded,
            savepoint: false,
        }
    }

    /// Take the lock in shared mode.
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// assert_eq!(JOBS.lock(&1_i64).shared().mode(), pglock_runtime::Mode::Shared);
    /// ```
    pub fn shared(self) -> Self {
        self.with_mode(Mode::Shared)
    }

    /// Take the lock in the given mode.
    ///
    /// ```
    /// # use pglock_runtime::Mode;
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// assert_eq!(JOBS.lock(&1_i64).with_mode(Mode::Shared).mode(), Mode::Shared);
    /// ```
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Wait at most `timeout` for a busy lock: `lock_timeout` is capped for
    /// this wait only (a stricter setting of the caller's is kept) and
    /// restored exactly afterwards. Sub-millisecond parts round up; zero and
    /// more than `i32::MAX` milliseconds are refused with
    /// [`Error::InvalidTimeout`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let lock = JOBS.lock(&1_i64).timeout(Duration::from_millis(250));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.wait = Wait::AtMost(timeout);
        self
    }

    /// Don't wait: [`XactLock::acquire`] fails with [`Error::Busy`] when
    /// someone else holds the lock.
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let lock = JOBS.lock(&1_i64).no_wait();
    /// ```
    pub fn no_wait(mut self) -> Self {
        self.wait = Wait::No;
        self
    }

    /// Wait inside a savepoint, so that a conflict leaves the transaction
    /// usable, with every lock it held before. Costs nothing when the lock
    /// is free; a wait takes one round trip more on failure only.
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let lock = JOBS.lock(&1_i64).in_savepoint();
    /// ```
    pub fn in_savepoint(mut self) -> Self {
        self.savepoint = true;
        self
    }

    pub(crate) fn silence_busy(mut self) -> Self {
        if self.wait == Wait::No {
            self.wait = Wait::NoSilently;
        }
        self
    }

    /// The advisory lock id this request takes.
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// assert_eq!(JOBS.lock(&1_i64).id(), JOBS.id(&1_i64));
    /// ```
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The mode this request takes.
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// assert_eq!(JOBS.lock(&1_i64).mode(), pglock_runtime::Mode::Exclusive);
    /// ```
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Takes the lock, waiting as configured. `conn` must be inside a
    /// transaction block: pass `&mut tx` for a `sqlx::Transaction`.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when a wait ends without the lock, [`Error::Busy`]
    /// after [`XactLock::no_wait`], [`Error::NotInTransaction`],
    /// [`Error::Standby`], [`Error::LockTableFull`], [`Error::InvalidTimeout`]
    /// and [`Error::Database`].
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let mut tx = pool.begin().await?;
    /// JOBS.lock(&1_i64).acquire(&mut tx).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire(self, conn: &mut PgConnection) -> Result<Acquired, Error> {
        let cap_ms = self.wait.cap_ms()?;
        let statements = self.namespace.statements();
        let pid = match self.try_once(conn, statements).await? {
            TryStatus::Acquired => return Ok(Acquired { waited: None }),
            TryStatus::Busy { pid } => pid,
            TryStatus::Standby => return Err(Error::Standby),
        };
        let target = WaitTarget {
            namespace: self.namespace,
            id: self.id,
            mode: self.mode,
        };
        match self.wait {
            Wait::No => {
                target.report_not_waiting();
                return Err(self.busy());
            }
            Wait::NoSilently => return Err(self.busy()),
            Wait::Unbounded | Wait::AtMost(_) => {}
        }
        target.report_busy(cap_ms);
        let started = Instant::now();
        let outcome = target
            .wait(conn, Scope::Xact, cap_ms, self.savepoint, started, pid)
            .await;
        target.report_outcome(&outcome, started);
        outcome?;
        Ok(Acquired {
            waited: Some(started.elapsed()),
        })
    }

    /// Tries the lock once without waiting: `Ok(true)` when it is now held,
    /// `Ok(false)` when someone else holds it.
    ///
    /// ```no_run
    /// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// if !JOBS.lock(&1_i64).try_acquire(tx).await? {
    ///     println!("job 1 is running elsewhere");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire(self, conn: &mut PgConnection) -> Result<bool, Error> {
        match self.try_once(conn, self.namespace.statements()).await? {
            TryStatus::Acquired => Ok(true),
            TryStatus::Busy { .. } => Ok(false),
            TryStatus::Standby => Err(Error::Standby),
        }
    }

    async fn try_once(
        &self,
        conn: &mut PgConnection,
        statements: &Statements,
    ) -> Result<TryStatus, Error> {
        ensure_transaction(conn)?;
        try_lock(conn, statements, Scope::Xact, self.mode, self.id).await
    }

    fn busy(&self) -> Error {
        Error::Busy {
            namespace: self.namespace.label().to_owned(),
            id: self.id,
            mode: self.mode,
        }
    }
}

/// Several transaction-scoped locks taken together, in ascending id order
/// and de-duplicated (a key asked for in both modes is taken exclusively),
/// under one deadline. Because every caller takes its locks in the same
/// order, two sets can't deadlock each other.
///
/// When all are free, the whole set costs one round trip.
///
/// ```no_run
/// use std::time::Duration;
/// use pglock_runtime::{LockSet, Namespace};
///
/// static ACCOUNTS: Namespace = Namespace::named("ledger:account");
/// static BOOKS: Namespace = Namespace::named("ledger:book");
///
/// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
/// LockSet::new()
///     .exclusive(&ACCOUNTS, &17_i64)
///     .exclusive(&ACCOUNTS, &4_i64)
///     .shared(&BOOKS, "2026")
///     .timeout(Duration::from_secs(5))
///     .acquire(tx)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "a lock request does nothing until it is acquired"]
pub struct LockSet<'ns> {
    entries: Vec<WaitTarget<'ns>>,
    wait: Option<Wait>,
    savepoint: bool,
}

impl<'ns> LockSet<'ns> {
    /// An empty set.
    ///
    /// ```
    /// assert!(pglock_runtime::LockSet::new().ids().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an exclusive lock on `key` in `namespace`.
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let set = pglock_runtime::LockSet::new().exclusive(&JOBS, &1_i64);
    /// ```
    pub fn exclusive<K: crate::LockKey + ?Sized>(self, namespace: &'ns Namespace, key: &K) -> Self {
        self.with(namespace, key, Mode::Exclusive)
    }

    /// Adds a shared lock on `key` in `namespace`.
    ///
    /// ```
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let set = pglock_runtime::LockSet::new().shared(&JOBS, &1_i64);
    /// ```
    pub fn shared<K: crate::LockKey + ?Sized>(self, namespace: &'ns Namespace, key: &K) -> Self {
        self.with(namespace, key, Mode::Shared)
    }

    /// Adds a lock on `key` in `namespace` in the given mode.
    ///
    /// ```
    /// # use pglock_runtime::Mode;
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let set = pglock_runtime::LockSet::new().with(&JOBS, &1_i64, Mode::Shared);
    /// ```
    pub fn with<K: crate::LockKey + ?Sized>(
        mut self,
        namespace: &'ns Namespace,
        key: &K,
        mode: Mode,
    ) -> Self {
        self.entries.push(WaitTarget {
            namespace,
            id: namespace.id(key),
            mode,
        });
        self
    }

    /// Wait at most `timeout` in all, for however many of the locks are
    /// busy; see [`XactLock::timeout`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// let set = pglock_runtime::LockSet::new().timeout(Duration::from_secs(5));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.wait = Some(Wait::AtMost(timeout));
        self
    }

    /// Don't wait: all or nothing. When a key is busy, the set fails with
    /// [`Error::Busy`] naming it, and the keys taken before it are given
    /// back (the try runs in a savepoint). Costs two round trips.
    ///
    /// ```
    /// let set = pglock_runtime::LockSet::new().no_wait();
    /// ```
    pub fn no_wait(mut self) -> Self {
        self.wait = Some(Wait::No);
        self
    }

    pub(crate) fn silence_busy(mut self) -> Self {
        if self.wait == Some(Wait::No) {
            self.wait = Some(Wait::NoSilently);
        }
        self
    }

    /// Wait inside a savepoint; see [`XactLock::in_savepoint`].
    ///
    /// ```
    /// let set = pglock_runtime::LockSet::new().in_savepoint();
    /// ```
    pub fn in_savepoint(mut self) -> Self {
        self.savepoint = true;
        self
    }

    /// The ids that will be locked, in the order they will be taken.
    ///
    /// ```
    /// # use pglock_runtime::{LockId, LockSet, Namespace};
    /// static RAW: Namespace = Namespace::raw(0, "raw");
    /// let set = LockSet::new().exclusive(&RAW, &9_i64).shared(&RAW, &3_i64).shared(&RAW, &9_i64);
    /// assert_eq!(set.ids(), vec![LockId::BigInt(3), LockId::BigInt(9)]);
    /// ```
    pub fn ids(&self) -> Vec<LockId> {
        ordered(self.entries.clone())
            .into_iter()
            .map(|entry| entry.id)
            .collect()
    }

    /// Takes every lock of the set; see [`XactLock::acquire`]. A conflict
    /// names the lock whose wait failed.
    ///
    /// ```no_run
    /// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// JOBS.lock_many([3_i64, 1, 2]).acquire(tx).await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire(self, conn: &mut PgConnection) -> Result<Acquired, Error> {
        let wait = self.wait.unwrap_or(Wait::Unbounded);
        let cap_ms = wait.cap_ms()?;
        ensure_transaction(conn)?;
        let entries = ordered(self.entries);
        match entries.as_slice() {
            [] => return Ok(Acquired { waited: None }),
            // One key: the single-key statement is cheaper than the list's.
            [only] => {
                let lock = XactLock {
                    namespace: only.namespace,
                    id: only.id,
                    mode: only.mode,
                    wait,
                    savepoint: self.savepoint,
                };
                return lock.acquire(conn).await;
            }
            _ => {}
        }
        if matches!(wait, Wait::No | Wait::NoSilently) {
            return match try_all_or_nothing(conn, &entries).await? {
                None => Ok(Acquired { waited: None }),
                Some(busy) => {
                    let target = &entries[busy];
                    if wait == Wait::No {
                        target.report_not_waiting();
                    }
                    Err(Error::Busy {
                        namespace: target.namespace.label().to_owned(),
                        id: target.id,
                        mode: target.mode,
                    })
                }
            };
        }
        let try_prefix = try_prefix_statement(&entries);
        let deadline = cap_ms.map(|ms| Instant::now() + Duration::from_millis(ms.into()));
        let mut started: Option<Instant> = None;
        let mut next = 0;
        loop {
            let (taken, pid) = try_prefix_once(conn, &try_prefix, &entries[next..]).await?;
            next += taken;
            if next == entries.len() {
                return Ok(Acquired {
                    waited: started.map(|started| started.elapsed()),
                });
            }
            let target = &entries[next];
            // The remaining time, never less than the smallest cap: once the
            // deadline has passed, the server reports the conflict itself.
            let remaining_ms = deadline.map(|deadline| {
                let left = deadline.saturating_duration_since(Instant::now());
                left.as_millis().clamp(1, i32::MAX as u128) as u32
            });
            target.report_busy(remaining_ms);
            let wait_started = Instant::now();
            let first_wait = *started.get_or_insert(wait_started);
            let outcome = target
                .wait(
                    conn,
                    Scope::Xact,
                    remaining_ms,
                    self.savepoint,
                    first_wait,
                    pid,
                )
                .await;
            target.report_outcome(&outcome, wait_started);
            outcome?;
            next += 1;
        }
    }
}

/// Sorted by id and de-duplicated; of two requests for one id the exclusive
/// one wins (`Mode::Exclusive < Mode::Shared`).
fn ordered(mut entries: Vec<WaitTarget<'_>>) -> Vec<WaitTarget<'_>> {
    entries.sort_by_key(|entry| (entry.id, entry.mode));
    entries.dedup_by_key(|entry| entry.id);
    entries
}

fn try_prefix_statement(entries: &[WaitTarget<'_>]) -> std::sync::Arc<str> {
    let first = entries[0].namespace;
    if entries
        .iter()
        .all(|entry| std::ptr::eq(entry.namespace, first))
    {
        return first.statements().try_prefix();
    }
    std::sync::Arc::from(statements::try_prefix_for_marker(&set_marker(entries)))
}

/// The marker of a set: its namespaces' labels, sorted and bounded.
fn set_marker(entries: &[WaitTarget<'_>]) -> String {
    let mut labels: Vec<String> = entries
        .iter()
        .map(|entry| entry.namespace.marker_label())
        .collect();
    labels.sort();
    labels.dedup();
    let label = sanitize_marker_label(&labels.join(","));
    debug_assert!(label.chars().count() <= MAX_MARKER_LABEL);
    statements::marker(&label)
}

/// Tries every key without waiting, keeping all or none: a busy key must
/// not leave the keys before it held until the transaction ends (a skipped
/// batch job would otherwise keep the items it never touched). Returns the
/// index of the busy key, if any. Two round trips.
async fn try_all_or_nothing(
    conn: &mut PgConnection,
    entries: &[WaitTarget<'_>],
) -> Result<Option<usize>, Error> {
    let ids: Vec<(LockId, Mode)> = entries.iter().map(|entry| (entry.id, entry.mode)).collect();
    let sql = statements::try_all_or_nothing_sql(&set_marker(entries), &ids);
    let rows = sqlx::raw_sql(AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
        .map_err(Error::from_sqlx)?;
    let taken: i32 = rows
        .last()
        .ok_or_else(|| Error::Database(sqlx::Error::RowNotFound))?
        .try_get(0)
        .map_err(Error::from_sqlx)?;
    let all = usize::try_from(taken).is_ok_and(|taken| taken == entries.len());
    let finish = if all {
        statements::TRY_SAVEPOINT_RELEASE
    } else {
        statements::TRY_SAVEPOINT_ROLLBACK
    };
    sqlx::raw_sql(finish)
        .execute(&mut *conn)
        .await
        .map_err(Error::from_sqlx)?;
    match taken {
        statements::STANDBY => Err(Error::Standby),
        _ if all => Ok(None),
        taken => Ok(Some(
            usize::try_from(taken).expect("a count of locks taken"),
        )),
    }
}

async fn try_prefix_once(
    conn: &mut PgConnection,
    sql: &std::sync::Arc<str>,
    entries: &[WaitTarget<'_>],
) -> Result<(usize, i32), Error> {
    let mut bigints = Vec::with_capacity(entries.len());
    let mut classes = Vec::with_capacity(entries.len());
    let mut objects = Vec::with_capacity(entries.len());
    let mut shared = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry.id {
            LockId::BigInt(id) => {
                bigints.push(Some(id));
                classes.push(0);
                objects.push(0);
            }
            LockId::Pair(class, id) => {
                bigints.push(None);
                classes.push(class);
                objects.push(id);
            }
        }
        shared.push(entry.mode == Mode::Shared);
    }
    let (taken, pid): (i32, i32) = sqlx::query_as(AssertSqlSafe(sql.clone()))
        .bind(bigints)
        .bind(classes)
        .bind(objects)
        .bind(shared)
        .fetch_one(conn)
        .await
        .map_err(Error::from_sqlx)?;
    match taken {
        statements::STANDBY => Err(Error::Standby),
        taken => Ok((usize::try_from(taken).expect("a count of locks taken"), pid)),
    }
}

/// One prepared try statement: the whole cost of a free lock.
pub(crate) async fn try_lock(
    conn: &mut PgConnection,
    statements: &Statements,
    scope: Scope,
    mode: Mode,
    id: LockId,
) -> Result<TryStatus, Error> {
    let query =
        sqlx::query_scalar::<Postgres, i32>(AssertSqlSafe(statements.try_lock(scope, mode)));
    let code = bind_id_scalar(query, id)
        .fetch_one(conn)
        .await
        .map_err(Error::from_sqlx)?;
    Ok(TryStatus::from_code(code))
}

/// Outside a transaction block, a transaction-scoped lock would end with its
/// own statement. sqlx knows whether it began a transaction on this
/// connection, so the check costs no round trip. (A transaction begun by a
/// raw `BEGIN` is invisible to sqlx and refused too: the safe direction.)
fn ensure_transaction(conn: &PgConnection) -> Result<(), Error> {
    if conn.is_in_transaction() {
        Ok(())
    } else {
        Err(Error::NotInTransaction)
    }
}

/// One lock that may have to be waited for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitTarget<'ns> {
    pub(crate) namespace: &'ns Namespace,
    pub(crate) id: LockId,
    pub(crate) mode: Mode,
}

impl WaitTarget<'_> {
    pub(crate) async fn wait(
        &self,
        conn: &mut PgConnection,
        scope: Scope,
        cap_ms: Option<u32>,
        savepoint: bool,
        started: Instant,
        pid: i32,
    ) -> Result<(), Error> {
        let statements = self.namespace.statements();
        // A session wait's connection is closed with an abandoned future; a
        // transaction's is the caller's, so its wait must be cancelled.
        let mut abandon = AbandonGuard {
            pid,
            id: self.id,
            namespace: self.namespace.label(),
            armed: scope == Scope::Xact,
        };
        let result = match scope {
            Scope::Session => {
                let sql =
                    statements::session_wait_sql(statements.marker(), self.id, self.mode, cap_ms);
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(conn)
                    .await
                    .map(drop)
            }
            Scope::Xact if savepoint => self.wait_in_savepoint(conn, statements, cap_ms).await,
            Scope::Xact => {
                let query = match cap_ms {
                    Some(cap_ms) => bind_id(
                        sqlx::query(AssertSqlSafe(statements.xact_capped_wait(self.mode))),
                        self.id,
                    )
                    .bind(i64::from(cap_ms)),
                    None => bind_id(
                        sqlx::query(AssertSqlSafe(statements.xact_wait(self.mode))),
                        self.id,
                    ),
                };
                query.execute(conn).await.map(drop)
            }
        };
        abandon.armed = false;
        result.map_err(|error| {
            Error::from_wait(
                error,
                self.namespace.label(),
                self.id,
                self.mode,
                started.elapsed(),
            )
        })
    }

    async fn wait_in_savepoint(
        &self,
        conn: &mut PgConnection,
        statements: &Statements,
        cap_ms: Option<u32>,
    ) -> Result<(), sqlx::Error> {
        let sql = statements::savepoint_wait_sql(statements.marker(), self.id, self.mode, cap_ms);
        let error = match sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        // The failed wait left the transaction aborted; rolling back to the
        // savepoint makes it usable again, with the locks it held before.
        sqlx::raw_sql(statements::SAVEPOINT_ROLLBACK)
            .execute(conn)
            .await?;
        Err(error)
    }

    /// The one event of a busy lock that is not waited for.
    pub(crate) fn report_not_waiting(&self) {
        tracing::info!(
            target: "pglock",
            namespace = self.namespace.label(),
            key = %self.id,
            mode = %self.mode,
            outcome = "busy",
            "advisory lock is busy; not waiting"
        );
    }

    pub(crate) fn report_busy(&self, cap_ms: Option<u32>) {
        tracing::info!(
            target: "pglock",
            namespace = self.namespace.label(),
            key = %self.id,
            mode = %self.mode,
            timeout_ms = cap_ms,
            "advisory lock is busy; waiting"
        );
    }

    pub(crate) fn report_outcome(&self, outcome: &Result<(), Error>, started: Instant) {
        let waited_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(()) => tracing::info!(
                target: "pglock",
                namespace = self.namespace.label(),
                key = %self.id,
                mode = %self.mode,
                waited_ms,
                outcome = "acquired",
                "advisory lock acquired after waiting"
            ),
            Err(error) => tracing::warn!(
                target: "pglock",
                namespace = self.namespace.label(),
                key = %self.id,
                mode = %self.mode,
                waited_ms,
                outcome = "failed",
                error = %error,
                "advisory lock not acquired"
            ),
        }
    }
}

fn bind_id(
    query: Query<'_, Postgres, PgArguments>,
    id: LockId,
) -> Query<'_, Postgres, PgArguments> {
    match id {
        LockId::BigInt(id) => query.bind(id),
        LockId::Pair(class, id) => query.bind(class).bind(id),
    }
}

fn bind_id_scalar<O>(
    query: sqlx::query::QueryScalar<'_, Postgres, O, PgArguments>,
    id: LockId,
) -> sqlx::query::QueryScalar<'_, Postgres, O, PgArguments> {
    match id {
        LockId::BigInt(id) => query.bind(id),
        LockId::Pair(class, id) => query.bind(class).bind(id),
    }
}

/// An open PostgreSQL transaction that `#[pglock::advisory_lock]` can take
/// its lock in: `sqlx::Transaction<'_, Postgres>`, or an application's own
/// type that wraps one.
///
/// A transaction-scoped advisory lock lasts until the transaction ends, so
/// only a connection inside a transaction block can hold one: a pool or a
/// bare connection can't (a bare connection that is not in a transaction
/// block makes the acquisition fail with [`Error::NotInTransaction`]).
///
/// ```no_run
/// use pglock_runtime::XactConnection;
/// use sqlx::{PgConnection, Postgres, Transaction};
///
/// /// The application's unit of work: a transaction plus what it touched.
/// struct UnitOfWork<'c> {
///     tx: Transaction<'c, Postgres>,
///     touched: Vec<i64>,
/// }
///
/// impl XactConnection for UnitOfWork<'_> {
///     fn connection(&mut self) -> &mut PgConnection {
///         &mut self.tx
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a transaction that an advisory lock can be taken in",
    label = "expected `&mut sqlx::Transaction<'_, Postgres>` here",
    note = "a transaction-scoped advisory lock lasts until its transaction ends, so `#[advisory_lock]` needs an open transaction: `tx: &mut sqlx::Transaction<'_, sqlx::Postgres>`",
    note = "begin one from a pool with `pool.begin().await?`; a type that wraps a transaction can implement `pglock::XactConnection`"
)]
pub trait XactConnection {
    /// The connection the transaction runs on, to send the lock statement.
    ///
    /// ```no_run
    /// use pglock_runtime::XactConnection;
    ///
    /// async fn backend_pid(tx: &mut impl XactConnection) -> Result<i32, sqlx::Error> {
    ///     sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(tx.connection()).await
    /// }
    /// ```
    fn connection(&mut self) -> &mut PgConnection;
}

impl XactConnection for sqlx::Transaction<'_, Postgres> {
    fn connection(&mut self) -> &mut PgConnection {
        self
    }
}
