//! `pglock check`: its exit codes and what it says, on the staged scenario.

mod support;

use std::time::Duration;

use support::{JOBS, Scenario, TestDatabase, pglock_on, unique, url_with};

#[tokio::test]
async fn check_passes_silently_within_the_limits() {
    let database = TestDatabase::create().await;
    let scenario = Scenario::stage(&database).await;

    let run = pglock_on(
        &database.url,
        &["check", "--idle-in-transaction", "1h", "--wait", "1h"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "", "silent for cron");
    assert_eq!(run.stderr, "");

    drop(scenario);
    database.drop_now().await;
}

#[tokio::test]
async fn check_fails_on_a_holder_idle_in_transaction_too_long() {
    let database = TestDatabase::create().await;
    let mut scenario = Scenario::stage(&database).await;
    scenario
        .wait_until_older_than(scenario.stuck, Duration::from_millis(200))
        .await;

    let run = pglock_on(
        &database.url,
        &[
            "check",
            "--idle-in-transaction",
            "200ms",
            "--wait",
            "1h",
            "--ns",
            "cli:jobs",
        ],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let line = run
        .stdout
        .lines()
        .find(|line| line.starts_with(&format!("pid {} (cli-stuck) ", scenario.stuck)))
        .unwrap_or_else(|| panic!("a line for the stuck backend: {run:?}"));
    assert!(line.contains("has been idle in transaction for"), "{line}");
    assert!(line.contains("(limit 200ms)"), "{line}");
    assert!(
        line.ends_with(&format!(
            "holding exclusive lock {} of cli:jobs key=8 (by --ns)",
            JOBS.id(&8_i64)
        )),
        "{line}"
    );
    assert!(
        !run.stdout.contains(&format!("pid {} ", scenario.holder)),
        "a session lock's idle holder is not in a transaction: {run:?}"
    );
    assert!(!run.stdout.contains("has waited"), "{run:?}");

    drop(scenario);
    database.drop_now().await;
}

#[tokio::test]
async fn check_fails_on_a_wait_too_long() {
    let database = TestDatabase::create().await;
    let mut scenario = Scenario::stage(&database).await;
    scenario
        .wait_until_older_than(scenario.second_waiter, Duration::from_millis(200))
        .await;

    let run = pglock_on(
        &database.url,
        &["check", "--idle-in-transaction", "1h", "--wait", "200ms"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "both waiters: {run:?}");
    assert!(lines[0].starts_with(&format!(
        "pid {} (cli-waiter-1) has waited ",
        scenario.first_waiter
    )));
    assert!(
        lines[0].ends_with(&format!("blocked by pid {}", scenario.holder)),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with(&format!(
        "pid {} (cli-waiter-2) has waited ",
        scenario.second_waiter
    )));
    assert!(
        lines
            .iter()
            .all(|line| line.contains("(limit 200ms)") && line.contains("cli:jobs key=7"))
    );

    drop(scenario);
    database.drop_now().await;
}

#[tokio::test]
async fn check_does_not_pass_what_it_cannot_see() {
    let database = TestDatabase::create().await;
    let scenario = Scenario::stage(&database).await;
    let role = unique("cli_prober");
    let mut admin = database.connect("cli-admin").await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = url_with(&database.url, Some(&role), None, None);

    let run = pglock_on(
        &url,
        &["check", "--idle-in-transaction", "1h", "--wait", "1h"],
    );
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr
            .contains("cannot check 4 lock(s) held by backends of other roles"),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains(&format!("GRANT pg_read_all_stats TO {role}")),
        "{run:?}"
    );

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT pg_read_all_stats TO {role}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let run = pglock_on(
        &url,
        &["check", "--idle-in-transaction", "1h", "--wait", "1h"],
    );
    assert_eq!(run.code, 0, "{run:?}");

    drop(scenario);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&mut admin)
        .await
        .unwrap();
    database.drop_now().await;
}
