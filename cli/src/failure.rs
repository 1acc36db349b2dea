//! Why the command failed, in one line, and the exit code that says which
//! kind of failure it was (documented in `docs/OPERATIONS.md`).

use std::fmt;
use std::process::ExitCode;

/// The kinds of failure, each with its own exit code. 0 is success and 1 is
/// `pglock check` finding a problem; clap's own usage errors exit with 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Bad arguments: a malformed key, mask, duration or database URL.
    Usage = 2,
    /// The server could not be reached, refused the login, or has no such
    /// database.
    Connection = 3,
    /// The role lacks a privilege the command needs, or `check` cannot see
    /// what it must check.
    Permission = 4,
    /// Anything else: an unexpected server error, output that can't be
    /// written.
    Other = 5,
}

impl Status {
    pub(crate) fn exit_code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// A failure to report on stderr, as one line.
#[derive(Debug)]
pub(crate) struct Failure {
    status: Status,
    message: String,
}

impl Failure {
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Status::Usage, message)
    }

    pub(crate) fn status(&self) -> Status {
        self.status
    }

    /// A failure of a connection to `target` (`host:port` or a socket, never
    /// the URL, which may hold a password) or of a statement on it.
    pub(crate) fn from_sqlx(error: &sqlx::Error, target: &str) -> Self {
        match error {
            sqlx::Error::Configuration(cause) => {
                Self::usage(format!("invalid database URL or setting: {cause}"))
            }
            sqlx::Error::Io(cause) => Self::new(
                Status::Connection,
                format!("cannot reach the server at {target}: {cause}"),
            ),
            sqlx::Error::Tls(cause) => Self::new(
                Status::Connection,
                format!("TLS with the server at {target} failed: {cause}"),
            ),
            sqlx::Error::Database(database) => {
                let code = database.code().unwrap_or_default();
                let status = match &code[..] {
                    // 28P01 wrong password, 28000 no pg_hba.conf entry,
                    // 3D000 no such database, 53300 too many connections,
                    // 57P03 the server is starting or shutting down.
                    "28P01" | "28000" | "3D000" | "53300" | "57P03" => Status::Connection,
                    "42501" => Status::Permission,
                    _ => Status::Other,
                };
                Self::new(
                    status,
                    format!("{target}: {} (SQLSTATE {code})", database.message()),
                )
            }
            other => Self::new(Status::Other, format!("{target}: {other}")),
        }
    }

    /// A failure of the inspection on the server at `target`.
    pub(crate) fn from_inspection(error: &pglock_runtime::Error, target: &str) -> Self {
        match error {
            pglock_runtime::Error::Database(cause)
            | pglock_runtime::Error::LockTableFull(cause) => Self::from_sqlx(cause, target),
            other => Self::new(Status::Other, format!("{target}: {other}")),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever the server or the OS put into the message.
        for (index, line) in self.message.lines().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            f.write_str(line.trim())?;
        }
        Ok(())
    }
}
