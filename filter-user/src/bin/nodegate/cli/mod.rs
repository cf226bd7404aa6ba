//! Flags and dispatch. One module per subcommand; doc comments are the `--help` text.

mod apply;
mod check;
mod detach;
mod diff;
mod explain;
mod gen_traffic;
mod import;
mod mount_bpffs;
mod observe;
pub mod output;
mod reload;
mod replay;
mod run;
mod stats;
mod status;

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use filter_user::loader::pins::DEFAULT_PIN_ROOT;
use output::Output;

/// nodegate: an XDP node firewall. Enforces source-CIDR allow-lists and protocol/port rules
/// in the NIC driver, hot-reloads its YAML rules atomically, and keeps enforcing when it exits.
#[derive(Parser)]
#[command(name = "nodegate", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format for `run` and diagnostics.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Output format of results (docs/OUTPUT.md): text, json (one document; streams one
    /// object per line) or jsonl (one object per line). Errors follow it on stderr.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Log line format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

#[derive(clap::Args, Clone, Debug)]
pub struct PinArgs {
    /// bpffs directory holding nodegate's pinned program, links and maps.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT, env = "NODEGATE_PIN_DIR")]
    pub pin_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a rule file and print the compiled tables, warnings and capacity use.
    /// Exit status 0 when valid, 1 when not (for CI).
    Check(check::Args),
    /// Judge one synthetic packet against a rule file with the reference model: verdict,
    /// reason and deciding rule.
    Explain(explain::Args),
    /// Attach to interfaces and keep enforcing; reload on file change, SIGHUP or
    /// `nodegate reload`. Exiting leaves the filter attached.
    Run(run::Args),
    /// Ask the `nodegate run` owning the pin directory to reload its rule file now, and wait
    /// until the new rules are active (exit 0) or rejected (exit 1, with the diagnostics).
    Reload(reload::Args),
    /// Print counters per interface, reason and rule from the pinned maps (works whether
    /// or not `run` is alive).
    Stats(stats::Args),
    /// What is loaded, from which file, on which interfaces, with every rule's counters, and
    /// whether it is healthy. Exit 0 healthy, 2 needs attention, 3 nothing installed.
    Status(status::Args),
    /// What loading a rule file would change against the running rules: settings, rules,
    /// source prefixes, and packets whose verdict flips. Exit 0 no change, 1 changes,
    /// 2 trouble.
    Diff(diff::Args),
    /// Publish a rule file on probation: it flips back to the previous rules on its own
    /// unless its probes keep passing through the window, or (without probes) `nodegate
    /// confirm` comes in time. Survives the SSH session dying and the daemon restarting.
    Apply(apply::Args),
    /// Keep the change on probation now (and write it into the daemon's rule file).
    Confirm(apply::ConfirmArgs),
    /// Flip back from the change on probation to the rules before it, now.
    Rollback(apply::ConfirmArgs),
    /// Detach from one interface; the last detach removes every pin.
    Detach(detach::Args),
    /// Detach from every interface and remove all pinned state.
    Uninstall(detach::UninstallArgs),
    /// Replay a pcap/pcapng capture through the real XDP program (BPF_PROG_TEST_RUN) and the
    /// reference model: counts, disagreements, ns/frame; or --live onto a veth pair.
    Replay(replay::Args),
    /// Follow drop samples live (daemon running or not), filtered by reason, rule, source
    /// prefix or interface; text or JSON lines.
    Observe(observe::Args),
    /// Write a realistic, seeded Kubernetes-node traffic capture (pcap or pcapng).
    GenTraffic(gen_traffic::Args),
    /// Write a rule file from the cloud's own policy: AWS security groups, an EKS cluster,
    /// AKS authorized IP ranges or an Azure NSG (exactly, or refused naming why).
    Import(import::Args),
    /// Mount a BPF filesystem at PATH unless one is there (what the Kubernetes kit's init
    /// container runs).
    MountBpffs(mount_bpffs::Args),
    /// Print a shell completion script.
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

/// A daemon's answer: on stdout and exit 0, or as an error on stderr and exit 1.
pub fn print_answer(answer: &filter_user::daemon::control::Answer, output: Output) -> ExitCode {
    match (answer.ok, output.is_json()) {
        (true, true) => {
            println!(
                "{}",
                serde_json::to_string(answer).expect("plain data serializes")
            );
        }
        (true, false) => println!("{}", answer.message),
        (false, _) => output::report(&anyhow::anyhow!("{}", answer.message), output),
    }
    if answer.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

impl Cli {
    /// Whether this is `nodegate run`, the daemon.
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Run(_))
    }
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let out = cli.output;
    match cli.command {
        Command::Check(args) => check::run(args, out),
        Command::Explain(args) => explain::run(args, out),
        Command::Run(args) => {
            text_only(out, "run", "its logs follow --log-format json")?;
            run::run(args)
        }
        Command::Reload(args) => reload::run(args, out),
        Command::Stats(args) => stats::run(args, out),
        Command::Status(args) => status::run(args, out),
        Command::Diff(args) => diff::run(args, out),
        Command::Apply(args) => apply::run(args, out),
        Command::Confirm(args) => apply::confirm(args, out),
        Command::Rollback(args) => apply::rollback(args, out),
        Command::Detach(args) => detach::run(args, out),
        Command::Uninstall(args) => detach::uninstall(args, out),
        Command::Replay(args) => replay::run(args, out),
        Command::Observe(args) => observe::run(args, out),
        Command::GenTraffic(args) => gen_traffic::run(args, out),
        Command::Import(args) => import::run(args, out),
        Command::MountBpffs(args) => mount_bpffs::run(args, out),
        Command::Completions { shell } => {
            text_only(out, "completions", "it prints a shell script")?;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "nodegate",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Refuse `-o json` for a command whose output is not a result.
pub(crate) fn text_only(out: Output, command: &str, why: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !out.is_json(),
        "`nodegate {command}` has no JSON output ({why}); leave out -o"
    );
    Ok(())
}

pub fn init_logging(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NODEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: journald, kubectl logs and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
