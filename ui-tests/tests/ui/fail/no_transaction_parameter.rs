// The lock is taken in the function's transaction: there must be one.
use pglock_ui_tests::AppError;

#[pglock::advisory_lock(ns = "jobs", key = id)]
async fn run(id: i64) -> Result<(), AppError> {
    let _ = id;
    Ok(())
}

fn main() {}
