//! Workers install artifacts, keyed by name, into one shared directory, each
//! install under a transaction lock on the artifact's name.
//!
//! 1. Two workers install two different artifacts: neither waits for the
//!    other, and both are seen holding their locks at the same time.
//! 2. Four workers want one artifact: one installs it; the others wait, then
//!    re-check the directory, find the work done, and install nothing. Each
//!    wait is logged once when it begins and once with its outcome.
//! 3. A worker's backend is terminated (`pg_terminate_backend`) in the middle
//!    of an install: its lock is gone from `pg_locks` at once, the next
//!    worker finds the half-written install and redoes it, and the first
//!    worker learns at its next statement that its lock is gone, and stops.
//!
//! ```text
//! cargo run --example install_cache
//! ```
//!
//! An artifact is complete once its marker file, written last, exists; a
//! directory without one is a half-written install. The cache is a fresh
//! directory under the system's temporary directory, removed at the end.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pglock::{LockId, Namespace};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

static INSTALLS: Namespace = Namespace::named("example:install-cache");

/// Written last: its presence is what "installed" means.
const MARKER: &str = "INSTALLED";

/// How long the demo waits for anything it expects to see.
const PATIENCE: Duration = Duration::from_secs(20);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_writer(std::io::stderr),
        )
        .with(CountWaits)
        .with(LevelFilter::INFO)
        .init();
    let url = pglock::testing::database_url()?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await?;
    // A worker whose wait is abandoned (its task aborted, a timeout around
    // it) would otherwise leave its pooled connection stuck behind the
    // server-side wait until the lock is granted; pglock cancels such waits.
    pglock::cancel_abandoned_waits(&pool);

    let cache = Arc::new(Cache::create()?);
    println!("Cache directory: {}", cache.root.display());
    different_names_install_in_parallel(&pool, &cache).await?;
    one_name_is_installed_once(&pool, &cache).await?;
    a_killed_install_is_redone(&pool, &cache).await?;

    let left: Vec<_> = pglock::inspect(&pool)
        .await?
        .locks()
        .iter()
        .filter(|row| ARTIFACTS.iter().any(|name| row.id() == cache.lock_id(name)))
        .cloned()
        .collect();
    assert!(left.is_empty(), "no install lock is left: {left:?}");
    println!("\nNo install lock is left in pg_locks.");
    Ok(())
}

const ARTIFACTS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

async fn different_names_install_in_parallel(
    pool: &PgPool,
    cache: &Arc<Cache>,
) -> Result<(), BoxError> {
    println!("\n1. Worker 1 installs alpha while worker 2 installs beta:");
    let (alpha_pause, mut alpha) = Pause::new();
    let (beta_pause, mut beta) = Pause::new();
    let first = spawn_worker(pool, cache, "alpha", 1, Some(alpha_pause));
    let second = spawn_worker(pool, cache, "beta", 2, Some(beta_pause));
    // Both are inside their installs at once: neither waits for the other.
    alpha.reached("worker 1 to be installing alpha").await;
    beta.reached("worker 2 to be installing beta, while alpha is being installed")
        .await;
    let inspection = pglock::inspect(pool).await?;
    let holder = |name: &str| {
        let id = cache.lock_id(name);
        inspection
            .held()
            .find(|row| row.id() == id)
            .map(|row| row.pid())
            .ok_or(format!("pg_locks shows nobody holding {name}"))
    };
    let (alpha_pid, beta_pid) = (holder("alpha")?, holder("beta")?);
    println!("   pg_locks: alpha held by backend {alpha_pid}, beta by backend {beta_pid}, at once");
    assert_ne!(alpha_pid, beta_pid);
    alpha.resume();
    beta.resume();
    for outcome in [first.await??, second.await??] {
        assert_eq!(
            outcome,
            Outcome::Installed {
                waited: None,
                redone: false
            }
        );
    }
    Ok(())
}

