//! The listing as JSON lines: one object per lock, with stable field names
//! (documented in docs/OPERATIONS.md; a field is never renamed or removed,
//! new ones may be added).

use std::time::Duration;

use pglock_runtime::{LockId, SemaphoreRow};
use serde_json::{Value, json};

use crate::listing::{Listing, LockRow};

/// One line per lock, then one per semaphore (its permits are not lock
/// lines), each ending with a newline.
pub(crate) fn render(listing: &Listing) -> String {
    let locks = listing.locks().map(object);
    let semaphores = listing.semaphores.iter().map(|row| semaphore(row, listing));
    locks
        .chain(semaphores)
        .map(|line| format!("{line}\n"))
        .collect()
}

/// A semaphore's line: `"kind": "semaphore"` tells it from a lock's, which
/// has no `kind`.
fn semaphore(row: &SemaphoreRow, listing: &Listing) -> Value {
    json!({
        "kind": "semaphore",
        "namespace": row.namespace(),
        "base_id": row.base().to_string(),
        "key_space": key_space(row.base()),
        "permits": row.permits(),
        "held": row.held(),
        "holders": row
            .holders()
            .iter()
            .map(|(permit, pid)| json!({"permit": permit, "pid": pid}))
            .collect::<Vec<_>>(),
        "prepared_permits": row.prepared(),
        "waiting": row.waiters().len(),
        "waiters": row.waiters(),
        "longest_wait_secs": row
            .waiters()
            .iter()
            .filter_map(|pid| listing.permit_wait(row.base(), *pid))
            .max()
            .map(seconds),
    })
}

fn key_space(id: LockId) -> &'static str {
    match id {
        LockId::BigInt(_) => "bigint",
        LockId::Pair(..) => "pair",
    }
}

fn object(row: &LockRow) -> Value {
    json!({
        "pid": row.pid,
        "prepared": row.pid.is_none(),
        "application_name": row.application_name,
        "client_addr": row.client_addr.map(|addr| addr.to_string()),
        // A string: JSON readers that hold numbers as doubles would round
        // a 64-bit id.
        "id": row.id.to_string(),
        "key_space": key_space(row.id),
        "mode": row.mode.map(|mode| mode.to_string()),
        "granted": row.granted,
        "waited_secs": row.waited.map(seconds),
        "blocked_by": row.blocked_by,
        "namespace": row.attribution.namespace,
        "namespace_source": row.attribution.source.map(|source| source.as_str()),
        "key": row.attribution.key,
        "state": row.state,
        "state_secs": row.time_in_state.map(seconds),
        "transaction_secs": row.transaction_age.map(seconds),
        "visible": row.visible,
    })
}

/// Seconds, to the millisecond.
fn seconds(duration: Duration) -> f64 {
    duration.as_millis() as f64 / 1_000.0
}
