//! `nodegate run`: attach and keep enforcing.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use filter_user::{
    config::CapacityOverride,
    daemon::run::RunOptions,
    loader::{attach::XdpModeChoice, features::EgressChoice, pins::PinLayout},
    policy::PrefixCapacity,
};

use super::PinArgs;

/// XDP attach mode.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Mode {
    /// Driver mode, falling back to generic with a warning when the driver lacks XDP.
    Auto,
    /// Driver (native) mode only: fail if the driver cannot.
    Driver,
    /// Generic (skb) mode: works everywhere, runs later and slower.
    Generic,
}

/// aya-log levels.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BpfLogLevel {
    /// Nothing.
    Off,
    /// Errors.
    Error,
    /// Warnings and errors.
    Warn,
    /// Informational.
    Info,
    /// Debug.
    Debug,
    /// Everything.
    Trace,
}

/// `--egress-attach`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum EgressAttach {
    /// TCX where the kernel has it (6.6+), else clsact.
    Auto,
    /// TCX links only.
    Tcx,
    /// A clsact qdisc with a BPF filter (every kernel).
    Clsact,
}

/// Attach and enforce.
#[derive(clap::Args)]
pub struct Args {
    /// The rule file (YAML). Watched: edits, atomic renames and ConfigMap symlink swaps reload it.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Interface to attach to (repeat for several).
    #[arg(long = "iface", value_name = "IF", required = true)]
    ifaces: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    xdp_mode: Mode,
    /// How the egress flow recorder (stateful return traffic) is hooked on interfaces it is
    /// not yet on: `auto` uses a TCX link where the kernel has TCX (6.6+) and a clsact qdisc
    /// filter elsewhere. An interface adopted from an earlier run keeps its form.
    #[arg(long, value_enum, default_value_t = EgressAttach::Auto)]
    egress_attach: EgressAttach,
    /// Serve Prometheus metrics here. Defaults to 127.0.0.1:9864; a non-loopback address
    /// exposes counters to the network and must be given explicitly.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Do not serve metrics.
    #[arg(long, conflicts_with = "metrics")]
    no_metrics: bool,
    #[command(flatten)]
    pins: PinArgs,
    /// Where to write the daemon's PID (for the operator; nodegate itself never reads it).
    /// Default: /run/nodegate/<pin dir>.pid, beside the owner lock, so daemons of different
    /// pin directories never share one.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Most verbose log level of the BPF programs' own diagnostics (aya-log; only on error
    /// and slow paths, never per packet), fixed when the program is loaded.
    #[arg(long, value_enum, default_value_t = BpfLogLevel::Warn)]
    bpf_log_level: BpfLogLevel,
    /// IPv4 source prefixes the lookup tables are created for (replaces the file's
    /// `capacity.ipv4_prefixes`; default 131072). Memory: 32 bytes a prefix per generation.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(PrefixCapacity::MAX_IPV4)))]
    ipv4_capacity: Option<u32>,
    /// IPv6 source prefixes the lookup tables are created for (replaces the file's
    /// `capacity.ipv6_prefixes`; default 32768). Memory: 64 bytes a prefix per generation.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(PrefixCapacity::MAX_IPV6)))]
    ipv6_capacity: Option<u32>,
    /// Quiet period after a file change before reloading (bursts of writes become one reload).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    debounce_ms: u64,
    /// When another `nodegate run` owns the pin directory, wait up to this long for it to
    /// exit and then take over (a rolling update's handover; the filter keeps enforcing in
    /// between). 0 refuses at once, naming the owner's PID.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    owner_wait: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = RunOptions {
        capacity: CapacityOverride {
            ipv4: args.ipv4_capacity,
            ipv6: args.ipv6_capacity,
        },
        config: args.config,
        ifaces: args.ifaces,
        xdp_mode: match args.xdp_mode {
            Mode::Auto => XdpModeChoice::Auto,
            Mode::Driver => XdpModeChoice::Driver,
            Mode::Generic => XdpModeChoice::Generic,
        },
        egress: match args.egress_attach {
            EgressAttach::Auto => EgressChoice::Auto,
            EgressAttach::Tcx => EgressChoice::Tcx,
            EgressAttach::Clsact => EgressChoice::Clsact,
        },
        metrics: if args.no_metrics {
            None
        } else {
            Some(
                args.metrics
                    .unwrap_or(filter_user::daemon::DEFAULT_METRICS_ADDR),
            )
        },
        metrics_explicit: args.metrics.is_some(),
        pins: PinLayout::new(args.pins.pin_dir),
        pid_file: args.pid_file,
        debounce: std::time::Duration::from_millis(args.debounce_ms),
        bpf_log_level: args.bpf_log_level as u8,
        owner_wait: std::time::Duration::from_secs(args.owner_wait),
        run_dir: filter_user::daemon::owner::RUN_DIR.into(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(filter_user::daemon::run::run(options))?;
    Ok(ExitCode::SUCCESS)
}
