//! `pglock id`: the lock id of a key, computed by the library itself, with
//! the SQL that finds it in `pg_locks` and the SQL that computes it on the
//! server (docs/KEYS.md's recipe, filled in).

use std::fmt::Write as _;
use std::num::IntErrorKind;

use pglock_runtime::{LockId, LockKey, Namespace, PermitIds, pg_locks};
use uuid::Uuid;

use crate::args::{IdArgs, KeyType};
use crate::failure::Failure;

/// Prints what `pglock id` prints, or why the input is refused.
pub(crate) fn run(args: &IdArgs) -> Result<String, Failure> {
    let space = KeySpace::from_args(args)?;
    let values = read_key(&args.key, &args.types)?;
    let namespace = space.namespace(&args.namespace)?;
    let id = match values.as_slice() {
        [a] => namespace.id(a),
        [a, b] => namespace.id(&(a, b)),
        [a, b, c] => namespace.id(&(a, b, c)),
        [a, b, c, d] => namespace.id(&(a, b, c, d)),
        // clap takes one to four values.
        _ => return Err(Failure::usage("a key has one to four values")),
    };

    let mut out = String::new();
    let _ = writeln!(out, "namespace  {} ({})", args.namespace, space.describe());
    let _ = writeln!(
        out,
        "key        {}",
        values
            .iter()
            .map(KeyValue::describe)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "lock id    {id}");
    let _ = writeln!(out);
    let _ = writeln!(out, "-- who holds or waits for it");
    let _ = writeln!(out, "{}", find_in_pg_locks(id));
    let _ = writeln!(out);
    let _ = writeln!(out, "-- the id, computed by the server (docs/KEYS.md)");
    let _ = writeln!(out, "{}", space.compute_sql(&args.namespace, &values));
    if let Some(permits) = args.permits {
        let ids = PermitIds::new(id, permits)
            .map_err(|error| Failure::usage(format!("--permits: {error}")))?;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "semaphore  {permits} permit(s): permit 0 {}, permit {} {}",
            ids.base(),
            permits - 1,
            ids.get(permits - 1).unwrap_or(ids.base())
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "-- its held permits (docs/KEYS.md, section 4)");
        let _ = writeln!(out, "{}", find_permits_in_pg_locks(ids));
    }
    Ok(out)
}

/// The statement that lists the held permits of a semaphore, by index and
/// holder: the library's own condition, with its parameters filled in. (A
/// holder that gives a larger N holds permits past N: they are listed.)
fn find_permits_in_pg_locks(ids: PermitIds) -> String {
    let (encoded, objsubid) = pg_locks::encode(ids.base());
    let condition = pg_locks::PERMITS_OF
        .replace("$1", &format!("({encoded})"))
        .replace("$2", &objsubid.to_string());
    format!(
        "SELECT {} AS permit, l.pid FROM pg_catalog.pg_locks l\nWHERE {condition} AND l.granted\n  \
         AND {THIS_DATABASE}\nORDER BY 1;",
        pg_locks::PERMIT_INDEX,
    )
}

/// The statement that lists the backends holding or awaiting `id`: the
/// library's own condition, with its parameters filled in.
fn find_in_pg_locks(id: LockId) -> String {
    let (encoded, objsubid) = pg_locks::encode(id);
    // Parenthesised: `-9223372036854775808::int8` would cast before negating.
    let condition = pg_locks::MATCHES
        .replace("$1", &format!("({encoded})"))
        .replace("$2", &objsubid.to_string());
    format!(
        "SELECT l.pid, l.mode, l.granted FROM pg_catalog.pg_locks l\nWHERE {condition}\n  AND {THIS_DATABASE};"
    )
}

/// An advisory lock is its database's: the same id in another database is
/// another lock.
const THIS_DATABASE: &str = "l.database = (SELECT d.oid FROM pg_catalog.pg_database d \
     WHERE d.datname = pg_catalog.current_database())";

/// Which key space, and which namespace value in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeySpace {
    Named,
    NamedPair,
    Raw(u64),
    RawPair(i32),
}

impl KeySpace {
    fn from_args(args: &IdArgs) -> Result<Self, Failure> {
        match (&args.raw, args.pair) {
            (None, false) => Ok(Self::Named),
            (None, true) => Ok(Self::NamedPair),
            (Some(mask), false) => Ok(Self::Raw(parse_mask(mask, 64)?)),
            // The class's 32 bits, reinterpreted as the int4 PostgreSQL takes.
            (Some(mask), true) => Ok(Self::RawPair(parse_mask(mask, 32)? as u32 as i32)),
        }
    }

