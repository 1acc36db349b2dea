//! Transaction-scoped locks on several keys at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row, Transaction};

use crate::contract::family::{LockFamily, NamespaceFor};
use crate::contract::id::LockId;
use crate::contract::key::LockKey;
use crate::contract::mode::Mode;
use crate::contract::namespace::Namespace;
use crate::engine::begin::begin_with;
use crate::engine::contention;
use crate::engine::measure::{self, Outcome};
use crate::engine::wait::{Wait, Waiter, ensure_transaction};
use crate::error::Error;
use crate::front::xact_lock::{Acquired, XactLock};
use crate::sql::begin::{self, Raised};
use crate::sql::marker;
use crate::sql::statements::{self, Scope};

impl Namespace {
    /// Transaction-scoped exclusive locks on several keys of this namespace
    /// at once, taken in ascending id order; see [`XactLockSet`].
    ///
    /// ```no_run
    /// # use pglock_runtime::Namespace;
    /// # async fn transfer(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// static ACCOUNTS: Namespace = Namespace::named("ledger:account");
    /// ACCOUNTS.lock_many([17_i64, 4]).acquire(tx).await?;
    /// # Ok(()) }
    /// ```
    pub fn lock_many<K, I>(&self, keys: I) -> XactLockSet<'_>
    where
        K: LockKey,
        I: IntoIterator<Item = K>,
    {
        let keys = keys.into_iter();
        let set = XactLockSet::with_capacity(keys.size_hint().0);
        keys.fold(set, |set, key| set.exclusive(self, &key))
    }
}

impl<K: LockKey + ?Sized> LockFamily<K> {
    /// Transaction-scoped exclusive locks on several keys of this family;
    /// see [`Namespace::lock_many`]. The keys are `K`s or references to them.
    ///
    /// ```no_run
    /// # use pglock_runtime::LockFamily;
    /// # async fn transfer(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
    /// static ACCOUNTS: LockFamily<i64> = LockFamily::named("ledger:account");
    /// ACCOUNTS.lock_many([17, 4]).acquire(tx).await?;
    /// # Ok(()) }
    /// ```
    pub fn lock_many<Q, I>(&self, keys: I) -> XactLockSet<'_>
    where
        Q: LockKey,
        Self: NamespaceFor<Q>,
        I: IntoIterator<Item = Q>,
    {
        let keys = keys.into_iter();
        let set = XactLockSet::with_capacity(keys.size_hint().0);
        keys.fold(set, |set, key| set.exclusive(self, &key))
    }
}

/// Several transaction-scoped locks taken together, in ascending id order
/// and de-duplicated (a key asked for in both modes is taken exclusively),
/// under one deadline. Because every caller takes its locks in the same
/// order, two sets can't deadlock each other, and no caller ever holds a
/// higher key while it waits for a lower one.
///
/// When all are free, the whole set costs one round trip.
///
/// ```no_run
/// use std::time::Duration;
/// use pglock_runtime::{LockFamily, Namespace, XactLockSet};
///
/// static ACCOUNTS: LockFamily<i64> = LockFamily::named("ledger:account");
/// static BOOKS: Namespace = Namespace::named("ledger:book");
///
/// # async fn run(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock_runtime::Error> {
/// XactLockSet::new()
///     .exclusive(&ACCOUNTS, &17)
///     .exclusive(&ACCOUNTS, &4)
///     .shared(&BOOKS, "2026")
///     .timeout(Duration::from_secs(5))
///     .acquire(tx)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "a lock request does nothing until it is acquired"]
pub struct XactLockSet<'ns> {
    entries: Vec<Waiter<'ns>>,
    wait: Option<Wait>,
    savepoint: bool,
}

