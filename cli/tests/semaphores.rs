//! `pglock locks`: a semaphore is one line (namespace, k of N held,
//! waiters), in the table's output and in the JSON lines, and its permits
//! are not listed as locks of their own.

mod support;

use std::time::Duration;

use pglock::{Namespace, SessionGuard};
use support::{
    Run, TestDatabase, backend_pid, json_lines, pglock, pglock_on, table_rows, wait_until,
    wait_until_waiting,
};

static IMPORTS: Namespace = Namespace::named("cli:imports");

/// `pglock id` of the semaphore of `permits` permits on the key `"acme"`
/// of [`IMPORTS`].
fn id_of_imports(permits: &str) -> Run {
    pglock(
        &[
            "id",
            "cli:imports",
            "acme",
            "--type",
            "str",
            "--permits",
            permits,
        ],
        &[],
    )
}

/// Every permit of a semaphore of three held, each by a session that has
/// run another statement since; a plain lock on the same key; two
/// sessions waiting for a permit.
struct Staged {
    holders: Vec<i32>,
    waiters: Vec<i32>,
    plain_holder: i32,
    _guards: Vec<SessionGuard>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn stage(database: &TestDatabase) -> Staged {
    let mut observer = database.connect("cli-observer").await;
    let mut guards = Vec::new();
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut conn = database.connect("cli-permit").await;
        holders.push(backend_pid(&mut conn).await);
        let mut guard = IMPORTS
            .session_semaphore(&"acme", 3)
            .no_wait()
            .acquire(conn)
            .await
            .unwrap();
        // Its marker is gone: only the waiters' say what the rows are.
        sqlx::query("SELECT 1")
            .execute(guard.connection())
            .await
            .unwrap();
        guards.push(guard);
    }
    let mut conn = database.connect("cli-plain").await;
    let plain_holder = backend_pid(&mut conn).await;
    guards.push(IMPORTS.session_lock(&"acme").acquire(conn).await.unwrap());

    let mut tasks = Vec::new();
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let mut conn = database.connect("cli-permit-waiter").await;
        let pid = backend_pid(&mut conn).await;
        tasks.push(tokio::spawn(async move {
            // Ends when the test drops the task, or after a minute.
            let _ = IMPORTS
                .session_semaphore(&"acme", 3)
                .timeout(Duration::from_secs(60))
                .acquire(conn)
                .await;
        }));
        wait_until_waiting(&mut observer, pid).await;
        waiters.push(pid);
    }
    Staged {
        holders,
        waiters,
        plain_holder,
        _guards: guards,
        _tasks: tasks,
    }
}