async fn one_name_is_installed_once(pool: &PgPool, cache: &Arc<Cache>) -> Result<(), BoxError> {
    println!("\n2. Workers 3 to 6 all want gamma:");
    let waits_before = WaitCounts::now();
    let (pause, mut installing) = Pause::new();
    let installer = spawn_worker(pool, cache, "gamma", 3, Some(pause));
    installing.reached("worker 3 to be installing gamma").await;
    let waiters: Vec<_> = (4..=6)
        .map(|worker| spawn_worker(pool, cache, "gamma", worker, None))
        .collect();
    let queue = waiters_for(pool, cache.lock_id("gamma"), waiters.len()).await?;
    println!("   pg_locks: backends {queue:?} wait for gamma");
    installing.resume();

    let mut outcomes = vec![installer.await??];
    for waiter in waiters {
        outcomes.push(waiter.await??);
    }
    let installed = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Outcome::Installed { .. }))
        .count();
    let found_done = outcomes
        .iter()
        .filter(|outcome| {
            matches!(
                outcome,
                Outcome::InstalledMeanwhile {
                    waited: Some(_),
                    ..
                }
            )
        })
        .count();
    println!(
        "   {installed} worker installed gamma; {found_done} waited, re-checked and found it installed"
    );
    assert_eq!(installed, 1, "exactly one worker installs gamma");
    assert_eq!(found_done, 3, "the others find it done after waiting");
    assert_eq!(cache.state("gamma")?, State::Installed("worker 3".into()));

    let waits = WaitCounts::now().since(waits_before);
    println!(
        "   pglock logged {} waits begun and {} outcomes",
        waits.begun, waits.ended
    );
    assert_eq!(
        waits,
        WaitCounts { begun: 3, ended: 3 },
        "each wait is logged once, and its outcome once"
    );

    let late = spawn_worker(pool, cache, "gamma", 7, None).await??;
    assert_eq!(late, Outcome::Cached, "a later worker takes no lock at all");
    Ok(())
}

async fn a_killed_install_is_redone(pool: &PgPool, cache: &Arc<Cache>) -> Result<(), BoxError> {
    println!("\n3. Worker 8 installs delta, and its backend is terminated halfway:");
    let (pause, mut installing) = Pause::new();
    let doomed = spawn_worker(pool, cache, "delta", 8, Some(pause));
    installing.reached("worker 8 to be installing delta").await;
    let id = cache.lock_id("delta");
    let holder = pglock::inspect(pool)
        .await?
        .held()
        .find(|row| row.id() == id)
        .map(|row| row.pid())
        .ok_or("pg_locks shows nobody holding delta")?;
    println!("   terminating backend {holder}, which holds delta (pg_terminate_backend)");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .execute(pool)
        .await?;
    eventually(
        "the terminated backend's lock to leave pg_locks",
        || async {
            let inspection = pglock::inspect(pool).await?;
            Ok((!inspection.locks().iter().any(|row| row.id() == id)).then_some(()))
        },
    )
    .await?;
    println!("   pg_locks: nobody holds delta any more");
    assert_eq!(cache.state("delta")?, State::HalfWritten);

    let outcome = spawn_worker(pool, cache, "delta", 9, None).await??;
    assert_eq!(
        outcome,
        Outcome::Installed {
            waited: None,
            redone: true
        },
        "worker 9 redoes the half-written install"
    );
    assert_eq!(cache.state("delta")?, State::Installed("worker 9".into()));

    // Worker 8 goes on, and learns at its next statement that its
    // transaction, and so its lock, is gone: it stops, and writes nothing more.
    installing.resume();
    let error = doomed.await?.expect_err("worker 8 lost its lock");
    println!("   worker 8 goes on, and stops: {error}");
    assert_eq!(cache.state("delta")?, State::Installed("worker 9".into()));
    Ok(())
}

/// What a worker found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Already installed when the worker looked: no lock taken.
    Cached,
    /// Installed by `by` while this worker waited for the lock.
    InstalledMeanwhile {
        by: String,
        waited: Option<Duration>,
    },
    /// Installed by this worker, after redoing a half-written install if
    /// `redone`.
    Installed {
        waited: Option<Duration>,
        redone: bool,
    },
}

