//! `cargo xtask fuzz`: the coverage-guided fuzz targets of `fuzz/` under libFuzzer.
//!
//! The targets are built with stable rustc's SanitizerCoverage flags (what `cargo fuzz
//! build -s none` passes), so no nightly toolchain is needed; the XDP object is the one the
//! normal build made (`NODEGATE_EBPF_OBJECT`), never rebuilt with those flags. Seeds come
//! from the examples, the test fixtures, the capture corpus and generated traffic; each
//! target's working corpus stays in `target/fuzz-corpus/TARGET` between runs, and every
//! input in `fuzz/regressions/TARGET` (where a crash a fuzzer found goes, with its fix) is
//! replayed first and by `filter-user/tests/fuzz_regressions.rs`.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{bail, Context};

use crate::cmd::{build_release_nodegate, is_root, sh, workspace_root};

/// (target, dictionary, needs root)
const TARGETS: &[(&str, &str, bool)] = &[
    ("config", "config.dict", false),
    ("capture", "capture.dict", false),
    ("model", "frames.dict", false),
    ("kernel_vs_model", "frames.dict", true),
];

const HOST: &str = "x86_64-unknown-linux-gnu";

/// SanitizerCoverage for libFuzzer, as cargo-fuzz sets it (all stable flags).
const SANCOV: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
     -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
     -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cforce-frame-pointers";

/// What one target's run did.
struct Outcome {
    target: &'static str,
    seconds: f64,
    executions: u64,
    corpus: usize,
    failed: Option<String>,
}

/// Build the targets and run each for `seconds` (all, or those named in `only`).
pub fn run(seconds: u64, only: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    for name in only {
        if !TARGETS.iter().any(|(t, _, _)| t == name) {
            let known: Vec<&str> = TARGETS.iter().map(|t| t.0).collect();
            bail!(
                "no fuzz target {name:?}; the targets are {}",
                known.join(", ")
            );
        }
    }
    build_release_nodegate()?;
    let object = root.join("target/bpf/bpfel-unknown-none/release/nodegate");
    let build_dir = root.join("target/fuzz");
    sh(Command::new("cargo")
        .current_dir(root.join("fuzz"))
        .env("RUSTFLAGS", SANCOV)
        .env("CARGO_TARGET_DIR", &build_dir)
        .env("NODEGATE_EBPF_OBJECT", &object)
        .args(["build", "--release", "--locked", "--bins", "--target", HOST]))?;
    let bin = |name: &str| build_dir.join(HOST).join("release").join(name);

    let seeds = root.join("target/fuzz-seeds");
    let _ = std::fs::remove_dir_all(&seeds);
    // A debug build with the privileged tests' features: `cargo xtask test` has built
    // exactly that before fuzzing, where a release build of the example compiled filter-user
    // and aya again (~110 s of CI). The seeds take a moment to make either way.
    sh(Command::new("cargo")
        .current_dir(&root)
        .args([
            "run",
            "--locked",
            "-p",
            "filter-user",
            "--features",
            crate::test::PRIVILEGED_TESTS_FEATURE,
            "--example",
            "fuzz_seeds",
            "--",
        ])
        .arg(&seeds)
        .arg(root.join("examples"))
        .arg(root.join("filter-user/tests/fixtures"))
        .arg(root.join("../shared/corpus/tcpdump")))?;

    let mut outcomes = Vec::new();
    for &(target, dict, needs_root) in TARGETS {
        if !only.is_empty() && !only.iter().any(|o| o == target) {
            continue;
        }
        if needs_root && !is_root() {
            bail!("fuzz target {target} loads the XDP program (BPF_PROG_TEST_RUN): run as root");
        }
        outcomes.push(run_target(
            &root,
            &bin(target),
            target,
            dict,
            &seeds,
            seconds,
        )?);
    }
    println!(
        "\n| target | seconds | executions | exec/s | corpus | result |\n|---|---|---|---|---|---|"
    );
    for o in &outcomes {
        println!(
            "| {} | {:.0} | {} | {:.0} | {} | {} |",
            o.target,
            o.seconds,
            o.executions,
            o.executions as f64 / o.seconds.max(1e-9),
            o.corpus,
            o.failed.as_deref().unwrap_or("no crash")
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failed.is_some())
        .map(|o| o.target)
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {}; the inputs are in target/fuzz-artifacts/TARGET (reproduce: \
             target/fuzz/{HOST}/release/TARGET FILE; fix, then add the file to fuzz/regressions/TARGET)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn run_target(
    root: &Path,
    bin: &Path,
    target: &'static str,
    dict: &str,
    seeds: &Path,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let corpus = root.join("target/fuzz-corpus").join(target);
    let artifacts = root.join("target/fuzz-artifacts").join(target);
    let regressions = root.join("fuzz/regressions").join(target);
    for dir in [&corpus, &artifacts, &regressions] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let log = root
        .join("target/fuzz-artifacts")
        .join(format!("{target}.log"));
    eprintln!("== fuzz {target} for {seconds} s");
    let start = Instant::now();
    let status = Command::new(bin)
        .arg(&corpus)
        .arg(seeds.join(target))
        .arg(&regressions)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!(
            "-dict={}",
            root.join("fuzz/dict").join(dict).display()
        ))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args([
            "-print_final_stats=1",
            "-max_len=8192",
            "-timeout=10",
            "-rss_limit_mb=4096",
        ])
        .stderr(std::fs::File::create(&log)?)
        .status()
        .with_context(|| format!("start {}", bin.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let stat = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let corpus_size = std::fs::read_dir(&corpus).map_or(0, |d| d.count());
    let failed = (!status.success()).then(|| {
        let summary = text
            .lines()
            .filter(|l| {
                l.contains("ERROR") || l.contains("panicked") || l.contains("Test unit written")
            })
            .take(4)
            .collect::<Vec<_>>()
            .join(" / ");
        format!("FAILED ({status}): {summary}; log {}", log.display())
    });
    Ok(Outcome {
        target,
        seconds,
        executions: stat("number_of_executed_units"),
        corpus: corpus_size,
        failed,
    })
}
