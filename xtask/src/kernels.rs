//! `cargo xtask kernels`: the kernel matrix. The privileged test binaries, built once on the
//! host, run inside Debian's 6.1 and 6.12 kernels booted under qemu with virtme-ng (the
//! guest sees the host's filesystem over 9p, so the binaries, the `nodegate` they start and
//! iproute2 are the host's), and natively on the host kernel.
//!
//! Facts this rests on (shared/TOOLCHAIN.md): Debian's `-amd64` kernels boot with
//! `vng -r /boot/vmlinuz-… --force-9p --disable-kvm` (the `-cloud-amd64` flavour lacks 9p;
//! KVM fails on a nested-virtualization MSR, so qemu emulates: slow, hence a suite chosen for
//! coverage per minute). virtme-ng needs busybox for its initramfs.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::cmd::{is_root, output, sh, workspace_root};

/// Debian packages the matrix needs: qemu, busybox (virtme-ng's initramfs), and the kernels
/// (`linux-image-amd64` is bookworm's 6.1; `linux-image-6.12-amd64` the 6.12 LTS).
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "linux-image-amd64",
    "linux-image-6.12-amd64",
];

/// virtme-ng from PyPI, pinned: the version these flags were verified with.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// The guest kernels, by the prefix of their /boot/vmlinuz-* release.
const GUEST_KERNELS: &[&str] = &["6.1.", "6.12."];

/// One test binary run of the suite.
struct Suite {
    /// What it covers, for the table.
    name: &'static str,
    /// The integration test target (filter-user/tests/<target>.rs).
    target: &'static str,
    /// libtest arguments of every run (skips, --nocapture).
    args: &'static [&'static str],
    /// The tests of the short run inside `cargo xtask test` (libtest name filters), or
    /// `None` for suites only the full matrix runs. Under emulation one program load costs
    /// about 20 s, so the short run picks one test per verdict class and lifecycle step.
    quick: Option<&'static [&'static str]>,
    /// Environment.
    env: &'static [(&'static str, &'static str)],
}

/// The in-kernel suite: verdicts, counters and lifecycle (timings are benchmarks, not tests).
const SUITES: &[Suite] = &[
    Suite {
        name: "TESTCASES via BPF_PROG_TEST_RUN",
        target: "kernel_packets",
        args: &[],
        quick: Some(&["a1_", "a7_", "b9_", "d17_", "e21_", "f23_", "g25_"]),
        env: &[],
    },
    Suite {
        name: "verifier headroom, return traffic, least privilege",
        target: "kernel_return_traffic",
        // The verifier counts are printed for the matrix's table.
        args: &["--nocapture"],
        quick: Some(&[
            "zz_verifier_instruction_counts",
            "loads_and_matches_with_the_least",
        ]),
        env: &[],
    },
    Suite {
        name: "differential (800 random frames, 2 rule sets; corpus in full)",
        target: "differential",
        args: &[],
        quick: Some(&["random_configs_and_frames"]),
        env: &[("NODEGATE_DIFF_CASES", "800")],
    },
    Suite {
        name: "veth: stateful return traffic, tc attach forms, EKS example",
        target: "veth_return_traffic",
        args: &[],
        quick: Some(&["clsact_form", "eks_example", "refused_before_any_change"]),
        env: &[],
    },
    Suite {
        name: "veth: attach, traffic, reload, SIGKILL + adoption, detach",
        target: "veth_lifecycle",
        args: &[],
        quick: Some(&["j33_"]),
        env: &[],
    },
    Suite {
        name: "veth: pins removed by hand, lost attachments put back",
        target: "veth_repairs",
        args: &[],
        // The attachment path, which differs per kernel (a clsact recorder before 6.6, TCX
        // after: the default recorder covers both).
        quick: Some(&["a_lost_attachment_is_put_back_never"]),
        env: &[],
    },
    Suite {
        name: "real binary under setpriv: promised capabilities × every BPF log level",
        target: "veth_privileges",
        args: &[],
        // The refusal without CAP_PERFMON at the default level; every level in the full matrix.
        quick: Some(&["without_cap_perfmon_at_the_default"]),
        env: &[],
    },
    Suite {
        name: "veth: confirmed changes, probes, rollback across SIGKILL",
        target: "veth_rollout",
        args: &[],
        // Userspace decides; the kernel's part (drop samples of a cut session) is the same
        // ring every suite reads. Full matrix only.
        quick: None,
        env: &[],
    },
    Suite {
        name: "egress recorder via BPF_PROG_TEST_RUN",
        target: "kernel_egress",
        args: &[],
        quick: None,
        env: &[],
    },
    Suite {
        name: "per-interface settings",
        target: "kernel_interfaces",
        args: &[],
        quick: None,
        env: &[],
    },
    Suite {
        name: "veth: fragments",
        target: "veth_fragments",
        args: &[],
        quick: None,
        env: &[],
    },
    Suite {
        name: "veth: interfaces",
        target: "veth_interfaces",
        args: &[],
        quick: None,
        env: &[],
    },
];

