//! `pglock`, the operator's command of pglock: who holds which PostgreSQL
//! advisory lock, who waits for it and behind whom, whether anything is
//! stuck; and the lock id a service takes for a key.
//!
//! Everything about keys, namespaces, ids and inspection comes from
//! `pglock-runtime`, so the command can never disagree with the services it
//! looks at. The rooms:
//!
//! - `args`: the command line (clap);
//! - `id`: `pglock id`, keys read from the command line, the SQL recipes;
//! - `database`: the connection, and the inspection in a READ ONLY
//!   transaction;
//! - `attribution`: which namespace and key a lock id belongs to, as far as
//!   can be known;
//! - `listing`: the rows every view shows;
//! - `table`, `json`: the two ways of showing them;
//! - `locks`, `watch`, `check`: the commands that look at a database;
//! - `duration`, `output`, `failure`: durations, stdout and stderr, and
//!   the exit codes (documented in docs/OPERATIONS.md).
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

mod args;
mod attribution;
mod check;
mod database;
mod duration;
mod failure;
mod id;
mod json;
mod listing;
mod locks;
mod output;
mod table;
mod watch;

use std::future::Future;
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Args, Command};
use crate::failure::{Failure, Status};

fn main() -> ExitCode {
    // A bug must still end in one line and a documented exit code.
    std::panic::set_hook(Box::new(|info| {
        output::complain(&format_args!("internal error, please report it: {info}"));
        std::process::exit(i32::from(Status::Other as u8));
    }));
    // clap prints usage errors and exits with 2; --help and --version exit 0.
    let args = Args::parse();
    let result = match &args.command {
        Command::Id(id_args) => id::run(id_args)
            .and_then(|text| output::print(&text))
            .map(|_| ExitCode::SUCCESS),
        Command::Locks {
            database,
            names,
            marks,
            json,
        } => block_on(locks::run(database, names, *marks, *json)),
        Command::Watch {
            database,
            names,
            marks,
            interval,
        } => block_on(watch::run(database, names, *marks, *interval)),
        Command::Check {
            database,
            names,
            idle_in_transaction,
            wait,
        } => block_on(check::run(database, names, *idle_in_transaction, *wait)),
    };
    result.unwrap_or_else(|failure| {
        output::complain(&failure);
        failure.status().exit_code()
    })
}

/// Runs a command that talks to the server, on a single-threaded runtime:
/// it does one thing at a time.
fn block_on(command: impl Future<Output = Result<ExitCode, Failure>>) -> Result<ExitCode, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::new(Status::Other, format!("cannot start: {error}")))?
        .block_on(command)
}
