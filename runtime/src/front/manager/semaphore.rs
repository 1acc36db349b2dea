//! A semaphore's permit through a [`LockManager`]: held across
//! transactions, its loss reported, as a managed lock's.
//!
//! A permit is a lock like any other to the manager: each is claimed in
//! its table before a statement asks for it, so two guards of one manager
//! never hold the same permit (PostgreSQL would grant it again to the
//! backend that holds it) and may hold different ones; each counts against
//! the budget; each try runs where and how a lock's does (the short
//! transaction included).
//!
//! - The try takes the permits one by one, from an index that turns with
//!   every acquisition, and skips, without a round trip, those a guard of
//!   this manager holds or claims. A free permit costs one round trip; a
//!   permit held elsewhere costs one more each.
//! - When none is free, the wait is the semaphore's one server-side loop
//!   (`sql::semaphore`), on a connection that holds nothing else: it
//!   queues for one permit, claimed for it, and tries the others each
//!   slice; the permit it takes becomes its claim in the same lock of the
//!   table that counts the answer. While every permit is held by this
//!   manager's own guards, the wait is in-process and takes no connection.

use std::fmt;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::contract::family::NamespaceFor;
use crate::contract::id::LockId;
use crate::contract::key::LockKey;
use crate::contract::mode::Mode;
use crate::contract::namespace::Namespace;
use crate::contract::permit::PermitIds;
use crate::engine::events;
use crate::engine::measure::Outcome;
use crate::engine::permit::PermitWaiter;
use crate::engine::wait::{Wait, reported_wait};
use crate::error::Error;
use crate::front::loss::HoldState;
use crate::front::semaphore::Permit;
use crate::sql::marker;
use crate::sql::semaphore::{PermitAnswer, permit_wait_sql};
use crate::sql::statements::Scope;

use super::LockManager;
use super::connection::{Command, Holding, WaitFailure, connection_gone};
use super::guard::ManagedGuard;
use super::request::ManagedLock;
use super::table::{ClaimGuard, Purpose, Route};

impl LockManager {
    /// A semaphore of `permits` permits on `key` in `namespace`: at most
    /// `permits` holders at once, whoever they are (guards of this manager
    /// or of others, sessions, transactions), as long as every holder gives
    /// the same number. Configure, then acquire; the guard says which
    /// permit it holds ([`ManagedGuard::permit`]) and reports its loss as a
    /// lock's guard does.
    ///
    /// ```no_run
    /// # async fn run(manager: &pglock_runtime::LockManager) -> Result<(), pglock_runtime::Error> {
    /// use std::time::Duration;
    /// static EXPORTS: pglock_runtime::Namespace = pglock_runtime::Namespace::named("exports:tenant");
    /// let mut slot = manager
    ///     .semaphore(&EXPORTS, &"acme", 3)
    ///     .timeout(Duration::from_secs(5))
    ///     .acquire()
    ///     .await?;
    /// let index = slot.permit().expect("a semaphore's guard").index();
    /// tokio::select! {
    ///     lost = slot.lost() => eprintln!("export slot {index} lost: {lost}"),
    ///     () = export(index) => slot.release().await?,
    /// }
    /// # Ok(()) }
    /// # async fn export(_: u32) {}
    /// ```
    pub fn semaphore<'a, K, N>(
        &'a self,
        namespace: &'a N,
        key: &K,
        permits: u32,
    ) -> ManagedSemaphore<'a>
    where
        K: LockKey + ?Sized,
        N: NamespaceFor<K> + ?Sized,
    {
        let namespace = namespace.namespace();
        ManagedSemaphore {
            manager: self,
            namespace,
            key_id: namespace.id(key),
            permits,
            wait: Wait::Unbounded,
        }
    }
}

/// A semaphore to take a permit of through a [`LockManager`]: made by
/// [`LockManager::semaphore`], configured, then acquired.
///
/// Waits, timeouts and the number of permits behave as for
/// [`XactSemaphore`](crate::XactSemaphore): a timeout ends with
/// [`Error::Conflict`], a holder that uses more permits makes a waiter
/// fail with [`Error::PermitsMismatch`].
#[derive(Clone, Copy)]
#[must_use = "a semaphore request does nothing until it is acquired"]
pub struct ManagedSemaphore<'a> {
    manager: &'a LockManager,
    namespace: &'a Namespace,
    key_id: LockId,
    permits: u32,
    wait: Wait,
}

