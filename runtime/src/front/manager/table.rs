//! What a manager knows, under one lock: its connections as routing sees
//! them, which guard claims which lock on which connection, and the
//! choice of a connection for each request.
//!
//! PostgreSQL grants a session lock again to a backend that holds it. So a
//! request claims its lock here before its statement is sent, and is never
//! sent to a connection where the server would grant it by mistake: two
//! exclusive guards of one manager exclude each other exactly as two
//! processes do (shared guards may share).

use std::collections::HashMap;
use std::sync::Arc;

use crate::contract::id::LockId;
use crate::contract::mode::Mode;
use crate::error::Error;

use super::connection::{Command, Connection};
use super::options::{LockTable, ManagerOptions};
use super::{ConnectionId, GuardId, Inner, task};

/// The manager's table.
#[derive(Default)]
pub(super) struct Table {
    pub(super) closed: bool,
    next_connection: u64,
    next_handle: u64,
    pub(super) connections: HashMap<ConnectionId, Entry>,
    claims: HashMap<LockId, Vec<Claim>>,
    /// Which lock each claiming guard claims.
    guards: HashMap<GuardId, LockId>,
    /// The server's lock table, as the last connection opened read it.
    pub(super) lock_table: Option<LockTable>,
}

/// One connection, as routing sees it.
pub(super) struct Entry {
    pub(super) connection: Arc<Connection>,
    /// Tries and waits sent and not yet answered.
    in_flight: usize,
    /// Locks granted to guards on this connection, and not unlocked yet.
    held: usize,
    /// A wait runs on it: nothing else may be sent until it ends.
    waiting: bool,
}

/// A guard's claim on a lock: taken before its statement is sent.
#[derive(Clone, Copy, Debug)]
struct Claim {
    guard: GuardId,
    connection: ConnectionId,
    mode: Mode,
    granted: bool,
}

/// Why a request needs a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A try: any connection that may not grant the lock by mistake.
    Try,
    /// A wait: a connection that holds nothing and runs nothing.
    Wait,
}

/// Where a request goes.
pub(super) enum Route {
    /// Run it on this connection.
    To(ConnectionId, Arc<Connection>),
    /// A guard of this manager holds or claims the lock in a mode that
    /// excludes it.
    HeldHere,
    /// The budget depends on the server's lock table, which the connection
    /// of another request is reading: route again once a claim is given
    /// back or a connection has read it.
    AwaitTable,
}

/// How busy a connection is, as routing sees it.
#[derive(Clone, Copy, Debug)]
struct Load {
    connection: ConnectionId,
    /// Tries and waits sent and not yet answered.
    in_flight: usize,
    /// Locks granted on it.
    held: usize,
    waiting: bool,
    /// A guard holds or claims the same lock on it.
    has_lock: bool,
    /// It is the light connection: see [`light_connection`].
    light: bool,
}

/// The connection a try goes to, among `open` connections (the bound:
/// `max`), never one that runs a wait.
///
/// A lone try (`quiet`: no try or wait in flight on any connection that
/// does not wait)
/// goes to the light connection, the one that holds the fewest locks (one
/// that holds none only while no other holds any, so that those stay free
/// for waits): PostgreSQL walks a backend's whole lock table at the end of
/// each statement outside a transaction, so a lone acquire and release cost
/// least where few locks are held.
///
/// A try in a stream goes, below the bound, to one with fewer than two
/// statements queued and without the same lock, holding locks first (one
/// that holds none stays free for waits while another will do), then not
/// the light connection (which stays light for lone tries), then the least
/// busy; `None` when there is none, for a new one to open. At the bound: one
/// without the same lock first, then one that holds locks however busy, so
/// that the last that hold none stay free for waits, then not the light
/// one, then the least busy.
fn try_target(
    connections: impl Iterator<Item = Load> + Clone,
    open: usize,
    max: usize,
) -> Option<ConnectionId> {
    let at_bound = open >= max;
    let candidates = connections.filter(|load| !load.waiting);
    let quiet = candidates.clone().all(|load| load.in_flight == 0);
    let light = candidates.clone().find(|load| load.light && !load.has_lock);
    match light {
        Some(light) if quiet => Some(light.connection),
        _ => busiest_first(candidates, at_bound),
    }
}

