//! The rows every view shows: the inspection's locks, with what is known
//! of their namespace and key, and the locks of prepared transactions.

use std::net::IpAddr;
use std::time::Duration;

use pglock_runtime::{Inspection, LockId, Mode, SemaphoreRow};

use crate::attribution::{Attribution, Names, Source};

/// One advisory lock held or awaited.
#[derive(Clone, Debug)]
pub(crate) struct LockRow {
    /// `None`: a prepared transaction holds it, no backend does.
    pub(crate) pid: Option<i32>,
    pub(crate) application_name: Option<String>,
    pub(crate) client_addr: Option<IpAddr>,
    pub(crate) id: LockId,
    pub(crate) mode: Option<Mode>,
    pub(crate) granted: bool,
    pub(crate) waited: Option<Duration>,
    pub(crate) blocked_by: Vec<i32>,
    pub(crate) attribution: Attribution,
    pub(crate) state: Option<String>,
    pub(crate) time_in_state: Option<Duration>,
    pub(crate) transaction_age: Option<Duration>,
    /// Whether this role can see the backend's activity (state, client,
    /// statement): its own sessions, or all with `pg_read_all_stats`.
    pub(crate) visible: bool,
    /// The base of the semaphore this row is a permit of: shown in the
    /// semaphore's one line, not as a lock of its own.
    pub(crate) semaphore: Option<LockId>,
}

impl LockRow {
    /// The namespace as shown: the name, the integer key when known, and
    /// how a name not read from a marker was matched; `?` when unknown.
    pub(crate) fn namespace_text(&self) -> String {
        let attribution = &self.attribution;
        let Some(name) = &attribution.namespace else {
            return "?".to_owned();
        };
        let mut text = name.clone();
        if let Some(key) = attribution.key {
            text.push_str(&format!(" key={key}"));
        }
        if attribution.source == Some(Source::Ns) {
            text.push_str(" (by --ns)");
        }
        text
    }

    /// How long the backend has been idle in a transaction, when it is.
    pub(crate) fn idle_in_transaction(&self) -> Option<Duration> {
        self.state
            .as_deref()
            .filter(|state| state.starts_with("idle in transaction"))
            .and(self.time_in_state)
    }
}

/// Every advisory lock of the database, as one inspection saw them.
#[derive(Clone, Debug)]
pub(crate) struct Listing {
    pub(crate) rows: Vec<LockRow>,
    /// The semaphores recognised, one line each.
    pub(crate) semaphores: Vec<SemaphoreRow>,
}

impl Listing {
    pub(crate) fn new(inspection: &Inspection, names: &mut Names) -> Self {
        let mut rows: Vec<LockRow> = inspection
            .locks()
            .iter()
            .map(|lock| {
                // The server fills a backend's state for the roles that may
                // see its activity, and for no one else.
                let visible = lock.state().is_some();
                LockRow {
                    pid: Some(lock.pid()),
                    application_name: lock.application_name().map(str::to_owned),
                    client_addr: lock.client_addr(),
                    id: lock.id(),
                    mode: lock.mode(),
                    granted: lock.granted(),
                    waited: lock.waited(),
                    blocked_by: lock.blocked_by().to_vec(),
                    attribution: names.attribute(lock.id(), lock.namespace()),
                    state: lock.state().map(str::to_owned),
                    time_in_state: lock.time_in_state(),
                    transaction_age: lock.transaction_age(),
                    visible,
                    semaphore: lock.semaphore(),
                }
            })
            .collect();
        rows.extend(inspection.prepared().iter().map(|lock| {
            LockRow {
                pid: None,
                application_name: None,
                client_addr: None,
                id: lock.id(),
                mode: lock.mode(),
                granted: true,
                waited: None,
                blocked_by: Vec::new(),
                attribution: names.attribute(lock.id(), None),
                state: None,
                time_in_state: None,
                transaction_age: None,
                visible: true,
                // A permit is shown on its semaphore's line, which counts it.
                semaphore: inspection
                    .semaphores()
                    .iter()
                    .map(SemaphoreRow::base)
                    .find(|base| permit_of(*base, lock.id())),
            }
        }));
        let semaphores = inspection.semaphores().to_vec();
        Self { rows, semaphores }
    }

    /// How long `pid` has waited for a permit of the semaphore whose permit
    /// 0 is `base`, when the inspection says.
    pub(crate) fn permit_wait(&self, base: LockId, pid: i32) -> Option<Duration> {
        self.rows
            .iter()
            .find(|row| !row.granted && row.pid == Some(pid) && row.semaphore == Some(base))
            .and_then(|row| row.waited)
    }

    /// The rows shown as locks: all but the permits of the semaphores.
    pub(crate) fn locks(&self) -> impl Iterator<Item = &LockRow> {
        self.rows.iter().filter(|row| row.semaphore.is_none())
    }

    /// The distinct backends whose activity this role can't see.
    pub(crate) fn hidden_backends(&self) -> usize {
        let mut pids: Vec<i32> = self
            .rows
            .iter()
            .filter(|row| !row.visible)
            .filter_map(|row| row.pid)
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len()
    }

    /// The one line that says what this role can't see, if anything.
    pub(crate) fn hidden_note(&self, user: &str) -> Option<String> {
        match self.hidden_backends() {
            0 => None,
            hidden => Some(format!(
                "{hidden} backend(s) belong to other roles: their state, client and statement \
                 (so their namespace) are hidden from role {user}; \
                 GRANT pg_read_all_stats TO {user} shows them"
            )),
        }
    }
}

/// Whether `id` is a permit of the semaphore whose permit 0 is `base`: all
/// but its low 10 bits are the base's (docs/KEYS.md, section 4).
fn permit_of(base: LockId, id: LockId) -> bool {
    match (base, id) {
        (LockId::BigInt(base), LockId::BigInt(id)) => id & -1024 == base,
        (LockId::Pair(class, base), LockId::Pair(id_class, id)) => {
            class == id_class && id & -1024 == base
        }
        _ => false,
    }
}