/// One suite's result on one kernel.
struct Row {
    kernel: String,
    suite: &'static str,
    passed: u32,
    failed: u32,
    ok: bool,
    seconds: f64,
}

/// Run the matrix. `quick`: the short suite on the guest kernels only (the host kernel runs
/// the whole privileged suite in `cargo xtask test` anyway). `only`: these test targets
/// (all when empty).
pub fn run(quick: bool, only: &[String]) -> anyhow::Result<()> {
    if let Some(unknown) = only
        .iter()
        .find(|t| !SUITES.iter().any(|s| s.target == t.as_str()))
    {
        bail!(
            "no suite runs the test target `{unknown}`; the matrix's targets: {}",
            SUITES
                .iter()
                .map(|s| s.target)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !is_root() {
        bail!("the kernel matrix boots kernels under qemu and attaches XDP inside them: run it as root (sudo -E cargo xtask kernels)");
    }
    crate::setup::run()?;
    let mut lines = Vec::new();
    crate::setup::install_debian_packages(PACKAGES, &mut lines)?;
    let vng = install_virtme_ng()?;
    eprintln!("kernels: {}", lines.join("; "));
    let binaries = build_test_binaries()?;
    let suites: Vec<&Suite> = SUITES
        .iter()
        .filter(|s| s.quick.is_some() || !quick)
        .filter(|s| only.is_empty() || only.iter().any(|t| t == s.target))
        .collect();

    let scratch = std::env::temp_dir().join(format!("nodegate-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut rows = Vec::new();
    let mut verifier = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        // The guests run side by side: emulation keeps each on about one host core.
        let mut guests = Vec::new();
        for prefix in GUEST_KERNELS {
            let image = guest_kernel(prefix)?;
            let release = image
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .unwrap_or("?")
                .to_string();
            let script = scratch.join(format!("suite-{release}.sh"));
            let guest_tmp = scratch.join(format!("tmp-{release}"));
            std::fs::create_dir_all(&guest_tmp)?;
            std::fs::write(
                &script,
                guest_script(&suites, &binaries, &guest_tmp, quick)?,
            )?;
            let guest = Guest {
                release,
                image,
                script,
                log: PathBuf::new(),
            };
            guests.push(boot(&vng, &scratch, guest, suites.len(), 0)?);
            // Two virtme-ng instances started in the same instant have failed to boot the
            // second (exit 255, no output); a few seconds apart they both come up.
            std::thread::sleep(Duration::from_secs(10));
        }
        // A hung test must not hold CI: the short run gets 30 minutes (it takes about 20
        // under emulation on 2 shared cores), the full one 3 hours.
        let limit = Duration::from_secs(if quick { 30 * 60 } else { 3 * 3600 });
        let mut second_tries = Vec::new();
        for (guest, child, started) in guests {
            let (parsed, died) = finish(&guest, child, started, limit, &suites)?;
            if died {
                // The VM itself went away (vng exit 255 with nothing on stderr, seen once
                // mid-suite under emulation) without a test failing: boot it once more.
                eprintln!(
                    "kernel {}: the VM ended without reporting every suite and without a failing test; booting it once more",
                    guest.release
                );
                second_tries.push(boot(&vng, &scratch, guest, suites.len(), 1)?);
            } else {
                verifier.extend(verifier_lines(&std::fs::read_to_string(&guest.log)?));
                rows.extend(parsed);
            }
        }
        for (guest, child, started) in second_tries {
            let (parsed, _) = finish(&guest, child, started, limit, &suites)?;
            verifier.extend(verifier_lines(&std::fs::read_to_string(&guest.log)?));
            rows.extend(parsed);
        }
        if !quick {
            let release = output("uname", &["-r"])
                .unwrap_or_default()
                .trim()
                .to_string();
            eprintln!("\n== kernel {release} (the host)");
            let (host_rows, host_verifier) = run_on_host(&release, &suites, &binaries)?;
            rows.extend(host_rows);
            verifier.extend(host_verifier);
        }
        Ok(())
    })();
    print_table(&rows);
    for line in &verifier {
        println!("{line}");
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} on {}", r.suite, r.kernel))
        .collect();
    let expected = suites.len() * (GUEST_KERNELS.len() + usize::from(!quick));
    result?;
    if !failed.is_empty() {
        bail!("kernel matrix: failed: {}", failed.join("; "));
    }
    if rows.len() != expected {
        bail!(
            "kernel matrix: {} of {expected} suite runs reported a result (see the logs above)",
            rows.len()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// `pip install` virtme-ng (idempotent) and return the path of `vng`.
fn install_virtme_ng() -> anyhow::Result<PathBuf> {
    let have = output("python3", &["-m", "pip", "show", "virtme-ng"])
        .is_some_and(|s| s.contains(&format!("Version: {}", &VIRTME_NG[11..])));
    if !have {
        sh(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--root-user-action=ignore",
            VIRTME_NG,
        ]))?;
    }
    let scripts = output(
        "python3",
        &[
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ],
    )
    .context("python3 is needed for virtme-ng")?;
    let vng = Path::new(scripts.trim()).join("vng");
    if !vng.exists() {
        bail!("virtme-ng installed, but {} is missing", vng.display());
    }
    Ok(vng)
}

/// `/boot/vmlinuz-<prefix>*-amd64`, the newest if several.
fn guest_kernel(prefix: &str) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("vmlinuz-{prefix}")) && n.ends_with("-amd64")
            })
        })
        .collect();
    found.sort();
    found.pop().with_context(|| {
        format!("no /boot/vmlinuz-{prefix}*-amd64: the kernel package did not install")
    })
}

