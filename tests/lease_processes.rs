//! Two OS processes contend for one lease: exactly one leads at a time, and
//! the other takes over when the leader's process dies.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The `leader` example, built by `cargo test` beside the test binaries.
fn leader_example() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile_dir = deps.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join("leader");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = std::process::Command::new(cargo)
            .args(["build", "--example", "leader"])
            .status()
            .unwrap();
        assert!(status.success(), "build the leader example");
    }
    path
}

fn candidate(name: &str, url: &str) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(leader_example())
        .args(["--candidate", name])
        .env("DATABASE_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the candidate answers")
        .unwrap()
        .expect("the candidate is alive")
}

#[tokio::test]
async fn one_process_leads_at_a_time_and_the_other_takes_over() {
    let url = pglock::testing::database_url().unwrap();
    let pool = pool().await;
    let id = pglock::Namespace::named("example:leader").id(&"cluster");

    let (mut alpha, mut alpha_out) = candidate("alpha", &url);
    let first = next_line(&mut alpha_out).await;
    assert!(first.starts_with("LEADING alpha "), "{first}");

    let (mut beta, mut beta_out) = candidate("beta", &url);
    wait_for_waiters(&pool, id, 1).await;
    let locks = locks_on(&pool, id).await;
    assert_eq!(
        locks.iter().filter(|(_, _, granted)| *granted).count(),
        1,
        "{locks:?}"
    );
    let alpha_pid: i32 = first.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(holders(&pool, id).await, vec![alpha_pid]);

    // The leader's process dies without a word; its backend goes with it.
    alpha.kill().await.unwrap();
    let taken_over = next_line(&mut beta_out).await;
    assert!(taken_over.starts_with("LEADING beta "), "{taken_over}");
    let beta_pid: i32 = taken_over.rsplit(' ').next().unwrap().parse().unwrap();
    assert_ne!(beta_pid, alpha_pid);
    assert_eq!(holders(&pool, id).await, vec![beta_pid]);

    beta.kill().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !locks_on(&pool, id).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease outlived its process"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
