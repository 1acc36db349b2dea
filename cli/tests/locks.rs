//! `pglock locks`: the table and the JSON lines of a staged scenario, as
//! an operator's process sees them.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use pglock::testing::{ServerOptions, TestServer};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use support::{
    JOBS, Scenario, TENANTS, TestDatabase, finish, json_lines, json_of, pglock, pglock_on, row_of,
    table_rows, unique, url_with,
};

#[tokio::test]
async fn the_table_shows_holders_waiters_and_who_blocks_whom() {
    let database = TestDatabase::create().await;
    let scenario = Scenario::stage(&database).await;

    let run = pglock_on(
        &database.url,
        &["locks", "--slow", "1h", "--idle-in-transaction", "1h"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "", "a superuser sees everything");
    let rows = table_rows(&run.stdout);
    assert_eq!(rows.len(), 6, "{}", run.stdout);
    let id = JOBS.id(&7_i64).to_string();

    let holder = row_of(&rows, scenario.holder);
    let client = scenario
        .client_addr
        .clone()
        .unwrap_or_else(|| "local".into());
    assert_eq!(holder["CLIENT"], format!("cli-holder ({client})"));
    assert_eq!(holder["LOCK ID"], id);
    assert_eq!(
        holder["NAMESPACE"], "cli:jobs key=7",
        "from its waiters' markers"
    );
    assert_eq!(holder["LOCK"], "exclusive held");
    assert_eq!(holder["BLOCKED BY"], "");
    assert!(holder["BACKEND STATE"].starts_with("idle "), "{holder:?}");

    let first = row_of(&rows, scenario.first_waiter);
    assert_eq!(first["LOCK ID"], id);
    assert_eq!(first["NAMESPACE"], "cli:jobs key=7");
    assert!(first["LOCK"].starts_with("exclusive waiting "), "{first:?}");
    assert_eq!(first["BLOCKED BY"], scenario.holder.to_string());
    assert!(first["BACKEND STATE"].starts_with("active "), "{first:?}");

    let second = row_of(&rows, scenario.second_waiter);
    assert!(
        second["LOCK"].starts_with("exclusive waiting "),
        "{second:?}"
    );
    let mut blockers: Vec<i32> = second["BLOCKED BY"]
        .split(", ")
        .map(|pid| pid.parse().unwrap())
        .collect();
    blockers.sort_unstable();
    let mut expected = vec![scenario.holder, scenario.first_waiter];
    expected.sort_unstable();
    assert_eq!(blockers, expected, "behind the holder and the first waiter");

    // Holders first, then waiters in the order they began to wait.
    let position = |pid: i32| rows.iter().position(|row| row["PID"] == pid.to_string());
    assert!(position(scenario.holder) < position(scenario.first_waiter));
    assert!(position(scenario.first_waiter) < position(scenario.second_waiter));

    let stuck = row_of(&rows, scenario.stuck);
    assert_eq!(
        stuck["NAMESPACE"], "?",
        "nobody waits for it: unknown without --ns"
    );
    assert!(
        stuck["BACKEND STATE"].starts_with("idle in transaction "),
        "{stuck:?}"
    );
    for reader in scenario.readers {
        let reader = row_of(&rows, reader);
        assert_eq!(reader["LOCK"], "shared held");
        assert!(reader["LOCK ID"].starts_with('('), "a pair id: {reader:?}");
    }
    assert!(
        rows.iter()
            .all(|row| row["CLIENT"].ends_with(&format!(" ({client})"))),
        "{rows:?}"
    );
    assert!(run.stdout.contains("6 advisory lock(s): 4 held, 2 awaited"));
    assert!(!run.stdout.contains('!'), "nothing is over the limits yet");

    drop(scenario);
    database.drop_now().await;
}

#[tokio::test]
async fn json_lines_carry_every_field_under_stable_names() {
    let database = TestDatabase::create().await;
    let scenario = Scenario::stage(&database).await;

    let run = pglock_on(&database.url, &["locks", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let objects = json_lines(&run.stdout);
    assert_eq!(objects.len(), 6, "one line per lock: {}", run.stdout);
    let fields = [
        "application_name",
        "blocked_by",
        "client_addr",
        "granted",
        "id",
        "key",
        "key_space",
        "mode",
        "namespace",
        "namespace_source",
        "pid",
        "prepared",
        "state",
        "state_secs",
        "transaction_secs",
        "visible",
        "waited_secs",
    ];
    for object in &objects {
        let mut names: Vec<&str> = object
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, fields);
        assert_eq!(object["client_addr"], json!(scenario.client_addr));
        assert_eq!(object["visible"], true);
        assert_eq!(object["prepared"], false);
    }

    let holder = json_of(&objects, scenario.holder);
    assert_eq!(holder["id"], JOBS.id(&7_i64).to_string());
    assert_eq!(holder["key_space"], "bigint");
    assert_eq!(holder["mode"], "exclusive");
    assert_eq!(holder["granted"], true);
    assert_eq!(holder["waited_secs"], Value::Null);
    assert_eq!(holder["namespace"], "cli:jobs");
    assert_eq!(holder["namespace_source"], "marker");
    assert_eq!(holder["key"], 7);
    assert_eq!(holder["application_name"], "cli-holder");
    assert_eq!(holder["state"], "idle");
    assert!(holder["state_secs"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        holder["transaction_secs"],
        Value::Null,
        "a session lock outside a transaction"
    );

    let second = json_of(&objects, scenario.second_waiter);
    assert_eq!(second["granted"], false);
    assert!(second["waited_secs"].as_f64().unwrap() >= 0.0);
    let mut blockers: Vec<i64> = second["blocked_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pid| pid.as_i64().unwrap())
        .collect();
    blockers.sort_unstable();
    let mut expected = vec![i64::from(scenario.holder), i64::from(scenario.first_waiter)];
    expected.sort_unstable();
    assert_eq!(blockers, expected);
    assert_eq!(second["state"], "active");

    let stuck = json_of(&objects, scenario.stuck);
    assert_eq!(stuck["state"], "idle in transaction");
    assert!(stuck["transaction_secs"].as_f64().unwrap() >= stuck["state_secs"].as_f64().unwrap());
    assert_eq!(stuck["namespace"], Value::Null);
    assert_eq!(stuck["namespace_source"], Value::Null);

    for reader in scenario.readers {
        let reader = json_of(&objects, reader);
        assert_eq!(reader["key_space"], "pair");
        assert_eq!(reader["id"], TENANTS.id(&42_i64).to_string());
        assert_eq!(reader["mode"], "shared");
    }

    drop(scenario);
    database.drop_now().await;
}

#[tokio::test]
async fn ns_names_attribute_integer_keys_and_pair_classes() {
    let database = TestDatabase::create().await;
    let scenario = Scenario::stage(&database).await;

    let run = pglock_on(
        &database.url,
        &[
            "locks",
            "--ns",
            "cli:jobs",
            "cli:tenants",
            "--ns",
            "unrelated",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let rows = table_rows(&run.stdout);
    assert_eq!(
        row_of(&rows, scenario.stuck)["NAMESPACE"],
        "cli:jobs key=8 (by --ns)",
        "key 8 ^ the mask of cli:jobs is the id"
    );
    for reader in scenario.readers {
        assert_eq!(
            row_of(&rows, reader)["NAMESPACE"],
            "cli:tenants (by --ns)",
            "the pair's class is the name's"
        );
    }
    assert_eq!(
        row_of(&rows, scenario.holder)["NAMESPACE"],
        "cli:jobs key=7",
        "a marker needs no --ns"
    );

    let objects =
        json_lines(&pglock_on(&database.url, &["locks", "--json", "--ns", "cli:jobs"]).stdout);
    let stuck = json_of(&objects, scenario.stuck);
    assert_eq!(stuck["namespace"], "cli:jobs");
    assert_eq!(stuck["namespace_source"], "ns");
    assert_eq!(stuck["key"], 8);

    drop(scenario);
    database.drop_now().await;
}

#[tokio::test]
async fn a_holder_idle_in_transaction_too_long_stands_out() {
    let database = TestDatabase::create().await;
    let mut scenario = Scenario::stage(&database).await;
    scenario
        .wait_until_older_than(scenario.stuck, Duration::from_millis(300))
        .await;

    let run = pglock_on(
        &database.url,
        &["locks", "--idle-in-transaction", "300ms", "--slow", "1h"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let rows = table_rows(&run.stdout);
    let state = &row_of(&rows, scenario.stuck)["BACKEND STATE"];
    assert!(
        state.starts_with("idle in transaction ") && state.ends_with(" !"),
        "{state}"
    );
    assert!(
        !row_of(&rows, scenario.holder)["BACKEND STATE"].ends_with('!'),
        "idle, not in a transaction"
    );
    assert!(
        !row_of(&rows, scenario.first_waiter)["LOCK"].ends_with('!'),
        "under --slow"
    );
    let line = run
        .stdout
        .lines()
        .find(|line| line.starts_with(&format!("! pid {} (cli-stuck)", scenario.stuck)))
        .unwrap_or_else(|| panic!("a line for the stuck backend in {}", run.stdout));
    assert!(line.contains("idle in transaction for"), "{line}");
    assert!(line.contains("holding 1 advisory lock(s)"), "{line}");

    // Slow waits are marked too.
    scenario
        .wait_until_older_than(scenario.second_waiter, Duration::from_millis(300))
        .await;
    let run = pglock_on(&database.url, &["locks", "--slow", "300ms"]);
    let rows = table_rows(&run.stdout);
    assert!(
        row_of(&rows, scenario.second_waiter)["LOCK"].ends_with(" !"),
        "{rows:?}"
    );

    drop(scenario);
    database.drop_now().await;
}

#[tokio::test]
async fn colours_only_on_a_terminal_and_never_with_no_color() {
    let database = TestDatabase::create().await;
    let mut scenario = Scenario::stage(&database).await;
    scenario
        .wait_until_older_than(scenario.stuck, Duration::from_millis(100))
        .await;
    let args = [
        "locks",
        "--idle-in-transaction",
        "100ms",
        "--database-url",
        &database.url,
    ];

    let piped = pglock(&args, &[]);
    assert!(!piped.stdout.contains('\x1b'), "no colour into a pipe");
    let terminal = on_a_terminal(&args, &[]);
    assert!(
        terminal.contains("\x1b["),
        "colour on a terminal: {terminal}"
    );
    assert!(
        terminal.contains('┆') || terminal.contains('│'),
        "box drawing on a terminal"
    );
    let no_color = on_a_terminal(&args, &[("NO_COLOR", "1")]);
    assert!(!no_color.contains('\x1b'), "NO_COLOR: {no_color}");

    drop(scenario);
    database.drop_now().await;
}

#[tokio::test]
async fn an_unprivileged_role_sees_every_lock_and_is_told_what_it_cannot_see() {
    let database = TestDatabase::create().await;
    let scenario = Scenario::stage(&database).await;
    let role = unique("cli_reader");
    let mut admin = database.connect("cli-admin").await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = url_with(&database.url, Some(&role), None, None);

    let run = pglock_on(&url, &["locks"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows = table_rows(&run.stdout);
    assert_eq!(rows.len(), 6, "every lock is listed: {}", run.stdout);
    let holder = row_of(&rows, scenario.holder);
    assert_eq!(holder["BACKEND STATE"], "<insufficient privilege>");
    assert_eq!(holder["CLIENT"], "?");
    assert_eq!(
        holder["NAMESPACE"], "?",
        "the waiters' markers are hidden too"
    );
    assert_eq!(
        row_of(&rows, scenario.second_waiter)["LOCK"]
            .split(' ')
            .nth(1),
        Some("waiting"),
        "waits are visible to every role"
    );
    assert_eq!(run.stderr.lines().count(), 1, "one line: {run:?}");
    assert!(
        run.stderr.contains("6 backend(s) belong to other roles"),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains(&format!("GRANT pg_read_all_stats TO {role}")),
        "{run:?}"
    );

    let objects = json_lines(&pglock_on(&url, &["locks", "--json"]).stdout);
    assert!(objects.iter().all(|object| object["visible"] == false));

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT pg_read_all_stats TO {role}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let run = pglock_on(&url, &["locks"]);
    assert_eq!(run.stderr, "", "{run:?}");
    assert_eq!(
        row_of(&table_rows(&run.stdout), scenario.holder)["NAMESPACE"],
        "cli:jobs key=7"
    );

    drop(scenario);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&mut admin)
        .await
        .unwrap();
    database.drop_now().await;
}

#[tokio::test]
async fn a_database_without_advisory_locks_says_so() {
    let database = TestDatabase::create().await;
    let run = pglock_on(&database.url, &["locks"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "no advisory locks are held or awaited\n");
    let run = pglock_on(&database.url, &["locks", "--json"]);
    assert_eq!(run.stdout, "", "no lines");
    database.drop_now().await;
}

#[tokio::test]
async fn the_database_comes_from_database_url_or_the_pg_variables() {
    let database = TestDatabase::create().await;
    let (_tx, pid) = database.begin("cli-env").await;
    let mut tx = _tx;
    JOBS.lock(&1_i64).acquire(&mut tx).await.unwrap();

    let from_env = pglock(&["locks", "--json"], &[("DATABASE_URL", &database.url)]);
    assert_eq!(from_env.code, 0, "{from_env:?}");
    assert_eq!(json_lines(&from_env.stdout)[0]["pid"], pid);

    let options: PgConnectOptions = database.url.parse().unwrap();
    let host = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => options.get_host().to_owned(),
    };
    let port = options.get_port().to_string();
    let mut variables = vec![
        ("PGHOST", host.as_str()),
        ("PGPORT", port.as_str()),
        ("PGUSER", options.get_username()),
        ("PGDATABASE", database.name.as_str()),
    ];
    // An empty DATABASE_URL is no URL: the PG* variables apply.
    variables.push(("DATABASE_URL", ""));
    let from_pg = pglock(&["locks", "--json"], &variables);
    assert_eq!(from_pg.code, 0, "{from_pg:?}");
    assert_eq!(json_lines(&from_pg.stdout)[0]["pid"], pid);

    tx.rollback().await.unwrap();
    database.drop_now().await;
}

#[tokio::test]
async fn a_reader_that_goes_away_ends_the_output_quietly() {
    let database = TestDatabase::create().await;
    let (mut tx, _) = database.begin("cli-pipe").await;
    JOBS.lock(&1_i64).acquire(&mut tx).await.unwrap();

    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_pglock"))
        .args(["locks", "--database-url", &database.url])
        .env("RUST_BACKTRACE", "1")
        .stdout(writer)
        .output()
        .unwrap();
    let run = finish(output);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "");

    tx.rollback().await.unwrap();
    database.drop_now().await;
}

/// Runs `pglock` on a pseudo-terminal (util-linux `script`) and returns
/// what it printed there.
fn on_a_terminal(args: &[&str], env: &[(&str, &str)]) -> String {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_pglock"))
        .chain(args.iter().copied())
        .map(|arg| format!("'{}'", arg.replace('\'', r"'\''")))
        .collect();
    let output = Command::new("script")
        .args([
            "--quiet",
            "--return",
            "--command",
            &quoted.join(" "),
            "/dev/null",
        ])
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .env("COLUMNS", "200")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux script");
    let run = finish(output);
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
}

#[tokio::test]
async fn a_client_over_tcp_shows_its_address() {
    let server = TestServer::start(ServerOptions::new()).expect("a private server");
    let options: PgConnectOptions = server.tcp_url().parse().unwrap();
    let mut conn = options.application_name("cli-tcp").connect().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    JOBS.lock(&3_i64).acquire(&mut tx).await.unwrap();

    let run = pglock_on(&server.tcp_url(), &["locks"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(table_rows(&run.stdout)[0]["CLIENT"], "cli-tcp (127.0.0.1)");
    let run = pglock_on(&server.tcp_url(), &["locks", "--json"]);
    assert_eq!(json_lines(&run.stdout)[0]["client_addr"], "127.0.0.1");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_lock_of_a_prepared_transaction_is_listed_without_a_backend() {
    let server = TestServer::start(ServerOptions::new().setting("max_prepared_transactions", "2"))
        .expect("a private server");
    let mut conn = PgConnection::connect(&server.url()).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    JOBS.lock(&9_i64).shared().acquire(&mut tx).await.unwrap();
    sqlx::query("PREPARE TRANSACTION 'pglock-cli-9'")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);

    let run = pglock_on(&server.url(), &["locks"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows = table_rows(&run.stdout);
    assert_eq!(rows.len(), 1, "{}", run.stdout);
    assert_eq!(rows[0]["PID"], "prepared");
    assert_eq!(rows[0]["LOCK ID"], JOBS.id(&9_i64).to_string());
    assert_eq!(rows[0]["LOCK"], "shared held");
    assert_eq!(rows[0]["BACKEND STATE"], "prepared transaction");
    assert!(
        run.stdout
            .contains("! 1 lock(s) held by prepared transactions"),
        "{}",
        run.stdout
    );
    let objects = json_lines(&pglock_on(&server.url(), &["locks", "--json"]).stdout);
    assert_eq!(objects[0]["pid"], Value::Null);
    assert_eq!(objects[0]["prepared"], true);

    sqlx::query("ROLLBACK PREPARED 'pglock-cli-9'")
        .execute(&mut conn)
        .await
        .unwrap();
}