/// Build the privileged test binaries once; map target name → executable.
fn build_test_binaries() -> anyhow::Result<Vec<(String, PathBuf)>> {
    let root = workspace_root();
    eprintln!("+ cargo test --no-run (privileged test binaries)");
    let out = crate::test::privileged_tests(&root)
        .args(["--tests", "--no-run", "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(name), Some(exe)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            if msg["target"]["kind"][0] == "test" {
                binaries.push((name.to_string(), PathBuf::from(exe)));
            }
        }
    }
    Ok(binaries)
}

fn binary<'a>(binaries: &'a [(String, PathBuf)], target: &str) -> anyhow::Result<&'a Path> {
    binaries
        .iter()
        .find(|(name, _)| name == target)
        .map(|(_, p)| p.as_path())
        .with_context(|| format!("no test binary for {target}"))
}

/// The command line of one suite, as a shell line.
fn command_line(
    suite: &Suite,
    binaries: &[(String, PathBuf)],
    quick: bool,
) -> anyhow::Result<String> {
    let mut line = String::new();
    for (k, v) in suite.env {
        line.push_str(&format!("{k}={v} "));
    }
    line.push_str(&binary(binaries, suite.target)?.display().to_string());
    line.push_str(" --test-threads=1");
    for a in suite.args.iter().chain(selection(suite, quick)) {
        line.push(' ');
        line.push_str(a);
    }
    Ok(line)
}

/// One guest kernel of the matrix.
struct Guest {
    release: String,
    image: PathBuf,
    script: PathBuf,
    /// Its output of the current attempt.
    log: PathBuf,
}

/// Boot `guest` under qemu running its suite script (attempt 0, or a retry), output to
/// a log file per attempt.
fn boot(
    vng: &Path,
    scratch: &Path,
    mut guest: Guest,
    suites: usize,
    attempt: u32,
) -> anyhow::Result<(Guest, std::process::Child, Instant)> {
    // Straight into a file, so a long run can be followed with `tail -f`.
    let name = match attempt {
        0 => format!("log-{}.txt", guest.release),
        n => format!("log-{}-retry{n}.txt", guest.release),
    };
    guest.log = scratch.join(name);
    eprintln!(
        "\n== kernel {} (qemu, emulated CPU): {suites} suites; guest output: {}",
        guest.release,
        guest.log.display()
    );
    let child = Command::new(vng)
        // Its own process group: a timeout kills vng and the qemu under it together.
        .process_group(0)
        .arg("-r")
        .arg(&guest.image)
        .args([
            "--force-9p",
            "--disable-kvm",
            "--cpus",
            "2",
            "--memory",
            "3G",
            "--rwdir",
        ])
        .arg(std::env::temp_dir())
        .arg("--")
        .arg(format!("bash {} < /dev/null", guest.script.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&guest.log)?)
        .stderr(std::fs::File::create(guest.log.with_extension("stderr"))?)
        .spawn()
        .context("failed to start vng")?;
    Ok((guest, child, Instant::now()))
}

