//! Who holds which advisory lock, and who waits for it.

use std::net::IpAddr;
use std::time::Duration;

use sqlx::{Executor, Postgres};

use crate::contract::id::LockId;
use crate::contract::mode::Mode;
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
    queries_visible: bool,
}

impl Inspection {
    /// Every lock row: holders first, then waiters in the order they began
    /// waiting, grouped by lock id.
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
}

impl LockRow {
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

    /// How long the backend has waited, for a waiter.
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
