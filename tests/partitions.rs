//! A network that stops answering, between a holder and the server.
//!
//! Two sides learn it, each on its own. The holder learns it from its checks
//! (a lease, a lock manager) or from a release that gets no answer (a
//! session guard): measured through a proxy that stops forwarding and
//! closes nothing. The server learns it from its kernel, which a proxy
//! would answer for the client: so that side is measured over a link the
//! server's kernel sees fail (a client in a network namespace, its link
//! taken down), which needs root. What matters is the order: the server
//! frees the lock, and a new holder takes it, only after the old holder has
//! learned of its loss. Each test prints its figures (docs/RELIABILITY.md,
//! "A network that stops answering").

mod support;

use std::future::Future;
use std::io::Write as _;
use std::time::{Duration, Instant};

use pglock::{CheckOptions, Error, LockManager, ManagerOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

use support::netns::{self, Partition};
use support::proxy::Proxy;
use support::{eventually, holders, namespace, pool_on, private_server};

/// How late past its bound a report may come on a busy machine.
const LATE: Duration = Duration::from_secs(1);

/// How long a test waits for what it expects before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Prints one figure of the test, for the docs.
fn report(line: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr().lock(), "{test}: {line}");
}

/// `what` resolved, or a failure that names it after [`PATIENCE`].
/// Black-holes `proxy`, then waits for `lost`: the holder `who` must learn
/// of the loss within `bound`, its detection bound.
async fn black_hole_until_lost(
    proxy: &Proxy,
    who: &str,
    bound: Duration,
    lost: impl Future<Output = pglock::Loss>,
) {
    proxy.black_hole();
    let cut = Instant::now();
    let lost = within_patience(&format!("the {who} reports its loss"), lost).await;
    let learned = cut.elapsed();
    report(&format!(
        "{who} learned in {learned:?} (bound {bound:?}): {lost}"
    ));
    assert!(learned <= bound + LATE, "{learned:?} past {bound:?}");
}

async fn within_patience<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} within {PATIENCE:?}"))
}

#[tokio::test]
async fn a_lease_behind_a_black_hole_reports_its_loss_within_its_detection_bound() {
    let server = private_server(&[]);
    let pool = pool_on(&server, 2).await;
    let proxy = Proxy::to(server.port());
    let ns = namespace("partition:lease");
    let checks = CheckOptions::default();
    let conn = PgConnection::connect(&proxy.url()).await.unwrap();
    let mut lease = ns
        .session_lock(&1_i64)
        .acquire_lease(conn, checks)
        .await
        .unwrap();

    black_hole_until_lost(&proxy, "lease", checks.detection_bound(), lease.lost()).await;
    assert!(!lease.is_held());
    // The server still sees the session, through the proxy's kernel.
    assert_eq!(holders(&pool, ns.id(&1_i64)).await.len(), 1);
    proxy.heal();
}

#[tokio::test]
async fn a_managed_guard_behind_a_black_hole_reports_its_loss_within_its_detection_bound() {
    let server = private_server(&[]);
    let proxy = Proxy::to(server.port());
    let ns = namespace("partition:manager");
    let options = ManagerOptions::default();
    let manager = LockManager::new(proxy.url().parse().unwrap(), options);
    let mut guard = manager.lock(ns, &1_i64).acquire().await.unwrap();

    black_hole_until_lost(
        &proxy,
        "managed guard",
        options.detection_bound(),
        guard.lost(),
    )
    .await;
    assert!(!guard.is_held());
    proxy.heal();
}

#[tokio::test]
async fn a_session_guard_released_into_a_black_hole_reports_the_lock_lost_within_its_release_timeout()
 {
    let server = private_server(&[]);
    let proxy = Proxy::to(server.port());
    let ns = namespace("partition:session");
    let bound = Duration::from_secs(5);
    let conn = PgConnection::connect(&proxy.url()).await.unwrap();
    let guard = ns
        .session_lock(&1_i64)
        .release_timeout(bound)
        .acquire(conn)
        .await
        .unwrap();

    proxy.black_hole();
    let cut = Instant::now();
    let released = within_patience("the release answers", guard.release()).await;
    let learned = cut.elapsed();

    report(&format!(
        "session guard's release ended in {learned:?} (bound {bound:?}): {released:?}"
    ));
    assert!(matches!(released, Err(Error::LockLost(_))), "{released:?}");
    assert!(learned >= bound, "answered before its bound: {learned:?}");
    assert!(learned <= bound + LATE, "{learned:?} past {bound:?}");
    proxy.heal();
}

