//! A manager connection's PostgreSQL session: its states, and what it runs
//! on itself: the short transaction of its tries and releases (`batch.rs`
//! decides when), fencing tokens, and the way back into service after a
//! failed statement.

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _};
use tokio::sync::Notify;

use crate::front::fencing::{self, FencingToken};
use crate::sql::statements::{BATCH_BEGIN, BATCH_BEGIN_17, BATCH_COMMIT, BATCH_ROLLBACK};

use super::batch::{Batch, Due};

/// The PostgreSQL session of a connection.
pub(super) enum Session {
    /// Not connected yet: the first statement connects.
    New,
    Open(OpenSession),
    /// Lost, closed or retired.
    Gone,
}

/// An open session, and the short transaction its tries and releases may
/// run in (`batch.rs` decides when).
pub(super) struct OpenSession {
    pg: PgConnection,
    begin: &'static str,
    batch: Batch,
}

impl OpenSession {
    pub(super) fn new(pg: PgConnection) -> Self {
        let begin = match pg.server_version_num() {
            Some(version) if version >= 170_000 => BATCH_BEGIN_17,
            _ => BATCH_BEGIN,
        };
        OpenSession {
            pg,
            begin,
            batch: Batch::default(),
        }
    }

    pub(super) fn pg(&mut self) -> &mut PgConnection {
        &mut self.pg
    }

    pub(super) fn into_pg(self) -> PgConnection {
        self.pg
    }

    /// Before a try or a release on a connection that holds `held` locks:
    /// opens a transaction when the batch policy says so, and tells
    /// `opened` (the connection's task, which commits it).
    pub(super) async fn before_statement(
        &mut self,
        held: usize,
        bound: Duration,
        opened: &Notify,
    ) -> Result<(), String> {
        if self.batch.opens_before_statement(held) {
            self.run(self.begin, bound).await?;
            self.batch.opened();
            opened.notify_one();
        }
        Ok(())
    }

    /// After a try or a release answered.
    pub(super) fn after_statement(&mut self) {
        self.batch.after_statement();
    }

    /// When the last try or release on it ended.
    pub(super) fn last_used(&self) -> Option<tokio::time::Instant> {
        self.batch.last_used()
    }

    /// What the task is to do about the open transaction now.
    pub(super) fn due(&self) -> Due {
        self.batch.due()
    }

    /// Commits the open transaction, if there is one: before a wait, a
    /// check, or when it is due.
    pub(super) async fn commit(&mut self, bound: Duration) -> Result<(), String> {
        if self.batch.end() {
            self.run(BATCH_COMMIT, bound).await?;
        }
        Ok(())
    }

    /// Issues a fencing token, within `bound`; see [`TokenFailure`].
    pub(super) async fn fencing_token(
        &mut self,
        bound: Duration,
    ) -> Result<FencingToken, TokenFailure> {
        match tokio::time::timeout(bound, fencing::issue(&mut self.pg)).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(error)) => {
                // The token's transaction failed: it is rolled back, or the
                // session is not sound.
                let alive = matches!(
                    tokio::time::timeout(bound, self.pg.ping()).await,
                    Ok(Ok(()))
                );
                let rolled_back = alive && self.run(BATCH_ROLLBACK, bound).await.is_ok();
                if rolled_back {
                    Err(TokenFailure::Refused(error))
                } else {
                    Err(TokenFailure::Broken(format!(
                        "the connection failed as it issued a fencing token: {error}"
                    )))
                }
            }
            Err(_) => Err(TokenFailure::Broken(format!(
                "a fencing token was not issued within {bound:?}"
            ))),
        }
    }

    /// Why the session is unusable after `error`, if it is: a statement
    /// that failed on a sound session (a lock timeout, a full lock table)
    /// leaves it in service, out of the transaction it failed in.
    pub(super) async fn broken(&mut self, error: &sqlx::Error, bound: Duration) -> Option<String> {
        match tokio::time::timeout(bound, self.pg.ping()).await {
            Ok(Ok(())) => self.after_failure(bound).await.err(),
            _ => Some(format!("the connection failed: {error}")),
        }
    }

    /// After a statement failed on a session that still answers: a
    /// transaction it failed in is rolled back, so the next statement runs.
    async fn after_failure(&mut self, bound: Duration) -> Result<(), String> {
        if self.batch.end() {
            self.run(BATCH_ROLLBACK, bound).await?;
        }
        Ok(())
    }

    async fn run(&mut self, sql: &'static str, bound: Duration) -> Result<(), String> {
        let statement = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut self.pg);
        match tokio::time::timeout(bound, statement).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("the connection failed: {error}")),
            Err(_) => Err(format!("`{sql}` did not answer within {bound:?}")),
        }
    }
}

/// Why a fencing token was not issued.
pub(super) enum TokenFailure {
    /// The server refused it; the session is sound, out of the token's
    /// transaction, and still holds the lock.
    Refused(crate::error::Error),
    /// The session is not sound: the reason.
    Broken(String),
}
