//! The kit's files and directories: made so that the server's user can
//! traverse them, told apart (an executable, a directory of PostgreSQL's
//! server binaries), and removed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::TestingError;

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

/// Whether `path` is a file someone may execute.
pub(super) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `dir` holds `initdb`, `pg_ctl` and `postgres`, executable.
pub(super) fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|program| is_executable(&dir.join(program)))
}

/// Removes a directory tree if it exists.
pub(super) fn remove_tree(path: &Path) -> Result<(), TestingError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TestingError::io(format!("removing {}", path.display()), e)),
    }
}
