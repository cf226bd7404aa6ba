//! `nodegate`: a thin command-line shell over the `filter_user` library.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::output::{self, Output};

/// Exit status of a usage error (clap's).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let raw = output::legacy_spellings(std::env::args().collect());
    let args = match cli::Cli::try_parse_from(&raw) {
        Ok(args) => args,
        Err(err) => return usage_error(&err, output::requested(&raw)),
    };
    if !args.is_daemon() {
        // A command whose reader went away (`nodegate check f | head`) ends quietly, as
        // other Unix tools do, instead of panicking on the failed write. Not the daemon:
        // a control-socket client hanging up must cost it one failed write, not its life.
        // SAFETY: resetting a signal's disposition to its default has no preconditions;
        // no other thread runs yet.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    cli::init_logging(args.log_format, args.verbose);
    let output = args.output;
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            output::report(&err, output);
            ExitCode::FAILURE
        }
    }
}

/// A usage error as clap prints it, or in JSON mode as the JSON error object; `--help` and
/// `--version` print as usual.
fn usage_error(err: &clap::Error, output: Output) -> ExitCode {
    use clap::error::ErrorKind;
    if !output.is_json()
        || matches!(
            err.kind(),
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
        )
    {
        err.exit();
    }
    let message = err.render().to_string();
    let message = message.trim().trim_start_matches("error: ");
    eprintln!(
        "{}",
        serde_json::json!({"error": {"message": message, "hint": "see `nodegate --help`"}})
    );
    ExitCode::from(EXIT_USAGE)
}