#[tokio::test]
async fn a_semaphore_is_one_line_of_k_of_n_held_and_its_waiters() {
    let database = TestDatabase::create().await;
    let staged = stage(&database).await;
    let base = IMPORTS.permit_ids(&"acme", 3).unwrap().base();

    let run = pglock_on(&database.url, &["locks"]);
    assert_eq!(run.code, 0, "{run:?}");
    // The table lists the plain lock alone.
    let rows = table_rows(&run.stdout);
    assert_eq!(rows.len(), 1, "{}", run.stdout);
    assert_eq!(rows[0]["PID"], staged.plain_holder.to_string());
    assert_eq!(rows[0]["LOCK ID"], IMPORTS.id(&"acme").to_string());
    let line = run
        .stdout
        .lines()
        .find(|line| line.starts_with("semaphore "))
        .unwrap_or_else(|| panic!("a semaphore line in {}", run.stdout));
    let expected =
        format!("semaphore cli:imports (permits of {base}): 3 of 3 held, 2 waiting [held: ");
    assert!(line.starts_with(&expected), "{line}");
    for pid in &staged.holders {
        assert!(line.contains(&format!(": pid {pid}")), "{line}");
    }
    let mut waiters = staged.waiters.clone();
    waiters.sort_unstable();
    // `pid 5110 for 12ms, pid 5111 for 9ms`, by pid.
    let waiting: Vec<i32> = line[line.find("; waiting: ").expect(line) + "; waiting: ".len()..]
        .trim_end_matches(']')
        .split(", ")
        .map(|waiter| {
            let (pid, waited) = waiter
                .strip_prefix("pid ")
                .and_then(|rest| rest.split_once(" for "))
                .unwrap_or_else(|| panic!("`pid P for T` in {line}"));
            assert!(!waited.is_empty(), "{line}");
            pid.parse().unwrap()
        })
        .collect();
    assert_eq!(waiting, waiters, "{line}");
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("semaphore "))
            .count(),
        1
    );
    assert!(
        run.stdout
            .contains("1 advisory lock(s): 1 held, 0 awaited; 1 semaphore(s):")
    );

    let run = pglock_on(&database.url, &["locks", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let objects = json_lines(&run.stdout);
    assert_eq!(objects.len(), 2, "{}", run.stdout);
    assert_eq!(objects[0]["pid"], staged.plain_holder);
    let semaphore = &objects[1];
    assert_eq!(semaphore["kind"], "semaphore");
    assert_eq!(semaphore["namespace"], "cli:imports");
    assert_eq!(semaphore["base_id"], base.to_string());
    assert_eq!(semaphore["permits"], 3);
    assert_eq!(semaphore["held"], 3);
    assert_eq!(semaphore["waiting"], 2);
    let mut holder_pids: Vec<i64> = semaphore["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|holder| holder["pid"].as_i64().unwrap())
        .collect();
    holder_pids.sort_unstable();
    let mut expected: Vec<i64> = staged.holders.iter().map(|pid| i64::from(*pid)).collect();
    expected.sort_unstable();
    assert_eq!(holder_pids, expected);
    assert_eq!(semaphore["waiters"], serde_json::json!(waiters));
    assert!(
        semaphore["longest_wait_secs"].as_f64().is_some(),
        "{semaphore}"
    );
    drop(staged);
    database.drop_now().await;
}

/// `pglock id NS KEY --permits N` prints the semaphore's permit 0, which a
/// `pglock locks` line shows (the key can't be read back from the ids), and
/// a statement that lists exactly its held permits.
#[tokio::test]
async fn pglock_id_finds_a_semaphores_line_and_its_held_permits() {
    let database = TestDatabase::create().await;
    let staged = stage(&database).await;
    let run = pglock_on(&database.url, &["locks"]);
    assert_eq!(run.code, 0, "{run:?}");
    let line = run
        .stdout
        .lines()
        .find(|line| line.starts_with("semaphore "))
        .unwrap_or_else(|| panic!("a semaphore line in {}", run.stdout))
        .to_owned();

    let run = id_of_imports("3");
    assert_eq!(run.code, 0, "{run:?}");
    let base = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("semaphore  3 permit(s): permit 0 "))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("a semaphore line in {}", run.stdout));
    assert!(line.contains(&format!("(permits of {base})")), "{line}");
    let heading = "-- its held permits (docs/KEYS.md, section 4)\n";
    let start = run.stdout.find(heading).expect(heading) + heading.len();
    let query = run.stdout[start..].trim();
    let mut conn = database.connect("cli-id-permits").await;
    let held: Vec<(i32, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}: {query}"));
    let mut pids: Vec<i32> = held.iter().map(|(_, pid)| *pid).collect();
    pids.sort_unstable();
    let mut expected = staged.holders.clone();
    expected.sort_unstable();
    assert_eq!(pids, expected);
    let indexes: Vec<i32> = held.iter().map(|(index, _)| *index).collect();
    assert_eq!(indexes, [0, 1, 2]);
    // Which is what the library computes.
    let ids = IMPORTS.permit_ids(&"acme", 3).unwrap();
    assert_eq!(base, ids.base().to_string());

    let run = id_of_imports("0");
    assert_eq!(run.code, 2, "{run:?}");
    drop(staged);
    database.drop_now().await;
}

#[test]
fn pglock_id_permits_match_the_vectors_of_docs_keys_md() {
    for (args, first, last) in [
        (
            &["billing:invoice", "0", "--permits", "1024"][..],
            "-8123215699107237888",
            "permit 1023 -8123215699107236865",
        ),
        (
            &["tenant:migrate", "7", "--pair", "--permits", "4"][..],
            "(1052899235, 1368715264)",
            "permit 3 (1052899235, 1368715267)",
        ),
    ] {
        let mut all = vec!["id"];
        all.extend(args);
        let run = pglock(&all, &[]);
        assert_eq!(run.code, 0, "{run:?}");
        let line = run
            .stdout
            .lines()
            .find(|line| line.starts_with("semaphore  "))
            .unwrap_or_else(|| panic!("{}", run.stdout));
        assert!(
            line.contains(&format!("permit 0 {first}, {last}")),
            "{line}"
        );
    }
}

