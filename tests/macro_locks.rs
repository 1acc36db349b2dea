//! `#[pglock::advisory_lock]` against a real PostgreSQL: what the annotated
//! functions lock, when, and how their failures come out.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pglock::{ConflictCause, LockFamily, LockId, Mode, Namespace, advisory_lock, testing};
use sqlx::{PgPool, Postgres, Transaction};
use support::*;
use tokio::sync::{Barrier, oneshot};
use uuid::Uuid;

/// The application's error type: it only needs `From<pglock::Error>`.
#[derive(Debug)]
enum AppError {
    Lock(pglock::Error),
}

impl From<pglock::Error> for AppError {
    fn from(error: pglock::Error) -> Self {
        AppError::Lock(error)
    }
}

static ORDERS: Namespace = Namespace::named("test:macro:orders");

/// Reports the locks it sees held from a second connection while its body runs.
#[advisory_lock(ns = "test:macro:held", key = order, timeout = "5s")]
async fn inspect_while_locked(
    tx: &mut Transaction<'_, Postgres>,
    order: i64,
    observer: &PgPool,
) -> Result<(Vec<i32>, i32), AppError> {
    let pid = backend_pid(tx).await;
    let seen = holders(observer, Namespace::named("test:macro:held").id(&order)).await;
    Ok((seen, pid))
}

#[tokio::test]
async fn the_lock_is_held_while_the_body_runs_and_ends_with_the_transaction() {
    let pool = pool().await;
    let order = Uuid::new_v4().as_u64_pair().0 as i64;
    let id = Namespace::named("test:macro:held").id(&order);
    let mut tx = pool.begin().await.unwrap();
    let (seen, pid) = inspect_while_locked(&mut tx, order, &pool).await.unwrap();
    assert_eq!(seen, vec![pid], "held by the function's transaction");
    assert_eq!(
        holders(&pool, id).await,
        vec![pid],
        "still held after the body"
    );
    tx.commit().await.unwrap();
    assert!(
        holders(&pool, id).await.is_empty(),
        "ended with the transaction"
    );
}

/// Counts how many run at once; waits at the barrier so overlap is certain
/// when it is allowed.
struct Overlap {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Overlap {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
        })
    }

    async fn section(&self, hold: Duration) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(hold).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[advisory_lock(ns = ORDERS, key = order, mode = shared, timeout = "30s")]
async fn read_order(
    tx: &mut Transaction<'_, Postgres>,
    order: i64,
    overlap: &Overlap,
    barrier: &Barrier,
) -> Result<(), AppError> {
    // Both readers must be inside at once to pass this barrier.
    barrier.wait().await;
    overlap.section(Duration::from_millis(10)).await;
    Ok(())
}

#[advisory_lock(ns = ORDERS, key = order, timeout = "30s")]
async fn write_order(
    tx: &mut Transaction<'_, Postgres>,
    order: i64,
    overlap: &Overlap,
) -> Result<(), AppError> {
    overlap.section(Duration::from_millis(20)).await;
    Ok(())
}