/// Wait for `guest` (killing it past `limit`) and parse its results. `died`: the VM ended
/// abnormally with suites unreported and no test failing — not a verdict on nodegate.
fn finish(
    guest: &Guest,
    mut child: std::process::Child,
    started: Instant,
    limit: Duration,
    suites: &[&Suite],
) -> anyhow::Result<(Vec<Row>, bool)> {
    let (status, killed) = loop {
        if let Some(status) = child.try_wait()? {
            break (status, false);
        }
        if started.elapsed() > limit {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            break (child.wait()?, true);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = std::fs::read_to_string(&guest.log)?;
    let described = match killed {
        true => format!("killed after {} s", limit.as_secs()),
        false => status.to_string(),
    };
    eprintln!(
        "kernel {}: {} s in the VM ({described})",
        guest.release,
        started.elapsed().as_secs()
    );
    let parsed = parse(&text, &guest.release, suites);
    let complete = parsed.len() == suites.len();
    if parsed.iter().any(|r| !r.ok) || !complete {
        let stderr =
            std::fs::read_to_string(guest.log.with_extension("stderr")).unwrap_or_default();
        eprintln!("{}\n{}", tail(&text, 120), tail(&stderr, 20));
    }
    let died = !killed && !status.success() && !complete && parsed.iter().all(|r| r.ok);
    Ok((parsed, died))
}

/// The test filters of a run: the quick selection, or everything.
fn selection(suite: &Suite, quick: bool) -> &'static [&'static str] {
    match (quick, suite.quick) {
        (true, Some(filters)) => filters,
        _ => &[],
    }
}

/// The script the guest runs: bpffs, then each suite between markers the host parses.
fn guest_script(
    suites: &[&Suite],
    binaries: &[(String, PathBuf)],
    tmp: &Path,
    quick: bool,
) -> anyhow::Result<String> {
    let tmp = tmp
        .to_str()
        .context("the kernel matrix's scratch path is not UTF-8")?;
    // TMPDIR: the guest writes into the host's file system, and a guest that dies mid-test
    // (its tests' guards never run) must leave its scratch files where the matrix's own
    // clean-up removes them, not in the host's /tmp.
    let mut s = format!(
        "set -u\nmount -t bpf bpf /sys/fs/bpf 2>/dev/null\nip link set lo up\n\
         export TMPDIR='{tmp}'\ncd \"$TMPDIR\"\n\
         # Emulated CPU: the tests' waits (not the product's timeouts) get 10x patience.\n\
         export NODEGATE_TEST_TIME_SCALE=10\necho \"=== kernel $(uname -r)\"\n",
    );
    for (i, suite) in suites.iter().enumerate() {
        s.push_str(&format!(
            "start=$(date +%s%N)\n{} 2>&1\nrc=$?\necho \"=== suite {i} rc $rc ms $(( ($(date +%s%N) - start) / 1000000 ))\"\n",
            command_line(suite, binaries, quick)?
        ));
    }
    Ok(s)
}

/// Run the suites on the host kernel directly.
fn run_on_host(
    release: &str,
    suites: &[&Suite],
    binaries: &[(String, PathBuf)],
) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    let mut rows = Vec::new();
    let mut verifier = Vec::new();
    for suite in suites {
        let start = Instant::now();
        let mut cmd = Command::new(binary(binaries, suite.target)?);
        cmd.arg("--test-threads=1")
            .args(suite.args)
            .args(selection(suite, false))
            .envs(suite.env.iter().copied());
        let out = cmd.output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let (passed, failed) = counts(&text);
        verifier.extend(verifier_lines(&text));
        if !out.status.success() {
            eprintln!("{}", tail(&text, 80));
        }
        rows.push(Row {
            kernel: release.to_string(),
            suite: suite.name,
            passed,
            failed,
            ok: out.status.success() && passed > 0,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok((rows, verifier))
}

/// The verifier instruction counts the headroom test printed.
fn verifier_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.find("verified instructions on")
                .map(|i| l[i..].to_string())
        })
        .collect()
}