impl<'ns> XactLockSet<'ns> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_capacity(keys: usize) -> Self {
        Self {
            entries: Vec::with_capacity(keys),
            ..Self::default()
        }
    }

    /// Adds an exclusive lock on `key` in `namespace` (a [`Namespace`], or a
    /// [`LockFamily`] of the key's type).
    pub fn exclusive<K, N>(self, namespace: &'ns N, key: &K) -> Self
    where
        K: LockKey + ?Sized,
        N: NamespaceFor<K> + ?Sized,
    {
        self.with(namespace, key, Mode::Exclusive)
    }

    /// Adds a shared lock on `key` in `namespace`.
    pub fn shared<K, N>(self, namespace: &'ns N, key: &K) -> Self
    where
        K: LockKey + ?Sized,
        N: NamespaceFor<K> + ?Sized,
    {
        self.with(namespace, key, Mode::Shared)
    }

    /// Adds a lock on `key` in `namespace` in the given mode.
    pub fn with<K, N>(mut self, namespace: &'ns N, key: &K, mode: Mode) -> Self
    where
        K: LockKey + ?Sized,
        N: NamespaceFor<K> + ?Sized,
    {
        let namespace = namespace.namespace();
        self.entries.push(Waiter {
            namespace,
            id: namespace.id(key),
            mode,
        });
        self
    }

    /// Wait at most `timeout` in all, for however many of the locks are
    /// busy; see [`XactLock::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.wait = Some(Wait::AtMost(timeout));
        self
    }

    /// Don't wait: all or nothing. When a key is busy, the set fails with
    /// [`Error::Busy`] naming it, and the keys taken before it are given
    /// back (the try runs in a savepoint). Costs two round trips.
    pub fn no_wait(mut self) -> Self {
        self.wait = Some(Wait::No);
        self
    }

    pub(crate) fn silence_busy(mut self) -> Self {
        self.wait = self.wait.map(Wait::silenced);
        self
    }

    /// Wait inside a savepoint; see [`XactLock::in_savepoint`].
    pub fn in_savepoint(mut self) -> Self {
        self.savepoint = true;
        self
    }

    /// The ids that will be locked, in the order they will be taken.
    ///
    /// ```
    /// # use pglock_runtime::{LockId, Namespace, XactLockSet};
    /// static RAW: Namespace = Namespace::raw(0, "raw");
    /// let set = XactLockSet::new().exclusive(&RAW, &9_i64).shared(&RAW, &3_i64).shared(&RAW, &9_i64);
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
            [] => return Ok(Acquired::FREE),
            // One key: the single-key statement is cheaper than the list's.
            [only] => {
                let mut lock = XactLock::new(only.namespace, only.id)
                    .with_mode(only.mode)
                    .with_wait(wait);
                if self.savepoint {
                    lock = lock.in_savepoint();
                }
                return lock.acquire(conn).await;
            }
            _ => {}
        }
        if wait.is_no_wait() {
            return match try_all_or_nothing(conn, &entries).await? {
                None => {
                    count_acquired(&entries);
                    Ok(Acquired::FREE)
                }
                Some(busy) => Err(entries[busy].busy(wait)),
            };
        }
        let try_prefix = try_prefix_statement(&entries);
        let deadline = cap_ms.map(|ms| Instant::now() + Duration::from_millis(ms.into()));
        let mut started: Option<Instant> = None;
        let mut next = 0;
        loop {
            let (taken, pid) = try_prefix_once(conn, &try_prefix, &entries[next..]).await?;
            count_acquired(&entries[next..next + taken]);
            next += taken;
            if next == entries.len() {
                return Ok(match started {
                    Some(started) => Acquired::after_waiting_since(started),
                    None => Acquired::FREE,
                });
            }
            // The remaining time, never less than the smallest cap: once the
            // deadline has passed, the server reports the conflict itself.
            let remaining_ms = deadline.map(|deadline| {
                let left = deadline.saturating_duration_since(Instant::now());
                left.as_millis().clamp(1, i32::MAX as u128) as u32
            });
            let first_wait = *started.get_or_insert_with(Instant::now);
            entries[next]
                .wait(
                    conn,
                    Scope::Xact,
                    remaining_ms,
                    self.savepoint,
                    first_wait,
                    pid,
                )
                .await?;
            next += 1;
        }
    }
}

impl XactLockSet<'_> {
    /// Begins a transaction on `pool` that already holds every lock of the
    /// set; see [`XactLock::begin`]. When every key is free, the tries and
    /// `BEGIN` go in one message: one round trip in all. A busy key gives
    /// back the keys taken before it; the set is then acquired as
    /// [`acquire`](Self::acquire) does, in a transaction begun for it (so a
    /// wait costs two round trips more), and straight away next time while
    /// the key is remembered as busy lately. After [`no_wait`](Self::no_wait)
    /// a busy key is [`Error::Busy`] at once. The connection is taken as
    /// `pool.begin()` takes it; a failure leaves no transaction behind.
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// # static ACCOUNTS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("ledger:account");
    /// let tx = ACCOUNTS.lock_many([4_i64, 17]).begin(pool).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn begin(self, pool: &PgPool) -> Result<Transaction<'static, Postgres>, Error> {
        let wait = self.wait.unwrap_or(Wait::Unbounded);
        wait.cap_ms()?;
        let entries = ordered(self.entries.clone());
        match entries.as_slice() {
            [] => return Ok(pool.begin().await?),
            [only] => {
                return XactLock::new(only.namespace, only.id)
                    .with_mode(only.mode)
                    .with_wait(wait)
                    .begin(pool)
                    .await;
            }
            _ => {}
        }
        // A set with a key found busy lately would most likely fail the
        // one-message try: it goes straight to the tries and waits.
        if !entries.iter().any(|entry| contention::expected(entry.id)) {
            let ids: Vec<(LockId, Mode)> =
                entries.iter().map(|entry| (entry.id, entry.mode)).collect();
            let sql = begin::set_tried_sql(&set_marker(&entries), &ids);
            match begin_with(pool.acquire().await?, sql).await {
                Ok(tx) => {
                    count_acquired(&entries);
                    return Ok(tx);
                }
                Err(error) => match begin::raised(&error) {
                    Some(Raised::Standby) => return Err(Error::Standby),
                    Some(Raised::SetBusyAfter(taken)) if taken < entries.len() => {
                        contention::found_busy(entries[taken].id);
                        if wait.is_no_wait() {
                            return Err(entries[taken].busy(wait));
                        }
                    }
                    _ => return Err(Error::from_sqlx(error)),
                },
            }
        }
        let mut tx = pool.begin().await?;
        self.acquire(&mut tx).await?;
        Ok(tx)
    }
}

