//! Compile-fail and compile-pass cases for `#[pglock::advisory_lock]` live
//! in `tests/ui`; this library holds what they share.
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

use std::fmt;

/// An application's error type: all an `#[advisory_lock]` function needs of
/// it is `From<pglock::Error>`.
#[derive(Debug)]
pub struct AppError(pub pglock::Error);

impl From<pglock::Error> for AppError {
    fn from(error: pglock::Error) -> Self {
        AppError(error)
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "application error: {}", self.0)
    }
}

impl std::error::Error for AppError {}
