//! Advisory locks through PgBouncer, started by the testing kit in front of a
//! private server.
//!
//! - In transaction pooling mode, transaction-scoped locks keep excluding
//!   each other: a transaction keeps its backend from `BEGIN` to `COMMIT`,
//!   and the lock ends with it.
//! - A session lock through a transaction pooler is unsafe: the lock stays on
//!   whichever backend took it, the pooler hands that backend to other
//!   clients, and the unlock may run on another backend, where it releases
//!   nothing. pglock can't see the pooler when it takes the lock, but it
//!   does say when the lock is lost: the guard's release fails with
//!   `Error::LockLost`, and a lease or a lock manager's handle reports the
//!   loss.
//! - In session pooling mode, session locks are safe again.
//!
//! Without PgBouncer installed, each test is skipped and says so in one line
//! (`apt-get install pgbouncer` runs them); with `PGLOCK_REQUIRE_PGBOUNCER=1`,
//! as `.ci/run` sets it, they fail instead, so that CI never passes them
//! vacuously.
//!
//! Before PgBouncer 1.21 (Debian 12 ships 1.18), named prepared statements
//! do not survive transaction pooling: the kit's URL turns sqlx's statement
//! cache off, and every statement with parameters must then run inside a
//! transaction, which is how pglock's transaction-scoped locks run anyway.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pglock::testing::{self, PgBouncer, PgBouncerOptions, PoolMode, ServerOptions, TestServer};
use pglock::{
    CheckOptions, Error, Lease, LockId, LockManager, Loss, ManagedGuard, ManagerOptions, Mode,
    Namespace, SessionTry, pg_locks,
};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, Row};
use support::{backend_pid, fresh_key, holders, namespace, until_unlocked};

const TASKS: usize = 16;
const SECTIONS: usize = 50;

/// A PgBouncer in front of `server` (the test has checked that it is
/// installed: [`PgBouncer::installed_or_skip`]).
fn bouncer(server: &TestServer, options: PgBouncerOptions) -> PgBouncer {
    PgBouncer::start_with(server, options)
        .unwrap_or_else(|error| panic!("PgBouncer did not start: {error}"))
}

fn private_server() -> TestServer {
    TestServer::start(ServerOptions::new()).expect("a private server")
}

async fn pool_on(url: &str, size: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(60))
        .connect(url)
        .await
        .expect("connect")
}

/// The state of the shared counter the critical sections update.
struct Counters {
    inside: AtomicUsize,
    max_inside: AtomicUsize,
    contended: AtomicUsize,
    backends: Mutex<HashSet<i32>>,
}

impl Counters {
    fn new() -> Arc<Counters> {
        Arc::new(Counters {
            inside: AtomicUsize::new(0),
            max_inside: AtomicUsize::new(0),
            contended: AtomicUsize::new(0),
            backends: Mutex::new(HashSet::new()),
        })
    }
}