/// Makes sure `name` is installed in `cache`, installing it if nobody has.
async fn ensure_installed(
    pool: &PgPool,
    cache: &Cache,
    name: &str,
    worker: &str,
    pause: Option<Pause>,
) -> Result<Outcome, BoxError> {
    // A complete install never changes again, so finding one needs no lock.
    // Anything else is judged only under the lock: without it, a directory
    // with no marker may be an install still in progress.
    if let State::Installed(_) = cache.state(name)? {
        println!("   {worker}: {name} is installed already");
        return Ok(Outcome::Cached);
    }
    let mut tx = pool.begin().await?;
    let waited = INSTALLS
        .lock(&cache.lock_key(name))
        .timeout(PATIENCE)
        .acquire(&mut tx)
        .await?
        .waited();
    // Re-check: while this worker waited, the holder may have finished the
    // install, or died halfway through it.
    let redone = match cache.state(name)? {
        State::Installed(by) => {
            println!(
                "   {worker}: {}, re-checked: {by} installed {name}; nothing to do",
                waited_text(waited)
            );
            tx.commit().await?;
            return Ok(Outcome::InstalledMeanwhile { by, waited });
        }
        State::HalfWritten => {
            println!(
                "   {worker}: {}, re-checked: {name} is half-written; redoing it",
                waited_text(waited)
            );
            fs::remove_dir_all(cache.artifact_dir(name))?;
            true
        }
        State::Missing => false,
    };
    println!("   {worker}: installing {name}");
    install(&mut tx, cache, name, worker, pause).await?;
    println!("   {worker}: installed {name}");
    tx.commit().await?;
    Ok(Outcome::Installed { waited, redone })
}

fn waited_text(waited: Option<Duration>) -> String {
    match waited {
        Some(waited) => format!("waited {}ms", waited.as_millis()),
        None => "took the lock at once".to_owned(),
    }
}

/// Writes the artifact in two parts, then its marker. Runs while `tx` holds
/// the artifact's lock.
async fn install(
    tx: &mut sqlx::PgConnection,
    cache: &Cache,
    name: &str,
    worker: &str,
    pause: Option<Pause>,
) -> Result<(), BoxError> {
    let dir = cache.artifact_dir(name);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("part-1"), format!("{name}, first half\n"))?;
    if let Some(pause) = pause {
        pause.here().await;
    }
    // A statement on the lock's transaction succeeds only while that
    // transaction, and so the lock, still exists: a worker whose backend
    // was terminated learns it here and stops. This narrows the window but
    // can't close it: the lock does not fence the file system, which is why
    // the marker goes last and the next holder re-checks.
    sqlx::query("SELECT 1").execute(&mut *tx).await?;
    fs::write(dir.join("part-2"), format!("{name}, second half\n"))?;
    fs::write(dir.join(MARKER), worker)?;
    Ok(())
}

fn spawn_worker(
    pool: &PgPool,
    cache: &Arc<Cache>,
    name: &'static str,
    worker: usize,
    pause: Option<Pause>,
) -> JoinHandle<Result<Outcome, BoxError>> {
    let (pool, cache) = (pool.clone(), cache.clone());
    tokio::spawn(async move {
        ensure_installed(&pool, &cache, name, &format!("worker {worker}"), pause).await
    })
}

/// Waits until `count` backends wait for `id`, as `pg_locks` shows it;
/// returns their pids.
async fn waiters_for(pool: &PgPool, id: LockId, count: usize) -> Result<Vec<i32>, BoxError> {
    eventually("the workers to wait for the lock", || async move {
        let inspection = pglock::inspect(pool).await?;
        let pids: Vec<i32> = inspection
            .waiting()
            .filter(|row| row.id() == id)
            .map(|row| row.pid())
            .collect();
        Ok((pids.len() == count).then_some(pids))
    })
    .await
}

