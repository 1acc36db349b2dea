//! The front ends: what applications call. Each takes its locks through the
//! engine and names them with the contract's types.

/// The options every single-key request has, for a request type with fields
/// `lock: Waiter` and `wait: Wait`.
macro_rules! request_options {
    () => {
        /// Take the lock in shared mode.
        pub fn shared(self) -> Self {
            self.with_mode(Mode::Shared)
        }

        /// Take the lock in the given mode.
        pub fn with_mode(mut self, mode: Mode) -> Self {
            self.lock.mode = mode;
            self
        }

        /// Wait at most `timeout` for a busy lock: `lock_timeout` is capped
        /// for this wait only (a stricter setting of the caller's is kept)
        /// and restored exactly afterwards, in the wait statement itself.
        /// Sub-millisecond parts round up; zero and more than `i32::MAX`
        /// milliseconds are refused with [`Error::InvalidTimeout`].
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.wait = Wait::AtMost(timeout);
            self
        }

        /// Don't wait: `acquire` fails with [`Error::Busy`] when someone
        /// else holds the lock.
        pub fn no_wait(mut self) -> Self {
            self.wait = Wait::No;
            self
        }

        /// The advisory lock id this request takes.
        pub fn id(&self) -> LockId {
            self.lock.id
        }

        /// The mode this request takes.
        pub fn mode(&self) -> Mode {
            self.lock.mode
        }

        /// The lock this request takes: namespace, id and mode.
        pub fn identity(&self) -> crate::LockIdentity {
            self.lock.identity()
        }
    };
}

/// The options every semaphore request has, for a request type with fields
/// `namespace: &Namespace`, `key_id: LockId`, `permits: u32` and
/// `wait: Wait`; the doc of `timeout`, which says how each waits, is the
/// caller's.
macro_rules! semaphore_options {
    ($(#[$timeout_doc:meta])*) => {
        $(#[$timeout_doc])*
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.wait = Wait::AtMost(timeout);
            self
        }

        /// Don't wait: `acquire` fails with [`Error::Busy`] when every permit
        /// is held.
        pub fn no_wait(mut self) -> Self {
            self.wait = Wait::No;
            self
        }

        /// The ids of the semaphore's permits.
        ///
        /// # Errors
        ///
        /// [`Error::InvalidPermits`] unless the number of permits is 1 to 1024.
        pub fn permit_ids(&self) -> Result<PermitIds, Error> {
            PermitIds::new(self.key_id, self.permits)
        }

        fn waiter(&self) -> Result<PermitWaiter<'_>, Error> {
            PermitWaiter::new(self.namespace, self.key_id, self.permits)
        }
    };
}

pub(crate) mod fencing;
pub(crate) mod inspect;
pub(crate) mod keepalive;
pub(crate) mod lease;
pub(crate) mod lock_set;
pub(crate) mod loss;
pub(crate) mod manager;
pub(crate) mod primary;
pub(crate) mod run;
pub(crate) mod semaphore;
pub(crate) mod session;
pub(crate) mod session_semaphore;
pub(crate) mod xact_lock;
