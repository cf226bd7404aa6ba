//! `nodegate reload`: ask the daemon that owns a pin directory to reload, and wait for it.

use std::{process::ExitCode, time::Duration};

use filter_user::{
    daemon::{
        control::{self, Request},
        owner::RUN_DIR,
    },
    loader::pins::PinLayout,
};

use super::PinArgs;

/// Ask `nodegate run` to reload its rule file now.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pins: PinArgs,
    /// Return once the daemon has the request, without waiting for the result.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the result.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    timeout: u64,
}

/// Exit 0 once the new generation is active; 1 with the daemon's diagnostics when it
/// rejected the file (the previous rules stay active), or when no daemon answers.
pub fn run(args: Args, out: super::output::Output) -> anyhow::Result<ExitCode> {
    let pins = PinLayout::new(&args.pins.pin_dir);
    let request = if args.no_wait {
        Request::ReloadNoWait
    } else {
        Request::Reload
    };
    let answer = control::ask(
        RUN_DIR.as_ref(),
        &pins,
        request,
        Duration::from_secs(args.timeout),
    )?;
    Ok(super::print_answer(&answer, out))
}
