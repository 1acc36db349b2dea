//! Prints the directory of the PostgreSQL server binaries the testing kit
//! runs: installed ones, else a pinned build fetched into the user's cache
//! (saying so on stderr). `PGLOCK_PG_VERSION` picks the major version:
//!
//! ```sh
//! PGLOCK_PG_VERSION=17 cargo run -q -p pglock-testing --example postgres_bin_dir
//! ```
//!
//! `.ci/pg-versions` gets the binaries of each version it tests this way.

fn main() -> Result<(), pglock_testing::TestingError> {
    println!("{}", pglock_testing::postgres_bin_dir()?.display());
    Ok(())
}
