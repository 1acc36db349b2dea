//! Who holds which advisory lock, and who waits for it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use sqlx::{Executor, Postgres};

use crate::contract::family::NamespaceFor;
use crate::contract::id::LockId;
use crate::contract::key::LockKey;
use crate::contract::mode::Mode;
use crate::contract::permit::{PermitIds, base_of, permit_index};
use crate::error::Error;
use crate::sql::{marker, pg_locks};

/// Every advisory lock of the current database, held and awaited, decoded.
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// let inspection = pglock_runtime::inspect(pool).await?;
/// for lock in inspection.waiting() {
///     println!(
///         "pid {} waits {:?} for {} in {} behind {:?}",
///         lock.pid(),
///         lock.waited().unwrap_or_default(),
///         lock.id(),
///         lock.namespace().unwrap_or("?"),
///         lock.blocked_by(),
///     );
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Inspection {
    locks: Vec<LockRow>,
    prepared: Vec<PreparedLock>,
    semaphores: Vec<SemaphoreRow>,
    queries_visible: bool,
}

impl Inspection {
    /// Every lock row: holders first, then waiters in the order they began
    /// waiting, grouped by lock id. (A semaphore's waiters in the order
    /// their current turn began: each turn queues anew.)
    pub fn locks(&self) -> &[LockRow] {
        &self.locks
    }

    /// The locks being waited for.
    pub fn waiting(&self) -> impl Iterator<Item = &LockRow> {
        self.locks.iter().filter(|lock| !lock.granted)
    }

    /// Locks held by prepared (two-phase) transactions, which no backend
    /// owns: they last until `COMMIT PREPARED` or `ROLLBACK PREPARED`, even
    /// across server restarts, and are easy to forget. (`pg_locks` does not
    /// say which prepared transaction holds which lock; `pg_prepared_xacts`
    /// lists the candidates.)
    pub fn prepared(&self) -> &[PreparedLock] {
        &self.prepared
    }

    /// The locks held.
    pub fn held(&self) -> impl Iterator<Item = &LockRow> {
        self.locks.iter().filter(|lock| lock.granted)
    }

    /// Whether this role could read the queries of every backend listed.
    /// When it can't (other roles' sessions, without `pg_read_all_stats`),
    /// those backends' namespaces are unknown; grant `pg_read_all_stats` to
    /// the inspecting role to see them.
    pub fn queries_visible(&self) -> bool {
        self.queries_visible
    }

    /// The semaphores the inspection recognised, one row each, with their
    /// permits' rows out of [`plain_locks`](Self::plain_locks).
    ///
    /// A row is known to be a permit when a backend's statement says so:
    /// a backend waiting for a permit runs a semaphore's wait, whose marker
    /// names the namespace and N (what it holds besides was taken before:
    /// plain locks, unless shown otherwise); a backend outside a
    /// transaction that holds one advisory lock and whose last statement
    /// was a semaphore's try or wait holds a permit. (In a transaction, the
    /// one lock held may be a plain lock taken before a try that found no
    /// permit free, so it is not taken for a permit.) Then every row that shares its base (its id with the low 10
    /// bits cleared, see `docs/KEYS.md`) is a permit of the same semaphore,
    /// whatever its backend ran since. A semaphore whose holders have all
    /// run other statements since, and that no one waits for, looks like
    /// separate locks: [`Inspection::semaphore`] finds it by its key.
    pub fn semaphores(&self) -> &[SemaphoreRow] {
        &self.semaphores
    }

    /// The lock rows that are no permit of a recognised semaphore.
    pub fn plain_locks(&self) -> impl Iterator<Item = &LockRow> {
        self.locks.iter().filter(|lock| lock.semaphore.is_none())
    }

