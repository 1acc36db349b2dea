//! The expansion names nothing the user's code could shadow: `core`, `std`,
//! `pglock`-like modules, prelude names, and locals that look like the
//! macro's are all redefined here, and one function lives in a
//! `#![no_implicit_prelude]` module.
#![deny(warnings)]
#![allow(non_snake_case, dead_code)]

mod core {}
mod std {}
mod __private {}

struct Result;
struct Option;
struct Duration;
struct Namespace;
struct Error;
fn Ok() {}
fn Err() {}
fn Some() {}
fn None() {}
fn connection() {}
fn lock() {}

type Res<T> = ::std::result::Result<T, pglock_ui_tests::AppError>;

#[pglock::advisory_lock(ns = "hygiene", key = __pglock_request, timeout = "5s")]
async fn shadowing(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    __pglock_request: i64,
) -> Res<i64> {
    let __pglock_outcome = __pglock_request;
    static __PGLOCK_OTHER: i64 = 1;
    let _ = tx;
    ::std::result::Result::Ok(__pglock_outcome + __PGLOCK_OTHER)
}

#[pglock::advisory_lock(ns = "hygiene", key = id, skip)]
async fn shadowing_skip(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: i64,
) -> Res<::std::option::Option<i64>> {
    let _ = tx;
    ::std::result::Result::Ok(::std::option::Option::Some(id))
}

mod no_prelude {
    #![no_implicit_prelude]

    #[::pglock::advisory_lock(ns = "hygiene", key = [a, b], mode = shared, skip)]
    pub(crate) async fn locked(
        tx: &mut ::sqlx::Transaction<'_, ::sqlx::Postgres>,
        a: i64,
        b: i64,
    ) -> ::std::result::Result<::std::option::Option<i64>, ::pglock::Error> {
        let _ = tx;
        ::std::result::Result::Ok(::std::option::Option::Some(a + b))
    }

    #[::pglock::advisory_lock(ns = 0x7275_6e6c_9e37_79b9, key = a, timeout = "1s")]
    pub(crate) async fn raw(
        tx: &mut ::sqlx::Transaction<'_, ::sqlx::Postgres>,
        a: i64,
    ) -> ::std::result::Result<(), ::pglock::Error> {
        let _ = tx;
        ::std::result::Result::Ok(())
    }
}

fn main() {
    let _ = (
        shadowing,
        shadowing_skip,
        no_prelude::locked,
        no_prelude::raw,
    );
    let _ = (Ok, Err, Some, None, connection, lock);
}
