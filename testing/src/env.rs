//! What the machine offers: the PostgreSQL binaries, the directory the kit
//! works in, the user the server runs as and the helper programs.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::TestingError;
use super::fetch::{self, Fetcher, NO_DOWNLOAD_VAR};
use super::files::{has_server_binaries, is_executable, make_dir_all, remove_tree};
use super::pinned::{self, DEFAULT_MAJOR};
use super::programs::{program_major, release_numbers};

/// Environment variable naming the directory of `initdb`, `pg_ctl` and `postgres`.
pub(super) const BINDIR_VAR: &str = "PGLOCK_PG_BINDIR";
/// Environment variable naming the unprivileged user the server runs as when
/// the tests run as root.
pub(super) const USER_VAR: &str = "PGLOCK_PG_USER";
/// Environment variable naming the major version of PostgreSQL to run
/// (installed, else fetched).
pub(super) const VERSION_VAR: &str = "PGLOCK_PG_VERSION";

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
    let run_as = find_run_as()?;
    let flock = find_program("flock").ok_or(TestingError::ToolNotFound {
        tool: "flock",
        purpose: "the watchdog that stops the throwaway server after the last test process \
                  needs it (it comes with util-linux)",
    })?;
    let setsid = find_program("setsid");
    let base = choose_base(run_as.as_ref())?;
    let bin_dir = find_bin_dir(run_as.as_ref(), &base)?;
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

fn non_empty_var(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The PostgreSQL server binaries, for `run_as` when running as root:
/// installed ones ([`find_installed`]), else a pinned build fetched into the
/// user's cache ([`fetch_pinned`]).
fn find_bin_dir(run_as: Option<&RunAs>, base: &Path) -> Result<PathBuf, TestingError> {
    let major = wanted_major()?;
    let searched = match find_installed(major)? {
        Ok(dir) => return Ok(dir),
        Err(searched) => searched,
    };
    fetch_pinned(
        major.unwrap_or(DEFAULT_MAJOR),
        major.is_some(),
        searched,
        run_as,
        base,
    )
}

/// The major version `PGLOCK_PG_VERSION` asks for.
fn wanted_major() -> Result<Option<u32>, TestingError> {
    let Some(value) = non_empty_var(VERSION_VAR) else {
        return Ok(None);
    };
    let majors = pinned::majors();
    match value.to_str().and_then(|v| v.trim().parse().ok()) {
        Some(major) if majors.contains(&major) => Ok(Some(major)),
        _ => Err(TestingError::InvalidEnv {
            name: VERSION_VAR,
            message: format!(
                "{value:?} is not a supported major version of PostgreSQL ({} to {})",
                majors[0],
                majors[majors.len() - 1]
            ),
        }),
    }
}

/// Installed server binaries (of the major version `major`, when given):
/// `PGLOCK_PG_BINDIR`, else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`, else a directory on `PATH` with `initdb`.
/// `Ok(Err(searched))` when none is installed: every place searched, and
/// what was wrong there.
fn find_installed(major: Option<u32>) -> Result<Result<PathBuf, Vec<String>>, TestingError> {
    // What a directory of server binaries is, when it is not `major`.
    let other_major = |dir: &Path| -> Option<String> {
        let wanted = major?.to_string();
        match program_major(&dir.join("postgres")) {
            Some(found) if found == wanted => None,
            Some(found) => Some(format!(
                "PostgreSQL {found}, not the {wanted} of {VERSION_VAR}"
            )),
            None => Some(format!(
                "its version is unknown, not the {wanted} of {VERSION_VAR}"
            )),
        }
    };
    if let Some(dir) = non_empty_var(BINDIR_VAR) {
        let dir = PathBuf::from(dir);
        if !has_server_binaries(&dir) {
            return Err(TestingError::BinariesNotFound {
                searched: vec![format!(
                    "{BINDIR_VAR}={} (set, but initdb, pg_ctl and postgres are not all there)",
                    dir.display()
                )],
            });
        }
        if let Some(other) = other_major(&dir) {
            return Err(TestingError::InvalidEnv {
                name: BINDIR_VAR,
                message: format!("{} holds {other}: unset one of them", dir.display()),
            });
        }
        return Ok(Ok(dir));
    }
    let mut searched = vec![format!("{BINDIR_VAR} (not set)")];

    let mut pg_config = Command::new("pg_config");
    clean_env(&mut pg_config);
    match pg_config.arg("--bindir").stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(OsStr::from_bytes(out.stdout.trim_ascii()));
            if !has_server_binaries(&dir) {
                searched.push(format!(
                    "`pg_config --bindir` = {} (no initdb there: only the client may be installed)",
                    dir.display()
                ));
            } else if let Some(other) = other_major(&dir) {
                searched.push(format!(
                    "`pg_config --bindir` = {} ({other})",
                    dir.display()
                ));
            } else {
                return Ok(Ok(dir));
            }
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
        .filter(|(version, _)| major.is_none_or(|major| version.first() == Some(&major)))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions
        .iter()
        .rev()
        .find(|(_, dir)| has_server_binaries(dir))
    {
        return Ok(Ok(dir.clone()));
    }
    searched.push(match major {
        None => format!("{}/*/bin (none holds initdb)", root.display()),
        Some(major) => format!("{}/{major}/bin (no initdb there)", root.display()),
    });

    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path)
            .find(|dir| has_server_binaries(dir) && other_major(dir).is_none())
    {
        return Ok(Ok(dir));
    }
    searched.push(match major {
        None => "the directories on PATH (none holds initdb, pg_ctl and postgres)".into(),
        Some(major) => format!(
            "the directories on PATH (none holds initdb, pg_ctl and postgres of PostgreSQL {major})"
        ),
    });
    Ok(Err(searched))
}

