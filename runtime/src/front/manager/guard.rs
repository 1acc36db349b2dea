//! A session lock held through a [`LockManager`](super::LockManager).

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use crate::engine::events;
use crate::error::Error;
use crate::front::fencing::FencingToken;
use crate::front::loss::{HoldState, Loss, until_lost};
use crate::front::semaphore::Permit;
use crate::identity::LockIdentity;

use super::connection::{Command, Connection};
use super::table::ClaimGuard;
use super::{ConnectionId, GuardId, Inner};

/// A session lock held through a [`LockManager`](super::LockManager).
///
/// [`ManagedGuard::release`] unlocks it on its connection. A guard dropped
/// without release is unlocked in the background at once; its connection
/// stays open for the other locks it holds. [`ManagedGuard::lost`] and
/// [`ManagedGuard::watch`] say when the connection, and so the lock, was
/// lost, as a [`Lease`](crate::Lease) does.
pub struct ManagedGuard {
    inner: Arc<Inner>,
    lock: LockIdentity,
    guard: GuardId,
    connection_id: ConnectionId,
    connection: Arc<Connection>,
    state: watch::Receiver<HoldState>,
    token: Option<FencingToken>,
    permit: Option<Permit>,
    released: bool,
}

impl ManagedGuard {
    /// The guard of a request that succeeded: its claim is kept.
    pub(super) fn new(
        inner: &Arc<Inner>,
        claim: ClaimGuard<'_>,
        connection_id: ConnectionId,
        lock: LockIdentity,
        state: watch::Receiver<HoldState>,
        token: Option<FencingToken>,
    ) -> Self {
        let (guard, connection) = claim.keep();
        ManagedGuard {
            inner: Arc::clone(inner),
            lock,
            guard,
            connection_id,
            connection,
            state,
            token,
            permit: None,
            released: false,
        }
    }

    /// The guard of a semaphore's permit.
    pub(super) fn holding_permit(mut self, permit: Permit) -> Self {
        self.permit = Some(permit);
        self
    }

    /// Which permit of a semaphore the guard holds; `None` for a lock. See
    /// [`LockManager::semaphore`](super::LockManager::semaphore).
    pub fn permit(&self) -> Option<Permit> {
        self.permit
    }

    /// The lock held.
    pub fn lock(&self) -> &LockIdentity {
        &self.lock
    }

    /// The fencing token taken when the lock was granted; `None` unless
    /// asked for with [`ManagedLock::with_fencing_token`](super::ManagedLock::with_fencing_token).
    pub fn fencing_token(&self) -> Option<FencingToken> {
        self.token
    }

    /// Whether the lock is still held, as of the last check of its
    /// connection.
    pub fn is_held(&self) -> bool {
        matches!(*self.state.borrow(), HoldState::Held)
    }

    /// Resolves when the lock is lost; use it in a `select!` beside the
    /// holder's work.
    pub async fn lost(&mut self) -> Loss {
        until_lost(&mut self.state, &self.lock).await
    }

    /// A receiver of the lock's state.
    pub fn watch(&self) -> watch::Receiver<HoldState> {
        self.state.clone()
    }

    /// Unlocks on the lock's connection. Fails with [`Error::LockLost`] when
    /// the connection was lost, or the unlock found nothing to release.
    /// After [`LockManager::close`](super::LockManager::close), which released it already, succeeds.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        if !self.inner.forget(self.guard) {
            return self.already_gone();
        }
        let released = self
            .connection
            .release(&self.inner, self.connection_id, self.guard)
            .await;
        match released {
            Ok(()) => Ok(()),
            Err(_) => self.already_gone(),
        }
    }

    fn already_gone(&self) -> Result<(), Error> {
        if self.inner.table().closed {
            Ok(())
        } else {
            Err(Error::LockLost(self.lock.clone()))
        }
    }
}

impl Drop for ManagedGuard {
    fn drop(&mut self) {
        if self.released || !self.inner.forget(self.guard) {
            return;
        }
        events::managed_guard_dropped(&self.lock);
        let _ = self.connection.send(Command::Unlock { guard: self.guard });
    }
}

impl fmt::Debug for ManagedGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedGuard")
            .field("lock", &self.lock)
            .field("permit", &self.permit)
            .field("connection", &self.connection_id)
            .field("state", &*self.state.borrow())
            .finish()
    }
}