#[tokio::test]
async fn a_lease_released_into_a_black_hole_reports_the_lock_lost_within_its_detection_bound() {
    let server = private_server(&[]);
    let proxy = Proxy::to(server.port());
    let ns = namespace("partition:lease-release");
    // Checks far apart, so that the release, not a check, meets the silence.
    let checks = CheckOptions::default().check_every(Duration::from_secs(600));
    let conn = PgConnection::connect(&proxy.url()).await.unwrap();
    let lease = ns
        .session_lock(&1_i64)
        .acquire_lease(conn, checks)
        .await
        .unwrap();

    proxy.black_hole();
    let cut = Instant::now();
    let released = within_patience("the release answers", lease.release()).await;
    let learned = cut.elapsed();

    report(&format!(
        "lease's release ended in {learned:?} (check timeout 5s): {released:?}"
    ));
    assert!(matches!(released, Err(Error::LockLost(_))), "{released:?}");
    assert!(
        learned <= Duration::from_secs(5) + LATE,
        "{learned:?} past the check timeout"
    );
    proxy.heal();
}

#[tokio::test]
async fn a_lease_sets_the_servers_keepalives_from_its_checks() {
    let server = private_server(&[]);
    let ns = namespace("partition:settings");
    let checks = CheckOptions::default();
    let conn = server.tcp_url().parse::<sqlx::postgres::PgConnectOptions>();
    let conn = conn.unwrap().connect().await.unwrap();
    let lease = ns
        .session_lock(&1_i64)
        .acquire_lease(conn, checks)
        .await
        .unwrap();
    let mut conn = lease.release().await.unwrap();

    let setting = |name: &'static str| {
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "SELECT setting FROM pg_settings WHERE name = '{name}'"
        )))
    };
    let mut settings = Vec::new();
    for name in [
        "tcp_keepalives_idle",
        "tcp_keepalives_interval",
        "tcp_keepalives_count",
        "tcp_user_timeout",
    ] {
        let value = setting(name).fetch_one(&mut conn).await.unwrap();
        settings.push(value);
    }
    report(&format!(
        "tcp_keepalives_idle, _interval, _count, tcp_user_timeout: {settings:?}; \
         the server frees within {:?}",
        checks.server_release_bound()
    ));
    assert_eq!(settings, ["10", "2", "3", "16000"]);
    assert_eq!(checks.server_release_bound(), Duration::from_secs(16));
}

/// A holder over a link that fails, as the server's kernel sees it: what
/// each side learns, and when.
struct Silence {
    /// When the holder reported the loss, after the cut.
    learned: Duration,
    /// When the server freed the lock, after the cut.
    freed: Duration,
    /// When a waiter on the server took the lock, after the cut.
    taken: Duration,
}

impl Silence {
    fn report(&self, who: &str, checks: &CheckOptions) {
        let window = self.learned.saturating_sub(self.freed);
        report(&format!(
            "{who}: holder learned D = {:?} (bound {:?}); server freed F = {:?} \
             (bound {:?} from its last packet); new holder at {:?}; window max(0, D - F) = {window:?}",
            self.learned,
            checks.detection_bound(),
            self.freed,
            checks.server_release_bound(),
            self.taken,
        ));
    }

    /// The guarantees: each side within its bound, and the holder first.
    fn check(&self, checks: &CheckOptions) {
        assert!(
            self.learned <= checks.detection_bound() + LATE,
            "the holder learned in {:?}, past {:?}",
            self.learned,
            checks.detection_bound()
        );
        assert!(
            self.freed <= checks.server_release_bound() + LATE,
            "the server freed the lock in {:?}, past {:?}",
            self.freed,
            checks.server_release_bound()
        );
        assert!(
            self.learned < self.taken,
            "a new holder took the lock at {:?}, before the old one learned of its loss at {:?}",
            self.taken,
            self.learned
        );
    }
}

/// Cuts `partition` once a waiter waits for `key` of `ns` behind the holder,
/// then measures until the holder reported (`lost` resolved), the holder's
/// backend left `pg_locks` and the waiter holds the lock.
async fn measure_silence(
    partition: &Partition,
    pool: &sqlx::PgPool,
    ns: &'static pglock::Namespace,
    key: i64,
    lost: impl Future<Output = pglock::Loss>,
) -> Silence {
    let id = ns.id(&key);
    let holder = holders(pool, id).await;
    assert_eq!(holder.len(), 1, "one holder: {holder:?}");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let guard = ns
                .session_lock(&key)
                .acquire(pool.acquire().await.unwrap())
                .await;
            (Instant::now(), guard)
        })
    };
    support::wait_for_waiters(pool, id, 1).await;

    partition.cut();
    let cut = Instant::now();
    let learned = async {
        within_patience("the holder reports its loss", lost).await;
        cut.elapsed()
    };
    let freed = async {
        eventually(PATIENCE, "the server frees the lock", || async {
            !holders(pool, id).await.contains(&holder[0])
        })
        .await;
        cut.elapsed()
    };
    let (learned, freed) = tokio::join!(learned, freed);
    let (at, guard) = within_patience("the waiter takes the lock", waiter)
        .await
        .unwrap();
    guard
        .expect("the waiter holds the lock")
        .release()
        .await
        .unwrap();
    Silence {
        learned,
        freed,
        taken: at - cut,
    }
}

