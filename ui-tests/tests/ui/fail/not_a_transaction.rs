// Behind an alias the macro can't see the type; the trait bound still can.
use pglock_ui_tests::AppError;

type Db = sqlx::PgConnection;

#[pglock::advisory_lock(ns = "jobs", key = id)]
async fn run(db: &mut Db, id: i64) -> Result<(), AppError> {
    let _ = (db, id);
    Ok(())
}

fn main() {}
