//! The key derivation contract: golden vectors (computed independently of
//! this crate), the same ids computed in plain SQL by the server, and the
//! ids the server shows in `pg_locks` once the locks are held.

mod support;

use pglock::{LockId, LockKey, MAX_PERMITS, Namespace, PermitIds, pg_locks};
use support::*;
use uuid::Uuid;

static BILLING: Namespace = Namespace::named("billing:invoice");
static HAND_WRITTEN: Namespace = Namespace::raw(0x7275_6e6c_9e37_79b9, "runledger:release");
static TENANTS: Namespace = Namespace::named_pair("tenant:migrate");
static RUNLEDGER_PAIR: Namespace = Namespace::raw_pair(0x7275_6e6c, "runledger:pair");

const SAMPLE_UUID: Uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);

/// Pinned values: changing any of them breaks mutual exclusion between two
/// versions of an application. Computed with Python's hashlib, not pglock.
#[test]
fn golden_vectors() {
    assert_eq!(
        BILLING.id(&0_i64),
        LockId::BigInt(5_558_634_376_970_780_694)
    );
    assert_eq!(
        BILLING.id(&SAMPLE_UUID),
        LockId::BigInt(5_482_670_575_855_922_062)
    );
    assert_eq!(
        HAND_WRITTEN.id(&SAMPLE_UUID),
        LockId::BigInt(8_306_618_175_236_723_233)
    );
    assert_eq!("abc".key_value(), -5_010_229_573_455_851_542);
    assert_eq!(BILLING.id(&"abc"), LockId::BigInt(-622_576_209_743_605_764));
    assert_eq!((1_i64, "abc").key_value(), 7_751_033_372_379_519_564);
    assert_eq!(
        BILLING.id(&(1_i64, "abc")),
        LockId::BigInt(2_789_152_357_974_235_738)
    );
    assert_eq!(
        BILLING.id(&-7_i32),
        LockId::BigInt(-5_558_634_376_970_780_689)
    );
    assert_eq!(b"".key_value(), -2_039_914_840_885_289_964);
    assert_eq!(TENANTS.id(&7_i64), LockId::Pair(1_052_899_235, 7));
    assert_eq!(
        TENANTS.id(&0x1_0000_0002_i64),
        LockId::Pair(1_052_899_235, 3)
    );
    assert_eq!(
        RUNLEDGER_PAIR.id(&0x696e_7465_i32),
        LockId::Pair(0x7275_6e6c, 0x696e_7465)
    );
}

#[test]
fn a_uuid_folds_exactly_as_hand_written_code_does() {
    for value in [0_u128, u128::MAX, 0x0123_4567_89ab_cdef_0011_2233_4455_6677] {
        let uuid = Uuid::from_u128(value);
        let folded = (value >> 64) as u64 ^ value as u64 ^ 0x7275_6e6c_9e37_79b9;
        assert_eq!(HAND_WRITTEN.id(&uuid), LockId::BigInt(folded as i64));
    }
}

#[test]
fn equal_numbers_lock_equal_ids_across_integer_types() {
    assert_eq!(BILLING.id(&42_u8), BILLING.id(&42_i64));
    assert_eq!(BILLING.id(&-42_i16), BILLING.id(&-42_i128));
    assert_eq!(BILLING.id(&42_usize), BILLING.id(&42_u128));
    assert_eq!(BILLING.id(&"x"), BILLING.id(&String::from("x")));
    assert_eq!(BILLING.id(&b"x"[..]), BILLING.id(&"x"));
}

/// The SQL an operator runs in psql to compute an id, as `docs/KEYS.md`
/// states it.
const SQL_NAMESPACE: &str =
    "('x' || left(encode(sha256(convert_to($1::text, 'UTF8')), 'hex'), 16))::bit(64)::int8";