/// Polls `check` until it returns a value; fails after [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, BoxError>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The shared install directory: one subdirectory per artifact. Removed when
/// dropped, even after a failed assertion.
struct Cache {
    root: PathBuf,
    /// Tells this directory from any other.
    id: String,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Missing,
    /// The directory exists, the marker doesn't: an install died halfway.
    HalfWritten,
    /// Complete; installed by the worker named.
    Installed(String),
}

impl Cache {
    fn create() -> std::io::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let root = std::env::temp_dir().join(format!("pglock-install-cache-{id}"));
        fs::create_dir(&root)?;
        Ok(Self { root, id })
    }

    /// The lock key of an artifact: its name in this directory. Installs
    /// into two different directories (two runs of this example, say) don't
    /// contend.
    fn lock_key<'a>(&'a self, name: &'a str) -> (&'a str, &'a str) {
        (&self.id, name)
    }

    fn lock_id(&self, name: &str) -> LockId {
        INSTALLS.id(&self.lock_key(name))
    }

    fn artifact_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn state(&self, name: &str) -> std::io::Result<State> {
        let dir = self.artifact_dir(name);
        match fs::read_to_string(dir.join(MARKER)) {
            Ok(by) => Ok(State::Installed(by)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(if dir.exists() {
                State::HalfWritten
            } else {
                State::Missing
            }),
            Err(error) => Err(error),
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A point inside an install where the worker stops until the demo lets it
/// go on, so that the demo can look at the server while the lock is held
/// (a real install would be downloading here).
struct Pause {
    reached: oneshot::Sender<()>,
    resume: oneshot::Receiver<()>,
}

/// The demo's end of a [`Pause`].
struct PauseControl {
    reached: oneshot::Receiver<()>,
    resume: oneshot::Sender<()>,
}

impl Pause {
    fn new() -> (Pause, PauseControl) {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (resume_tx, resume_rx) = oneshot::channel();
        (
            Pause {
                reached: reached_tx,
                resume: resume_rx,
            },
            PauseControl {
                reached: reached_rx,
                resume: resume_tx,
            },
        )
    }

    async fn here(self) {
        let _ = self.reached.send(());
        let _ = self.resume.await;
    }
}

impl PauseControl {
    /// Waits until the worker is at its pause; panics after [`PATIENCE`].
    async fn reached(&mut self, what: &str) {
        match tokio::time::timeout(PATIENCE, &mut self.reached).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the worker ended before reaching its pause; expected {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }

    fn resume(self) {
        let _ = self.resume.send(());
    }
}

/// pglock's wait events in this example's namespace, counted: the "busy;
/// waiting" event when a wait begins, and the one that carries the outcome
/// and `waited_ms` when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WaitCounts {
    begun: usize,
    ended: usize,
}

static WAITS_BEGUN: AtomicUsize = AtomicUsize::new(0);
static WAITS_ENDED: AtomicUsize = AtomicUsize::new(0);

impl WaitCounts {
    fn now() -> Self {
        Self {
            begun: WAITS_BEGUN.load(Ordering::SeqCst),
            ended: WAITS_ENDED.load(Ordering::SeqCst),
        }
    }

    fn since(self, before: WaitCounts) -> Self {
        Self {
            begun: self.begun - before.begun,
            ended: self.ended - before.ended,
        }
    }
}

struct CountWaits;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWaits {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "pglock" {
            return;
        }
        let mut fields = WaitFields::default();
        event.record(&mut fields);
        if fields.namespace.as_deref() != Some(INSTALLS.label()) {
            return;
        }
        if fields.waited_ms {
            WAITS_ENDED.fetch_add(1, Ordering::SeqCst);
        } else if fields.message.as_deref() == Some("advisory lock is busy; waiting") {
            WAITS_BEGUN.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Default)]
struct WaitFields {
    message: Option<String>,
    namespace: Option<String>,
    waited_ms: bool,
}

impl Visit for WaitFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = Some(format!("{value:?}")),
            "waited_ms" => self.waited_ms = true,
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "namespace" {
            self.namespace = Some(value.to_owned());
        }
    }

    fn record_u64(&mut self, field: &Field, _: u64) {
        if field.name() == "waited_ms" {
            self.waited_ms = true;
        }
    }
}