/// libtest's "test result: ok. N passed; M failed" lines of one run, summed.
fn counts(text: &str) -> (u32, u32) {
    let mut passed = 0;
    let mut failed = 0;
    for line in text.lines().filter(|l| l.starts_with("test result:")) {
        let number_before = |word: &str| {
            line.split(';')
                .find(|part| part.trim_end().ends_with(word))
                .and_then(|part| part.split_whitespace().rev().nth(1))
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        };
        passed += number_before("passed");
        failed += number_before("failed");
    }
    (passed, failed)
}

/// Split the guest's output at the suite markers.
fn parse(text: &str, release: &str, suites: &[&Suite]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("=== suite ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let index: usize = words
                .first()
                .and_then(|w| w.parse().ok())
                .unwrap_or(usize::MAX);
            let rc: i32 = words.get(2).and_then(|w| w.parse().ok()).unwrap_or(-1);
            let ms: f64 = words.get(4).and_then(|w| w.parse().ok()).unwrap_or(0.0);
            let seconds = ms / 1e3;
            if let Some(suite) = suites.get(index) {
                let (passed, failed) = counts(&section);
                rows.push(Row {
                    kernel: release.to_string(),
                    suite: suite.name,
                    passed,
                    failed,
                    ok: rc == 0 && passed > 0,
                    seconds,
                });
            }
            section.clear();
        } else {
            section.push_str(line);
            section.push('\n');
        }
    }
    rows
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn print_table(rows: &[Row]) {
    println!("\nkernel matrix");
    println!(
        "{:<28} {:<62} {:>7} {:>7} {:>9}",
        "KERNEL", "SUITE", "PASSED", "FAILED", "SECONDS"
    );
    for r in rows {
        println!(
            "{:<28} {:<62} {:>7} {:>7} {:>9.1}{}",
            r.kernel,
            r.suite,
            r.passed,
            r.failed,
            r.seconds,
            if r.ok { "" } else { "  FAILED" }
        );
    }
    let passed: u32 = rows.iter().map(|r| r.passed).sum();
    let failed: u32 = rows.iter().map(|r| r.failed).sum();
    let total: Duration = Duration::from_secs_f64(rows.iter().map(|r| r.seconds).sum());
    println!(
        "kernels: {passed} passed, {failed} failed ({} s of tests)",
        total.as_secs()
    );
}

/// Whether the kernel this runs on is at least `major.minor`.
pub fn host_kernel_at_least(want: (u32, u32)) -> bool {
    let release = output("uname", &["-r"]).unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_summaries_are_summed() {
        let text = "running 3 tests\ntest a ... ok\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; finished in 1.00s\n\
                    test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s\n";
        assert_eq!(counts(text), (4, 2));
    }

    #[test]
    fn guest_output_is_split_at_the_markers() {
        let suites: Vec<&Suite> = SUITES.iter().take(2).collect();
        let text = "=== kernel 6.1.0\ntest result: ok. 30 passed; 0 failed; 0 ignored\n=== suite 0 rc 0 ms 12500\n\
                    test result: FAILED. 2 passed; 1 failed; 0 ignored\n=== suite 1 rc 101 ms 3000\n";
        let rows = parse(text, "6.1.0", &suites);
        assert_eq!(rows.len(), 2);
        assert!(rows[0].ok && rows[0].passed == 30 && rows[0].seconds == 12.5);
        assert!(!rows[1].ok && rows[1].failed == 1);
    }

    #[test]
    fn guests_keep_scratch_files_in_the_matrix_directory() {
        let tmp = Path::new("/tmp/nodegate-kernels-1/tmp-6.1.0-57-amd64");
        let script = guest_script(&[], &[], tmp, true).unwrap();
        let export = script
            .find("export TMPDIR='/tmp/nodegate-kernels-1/tmp-6.1.0-57-amd64'\n")
            .expect("TMPDIR exported");
        // Before any suite runs.
        assert!(script.find("=== kernel").unwrap() > export);
        assert!(script.contains("cd \"$TMPDIR\""));
    }
}
