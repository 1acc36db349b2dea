//! The compile-time contract of `#[pglock::advisory_lock]`: every misuse in
//! `ui/fail` is refused with the message in its `.stderr` file, and every
//! shape in `ui/pass` compiles.
//!
//! After a change to a message, regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p pglock-ui-tests` and read the diff as a
//! user would.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
