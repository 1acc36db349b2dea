//! Leaders per partition: three workers share 64 partitions, each partition
//! led by exactly one worker, all through a `LockManager` per worker, which
//! holds its share of session locks on two connections. One worker's
//! backends are killed; its locks report the loss, it stops, and its
//! partitions move to the other two.
//!
//! ```text
//! cargo run --example partition_leaders
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pglock::{CheckOptions, LockManager, ManagedGuard, ManagerOptions, Namespace};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const PARTITIONS: i64 = 64;
const WORKERS: i64 = 3;

/// A worker holds its membership lock for as long as it works.
static MEMBERS: Namespace = Namespace::named("example:partition_leaders:worker");
static PARTITION: Namespace = Namespace::named("example:partition_leaders:partition");

/// What each worker leads, as it sees it.
type Led = Arc<Mutex<BTreeMap<i64, BTreeSet<i64>>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let url = pglock::testing::database_url()?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    let connect: PgConnectOptions = url.parse()?;
    let led: Led = Arc::default();

    println!("1. {WORKERS} workers share {PARTITIONS} partitions:");
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let manager = LockManager::new(
            connect.clone(),
            ManagerOptions::default().max_connections(2).checks(
                CheckOptions::default()
                    .check_every(Duration::from_millis(200))
                    .check_timeout(Duration::from_secs(1)),
            ),
        );
        workers.push(tokio::spawn(work(worker, manager, Arc::clone(&led))));
    }
    let leaders = until_every_partition_has_one_leader(&pool, WORKERS, &led).await?;
    report(&leaders);

    let victim = 1;
    let pids = backends_of(&pool, victim, &led).await?;
    println!("2. worker {victim}'s backends {pids:?} are terminated:");
    for pid in &pids {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&pool)
            .await?;
    }
    let stopped = tokio::time::timeout(Duration::from_secs(30), workers.remove(victim as usize))
        .await
        .map_err(|_| "the worker never noticed the loss")??;
    println!("   worker {victim}: {stopped}");
    let leaders = until_every_partition_has_one_leader(&pool, WORKERS - 1, &led).await?;
    report(&leaders);
    assert!(
        !leaders.values().any(|worker| *worker == victim),
        "no partition is led by the stopped worker"
    );
    println!("Every partition has exactly one leader, and worker {victim}'s moved to the others.");
    for worker in workers {
        worker.abort();
    }
    Ok(())
}

/// One worker: holds its membership, then keeps leading its fair share of
/// the partitions (64 over the live workers), trying each without waiting.
/// A worker that loses any lock stops: its backends are gone, and a worker
/// that can't tell what it still leads must not lead anything.
async fn work(worker: i64, manager: LockManager, led: Led) -> String {
    let outcome = lead(worker, &manager, &led).await;
    led.lock().unwrap().remove(&worker);
    let released = manager.close().await;
    format!("{outcome}; stopped, releasing {released} lock(s) it still held")
}