#[tokio::test]
async fn shared_functions_run_together_and_exclusive_ones_alone() {
    let pool = pool().await;
    let order = Uuid::new_v4().as_u64_pair().0 as i64;

    let readers = Overlap::new();
    let barrier = Arc::new(Barrier::new(2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (pool, readers, barrier) = (pool.clone(), readers.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            read_order(&mut tx, order, &readers, &barrier)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("shared holders do not block each other")
            .unwrap();
    }
    assert_eq!(readers.max.load(Ordering::SeqCst), 2);

    let everyone = Overlap::new();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pool, everyone) = (pool.clone(), everyone.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let mut tx = pool.begin().await.unwrap();
                write_order(&mut tx, order, &everyone).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        everyone.max.load(Ordering::SeqCst),
        1,
        "writers never overlap"
    );

    // A writer excludes readers: hold as a writer, a shared try fails.
    let mut writer = pool.begin().await.unwrap();
    ORDERS.lock(&order).acquire(&mut writer).await.unwrap();
    let mut reader = pool.begin().await.unwrap();
    assert!(
        !ORDERS
            .lock(&order)
            .shared()
            .try_acquire(&mut reader)
            .await
            .unwrap()
    );
}

#[advisory_lock(ns = "test:macro:timeout", key = key, timeout = "200ms")]
async fn impatient(tx: &mut Transaction<'_, Postgres>, key: &str) -> Result<(), AppError> {
    Ok(())
}

#[tokio::test]
async fn a_timeout_conflict_comes_out_as_the_applications_error() {
    let pool = pool().await;
    let key = Uuid::new_v4().to_string();
    let ns = Namespace::try_named("test:macro:timeout").unwrap();
    let holder = testing::hold_lock(&pool, &ns, key.as_str(), Mode::Exclusive)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    match impatient(&mut tx, &key).await {
        Err(AppError::Lock(pglock::Error::Conflict(conflict))) => {
            assert_eq!(conflict.cause(), ConflictCause::LockTimeout);
            assert_eq!(conflict.lock().namespace(), "test:macro:timeout");
            assert_eq!(conflict.lock().id(), ns.id(key.as_str()));
            assert_eq!(conflict.lock().mode(), Mode::Exclusive);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    holder.release().await.unwrap();
}

#[advisory_lock(ns = "test:macro:job", key = job, skip)]
async fn run_job(
    tx: &mut Transaction<'_, Postgres>,
    job: i64,
    ran: &AtomicUsize,
) -> Result<Option<&'static str>, AppError> {
    ran.fetch_add(1, Ordering::SeqCst);
    Ok(Some("done"))
}

#[tokio::test]
async fn the_skip_form_returns_none_when_busy_and_says_so() {
    let (capture, _guard) = support::capture::capture();
    let pool = pool().await;
    let job = Uuid::new_v4().as_u64_pair().0 as i64;
    let ran = AtomicUsize::new(0);

    let mut first = pool.begin().await.unwrap();
    assert_eq!(run_job(&mut first, job, &ran).await.unwrap(), Some("done"));
    let mut second = pool.begin().await.unwrap();
    assert_eq!(
        run_job(&mut second, job, &ran).await.unwrap(),
        None,
        "skipped"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the body ran once");

    let events = capture.events();
    let skipped: Vec<_> = events
        .iter()
        .filter(|event| event.fields.get("outcome").map(String::as_str) == Some("skipped"))
        .collect();
    assert_eq!(skipped.len(), 1, "{events:?}");
    assert_eq!(events.len(), 1, "one event for one skip: {events:?}");
    let fields = &skipped[0].fields;
    assert_eq!(fields["namespace"], "test:macro:job");
    assert_eq!(
        fields["key"],
        Namespace::named("test:macro:job").id(&job).to_string()
    );
    assert_eq!(fields["mode"], "exclusive");
    assert!(fields["function"].contains("run_job"), "{fields:?}");
}

#[advisory_lock(ns = "test:macro:job", key = job, no_wait)]
async fn run_job_or_fail(tx: &mut Transaction<'_, Postgres>, job: i64) -> Result<(), AppError> {
    Ok(())
}

#[tokio::test]
async fn the_no_wait_form_fails_busy() {
    let pool = pool().await;
    let job = Uuid::new_v4().as_u64_pair().0 as i64;
    let mut first = pool.begin().await.unwrap();
    run_job_or_fail(&mut first, job).await.unwrap();
    let mut second = pool.begin().await.unwrap();
    let error = run_job_or_fail(&mut second, job).await.unwrap_err();
    assert!(
        matches!(error, AppError::Lock(pglock::Error::Busy(_))),
        "{error:?}"
    );
}

// The same namespace and key through a method, a trait impl method and a
// generic function: all must lock what the runtime API locks.

static SHAPES: LockFamily<Uuid> = LockFamily::named("test:macro:shapes");

struct Service;

impl Service {
    #[advisory_lock(ns = SHAPES, key = id)]
    async fn method(&self, tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<i32, AppError> {
        Ok(backend_pid(tx).await)
    }
}

trait Settle {
    async fn settle(&self, tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<i32, AppError>;
}

impl Settle for Service {
    #[advisory_lock(ns = SHAPES, key = id, mode = shared)]
    async fn settle(&self, tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<i32, AppError> {
        Ok(backend_pid(tx).await)
    }
}

#[advisory_lock(ns = "test:macro:shapes", key = key)]
async fn generic<K: pglock::LockKey + Send + Sync>(
    tx: &mut Transaction<'_, Postgres>,
    key: K,
) -> Result<i32, AppError> {
    Ok(backend_pid(tx).await)
}

#[tokio::test]
async fn methods_trait_methods_and_generic_functions_lock_what_the_runtime_locks() {
    let pool = pool().await;
    let id = Uuid::new_v4();
    let expected = SHAPES.id(&id);
    assert_eq!(expected, Namespace::named("test:macro:shapes").id(&id));

    let mut tx = pool.begin().await.unwrap();
    let pid = Service.method(&mut tx, id).await.unwrap();
    assert_eq!(
        locks_on(&pool, expected).await,
        vec![(pid, "ExclusiveLock".to_owned(), true)]
    );
    tx.rollback().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    let pid = Service.settle(&mut tx, id).await.unwrap();
    assert_eq!(
        locks_on(&pool, expected).await,
        vec![(pid, "ShareLock".to_owned(), true)]
    );
    tx.rollback().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    let pid = generic(&mut tx, id).await.unwrap();
    assert_eq!(holders(&pool, expected).await, vec![pid]);
    tx.rollback().await.unwrap();
}

#[advisory_lock(ns = 0x7275_6e6c_9e37_79b9, key = run, mode = shared)]
async fn release_step(tx: &mut Transaction<'_, Postgres>, run: Uuid) -> Result<i32, AppError> {
    Ok(backend_pid(tx).await)
}

#[tokio::test]
async fn a_raw_integer_namespace_locks_the_hand_written_key_space_exactly() {
    let pool = pool().await;
    let run = Uuid::new_v4();
    let bits = run.as_u128();
    let hand_written = ((bits >> 64) as u64 ^ bits as u64 ^ 0x7275_6e6c_9e37_79b9) as i64;
    let mut tx = pool.begin().await.unwrap();
    let pid = release_step(&mut tx, run).await.unwrap();
    assert_eq!(
        locks_on(&pool, LockId::BigInt(hand_written)).await,
        vec![(pid, "ShareLock".to_owned(), true)]
    );
}

#[advisory_lock(ns = "test:macro:transfer", key = [to, from], timeout = "30s")]
async fn transfer(
    tx: &mut Transaction<'_, Postgres>,
    from: i64,
    to: i64,
    started: Option<oneshot::Sender<()>>,
) -> Result<(), AppError> {
    if let Some(started) = started {
        let _ = started.send(());
    }
    tokio::task::yield_now().await;
    Ok(())
}

#[tokio::test]
async fn several_keys_in_opposite_orders_never_deadlock() {
    let pool = pool().await;
    let (a, b) = (
        Uuid::new_v4().as_u64_pair().0 as i64,
        Uuid::new_v4().as_u64_pair().0 as i64,
    );
    let mut tasks = Vec::new();
    for (from, to) in [(a, b), (b, a)] {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                let mut tx = pool.begin().await.unwrap();
                transfer(&mut tx, from, to, None)
                    .await
                    .expect("no deadlock");
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut tx = pool.begin().await.unwrap();
    let (started, _) = oneshot::channel();
    transfer(&mut tx, a, b, Some(started)).await.unwrap();
    let pid = backend_pid(&mut tx).await;
    let ns = Namespace::named("test:macro:transfer");
    assert_eq!(holders(&pool, ns.id(&a)).await, vec![pid]);
    assert_eq!(holders(&pool, ns.id(&b)).await, vec![pid]);
}