#[tokio::test]
async fn the_server_computes_the_same_ids_in_plain_sql() {
    let pool = pool().await;
    let names = ["billing:invoice", "a", "ünïcödé:κλειδί", &"long".repeat(40)];
    for name in names {
        let ns = Namespace::try_named(name).unwrap();
        for _ in 0..20 {
            let uuid = Uuid::new_v4();
            let sql = format!(
                "SELECT (('x' || left(replace($2::text, '-', ''), 16))::bit(64)::int8 \
                       # ('x' || right(replace($2::text, '-', ''), 16))::bit(64)::int8) \
                       # {SQL_NAMESPACE}"
            );
            let by_server: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(name)
                .bind(uuid.to_string())
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(ns.id(&uuid), LockId::BigInt(by_server), "{name} {uuid}");

            let text = uuid.to_string()[..(uuid.as_bytes()[0] % 36) as usize].to_owned();
            let sql = format!(
                "SELECT ('x' || left(encode(sha256(convert_to($2::text, 'UTF8')), 'hex'), 16))::bit(64)::int8 \
                       # {SQL_NAMESPACE}"
            );
            let by_server: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(name)
                .bind(&text)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(ns.id(&text), LockId::BigInt(by_server), "{name} {text:?}");

            let number = uuid.as_u64_pair().0 as i64;
            let sql = format!(
                "SELECT ('x' || left(encode(sha256(int8send($2::int8) || int8send( \
                    ('x' || left(encode(sha256(convert_to($3::text, 'UTF8')), 'hex'), 16))::bit(64)::int8)), 'hex'), 16))::bit(64)::int8 \
                  # {SQL_NAMESPACE}"
            );
            let by_server: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(name)
                .bind(number)
                .bind(&text)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(
                ns.id(&(number, text.as_str())),
                LockId::BigInt(by_server),
                "{name} ({number}, {text:?})"
            );
        }
    }
}

#[tokio::test]
async fn the_server_computes_the_same_pair_ids_in_plain_sql() {
    let pool = pool().await;
    for _ in 0..50 {
        let value = Uuid::new_v4().as_u64_pair().0 as i64 >> (Uuid::new_v4().as_bytes()[0] % 64);
        let (class, object): (i32, i32) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT ({SQL_NAMESPACE} >> 32)::int4, \
                    CASE WHEN $2::int8 BETWEEN -2147483648 AND 2147483647 THEN $2::int4 \
                         ELSE (($2::int8 >> 32) # $2::int8)::bit(32)::int4 END"
        )))
        .bind("tenant:migrate")
        .bind(value)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(TENANTS.id(&value), LockId::Pair(class, object), "{value}");
    }
}

#[tokio::test]
async fn sha256_matches_the_server_at_every_padding_boundary() {
    let pool = pool().await;
    for len in [0_usize, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let by_server: i64 = sqlx::query_scalar(
            "SELECT ('x' || left(encode(sha256($1::bytea), 'hex'), 16))::bit(64)::int8",
        )
        .bind(&bytes)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(bytes.key_value(), by_server, "length {len}");
    }
}

#[tokio::test]
async fn pg_locks_shows_the_bigint_id_as_classid_and_objid() {
    let pool = pool().await;
    let ns = namespace("pg_locks_bigint");
    let key = Uuid::new_v4();
    let mut tx = pool.begin().await.unwrap();
    ns.lock(&key).acquire(&mut tx).await.unwrap();
    let pid = backend_pid(&mut tx).await;
    let rows: Vec<(i64, i16)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {}, l.objsubid FROM pg_locks l \
         WHERE l.locktype = 'advisory' AND l.pid = $1",
        pg_locks::ENCODED
    )))
    .bind(pid)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows, vec![(ns.id(&key).bigint().unwrap(), 1)]);
}

