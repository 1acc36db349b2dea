//! Who holds which advisory lock, and who waits for it.

use std::net::IpAddr;
use std::time::Duration;

use sqlx::{Executor, Postgres};

use crate::{Error, LockId, Mode};

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
    locks: Vec<AdvisoryLock>,
    prepared: Vec<PreparedLock>,
    queries_visible: bool,
}

impl Inspection {
    /// Every lock row: holders first, then waiters in the order they began
    /// waiting, grouped by lock id.
    ///
    /// ```no_run
    /// # fn run(inspection: &pglock_runtime::Inspection) {
    /// for lock in inspection.locks() {
    ///     let what = if lock.granted() { "holds" } else { "waits for" };
    ///     println!("pid {} {what} {}", lock.pid(), lock.id());
    /// }
    /// # }
    /// ```
    pub fn locks(&self) -> &[AdvisoryLock] {
        &self.locks
    }

    /// The locks being waited for.
    ///
    /// ```no_run
    /// # fn run(inspection: &pglock_runtime::Inspection) {
    /// let longest = inspection.waiting().filter_map(|lock| lock.waited()).max();
    /// println!("longest wait: {:?}", longest.unwrap_or_default());
    /// # }
    /// ```
    pub fn waiting(&self) -> impl Iterator<Item = &AdvisoryLock> {
        self.locks.iter().filter(|lock| !lock.granted)
    }

    /// Locks held by prepared (two-phase) transactions, which no backend
    /// owns: they last until `COMMIT PREPARED` or `ROLLBACK PREPARED`, even
    /// across server restarts, and are easy to forget. (`pg_locks` does not
    /// say which prepared transaction holds which lock; `pg_prepared_xacts`
    /// lists the candidates.)
    ///
    /// ```no_run
    /// # fn run(inspection: &pglock_runtime::Inspection) {
    /// for lock in inspection.prepared() {
    ///     eprintln!("{} is held by a prepared transaction", lock.id());
    /// }
    /// # }
    /// ```
    pub fn prepared(&self) -> &[PreparedLock] {
        &self.prepared
    }

    /// The locks held.
    ///
    /// ```no_run
    /// # fn run(inspection: &pglock_runtime::Inspection) {
    /// let holders: Vec<i32> = inspection.held().map(|lock| lock.pid()).collect();
    /// # }
    /// ```
    pub fn held(&self) -> impl Iterator<Item = &AdvisoryLock> {
        self.locks.iter().filter(|lock| lock.granted)
    }

