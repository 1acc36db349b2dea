//! Asking a server something from the kit's synchronous code: sqlx on a
//! current-thread tokio runtime of the kit's own. The kit needs no client
//! program (`psql`, `pg_isready`) next to the server binaries, which some
//! builds of PostgreSQL do not ship.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgConnection, Row};

use super::TestingError;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the future that `make` returns to completion on a current-thread
/// runtime, on a thread of its own: the caller may be a test that runs
/// inside a runtime already, where blocking on another one in the same
/// thread panics.
pub(super) fn block_on<T, F>(make: impl FnOnce() -> F + Send) -> Result<T, TestingError>
where
    T: Send,
    F: Future<Output = Result<T, TestingError>>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| TestingError::io("starting the kit's tokio runtime", e))?;
                runtime.block_on(make())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Where to connect, as whom, and how the kit names the server in errors.
#[derive(Clone, Debug)]
pub(super) struct Target {
    options: PgConnectOptions,
    name: String,
}

impl Target {
    /// The superuser `postgres`, database `postgres`, over the unix socket
    /// in `socket_dir`.
    pub(super) fn socket(socket_dir: &Path, port: u16) -> Target {
        Target {
            options: base_options()
                .socket(socket_dir)
                .port(port)
                .ssl_mode(PgSslMode::Disable),
            name: format!("the server at {}:{port}", socket_dir.display()),
        }
    }

    /// The superuser `postgres`, database `postgres`, over TCP on
    /// 127.0.0.1, without TLS and without named prepared statements (which
    /// a transaction pooler may not track).
    pub(super) fn tcp(port: u16, what: &str) -> Target {
        Target {
            options: base_options()
                .host("127.0.0.1")
                .port(port)
                .ssl_mode(PgSslMode::Disable)
                .statement_cache_capacity(0),
            name: format!("{what} at 127.0.0.1:{port}"),
        }
    }

    /// Opens a connection, failing after a few seconds.
    pub(super) async fn connect(&self) -> Result<Session<'_>, TestingError> {
        let failed = |message: String| TestingError::QueryFailed {
            server: self.name.clone(),
            query: "(connecting)".into(),
            message,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&self.options)).await
        {
            Ok(Ok(conn)) => Ok(Session { target: self, conn }),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(failed(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        }
    }

    /// Connects, runs one statement and returns the first column of its
    /// first row, which must be text (or NULL: the empty string).
    pub(super) async fn text(&self, sql: &str) -> Result<String, TestingError> {
        let mut session = self.connect().await?;
        let text = session.text(sql).await;
        session.close().await;
        text
    }
}

fn base_options() -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .username("postgres")
        .database("postgres")
        .application_name("pglock-testing")
        .disable_statement_logging()
}

/// An open connection of the kit.
pub(super) struct Session<'a> {
    target: &'a Target,
    conn: PgConnection,
}

impl Session<'_> {
    /// Runs `sql` (simple protocol: no prepared statement) and returns the
    /// first column of its first row, which must be text (NULL: the empty
    /// string).
    pub(super) async fn text(&mut self, sql: &str) -> Result<String, TestingError> {
        Ok(self.texts(sql).await?.swap_remove(0))
    }

    /// Runs `sql` (simple protocol) and returns every column of its first
    /// row, which must all be text (NULL: the empty string).
    pub(super) async fn texts(&mut self, sql: &str) -> Result<Vec<String>, TestingError> {
        let failed = |message: String| TestingError::QueryFailed {
            server: self.target.name.clone(),
            query: sql.to_owned(),
            message,
        };
        let row = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_optional(&mut self.conn)
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| failed("no row".into()))?;
        if row.is_empty() {
            return Err(failed("no column".into()));
        }
        (0..row.len())
            .map(|i| {
                row.try_get::<Option<String>, _>(i)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| failed(e.to_string()))
            })
            .collect()
    }

    /// Runs `sql` (simple protocol), whatever it returns.
    #[cfg(test)]
    pub(super) async fn execute(&mut self, sql: &str) -> Result<(), TestingError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut self.conn)
            .await
            .map(drop)
            .map_err(|e| TestingError::QueryFailed {
                server: self.target.name.clone(),
                query: sql.to_owned(),
                message: e.to_string(),
            })
    }

    /// Closes the connection politely; a failure to do so changes nothing
    /// for the kit.
    pub(super) async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// Quotes `text` as an SQL string literal.
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(""), "''");
    }

    #[tokio::test]
    async fn blocking_works_inside_a_runtime() {
        assert_eq!(block_on(|| async { Ok(7) }).unwrap(), 7);
    }
}
