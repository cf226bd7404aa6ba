//! `nodegate observe`: follow drop samples live.

use std::{io::Write, process::ExitCode, time::Duration};

use anyhow::Context;
use filter_user::{
    daemon::{
        observe::{Event, Follow, SampleFilter},
        owner::RUN_DIR,
    },
    loader::pins::PinLayout,
};
use ipnet::IpNet;

use super::{output::Output, PinArgs};

/// Follow drop samples (and monitor-mode would-drops) as the XDP program takes them.
///
/// With a `nodegate run` owning the pin directory, the daemon relays the samples it reads
/// (it stays the ring's only reader, so its own log misses nothing); without one, observe
/// reads the pinned ring itself. Samples are rate-limited in the kernel (`samples_per_sec`
/// in the rule file, per CPU), so a flood shows as a steady trickle. Text lines, or one JSON
/// object per line with `-o json`/`-o jsonl`; a `{"lost":N}` line says the terminal read
/// too slowly for N samples. Runs until interrupted, --count samples or --duration.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pins: PinArgs,
    /// Only samples of this reason, e.g. no-source-match (repeatable).
    #[arg(long, value_name = "REASON")]
    reason: Vec<String>,
    /// Only samples this rule decided (repeatable).
    #[arg(long, value_name = "NAME")]
    rule: Vec<String>,
    /// Only samples whose source is in this prefix (repeatable).
    #[arg(long, value_name = "CIDR")]
    from: Vec<IpNet>,
    /// Only samples that arrived on this interface (repeatable).
    #[arg(long = "iface", value_name = "IF")]
    interfaces: Vec<String>,
    /// Stop after this many samples shown.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<u64>,
}

pub fn run(args: Args, out: Output) -> anyhow::Result<ExitCode> {
    for reason in &args.reason {
        anyhow::ensure!(
            filter_common::Reason::from_name(reason).is_some(),
            "--reason {reason:?} is not a reason nodegate counts; docs/VERDICTS.md lists them (e.g. no-source-match, deny-rule)"
        );
    }
    let filter = SampleFilter {
        reasons: args.reason.clone(),
        rules: args.rule.clone(),
        sources: args.from.clone(),
        interfaces: args.interfaces.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(follow(&args, &filter, out))
}

async fn follow(args: &Args, filter: &SampleFilter, out: Output) -> anyhow::Result<ExitCode> {
    let pins = PinLayout::new(&args.pins.pin_dir);
    let mut source = Follow::start(RUN_DIR.as_ref(), &pins).await?;
    if !out.is_json() {
        eprintln!(
            "following drop samples ({}); Ctrl-C stops",
            match source.via() {
                "daemon" => "relayed by the running daemon",
                _ => "from the pinned ring: no daemon runs",
            }
        );
    }
    let deadline = args
        .duration
        .map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs));
    let mut shown = 0u64;
    let mut stdout = std::io::stdout().lock();
    while args.count.is_none_or(|n| shown < n) {
        let next = source.next();
        let event = match deadline {
            Some(at) => match tokio::time::timeout_at(at, next).await {
                Ok(event) => event?,
                Err(_) => break,
            },
            None => tokio::select! {
                event = next => event?,
                _ = tokio::signal::ctrl_c() => break,
            },
        };
        match &event {
            Event::Sample(sample) if !filter.matches(sample) => continue,
            Event::Sample(sample) => {
                shown += 1;
                if !out.is_json() {
                    writeln!(stdout, "{sample}")?;
                }
            }
            Event::Lost { lost } if !out.is_json() => {
                eprintln!("({lost} samples lost: this terminal read too slowly)");
            }
            Event::Lost { .. } => {}
        }
        if out.is_json() {
            super::output::line(&mut stdout, &event)?;
        }
        // A pipe (`| jq`, `| grep`) sees each line as it happens.
        stdout.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