impl ManagedSemaphore<'_> {
    semaphore_options!(
        /// Wait at most `timeout` for a permit, in-process and on the server
        /// together. Zero and more than `i32::MAX` milliseconds are refused
        /// with [`Error::InvalidTimeout`].
    );

    /// Takes a permit, waiting as configured.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] after `no_wait`, [`Error::Conflict`] when a wait ends
    /// without a permit, [`Error::PermitsMismatch`],
    /// [`Error::InvalidPermits`], and the errors of
    /// [`ManagedLock::acquire`](super::ManagedLock::acquire).
    pub async fn acquire(self) -> Result<ManagedGuard, Error> {
        let cap_ms = self.wait.cap_ms()?;
        let waiter = self.waiter()?;
        let start = waiter.start();
        if let Some(guard) = self.try_permits(&waiter, start, None).await? {
            waiter.count(Outcome::Acquired);
            return Ok(guard);
        }
        if self.wait.is_no_wait() {
            return Err(waiter.busy(self.wait));
        }
        // The wait counts its own outcome.
        self.wait_for(&waiter, start, cap_ms).await
    }

    /// Tries once: the guard of a free permit, `None` when every permit is
    /// held (by anyone, this manager's guards included).
    pub async fn try_acquire(self) -> Result<Option<ManagedGuard>, Error> {
        let waiter = self.waiter()?;
        let guard = self.try_permits(&waiter, waiter.start(), None).await?;
        match guard {
            Some(_) => waiter.count(Outcome::Acquired),
            None => events::not_waiting(&waiter.identity()),
        }
        Ok(guard)
    }

    /// The permits from `start`, wrapping around.
    fn from_start(waiter: &PermitWaiter<'_>, start: u32) -> impl Iterator<Item = u32> + use<> {
        let permits = waiter.permits.len();
        (0..permits).map(move |offset| (start + offset) % permits)
    }

    /// Tries the permits one by one from `start`: the guard of the first
    /// granted. A permit claimed here is skipped without a round trip.
    async fn try_permits(
        &self,
        waiter: &PermitWaiter<'_>,
        start: u32,
        waited: Option<Duration>,
    ) -> Result<Option<ManagedGuard>, Error> {
        for index in Self::from_start(waiter, start) {
            let id = waiter.permits.get(index).expect("an index below N");
            let lock = ManagedLock::permit(self.manager, self.namespace, id);
            if let Some(guard) = lock.try_once().await? {
                let permit = Permit::new(waiter.permits, index, waited);
                return Ok(Some(guard.holding_permit(permit)));
            }
        }
        Ok(None)
    }

    /// Waits for a permit: in-process while every permit is held by this
    /// manager's guards, then on the server on a connection of its own. A
    /// timeout bounds both parts together.
    async fn wait_for(
        &self,
        waiter: &PermitWaiter<'_>,
        start: u32,
        cap_ms: Option<u32>,
    ) -> Result<ManagedGuard, Error> {
        let inner = &self.manager.inner;
        let semaphore = waiter.identity();
        let started = Instant::now();
        let deadline = cap_ms.map(|ms| started + Duration::from_millis(ms.into()));
        reported_wait(&semaphore, cap_ms, async {
            loop {
                let released = inner.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                let past_deadline = deadline.is_some_and(|deadline| Instant::now() >= deadline);
                let target = Self::from_start(waiter, start).find(|&index| {
                    let id = waiter.permits.get(index).expect("an index below N");
                    !inner.held_here(id, Mode::Exclusive)
                });
                let Some(target) = target else {
                    if past_deadline {
                        return Err(Error::timed_out_in_process(&semaphore, started.elapsed()));
                    }
                    match deadline {
                        Some(deadline) => {
                            let _ = tokio::time::timeout_at(deadline.into(), released).await;
                        }
                        None => released.await,
                    }
                    let waited = Some(started.elapsed());
                    if let Some(guard) = self.try_permits(waiter, start, waited).await? {
                        return Ok(guard);
                    }
                    continue;
                };
                // The remaining time, never less than the smallest cap: once
                // the deadline has passed, the server's loop reports it.
                let remaining_ms = deadline.map(|deadline| {
                    let left = deadline.saturating_duration_since(Instant::now());
                    left.as_millis().clamp(1, i32::MAX as u128) as u32
                });
                // On another connection if the first turns out to be gone
                // before the wait could start (an idle connection cut).
                return match self
                    .wait_on_a_connection(waiter, target, remaining_ms, started)
                    .await
                {
                    Err((_, true)) => self
                        .wait_on_a_connection(waiter, target, remaining_ms, started)
                        .await
                        .map_err(|(error, _)| error),
                    outcome => outcome.map_err(|(error, _)| error),
                };
            }
        })
        .await
    }

    /// One wait on the server for any permit, queued for permit `target`;
    /// an error says whether its connection was lost.
    async fn wait_on_a_connection(
        &self,
        waiter: &PermitWaiter<'_>,
        target: u32,
        cap_ms: Option<u32>,
        started: Instant,
    ) -> Result<ManagedGuard, (Error, bool)> {
        let inner = &self.manager.inner;
        let semaphore = waiter.identity();
        let base = waiter.permits.base();
        let target_id = waiter.permits.get(target).expect("an index below N");
        let mut claim = ClaimGuard::new(inner);
        let route = inner
            .route(target_id, Mode::Exclusive, Purpose::Wait, &mut claim)
            .await;
        let Route::To(connection_id, _) = route.map_err(|error| (error, false))? else {
            unreachable!("a wait gets a connection of its own, or an error");
        };
        let statements = self.namespace.statements();
        let (state_tx, state) = watch::channel(HoldState::Held);
        let holding = Holding {
            guard: claim.guard,
            lock: waiter.permit_identity(target),
            unlock_sql: statements.unlock(Mode::Exclusive),
            state: state_tx,
            meter: None,
            wants_token: false,
        };
        let sql = permit_wait_sql(
            &marker::with_permits(statements.marker(), Some(waiter.permits.len())),
            Scope::Session,
            base,
            waiter.permits.len(),
            target,
            cap_ms,
        );
        let (reply, answer) = oneshot::channel();
        claim
            .send(Command::Wait {
                sql,
                holding,
                permit: Some(base),
                reply,
            })
            .map_err(|error| (error, true))?;
        match answer.await {
            Ok(Ok(granted)) => {
                let index = granted.permit.unwrap_or(target);
                let permit = Permit::new(waiter.permits, index, Some(started.elapsed()));
                let lock = waiter.permit_identity(index);
                Ok(
                    ManagedGuard::new(inner, claim, connection_id, lock, state, None)
                        .holding_permit(permit),
                )
            }
            Ok(Err(WaitFailure::NoPermit(answer))) => Err((
                match answer {
                    PermitAnswer::Mismatch { seen } => waiter.mismatch(seen),
                    PermitAnswer::Standby => Error::Standby,
                    PermitAnswer::None | PermitAnswer::Taken(_) => {
                        Error::timed_out_in_process(&semaphore, started.elapsed())
                    }
                },
                false,
            )),
            Ok(Err(WaitFailure::Wait(error))) => {
                let lost = !inner.table().connections.contains_key(&connection_id);
                Err((Error::from_wait(error, &semaphore, started.elapsed()), lost))
            }
            Ok(Err(WaitFailure::Token(error))) => Err((error, false)),
            Ok(Err(WaitFailure::Open(error))) => Err((error, true)),
            Err(_) if inner.table().closed => Err((Error::ManagerClosed, false)),
            Err(_) => Err((connection_gone(), true)),
        }
    }
}

impl fmt::Debug for ManagedSemaphore<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedSemaphore")
            .field("namespace", &self.namespace.label())
            .field("key_id", &self.key_id)
            .field("permits", &self.permits)
            .field("wait", &self.wait)
            .finish()
    }
}
