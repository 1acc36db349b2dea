//! What the kit does alike with every program it runs (PostgreSQL's and
//! PgBouncer): run it and read its output, ask its version (and the
//! PostgreSQL major version a program of PostgreSQL is), find a daemon a
//! free port (and how often a start tries another when the port was taken
//! meanwhile), and quote the end of a log in an error.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::TestingError;

/// A port that someone else uses on the build machines: never picked.
const RESERVED_PORT: u16 = 55432;
/// How many times a server or a PgBouncer is started, each time on a new
/// port, when the port was taken between [`free_port`] and the start.
pub(super) const PORT_ATTEMPTS: usize = 5;
/// Lines of a log quoted in an error.
const LOG_TAIL_LINES: usize = 40;

/// Runs `command` to completion, capturing its output.
pub(super) fn run(command: &mut Command, what: &str) -> Result<Output, TestingError> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| TestingError::io(format!("running {what}"), e))
}

/// `command` as a shell would show it, for an error.
pub(super) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command's stderr, then its stdout, for an error.
pub(super) fn output_text(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&stdout);
    }
    text
}

/// The first line `program --version` prints, such as
/// `postgres (PostgreSQL) 15.18` or `PgBouncer 1.18.0`.
pub(super) fn version_line(program: &Path) -> Result<String, TestingError> {
    let what = format!("{} --version", program.display());
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestingError::io(format!("running {what}"), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next().map(str::trim) {
        Some(line) if out.status.success() && !line.is_empty() => Ok(line.to_owned()),
        _ => Err(TestingError::CommandFailed {
            command: what,
            status: out.status.to_string(),
            output: output_text(&out),
        }),
    }
}

/// The PostgreSQL major version a program of PostgreSQL says it is
/// (`--version`).
pub(super) fn program_major(program: &Path) -> Option<String> {
    major(&version_line(program).ok()?)
}

/// `postgres (PostgreSQL) 15.18 (Debian ...)` → `15`; `9.6.24` → `9.6`
/// (before PostgreSQL 10, a major version had two numbers).
fn major(version_line: &str) -> Option<String> {
    let version = version_line.split(')').nth(1)?.split_whitespace().next()?;
    match release_numbers(version)?.as_slice() {
        [first, second, ..] if *first < 10 => Some(format!("{first}.{second}")),
        [first, ..] if *first >= 10 => Some(first.to_string()),
        _ => None,
    }
}

/// The release numbers `text` starts with: `15.18 (Debian 15.18-1)` →
/// `[15, 18]`, `9.6.24` → `[9, 6, 24]`, `17beta1` → `[17]`, `1.24rc1` →
/// `[1, 24]`; `None` when it does not start with a digit. The one reader of
/// the versions of PostgreSQL and PgBouncer, and of the directories named
/// after PostgreSQL's.
pub(super) fn release_numbers(text: &str) -> Option<Vec<u32>> {
    let mut numbers = Vec::new();
    for part in text.split('.') {
        let digits = part.len() - part.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let Ok(number) = part[..digits].parse() else {
            break;
        };
        numbers.push(number);
        if digits < part.len() {
            break;
        }
    }
    (!numbers.is_empty()).then_some(numbers)
}

/// A port that was free a moment ago on 127.0.0.1.
pub(super) fn free_port() -> Result<u16, TestingError> {
    loop {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| TestingError::io("looking for a free port on 127.0.0.1", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| TestingError::io("looking for a free port on 127.0.0.1", e))?
            .port();
        if port != RESERVED_PORT {
            return Ok(port);
        }
    }
}

/// The size of a log now, to quote later only what was written after it.
pub(super) fn log_len(log: &Path) -> u64 {
    fs::metadata(log).map_or(0, |m| m.len())
}

/// The last lines written to `log` since `offset` (see [`log_len`]).
pub(super) fn log_tail(log: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = fs::File::open(log)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.read_to_end(&mut text);
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions_are_read_from_the_version_line() {
        assert_eq!(
            major("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)").as_deref(),
            Some("15")
        );
        assert_eq!(
            major("postgres (PostgreSQL) 17beta1").as_deref(),
            Some("17")
        );
        assert_eq!(
            major("postgres (PostgreSQL) 9.6.24").as_deref(),
            Some("9.6")
        );
        assert_eq!(
            major("pg_basebackup (PostgreSQL) 16.4").as_deref(),
            Some("16")
        );
        assert_eq!(major("garbage"), None);
        assert_eq!(major("postgres (PostgreSQL) 9"), None);
    }

    #[test]
    fn release_numbers_are_read_up_to_the_first_letter() {
        assert_eq!(
            release_numbers("15.18 (Debian 15.18-0+deb12u1)"),
            Some(vec![15, 18])
        );
        assert_eq!(release_numbers("9.6.24"), Some(vec![9, 6, 24]));
        assert_eq!(release_numbers("17beta1"), Some(vec![17]));
        assert_eq!(release_numbers("1.24rc1"), Some(vec![1, 24]));
        assert_eq!(release_numbers("1.18.0"), Some(vec![1, 18, 0]));
        assert_eq!(release_numbers("15"), Some(vec![15]));
        assert_eq!(release_numbers("garbage"), None);
        assert_eq!(release_numbers(""), None);
    }

    #[test]
    fn a_log_tail_starts_at_the_offset_and_keeps_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("pglock-log-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("a directory");
        let log = dir.join("server.log");
        fs::write(&log, "before\n").expect("written");
        let offset = log_len(&log);
        let lines: Vec<String> = (0..LOG_TAIL_LINES + 5)
            .map(|i| format!("line {i}"))
            .collect();
        fs::write(&log, format!("before\n{}\n", lines.join("\n"))).expect("written");
        let tail = log_tail(&log, offset);
        assert_eq!(tail, lines[5..].join("\n"));
        assert_eq!(log_tail(&dir.join("missing.log"), 0), "");
        let _ = fs::remove_dir_all(&dir);
    }
}