/// The server binaries of the pinned build of `major` (`asked` for by
/// `PGLOCK_PG_VERSION`, or the default), from the user's cache, fetched
/// first when it lacks them (unless `PGLOCK_NO_DOWNLOAD` says not to);
/// `searched` says where installed ones were looked for.
fn fetch_pinned(
    major: u32,
    asked: bool,
    mut searched: Vec<String>,
    run_as: Option<&RunAs>,
    base: &Path,
) -> Result<PathBuf, TestingError> {
    let build = pinned::lookup(major, std::env::consts::OS, std::env::consts::ARCH)?;
    let why = if asked {
        format!("no PostgreSQL {major} installed ({VERSION_VAR})")
    } else {
        "no PostgreSQL installed".to_owned()
    };
    let settings = fetch::Settings::from_env()?;
    let cache = fetch::cache_dir()
        .unwrap_or_else(|| base.join("cache"))
        .join("postgres");
    let fetcher = Fetcher::new(&settings.registry, &cache);
    let install = match fetcher.cached(&build) {
        Some(install) => install,
        None if !settings.download => {
            searched.push(format!(
                "{NO_DOWNLOAD_VAR} is set: PostgreSQL {} was not fetched into {} (unset it to let \
                 the kit fetch it)",
                build.postgres,
                fetcher.install_dir(&build).display()
            ));
            return Err(TestingError::BinariesNotFound { searched });
        }
        None => {
            // One thread of the process fetches, the others wait here
            // quietly; other processes wait on the cache's lock file.
            static FETCHING: Mutex<()> = Mutex::new(());
            let _one = FETCHING.lock().unwrap_or_else(PoisonError::into_inner);
            // Straight to stderr, not through `eprintln!`, which a test's
            // output capture would hide: a test that waits for a download
            // says why.
            fetcher.fetch(&build, &why, &mut std::io::stderr())?
        }
    };
    reachable_install(&install, run_as, base)
}