async fn lead(worker: i64, manager: &LockManager, led: &Led) -> String {
    let mut membership = match manager.lock(&MEMBERS, &worker).acquire().await {
        Ok(lock) => lock,
        Err(error) => return format!("could not join: {error}"),
    };
    let mut partitions: BTreeMap<i64, ManagedGuard> = BTreeMap::new();
    loop {
        if let Some(lost) = partitions.values().find(|lock| !lock.is_held()) {
            return format!("lost {}", lost.lock());
        }
        let members = match live_members(manager).await {
            Ok(members) => members,
            Err(error) => return format!("could not count the workers: {error}"),
        };
        let fair = fair_share(members as i64);
        // More than its share (a worker joined): give the extras back.
        while partitions.len() > fair {
            let Some((_, extra)) = partitions.pop_last() else {
                break;
            };
            if let Err(error) = extra.release().await {
                return format!("could not hand a partition over: {error}");
            }
        }
        // Start at a place of its own, so the workers don't all race for
        // the same partitions.
        for step in 0..PARTITIONS {
            if partitions.len() >= fair {
                break;
            }
            let partition = (worker * PARTITIONS / WORKERS + step) % PARTITIONS;
            if partitions.contains_key(&partition) {
                continue;
            }
            match manager.lock(&PARTITION, &partition).try_acquire().await {
                Ok(Some(lock)) => {
                    partitions.insert(partition, lock);
                }
                Ok(None) => {}
                Err(error) => return format!("could not try partition {partition}: {error}"),
            }
        }
        led.lock()
            .unwrap()
            .insert(worker, partitions.keys().copied().collect());
        tokio::select! {
            lost = membership.lost() => return format!("lost its membership: {}", lost.reason()),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// The most partitions one of `workers` workers leads.
fn fair_share(workers: i64) -> usize {
    (PARTITIONS as usize).div_ceil(workers.max(1) as usize)
}

/// How many workers hold their membership lock now.
async fn live_members(manager: &LockManager) -> Result<usize, pglock::Error> {
    let mut live = 0;
    for worker in 0..WORKERS {
        match manager.lock(&MEMBERS, &worker).try_acquire().await? {
            // Free: that worker is gone. Give it back at once.
            Some(lock) => lock.release().await?,
            None => live += 1,
        }
    }
    Ok(live)
}

/// Waits until `workers` workers are members, each partition is held by
/// exactly one backend in `pg_locks`, and the workers' own views agree: no
/// partition in two views, every partition in one, no worker above its
/// fair share, and no backend serving two workers. Returns partition → worker.
async fn until_every_partition_has_one_leader(
    pool: &PgPool,
    workers: i64,
    led: &Led,
) -> Result<BTreeMap<i64, i64>, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let inspection = pglock::inspect(pool).await?;
        let members = (0..WORKERS)
            .filter(|worker| {
                inspection
                    .held()
                    .any(|lock| lock.id() == MEMBERS.id(worker))
            })
            .count() as i64;
        let holder = |partition: i64| -> Vec<i32> {
            let id = PARTITION.id(&partition);
            inspection
                .held()
                .filter(|lock| lock.id() == id)
                .map(|lock| lock.pid())
                .collect()
        };
        let views = led.lock().unwrap().clone();
        let mut leaders = BTreeMap::new();
        let mut worker_of_pid: BTreeMap<i32, i64> = BTreeMap::new();
        let mut agree = true;
        for (worker, partitions) in &views {
            for partition in partitions {
                agree &= leaders.insert(*partition, *worker).is_none();
                if let [pid] = holder(*partition).as_slice() {
                    agree &= *worker_of_pid.entry(*pid).or_insert(*worker) == *worker;
                }
            }
        }
        let one_each = (0..PARTITIONS).all(|partition| holder(partition).len() == 1);
        let balanced = views
            .values()
            .all(|partitions| partitions.len() <= fair_share(workers));
        if members == workers
            && one_each
            && agree
            && balanced
            && leaders.len() == PARTITIONS as usize
        {
            return Ok(leaders);
        }
        if Instant::now() >= deadline {
            return Err("the partitions never settled on one leader each".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The backends that hold `worker`'s locks: its membership and its
/// partitions.
async fn backends_of(
    pool: &PgPool,
    worker: i64,
    led: &Led,
) -> Result<BTreeSet<i32>, Box<dyn std::error::Error>> {
    let inspection = pglock::inspect(pool).await?;
    let partitions = led
        .lock()
        .unwrap()
        .get(&worker)
        .cloned()
        .unwrap_or_default();
    let ids: Vec<_> = partitions
        .iter()
        .map(|partition| PARTITION.id(partition))
        .chain([MEMBERS.id(&worker)])
        .collect();
    Ok(inspection
        .held()
        .filter(|lock| ids.contains(&lock.id()))
        .map(|lock| lock.pid())
        .collect())
}

fn report(leaders: &BTreeMap<i64, i64>) {
    let mut per_worker: BTreeMap<i64, usize> = BTreeMap::new();
    for worker in leaders.values() {
        *per_worker.entry(*worker).or_default() += 1;
    }
    println!(
        "   pg_locks: every partition held by exactly one backend, the workers' views agree; \
         partitions per worker: {per_worker:?}"
    );
}
