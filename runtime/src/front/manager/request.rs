//! A request for a lock through a [`LockManager`]: a try on a connection
//! that holds locks; when the lock is busy, a wait in-process while a
//! guard of the same manager holds it, then on the server on a connection
//! of its own.

use std::fmt;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::contract::family::NamespaceFor;
use crate::contract::id::LockId;
use crate::contract::key::LockKey;
use crate::contract::mode::Mode;
use crate::contract::namespace::Namespace;
use crate::engine::events;
use crate::engine::measure::{self, Outcome};
use crate::engine::wait::{Wait, Waiter, reported_wait};
use crate::error::Error;
use crate::front::loss::HoldState;
use crate::sql::statements::{Scope, TryStatus, session_wait_sql};

use super::connection::{Command, Holding, WaitFailure, connection_gone};
use super::guard::ManagedGuard;
use super::table::{ClaimGuard, Purpose, Route};
use super::{GuardId, LockManager};

impl LockManager {
    /// A lock on `key` in `namespace` (a [`Namespace`](crate::Namespace),
    /// or a [`LockFamily`](crate::LockFamily) of the key's type), to
    /// configure and then acquire.
    ///
    /// ```no_run
    /// # async fn run(manager: &pglock_runtime::LockManager) -> Result<(), pglock_runtime::Error> {
    /// use std::time::Duration;
    /// static TENANTS: pglock_runtime::LockFamily<i64> = pglock_runtime::LockFamily::named("tenant:job");
    /// let lock = manager.lock(&TENANTS, &42).timeout(Duration::from_secs(5)).acquire().await?;
    /// // ... tenant 42's singleton job ...
    /// lock.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn lock<'a, K, N>(&'a self, namespace: &'a N, key: &K) -> ManagedLock<'a>
    where
        K: LockKey + ?Sized,
        N: NamespaceFor<K> + ?Sized,
    {
        let namespace = namespace.namespace();
        ManagedLock {
            manager: self,
            lock: Waiter {
                namespace,
                id: namespace.id(key),
                mode: Mode::Exclusive,
            },
            wait: Wait::Unbounded,
            fencing: false,
        }
    }
}

impl<'a> ManagedLock<'a> {
    /// The exclusive lock `id` of `namespace`: one permit of a semaphore.
    pub(super) fn permit(manager: &'a LockManager, namespace: &'a Namespace, id: LockId) -> Self {
        ManagedLock {
            manager,
            lock: Waiter {
                namespace,
                id,
                mode: Mode::Exclusive,
            },
            wait: Wait::No,
            fencing: false,
        }
    }
}

/// A lock to take through a [`LockManager`]: made by
/// [`LockManager::lock`], configured, then acquired.
#[derive(Clone, Copy)]
#[must_use = "a lock request does nothing until it is acquired"]
pub struct ManagedLock<'a> {
    manager: &'a LockManager,
    lock: Waiter<'a>,
    wait: Wait,
    fencing: bool,
}