/// The `bin` directory of the unpacked build `install`, where `run_as` (the
/// server's user, when running as root) can run it: in place when that user
/// can reach it, else in a copy under the kit's directory `base` (which
/// that user can reach), made of hard links where the file system allows.
/// A root's cache is typically under `/root`, which no other user may
/// enter.
pub(super) fn reachable_install(
    install: &Path,
    run_as: Option<&RunAs>,
    base: &Path,
) -> Result<PathBuf, TestingError> {
    let Some(user) = run_as else {
        return Ok(install.join("bin"));
    };
    if check_traversable(&install.join("bin"), user).is_ok() {
        return Ok(install.join("bin"));
    }
    let name = install.file_name().unwrap_or_default();
    let copies = base.join("postgres");
    let copy = copies.join(name);
    if has_server_binaries(&copy.join("bin")) {
        return Ok(copy.join("bin"));
    }
    eprintln!(
        "pglock testing: the user `{}` cannot reach {}: linking it into {}",
        user.name,
        install.display(),
        copy.display()
    );
    make_dir_all(&copies)?;
    let staging = copies.join(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    remove_tree(&staging)?;
    let made = link_tree(install, &staging).and_then(|()| {
        match fs::rename(&staging, &copy) {
            Ok(()) => Ok(()),
            // Another process made it first.
            Err(_) if has_server_binaries(&copy.join("bin")) => Ok(()),
            Err(e) => Err(TestingError::io(
                format!("renaming {} to {}", staging.display(), copy.display()),
                e,
            )),
        }
    });
    let _ = remove_tree(&staging);
    made?;
    Ok(copy.join("bin"))
}

/// Recreates the tree `from` at `to`: directories made (0755), symlinks
/// copied, files hard-linked, or copied when they cannot be.
fn link_tree(from: &Path, to: &Path) -> Result<(), TestingError> {
    make_dir_all(to)?;
    let entries = fs::read_dir(from)
        .map_err(|e| TestingError::io(format!("reading {}", from.display()), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| TestingError::io(format!("reading {}", from.display()), e))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let copying = |e| {
            TestingError::io(
                format!("copying {} to {}", source.display(), target.display()),
                e,
            )
        };
        let kind = entry.file_type().map_err(copying)?;
        if kind.is_dir() {
            link_tree(&source, &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&source).map_err(copying)?, &target)
                .map_err(copying)?;
        } else if fs::hard_link(&source, &target).is_err() {
            fs::copy(&source, &target).map_err(copying)?;
        }
    }
    Ok(())
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
    use std::os::unix::fs::PermissionsExt;

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

    /// As root, a fetched build in root's cache (under a directory only
    /// root may enter, as `/root` is) is run by the server's user from a
    /// linked copy in the kit's directory; run as anyone else, in place.
    #[test]
    fn fetched_binaries_run_where_the_servers_user_can_reach_them() {
        let scratch = std::env::temp_dir().join(format!("pglock-reach-{}", std::process::id()));
        let _ = fs::remove_dir_all(&scratch);
        let private = scratch.join("home");
        let install = private.join("cache/linux-x64-18.4.0-test");
        make_dir_all(&install.join("bin")).expect("a build directory");
        make_dir_all(&install.join("lib")).expect("a build directory");
        for program in ["initdb", "pg_ctl", "postgres"] {
            let path = install.join("bin").join(program);
            fs::write(&path, "#!/bin/sh\necho 'postgres (PostgreSQL) 18.4'\n").expect("written");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("mode");
        }
        fs::write(install.join("lib/libpq.so.5.18"), "a library").expect("written");
        std::os::unix::fs::symlink("libpq.so.5.18", install.join("lib/libpq.so")).expect("a link");
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).expect("private");
        let base = scratch.join("base");
        make_dir_all(&base).expect("the kit's directory");

        assert_eq!(
            reachable_install(&install, None, &base).expect("in place"),
            install.join("bin"),
            "not root: run in place"
        );
        if !is_root() {
            eprintln!("skipped the part as root: the tests do not run as root");
            let _ = fs::remove_dir_all(&scratch);
            return;
        }
        let user = find_run_as()
            .expect("an unprivileged user")
            .expect("running as root");
        let bin = reachable_install(&install, Some(&user), &base).expect("a reachable copy");
        assert_eq!(bin, base.join("postgres/linux-x64-18.4.0-test/bin"));
        let out = Command::new(&user.runuser)
            .args(["-u", &user.name, "--"])
            .arg(bin.join("postgres"))
            .arg("--version")
            .current_dir("/")
            .output()
            .expect("runuser");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            fs::read_link(bin.join("../lib/libpq.so")).expect("the link, copied"),
            Path::new("libpq.so.5.18")
        );
        assert_eq!(
            reachable_install(&install, Some(&user), &base).expect("again"),
            bin,
            "the copy is reused"
        );
        let _ = fs::remove_dir_all(&scratch);
    }
}