/// `tasks` × `sections` read-modify-writes of one row through `pool`: read,
/// yield and sleep, write the value read plus one. With `lock`, each runs
/// under an exclusive transaction-scoped lock.
async fn read_modify_writes(
    pool: &PgPool,
    ns: &'static Namespace,
    lock: bool,
    tasks: usize,
    sections: usize,
) -> Arc<Counters> {
    let counters = Counters::new();
    let start = Arc::new(tokio::sync::Barrier::new(tasks));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let pool = pool.clone();
        let counters = counters.clone();
        let start = start.clone();
        handles.push(tokio::spawn(async move {
            start.wait().await;
            for _ in 0..sections {
                let mut tx = pool.begin().await.expect("begin through PgBouncer");
                if lock {
                    let acquired = ns
                        .lock(&"counter")
                        .timeout(Duration::from_secs(60))
                        .acquire(&mut tx)
                        .await
                        .expect("the lock, through PgBouncer");
                    if acquired.was_contended() {
                        counters.contended.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let now = counters.inside.fetch_add(1, Ordering::SeqCst) + 1;
                counters.max_inside.fetch_max(now, Ordering::SeqCst);
                let (n, pid): (i32, i32) =
                    sqlx::query_as("SELECT n, pg_backend_pid() FROM counter WHERE id = 1")
                        .fetch_one(&mut *tx)
                        .await
                        .expect("read the counter");
                counters.backends.lock().unwrap().insert(pid);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                sqlx::query("UPDATE counter SET n = $1 WHERE id = 1")
                    .bind(n + 1)
                    .execute(&mut *tx)
                    .await
                    .expect("write the counter");
                // Leave before the commit that ends the lock.
                counters.inside.fetch_sub(1, Ordering::SeqCst);
                tx.commit().await.expect("commit through PgBouncer");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a task");
    }
    counters
}

async fn counter_value(pool: &PgPool) -> i32 {
    sqlx::query_scalar("SELECT n FROM counter WHERE id = 1")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn reset_counter(direct: &PgPool) {
    direct
        .execute(
            "CREATE TABLE IF NOT EXISTS counter (id int PRIMARY KEY, n int NOT NULL); \
             DELETE FROM counter; INSERT INTO counter VALUES (1, 0)",
        )
        .await
        .unwrap();
}

async fn advisory_locks(direct: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        .fetch_one(direct)
        .await
        .unwrap()
}

#[tokio::test]
async fn transaction_scoped_locks_exclude_each_other_through_a_transaction_pooler() {
    if !PgBouncer::installed_or_skip() {
        return;
    }
    const POOL_SIZE: u32 = 4;
    let server = private_server();
    let bouncer = bouncer(
        &server,
        PgBouncerOptions::new()
            .pool_mode(PoolMode::Transaction)
            .pool_size(POOL_SIZE),
    );
    let direct = pool_on(&server.url(), 2).await;
    let pool = pool_on(&bouncer.url(), TASKS as u32).await;
    let ns = namespace("pgbouncer_counter");

    // Without the lock, the same work loses updates: the check below can
    // fail.
    reset_counter(&direct).await;
    let unprotected = read_modify_writes(&pool, ns, false, TASKS, 5).await;
    let lost = (TASKS * 5) as i32 - counter_value(&direct).await;
    assert!(
        lost > 0 && unprotected.max_inside.load(Ordering::SeqCst) > 1,
        "without the lock, critical sections overlap and updates are lost"
    );

    reset_counter(&direct).await;
    let started = Instant::now();
    let counters = read_modify_writes(&pool, ns, true, TASKS, SECTIONS).await;
    let elapsed = started.elapsed();

    assert_eq!(
        counter_value(&direct).await,
        (TASKS * SECTIONS) as i32,
        "every update counted"
    );
    assert_eq!(
        counters.max_inside.load(Ordering::SeqCst),
        1,
        "never two critical sections at once"
    );
    assert!(
        counters.contended.load(Ordering::SeqCst) > 0,
        "the lock was contended (waits went through PgBouncer too)"
    );
    // The transactions really were pooled: many clients, few backends.
    let backends = counters.backends.lock().unwrap().len();
    let clients = pool.size() as usize;
    assert!(
        backends <= POOL_SIZE as usize && backends < clients,
        "{clients} clients shared {backends} backends"
    );
    assert_eq!(advisory_locks(&direct).await, 0, "nothing left locked");
    eprintln!(
        "through PgBouncer {} ({} pooling): {TASKS} tasks x {SECTIONS} sections in {elapsed:?}, \
         {clients} clients on {backends} backends, {} contended acquisitions, {lost} of {} \
         updates lost without the lock",
        bouncer.version(),
        bouncer.pool_mode(),
        counters.contended.load(Ordering::SeqCst),
        TASKS * 5,
    );
    pool.close().await;
    direct.close().await;
}

/// Transaction pooling as most deployments run it: a backend's prepared
/// statements outlive the transaction (no `DEALLOCATE ALL` between
/// clients). The tests that use it run their own queries through the
/// simple protocol, so that sqlx's statement names can't collide on a shared
/// backend; only pglock's statements are prepared.
fn statements_kept(pool_size: u32) -> PgBouncerOptions {
    PgBouncerOptions::new()
        .pool_mode(PoolMode::Transaction)
        .pool_size(pool_size)
        .reset_prepared_statements(false)
}

/// Whether the session of `conn` holds `id` exclusively, through the
/// simple protocol.
async fn simple_holds(conn: &mut PgConnection, id: LockId) -> bool {
    let (encoded, objsubid) = pg_locks::encode(id);
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' \
           AND l.pid = pg_backend_pid() AND l.granted AND l.mode = 'ExclusiveLock' \
           AND l.objsubid = {objsubid} AND {} = ({encoded})::int8)",
        pg_locks::ENCODED
    );
    let row = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .expect("read pg_locks");
    row.try_get(0).expect("a bool")
}

/// The one backend that holds `id`.
async fn only_holder(direct: &PgPool, id: LockId) -> i32 {
    let holders = holders(direct, id).await;
    assert_eq!(holders.len(), 1, "one backend holds {id}: {holders:?}");
    holders[0]
}

#[tokio::test]
async fn a_session_lock_through_a_transaction_pooler_is_lost_and_its_release_says_so() {
    if !PgBouncer::installed_or_skip() {
        return;
    }
    let server = private_server();
    let bouncer = bouncer(&server, statements_kept(2));
    let direct = pool_on(&server.url(), 2).await;
    let (ns, id) = fresh_key("pgbouncer_session", 1);

    // The lock is taken on the pool's only backend, A.
    let client = PgConnection::connect(&bouncer.url()).await.unwrap();
    let guard = ns.session_lock(&1_i64).acquire(client).await.unwrap();
    let backend_a = only_holder(&direct, id).await;

    // Between two transactions, the pooler gives A to another client.
    let mut other = PgConnection::connect(&bouncer.url()).await.unwrap();
    let mut other_tx = other.begin().await.unwrap();
    assert_eq!(
        backend_pid(&mut other_tx).await,
        backend_a,
        "the other client's transaction runs on the backend that holds the lock"
    );

    // The unlock runs on another backend, which holds nothing: pglock says
    // the lock is lost (and closes the client connection).
    let error = guard.release().await.unwrap_err();
    assert!(
        matches!(&error, Error::LockLost(lost) if lost.id() == id && lost.mode() == Mode::Exclusive),
        "{error:?}"
    );
    assert!(error.is_retryable());

    // The lock leaked into the pool: an unrelated transaction holds it...
    assert!(
        simple_holds(&mut other_tx, id).await,
        "the other client's transaction holds a lock it never asked for"
    );
    // Advisory locks are re-entrant within a session: that client's own
    // attempt at the key succeeds, while the lock is supposedly someone
    // else's. Mutual exclusion is gone.
    let LockId::BigInt(key) = id else {
        unreachable!("a bigint namespace")
    };
    let row = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SELECT pg_try_advisory_xact_lock({key}::int8)"
    )))
    .fetch_one(&mut *other_tx)
    .await
    .unwrap();
    assert!(
        row.try_get::<bool, _>(0).unwrap(),
        "the other client gets the key too"
    );
    other_tx.commit().await.unwrap();
    other.close().await.unwrap();
    // ... and it outlives every client: A sits idle in PgBouncer's pool,
    // still holding it, and everyone else is locked out.
    assert_eq!(only_holder(&direct, id).await, backend_a);
    let contender = PgConnection::connect(&server.url()).await.unwrap();
    assert!(matches!(
        ns.session_lock(&1_i64)
            .try_acquire(contender)
            .await
            .unwrap(),
        SessionTry::Busy(_)
    ));

    // Only the end of the server connection frees it.
    drop(bouncer);
    until_unlocked(&direct, id).await;
    direct.close().await;
}

/// The kinds of held lock that check, while held, that their session still
/// holds them, and report the loss.
#[derive(Clone, Copy, Debug)]
enum Checked {
    Lease,
    ManagedGuard,
}

/// A held lock of one of the [`Checked`] kinds, with what it takes to end
/// it.
enum HeldLock {
    Lease(Lease),
    ManagedGuard(ManagedGuard, LockManager),
}

impl HeldLock {
    /// Takes `key` of `ns` through `url` as a lock of `kind` that checks
    /// every second, and returns it with its detection bound.
    async fn take(
        kind: Checked,
        url: &str,
        ns: &'static Namespace,
        key: i64,
    ) -> (HeldLock, Duration) {
        let checks = CheckOptions::default()
            .check_every(Duration::from_secs(1))
            .check_timeout(Duration::from_secs(2));
        match kind {
            Checked::Lease => {
                let client = PgConnection::connect(url).await.unwrap();
                let lease = ns
                    .session_lock(&key)
                    .acquire_lease(client, checks)
                    .await
                    .unwrap();
                (HeldLock::Lease(lease), checks.detection_bound())
            }
            Checked::ManagedGuard => {
                let options = ManagerOptions::default().max_connections(1).checks(checks);
                let manager = LockManager::new(url.parse().unwrap(), options);
                let handle = manager.lock(ns, &key).acquire().await.unwrap();
                let bound = options.detection_bound();
                (HeldLock::ManagedGuard(handle, manager), bound)
            }
        }
    }

    fn is_held(&self) -> bool {
        match self {
            HeldLock::Lease(lease) => lease.is_held(),
            HeldLock::ManagedGuard(handle, _) => handle.is_held(),
        }
    }

    async fn lost(&mut self) -> Loss {
        match self {
            HeldLock::Lease(lease) => lease.lost().await,
            HeldLock::ManagedGuard(handle, _) => handle.lost().await,
        }
    }

    /// Releases the lock, and closes the manager of a managed one.
    async fn release(self) -> Result<(), Error> {
        match self {
            HeldLock::Lease(lease) => lease.release().await.map(drop),
            HeldLock::ManagedGuard(handle, manager) => {
                let released = handle.release().await;
                manager.close().await;
                released
            }
        }
    }
}

/// A lock of `kind` taken through a transaction pooler stays on backend A
/// while the pooler gives A to another client: the lock's next check runs
/// on another backend, which does not hold it, and the loss is reported
/// within the detection bound; the lock itself stays on A, in the pool.
async fn a_checked_lock_through_a_transaction_pooler_reports_the_loss(kind: Checked) {
    if !PgBouncer::installed_or_skip() {
        return;
    }
    let server = private_server();
    let bouncer = bouncer(&server, statements_kept(2));
    let direct = pool_on(&server.url(), 2).await;
    let ns = namespace(&format!("pgbouncer_loss_{kind:?}"));
    let id = ns.id(&7_i64);

    let (mut held, bound) = HeldLock::take(kind, &bouncer.url(), ns, 7).await;
    let backend_a = only_holder(&direct, id).await;
    // Before the first check (in a second), another client's transaction
    // takes A, the pool's only backend.
    let mut other = PgConnection::connect(&bouncer.url()).await.unwrap();
    let mut other_tx = other.begin().await.unwrap();
    assert_eq!(backend_pid(&mut other_tx).await, backend_a);
    assert!(held.is_held());

    let lost = tokio::time::timeout(bound + Duration::from_secs(2), held.lost())
        .await
        .unwrap_or_else(|_| panic!("the {kind:?} reports the loss within {bound:?}"));
    assert_eq!(lost.lock().id(), id);
    assert!(
        lost.reason().contains("no longer holds"),
        "{}",
        lost.reason()
    );
    assert!(!held.is_held());
    assert!(matches!(held.release().await, Err(Error::LockLost(_))));

    assert_eq!(only_holder(&direct, id).await, backend_a);
    other_tx.commit().await.unwrap();
    other.close().await.unwrap();
    drop(bouncer);
    until_unlocked(&direct, id).await;
    direct.close().await;
}

#[tokio::test]
async fn a_lease_through_a_transaction_pooler_reports_the_loss() {
    a_checked_lock_through_a_transaction_pooler_reports_the_loss(Checked::Lease).await;
}

#[tokio::test]
async fn a_lock_manager_through_a_transaction_pooler_reports_the_loss() {
    a_checked_lock_through_a_transaction_pooler_reports_the_loss(Checked::ManagedGuard).await;
}

#[tokio::test]
async fn session_locks_keep_their_backend_through_a_session_pooler() {
    if !PgBouncer::installed_or_skip() {
        return;
    }
    let server = private_server();
    let bouncer = bouncer(
        &server,
        PgBouncerOptions::new()
            .pool_mode(PoolMode::Session)
            .pool_size(2),
    );
    let direct = pool_on(&server.url(), 2).await;
    let (ns, id) = fresh_key("pgbouncer_session_mode", 1);

    let client = PgConnection::connect(&bouncer.url()).await.unwrap();
    let mut guard = ns.session_lock(&1_i64).acquire(client).await.unwrap();
    let backend = only_holder(&direct, id).await;
    assert_eq!(backend_pid(guard.connection()).await, backend);

    // Another client gets a backend of its own, for its whole session.
    let mut other = PgConnection::connect(&bouncer.url()).await.unwrap();
    let mut other_tx = other.begin().await.unwrap();
    assert_ne!(backend_pid(&mut other_tx).await, backend);
    assert!(
        !testing::holds(&mut other_tx, ns, &1_i64, Mode::Exclusive)
            .await
            .unwrap()
    );

    let connection = guard.release().await.expect("the unlock finds the lock");
    assert!(holders(&direct, id).await.is_empty());
    drop(connection);
    other_tx.commit().await.unwrap();

    // A guard dropped without release closes the client connection; in
    // session pooling PgBouncer then resets the backend (`DISCARD ALL`,
    // which ends session advisory locks) before anyone else gets it.
    let client = PgConnection::connect(&bouncer.url()).await.unwrap();
    let guard = ns.session_lock(&2_i64).acquire(client).await.unwrap();
    drop(guard);
    until_unlocked(&direct, ns.id(&2_i64)).await;

    drop(bouncer);
    direct.close().await;
}

#[tokio::test]
async fn with_the_kits_pgbouncer_configuration_a_session_lock_fails_loudly() {
    if !PgBouncer::installed_or_skip() {
        return;
    }
    // Below PgBouncer 1.21 the kit deallocates a backend's statements when
    // a client gives it back: a statement outside a transaction, such as a
    // session lock's, is parsed on a backend that is given back before the
    // statement runs. The lock is refused with a database error, not taken.
    let server = private_server();
    let bouncer = bouncer(&server, PgBouncerOptions::new().pool_size(2));
    if !bouncer.resets_prepared_statements() {
        eprintln!(
            "PgBouncer {} tracks prepared statements: nothing to refuse",
            bouncer.version()
        );
        return;
    }
    let direct = pool_on(&server.url(), 2).await;
    let ns = namespace("pgbouncer_reset");
    let client = PgConnection::connect(&bouncer.url()).await.unwrap();
    let error = ns.session_lock(&1_i64).acquire(client).await.unwrap_err();
    let Error::Database(sqlx::Error::Database(database)) = &error else {
        panic!("expected a database error, got {error:?}");
    };
    assert_eq!(database.code().as_deref(), Some("26000"), "{database}");
    assert_eq!(advisory_locks(&direct).await, 0, "nothing was locked");
    direct.close().await;
}
