// A bare connection is not in a transaction block.
use pglock_ui_tests::AppError;
use sqlx::PgConnection;

#[pglock::advisory_lock(ns = "jobs", key = id)]
async fn run(conn: PgConnection, id: i64) -> Result<(), AppError> {
    let _ = (conn, id);
    Ok(())
}

fn main() {}
