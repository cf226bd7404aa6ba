//! `cargo xtask demo`: the main job on a built-in default, end to end:
//! set-up → release build → a lab of two network namespaces joined by a veth pair →
//! `nodegate run` with examples/eks-node.yaml on the lab's node interface → a generated
//! Kubernetes-node traffic mix sent from the peer namespace → a reload in the middle →
//! counters → teardown (also on failure or Ctrl-C).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::cmd::{sh, workspace_root};

const NODE_NS: &str = "ng-demo-node";
const PEER_NS: &str = "ng-demo-peer";
const NODE_IF: &str = "ngdemo-node";
const PEER_IF: &str = "ngdemo-peer";
const PIN_DIR: &str = "/sys/fs/bpf/nodegate-demo";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Everything the demo creates; removed on drop whatever happened.
struct Lab {
    daemon: Option<Child>,
    nodegate: PathBuf,
    scratch: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = in_ns(NODE_NS, &self.nodegate)
            .args(["uninstall", "--pin-dir", PIN_DIR])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for ns in [NODE_NS, PEER_NS] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
        eprintln!("demo: lab removed (namespaces {NODE_NS}, {PEER_NS}, pins {PIN_DIR})");
    }
}

/// A command in a lab namespace. nsenter enters only the network namespace; `ip netns exec`
/// would also remount /sys and hide bpffs.
fn in_ns(ns: &str, program: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg(program);
    c
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    sh(Command::new("ip").args(args))
}

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    if !crate::cmd::is_root() {
        bail!("the demo creates network namespaces and attaches XDP: run it as root (sudo -E cargo xtask demo)");
    }
    let root = workspace_root();
    let nodegate = crate::cmd::build_release_nodegate()?;
    let config = root.join("examples/eks-node.yaml");

    // Ctrl-C: stop waiting, let Drop tear the lab down.
    let _ = ctrlc_flag();

    // Leftovers from an interrupted earlier run.
    for ns in [NODE_NS, PEER_NS] {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
    let scratch = std::env::temp_dir().join("nodegate-demo");
    std::fs::create_dir_all(&scratch)?;
    let mut lab = Lab {
        daemon: None,
        nodegate: nodegate.clone(),
        scratch: scratch.clone(),
    };

    eprintln!("\n== lab: namespaces {NODE_NS} (the node) and {PEER_NS} (control plane, clients, scanners)");
    ip(&["netns", "add", NODE_NS])?;
    ip(&["netns", "add", PEER_NS])?;
    ip(&[
        "link", "add", NODE_IF, "netns", NODE_NS, "type", "veth", "peer", "name", PEER_IF, "netns",
        PEER_NS,
    ])?;
    // The node sits in the EKS example's node subnet, the peer on a control-plane ENI address.
    ip(&[
        "-n",
        NODE_NS,
        "addr",
        "add",
        "10.0.32.10/16",
        "dev",
        NODE_IF,
    ])?;
    ip(&["-n", PEER_NS, "addr", "add", "10.0.0.5/16", "dev", PEER_IF])?;
    for (ns, ifname) in [(NODE_NS, NODE_IF), (PEER_NS, PEER_IF)] {
        ip(&["-n", ns, "link", "set", ifname, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }

    eprintln!(
        "\n== check the rules, then attach nodegate to {NODE_IF} with {}",
        config.display()
    );
    sh(Command::new(&nodegate).arg("check").arg(&config))?;
    let live_config = scratch.join("rules.yaml");
    std::fs::copy(&config, &live_config)?;
    let log = scratch.join("nodegate.log");
    let pid_file = scratch.join("nodegate.pid");
    let child = in_ns(NODE_NS, &nodegate)
        .args([
            "run",
            "--iface",
            NODE_IF,
            "--pin-dir",
            PIN_DIR,
            "--no-metrics",
        ])
        .arg("--config")
        .arg(&live_config)
        .arg("--pid-file")
        .arg(&pid_file)
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("failed to start nodegate run")?;
    lab.daemon = Some(child);
    wait_for(
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("running; reloads")
        },
        "nodegate run to start",
        &log,
    )?;
    print_log(&log);

    eprintln!("\n== traffic: a generated Kubernetes-node mix, sent from {PEER_NS}");
    let pcap = scratch.join("k8s-mix.pcap");
    sh(Command::new(&nodegate)
        .arg("gen-traffic")
        .arg(&pcap)
        .args(["--seed", "1", "--count", "2000"]))?;
    send(&nodegate, &pcap, &live_config)?;
    sh(in_ns(PEER_NS, Path::new("ping")).args(["-c", "3", "-i", "0.2", "-W", "1", "10.0.32.10"]))?;
    stats(&nodegate)?;

    eprintln!(
        "\n== reload: remove the `vpc-ping` rule from the file; the daemon notices and flips"
    );
    let text = std::fs::read_to_string(&live_config)?;
    std::fs::write(&live_config, without_rule(&text, "vpc-ping"))?;
    wait_for(
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("reloaded")
        },
        "the reload",
        &log,
    )?;
    print_log(&log);
    let ping = in_ns(PEER_NS, Path::new("ping"))
        .args(["-c", "2", "-i", "0.2", "-W", "1", "10.0.32.10"])
        .status()?;
    eprintln!(
        "ping after the reload: {}",
        if ping.success() {
            "answered (unexpected!)"
        } else {
            "dropped, as the new rules say"
        }
    );
    eprintln!("\n== observe: follow the drop samples live while the capture is sent again");
    // The daemon relays the samples it reads (it stays the ring's only reader).
    let mut observe = in_ns(NODE_NS, &nodegate)
        .args([
            "observe",
            "--pin-dir",
            PIN_DIR,
            "--count",
            "8",
            "--duration",
            "20",
        ])
        .spawn()
        .context("failed to start nodegate observe")?;
    // Let it subscribe before the traffic starts.
    std::thread::sleep(std::time::Duration::from_millis(300));
    send(&nodegate, &pcap, &live_config)?;
    let observed = observe.wait()?;
    anyhow::ensure!(observed.success(), "nodegate observe failed: {observed}");
    stats(&nodegate)?;
    drop(lab);
    eprintln!("\ndemo: done");
    Ok(())
}

