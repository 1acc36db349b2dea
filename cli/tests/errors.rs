//! Every way of not getting to the locks: one line on stderr and the exit
//! code docs/OPERATIONS.md documents, never a panic.

mod support;

use std::net::TcpListener;

use pglock::testing::{ServerOptions, TestServer};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use support::{TestDatabase, assert_fails, pglock, pglock_on, unique, url_with};

#[test]
fn a_malformed_database_url_is_a_usage_error() {
    let run = pglock_on("postgres://someone@localhost:port/db", &["locks"]);
    assert_fails(&run, 2, "invalid database URL");
    let run = pglock(&["check"], &[("DATABASE_URL", "not a url at all")]);
    assert_fails(&run, 2, "invalid database URL");
}

#[test]
fn an_unreachable_server_is_a_connection_failure() {
    // A port nothing listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://someone:secret@127.0.0.1:{port}/db");
    for command in ["locks", "check", "watch"] {
        let run = pglock_on(&url, &[command]);
        assert_fails(
            &run,
            3,
            &format!("cannot reach the server at 127.0.0.1:{port}/db"),
        );
        assert!(
            !run.stderr.contains("secret"),
            "no password in messages: {run:?}"
        );
    }
}

#[tokio::test]
async fn a_missing_database_is_a_connection_failure() {
    let url = url_with(
        &support::server_url(),
        None,
        None,
        Some("no_such_database_here"),
    );
    let run = pglock_on(&url, &["locks"]);
    assert_fails(
        &run,
        3,
        "database \"no_such_database_here\" does not exist (SQLSTATE 3D000)",
    );
}

/// A private server whose TCP connections need a password (scram), except
/// for the superuser the test administers it with.
async fn server_with_passwords() -> (TestServer, PgConnection) {
    let server = TestServer::start(ServerOptions::new()).expect("a private server");
    let hba = server.data_dir().join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .expect("write pg_hba.conf");
    let mut admin = PgConnection::connect(&server.url()).await.unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await
        .unwrap();
    (server, admin)
}

#[tokio::test]
async fn a_refused_password_is_a_connection_failure() {
    let (server, mut admin) = server_with_passwords().await;
    sqlx::query("CREATE ROLE operator LOGIN PASSWORD 'right'")
        .execute(&mut admin)
        .await
        .unwrap();
    let wrong = format!(
        "postgres://operator:wrong@127.0.0.1:{}/postgres",
        server.port()
    );
    // The reload is asynchronous: wait until the server asks for passwords.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while PgConnection::connect(&wrong).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "pg_hba.conf reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let run = pglock_on(&wrong, &["locks"]);
    assert_fails(
        &run,
        3,
        "password authentication failed for user \"operator\" (SQLSTATE 28P01)",
    );
    assert!(
        !run.stderr.contains("wrong"),
        "no password in messages: {run:?}"
    );

    let right = format!(
        "postgres://operator:right@127.0.0.1:{}/postgres",
        server.port()
    );
    let run = pglock_on(&right, &["locks"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = pglock(
        &["locks"],
        &[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &server.port().to_string()),
            ("PGUSER", "operator"),
            ("PGPASSWORD", "right"),
            ("PGDATABASE", "postgres"),
        ],
    );
    assert_eq!(run.code, 0, "PGPASSWORD: {run:?}");
}

#[tokio::test]
async fn a_role_that_may_not_connect_gets_a_permission_error() {
    let server = TestServer::start(ServerOptions::new()).expect("a private server");
    let database = TestDatabase::create_on(&server.url()).await;
    let mut admin = PgConnection::connect(&server.url()).await.unwrap();
    for statement in [
        "CREATE ROLE outsider LOGIN".to_owned(),
        format!("REVOKE CONNECT ON DATABASE {} FROM PUBLIC", database.name),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let run = pglock_on(
        &url_with(&database.url, Some("outsider"), None, None),
        &["locks"],
    );
    assert_fails(&run, 4, "permission denied for database");
    assert!(run.stderr.contains("(SQLSTATE 42501)"), "{run:?}");
}

#[tokio::test]
async fn a_role_that_may_not_read_pg_locks_gets_a_permission_error() {
    let server = TestServer::start(ServerOptions::new()).expect("a private server");
    let mut admin = PgConnection::connect(&server.url()).await.unwrap();
    let role = unique("cli_no_locks");
    for statement in [
        format!("CREATE ROLE {role} LOGIN"),
        "REVOKE SELECT ON pg_catalog.pg_locks FROM PUBLIC".to_owned(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let url = url_with(&server.url(), Some(&role), None, None);
    for command in ["locks", "check", "watch"] {
        let run = pglock_on(&url, &[command]);
        assert_fails(
            &run,
            4,
            "permission denied for view pg_locks (SQLSTATE 42501)",
        );
    }
}