/// A stream's choice: see [`try_target`].
fn busiest_first(candidates: impl Iterator<Item = Load>, at_bound: bool) -> Option<ConnectionId> {
    candidates
        .min_by_key(|load| {
            (
                !at_bound && load.in_flight >= 2,
                load.has_lock,
                load.held == 0,
                load.light,
                load.in_flight,
                load.connection,
            )
        })
        .filter(|load| at_bound || (load.in_flight < 2 && !load.has_lock))
        .map(|load| load.connection)
}

/// The light connection among those not waiting: the one that holds the
/// fewest locks, preferring one that holds some (those that hold none are
/// kept for waits); the lowest id among equals, so that it stays the same
/// one while streams avoid it.
fn light_connection<'a>(
    connections: impl Iterator<Item = (&'a ConnectionId, &'a Entry)>,
) -> Option<ConnectionId> {
    connections
        .filter(|(_, entry)| !entry.waiting)
        .min_by_key(|(connection, entry)| (entry.held == 0, entry.held, **connection))
        .map(|(connection, _)| *connection)
}

impl Table {
    fn next_handle(&mut self) -> GuardId {
        self.next_handle += 1;
        GuardId(self.next_handle)
    }

    /// Chooses the connection for a request and claims the lock on it.
    ///
    /// A try goes where [`try_target`] says; a new connection opens (within
    /// the bound) when every one has a statement queued. It never goes
    /// where the server would grant the lock a second time: a lock this
    /// manager holds or claims in a mode that excludes the request is busy
    /// at once. A wait goes to a connection that holds nothing and runs
    /// nothing, where it waits for its lock behind any holder, this
    /// manager's own included. Nothing is claimed beyond the budget.
    pub(super) fn route(
        &mut self,
        inner: &Arc<Inner>,
        id: LockId,
        mode: Mode,
        purpose: Purpose,
        claim: &mut ClaimGuard<'_>,
    ) -> Result<Route, Error> {
        if self.closed {
            return Err(Error::ManagerClosed);
        }
        if purpose == Purpose::Try && self.held_here(id, mode) {
            return Ok(Route::HeldHere);
        }
        let options: &ManagerOptions = &inner.options;
        let in_use = self.locks_in_use();
        match options.lock_budget.allows(self.lock_table) {
            Some(budget) if in_use >= budget => {
                return Err(Error::LockBudget {
                    budget,
                    table: self.lock_table,
                });
            }
            // A share of a table no connection has read yet: one request at
            // a time, whose connection reads it, so that a burst at start-up
            // can't pass the budget before it is known.
            None if in_use > 0 => return Ok(Route::AwaitTable),
            _ => {}
        }
        let max = options.max_connections;
        let chosen = match purpose {
            Purpose::Try => {
                // Where a guard holds the lock already (shared), the server
                // would count one more grant of the same row: a try goes
                // elsewhere while it can, so that a failed one is never in
                // doubt.
                let holding: Vec<ConnectionId> = self
                    .claims
                    .get(&id)
                    .map(|claims| claims.iter().map(|claim| claim.connection).collect())
                    .unwrap_or_default();
                let light = light_connection(self.connections.iter());
                try_target(
                    self.connections.iter().map(|(connection, entry)| Load {
                        connection: *connection,
                        in_flight: entry.in_flight,
                        held: entry.held,
                        waiting: entry.waiting,
                        has_lock: holding.contains(connection),
                        light: light == Some(*connection),
                    }),
                    self.connections.len(),
                    max,
                )
            }
            Purpose::Wait => self
                .connections
                .iter()
                .filter(|(_, entry)| !entry.waiting && entry.held == 0 && entry.in_flight == 0)
                .map(|(connection, _)| *connection)
                .min(),
        };
        let connection_id = match chosen {
            Some(connection_id) => connection_id,
            None if self.connections.len() < max => self.open(inner)?,
            None => {
                return Err(Error::ManagerBusy {
                    max_connections: max,
                });
            }
        };
        let entry = self
            .connections
            .get_mut(&connection_id)
            .expect("the chosen connection");
        entry.in_flight += 1;
        entry.waiting = purpose == Purpose::Wait;
        let connection = Arc::clone(&entry.connection);
        claim.connection = Some(Arc::clone(&connection));
        self.claims.entry(id).or_default().push(Claim {
            guard: claim.guard,
            connection: connection_id,
            mode,
            granted: false,
        });
        self.guards.insert(claim.guard, id);
        Ok(Route::To(connection_id, connection))
    }

