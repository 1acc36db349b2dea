// A `static` namespace follows the attribute's rule for names, and the
// compiler says so in the same words.
use pglock::Namespace;

static JOBS: Namespace = Namespace::named("jobs */ DROP TABLE jobs; /*");

fn main() {
    let _ = &JOBS;
}