impl ManagedLock<'_> {
    request_options!();

    /// Ask for a [`FencingToken`](crate::FencingToken) at acquisition (one
    /// more round trip and a durable commit): [`ManagedGuard::fencing_token`]
    /// gives it. For an exclusive lock only: otherwise
    /// [`Error::FencingToken`]. The token's commit runs on the connection
    /// that holds the lock, beside the other locks it holds: a server that
    /// can't flush its WAL within the checks' timeout loses that connection,
    /// and with it those locks.
    pub fn with_fencing_token(mut self) -> Self {
        self.fencing = true;
        self
    }

    /// Takes the lock, waiting as configured: a try on a connection that
    /// holds locks, then, if the lock is busy, a wait on a connection of its
    /// own.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] after `no_wait`, [`Error::Conflict`] when a wait ends
    /// without the lock, [`Error::LockBudget`] when the manager holds as
    /// many locks as its budget allows, [`Error::ManagerBusy`] when every connection the
    /// bound allows is waiting, [`Error::ManagerClosed`], [`Error::Standby`],
    /// [`Error::InvalidTimeout`] and [`Error::Database`].
    pub async fn acquire(self) -> Result<ManagedGuard, Error> {
        let cap_ms = self.wait.cap_ms()?;
        self.fencing_allowed()?;
        if let Some(lock) = self.try_once().await? {
            self.count(Outcome::Acquired);
            return Ok(lock);
        }
        if self.wait.is_no_wait() {
            return Err(self.lock.busy(self.wait));
        }
        self.wait_for(cap_ms).await
    }

    /// Tries the lock once: the guard when it is free, `None` when someone
    /// (another process, or a guard of this manager) holds it.
    pub async fn try_acquire(self) -> Result<Option<ManagedGuard>, Error> {
        self.fencing_allowed()?;
        let lock = self.try_once().await?;
        match lock {
            Some(_) => self.count(Outcome::Acquired),
            None => events::not_waiting(&self.lock.identity()),
        }
        Ok(lock)
    }

    /// A fencing token is for an exclusive lock.
    fn fencing_allowed(&self) -> Result<(), Error> {
        if self.fencing && self.lock.mode == Mode::Shared {
            return Err(Error::FencingToken {
                reason: crate::front::fencing::SHARED,
            });
        }
        Ok(())
    }

    fn count(&self, outcome: Outcome) {
        measure::acquisition(self.lock.namespace.shared_label(), self.lock.mode, outcome);
    }

    /// One try; again on another connection while the one chosen turns out
    /// to be gone (a server restart, idle connections cut): a connection
    /// that failed holds nothing any more. At most once per connection the
    /// bound allows, and once more on a new one.
    pub(super) async fn try_once(&self) -> Result<Option<ManagedGuard>, Error> {
        let mut attempts = self.manager.inner.options.max_connections + 1;
        loop {
            attempts -= 1;
            match self.try_on_a_connection().await {
                Err((_, true)) if attempts > 0 => continue,
                outcome => return outcome.map_err(|(error, _)| error),
            }
        }
    }

    /// One try; an error says whether its connection was lost.
    async fn try_on_a_connection(&self) -> Result<Option<ManagedGuard>, (Error, bool)> {
        let inner = &self.manager.inner;
        let mut claim = ClaimGuard::new(inner);
        let route = inner
            .route(self.lock.id, self.lock.mode, Purpose::Try, &mut claim)
            .await;
        let route = route.map_err(|error| (error, false))?;
        let Route::To(connection_id, connection) = route else {
            return Ok(None);
        };
        let (holding, state) = self.holding(claim.guard);
        let sql = self
            .lock
            .namespace
            .statements()
            .try_lock(Scope::Session, self.lock.mode);
        let status = connection
            .try_lock(inner, connection_id, sql, self.lock.id, holding)
            .await
            .map_err(|error| {
                // No host is the primary: another connection would ask the
                // same hosts again.
                let lost = !matches!(error, Error::NoPrimary { .. })
                    && !inner.table().connections.contains_key(&connection_id);
                (error, lost)
            });
        if !matches!(status, Ok((TryStatus::Acquired, _))) {
            // Answered, and not granted: nothing to give back.
            claim.answered();
        }
        match status? {
            (TryStatus::Acquired, token) => Ok(Some(ManagedGuard::new(
                inner,
                claim,
                connection_id,
                self.lock.identity(),
                state,
                token,
            ))),
            (TryStatus::Busy { .. }, _) => Ok(None),
            (TryStatus::Standby, _) => Err((Error::Standby, false)),
        }
    }

    /// Waits for a busy lock. While a guard of this manager holds it, the
    /// wait is in-process and takes no connection; then the lock is tried
    /// again, and if another session holds it, the wait goes to the server
    /// on a connection of its own. A timeout bounds both parts together.
    async fn wait_for(&self, cap_ms: Option<u32>) -> Result<ManagedGuard, Error> {
        let inner = &self.manager.inner;
        let lock = self.lock.identity();
        let started = Instant::now();
        let deadline = cap_ms.map(|ms| started + Duration::from_millis(ms.into()));
        reported_wait(&lock, cap_ms, async {
            loop {
                let released = inner.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                let past_deadline = deadline.is_some_and(|deadline| Instant::now() >= deadline);
                let held_here = inner.held_here(self.lock.id, self.lock.mode);
                if held_here && past_deadline {
                    return Err(Error::timed_out_in_process(&lock, started.elapsed()));
                }
                if held_here {
                    match deadline {
                        Some(deadline) => {
                            let _ = tokio::time::timeout_at(deadline.into(), released).await;
                        }
                        None => released.await,
                    }
                    if let Some(guard) = self.try_once().await? {
                        return Ok(guard);
                    }
                    continue;
                }
                // The remaining time, never less than the smallest cap: once
                // the deadline has passed, the server reports the conflict.
                let remaining_ms = deadline.map(|deadline| {
                    let left = deadline.saturating_duration_since(Instant::now());
                    left.as_millis().clamp(1, i32::MAX as u128) as u32
                });
                return self.wait_on_server(remaining_ms, started).await;
            }
        })
        .await
    }

    /// A wait on a connection of its own; on another one if the first turns
    /// out to be gone before the wait could start (an idle connection cut).
    async fn wait_on_server(
        &self,
        cap_ms: Option<u32>,
        started: Instant,
    ) -> Result<ManagedGuard, Error> {
        match self.wait_on_a_connection(cap_ms, started).await {
            Err((_, true)) => self
                .wait_on_a_connection(cap_ms, started)
                .await
                .map_err(|(error, _)| error),
            outcome => outcome.map_err(|(error, _)| error),
        }
    }

    /// One wait; an error says whether its connection was lost.
    async fn wait_on_a_connection(
        &self,
        cap_ms: Option<u32>,
        started: Instant,
    ) -> Result<ManagedGuard, (Error, bool)> {
        let inner = &self.manager.inner;
        let mut claim = ClaimGuard::new(inner);
        let route = inner
            .route(self.lock.id, self.lock.mode, Purpose::Wait, &mut claim)
            .await;
        let Route::To(connection_id, _) = route.map_err(|error| (error, false))? else {
            unreachable!("a wait gets a connection of its own, or an error");
        };
        let lock = self.lock.identity();
        let (holding, state) = self.holding(claim.guard);
        let statements = self.lock.namespace.statements();
        let sql = session_wait_sql(statements.marker(), self.lock.id, self.lock.mode, cap_ms);
        let (reply, answer) = oneshot::channel();
        claim
            .send(Command::Wait {
                sql,
                holding,
                permit: None,
                reply,
            })
            .map_err(|error| (error, true))?;
        match answer.await {
            Ok(Ok(granted)) => Ok(ManagedGuard::new(
                inner,
                claim,
                connection_id,
                lock,
                state,
                granted.token,
            )),
            Ok(Err(WaitFailure::Wait(error))) => {
                let lost = !inner.table().connections.contains_key(&connection_id);
                Err((Error::from_wait(error, &lock, started.elapsed()), lost))
            }
            Ok(Err(WaitFailure::Token(error))) => Err((error, false)),
            Ok(Err(WaitFailure::NoPermit(_))) => unreachable!("a lock's wait takes no permit"),
            // The connection is gone: the wait may go to another, once.
            Ok(Err(WaitFailure::Open(error))) => Err((error, true)),
            // The connection's task ended without an answer: the manager
            // closed, or the connection could not be opened.
            Err(_) if inner.table().closed => Err((Error::ManagerClosed, false)),
            Err(_) => Err((connection_gone(), true)),
        }
    }

    fn holding(&self, guard: GuardId) -> (Holding, watch::Receiver<HoldState>) {
        let (state_tx, state) = watch::channel(HoldState::Held);
        let holding = Holding {
            guard,
            lock: self.lock.identity(),
            unlock_sql: self.lock.namespace.statements().unlock(self.lock.mode),
            state: state_tx,
            meter: None,
            wants_token: self.fencing,
        };
        (holding, state)
    }
}

impl fmt::Debug for ManagedLock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedLock")
            .field("lock", &self.lock.identity())
            .field("wait", &self.wait)
            .finish()
    }
}
