//! The privilege story of the README ("Requirements") checked with the shipped binary as its
//! own process, the way a container runtime starts it: `nodegate run` under `setpriv` with
//! exactly the capabilities a privilege set names (bounding, inheritable and ambient sets),
//! once per BPF log level the CLI offers (each level is a different program for the verifier:
//! aya-log's level is a load-time constant), on a lab veth, judging real frames.
//!
//! Promised, per kernel:
//! - root, and CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON (what the Kubernetes kit grants): every
//!   kernel; the program runs `native`;
//! - CAP_BPF + CAP_NET_ADMIN alone: from 6.18 (`common::LEAST_PRIVILEGE_FROM`), where the
//!   kernel hardens the program against Spectre v1 (`spectre-hardened`, several times the per-packet
//!   cost: docs/BENCHMARKS.md) and the daemon warns; before that the start is refused, the
//!   error names CAP_PERFMON, and nothing is attached.
//!
//! `nodegate stats --json` (`program_variant`) must name the variant that runs.
//!
//! Run: `cargo test -p filter-user --features privileged-tests --test veth_privileges` as root.
#![cfg(feature = "privileged-tests")]

mod common;

use std::time::Duration;

use common::daemon::{reason_total, Env};
use filter_user::craft::Frame;

/// `nodegate run --bpf-log-level` values (cli/run.rs `BpfLogLevel`).
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
const WITH_PERFMON: &[&str] = &["bpf", "net_admin", "perfmon"];
const WITHOUT_PERFMON: &[&str] = &["bpf", "net_admin"];

const RULES: &str = "version: 1
sets:
  lab: [192.0.2.0/24]
rules:
  - name: lab-https
    from: lab
    protocol: tcp
    ports: [443]
";

fn cap_number(name: &str) -> u32 {
    match name {
        "net_admin" => 12,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("no number for capability {other}"),
    }
}

/// A process's effective capability set (`CapEff` of /proc/PID/status).
fn effective_caps(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff line")
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

fn frame(src: &str, port: u16) -> Vec<u8> {
    Frame::tcp(
        src.parse().unwrap(),
        "192.0.2.1".parse().unwrap(),
        40000,
        port,
    )
    .syn()
    .build()
}

/// Start as root (`None`) or holding exactly `caps` at `level`, check the variant `stats`
/// reports, judge 8 allowed and 8 unlisted frames, stop (the filter stays), then detach so
/// the next start loads its own program instead of adopting this one.
fn runs_and_judges(env: &Env, caps: Option<&[&str]>, level: &str, variant: &str) {
    let config = env.write_config("rules.yaml", RULES);
    let what = format!("caps {caps:?}, --bpf-log-level {level}");
    let mut daemon = env.start_daemon_as(caps, &config, &["--bpf-log-level", level]);
    daemon.wait_for_log("enforcing", common::patience(Duration::from_secs(60)));
    if let Some(caps) = caps {
        assert_eq!(
            effective_caps(daemon.pid()),
            caps.iter().map(|c| 1u64 << cap_number(c)).sum::<u64>(),
            "{what}: the daemon holds exactly these capabilities"
        );
    }
    assert!(
        env.xdp_prog_id().is_some(),
        "{what}: no XDP program attached"
    );
    let stats = env.run(&["stats", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stats --json: {e}: {}",
            String::from_utf8_lossy(&stats.stderr)
        )
    });
    assert_eq!(json["program_variant"], variant, "{what}: stats");
    assert_eq!(
        daemon.log_text().contains("without CAP_PERFMON"),
        variant == "spectre-hardened",
        "{what}: the hardening warning is logged exactly when it applies:\n{}",
        daemon.log_text()
    );
    let before = env.snapshot();
    let sender = env.lab.peer_sender().unwrap();
    common::send_paced(&sender, &frame("192.0.2.9", 443), 8);
    common::send_paced(&sender, &frame("198.51.100.7", 443), 8);
    let deadline = std::time::Instant::now() + common::patience(Duration::from_secs(5));
    loop {
        let now = env.snapshot();
        let moved = |reason| reason_total(&now, reason).0 - reason_total(&before, reason).0;
        if moved("allow-rule") >= 8 && moved("no-source-match") >= 8 {
            assert_eq!(moved("allow-rule"), 8, "{what}");
            assert_eq!(moved("no-source-match"), 8, "{what}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: frames not judged: allow-rule +{}, no-source-match +{}\n{}",
            moved("allow-rule"),
            moved("no-source-match"),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.signal(libc::SIGTERM);
    assert!(
        daemon
            .wait(common::patience(Duration::from_secs(10)))
            .success(),
        "{what}"
    );
    let out = env.run(&["detach", "--iface", &env.lab.node_if]);
    assert!(
        out.status.success(),
        "{what}: detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        env.xdp_prog_id().is_none(),
        "{what}: still attached after detach"
    );
}

#[test]
fn the_daemon_runs_as_root_and_with_the_promised_capabilities_at_every_log_level() {
    let env = Env::new("priv");
    for level in LOG_LEVELS {
        runs_and_judges(&env, None, level, "native");
        runs_and_judges(&env, Some(WITH_PERFMON), level, "native");
    }
}

/// Without CAP_PERFMON at `levels`: the spectre-hardened variant from 6.18, a refusal that
/// names CAP_PERFMON with nothing attached before.
fn without_cap_perfmon(levels: &[&str]) {
    let env = Env::new("nopm");
    let config = env.write_config("rules.yaml", RULES);
    for &level in levels {
        if common::kernel_at_least(common::LEAST_PRIVILEGE_FROM) {
            runs_and_judges(&env, Some(WITHOUT_PERFMON), level, "spectre-hardened");
            continue;
        }
        let out = env.run_to_exit_as(Some(WITHOUT_PERFMON), &config, &["--bpf-log-level", level]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "level {level}: started without CAP_PERFMON: raise LEAST_PRIVILEGE_FROM and the README"
        );
        assert!(
            stderr.contains("CAP_PERFMON"),
            "level {level}: the refusal names the missing capability: {stderr}"
        );
        assert!(
            env.xdp_prog_id().is_none(),
            "level {level}: attached anyway"
        );
    }
}

/// The default level (`warn`); the short kernel matrix runs this one (a refused load still
/// costs the emulated verifier about a minute).
#[test]
fn without_cap_perfmon_at_the_default_log_level() {
    without_cap_perfmon(&["warn"]);
}

#[test]
fn without_cap_perfmon_at_the_other_log_levels() {
    let others: Vec<&str> = LOG_LEVELS.into_iter().filter(|l| *l != "warn").collect();
    without_cap_perfmon(&others);
}
