//! The command line: subcommands, their options and their defaults.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::duration;

/// Who holds which PostgreSQL advisory lock, who waits for it and behind
/// whom; and the lock id a service takes for a key.
///
/// Exit codes: 0 success; 1 `check` found a problem; 2 bad usage or input;
/// 3 connection or authentication failed; 4 missing privilege; 5 any other
/// failure.
#[derive(Debug, Parser)]
#[command(name = "pglock", version)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List every advisory lock of the database, held or awaited.
    Locks {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        names: Names,
        #[command(flatten)]
        marks: Marks,
        /// One JSON object per line per lock (fields: docs/OPERATIONS.md).
        #[arg(long)]
        json: bool,
    },
    /// Print the lock id of a key, and the SQL that finds it in pg_locks
    /// and that computes it on the server.
    Id(IdArgs),
    /// Refresh the list of locks in place until interrupted.
    Watch {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        names: Names,
        #[command(flatten)]
        marks: Marks,
        /// Time between refreshes.
        #[arg(long, default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
        interval: Duration,
    },
    /// Exit 1, and say why, when a lock is held by a backend idle in
    /// transaction or awaited for too long; exit 0, silently, otherwise.
    Check {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        names: Names,
        /// The longest a lock holder may stay idle in transaction.
        #[arg(long, default_value = "60s", value_parser = duration::parse, value_name = "DURATION")]
        idle_in_transaction: Duration,
        /// The longest a backend may wait for a lock.
        #[arg(long, default_value = "30s", value_parser = duration::parse, value_name = "DURATION")]
        wait: Duration,
    },
}

/// Which database to look at.
#[derive(Debug, clap::Args)]
pub(crate) struct Database {
    /// The database, as postgres://user:password@host:port/database;
    /// without it, PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE and
    /// their defaults.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub(crate) database_url: Option<String>,
}

/// What the table marks as needing a look.
#[derive(Clone, Copy, Debug, clap::Args)]
pub(crate) struct Marks {
    /// Mark waits longer than this.
    #[arg(long, default_value = "5s", value_parser = duration::parse, value_name = "DURATION")]
    pub(crate) slow: Duration,
    /// Mark holders idle in transaction longer than this.
    #[arg(long, default_value = "60s", value_parser = duration::parse, value_name = "DURATION")]
    pub(crate) idle_in_transaction: Duration,
}

/// Namespace names to attribute locks to.
#[derive(Debug, clap::Args)]
pub(crate) struct Names {
    /// A namespace name, hashed as the library does, to recognise its
    /// locks by id: pair-space locks by their class, bigint-space locks of
    /// integer keys by their key (see docs/OPERATIONS.md). Repeatable.
    #[arg(long = "ns", value_name = "NAME", num_args = 1.., action = clap::ArgAction::Append)]
    pub(crate) names: Vec<String>,
}

/// `pglock id NS KEY...`.
#[derive(Debug, clap::Args)]
pub(crate) struct IdArgs {
    /// The namespace name, as given to Namespace::named (or named_pair with
    /// --pair); with --raw, only the label its markers show.
    #[arg(value_name = "NS")]
    pub(crate) namespace: String,
    /// The key: one value, or two to four for a tuple key. A value that
    /// starts with `-` but is not a number goes after `--`.
    #[arg(value_name = "KEY", required = true, num_args = 1..=4, allow_negative_numbers = true)]
    pub(crate) key: Vec<String>,
    /// How to read the key: once for every value, or once per value
    /// (`--type int,str`). Default: an integer or a uuid, as the value
    /// reads; strings and bytes must say so.
    #[arg(long = "type", value_enum, value_delimiter = ',', value_name = "TYPE")]
    pub(crate) types: Vec<KeyType>,
    /// The int4 pair key space (Namespace::named_pair, or raw_pair with
    /// --raw).
    #[arg(long)]
    pub(crate) pair: bool,
    /// A raw namespace: the 64-bit mask (or, with --pair, the 32-bit class)
    /// in hex, such as 0x7275_6e6c_9e37_79b9.
    #[arg(long, value_name = "MASK")]
    pub(crate) raw: Option<String>,
    /// The key's semaphore of N permits (NS.semaphore(&key, N)): also print
    /// its permit 0, which `pglock locks` shows on the semaphore's line,
    /// and the statement that lists its held permits.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) permits: Option<u32>,
}

/// How a key value on the command line is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeyType {
    /// A uuid, as `uuid::Uuid`.
    Uuid,
    /// An integer of any Rust integer type (decimal, or hex after `0x`).
    Int,
    /// A string, as `&str`/`String`.
    Str,
    /// Bytes given in hex, as `&[u8]`/`Vec<u8>`.
    Bytes,
}

/// A refresh interval: a duration of at least 100ms, so a forgotten
/// `watch` can't load the server.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = duration::parse(text)?;
    if interval < Duration::from_millis(100) {
        return Err(format!(
            "{text:?} is shorter than the shortest interval, 100ms"
        ));
    }
    Ok(interval)
}