#[tokio::test]
async fn a_silent_lease_holder_learns_of_its_loss_before_the_server_frees_its_lock() {
    let partition = match Partition::create() {
        Ok(partition) => partition,
        Err(why) => return skipped(&why),
    };
    let (server, pool) = netns::serve(&partition).await;
    let ns = namespace("partition:kernel-lease");
    let checks = CheckOptions::default();
    let mut lease = {
        let _client = partition.enter();
        let conn = netns::over_link(&partition, &server)
            .connect()
            .await
            .unwrap();
        ns.session_lock(&1_i64)
            .acquire_lease(conn, checks)
            .await
            .unwrap()
    };

    let silence = measure_silence(&partition, &pool, ns, 1, lease.lost()).await;

    silence.report("lease", &checks);
    silence.check(&checks);
}

#[tokio::test]
async fn a_silent_lock_manager_learns_of_its_loss_before_the_server_frees_its_locks() {
    let partition = match Partition::create() {
        Ok(partition) => partition,
        Err(why) => return skipped(&why),
    };
    let (server, pool) = netns::serve(&partition).await;
    let ns = namespace("partition:kernel-manager");
    let checks = CheckOptions::default();
    let options = ManagerOptions::default().checks(checks);
    let manager = LockManager::new(netns::over_link(&partition, &server), options);
    let mut guard = {
        // The manager connects from its task, on this thread.
        let _client = partition.enter();
        manager.lock(ns, &1_i64).acquire().await.unwrap()
    };

    let silence = measure_silence(&partition, &pool, ns, 1, guard.lost()).await;

    silence.report("lock manager", &checks);
    silence.check(&checks);
}

#[tokio::test]
async fn data_in_flight_at_the_failure_ends_the_session_within_the_same_bound() {
    let partition = match Partition::create() {
        Ok(partition) => partition,
        Err(why) => return skipped(&why),
    };
    let (server, pool) = netns::serve(&partition).await;
    let ns = namespace("partition:in-flight");
    let checks = CheckOptions::default();
    // A connection with a lease's settings: the one its release hands back.
    let conn = {
        let _client = partition.enter();
        let conn = netns::over_link(&partition, &server)
            .connect()
            .await
            .unwrap();
        let lease = ns.session_lock(&0_i64).acquire_lease(conn, checks);
        lease.await.unwrap().release().await.unwrap()
    };
    let mut guard = ns.session_lock(&1_i64).acquire(conn).await.unwrap();
    let pid = holders(&pool, ns.id(&1_i64)).await[0];

    // An answer of 64 MB, sent once the link is down: the server's kernel
    // retransmits what the client never acknowledges.
    let answer = sqlx::raw_sql("SELECT pg_sleep(1), repeat('x', 64 * 1024 * 1024)")
        .execute(guard.connection());
    let cut = tokio::spawn({
        let pool = pool.clone();
        async move {
            eventually(PATIENCE, "the answer is being prepared", || async {
                let event: Option<String> =
                    sqlx::query_scalar("SELECT wait_event FROM pg_stat_activity WHERE pid = $1")
                        .bind(pid)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                event.as_deref() == Some("PgSleep")
            })
            .await;
        }
    });
    let mut answer = std::pin::pin!(answer);
    tokio::select! {
        cut = cut => cut.unwrap(),
        answered = &mut answer => panic!("answered before the cut: {answered:?}"),
    }
    partition.cut();
    let at = Instant::now();
    tokio::select! {
        () = eventually(PATIENCE, "the server ends the session", || async {
            holders(&pool, ns.id(&1_i64)).await.is_empty()
        }) => {}
        answered = &mut answer => panic!("answered through a cut link: {answered:?}"),
    }
    let freed = at.elapsed();

    // The answer goes out 1 s after the cut; the bound counts from then.
    let bound = checks.server_release_bound() + Duration::from_secs(1);
    report(&format!(
        "with data in flight, the server freed the lock {freed:?} after the cut (bound {bound:?})"
    ));
    assert!(freed <= bound + LATE, "{freed:?} past {bound:?}");
}

/// Says why a test did not run, on one line starting with "skipped".
fn skipped(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr().lock(), "skipped {test}: {why}");
}