    /// Whether this role could read the queries of every backend listed.
    /// When it can't (other roles' sessions, without `pg_read_all_stats`),
    /// those backends' namespaces are unknown; grant `pg_read_all_stats` to
    /// the inspecting role to see them.
    ///
    /// ```no_run
    /// # fn run(inspection: &pglock_runtime::Inspection) {
    /// if !inspection.queries_visible() {
    ///     eprintln!("some namespaces are unknown: GRANT pg_read_all_stats TO this role");
    /// }
    /// # }
    /// ```
    pub fn queries_visible(&self) -> bool {
        self.queries_visible
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
pub struct AdvisoryLock {
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
}

impl AdvisoryLock {
    /// The backend's process id.
    ///
    /// ```no_run
    /// # async fn run(pool: &sqlx::PgPool, lock: &pglock_runtime::AdvisoryLock) -> Result<(), sqlx::Error> {
    /// sqlx::query("SELECT pg_terminate_backend($1)").bind(lock.pid()).execute(pool).await?;
    /// # Ok(()) }
    /// ```
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The lock id: bigint from `(classid << 32) | objid`, or the int4 pair
    /// when `objsubid = 2`.
    ///
    /// ```no_run
    /// # fn run(lock: &pglock_runtime::AdvisoryLock) {
    /// # static JOBS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("jobs");
    /// let is_job_7 = lock.id() == JOBS.id(&7_i64);
    /// # }
    /// ```
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The mode held or asked for; `None` for a mode no advisory function
    /// takes.
    ///
    /// ```no_run
    /// # fn run(inspection: &pglock_runtime::Inspection) {
    /// # use pglock_runtime::Mode;
    /// let readers = inspection.held().filter(|lock| lock.mode() == Some(Mode::Shared)).count();
    /// # }
    /// ```
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// Whether the lock is held (rather than waited for).
    ///
    /// ```no_run
    /// # fn run(inspection: &pglock_runtime::Inspection) {
    /// let (held, waiting): (Vec<_>, Vec<_>) = inspection.locks().iter().partition(|lock| lock.granted());
    /// # }
    /// ```
    pub fn granted(&self) -> bool {
        self.granted
    }

    /// How long the backend has waited, for a waiter.
    ///
    /// ```no_run
    /// # fn run(lock: &pglock_runtime::AdvisoryLock) {
    /// if lock.waited().is_some_and(|waited| waited.as_secs() >= 30) {
    ///     eprintln!("pid {} has waited 30 s or more", lock.pid());
    /// }
    /// # }
    /// ```
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// The backends this waiter waits for (`pg_blocking_pids`).
    ///
    /// ```no_run
    /// # fn run(lock: &pglock_runtime::AdvisoryLock) {
    /// for blocker in lock.blocked_by() {
    ///     println!("pid {} waits for pid {blocker}", lock.pid());
    /// }
    /// # }
    /// ```
    pub fn blocked_by(&self) -> &[i32] {
        &self.blocked_by
    }

    /// The namespace, when a waiting statement's marker names it (a holder
    /// gets the namespace of a waiter on the same id).
    ///
    /// ```no_run
    /// # fn run(inspection: &pglock_runtime::Inspection) {
    /// let billing = inspection.locks().iter().filter(|lock| lock.namespace() == Some("billing:invoice"));
    /// # }
    /// ```
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The backend's `application_name`, when visible.
    ///
    /// ```no_run
    /// # fn run(lock: &pglock_runtime::AdvisoryLock) {
    /// println!("pid {} ({})", lock.pid(), lock.application_name().unwrap_or("?"));
    /// # }
    /// ```
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
    ///
    /// ```no_run
    /// # fn run(lock: &pglock_runtime::PreparedLock) {
    /// println!("{}", lock.id());
    /// # }
    /// ```
    pub fn id(&self) -> LockId {
        self.id
    }

    /// The mode held.
    ///
    /// ```no_run
    /// # fn run(lock: &pglock_runtime::PreparedLock) {
    /// println!("{:?}", lock.mode());
    /// # }
    /// ```
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }
}

type Row = (
    Option<i32>,
    i16,
    i64,
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
);

const INSPECT: &str = "SELECT l.pid, l.objsubid, l.classid::int8, l.objid::int8, l.mode, l.granted, \
        CASE WHEN l.granted THEN NULL \
             ELSE extract(epoch FROM pg_catalog.clock_timestamp() - l.waitstart)::float8 END, \
        CASE WHEN l.granted THEN '{}'::int4[] ELSE pg_catalog.pg_blocking_pids(l.pid) END, \
        a.query, a.application_name, pg_catalog.host(a.client_addr), a.state, \
        extract(epoch FROM pg_catalog.clock_timestamp() - a.state_change)::float8, \
        extract(epoch FROM pg_catalog.clock_timestamp() - a.xact_start)::float8 \
     FROM pg_catalog.pg_locks l \
     LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
     WHERE l.locktype = 'advisory' \
       AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) \
     ORDER BY l.objsubid, l.classid, l.objid, l.granted DESC, l.waitstart NULLS FIRST, l.pid";

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
    let rows: Vec<Row> = sqlx::query_as(INSPECT)
        .fetch_all(executor)
        .await
        .map_err(Error::from_sqlx)?;
    let mut queries_visible = true;
    let mut locks = Vec::new();
    let mut prepared = Vec::new();
    for (
        pid,
        objsubid,
        classid,
        objid,
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
    ) in rows
    {
        let id = decode_id(objsubid, classid, objid);
        let mode = match mode.as_str() {
            "ExclusiveLock" => Some(Mode::Exclusive),
            "ShareLock" => Some(Mode::Shared),
            _ => None,
        };
        // No backend: a prepared transaction holds it.
        let Some(pid) = pid else {
            prepared.push(PreparedLock { id, mode });
            continue;
        };
        let hidden = query.as_deref() == Some(HIDDEN_QUERY);
        queries_visible &= !hidden;
        locks.push(AdvisoryLock {
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
                query
                    .as_deref()
                    .and_then(marker_namespace)
                    .map(str::to_owned)
            },
            application_name: application_name.filter(|_| !hidden),
            client_addr: client_addr.and_then(|addr| addr.parse().ok()),
            state,
            time_in_state: time_in_state.map(seconds),
            transaction_age: transaction_age.map(seconds),
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
    Ok(Inspection {
        locks,
        prepared,
        queries_visible,
    })
}

/// A span the server measured in seconds, as a `Duration` (never negative).
fn seconds(secs: f64) -> Duration {
    Duration::from_secs_f64(secs.max(0.0))
}

/// `pg_locks` keeps a bigint id as two oids and `objsubid = 1`, a pair as
/// the two ints (as oids) and `objsubid = 2`.
fn decode_id(objsubid: i16, classid: i64, objid: i64) -> LockId {
    if objsubid == 2 {
        LockId::Pair(classid as u32 as i32, objid as u32 as i32)
    } else {
        LockId::BigInt(((classid as u64) << 32 | (objid as u64 & 0xffff_ffff)) as i64)
    }
}

/// The namespace a statement's leading `/* pglock ns=… */` marker names.
fn marker_namespace(query: &str) -> Option<&str> {
    let rest = query.trim_start().strip_prefix("/* pglock ns=")?;
    let end = rest.find(" */")?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_key_spaces() {
        assert_eq!(decode_id(1, 0xffff_ffff, 0xffff_ffff), LockId::BigInt(-1));
        assert_eq!(decode_id(1, 0, 5), LockId::BigInt(5));
        assert_eq!(decode_id(2, 0xffff_ffff, 7), LockId::Pair(-1, 7));
    }

    #[test]
    fn reads_the_namespace_from_a_marker_only() {
        assert_eq!(
            marker_namespace("/* pglock ns=billing:invoice */ SELECT 1"),
            Some("billing:invoice")
        );
        assert_eq!(marker_namespace("SELECT 1 /* pglock ns=x */"), None);
        assert_eq!(marker_namespace("/* pglock ns=unterminated"), None);
    }
}