/// Counts the locks taken without a wait.
fn count_acquired(entries: &[Waiter<'_>]) {
    for entry in entries {
        measure::acquisition(
            entry.namespace.shared_label(),
            entry.mode,
            Outcome::Acquired,
        );
    }
}

/// Sorted by id and de-duplicated; of two requests for one id the exclusive
/// one wins (`Mode::Exclusive < Mode::Shared`).
fn ordered(mut entries: Vec<Waiter<'_>>) -> Vec<Waiter<'_>> {
    // Entries with equal keys are interchangeable: an unstable sort will do.
    entries.sort_unstable_by_key(|entry| (entry.id, entry.mode));
    entries.dedup_by_key(|entry| entry.id);
    entries
}

/// The try statement of a set, and what it binds.
enum PrefixTry {
    /// Exclusive bigint ids of one namespace, the usual set: one array.
    Exclusive(Arc<str>),
    /// Any ids and modes: the ids, the pairs and the modes as four arrays.
    Any(Arc<str>),
}

/// The try statement of a set: its namespace's, prepared once per
/// connection, when every key is in one namespace.
fn try_prefix_statement(entries: &[Waiter<'_>]) -> PrefixTry {
    let first = entries[0].namespace;
    if entries
        .iter()
        .all(|entry| std::ptr::eq(entry.namespace, first))
    {
        let statements = first.statements();
        return match statements.try_prefix_exclusive() {
            Some(sql) if entries.iter().all(|entry| entry.mode == Mode::Exclusive) => {
                PrefixTry::Exclusive(sql)
            }
            _ => PrefixTry::Any(statements.try_prefix()),
        };
    }
    PrefixTry::Any(Arc::from(statements::try_prefix_for_marker(&set_marker(
        entries,
    ))))
}

/// The marker of a set: its namespaces' labels.
fn set_marker(entries: &[Waiter<'_>]) -> String {
    marker::comment_for_labels(
        entries
            .iter()
            .map(|entry| entry.namespace.statements().label()),
    )
}

/// Tries every key without waiting, keeping all or none: a busy key must
/// not leave the keys before it held until the transaction ends (a skipped
/// batch job would otherwise keep the items it never touched). Returns the
/// index of the busy key, if any. Two round trips.
async fn try_all_or_nothing(
    conn: &mut PgConnection,
    entries: &[Waiter<'_>],
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

/// Tries the keys in order, stopping at the first busy one: returns how
/// many were taken, and the backend's pid.
async fn try_prefix_once(
    conn: &mut PgConnection,
    statement: &PrefixTry,
    entries: &[Waiter<'_>],
) -> Result<(usize, i32), Error> {
    let sql = match statement {
        PrefixTry::Any(sql) => sql,
        PrefixTry::Exclusive(sql) => {
            let ids: Vec<i64> = entries
                .iter()
                .filter_map(|entry| entry.id.bigint())
                .collect();
            let row = sqlx::query_as(AssertSqlSafe(sql.clone()))
                .bind(ids)
                .fetch_one(conn)
                .await;
            return prefix_taken(row);
        }
    };
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
    let row = sqlx::query_as(AssertSqlSafe(sql.clone()))
        .bind(bigints)
        .bind(classes)
        .bind(objects)
        .bind(shared)
        .fetch_one(conn)
        .await;
    prefix_taken(row)
}

/// How many locks a try of a list took, and the backend's pid.
fn prefix_taken(row: Result<(i32, i32), sqlx::Error>) -> Result<(usize, i32), Error> {
    let (taken, pid) = row.map_err(Error::from_sqlx)?;
    match taken {
        statements::STANDBY => Err(Error::Standby),
        taken => Ok((usize::try_from(taken).expect("a count of locks taken"), pid)),
    }
}