    /// Opens a connection: its task connects, then serves its commands.
    fn open(&mut self, inner: &Arc<Inner>) -> Result<ConnectionId, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Database(sqlx::Error::Configuration(
                "the lock manager needs a tokio runtime".into(),
            ))
        })?;
        self.next_connection += 1;
        let id = ConnectionId(self.next_connection);
        let (connection, commands) = Connection::new(runtime.clone());
        self.connections.insert(
            id,
            Entry {
                connection: Arc::clone(&connection),
                in_flight: 0,
                held: 0,
                waiting: false,
            },
        );
        runtime.spawn(task::run(Arc::clone(inner), id, connection, commands));
        Ok(id)
    }

    /// The connections whose session is open (not those still connecting).
    pub(super) fn open_connections(&self) -> usize {
        self.connections
            .values()
            .filter(|entry| entry.connection.is_open())
            .count()
    }

    /// The locks held here: one per claiming guard.
    pub(super) fn claimed(&self) -> usize {
        self.guards.len()
    }

    /// A try or a wait on `connection` was answered; `granted` is the
    /// guard it took a lock for. Returns whether that guard still claims
    /// the lock (its caller may have given up meanwhile: then the lock is to
    /// be given back at once).
    pub(super) fn answered(&mut self, connection: ConnectionId, granted: Option<GuardId>) -> bool {
        let claimed = granted.is_some_and(|guard| {
            let claim = self.guards.get(&guard).and_then(|id| {
                self.claims
                    .get_mut(id)?
                    .iter_mut()
                    .find(|claim| claim.guard == guard)
            });
            claim.map(|claim| claim.granted = true).is_some()
        });
        if let Some(entry) = self.connections.get_mut(&connection) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.waiting = false;
            entry.held += usize::from(claimed);
        }
        claimed
    }

    /// The locks the manager's connections hold or ask for: granted (and
    /// not unlocked yet) or in flight. What counts against the budget.
    fn locks_in_use(&self) -> usize {
        self.connections
            .values()
            .map(|entry| entry.held + entry.in_flight)
            .sum()
    }

    /// A lock granted on `connection` was unlocked (or found gone) there.
    pub(super) fn unheld(&mut self, connection: ConnectionId) {
        if let Some(entry) = self.connections.get_mut(&connection) {
            entry.held = entry.held.saturating_sub(1);
        }
    }

    /// Whether a guard of this manager holds or claims `id` in a mode that
    /// excludes `mode`.
    pub(super) fn held_here(&self, id: LockId, mode: Mode) -> bool {
        self.claims.get(&id).is_some_and(|claims| {
            claims
                .iter()
                .any(|other| mode == Mode::Exclusive || other.mode == Mode::Exclusive)
        })
    }

    /// Moves a guard's claim to the lock `id`: a semaphore's wait claims
    /// the permit it queues for, and is granted whichever permit frees
    /// first. Called under the same lock of the table as
    /// [`Table::answered`], so no try ever finds the permit granted and
    /// unclaimed.
    pub(super) fn reclaim(&mut self, guard: GuardId, id: LockId) {
        let Some(claimed) = self.guards.get_mut(&guard) else {
            return;
        };
        let previous = std::mem::replace(claimed, id);
        if previous == id {
            return;
        }
        let Some(claims) = self.claims.get_mut(&previous) else {
            return;
        };
        let Some(index) = claims.iter().position(|claim| claim.guard == guard) else {
            return;
        };
        let claim = claims.swap_remove(index);
        if claims.is_empty() {
            self.claims.remove(&previous);
        }
        self.claims.entry(id).or_default().push(claim);
    }

    /// Gives back a guard's claim: whether its lock was granted, `None`
    /// when it had no claim.
    pub(super) fn forget(&mut self, guard: GuardId) -> Option<bool> {
        let id = self.guards.remove(&guard)?;
        let claims = self.claims.get_mut(&id)?;
        let index = claims.iter().position(|claim| claim.guard == guard)?;
        let claim = claims.swap_remove(index);
        if claims.is_empty() {
            self.claims.remove(&id);
        }
        // A granted lock stays counted on its connection until the
        // connection has unlocked it: no wait may be routed there before.
        Some(claim.granted)
    }

    /// Removes a connection and every claim on it.
    pub(super) fn remove(&mut self, connection: ConnectionId) {
        self.connections.remove(&connection);
        let guards = &mut self.guards;
        self.claims.retain(|_, claims| {
            claims.retain(|claim| {
                let keep = claim.connection != connection;
                if !keep {
                    guards.remove(&claim.guard);
                }
                keep
            });
            !claims.is_empty()
        });
    }

    /// Retires an idle connection: only if nothing was routed to it since.
    pub(super) fn retire(&mut self, connection: ConnectionId) -> bool {
        let idle = self
            .connections
            .get(&connection)
            .is_some_and(|entry| entry.held == 0 && entry.in_flight == 0 && !entry.waiting);
        if idle {
            self.connections.remove(&connection);
        }
        idle
    }
}

