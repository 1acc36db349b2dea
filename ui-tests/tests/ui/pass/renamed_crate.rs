//! `crate = "..."` for a renamed dependency: here `::pglock` names `core`,
//! so any path the expansion wrote through `::pglock` would fail.
#![deny(warnings)]

extern crate core as pglock;
extern crate pglock as renamed_pglock;

#[renamed_pglock::advisory_lock(crate = "renamed_pglock", ns = "renamed", key = [id, id + 1], timeout = "5s")]
pub async fn renamed(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: i64,
) -> Result<(), renamed_pglock::Error> {
    let _ = tx;
    Ok(())
}

#[renamed_pglock::advisory_lock(crate = "::renamed_pglock", ns = pair("renamed"), key = id, skip)]
pub async fn absolute(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: i32,
) -> Result<Option<()>, pglock_ui_tests::AppError> {
    let _ = tx;
    Ok(Some(()))
}

fn main() {
    let _: Option<u8> = pglock::option::Option::None;
}