#[tokio::test]
async fn pg_locks_shows_a_pair_id_with_objsubid_2() {
    let pool = pool().await;
    let mut tx = pool.begin().await.unwrap();
    let key = 0x696e_7465_i32;
    RUNLEDGER_PAIR.lock(&key).acquire(&mut tx).await.unwrap();
    TENANTS
        .lock(&-3_i64)
        .shared()
        .acquire(&mut tx)
        .await
        .unwrap();
    let pid = backend_pid(&mut tx).await;
    let rows: Vec<(i64, i64, i16, String)> = sqlx::query_as(
        "SELECT l.classid::int8, l.objid::int8, l.objsubid, l.mode FROM pg_locks l \
         WHERE l.locktype = 'advisory' AND l.pid = $1 ORDER BY l.classid",
    )
    .bind(pid)
    .fetch_all(&pool)
    .await
    .unwrap();
    let LockId::Pair(tenant_class, tenant_object) = TENANTS.id(&-3_i64) else {
        unreachable!()
    };
    let mut expected = vec![
        (
            0x7275_6e6c_i64,
            0x696e_7465_i64,
            2_i16,
            "ExclusiveLock".to_owned(),
        ),
        (
            i64::from(tenant_class as u32),
            i64::from(tenant_object as u32),
            2,
            "ShareLock".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(rows, expected);
    // The runtime's decoding reads the same rows back as the ids it locked.
    let decoded: Vec<Option<LockId>> = rows
        .iter()
        .map(|(classid, objid, objsubid, _)| pg_locks::decode(classid << 32 | objid, *objsubid))
        .collect();
    assert!(decoded.contains(&Some(RUNLEDGER_PAIR.id(&key))));
    assert!(decoded.contains(&Some(TENANTS.id(&-3_i64))));
    // Pair locks wait and time out like bigint ones.
    let mut other = pool.begin().await.unwrap();
    let error = RUNLEDGER_PAIR
        .lock(&key)
        .timeout(std::time::Duration::from_millis(50))
        .acquire(&mut other)
        .await
        .unwrap_err();
    assert_eq!(
        error.as_conflict().unwrap().lock().id(),
        LockId::Pair(0x7275_6e6c, key)
    );
}

/// A semaphore's permits, pinned: computed by `psql` with the SQL of
/// `docs/KEYS.md` section 4, not by pglock.
#[test]
fn permit_golden_vectors() {
    let bigint = |ns: &Namespace, key: &dyn Fn(&Namespace) -> LockId, expected: [i64; 4]| {
        let permits = PermitIds::new(key(ns), MAX_PERMITS).unwrap();
        let ids: Vec<LockId> = [0, 1, 3, 1023]
            .map(|index| permits.get(index).unwrap())
            .to_vec();
        assert_eq!(ids, expected.map(LockId::BigInt).to_vec());
        assert_eq!(permits.base(), LockId::BigInt(expected[0]));
    };
    bigint(
        &BILLING,
        &|ns| ns.id(&0_i64),
        [
            -8_123_215_699_107_237_888,
            -8_123_215_699_107_237_887,
            -8_123_215_699_107_237_885,
            -8_123_215_699_107_236_865,
        ],
    );
    bigint(
        &BILLING,
        &|ns| ns.id(&SAMPLE_UUID),
        [
            -453_700_161_575_838_720,
            -453_700_161_575_838_719,
            -453_700_161_575_838_717,
            -453_700_161_575_837_697,
        ],
    );
    bigint(
        &BILLING,
        &|ns| ns.id(&"abc"),
        [
            -2_722_051_873_036_588_032,
            -2_722_051_873_036_588_031,
            -2_722_051_873_036_588_029,
            -2_722_051_873_036_587_009,
        ],
    );
    let tenants = TENANTS.permit_ids(&7_i64, 1024).unwrap();
    assert_eq!(
        [0, 1, 3, 1023].map(|index| tenants.get(index).unwrap()),
        [
            LockId::Pair(1_052_899_235, 1_368_715_264),
            LockId::Pair(1_052_899_235, 1_368_715_265),
            LockId::Pair(1_052_899_235, 1_368_715_267),
            LockId::Pair(1_052_899_235, 1_368_716_287),
        ]
    );
    let runledger = RUNLEDGER_PAIR.permit_ids(&0x696e_7465_i32, 4).unwrap();
    assert_eq!(
        runledger.iter().collect::<Vec<_>>(),
        [
            -1_322_048_512,
            -1_322_048_511,
            -1_322_048_510,
            -1_322_048_509
        ]
        .map(|id| LockId::Pair(1_920_298_604, id))
    );
    // N does not change a permit's id; the key's own lock is not a permit.
    assert_eq!(
        BILLING.permit_ids(&0_i64, 2).unwrap().get(1),
        BILLING.permit_ids(&0_i64, 900).unwrap().get(1)
    );
    assert_eq!(
        BILLING
            .permit_ids(&0_i64, 2)
            .unwrap()
            .index_of(BILLING.id(&0_i64)),
        None
    );
    for permits in [0, 1025, u32::MAX] {
        assert!(matches!(
            BILLING.permit_ids(&0_i64, permits),
            Err(pglock::Error::InvalidPermits { permits: p }) if p == permits
        ));
    }
}

/// The SQL of `docs/KEYS.md` section 4: permit `$2` of the semaphore on the
/// bigint key id `$1`, and of the pair key id `($1, $2)` with index `$3`.
const SQL_PERMIT: &str = "((('x' || left(encode(sha256(int8send($1::int8) \
     || convert_to('pglock:permit', 'UTF8')), 'hex'), 16))::bit(64)::int8) & -1024) | $2::int8";
const SQL_PAIR_PERMIT: &str = "(('x' || left(encode(sha256(int4send($1::int4) || int4send($2::int4) \
     || convert_to('pglock:permit', 'UTF8')), 'hex'), 8))::bit(32)::int4 & -1024) | $3::int4";

#[tokio::test]
async fn the_server_computes_the_same_permit_ids_in_plain_sql() {
    let pool = pool().await;
    let ns = namespace("permit_sql");
    for round in 0..40_u32 {
        let key = Uuid::new_v4();
        let index = (round * 97) % MAX_PERMITS;
        let permits = ns.permit_ids(&key, MAX_PERMITS).unwrap();
        let key_id = ns.id(&key).bigint().unwrap();
        let by_server: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {SQL_PERMIT}")))
                .bind(key_id)
                .bind(i64::from(index))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            permits.get(index),
            Some(LockId::BigInt(by_server)),
            "{key} {index}"
        );

        let pair_key = key.as_u64_pair().1 as i64 >> (round % 64);
        let LockId::Pair(class, object) = TENANTS.id(&pair_key) else {
            unreachable!()
        };
        let by_server: i32 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {SQL_PAIR_PERMIT}")))
                .bind(class)
                .bind(object)
                .bind(index as i32)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            TENANTS
                .permit_ids(&pair_key, MAX_PERMITS)
                .unwrap()
                .get(index),
            Some(LockId::Pair(class, by_server)),
            "{pair_key} {index}"
        );
    }
}

