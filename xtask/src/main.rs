//! Project automation: `cargo xtask setup | test | demo | lint`. Orchestrates; the build
//! itself stays in cargo (filter-user/build.rs builds the XDP object).

mod bench;
mod cmd;
mod demo;
mod fuzz;
mod image;
mod install;
mod kernels;
mod knockout;
mod lint;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "nodegate project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (Debian packages, bpf-linker 0.13.0 for LLVM 22) and mount
    /// bpffs. Idempotent; prints what it did. On non-Debian systems prints the steps.
    Setup,
    /// Setup, then host unit tests, then the privileged BPF_PROG_TEST_RUN and veth/netns
    /// tests (single-threaded). With CI=true a privileged test that cannot run fails.
    Test,
    /// Setup, build, create a veth lab, attach nodegate with examples/eks-node.yaml, send a
    /// traffic mix from the peer namespace, print the counters, tear everything down.
    Demo,
    /// rustfmt check and clippy in two passes: host workspace, then the BPF crate.
    Lint,
    /// The kernel matrix: installs Debian's 6.1 and 6.12 kernels, qemu and virtme-ng, then
    /// runs the privileged suite (TESTCASES via BPF_PROG_TEST_RUN, verifier headroom, a small
    /// differential run, veth lifecycle and stateful return traffic) inside each kernel and
    /// on the host kernel; prints kernel × suite → passed, failed, seconds. Needs root.
    Kernels {
        /// The short suite on the guest kernels only (what `cargo xtask test` runs).
        #[arg(long)]
        quick: bool,
        /// Only these test targets (e.g. `--suite kernel_packets --suite veth_privileges`):
        /// the matrix for what a change touched, without the whole hour.
        #[arg(long = "suite", value_name = "TEST_TARGET")]
        suites: Vec<String>,
    },
    /// The container image: the release binary, `ip`, `tc` and their shared libraries from
    /// scratch, committed by buildah into target/image/nodegate.oci.tar (no registry, no
    /// network). `--rootfs DIR` only assembles the root filesystem (the Containerfile's step).
    Image {
        /// Assemble the root filesystem into DIR and stop.
        #[arg(long, value_name = "DIR")]
        rootfs: Option<std::path::PathBuf>,
    },
    /// Install on this host: the release binary in /usr/local/bin, the systemd unit, shell
    /// completions, and examples/eks-node.yaml as /etc/nodegate/rules.yaml unless one exists.
    Install {
        /// Install below this directory instead of / (packaging, tests).
        #[arg(long, value_name = "DIR", default_value = "/")]
        destdir: std::path::PathBuf,
    },
    /// Benchmarks of docs/BENCHMARKS.md: criterion (model, compiler, BPF_PROG_TEST_RUN),
    /// the veth pipeline against xdp-filter, nftables and iptables+ipset, and reload
    /// latency. Installs the peers if missing; needs root. Prints the tables.
    Bench {
        /// Every benchmark once, briefly (under 2 minutes after the build): a smoke test.
        #[arg(long)]
        quick: bool,
    },
    /// Coverage-guided fuzzing (libFuzzer, stable rustc): the config decoder, the capture
    /// reader, the reference model (with the snap-length oracle) and kernel vs model
    /// (BPF_PROG_TEST_RUN; root). Prints executions and corpus sizes; fails on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Only these targets (config, capture, model, kernel_vs_model).
        #[arg(long = "target", value_name = "TARGET")]
        targets: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run().map(|_| ()),
        Command::Test => test::run(),
        Command::Demo => demo::run(),
        Command::Lint => lint::run(),
        Command::Kernels { quick, suites } => kernels::run(quick, &suites),
        Command::Bench { quick } => bench::run(quick),
        Command::Image { rootfs } => image::run(rootfs),
        Command::Install { destdir } => install::run(&destdir),
        Command::Fuzz { seconds, targets } => fuzz::run(seconds, &targets),
    }
}
