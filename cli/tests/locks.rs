//! `pglock locks`: the table and the JSON lines of a staged scenario, as
//! an operator's process sees them.

mod support;

use support::{
    JOBS, Scenario, TestDatabase, json_lines, json_of, pglock, pglock_on, row_of, table_rows,
};

#[tokio::test]
async fn the_table_shows_holders_waiters_and_who_blocks_whom() {
    let database = TestDatabase::create().await;
    let scenario = Scenario::stage(&database).await;

    let run = pglock_on(&database.url, &["locks"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "", "a superuser sees everything");
    let rows = table_rows(&run.stdout);
    assert_eq!(rows.len(), 6, "{}", run.stdout);
    let id = JOBS.id(&7_i64).to_string();

    let holder = row_of(&rows, scenario.holder);
    assert_eq!(holder["APPLICATION"], "cli-holder");
    assert_eq!(holder["LOCK ID"], id);
    assert_eq!(holder["NAMESPACE"], "cli:jobs key=7", "from its waiters' markers");
    assert_eq!(holder["MODE"], "exclusive");
    assert_eq!(holder["STATUS"], "held");
    assert_eq!(holder["BLOCKED BY"], "");
    assert!(holder["BACKEND STATE"].starts_with("idle "), "{holder:?}");

    let first = row_of(&rows, scenario.first_waiter);
    assert_eq!(first["LOCK ID"], id);
    assert_eq!(first["NAMESPACE"], "cli:jobs key=7");
    assert!(first["STATUS"].starts_with("waiting "), "{first:?}");
    assert_eq!(first["BLOCKED BY"], scenario.holder.to_string());
    assert!(first["BACKEND STATE"].starts_with("active "), "{first:?}");

    let second = row_of(&rows, scenario.second_waiter);
    assert!(second["STATUS"].starts_with("waiting "), "{second:?}");
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
    assert_eq!(stuck["NAMESPACE"], "?", "nobody waits for it: unknown without --ns");
    assert!(
        stuck["BACKEND STATE"].starts_with("idle in transaction "),
        "{stuck:?}"
    );
    for reader in scenario.readers {
        let reader = row_of(&rows, reader);
        assert_eq!(reader["MODE"], "shared");
        assert_eq!(reader["STATUS"], "held");
        assert!(reader["LOCK ID"].starts_with('('), "a pair id: {reader:?}");
    }
    let client = scenario.client_addr.clone().unwrap_or_else(|| "local".into());
    assert!(rows.iter().all(|row| row["CLIENT"] == client), "{rows:?}");
    assert!(run.stdout.contains("6 advisory lock(s): 4 held, 2 awaited"));
    assert!(!run.stdout.contains('!'), "nothing is over the limits yet");

    drop(scenario);
    database.drop_now().await;
}