/// A semaphore's waiter queues anew every slice (100 ms at the most), so
/// `pg_locks` says it began waiting a moment ago: its wait is the wait
/// statement's, `pglock check` fails on one too long, and `pglock locks`
/// marks it slow on the semaphore's line.
#[tokio::test]
async fn check_fails_on_a_permit_wait_too_long() {
    let database = TestDatabase::create().await;
    let staged = stage(&database).await;
    let mut observer = database.connect("cli-observer").await;
    for pid in &staged.waiters {
        wait_until(
            &mut observer,
            *pid,
            "(SELECT pg_catalog.clock_timestamp() - query_start > interval '1 s' \
              FROM pg_catalog.pg_stat_activity WHERE pid = $1)",
        )
        .await;
    }
    let run = pglock_on(
        &database.url,
        &["check", "--idle-in-transaction", "1h", "--wait", "500ms"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let waiters = staged.waiters.clone();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "both waiters: {run:?}");
    // One line per waiter, in whatever order the check lists them.
    for pid in &waiters {
        let line = lines
            .iter()
            .find(|line| line.starts_with(&format!("pid {pid} (cli-permit-waiter) has waited ")))
            .unwrap_or_else(|| panic!("a line for waiter {pid}: {run:?}"));
        assert!(line.contains("(limit 500ms)"), "{line}");
    }

    // `pglock locks` marks each of them slow on the semaphore's line.
    let run = pglock_on(&database.url, &["locks", "--slow", "500ms"]);
    assert_eq!(run.code, 0, "{run:?}");
    let line = run
        .stdout
        .lines()
        .find(|line| line.starts_with("semaphore "))
        .unwrap_or_else(|| panic!("a semaphore line in {}", run.stdout));
    let waiting = &line[line.find("; waiting: ").expect(line)..];
    for pid in &waiters {
        let at = waiting.find(&format!("pid {pid} for ")).expect(line);
        let this = waiting[at..]
            .split(',')
            .next()
            .unwrap()
            .trim_end_matches(']');
        assert!(this.ends_with(" !"), "{pid} marked slow: {line}");
    }
    let run = pglock_on(&database.url, &["locks", "--json"]);
    let objects = json_lines(&run.stdout);
    let semaphore = objects
        .iter()
        .find(|object| object["kind"] == "semaphore")
        .expect("a semaphore object");
    assert!(
        semaphore["longest_wait_secs"].as_f64().unwrap() > 1.0,
        "{semaphore}"
    );
    drop(staged);
    database.drop_now().await;
}

/// A permit a prepared transaction holds is on the semaphore's line
/// (`permit i: prepared`), counted as held, and not a row of the table;
/// the line under the table still warns of it.
#[tokio::test]
async fn a_permit_of_a_prepared_transaction_is_on_its_semaphores_line() {
    use pglock::testing::{ServerOptions, TestServer};
    use sqlx::Connection;
    let server = TestServer::start(ServerOptions::new().setting("max_prepared_transactions", "2"))
        .expect("a private server");
    let url = server.url();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let prepared = IMPORTS
        .semaphore(&"prepared", 2)
        .no_wait()
        .acquire(&mut tx)
        .await
        .unwrap();
    sqlx::query("PREPARE TRANSACTION 'pglock-cli-permit'")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    let holder = sqlx::PgConnection::connect(&url).await.unwrap();
    let _held = IMPORTS
        .session_semaphore(&"prepared", 2)
        .no_wait()
        .acquire(holder)
        .await
        .unwrap();
    let mut waiter = sqlx::PgConnection::connect(&url).await.unwrap();
    let waiter_pid = backend_pid(&mut waiter).await;
    let task = tokio::spawn(async move {
        let _ = IMPORTS
            .session_semaphore(&"prepared", 2)
            .timeout(Duration::from_secs(60))
            .acquire(waiter)
            .await;
    });
    let mut observer = sqlx::PgConnection::connect(&url).await.unwrap();
    wait_until_waiting(&mut observer, waiter_pid).await;

    let run = pglock_on(&url, &["locks"]);
    assert_eq!(run.code, 0, "{run:?}");
    // No table: every lock is a permit.
    assert!(
        run.stdout
            .starts_with("0 advisory lock(s): 0 held, 0 awaited; 1 semaphore(s):\n"),
        "{}",
        run.stdout
    );
    let line = run
        .stdout
        .lines()
        .find(|line| line.starts_with("semaphore "))
        .unwrap_or_else(|| panic!("a semaphore line in {}", run.stdout));
    assert!(line.contains(": 2 of 2 held, 1 waiting"), "{line}");
    assert!(
        line.contains(&format!("permit {}: prepared", prepared.index())),
        "{line}"
    );
    assert!(
        run.stdout
            .contains("! 1 lock(s) held by prepared transactions"),
        "{}",
        run.stdout
    );
    let objects = json_lines(&pglock_on(&url, &["locks", "--json"]).stdout);
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0]["held"], 2);
    assert_eq!(
        objects[0]["prepared_permits"],
        serde_json::json!([prepared.index()])
    );

    task.abort();
    sqlx::query("ROLLBACK PREPARED 'pglock-cli-permit'")
        .execute(&mut observer)
        .await
        .unwrap();
}
