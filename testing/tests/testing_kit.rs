//! The testing kit against real servers: the shared one and private ones.

use std::net::TcpStream;
use std::time::Duration;

use pglock_testing::{ServerOptions, TestServer, TestingError};
use sqlx::{Connection, PgConnection};

async fn select_one(url: &str) -> i32 {
    let mut conn = PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .expect("SELECT 1");
    conn.close().await.expect("close");
    one
}

async fn setting(url: &str, name: &str) -> String {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    sqlx::query_scalar("SELECT current_setting($1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .expect("current_setting")
}

fn shared() -> &'static TestServer {
    TestServer::shared().unwrap_or_else(|e| panic!("the shared test server: {e}"))
}

#[tokio::test]
async fn the_shared_server_answers_over_the_socket_and_over_tcp() {
    let server = shared();
    assert!(server.is_shared());
    assert!(
        server.url().contains("host=/"),
        "a unix socket url: {}",
        server.url()
    );
    assert_eq!(select_one(&server.url()).await, 1);
    assert_eq!(select_one(&server.tcp_url()).await, 1);
    assert!(server.data_dir().join("PG_VERSION").is_file());
    assert!(server.bin_dir().join("pg_ctl").is_file());
    assert!(
        server
            .socket_dir()
            .join(format!(".s.PGSQL.{}", server.port()))
            .exists()
    );
}

#[tokio::test]
async fn the_shared_server_runs_the_binaries_this_process_asks_for() {
    // A run against one PostgreSQL version never reuses the shared server
    // of another run's binaries.
    let server = shared();
    if let Some(asked) = std::env::var_os("PGLOCK_PG_BINDIR").filter(|dir| !dir.is_empty()) {
        assert_eq!(
            std::fs::canonicalize(server.bin_dir()).expect("the server's binaries"),
            std::fs::canonicalize(&asked).expect("PGLOCK_PG_BINDIR"),
        );
    }
    let out = std::process::Command::new(server.bin_dir().join("postgres"))
        .arg("--version")
        .output()
        .expect("postgres --version");
    // `postgres (PostgreSQL) 15.18 (Debian ...)` → `15.18`
    let text = String::from_utf8_lossy(&out.stdout);
    let binaries = text
        .split(')')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("a version in {text:?}"));
    let mut conn = PgConnection::connect(&server.url()).await.expect("connect");
    let running: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .expect("server_version");
    assert_eq!(
        running.split_whitespace().next(),
        Some(binaries),
        "the shared server runs {running}, its binaries are {binaries}"
    );
}

#[test]
fn concurrent_callers_get_the_same_shared_server() {
    let threads: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(|| shared() as *const TestServer as usize))
        .collect();
    let servers: Vec<usize> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(servers[0], servers[1], "one server per process");
    let ports: Vec<u16> = (0..2).map(|_| shared().port()).collect();
    assert_eq!(ports[0], ports[1]);
}

#[test]
fn the_shared_server_refuses_to_stop() {
    assert!(matches!(
        shared().stop(),
        Err(TestingError::SharedServer { operation: "stop" })
    ));
    assert!(matches!(
        shared().restart(),
        Err(TestingError::SharedServer { .. })
    ));
}

#[tokio::test]
async fn database_url_prefers_database_url() {
    // Whatever the environment says, the result is usable.
    let url = pglock_testing::database_url().expect("a database url");
    match std::env::var("DATABASE_URL") {
        Ok(set) if !set.is_empty() => assert_eq!(url, set),
        _ => assert_eq!(url, shared().url()),
    }
}

#[tokio::test]
async fn a_private_server_takes_settings() {
    let server = TestServer::start(ServerOptions::new().setting("max_locks_per_transaction", "17"))
        .unwrap_or_else(|e| panic!("a private server: {e}"));
    assert!(!server.is_shared());
    assert_ne!(server.port(), shared().port());
    assert_eq!(
        setting(&server.url(), "max_locks_per_transaction").await,
        "17"
    );
    assert_eq!(setting(&server.tcp_url(), "fsync").await, "off");
}

#[tokio::test]
async fn a_private_server_restarts() {
    let server = TestServer::start(ServerOptions::new().setting("application_name", "kit test"))
        .unwrap_or_else(|e| panic!("a private server: {e}"));
    let mut before = PgConnection::connect(&server.url()).await.expect("connect");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut before)
        .await
        .expect("pid");
    assert!(pid > 0);

    server.restart().unwrap_or_else(|e| panic!("restart: {e}"));
    assert!(
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&mut before)
            .await
            .is_err(),
        "the restart ended the old connection"
    );
    assert_eq!(select_one(&server.url()).await, 1);
    assert_eq!(select_one(&server.tcp_url()).await, 1);
    assert_eq!(
        setting(&server.url(), "application_name").await,
        "kit test",
        "settings survive a restart"
    );

    server.stop().unwrap_or_else(|e| panic!("stop: {e}"));
    server.stop().expect("stopping twice is fine");
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_err());
    server
        .restart()
        .unwrap_or_else(|e| panic!("start after stop: {e}"));
    assert_eq!(select_one(&server.url()).await, 1);
}

#[tokio::test]
async fn a_dropped_private_server_is_gone() {
    let server =
        TestServer::start(ServerOptions::new()).unwrap_or_else(|e| panic!("a private server: {e}"));
    assert_eq!(select_one(&server.tcp_url()).await, 1);
    let port = server.port();
    let dir = server
        .data_dir()
        .parent()
        .expect("the server's directory")
        .to_path_buf();
    let socket_dir = server.socket_dir().to_path_buf();
    assert!(dir.is_dir());

    drop(server);
    assert!(
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_err(),
        "port {port} still accepts connections"
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(
        !socket_dir.exists(),
        "{} is still there",
        socket_dir.display()
    );
}