    /// The library's namespace, built as a service builds it.
    fn namespace(self, name: &str) -> Result<Namespace, Failure> {
        if matches!(self, Self::Named | Self::NamedPair) {
            // The rule the library and the attribute apply, in their words.
            pglock_grammar::namespace::check(name)
                .map_err(|refused| Failure::usage(refused.message()))?;
        }
        // The constructors take `'static` names, as services declare them;
        // this process computes one id and exits.
        let name = leak(name);
        Ok(match self {
            Self::Named => Namespace::named(name),
            Self::NamedPair => Namespace::named_pair(name),
            Self::Raw(mask) => Namespace::raw(mask, name),
            Self::RawPair(class) => Namespace::raw_pair(class, name),
        })
    }

    fn describe(self) -> String {
        match self {
            Self::Named => "Namespace::named, bigint key space".to_owned(),
            Self::NamedPair => "Namespace::named_pair, int4 pair key space".to_owned(),
            Self::Raw(mask) => format!("Namespace::raw({mask:#018x}), bigint key space"),
            Self::RawPair(class) => {
                format!(
                    "Namespace::raw_pair({:#010x}), int4 pair key space",
                    class as u32
                )
            }
        }
    }

    /// The statement that computes the id on the server from the namespace
    /// name and the key, as docs/KEYS.md shows.
    fn compute_sql(self, name: &str, values: &[KeyValue]) -> String {
        let value = match values {
            [one] => one.sql(),
            members => {
                let bytes: Vec<String> = members
                    .iter()
                    .map(|member| format!("int8send({})", member.sql()))
                    .collect();
                sha256_prefix_int8(&bytes.join(" || "))
            }
        };
        match self {
            Self::Named => format!(
                "SELECT ({value})\n     # ({}) AS id;",
                sha256_prefix_int8(&utf8(name))
            ),
            Self::Raw(mask) => {
                format!("SELECT ({value})\n     # X'{mask:016x}'::bit(64)::int8 AS id;")
            }
            Self::NamedPair | Self::RawPair(_) => {
                let class = match self {
                    Self::RawPair(class) => format!("X'{:08x}'::bit(32)::int4", class as u32),
                    _ => format!(
                        "('x' || left(encode(sha256({}), 'hex'), 8))::bit(32)::int4",
                        utf8(name)
                    ),
                };
                format!(
                    "SELECT {class} AS class,\n       \
                     CASE WHEN v BETWEEN -2147483648 AND 2147483647 THEN v::int4\n            \
                     ELSE ((v >> 32) # v)::bit(32)::int4 END AS key\n\
                     FROM (SELECT {value} AS v) AS k;"
                )
            }
        }
    }
}

fn leak(name: &str) -> &'static str {
    Box::leak(name.to_owned().into_boxed_str())
}

/// One value of a key, read as the type the service uses; the library's
/// own `LockKey` impls give its key value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyValue {
    Int(Int),
    Uuid(Uuid),
    Str(String),
    Bytes(Vec<u8>),
}

/// An integer of any Rust integer type: every type that can hold a number
/// gives it the same key value, so the widest two stand for all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Int {
    Signed(i128),
    Unsigned(u128),
}

impl LockKey for KeyValue {
    fn key_value(&self) -> i64 {
        match self {
            KeyValue::Int(Int::Signed(number)) => number.key_value(),
            KeyValue::Int(Int::Unsigned(number)) => number.key_value(),
            KeyValue::Uuid(uuid) => uuid.key_value(),
            KeyValue::Str(text) => text.key_value(),
            KeyValue::Bytes(bytes) => bytes.key_value(),
        }
    }
}

impl KeyValue {
    fn describe(&self) -> String {
        match self {
            KeyValue::Int(Int::Signed(number)) => format!("{number} (int)"),
            KeyValue::Int(Int::Unsigned(number)) => format!("{number} (int)"),
            KeyValue::Uuid(uuid) => format!("{uuid} (uuid)"),
            KeyValue::Str(text) => format!("{text:?} (str)"),
            KeyValue::Bytes(bytes) => format!("\\x{} (bytes)", hex(bytes)),
        }
    }

