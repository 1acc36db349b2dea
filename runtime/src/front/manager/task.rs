//! A connection's task: the waits, the checks while the connection holds
//! locks, the unlocks of dropped guards, the commits of its short
//! transactions, the idle close and the close. One heartbeat checks every
//! lock of the connection with one statement, however many it holds, and a
//! connection that fails makes exactly its own guards report the loss.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{AssertSqlSafe, Connection as _, Row};
use tokio::sync::mpsc;

use crate::contract::id::LockId;
use crate::contract::mode::Mode;
use crate::contract::permit::permit;
use crate::engine::events;
use crate::identity::LockIdentity;
use crate::sql::pg_locks;
use crate::sql::semaphore::PermitAnswer;
use crate::sql::statements::UNLOCK_ALL;

use super::batch::{Due, QUIET};
use super::connection::{Command, Connection, Granted, WaitFailure, may_follow_a_grant};
use super::session::Session;
use super::{ConnectionId, Inner};

/// A connection's task: runs the waits, the checks while the connection
/// holds locks, the unlocks of dropped guards, the commits of its short
/// transactions, the close, and retires the connection when it has held
/// nothing and run no try or release for the idle timeout.
pub(super) async fn run(
    inner: Arc<Inner>,
    id: ConnectionId,
    connection: Arc<Connection>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let checks = inner.options.checks;
    let mut next_check = later(tokio::time::Instant::now(), checks.interval());
    let mut idle_since = tokio::time::Instant::now();
    let mut was_idle = true;
    // When to look at the transaction tries and releases run in, if one is open.
    let mut batch_due: Option<tokio::time::Instant> = None;
    loop {
        if connection.is_gone() {
            break;
        }
        let idle = connection.held().is_empty();
        if idle && !was_idle {
            idle_since = tokio::time::Instant::now();
        }
        was_idle = idle;
        let idle_deadline = later(idle_since, inner.options.idle_timeout);
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { break };
                if !serve(&inner, id, &connection, command).await {
                    break;
                }
                if connection.held().is_empty() {
                    idle_since = tokio::time::Instant::now();
                }
            }
            () = tokio::time::sleep_until(next_check), if !idle => {
                next_check = later(tokio::time::Instant::now(), checks.interval());
                if !check(&inner, id, &connection).await {
                    break;
                }
            }
            // Re-reads whether the connection holds locks.
            () = connection.granted.notified(), if idle => {}
            () = connection.batch_opened.notified(), if batch_due.is_none() => {
                batch_due = Some(later(tokio::time::Instant::now(), QUIET));
            }
            () = sleep_until_some(batch_due), if batch_due.is_some() => {
                match settle_batch(&inner, id, &connection).await {
                    Ok(due) => batch_due = due,
                    Err(()) => break,
                }
            }
            () = tokio::time::sleep_until(idle_deadline), if idle => {
                // A caller's try here counts as use, granted or not.
                let used = match &*connection.session().await {
                    Session::Open(open) => open.last_used(),
                    _ => None,
                };
                if let Some(used) = used.filter(|used| {
                    later(*used, inner.options.idle_timeout) > tokio::time::Instant::now()
                }) {
                    idle_since = used;
                    continue;
                }
                let retired = {
                    let mut table = inner.table();
                    // Gone from the manager already (lost by a caller): done.
                    table.retire(id) || !table.connections.contains_key(&id)
                };
                if retired {
                    let mut session = connection.session().await;
                    if let Session::Open(open) = std::mem::replace(&mut *session, Session::Gone) {
                        let _ = open.into_pg().close().await;
                    }
                    break;
                }
                idle_since = tokio::time::Instant::now();
            }
        }
    }
    fail_queued(&mut commands);
}

