//! Compile-fail and compile-pass cases for `#[pglock::advisory_lock]` live in `tests/`.
