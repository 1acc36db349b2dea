//! The variants of the delayed groups and of the round-trip count: every
//! [`Op`] (one operation on a connection of its own), and the two that own
//! their connections, the lock manager's pair and a lease.
//!
//! A new variant that runs on a connection is an [`Op`]; one that needs
//! more than a connection is a [`Subject`] here, with its state in
//! [`State`].

use std::fmt;
use std::time::Duration;

use pglock::{CheckOptions, LockManager, ManagerOptions, Namespace};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::BoxError;
use crate::ops::Op;

static MANAGED: Namespace = Namespace::named("pglock-bench:subject:manager");
static LEASED: Namespace = Namespace::named("pglock-bench:subject:lease");

/// Checks far apart: a check is the lease's and the manager's background
/// work, not the holder's; a count or a round that met one would count it.
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// One variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Subject {
    Op(Op),
    /// `manager.lock(&ns, &k).acquire()`, then `release()`: the lock
    /// manager's acquire + release of a free key.
    Manager,
    /// `ns.session_lock(&k).acquire_lease(conn, checks)`, then `release()`:
    /// a lease taken and given back on a connection of its own.
    Lease,
}

impl fmt::Display for Subject {
    /// The variant's name in the JSON lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Op(op) => op.fmt(f),
            Subject::Manager => f.write_str("manager_acquire_release"),
            Subject::Lease => f.write_str("lease_acquire_release"),
        }
    }
}

impl Subject {
    /// What one counted operation is.
    pub(crate) fn unit(self) -> &'static str {
        match self {
            Subject::Op(op) => op.unit(),
            Subject::Manager | Subject::Lease => "lock+unlock/s",
        }
    }

    /// What the variant sends, in a few words.
    pub(crate) fn describe(self) -> String {
        match self {
            Subject::Op(op) => op.describe(),
            Subject::Manager => "lock manager acquire + release".into(),
            Subject::Lease => "lease acquire + release".into(),
        }
    }
}

/// A variant's own connection, or manager.
pub(crate) enum State {
    Conn(Option<PgConnection>),
    Manager(LockManager),
}

impl State {
    /// Connects what `subject` runs on, with `connect`.
    pub(crate) async fn open(
        subject: Subject,
        connect: &PgConnectOptions,
    ) -> Result<State, BoxError> {
        Ok(match subject {
            Subject::Op(_) | Subject::Lease => {
                State::Conn(Some(PgConnection::connect_with(connect).await?))
            }
            Subject::Manager => State::Manager(LockManager::new(
                connect.clone(),
                ManagerOptions::default().checks(checks()),
            )),
        })
    }

    /// Runs one operation of `subject`; returns how many it counts for.
    pub(crate) async fn once(&mut self, subject: Subject) -> Result<u64, BoxError> {
        match (subject, self) {
            (Subject::Op(op), State::Conn(Some(conn))) => op.run_once(conn).await,
            (Subject::Lease, State::Conn(slot)) => {
                let conn = slot.take().ok_or("a lease's connection was lost")?;
                let lease = LEASED
                    .session_lock(&1_i64)
                    .acquire_lease(conn, checks())
                    .await?;
                *slot = Some(lease.release().await?);
                Ok(1)
            }
            (Subject::Manager, State::Manager(manager)) => {
                manager
                    .lock(&MANAGED, &1_i64)
                    .acquire()
                    .await?
                    .release()
                    .await?;
                Ok(1)
            }
            (subject, _) => Err(format!("{subject} runs on state of another kind").into()),
        }
    }

    pub(crate) async fn close(self) -> Result<(), BoxError> {
        match self {
            State::Conn(Some(conn)) => conn.close().await?,
            State::Conn(None) => {}
            State::Manager(manager) => {
                manager.close().await;
            }
        }
        Ok(())
    }
}

fn checks() -> CheckOptions {
    CheckOptions::default().check_every(CHECK_EVERY)
}