/// A claim taken for a request, given back unless the request succeeds,
/// so that a dropped acquisition leaves nothing behind: its claim is
/// forgotten, and the connection, which may have taken the lock meanwhile,
/// is told to unlock it.
pub(super) struct ClaimGuard<'a> {
    inner: &'a Arc<Inner>,
    pub(super) guard: GuardId,
    connection: Option<Arc<Connection>>,
    /// The connection answered, without granting: no unlock to send.
    answered: bool,
}

impl<'a> ClaimGuard<'a> {
    pub(super) fn new(inner: &'a Arc<Inner>) -> Self {
        let guard = inner.table().next_handle();
        Self {
            inner,
            guard,
            connection: None,
            answered: false,
        }
    }

    /// The connection answered without granting the lock.
    pub(super) fn answered(&mut self) {
        self.answered = true;
    }

    /// Sends `command` to the claim's connection.
    pub(super) fn send(&self, command: Command) -> Result<(), Error> {
        let connection = self.connection.as_ref().expect("a routed claim");
        connection.send(command)
    }

    /// The request succeeded: the claim is the guard's now, on its
    /// connection.
    pub(super) fn keep(mut self) -> (GuardId, Arc<Connection>) {
        let connection = self.connection.take().expect("a routed claim");
        let guard = self.guard;
        std::mem::forget(self);
        (guard, connection)
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        self.inner.forget(self.guard);
        if let Some(connection) = self.connection.as_ref().filter(|_| !self.answered) {
            let _ = connection.send(Command::Unlock { guard: self.guard });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(connection: u64, in_flight: usize, held: usize) -> Load {
        Load {
            connection: ConnectionId(connection),
            in_flight,
            held,
            waiting: false,
            has_lock: false,
            light: false,
        }
    }

    fn light(load: Load) -> Load {
        Load {
            light: true,
            ..load
        }
    }

    fn target(loads: &[Load], open: usize, max: usize) -> Option<u64> {
        try_target(loads.iter().copied(), open, max).map(|id| id.0)
    }

    #[test]
    fn a_try_goes_to_a_connection_that_holds_locks_while_one_is_free_enough() {
        let loads = [load(1, 0, 0), load(2, 1, 5), load(3, 0, 9)];
        assert_eq!(target(&loads, 3, 8), Some(3));
    }

    #[test]
    fn a_try_takes_an_idle_connection_before_a_new_one() {
        // The one that holds locks has two statements queued: the idle one
        // serves, rather than a connection opened for it.
        let loads = [load(1, 2, 5), load(2, 0, 0)];
        assert_eq!(target(&loads, 2, 8), Some(2));
    }

    #[test]
    fn at_the_bound_a_try_leaves_an_idle_connection_to_waits() {
        let loads = [load(1, 2, 5), load(2, 0, 0)];
        assert_eq!(target(&loads, 2, 2), Some(1));
    }

    #[test]
    fn a_new_connection_opens_only_when_every_one_is_busy_and_the_bound_allows() {
        let loads = [load(1, 2, 5), load(2, 3, 0)];
        assert_eq!(target(&loads, 2, 8), None);
        assert_eq!(target(&loads, 2, 2), Some(1));
    }

    #[test]
    fn a_try_never_goes_where_a_wait_runs() {
        let waiting = Load {
            waiting: true,
            ..load(1, 0, 0)
        };
        assert_eq!(target(&[waiting], 1, 1), None);
        assert_eq!(target(&[waiting, load(2, 4, 1)], 2, 2), Some(2));
    }

    #[test]
    fn a_try_goes_where_its_lock_is_not_held_while_the_bound_allows() {
        let shared_here = Load {
            has_lock: true,
            ..load(1, 0, 5)
        };
        assert_eq!(target(&[shared_here, load(2, 1, 0)], 2, 8), Some(2));
        assert_eq!(target(&[shared_here], 1, 8), None, "a new one opens");
        assert_eq!(
            target(&[shared_here], 1, 1),
            Some(1),
            "at the bound, shared"
        );
    }

    #[test]
    fn a_lone_try_goes_to_the_light_connection() {
        // Nothing in flight: the one that holds the fewest locks serves.
        let loads = [load(1, 0, 900), light(load(2, 0, 3)), load(3, 0, 0)];
        assert_eq!(target(&loads, 3, 8), Some(2));
        assert_eq!(target(&loads, 3, 3), Some(2));
    }

    #[test]
    fn a_stream_leaves_the_light_connection_light() {
        // A try in flight elsewhere: the light connection is the last that
        // holds locks to be chosen, below the bound and at it.
        let loads = [load(1, 1, 900), light(load(2, 0, 3)), load(3, 1, 40)];
        assert_eq!(target(&loads, 3, 8), Some(1));
        assert_eq!(target(&loads, 3, 3), Some(1));
        let busy = [load(1, 2, 900), light(load(2, 0, 3)), load(3, 2, 40)];
        assert_eq!(target(&busy, 3, 8), Some(2), "before a new one opens");
        assert_eq!(
            target(&busy, 3, 3),
            Some(1),
            "at the bound, queued behind another"
        );
        let all_have_it = [
            Load {
                has_lock: true,
                ..load(1, 1, 900)
            },
            light(load(2, 0, 3)),
        ];
        assert_eq!(target(&all_have_it, 2, 2), Some(2));
    }

    #[test]
    fn a_lone_try_where_the_light_connection_has_its_lock_goes_elsewhere() {
        let shared_here = Load {
            has_lock: true,
            ..light(load(1, 0, 2))
        };
        assert_eq!(target(&[shared_here, load(2, 0, 50)], 2, 8), Some(2));
    }

    #[test]
    fn the_light_connection_holds_the_fewest_locks_and_some_if_any_does() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let entry = |held: usize, waiting: bool| Entry {
            connection: Connection::new(runtime.handle().clone()).0,
            in_flight: 0,
            held,
            waiting,
        };
        let connections: HashMap<ConnectionId, Entry> = [
            (ConnectionId(1), entry(900, false)),
            (ConnectionId(2), entry(0, false)),
            (ConnectionId(3), entry(7, false)),
            (ConnectionId(4), entry(1, true)),
        ]
        .into_iter()
        .collect();
        assert_eq!(light_connection(connections.iter()), Some(ConnectionId(3)));
    }
}
