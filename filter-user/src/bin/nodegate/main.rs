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
            eprintln!("error: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each printed once: most of our errors already say their cause
/// (with a hint after it), so a cause whose text the message holds is not repeated.
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
        let err = filter_user::daemon::metrics::MetricsError::Bind {
            addr: "127.0.0.1:9864".parse().unwrap(),
            source: io,
            hint: " (hint: choose another port)",
        };
        let text = super::describe(&anyhow::Error::new(err));
        assert_eq!(text.matches("Address already in use").count(), 1, "{text}");
        let chained = anyhow::anyhow!("outer").context("context");
        assert_eq!(super::describe(&chained), "context: outer");
    }
}
