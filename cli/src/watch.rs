//! `pglock watch`: the table of `pglock locks`, refreshed in place.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use crate::args;
use crate::attribution::Names;
use crate::database::Session;
use crate::duration;
use crate::failure::{Failure, Status};
use crate::listing::Listing;
use crate::output::{self, Reader};
use crate::table::{self, Style};

/// Cursor home, then clear the screen: each frame replaces the last.
const CLEAR: &str = "\x1b[H\x1b[2J";

pub(crate) async fn run(
    database: &args::Database,
    names: &args::Names,
    marks: args::Marks,
    interval: Duration,
) -> Result<ExitCode, Failure> {
    let mut names = Names::new(&names.names)?;
    let mut session = Session::connect(database).await?;
    let terminal = output::is_terminal();
    let style = Style {
        color: output::color(),
        unicode: terminal,
    };
    loop {
        let mut frame = String::new();
        if terminal {
            frame.push_str(CLEAR);
        }
        let _ = writeln!(
            frame,
            "pglock watch {}: every {}; waits over {} and idle in transaction over {} marked !",
            session.target(),
            duration::format(interval),
            duration::format(marks.slow),
            duration::format(marks.idle_in_transaction),
        );
        match session.inspect().await {
            Ok(inspection) => {
                let listing = Listing::new(&inspection, &mut names);
                frame.push_str(&table::render(&listing, marks, style));
                if let Some(note) = listing.hidden_note(session.user()) {
                    let _ = writeln!(frame, "{note}");
                }
            }
            // The server restarting or the network failing is what a
            // watch may live through; a refusal is not.
            Err(failure) if matches!(failure.status(), Status::Connection | Status::Other) => {
                let _ = writeln!(frame, "{failure}; trying again");
            }
            Err(failure) => return Err(failure),
        }
        if !terminal {
            frame.push('\n');
        }
        if output::print(&frame)? == Reader::Gone {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(interval).await;
    }
}