    /// The SQL expression of the key value, as docs/KEYS.md writes it.
    fn sql(&self) -> String {
        match self {
            KeyValue::Int(number) => {
                let value = self.key_value();
                let exact = match *number {
                    Int::Signed(n) => i64::try_from(n).is_ok(),
                    Int::Unsigned(n) => i64::try_from(n).is_ok(),
                };
                if exact && value >= 0 {
                    format!("{value}::int8")
                } else if exact {
                    format!("({value})::int8")
                } else {
                    let number = match number {
                        Int::Signed(n) => n.to_string(),
                        Int::Unsigned(n) => n.to_string(),
                    };
                    format!("({value})::int8 /* {number} folded to 64 bits */")
                }
            }
            KeyValue::Uuid(uuid) => format!(
                "(('x' || left(replace('{uuid}'::uuid::text, '-', ''), 16))::bit(64)::int8\n        \
                 # ('x' || right(replace('{uuid}'::uuid::text, '-', ''), 16))::bit(64)::int8)"
            ),
            KeyValue::Str(text) => sha256_prefix_int8(&utf8(text)),
            KeyValue::Bytes(bytes) => sha256_prefix_int8(&format!("'\\x{}'::bytea", hex(bytes))),
        }
    }
}

/// The first 8 bytes of `sha256(bytes)` as a big-endian `int8`, in SQL.
fn sha256_prefix_int8(bytes: &str) -> String {
    format!("('x' || left(encode(sha256({bytes}), 'hex'), 16))::bit(64)::int8")
}

/// The UTF-8 bytes of a text, in SQL.
fn utf8(text: &str) -> String {
    format!("convert_to({}, 'UTF8')", literal(text))
}

/// A SQL string literal of `text`, whatever `standard_conforming_strings`
/// says: a backslash makes it an escape string.
fn literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// Reads each value of the key as its `--type` says (one type for all, or
/// one per value), or, without one, as an integer or a uuid.
fn read_key(texts: &[String], types: &[KeyType]) -> Result<Vec<KeyValue>, Failure> {
    if types.len() > 1 && types.len() != texts.len() {
        return Err(Failure::usage(format!(
            "{} --type values for {} key values: give one type for all, or one per value",
            types.len(),
            texts.len()
        )));
    }
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let key_type = types.get(index).or(types.first()).copied();
            read_value(text, key_type).map_err(Failure::usage)
        })
        .collect()
}

fn read_value(text: &str, key_type: Option<KeyType>) -> Result<KeyValue, String> {
    match key_type {
        Some(KeyType::Int) => read_int(text)?
            .map(KeyValue::Int)
            .ok_or_else(|| format!("key `{text}` is not an integer (decimal, or hex after 0x)")),
        Some(KeyType::Uuid) => read_uuid(text).ok_or_else(|| {
            format!("key `{text}` is not a uuid (such as 01234567-89ab-cdef-0011-223344556677)")
        }),
        Some(KeyType::Str) => Ok(KeyValue::Str(text.to_owned())),
        Some(KeyType::Bytes) => read_hex(text).map(KeyValue::Bytes).ok_or_else(|| {
            format!(
                "key `{text}` is not bytes in hex (such as deadbeef, 0xdeadbeef or \\xdeadbeef)"
            )
        }),
        None => match read_int(text)? {
            Some(number) => Ok(KeyValue::Int(number)),
            None => read_uuid(text).ok_or_else(|| {
                format!(
                    "key `{text}` is neither an integer nor a uuid: \
                     for a string key add --type str, for bytes --type bytes"
                )
            }),
        },
    }
}

/// An integer, decimal or hex (`0x`), `_` between digits allowed; `None`
/// when the text is not an integer at all, an error when it is one that no
/// Rust integer type holds.
fn read_int(text: &str) -> Result<Option<Int>, String> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (radix, digits) = match unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        Some(hex) => (16, hex),
        None => (10, unsigned),
    };
    if digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
        return Ok(None);
    }
    let digits = digits.replace('_', "");
    if digits.starts_with(['+', '-']) {
        return Ok(None);
    }
    let out_of_range = || {
        format!(
            "key `{text}` is out of range: an integer key fits in an i128 or a u128 \
             (-2^127 to 2^128-1)"
        )
    };
    let magnitude = match u128::from_str_radix(&digits, radix) {
        Ok(magnitude) => magnitude,
        Err(error) if *error.kind() == IntErrorKind::PosOverflow => return Err(out_of_range()),
        Err(_) => return Ok(None),
    };
    Ok(Some(if negative {
        if magnitude > i128::MIN.unsigned_abs() {
            return Err(out_of_range());
        }
        Int::Signed((magnitude as i128).wrapping_neg())
    } else {
        match i128::try_from(magnitude) {
            Ok(number) => Int::Signed(number),
            Err(_) => Int::Unsigned(magnitude),
        }
    }))
}

