//! `pglock id`: docs/KEYS.md's golden vectors, the printed SQL run on the
//! server, and a clear line for every bad input.

mod support;

use pglock::{Mode, Namespace};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use support::{TestDatabase, assert_fails, pglock, server_url};

const UUID: &str = "01234567-89ab-cdef-0011-223344556677";

/// What `pglock id` printed: the id, and its two statements.
struct Printed {
    id: String,
    find: String,
    compute: String,
}

fn id(args: &[&str]) -> Printed {
    let mut all = vec!["id"];
    all.extend(args);
    let run = pglock(&all, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "");
    let id = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("lock id    "))
        .unwrap_or_else(|| panic!("a lock id line: {}", run.stdout))
        .to_owned();
    let statement = |heading: &str| -> String {
        let start = run.stdout.find(heading).expect(heading) + heading.len();
        let rest = &run.stdout[start..];
        rest[..rest.find("\n\n").unwrap_or(rest.len())]
            .trim()
            .to_owned()
    };
    Printed {
        id,
        find: statement("-- who holds or waits for it\n"),
        compute: statement("-- the id, computed by the server (docs/KEYS.md)\n"),
    }
}

#[test]
fn ids_match_the_golden_vectors_of_docs_keys_md() {
    let vectors: [(&[&str], &str); 12] = [
        (&["billing:invoice", "0"], "5558634376970780694"),
        (&["billing:invoice", UUID], "5482670575855922062"),
        (
            &["billing:invoice", UUID, "--type", "uuid"],
            "5482670575855922062",
        ),
        (
            &["runledger:release", UUID, "--raw", "0x7275_6e6c_9e37_79b9"],
            "8306618175236723233",
        ),
        (
            &["billing:invoice", "abc", "--type", "str"],
            "-622576209743605764",
        ),
        (
            &["billing:invoice", "1", "abc", "--type", "int,str"],
            "2789152357974235738",
        ),
        (&["billing:invoice", "-7"], "-5558634376970780689"),
        (&["tenant:migrate", "7", "--pair"], "(1052899235, 7)"),
        (
            &["tenant:migrate", "0x1_0000_0002", "--pair"],
            "(1052899235, 3)",
        ),
        (
            &["runledger", "0x696e_7465", "--pair", "--raw", "0x7275_6e6c"],
            "(1920298604, 1768846437)",
        ),
        // Key values alone: a raw mask of 0 leaves them as they are.
        (
            &["values", "abc", "--type", "str", "--raw", "0"],
            "-5010229573455851542",
        ),
        (
            &["values", "", "--type", "bytes", "--raw", "0"],
            "-2039914840885289964",
        ),
    ];
    for (args, expected) in vectors {
        assert_eq!(id(args).id, expected, "pglock id {}", args.join(" "));
    }
    assert_eq!(
        id(&[
            "values", "1", "abc", "--type", "int", "--type", "str", "--raw", "0"
        ])
        .id,
        "7751033372379519564"
    );
}

#[tokio::test]
async fn the_printed_sql_computes_the_same_id_on_the_server() {
    let mut conn = PgConnection::connect(&server_url()).await.unwrap();
    let cases: [&[&str]; 14] = [
        &["billing:invoice", "0"],
        &["billing:invoice", UUID],
        &["runledger:release", UUID, "--raw", "0x7275_6e6c_9e37_79b9"],
        &["billing:invoice", "it's \\ odd", "--type", "str"],
        &["billing:invoice", "deadbeef", "--type", "bytes"],
        &[
            "billing:invoice",
            "1",
            "abc",
            UUID,
            "--type",
            "int,str,uuid",
        ],
        &["billing:invoice", "-9223372036854775808"],
        &["billing:invoice", "18446744073709551615"],
        &[
            "billing:invoice",
            "-170141183460469231731687303715884105728",
        ],
        &["o'brien", "42"],
        &["tenant:migrate", "7", "--pair"],
        &["tenant:migrate", "0x1_0000_0002", "--pair"],
        &["tenant:migrate", UUID, "--pair"],
        &["runledger", "0x696e_7465", "--pair", "--raw", "0xffff_ffff"],
    ];
    for args in cases {
        let printed = id(args);
        let computed = if printed.id.starts_with('(') {
            let (class, key): (i32, i32) =
                sqlx::query_as(sqlx::AssertSqlSafe(printed.compute.clone()))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{e}: {}", printed.compute));
            format!("({class}, {key})")
        } else {
            let id: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(printed.compute.clone()))
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{e}: {}", printed.compute));
            id.to_string()
        };
        assert_eq!(
            computed,
            printed.id,
            "pglock id {}\n{}",
            args.join(" "),
            printed.compute
        );
    }
}