    /// The semaphore of `permits` permits on `key`, as one row, for a caller
    /// who knows it: its held permits and its waiters, recognised or not.
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
    /// static IMPORTS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("imports:tenant");
    /// let inspection = pglock_runtime::inspect(pool).await?;
    /// let imports = inspection.semaphore(&IMPORTS, &"acme", 3)?;
    /// println!("{imports}"); // imports:tenant (permits of …): 2 of 3 held, 1 waiting
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPermits`] unless `permits` is within `1..=1024`.
    pub fn semaphore<K, N>(
        &self,
        namespace: &N,
        key: &K,
        permits: u32,
    ) -> Result<SemaphoreRow, Error>
    where
        K: LockKey + ?Sized,
        N: NamespaceFor<K> + ?Sized,
    {
        let namespace = namespace.namespace();
        let ids = PermitIds::new(namespace.id(key), permits)?;
        let mut row = SemaphoreRow::new(ids.base(), Some(namespace.label().to_owned()));
        row.permits = Some(permits);
        for lock in self
            .locks
            .iter()
            .filter(|lock| ids.index_of(lock.id).is_some())
        {
            row.add(lock);
        }
        for lock in &self.prepared {
            if let Some(index) = ids.index_of(lock.id) {
                row.add_prepared(index);
            }
        }
        Ok(row)
    }
}

/// A semaphore, as one row: which of its permits are held, by whom, and
/// who waits; see [`Inspection::semaphores`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SemaphoreRow {
    namespace: Option<String>,
    base: LockId,
    permits: Option<u32>,
    holders: Vec<(u32, i32)>,
    prepared: Vec<u32>,
    waiters: Vec<i32>,
}

impl SemaphoreRow {
    fn new(base: LockId, namespace: Option<String>) -> Self {
        Self {
            namespace,
            base,
            permits: None,
            holders: Vec::new(),
            prepared: Vec::new(),
            waiters: Vec::new(),
        }
    }

    fn add_prepared(&mut self, index: u32) {
        if let Err(at) = self.prepared.binary_search(&index) {
            self.prepared.insert(at, index);
        }
    }

    fn add(&mut self, lock: &LockRow) {
        let index = permit_index(self.base, lock.id).expect("a permit of this base");
        if lock.granted {
            self.holders.push((index, lock.pid));
            self.holders.sort_unstable();
        } else if let Err(at) = self.waiters.binary_search(&lock.pid) {
            self.waiters.insert(at, lock.pid);
        }
    }

    /// The namespace, when a marker (or the caller) named it.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The semaphore's permit 0, whose high bits every permit shares.
    pub fn base(&self) -> LockId {
        self.base
    }

    /// N, when a waiter's marker (or the caller) said it; the largest if
    /// waiters said several (a misuse, see [`Error::PermitsMismatch`]).
    pub fn permits(&self) -> Option<u32> {
        self.permits
    }

    /// k: how many of its permits are held, by backends or by prepared
    /// transactions.
    pub fn held(&self) -> usize {
        self.holders.len() + self.prepared.len()
    }

    /// The permits held by backends, by index: (index, pid of the holder).
    pub fn holders(&self) -> &[(u32, i32)] {
        &self.holders
    }

    /// The permits held by prepared (two-phase) transactions, which no
    /// backend owns (see [`Inspection::prepared`]), by index.
    pub fn prepared(&self) -> &[u32] {
        &self.prepared
    }

    /// The backends waiting for a permit, by pid. (Not in the order they
    /// began: a semaphore's wait queues anew for its permit every slice.)
    pub fn waiters(&self) -> &[i32] {
        &self.waiters
    }
}

/// `namespace (permits of <base>): k of N held, w waiting`; `?` for what
/// is unknown.
impl fmt::Display for SemaphoreRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let namespace = self.namespace.as_deref().unwrap_or("?");
        write!(
            f,
            "{namespace} (permits of {}): {} of ",
            self.base,
            self.held()
        )?;
        match self.permits {
            Some(permits) => write!(f, "{permits}")?,
            None => f.write_str("?")?,
        }
        write!(f, " held, {} waiting", self.waiters.len())
    }
}

/// One row of `pg_locks` for an advisory lock.
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
/// let inspection = pglock_runtime::inspect(pool).await?;
/// let holder = inspection.held().find(|lock| lock.id() == JOBS.id(&7_i64));
/// if let Some(lock) = holder {
///     println!("job 7 is held by pid {}", lock.pid());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRow {
    pid: i32,
    id: LockId,
    mode: Option<Mode>,
    granted: bool,
    waited: Option<Duration>,
    blocked_by: Vec<i32>,
    namespace: Option<String>,
    application_name: Option<String>,
    client_addr: Option<IpAddr>,
    state: Option<String>,
    time_in_state: Option<Duration>,
    transaction_age: Option<Duration>,
    semaphore: Option<LockId>,
}

impl LockRow {
    /// The base of the semaphore this row is a permit of, when the
    /// inspection recognised one ([`Inspection::semaphores`]).
    pub fn semaphore(&self) -> Option<LockId> {
        self.semaphore
    }

    /// The backend's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The lock id, decoded from the row (see [`crate::pg_locks`]).
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The mode held or asked for; `None` for a mode no advisory function
    /// takes.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// Whether the lock is held (rather than waited for).
    pub fn granted(&self) -> bool {
        self.granted
    }

    /// How long the backend has waited, for a waiter. (A semaphore's
    /// waiter has waited since its wait's statement began: it queues anew
    /// for its permit every slice, and `pg_locks` dates it from the last.)
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// The backends this waiter waits for (`pg_blocking_pids`).
    pub fn blocked_by(&self) -> &[i32] {
        &self.blocked_by
    }

    /// The namespace, when a waiting statement's marker names it (a holder
    /// gets the namespace of a waiter on the same id).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The backend's `application_name`, when visible.
    pub fn application_name(&self) -> Option<&str> {
        self.application_name.as_deref()
    }

    /// The client's IP address; `None` over a unix socket, or when hidden.
    pub fn client_addr(&self) -> Option<IpAddr> {
        self.client_addr
    }

    /// The backend's state (`active`, `idle in transaction`, ...), when visible.
    pub fn state(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// How long the backend has been in its [`state`](Self::state), when visible.
    pub fn time_in_state(&self) -> Option<Duration> {
        self.time_in_state
    }

    /// How long the backend's transaction has run; `None` outside one, or when hidden.
    pub fn transaction_age(&self) -> Option<Duration> {
        self.transaction_age
    }
}

/// An advisory lock held by a prepared transaction; see
/// [`Inspection::prepared`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedLock {
    id: LockId,
    mode: Option<Mode>,
}

impl PreparedLock {
    /// The lock id held.
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The mode held.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }
}

type Row = (
    Option<i32>,
    i16,
    i64,
    String,
    bool,
    Option<f64>,
    Vec<i32>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

/// What PostgreSQL shows instead of another role's query.
const HIDDEN_QUERY: &str = "<insufficient privilege>";

/// Lists the database's advisory locks, held and awaited; see
/// [`Inspection`]. Needs no superuser: without `pg_read_all_stats`, other
/// roles' queries are hidden, which [`Inspection::queries_visible`] reports.
///
/// ```no_run
/// # async fn run(pool: &sqlx::PgPool) -> Result<(), pglock_runtime::Error> {
/// let inspection = pglock_runtime::inspect(pool).await?;
/// println!("{} advisory locks", inspection.locks().len());
/// # Ok(()) }
/// ```
pub async fn inspect<'c, E>(executor: E) -> Result<Inspection, Error>
where
    E: Executor<'c, Database = Postgres>,
{
    let rows: Vec<Row> = sqlx::query_as(pg_locks::INSPECT)
        .fetch_all(executor)
        .await
        .map_err(Error::from_sqlx)?;
    let mut queries_visible = true;
    let mut locks = Vec::new();
    // What each row's backend's statement says of a semaphore.
    let mut marks: Vec<Option<SemaphoreMark>> = Vec::new();
    let mut prepared = Vec::new();
    for (
        pid,
        objsubid,
        encoded,
        mode,
        granted,
        waited,
        blocked_by,
        query,
        application_name,
        client_addr,
        state,
        time_in_state,
        transaction_age,
        statement_age,
    ) in rows
    {
        let Some(id) = pg_locks::decode(encoded, objsubid) else {
            continue;
        };
        let mode = pg_locks::mode(&mode);
        // No backend: a prepared transaction holds it.
        let Some(pid) = pid else {
            prepared.push(PreparedLock { id, mode });
            continue;
        };
        let hidden = query.as_deref() == Some(HIDDEN_QUERY);
        queries_visible &= !hidden;
        let mark = query.as_deref().and_then(|query| {
            Some(SemaphoreMark {
                permits: marker::parse_permits(query)?,
                namespace: marker::parse(query).map(str::to_owned),
            })
        });
        // A semaphore's wait queues anew for its permit every slice, so
        // `pg_locks` dates its wait from its last slice: it has waited
        // since its statement began.
        let waited = match &mark {
            Some(SemaphoreMark {
                permits: Some(_), ..
            }) if !granted => statement_age.or(waited),
            _ => waited,
        };
        marks.push(mark);
        locks.push(LockRow {
            pid,
            id,
            mode,
            granted,
            waited: waited.map(seconds),
            blocked_by,
            // A backend waits for one lock at a time, so a waiter's marker
            // names the namespace of this very lock.
            namespace: if granted {
                None
            } else {
                query.as_deref().and_then(marker::parse).map(str::to_owned)
            },
            application_name: application_name.filter(|_| !hidden),
            client_addr: client_addr.and_then(|addr| addr.parse().ok()),
            state,
            time_in_state: time_in_state.map(seconds),
            transaction_age: transaction_age.map(seconds),
            semaphore: None,
        });
    }
    for index in 0..locks.len() {
        if locks[index].namespace.is_none() {
            let id = locks[index].id;
            locks[index].namespace = locks
                .iter()
                .find(|other| other.id == id && other.namespace.is_some())
                .and_then(|other| other.namespace.clone());
        }
    }
    let semaphores = recognise_semaphores(&mut locks, &marks, &prepared);
    Ok(Inspection {
        locks,
        prepared,
        semaphores,
        queries_visible,
    })
}

/// What a backend's statement says of a semaphore: its marker's number of
/// permits (`None` for a try, which is prepared for every N) and namespace.
struct SemaphoreMark {
    permits: Option<u32>,
    namespace: Option<String>,
}

/// Finds the semaphores `marks` (what each row's statement says of one)
/// make known, marks their rows, and returns them; see
/// [`Inspection::semaphores`].
fn recognise_semaphores(
    locks: &mut [LockRow],
    marks: &[Option<SemaphoreMark>],
    prepared: &[PreparedLock],
) -> Vec<SemaphoreRow> {
    let mut held_by: HashMap<i32, usize> = HashMap::new();
    for lock in locks.iter().filter(|lock| lock.granted) {
        *held_by.entry(lock.pid).or_default() += 1;
    }
    let waiting: HashSet<i32> = locks
        .iter()
        .filter(|lock| !lock.granted)
        .map(|lock| lock.pid)
        .collect();
    let mut known: Vec<SemaphoreRow> = Vec::new();
    for (lock, mark) in locks.iter().zip(marks) {
        let Some(mark) = mark else { continue };
        // A waiter waits for one lock: its statement's; what it holds was
        // taken before (a plain lock its transaction holds, say). A
        // holder's last statement took one of its locks, the only one, if
        // it holds one and that statement took anything: a try that found
        // no permit free (or a wait that timed out) leaves the lock taken
        // before it. Outside a transaction that lock is a session's, on a
        // connection a session permit's guard owns; in a transaction it is
        // as likely a plain lock taken before a failed try.
        if lock.granted
            && (waiting.contains(&lock.pid)
                || held_by.get(&lock.pid) != Some(&1)
                || lock.transaction_age.is_some())
        {
            continue;
        }
        let base = base_of(lock.id);
        let row = match known.iter_mut().position(|row| row.base == base) {
            Some(index) => &mut known[index],
            None => {
                known.push(SemaphoreRow::new(base, None));
                known.last_mut().expect("just pushed")
            }
        };
        row.permits = row.permits.max(mark.permits);
        if row.namespace.is_none() {
            row.namespace = mark.namespace.clone();
        }
    }
    for lock in locks.iter_mut() {
        let base = base_of(lock.id);
        if let Some(row) = known.iter_mut().find(|row| row.base == base) {
            lock.semaphore = Some(base);
            row.add(lock);
            if row.namespace.is_none() {
                row.namespace = lock.namespace.clone();
            }
        }
    }
    for lock in prepared {
        let base = base_of(lock.id);
        if let Some(row) = known.iter_mut().find(|row| row.base == base) {
            let index = permit_index(base, lock.id).expect("a permit of this base");
            row.add_prepared(index);
        }
    }
    known
}

/// A span the server measured in seconds, as a `Duration` (never negative).
fn seconds(secs: f64) -> Duration {
    Duration::from_secs_f64(secs.max(0.0))
}