fn read_uuid(text: &str) -> Option<KeyValue> {
    Uuid::try_parse(text).ok().map(KeyValue::Uuid)
}

/// Bytes in hex, optionally after `0x` or `\x` (PostgreSQL's bytea form).
fn read_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("\\x"))
        .unwrap_or(text);
    if !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&digits[at..at + 2], 16).ok())
        .collect()
}

/// A `--raw` mask of at most `bits` bits, in hex.
fn parse_mask(text: &str, bits: u32) -> Result<u64, Failure> {
    let most = bits / 4;
    let example = if bits == 64 {
        "0x7275_6e6c_9e37_79b9"
    } else {
        "0x7275_6e6c"
    };
    let refuse = || {
        Failure::usage(format!(
            "--raw `{text}` is not a {bits}-bit mask in hex: give 1 to {most} hex digits, \
             such as {example}"
        ))
    };
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text)
        .replace('_', "");
    if digits.is_empty()
        || digits.len() > most as usize
        || !digits.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(refuse());
    }
    u64::from_str_radix(&digits, 16).map_err(|_| refuse())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(text: &str) -> Result<Option<Int>, String> {
        read_int(text)
    }

    #[test]
    fn reads_integers_of_every_width() {
        assert_eq!(int("42"), Ok(Some(Int::Signed(42))));
        assert_eq!(int("-7"), Ok(Some(Int::Signed(-7))));
        assert_eq!(int("0x1_0000_0002"), Ok(Some(Int::Signed(0x1_0000_0002))));
        assert_eq!(int("-0x10"), Ok(Some(Int::Signed(-16))));
        assert_eq!(
            int(&u128::MAX.to_string()),
            Ok(Some(Int::Unsigned(u128::MAX)))
        );
        assert_eq!(
            int(&i128::MIN.to_string()),
            Ok(Some(Int::Signed(i128::MIN)))
        );
        assert_eq!(int("abc"), Ok(None));
        assert_eq!(int(""), Ok(None));
        assert_eq!(int("--1"), Ok(None));
        assert_eq!(int("1__0"), Ok(None));
        assert!(int("340282366920938463463374607431768211456").is_err());
        assert!(int("-170141183460469231731687303715884105729").is_err());
    }

    #[test]
    fn equal_numbers_give_equal_key_values_whatever_they_were_read_as() {
        let as_u64 = KeyValue::Int(Int::Unsigned(u128::from(u64::MAX)));
        assert_eq!(as_u64.key_value(), u64::MAX.key_value());
        let big = KeyValue::Int(Int::Signed(1 << 70));
        assert_eq!(big.key_value(), (1_i128 << 70).key_value());
    }

    #[test]
    fn reads_masks_in_hex_within_their_width() {
        assert_eq!(
            parse_mask("0x7275_6e6c_9e37_79b9", 64).unwrap(),
            0x7275_6e6c_9e37_79b9
        );
        assert_eq!(parse_mask("ff", 32).unwrap(), 0xff);
        assert!(parse_mask("0x1_0000_0000", 32).is_err());
        assert!(parse_mask("0xg", 64).is_err());
        assert!(parse_mask("", 64).is_err());
        assert!(parse_mask("0x", 64).is_err());
    }

    #[test]
    fn reads_bytes_in_hex() {
        assert_eq!(read_hex("deadbeef"), Some(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(read_hex("\\x00ff"), Some(vec![0, 0xff]));
        assert_eq!(read_hex(""), Some(vec![]));
        assert_eq!(read_hex("abc"), None);
        assert_eq!(read_hex("zz"), None);
    }

    #[test]
    fn quotes_sql_literals() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b'"), "E'a\\\\b'''");
    }
}