#[tokio::test]
async fn the_printed_pg_locks_query_finds_the_holder() {
    static INVOICES: Namespace = Namespace::named("billing:invoice");
    static TENANTS: Namespace = Namespace::named_pair("tenant:migrate");
    let database = TestDatabase::create().await;
    let (mut tx, pid) = database.begin("cli-id").await;
    INVOICES.lock(&i64::MIN).acquire(&mut tx).await.unwrap();
    TENANTS
        .lock(&0x1_0000_0002_i64)
        .with_mode(Mode::Shared)
        .acquire(&mut tx)
        .await
        .unwrap();

    let mut observer = database.connect("cli-observer").await;
    for (args, mode) in [
        (
            &["billing:invoice", "-9223372036854775808"][..],
            "ExclusiveLock",
        ),
        (&["tenant:migrate", "4294967298", "--pair"][..], "ShareLock"),
    ] {
        let printed = id(args);
        let rows: Vec<(i32, String, bool)> =
            sqlx::query_as(sqlx::AssertSqlSafe(printed.find.clone()))
                .fetch_all(&mut observer)
                .await
                .unwrap_or_else(|e| panic!("{e}: {}", printed.find));
        assert_eq!(rows, [(pid, mode.to_owned(), true)], "{}", printed.find);
    }
    let printed = id(&["billing:invoice", "1"]);
    let rows: Vec<(i32, String, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(printed.find))
        .fetch_all(&mut observer)
        .await
        .unwrap();
    assert!(rows.is_empty(), "nobody holds key 1");

    tx.rollback().await.unwrap();
    drop(observer);
    database.drop_now().await;
}

/// An advisory lock is a database's: the same id held in another database
/// is another lock, which the printed query does not list.
#[tokio::test]
async fn the_printed_pg_locks_query_lists_this_databases_holders_only() {
    static ORDERS: Namespace = Namespace::named("cli:id:databases");
    let (here, elsewhere) = (TestDatabase::create().await, TestDatabase::create().await);
    let (mut tx_here, pid_here) = here.begin("cli-id-here").await;
    let (mut tx_elsewhere, _) = elsewhere.begin("cli-id-elsewhere").await;
    ORDERS.lock(&5_i64).acquire(&mut tx_here).await.unwrap();
    ORDERS
        .lock(&5_i64)
        .acquire(&mut tx_elsewhere)
        .await
        .unwrap();

    let printed = id(&["cli:id:databases", "5"]);
    let mut observer = here.connect("cli-observer").await;
    let rows: Vec<(i32, String, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(printed.find.clone()))
        .fetch_all(&mut observer)
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", printed.find));
    assert_eq!(
        rows,
        [(pid_here, "ExclusiveLock".to_owned(), true)],
        "{}",
        printed.find
    );

    tx_here.rollback().await.unwrap();
    tx_elsewhere.rollback().await.unwrap();
    drop(observer);
    here.drop_now().await;
    elsewhere.drop_now().await;
}

#[test]
fn a_bad_uuid_is_refused_in_one_line() {
    let run = pglock(
        &["id", "billing:invoice", "0123-4567", "--type", "uuid"],
        &[],
    );
    assert_fails(&run, 2, "key `0123-4567` is not a uuid");
}

#[test]
fn an_integer_out_of_range_is_refused_in_one_line() {
    let run = pglock(
        &[
            "id",
            "billing:invoice",
            "340282366920938463463374607431768211456",
        ],
        &[],
    );
    assert_fails(
        &run,
        2,
        "is out of range: an integer key fits in an i128 or a u128",
    );
    let run = pglock(
        &[
            "id",
            "billing:invoice",
            "-170141183460469231731687303715884105729",
            "--type",
            "int",
        ],
        &[],
    );
    assert_fails(&run, 2, "is out of range");
}

#[test]
fn a_bad_hex_mask_is_refused_in_one_line() {
    let run = pglock(&["id", "x", "1", "--raw", "0x7275_6e6c_9e37_79bz"], &[]);
    assert_fails(
        &run,
        2,
        "--raw `0x7275_6e6c_9e37_79bz` is not a 64-bit mask in hex",
    );
    let run = pglock(&["id", "x", "1", "--raw", "0x1_0000_0000_0000_0000"], &[]);
    assert_fails(&run, 2, "give 1 to 16 hex digits");
    let run = pglock(&["id", "x", "1", "--pair", "--raw", "0x1_0000_0000"], &[]);
    assert_fails(
        &run,
        2,
        "is not a 32-bit mask in hex: give 1 to 8 hex digits",
    );
}

#[test]
fn other_bad_keys_are_refused_in_one_line() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["id", "billing:invoice", "abc"],
            "is neither an integer nor a uuid: for a string key add --type str",
        ),
        (
            &["id", "billing:invoice", "12ab", "--type", "int"],
            "key `12ab` is not an integer",
        ),
        (
            &["id", "billing:invoice", "xyz", "--type", "bytes"],
            "key `xyz` is not bytes in hex",
        ),
        (&["id", "", "1"], "a namespace name can't be empty"),
        (
            &["id", "a */ b", "1", "--pair"],
            "a namespace name can't contain `*/`",
        ),
        (
            &["id", "ns", "1", "2", "--type", "int,int,int"],
            "3 --type values for 2 key values",
        ),
    ];
    for (args, expected) in cases {
        assert_fails(&pglock(args, &[]), 2, expected);
    }
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        &["id", "billing:invoice"][..],
        &["id", "ns", "1", "--type", "float"],
        &["id", "ns", "1", "2", "3", "4", "5"],
        &["locks", "--no-such-option"],
        &["watch", "--interval", "5"],
        &["watch", "--interval", "10ms"],
        &["check", "--wait", "soon"],
        &["check", "--wait", "15m"],
    ] {
        let run = pglock(args, &[]);
        assert_eq!(run.code, 2, "pglock {}: {run:?}", args.join(" "));
        assert!(run.stderr.starts_with("error: "), "{run:?}");
    }
    let bare = pglock(&[], &[]);
    assert_eq!(bare.code, 2, "{bare:?}");
    assert!(bare.stderr.contains("Usage: pglock <COMMAND>"), "{bare:?}");
}
