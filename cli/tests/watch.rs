//! `pglock watch`: frames of the table, refreshed, with slow waits marked.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Scenario, TestDatabase, finish, table_rows};

const CLEAR: &str = "\x1b[H\x1b[2J";

#[tokio::test]
async fn watch_refreshes_the_table_and_marks_slow_waits() {
    let database = TestDatabase::create().await;
    let mut scenario = Scenario::stage(&database).await;
    scenario
        .wait_until_older_than(scenario.second_waiter, Duration::from_millis(100))
        .await;

    let mut child = Command::new(env!("CARGO_BIN_EXE_pglock"))
        .args(["watch", "--interval", "100ms", "--slow", "100ms"])
        .args(["--database-url", &database.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Three frames, each a header, a table, a summary and a blank line.
    let mut frames = Vec::new();
    let mut frame = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            frames.push(std::mem::take(&mut frame));
            if frames.len() == 3 {
                break;
            }
        } else {
            frame.push_str(&line);
            frame.push('\n');
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "ended by the test");

    for frame in &frames {
        assert!(frame.starts_with("pglock watch "), "{frame}");
        assert!(frame.contains("every 100ms"), "{frame}");
        assert!(!frame.contains(CLEAR), "no terminal, no escape codes");
        let rows = table_rows(frame);
        assert_eq!(rows.len(), 6, "{frame}");
        let second = rows
            .iter()
            .find(|row| row["PID"] == scenario.second_waiter.to_string())
            .unwrap();
        assert!(second["LOCK"].ends_with(" !"), "a slow wait: {second:?}");
    }

    drop(scenario);
    database.drop_now().await;
}

#[tokio::test]
async fn on_a_terminal_each_frame_replaces_the_last() {
    let database = TestDatabase::create().await;
    let command = format!(
        "timeout -s INT 1 '{}' watch --interval 100ms --database-url '{}'",
        env!("CARGO_BIN_EXE_pglock"),
        database.url
    );
    let output = Command::new("script")
        .args(["--quiet", "--command", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("util-linux script");
    let run = finish(output);
    assert!(
        run.stdout.matches(CLEAR).count() >= 2,
        "every frame clears the screen first: {run:?}"
    );
    assert!(run.stdout.contains("no advisory locks are held or awaited"));
    database.drop_now().await;
}
