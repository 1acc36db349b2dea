//! No value a caller passes can change the SQL pglock sends: keys are bound
//! parameters, a namespace name that could end the marker's comment is
//! refused, and every label (a raw namespace's is not checked) reaches the
//! SQL only through a sanitised marker. Every path that builds SQL text is tried: the prepared try,
//! the capped wait, the savepoint wait and the session wait.

mod support;

use std::time::Duration;

use pglock::{LockId, LockKey, Mode, Namespace, testing};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::*;

fn hostile_strings() -> Vec<String> {
    vec![
        "*/ DROP TABLE hostile_canary; /*".to_owned(),
        "'; DROP TABLE hostile_canary; --".to_owned(),
        "nul\0byte".to_owned(),
        "new\nline\r\nand\ttab".to_owned(),
        "$1 $2 $$ $tag$ \\ \" ' `".to_owned(),
        "\u{202e}right-to-left\u{200b}zero-width".to_owned(),
        "*/".repeat(5_000),
    ]
}

/// A namespace known by `hostile`: named by it when the namespace-name rule
/// accepts it, else a raw namespace labelled with it (a label is not
/// checked; the marker sanitises it).
fn hostile_namespace(hostile: &str) -> Namespace {
    Namespace::try_named(hostile).unwrap_or_else(|_| {
        let label: &'static str = Box::leak(hostile.to_owned().into_boxed_str());
        Namespace::raw(0x686f_7374_696c_6521, label)
    })
}

/// The query text a backend waits in: pglock's marker must be first, and
/// the only comment terminator must be the marker's own.
async fn waiting_query(pool: &sqlx::PgPool, pid: i32) -> String {
    sqlx::query_scalar("SELECT query FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn assert_marker_is_sealed(query: &str) {
    assert!(query.starts_with("/* pglock ns="), "{query}");
    assert_eq!(query.matches("*/").count(), 1, "{query}");
    let marker_end = query.find(" */").unwrap();
    assert!(
        !query[..marker_end].chars().any(char::is_control),
        "{query:?}"
    );
    assert!(marker_end < 100, "the marker is bounded: {query}");
}

#[tokio::test]
async fn hostile_namespace_names_and_keys_change_nothing_but_the_lock_id() {
    let pool = pool().await;
    sqlx::query("CREATE TABLE IF NOT EXISTS hostile_canary (v int)")
        .execute(&pool)
        .await
        .unwrap();
    for hostile in hostile_strings() {
        let ns: &'static Namespace = Box::leak(Box::new(hostile_namespace(&hostile)));
        let key = hostile.clone();
        let id = ns.id(&key);

        // The prepared try, uncontended.
        let mut tx = pool.begin().await.unwrap();
        ns.lock(&key).acquire(&mut tx).await.unwrap();
        testing::assert_holds(&mut tx, ns, &key, Mode::Exclusive).await;

        // Waits, contended: capped, then (the lock now found busy) tried and
        // waited for in one statement, in a savepoint, and at session level.
        for variant in ["capped", "one statement", "savepoint", "session"] {
            let waiter_pool = pool.clone();
            let waiter_key = key.clone();
            let waiter = tokio::spawn(async move {
                match variant {
                    "capped" | "one statement" => {
                        let mut tx = waiter_pool.begin().await.unwrap();
                        ns.lock(&waiter_key)
                            .timeout(Duration::from_secs(30))
                            .acquire(&mut tx)
                            .await
                            .map(drop)
                    }
                    "savepoint" => {
                        let mut tx = waiter_pool.begin().await.unwrap();
                        ns.lock(&waiter_key)
                            .timeout(Duration::from_secs(30))
                            .in_savepoint()
                            .acquire(&mut tx)
                            .await
                            .map(drop)
                    }
                    _ => {
                        let guard = ns
                            .session_lock(&waiter_key)
                            .timeout(Duration::from_secs(30))
                            .acquire(waiter_pool.acquire().await.unwrap())
                            .await?;
                        guard.release().await.map(drop)
                    }
                }
            });
            let waiter_pid = wait_for_waiters(&pool, id, 1).await[0];
            assert_marker_is_sealed(&waiting_query(&pool, waiter_pid).await);
            // Let it through by ending the holder's transaction, then take
            // the lock again for the next variant.
            tx.commit().await.unwrap();
            waiter
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{variant}: {e}"));
            tx = pool.begin().await.unwrap();
            ns.lock(&key).acquire(&mut tx).await.unwrap();
        }
        tx.commit().await.unwrap();

        let canary: i64 = sqlx::query_scalar("SELECT count(*) FROM hostile_canary")
            .fetch_one(&pool)
            .await
            .expect("the canary table is still there");
        assert_eq!(canary, 0);
        assert_eq!(id, hostile_namespace(&hostile).id(&key));
    }
}

#[test]
fn a_refused_runtime_namespace_name_is_a_typed_error() {
    for name in ["", "*/ DROP TABLE hostile_canary; /*", "new\nline"] {
        assert!(
            matches!(
                Namespace::try_named(name),
                Err(pglock::Error::InvalidNamespace { .. })
            ),
            "{name:?}"
        );
    }
}

/// Random keys of every kind, computed by the server in plain SQL, equal
/// pglock's ids: the fold is deterministic and reproducible.
#[test]
fn the_key_fold_equals_its_sql_reproduction_on_random_inputs() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = runtime.block_on(pool());
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    // Names the namespace-name rule accepts: something visible, no control
    // character, no comment delimiter.
    let name = "[^\\p{Cc}*]{0,19}[^\\p{Cc}*\\s]";
    let inputs = (".{0,40}", any::<i64>(), any::<u128>(), name);
    runner
        .run(&inputs, |(text, number, uuid_bits, name)| {
            let ns = Namespace::try_named(name.clone()).unwrap();
            let uuid = uuid::Uuid::from_u128(uuid_bits);
            let (by_text, by_number, by_uuid, by_tuple): (i64, i64, i64, i64) = runtime
                .block_on(
                    sqlx::query_as(
                        "WITH ns AS (SELECT ('x' || left(encode(sha256($1::bytea), 'hex'), 16))::bit(64)::int8 AS mask), \
                              v AS (SELECT ('x' || left(encode(sha256($2::bytea), 'hex'), 16))::bit(64)::int8 AS text_value) \
                         SELECT v.text_value # ns.mask, \
                                $3::int8 # ns.mask, \
                                (('x' || left(replace($4::text, '-', ''), 16))::bit(64)::int8 \
                                  # ('x' || right(replace($4::text, '-', ''), 16))::bit(64)::int8) # ns.mask, \
                                ('x' || left(encode(sha256(int8send($3::int8) || int8send(v.text_value)), 'hex'), 16))::bit(64)::int8 # ns.mask \
                         FROM ns, v",
                    )
                    // As bytes: text values can't carry NUL, keys can.
                    .bind(name.as_bytes())
                    .bind(text.as_bytes())
                    .bind(number)
                    .bind(uuid.to_string())
                    .fetch_one(&pool),
                )
                .unwrap();
            prop_assert_eq!(ns.id(&text), LockId::BigInt(by_text));
            prop_assert_eq!(ns.id(&number), LockId::BigInt(by_number));
            prop_assert_eq!(ns.id(&uuid), LockId::BigInt(by_uuid));
            prop_assert_eq!(ns.id(&(number, text.as_str())), LockId::BigInt(by_tuple));
            prop_assert_eq!(text.key_value(), text.clone().key_value(), "deterministic");
            Ok(())
        })
        .unwrap();
}