/// `sleep_until(due)`; never ends without one.
async fn sleep_until_some(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Commits the transaction tries and releases run in once it is due; when
/// to look again, or `Err` when the connection is gone.
async fn settle_batch(
    inner: &Inner,
    id: ConnectionId,
    connection: &Connection,
) -> Result<Option<tokio::time::Instant>, ()> {
    let mut session = connection.session().await;
    let Session::Open(open) = &mut *session else {
        return Err(());
    };
    match open.due() {
        Due::Nothing => Ok(None),
        Due::At(due) => Ok(Some(due)),
        Due::Commit => match open.commit(inner.options.checks.timeout()).await {
            Ok(()) => Ok(None),
            Err(reason) => {
                connection.lose(inner, id, &mut session, &reason, true);
                Err(())
            }
        },
    }
}

/// One check of a connection that holds locks: one statement, whatever the
/// number of locks. `false` when the connection is gone.
async fn check(inner: &Inner, id: ConnectionId, connection: &Connection) -> bool {
    let mut session = connection.session().await;
    let Session::Open(open) = &mut *session else {
        return false;
    };
    // Guards that share a lock in shared mode are one row of `pg_locks`.
    let expected: HashSet<(LockId, Mode)> = connection
        .held()
        .values()
        .map(|holding| (holding.lock.id(), holding.lock.mode()))
        .collect();
    let bound = inner.options.checks.timeout();
    // Outside a transaction, which would keep its lock on the view until
    // it ends.
    if let Err(reason) = open.commit(bound).await {
        connection.lose(inner, id, &mut session, &reason, true);
        return false;
    }
    let counted = tokio::time::timeout(
        bound,
        sqlx::query_scalar::<_, i64>(pg_locks::COUNT_HELD_BY_THIS_SESSION).fetch_one(open.pg()),
    )
    .await;
    let reason = match counted {
        Ok(Ok(rows)) if usize::try_from(rows).is_ok_and(|rows| rows == expected.len()) => {
            return true;
        }
        Ok(Ok(_)) => "the session no longer holds its locks".to_owned(),
        Ok(Err(error)) => format!("the connection failed: {error}"),
        Err(_) => format!("the connection did not answer within {bound:?}"),
    };
    connection.lose(inner, id, &mut session, &reason, true);
    false
}

/// Runs one command; `false` when the connection is gone after it.
async fn serve(inner: &Inner, id: ConnectionId, connection: &Connection, command: Command) -> bool {
    match command {
        Command::Wait {
            sql,
            mut holding,
            permit,
            mut reply,
        } => {
            // Listening before the check, so a close between the two is seen.
            let closing = inner.closing.notified();
            tokio::pin!(closing);
            closing.as_mut().enable();
            let mut session = connection.session().await;
            if inner.table().closed {
                inner.table().answered(id, None);
                connection.lose(
                    inner,
                    id,
                    &mut session,
                    "the lock manager was closed",
                    false,
                );
                return false;
            }
            let open = match connection.open(&mut session, inner, id).await {
                Ok(open) => open,
                Err(error) => {
                    inner.table().answered(id, None);
                    let _ = reply.send(Err(WaitFailure::Open(error)));
                    return false;
                }
            };
            // A wait runs outside a transaction: its settings are local to
            // its own statement.
            if let Err(reason) = open.commit(inner.options.checks.timeout()).await {
                inner.table().answered(id, None);
                connection.lose(inner, id, &mut session, &reason, true);
                let _ = reply.send(Err(WaitFailure::Wait(sqlx::Error::WorkerCrashed)));
                return false;
            }
            let outcome = tokio::select! {
                outcome = sqlx::raw_sql(AssertSqlSafe(sql)).fetch_all(open.pg()) => Some(outcome),
                () = reply.closed() => None,
                () = &mut closing => None,
            };
            match outcome {
                // Abandoned while it waited, or the manager closes: this
                // connection holds nothing else, and closing it ends the
                // server-side wait (the wait statement makes the server check
                // its client every second).
                None => {
                    inner.table().answered(id, None);
                    connection.lose(inner, id, &mut session, "the wait was abandoned", false);
                    false
                }
                Some(Ok(rows)) => {
                    let bound = inner.options.checks.timeout();
                    let taken = match permit.map(|base| permit_taken(base, &rows)) {
                        None => None,
                        Some(Ok(taken)) => Some(taken),
                        Some(Err(answer)) => {
                            inner.table().answered(id, None);
                            let _ = reply.send(Err(WaitFailure::NoPermit(answer)));
                            return true;
                        }
                    };
                    if let Some((_, taken)) = taken {
                        holding.lock =
                            LockIdentity::new(holding.lock.label().clone(), taken, Mode::Exclusive);
                    }
                    let mut token = None;
                    if holding.wants_token {
                        match open.fencing_token(bound).await {
                            Ok(issued) => token = Some(issued),
                            Err(failure) => {
                                let (error, broken) =
                                    holding.after_token_failure(open, failure, bound).await;
                                let alive = broken.is_none();
                                if let Some(reason) = broken {
                                    connection.lose(inner, id, &mut session, &reason, true);
                                }
                                inner.table().answered(id, None);
                                let _ = reply.send(Err(WaitFailure::Token(error)));
                                return alive;
                            }
                        }
                    }
                    let claimed = {
                        let mut table = inner.table();
                        if let Some((_, taken)) = taken {
                            table.reclaim(holding.guard, taken);
                        }
                        table.answered(id, Some(holding.guard))
                    };
                    if claimed {
                        connection.hold(holding);
                    } else if let Err(reason) = holding.give_back(open.pg(), bound).await {
                        connection.lose(inner, id, &mut session, &reason, true);
                        return false;
                    }
                    let permit = taken.map(|(index, _)| index);
                    let _ = reply.send(Ok(Granted { token, permit }));
                    true
                }
                Some(Err(error)) => {
                    let bound = inner.options.checks.timeout();
                    // Forgotten before the answer, so the caller sees the
                    // connection gone and waits on another. A connection
                    // kept in service is first rid of a lock granted at the
                    // edge of the error; this one held nothing else.
                    // A semaphore's wait tries every permit as it goes, and
                    // a permit taken by a try stays with the session whatever
                    // error follows: the connection, which held nothing
                    // else, gives back whatever it holds.
                    let kept = match open.broken(&error, bound).await {
                        Some(reason) => Err(reason),
                        None if permit.is_some() => give_back_everything(open.pg(), bound).await,
                        None if !may_follow_a_grant(&error) => Ok(false),
                        None => holding.give_back_if_granted(open.pg(), bound).await,
                    };
                    // Answered once nothing of it is left on the server: until then
                    // it counts against the budget.
                    inner.table().answered(id, None);
                    let alive = match kept {
                        Ok(granted) => {
                            if granted {
                                events::granted_despite_error(&holding.lock, &error);
                            }
                            true
                        }
                        Err(reason) => {
                            connection.lose(inner, id, &mut session, &reason, true);
                            false
                        }
                    };
                    let _ = reply.send(Err(WaitFailure::Wait(error)));
                    alive
                }
            }
        }
        Command::Unlock { guard } => match connection.unlock(inner, id, guard).await {
            Ok(()) => true,
            Err(_) => !matches!(*connection.session().await, Session::Gone),
        },
        Command::Close { reply } => {
            let mut session = connection.session().await;
            let released = connection.held().len();
            if let Session::Open(open) = &mut *session {
                let bound = inner.options.checks.timeout();
                let unlocked =
                    tokio::time::timeout(bound, sqlx::raw_sql(UNLOCK_ALL).execute(open.pg())).await;
                if let Ok(Err(error)) = unlocked {
                    events::manager_connection_failed(id.get(), &error);
                }
            }
            if let Session::Open(open) = std::mem::replace(&mut *session, Session::Gone) {
                let _ = open.into_pg().close().await;
            }
            connection.lose(
                inner,
                id,
                &mut session,
                "the lock manager was closed",
                false,
            );
            let _ = reply.send(released);
            false
        }
    }
}

/// The permit a semaphore's wait took, by index and id, from the rows of
/// its message (the last one answers); else what the wait answered.
fn permit_taken(base: LockId, rows: &[PgRow]) -> Result<(u32, LockId), PermitAnswer> {
    let code = rows
        .last()
        .and_then(|row| row.try_get::<i32, _>(0).ok())
        .unwrap_or(-1);
    match PermitAnswer::from_code(code) {
        PermitAnswer::Taken(index) => Ok((index, permit(base, index))),
        answer => Err(answer),
    }
}

/// Unlocks every advisory lock of a session that held none but those a
/// failed wait may have taken; says whether there was one.
async fn give_back_everything(pg: &mut PgConnection, bound: Duration) -> Result<bool, String> {
    let given_back = async {
        let held: i64 = sqlx::query_scalar(pg_locks::COUNT_HELD_BY_THIS_SESSION)
            .fetch_one(&mut *pg)
            .await?;
        if held > 0 {
            sqlx::raw_sql(UNLOCK_ALL).execute(&mut *pg).await?;
        }
        Ok::<_, sqlx::Error>(held > 0)
    };
    match tokio::time::timeout(bound, given_back).await {
        Ok(Ok(held)) => Ok(held),
        Ok(Err(error)) => Err(format!("the connection failed: {error}")),
        Err(_) => Err(format!("a check did not answer within {bound:?}")),
    }
}

/// Answers the commands still queued for a connection that is gone.
fn fail_queued(commands: &mut mpsc::UnboundedReceiver<Command>) {
    commands.close();
    while let Ok(command) = commands.try_recv() {
        match command {
            Command::Wait { reply, .. } => {
                let _ = reply.send(Err(WaitFailure::Wait(sqlx::Error::WorkerCrashed)));
            }
            Command::Unlock { .. } => {}
            Command::Close { reply } => {
                let _ = reply.send(0);
            }
        }
    }
}

/// `start + by`, or far in the future when that overflows.
fn later(start: tokio::time::Instant, by: Duration) -> tokio::time::Instant {
    start
        .checked_add(by)
        .unwrap_or_else(|| start + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}
