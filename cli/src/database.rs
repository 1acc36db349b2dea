//! The connection to the database looked at, and the one thing done on
//! it: the library's inspection, in a READ ONLY transaction.

use std::str::FromStr;
use std::time::Duration;

use pglock_runtime::Inspection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use crate::args;
use crate::failure::{Failure, Status};

/// How long to wait for a server that doesn't answer (a dropped packet,
/// a firewall) before saying so.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the database looked at.
pub(crate) struct Session {
    options: PgConnectOptions,
    connection: Option<PgConnection>,
    target: String,
}

impl Session {
    /// Reads where to connect from `--database-url`, `DATABASE_URL` or the
    /// `PG*` variables, and connects.
    pub(crate) async fn connect(database: &args::Database) -> Result<Self, Failure> {
        let options = match database
            .database_url
            .as_deref()
            .filter(|url| !url.is_empty())
        {
            Some(url) => PgConnectOptions::from_str(url)
                .map_err(|error| Failure::from_sqlx(&error, "the database URL"))?,
            None => PgConnectOptions::new(),
        };
        // The tool's own backend is then easy to tell in pg_stat_activity.
        let options = match options.get_application_name() {
            Some(_) => options,
            None => options.application_name("pglock"),
        };
        let target = describe(&options);
        let mut session = Self {
            options,
            connection: None,
            target,
        };
        session.reconnect().await?;
        Ok(session)
    }

    /// Where the session connects: `host:port/database` or
    /// `socket-dir:port/database`, without the user's password.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The role the session logs in as.
    pub(crate) fn user(&self) -> &str {
        self.options.get_username()
    }

    async fn reconnect(&mut self) -> Result<(), Failure> {
        self.connection = None;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, self.options.connect())
            .await
            .map_err(|_| {
                Failure::new(
                    Status::Connection,
                    format!(
                        "the server at {} did not answer within {}s",
                        self.target,
                        CONNECT_TIMEOUT.as_secs()
                    ),
                )
            })?
            .map_err(|error| Failure::from_sqlx(&error, &self.target))?;
        self.connection = Some(connection);
        Ok(())
    }

    /// The library's inspection, in a READ ONLY transaction that is rolled
    /// back. Reconnects first when an earlier inspection lost the
    /// connection.
    pub(crate) async fn inspect(&mut self) -> Result<Inspection, Failure> {
        if self.connection.is_none() {
            self.reconnect().await?;
        }
        let result = match self.connection.as_mut() {
            Some(connection) => inspect_read_only(connection).await,
            None => return Err(Failure::new(Status::Connection, "not connected")),
        };
        result.map_err(|error| {
            // Whatever failed, the next attempt starts on a new connection.
            self.connection = None;
            match error {
                Failed::Sqlx(error) => Failure::from_sqlx(&error, &self.target),
                Failed::Inspection(error) => Failure::from_inspection(&error, &self.target),
            }
        })
    }
}

enum Failed {
    Sqlx(sqlx::Error),
    Inspection(pglock_runtime::Error),
}

async fn inspect_read_only(connection: &mut PgConnection) -> Result<Inspection, Failed> {
    let mut tx = connection
        .begin_with("BEGIN READ ONLY")
        .await
        .map_err(Failed::Sqlx)?;
    let inspection = pglock_runtime::inspect(&mut *tx)
        .await
        .map_err(Failed::Inspection)?;
    tx.rollback().await.map_err(Failed::Sqlx)?;
    Ok(inspection)
}

fn describe(options: &PgConnectOptions) -> String {
    let host = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None if options.get_host().contains(':') => format!("[{}]", options.get_host()),
        None => options.get_host().to_owned(),
    };
    let database = options.get_database().unwrap_or(options.get_username());
    format!("{host}:{}/{database}", options.get_port())
}
