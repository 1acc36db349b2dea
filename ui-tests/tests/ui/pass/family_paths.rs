//! Every way to lock through a `LockFamily<K>` takes `K` (or `&K`), and the
//! family's namespace stays reachable for keys of another type, by name.
use pglock::{CheckOptions, LockFamily, Namespace, XactLockSet};

static USERS: LockFamily<i64> = LockFamily::named("accounts:user");
static NAMES: LockFamily<str> = LockFamily::named("accounts:name");
static BOOKS: Namespace = Namespace::named("ledger:book");

async fn transaction(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock::Error> {
    USERS.lock(&7).acquire(tx).await?;
    USERS.lock_many([1, 2]).acquire(tx).await?;
    USERS.lock_many(&[3, 4]).acquire(tx).await?;
    NAMES.lock("alice").acquire(tx).await?;
    NAMES.lock_many(["alice", "bob"]).acquire(tx).await?;
    XactLockSet::new()
        .exclusive(&USERS, &5)
        .shared(&NAMES, "carol")
        .shared(&BOOKS, &(2026, "q1"))
        .acquire(tx)
        .await?;
    USERS.namespace().lock("by name, on purpose").acquire(tx).await?;
    Ok(())
}

async fn session(conn: sqlx::PgConnection, other: sqlx::PgConnection) -> Result<(), pglock::Error> {
    USERS.session_lock(&7).acquire(conn).await?.release().await?;
    let lease = USERS
        .session_lock(&8)
        .acquire_lease(other, CheckOptions::default())
        .await?;
    lease.release().await?;
    Ok(())
}

async fn run(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    USERS
        .lock(&9)
        .run(pool, |_tx| Box::pin(async { Ok::<_, pglock::Error>(()) }))
        .await
}

fn main() {
    let _ = (USERS.id(&1), NAMES.id("alice"), USERS.label());
    let _ = (transaction, session, run);
}
