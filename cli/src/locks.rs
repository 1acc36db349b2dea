//! `pglock locks`: every advisory lock of the database, once, as a table or
//! as JSON lines.

use std::process::ExitCode;

use crate::args;
use crate::attribution::Names;
use crate::database::Session;
use crate::failure::Failure;
use crate::listing::Listing;
use crate::output;
use crate::table::{self, Style};

pub(crate) async fn run(
    database: &args::Database,
    names: &args::Names,
    marks: args::Marks,
    json: bool,
) -> Result<ExitCode, Failure> {
    let mut names = Names::new(&names.names)?;
    let mut session = Session::connect(database).await?;
    let inspection = session.inspect().await?;
    let listing = Listing::new(&inspection, &mut names);
    let text = if json {
        crate::json::render(&listing)
    } else {
        let style = Style {
            color: output::color(),
            unicode: output::is_terminal(),
        };
        table::render(&listing, marks, style)
    };
    output::print(&text)?;
    if let Some(note) = listing.hidden_note(session.user()) {
        output::complain(&note);
    }
    Ok(ExitCode::SUCCESS)
}
