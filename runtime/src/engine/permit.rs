//! The try and the wait of a semaphore's permits, which every front end of
//! a semaphore shares.
//!
//! An acquisition starts with one prepared statement that takes the first
//! free permit (from a starting index that turns with every acquisition of
//! the process, so holders spread over the permits): when one is free,
//! that round trip is the whole cost. When none is, one event says so and
//! one more message waits on the server until a permit is taken or the
//! deadline passes (`sql::semaphore`): a permit freed is found within one
//! slice of the wait (20 ms at first, at most
//! [`MAX_SLICE_MS`](crate::sql::semaphore::MAX_SLICE_MS)), or at once when
//! it is the one the wait queues for.

use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row};

use crate::contract::id::LockId;
use crate::contract::mode::Mode;
use crate::contract::namespace::Namespace;
use crate::contract::permit::{PermitIds, permit};
use crate::engine::cancel::{AbandonGuard, WaitingBackend};
use crate::engine::events;
use crate::engine::measure::{self, Outcome};
use crate::engine::wait::{Wait, reported_wait};
use crate::error::{Error, sqlstate};
use crate::identity::LockIdentity;
use crate::sql::marker;
use crate::sql::semaphore::{PermitAnswer, permit_wait_sql};
use crate::sql::statements::Scope;

/// The permits of one semaphore, to take.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PermitWaiter<'ns> {
    pub(crate) namespace: &'ns Namespace,
    pub(crate) permits: PermitIds,
}

/// Where this process's next acquisition starts its scan of the permits: a
/// counter that starts at a random point of each process.
fn next_start() -> u32 {
    static FIRST: LazyLock<u32> =
        LazyLock::new(|| RandomState::new().hash_one(std::process::id()) as u32);
    static NEXT: AtomicU32 = AtomicU32::new(0);
    FIRST.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

impl<'ns> PermitWaiter<'ns> {
    /// The permits of the semaphore of `permits` permits on the key whose
    /// id is `key_id`: [`Error::InvalidPermits`] unless there are 1 to 1024.
    pub(crate) fn new(
        namespace: &'ns Namespace,
        key_id: LockId,
        permits: u32,
    ) -> Result<Self, Error> {
        Ok(Self {
            namespace,
            permits: PermitIds::new(key_id, permits)?,
        })
    }

    /// Counts an acquisition's outcome, as the namespace's locks count.
    pub(crate) fn count(&self, outcome: Outcome) {
        measure::acquisition(self.namespace.shared_label(), Mode::Exclusive, outcome);
    }
}

impl PermitWaiter<'_> {
    /// The semaphore, named by its permit 0, for errors and events.
    pub(crate) fn identity(&self) -> LockIdentity {
        self.namespace
            .identity(self.permits.base(), Mode::Exclusive)
    }

    /// Permit `index`, as a lock.
    pub(crate) fn permit_identity(&self, index: u32) -> LockIdentity {
        self.namespace
            .identity(permit(self.permits.base(), index), Mode::Exclusive)
    }

    /// A starting index for one acquisition.
    pub(crate) fn start(&self) -> u32 {
        next_start() % self.permits.len()
    }

    /// One prepared statement: the first free permit from `start`, taken.
    /// Returns the answer and the backend's pid.
    pub(crate) async fn try_take(
        &self,
        conn: &mut PgConnection,
        scope: Scope,
        start: u32,
    ) -> Result<(PermitAnswer, i32), Error> {
        let statements = self.namespace.statements();
        let query = sqlx::query(AssertSqlSafe(statements.permit_try(scope)));
        let query = match self.permits.base() {
            LockId::BigInt(base) => query.bind(base),
            LockId::Pair(class, base) => query.bind(class).bind(base),
        };
        let row = query
            .bind(self.permits.len() as i32)
            .bind(start as i32)
            .fetch_one(conn)
            .await
            .map_err(Error::from_sqlx)?;
        let code: i32 = row.try_get(0).map_err(Error::from_sqlx)?;
        let pid: i32 = row.try_get(1).map_err(Error::from_sqlx)?;
        Ok((PermitAnswer::from_code(code), pid))
    }

    /// The error of a semaphore whose permits are all busy and that is not
    /// waited for; says so once, unless the caller reports it itself.
    pub(crate) fn busy(&self, wait: Wait) -> Error {
        let lock = self.identity();
        if wait == Wait::No {
            events::not_waiting(&lock);
        }
        Error::Busy(lock)
    }

    /// The error of a semaphore another holder uses with more permits.
    pub(crate) fn mismatch(&self, seen: u32) -> Error {
        Error::PermitsMismatch {
            semaphore: self.identity(),
            permits: self.permits.len(),
            seen,
        }
    }

    /// Waits on the server until a permit is taken: says that the wait
    /// begins, waits, and says how it ended. Returns the index taken.
    /// `target` is the permit the wait queues for; `pid` the backend's, for
    /// the cancellation of an abandoned transaction wait.
    pub(crate) async fn wait(
        &self,
        conn: &mut PgConnection,
        scope: Scope,
        cap_ms: Option<u32>,
        target: u32,
        pid: i32,
    ) -> Result<u32, Error> {
        let semaphore = self.identity();
        let queued_for = self.permit_identity(target);
        let started = Instant::now();
        reported_wait(&semaphore, cap_ms, async {
            // A session wait's connection is closed with an abandoned future;
            // a transaction's is the caller's, so its wait must be cancelled
            // (while it queues for its permit, which it does all but a few
            // microseconds of each slice).
            let mut abandon = AbandonGuard {
                backend: WaitingBackend::Pid(pid),
                lock: &queued_for,
                armed: scope == Scope::Xact,
            };
            let sql = permit_wait_sql(
                &marker::with_permits(self.namespace.marker(), Some(self.permits.len())),
                scope,
                self.permits.base(),
                self.permits.len(),
                target,
                cap_ms,
            );
            let answer = sqlx::raw_sql(AssertSqlSafe(sql))
                .fetch_all(&mut *conn)
                .await
                .and_then(|rows| match rows.last() {
                    Some(row) => row.try_get::<i32, _>(0),
                    None => Err(sqlx::Error::RowNotFound),
                });
            abandon.armed = false;
            match answer {
                Ok(code) => match PermitAnswer::from_code(code) {
                    PermitAnswer::Taken(index) => Ok(index),
                    PermitAnswer::None => {
                        Err(Error::timed_out_in_process(&semaphore, started.elapsed()))
                    }
                    PermitAnswer::Mismatch { seen } => Err(self.mismatch(seen)),
                    PermitAnswer::Standby => Err(Error::Standby),
                },
                // The block was refused before it ran: no USAGE on
                // PL/pgSQL (42501), or no such language (42704).
                Err(error) if matches!(sqlstate(&error).as_deref(), Some("42501" | "42704")) => {
                    Err(Error::PermitWaitUnavailable {
                        semaphore: semaphore.clone(),
                        source: error,
                    })
                }
                Err(error) => Err(Error::from_wait(error, &semaphore, started.elapsed())),
            }
        })
        .await
    }
}
