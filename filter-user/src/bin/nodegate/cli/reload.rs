//! `nodegate reload`: signal the running daemon.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use filter_user::daemon::DEFAULT_PID_FILE;

/// Ask `nodegate run` to reload now.
#[derive(clap::Args)]
pub struct Args {
    /// PID file written by `nodegate run`.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PID_FILE)]
    pid_file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.pid_file).with_context(|| {
        format!(
            "failed to read {} (is `nodegate run` running?)",
            args.pid_file.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a PID", args.pid_file.display()))?;
    // SAFETY: kill(2) with a plain pid and signal number.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        bail!(
            "failed to signal nodegate (pid {pid}): {}; is it still running?",
            std::io::Error::last_os_error()
        );
    }
    println!(
        "asked nodegate (pid {pid}) to reload; see its log or `nodegate stats` for the result"
    );
    Ok(ExitCode::SUCCESS)
}
