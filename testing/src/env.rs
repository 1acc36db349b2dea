//! What the machine offers: the PostgreSQL binaries, the directory the kit
//! works in, the user the server runs as and the helper programs.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::TestingError;
use super::programs::release_numbers;

/// Environment variable naming the directory of `initdb`, `pg_ctl` and `postgres`.
pub(super) const BINDIR_VAR: &str = "PGLOCK_PG_BINDIR";
/// Environment variable naming the unprivileged user the server runs as when
/// the tests run as root.
pub(super) const USER_VAR: &str = "PGLOCK_PG_USER";

/// The unprivileged user the server runs as, when the tests run as root.
#[derive(Debug)]
pub(super) struct RunAs {
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) runuser: PathBuf,
}

/// Everything the kit found out about the machine, once per process.
#[derive(Debug)]
pub(super) struct Env {
    pub(super) bin_dir: PathBuf,
    /// `<target>/pglock-pg`, or a fallback in the temporary directory.
    pub(super) base: PathBuf,
    pub(super) run_as: Option<RunAs>,
    pub(super) flock: PathBuf,
    pub(super) setsid: Option<PathBuf>,
}

/// The process's environment, discovered on first use. A failure is not
/// remembered, so that a later call can succeed once the machine is fixed.
pub(super) fn env() -> Result<&'static Env, TestingError> {
    static ENV: OnceLock<Env> = OnceLock::new();
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let bin_dir = find_bin_dir()?;
    let run_as = find_run_as()?;
    let flock = find_program("flock").ok_or(TestingError::ToolNotFound {
        tool: "flock",
        purpose: "the watchdog that stops the throwaway server after the last test process \
                  needs it (it comes with util-linux)",
    })?;
    let setsid = find_program("setsid");
    let base = choose_base(run_as.as_ref())?;
    let env = Env {
        bin_dir,
        base,
        run_as,
        flock,
        setsid,
    };
    Ok(ENV.get_or_init(|| env))
}

impl Env {
    /// A command that runs `program` from the PostgreSQL binaries as the
    /// server's user, with a clean libpq environment, English messages and
    /// `cwd` (which that user must be able to enter) as working directory.
    pub(super) fn pg_command(&self, program: &str, cwd: &Path) -> Command {
        pg_command_in(&self.bin_dir, self.run_as.as_ref(), program, cwd)
    }

    /// Gives `path` to the server's user (when running as root).
    pub(super) fn give(&self, path: &Path) -> Result<(), TestingError> {
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
                TestingError::io(
                    format!("giving {} to the user `{}`", path.display(), user.name),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Writes `text` to the file `path` and gives it to the server's user.
    pub(super) fn write_file(&self, path: &Path, text: &str) -> Result<(), TestingError> {
        fs::write(path, text)
            .map_err(|e| TestingError::io(format!("writing {}", path.display()), e))?;
        self.give(path)
    }

    /// Creates `path` (mode 0755) for the server's user.
    pub(super) fn make_dir(&self, path: &Path) -> Result<(), TestingError> {
        make_dir_all(path)?;
        self.give(path)
    }
}

/// See [`Env::pg_command`]; `bin_dir` may differ from the environment's
/// (a shared server started by another process).
pub(super) fn pg_command_in(
    bin_dir: &Path,
    run_as: Option<&RunAs>,
    program: &str,
    cwd: &Path,
) -> Command {
    let path = bin_dir.join(program);
    let mut command = match run_as {
        Some(user) => {
            let mut command = Command::new(&user.runuser);
            command.arg("-u").arg(&user.name).arg("--").arg(path);
            command
        }
        None => Command::new(path),
    };
    clean_env(&mut command);
    command.current_dir(cwd).stdin(Stdio::null());
    command
}

/// Removes the libpq variables (`PGHOST`, `PGDATA`, ...) that would make a
/// PostgreSQL program act on another server, and asks for English messages,
/// which the kit reads.
pub(super) fn clean_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let bytes = name.as_bytes();
        if bytes.starts_with(b"PG") && !bytes.starts_with(b"PGLOCK_") {
            command.env_remove(&name);
        }
    }
    command.env("LC_ALL", "C").env_remove("LANGUAGE");
}

/// `create_dir_all`, with mode 0755 on the directories it creates (whatever
/// the umask), so that the server's user can traverse them.
pub(super) fn make_dir_all(path: &Path) -> Result<(), TestingError> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        make_dir_all(parent)?;
    }
    match fs::create_dir(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .map_err(|e| TestingError::io(format!("setting the mode of {}", path.display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(TestingError::io(format!("creating {}", path.display()), e)),
    }
}

fn non_empty_var(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|program| is_executable(&dir.join(program)))
}

/// `PGLOCK_PG_BINDIR`, else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`, else a directory on `PATH` with `initdb`.
fn find_bin_dir() -> Result<PathBuf, TestingError> {
    if let Some(dir) = non_empty_var(BINDIR_VAR) {
        let dir = PathBuf::from(dir);
        if has_server_binaries(&dir) {
            return Ok(dir);
        }
        return Err(TestingError::BinariesNotFound {
            searched: vec![format!(
                "{BINDIR_VAR}={} (set, but initdb, pg_ctl and postgres are not all there)",
                dir.display()
            )],
        });
    }
    let mut searched = vec![format!("{BINDIR_VAR} (not set)")];

    let mut pg_config = Command::new("pg_config");
    clean_env(&mut pg_config);
    match pg_config.arg("--bindir").stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(OsStr::from_bytes(out.stdout.trim_ascii()));
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
            searched.push(format!(
                "`pg_config --bindir` = {} (no initdb there: only the client may be installed)",
                dir.display()
            ));
        }
        Ok(out) => searched.push(format!("`pg_config --bindir` failed ({})", out.status)),
        Err(e) => searched.push(format!("`pg_config --bindir` could not run ({e})")),
    }

    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = release_numbers(entry.file_name().to_str()?)?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions
        .iter()
        .rev()
        .find(|(_, dir)| has_server_binaries(dir))
    {
        return Ok(dir.clone());
    }
    searched.push(format!("{}/*/bin (none holds initdb)", root.display()));

    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|dir| has_server_binaries(dir))
    {
        return Ok(dir);
    }
    searched.push("the directories on PATH (none holds initdb, pg_ctl and postgres)".into());
    Err(TestingError::BinariesNotFound { searched })
}

