//! `cargo xtask test`: everything CI runs.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::cmd::{is_ci, is_root, sh, workspace_root};

pub fn run() -> anyhow::Result<()> {
    let mut clock = Stages::default();
    clock.begin("set-up");
    crate::setup::run()?;
    let root = workspace_root();

    clock.begin("lint: rustfmt and clippy (host workspace, then the BPF crate)");
    crate::lint::run()?;

    clock.begin("host tests (no privileges): unit, doc and config tests");
    if is_root() {
        // filter-user's unit, integration and example tests run below with the privileged
        // ones, single-threaded: built and run once instead of twice (it saved ~2 minutes
        // of CI). Here the other crates, and filter-user's doc tests (with the privileged
        // tests' feature, which adds test modules only, so the library built for them is
        // the one the privileged tests link).
        sh(&mut host_tests(&root))?;
        sh(privileged_tests(&root).arg("--doc"))?;
    } else {
        sh(Command::new("cargo")
            .current_dir(&root)
            .args(["test", "--workspace", "--locked"]))?;
    }

    clock.begin("privileged tests: BPF_PROG_TEST_RUN and veth/netns (single-threaded: they share kernel state)");
    if is_root() {
        // The library's own privileged unit tests (replay helpers) run here too.
        sh(privileged_tests(&root).args([
            "--lib",
            "--bins",
            "--examples",
            "--test",
            "*",
            "--",
            "--test-threads=1",
        ]))?;
        if crate::kernels::host_kernel_at_least((6, 18)) {
            clock.begin("the spectre-hardened variant (loaded with CAP_BPF + CAP_NET_ADMIN only, 6.18+): TESTCASES and the differential test again");
            sh(privileged_tests(&root)
                .env("NODEGATE_TEST_VARIANT", "spectre-hardened")
                .args([
                    "--test",
                    "kernel_packets",
                    "--test",
                    "differential",
                    "--",
                    "--test-threads=1",
                ]))?;
        }
        clock.begin("the container image (cargo xtask image), then its root filesystem run with exactly the DaemonSet's security context");
        crate::image::run(None)?;
        // The host tests' package selection, so that nothing is built again for it.
        sh(host_tests(&root).args(["--test", "image", "--", "--ignored", "--test-threads=1"]))?;
        clock.begin("benchmark smoke (--quick): every benchmark runs once and prints a number; not a speed check");
        crate::bench::run(true)?;
        clock.begin("fuzzing (20 s per target): config decoder, capture reader, reference model, kernel vs model");
        crate::fuzz::run(20, &[])?;
        clock.begin("kernel matrix (--quick): the short suite inside Debian's 6.1 and 6.12 kernels under qemu");
        crate::kernels::run(true, &[])?;
    } else if is_ci() {
        bail!("CI=true but not root: the privileged BPF and veth tests cannot run, and skipping them in CI is a failure");
    } else {
        eprintln!(
            "\n!!!!! SKIPPED the privileged BPF_PROG_TEST_RUN and veth tests: not root. Run `sudo -E cargo xtask test` to run them. !!!!!\n"
        );
    }
    clock.finish();
    Ok(())
}

/// Wall time per stage, printed as each stage ends and as a table at the end: CI has a
/// time budget (README), and the log then says which stage outgrew it.
#[derive(Default)]
struct Stages {
    done: Vec<(&'static str, Duration)>,
    current: Option<(&'static str, Instant)>,
}

impl Stages {
    /// End the running stage (if any) and start `name`.
    fn begin(&mut self, name: &'static str) {
        self.end_current();
        eprintln!("== {name}");
        self.current = Some((name, Instant::now()));
    }

    fn end_current(&mut self) {
        if let Some((name, start)) = self.current.take() {
            let took = start.elapsed();
            eprintln!("-- {:.0} s: {name}", took.as_secs_f64());
            self.done.push((name, took));
        }
    }

    /// End the last stage and print every stage's time with the total.
    fn finish(&mut self) {
        self.end_current();
        let total: Duration = self.done.iter().map(|(_, d)| *d).sum();
        eprintln!("== time per stage");
        for (name, took) in &self.done {
            let short = name.split(':').next().unwrap_or(name);
            eprintln!("{:>7.0} s  {short}", took.as_secs_f64());
        }
        eprintln!("{:>7.0} s  total", total.as_secs_f64());
    }
}

/// `cargo test` of every crate but filter-user (whose tests run with the privileged ones,
/// when root); the caller may add targets and test args.
fn host_tests(root: &std::path::Path) -> Command {
    cargo_test(
        root,
        &["--workspace", "--locked", "--exclude", "filter-user"],
    )
}

/// filter-user's feature that compiles in its privileged tests.
pub const PRIVILEGED_TESTS_FEATURE: &str = "privileged-tests";

/// `cargo test` of filter-user's privileged tests; the caller adds targets and test args.
pub fn privileged_tests(root: &std::path::Path) -> Command {
    cargo_test(
        root,
        &[
            "--locked",
            "-p",
            "filter-user",
            "--features",
            PRIVILEGED_TESTS_FEATURE,
        ],
    )
}

/// `cargo test` in the workspace with `args`.
fn cargo_test(root: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).arg("test").args(args);
    cmd
}