/// The rule file without the rule named `name` (its `- name:` line up to the next rule).
fn without_rule(text: &str, name: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("- name:") {
            skipping = trimmed
                .trim_start_matches("- name:")
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                == name;
        } else if !line.starts_with(' ') && !line.is_empty() {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn send(nodegate: &Path, pcap: &Path, config: &Path) -> anyhow::Result<()> {
    // The live-frames generator runs on the peer's veth end; what it transmits arrives at
    // the node's XDP hook, where nodegate judges it.
    sh(Command::new(nodegate)
        .arg("replay")
        .arg(pcap)
        .arg("--config")
        .arg(config)
        .args([
            "--live",
            "--iface",
            PEER_IF,
            "--netns",
            PEER_NS,
            "--pin-dir",
            PIN_DIR,
        ]))
}

fn stats(nodegate: &Path) -> anyhow::Result<()> {
    eprintln!("\n== nodegate stats (read from the pinned maps)");
    sh(in_ns(NODE_NS, nodegate).args(["stats", "--pin-dir", PIN_DIR]))
}

fn print_log(log: &Path) {
    for line in std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        eprintln!("  nodegate| {line}");
    }
}

fn wait_for(mut ready: impl FnMut() -> bool, what: &str, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if INTERRUPTED.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for {what}; nodegate log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Turn SIGINT into a flag (and a clean teardown) instead of an abrupt exit.
fn ctrlc_flag() -> anyhow::Result<()> {
    extern "C" fn on_sigint(_: i32) {
        INTERRUPTED.store(true, Ordering::Relaxed);
    }
    extern "C" {
        fn signal(sig: i32, handler: extern "C" fn(i32)) -> usize;
    }
    // SAFETY: installing an async-signal-safe handler that only stores to an atomic.
    unsafe { signal(2, on_sigint) };
    Ok(())
}
