// A `LockFamily<i64>` derives ids from `i64` keys only.
use pglock::LockFamily;

static USERS: LockFamily<i64> = LockFamily::named("accounts:user");

fn main() {
    let _ = USERS.id(&"alice");
}
