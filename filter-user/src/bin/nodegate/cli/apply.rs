//! `nodegate apply`, `confirm` and `rollback`: confirmed changes, decided by the daemon (so
//! the SSH session the command runs in may die without leaving the node locked out).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use filter_user::{
    config::parse_window,
    daemon::{
        control::{self, Answer, ApplyRequest, Request},
        owner::RUN_DIR,
    },
    loader::pins::PinLayout,
    probe::ReachProbe,
};

use super::{output::Output, PinArgs};

#[derive(clap::Args)]
pub struct Args {
    /// The rule file to publish on probation. Once confirmed it is written into the
    /// daemon's own rule file, so a restart keeps it.
    file: PathBuf,
    /// The probation window: `90s`, `2m`, `1h` (5 s to 24 h).
    #[arg(long, value_name = "DURATION", value_parser = parse_window)]
    confirm_within: Duration,
    /// What must stay reachable under the new rules: `tcp:ADDR:PORT`, `icmp:ADDR` or
    /// `https://HOST[:PORT]/PATH` (any HTTP status is an answer; no certificate is checked).
    /// Each is run once before the change; one failing then is reported and not used.
    /// With probes, the first failure rolls back and passing to the end confirms; without,
    /// only `nodegate confirm` keeps the change. Repeatable.
    #[arg(long, value_name = "PROBE")]
    probe: Vec<ReachProbe>,
    /// Do not roll back when the new rules drop packets of TCP connections established
    /// before the change (for a change meant to cut them).
    #[arg(long)]
    allow_cutting_connections: bool,
    #[command(flatten)]
    pins: PinArgs,
}

#[derive(clap::Args)]
pub struct ConfirmArgs {
    #[command(flatten)]
    pins: PinArgs,
}

/// How long the daemon may take: its probes run once before the change, each up to 2 s.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

pub fn run(args: Args, out: Output) -> anyhow::Result<ExitCode> {
    let file = std::path::absolute(&args.file)
        .with_context(|| format!("cannot resolve {}", args.file.display()))?;
    anyhow::ensure!(file.is_file(), "{} is not a readable file", file.display());
    let request = Request::Apply(ApplyRequest {
        file,
        confirm_within_secs: args.confirm_within.as_secs(),
        probes: args.probe,
        watch_established: !args.allow_cutting_connections,
    });
    ask(&args.pins, request, out)
}

pub fn confirm(args: ConfirmArgs, out: Output) -> anyhow::Result<ExitCode> {
    ask(&args.pins, Request::Confirm, out)
}

pub fn rollback(args: ConfirmArgs, out: Output) -> anyhow::Result<ExitCode> {
    ask(&args.pins, Request::Rollback, out)
}

/// Exit 0 when the daemon did it, 1 (with its reason) when not.
fn ask(pins: &PinArgs, request: Request, out: Output) -> anyhow::Result<ExitCode> {
    let answer: Answer = control::ask(
        RUN_DIR.as_ref(),
        &PinLayout::new(&pins.pin_dir),
        request,
        ANSWER_WITHIN,
    )?;
    Ok(super::print_answer(&answer, out))
}