/// A program on `PATH`, or in the usual system directories that a
/// non-login `PATH` may lack.
pub(super) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_root() -> bool {
    if let Ok(meta) = fs::metadata("/proc/self") {
        return meta.uid() == 0;
    }
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn find_run_as() -> Result<Option<RunAs>, TestingError> {
    if !is_root() {
        return Ok(None);
    }
    let runuser = find_program("runuser").ok_or(TestingError::ToolNotFound {
        tool: "runuser",
        purpose: "the tests run as root, and PostgreSQL must run as an unprivileged user \
                  through `runuser` (it comes with util-linux)",
    })?;
    let tried: Vec<String> = match non_empty_var(USER_VAR) {
        Some(name) => vec![name.to_string_lossy().into_owned()],
        None => vec!["postgres".into(), "nobody".into()],
    };
    for name in &tried {
        if let Some((uid, gid)) = lookup_user(name).filter(|(uid, _)| *uid != 0) {
            return Ok(Some(RunAs {
                name: name.clone(),
                uid,
                gid,
                runuser,
            }));
        }
    }
    Err(TestingError::NoUnprivilegedUser { tried })
}

/// The uid and gid of `name`: from `/etc/passwd`, else from `id`.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    if let Ok(passwd) = fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4 && fields[0] == name {
                return Some((fields[2].parse().ok()?, fields[3].parse().ok()?));
            }
        }
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        if !out.status.success() {
            return None;
        }
        std::str::from_utf8(out.stdout.trim_ascii())
            .ok()?
            .parse()
            .ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else the `target`
/// ancestor of the running executable, else the temporary directory.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    if let Some(dir) = non_empty_var("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return dir;
        }
        // Relative to where cargo ran, which is an ancestor of the test's
        // working directory (the package root): pick the one holding the
        // executable.
        let cwd = std::env::current_dir().unwrap_or_default();
        if let Some(exe) = &exe
            && let Some(found) = cwd
                .ancestors()
                .map(|a| a.join(&dir))
                .find(|candidate| exe.starts_with(candidate))
        {
            return found;
        }
        return cwd.join(dir);
    }
    exe.as_deref()
        .and_then(|exe| {
            exe.ancestors()
                .find(|a| a.file_name() == Some(OsStr::new("target")))
        })
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// `<target>/pglock-pg`; when that cannot be used (the server's user cannot
/// reach it, or its path cannot be passed through `pg_ctl`), a directory in
/// the temporary directory named after it.
fn choose_base(run_as: Option<&RunAs>) -> Result<PathBuf, TestingError> {
    let preferred = target_dir().join("pglock-pg");
    let first = match prepare_base(&preferred, run_as) {
        Ok(()) => return Ok(preferred),
        Err(e) => e,
    };
    let fallback = std::env::temp_dir().join(format!(
        "pglock-pg-{:016x}",
        fnv1a(preferred.as_os_str().as_bytes())
    ));
    match prepare_base(&fallback, run_as) {
        Ok(()) => {
            eprintln!(
                "pglock testing: using {} instead of {}: {first}",
                fallback.display(),
                preferred.display()
            );
            Ok(fallback)
        }
        Err(_) => Err(first),
    }
}

fn prepare_base(base: &Path, run_as: Option<&RunAs>) -> Result<(), TestingError> {
    // pg_ctl passes the data directory and the log file through `sh -c` in
    // double quotes: these characters would break out.
    if base
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| b"\"$`\\\n".contains(b))
    {
        return Err(TestingError::io(
            format!("using {}", base.display()),
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path holds a character pg_ctl cannot quote (\" $ ` \\ or a newline)",
            ),
        ));
    }
    make_dir_all(base)?;
    if let Some(user) = run_as {
        check_traversable(base, user)?;
    }
    Ok(())
}

/// Checks, as `user`, that every ancestor of `dir` can be traversed.
fn check_traversable(dir: &Path, user: &RunAs) -> Result<(), TestingError> {
    let mut ancestors: Vec<&Path> = dir.ancestors().collect();
    ancestors.reverse();
    let out = Command::new(&user.runuser)
        .arg("-u")
        .arg(&user.name)
        .arg("--")
        .arg("sh")
        .arg("-c")
        .arg(r#"for d do [ -x "$d" ] || { printf '%s' "$d"; exit 1; }; done"#)
        .arg("sh")
        .args(&ancestors)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            TestingError::io(
                format!(
                    "checking that the user `{}` can reach {}",
                    user.name,
                    dir.display()
                ),
                e,
            )
        })?;
    if out.status.success() {
        return Ok(());
    }
    let blocked_at = if out.stdout.is_empty() {
        dir.to_path_buf()
    } else {
        PathBuf::from(OsStr::from_bytes(&out.stdout))
    };
    Err(TestingError::NotTraversable {
        user: user.name.clone(),
        path: dir.to_path_buf(),
        blocked_at,
    })
}

/// FNV-1a, 64 bits: a stable hash for short directory names.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_reference_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn test_binaries_find_their_target_directory() {
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            let target = target_dir();
            assert_eq!(target.file_name(), Some(OsStr::new("target")), "{target:?}");
        }
    }
}
