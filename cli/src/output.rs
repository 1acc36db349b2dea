//! Writing to stdout and stderr: a reader that went away
//! (`pglock locks | head`) ends the output quietly, never with a panic.

use std::io::{self, IsTerminal, Write};

use crate::failure::{Failure, Status};

/// Whether the reader of stdout is still there after a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reader {
    Present,
    Gone,
}

/// Writes `text` to stdout and flushes it. A closed pipe is not an error:
/// the text is dropped, and the caller told.
pub(crate) fn print(text: &str) -> Result<Reader, Failure> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(Reader::Present),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(Reader::Gone),
        Err(error) => Err(Failure::new(
            Status::Other,
            format!("cannot write the output: {error}"),
        )),
    }
}

/// Writes `pglock: <line>` to stderr; if stderr is gone, there is no one
/// left to tell.
pub(crate) fn complain(line: &dyn std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "pglock: {line}");
}

/// Whether stdout is a terminal.
pub(crate) fn is_terminal() -> bool {
    io::stdout().is_terminal()
}

/// Whether to colour: on a terminal, unless `NO_COLOR` is set to anything
/// but the empty string (no-color.org).
pub(crate) fn color() -> bool {
    is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}
