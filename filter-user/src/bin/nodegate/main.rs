//! `nodegate`: a thin command-line shell over the `filter_user` library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.log_format, args.verbose);
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

/// Print `err` on stderr: `error: …` with its causes, then its hint, if it has one.
fn report(err: &anyhow::Error) {
    eprintln!("error: {}", describe(err));
    if let Some(hint) = filter_user::hint::of(err.as_ref()) {
        eprintln!("  hint: {hint}");
    }
}

/// The error and its causes, each printed once: many of our errors already say their cause,
/// so a cause whose text the message holds is not repeated. The hint (`filter_user::hint`)
/// follows on a line of its own.
fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        let err = filter_user::daemon::metrics::bind_error("127.0.0.1:9864".parse().unwrap(), io);
        let err = anyhow::Error::new(err).context("starting the daemon");
        let text = super::describe(&err);
        assert_eq!(text.matches("Address already in use").count(), 1, "{text}");
        // The hint is found through the context, and is not in the message.
        let hint = filter_user::hint::of(err.as_ref()).expect("a hint");
        assert!(
            hint.contains("--metrics ADDR") && !text.contains(hint),
            "{text} / {hint}"
        );
        let chained = anyhow::anyhow!("outer").context("context");
        assert_eq!(super::describe(&chained), "context: outer");
    }
}
