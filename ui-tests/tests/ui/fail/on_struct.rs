// The attribute goes on functions only.
#[pglock::advisory_lock(ns = "jobs", key = id)]
struct Job {
    id: i64,
}

fn main() {
    let _ = Job { id: 1 }.id;
}