/// `pg_locks::PERMITS_OF` finds exactly a semaphore's permits, held as
/// plain locks on their ids, and `PERMIT_INDEX` reads their index, in both
/// key spaces.
#[tokio::test]
async fn pg_locks_finds_every_permit_of_a_semaphore_by_its_base() {
    let pool = pool().await;
    let ns = namespace("permits_of");
    let bigint = ns.permit_ids(&1_i64, 8).unwrap();
    let pair = TENANTS.permit_ids(&Uuid::new_v4(), 8).unwrap();
    let mut tx = pool.begin().await.unwrap();
    for (permits, indexes) in [(bigint, [0_u32, 5, 7]), (pair, [1, 2, 6])] {
        for index in indexes {
            let (encoded, objsubid) = pg_locks::encode(permits.get(index).unwrap());
            let sql = match objsubid {
                1 => "SELECT pg_advisory_xact_lock($1::int8)",
                _ => {
                    "SELECT pg_advisory_xact_lock(($1::int8 >> 32)::int4, $1::int8::bit(32)::int4)"
                }
            };
            sqlx::query(sql)
                .bind(encoded)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        // The key's own lock and another semaphore's permit are not found.
        ns.lock(&1_i64).acquire(&mut tx).await.unwrap();
        let other = ns.permit_ids(&2_i64, 1).unwrap().base();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(other.bigint().unwrap())
            .execute(&mut *tx)
            .await
            .unwrap();
        let (encoded, objsubid) = pg_locks::encode(permits.base());
        let found: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM pg_locks l WHERE {} AND l.granted ORDER BY 1",
            pg_locks::PERMIT_INDEX,
            pg_locks::PERMITS_OF
        )))
        .bind(encoded)
        .bind(objsubid)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(found, indexes.map(|index| index as i32).to_vec());
    }
}
