//! `nodegate status`: what is loaded, from where, and whether it is what the operator asked
//! for — the daemon's account (over its control socket) joined with the pinned state.
//!
//! Exit status, usable as a Kubernetes exec probe:
//! - 0: a daemon owns the pins, is ready, and enforces the file that is on disk now;
//! - 2: the filter is installed but something needs attention: no daemon (the pinned filter
//!   enforces on its own), not ready, or the file on disk differs from the active one;
//! - 3: nothing is installed under the pin directory;
//! - 1: the state could not be read.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use anyhow::Context;
use filter_user::{
    config::{content_hash, read_rule_file},
    daemon::{
        control::{self, ControlError, DaemonStatus, RuleSummary},
        owner::RUN_DIR,
        rollout::{Phase, RolloutStatus},
    },
    loader::{attach::attached_mode, pins::PinLayout, FilterMaps, TableUsage},
};
use serde::Serialize;

use super::{output::Output, PinArgs};

/// Show what is loaded and whether it is healthy.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pins: PinArgs,
}

/// One rule's counters (every rule of the active generation, also those that never matched).
#[derive(Serialize)]
struct RuleStatus {
    /// Its name (`rule`, as everywhere in JSON output).
    #[serde(rename = "rule")]
    name: String,
    kind: Option<String>,
    /// IPv4 and IPv6 source prefixes it lists (known with a daemon).
    sources: Option<(usize, usize)>,
    slot: u16,
    packets: u64,
    bytes: u64,
    /// Monitor mode: packets the rule would have dropped.
    would_drop_packets: u64,
}

#[derive(Serialize)]
struct Status {
    pin_dir: String,
    installed: bool,
    /// The daemon's own account; `None` when no daemon owns the pins.
    daemon: Option<DaemonStatus>,
    /// Whether the rule file on disk is the one the active generation came from.
    config_on_disk_matches: Option<bool>,
    /// Interfaces with a pinned link and the XDP mode the kernel reports.
    interfaces: BTreeMap<String, Option<&'static str>>,
    program_variant: Option<&'static str>,
    active_generation_slot: Option<u32>,
    /// Epoch of the generation packets are judged by, read from the pins (with or without
    /// a daemon).
    active_epoch: Option<u64>,
    rules: Vec<RuleStatus>,
    tables: Option<TableUsage>,
    healthy: bool,
    problems: Vec<String>,
}

pub fn run(args: Args, out: Output) -> anyhow::Result<ExitCode> {
    let layout = PinLayout::new(&args.pins.pin_dir);
    layout.check()?;
    let installed = layout
        .version_dir()
        .try_exists()
        .with_context(|| format!("cannot read {}; status needs root", layout.root().display()))?;
    let mut problems = Vec::new();
    let daemon = match control::ask_status(RUN_DIR.as_ref(), &layout, Duration::from_secs(10)) {
        Ok(status) => Some(status),
        Err(ControlError::NoDaemon { .. }) => {
            if installed {
                problems.push(
                    "no `nodegate run` owns the pins: the pinned filter enforces its last rules, \
                     nothing reloads them"
                        .to_string(),
                );
            }
            None
        }
        Err(err) => return Err(err.into()),
    };
    let config_on_disk_matches = daemon.as_ref().map(|d| {
        let on_disk = read_rule_file(&d.config)
            .ok()
            .map(|b| format!("{:016x}", content_hash(&b)));
        on_disk.is_some() && on_disk == d.config_hash
    });
    if let Some(d) = &daemon {
        if let Some(why) = &d.not_ready {
            problems.push(format!("not ready: {why}"));
        }
        let pending = d.rollout.as_ref().filter(|r| r.phase == Phase::Pending);
        if let Some(r) = pending {
            problems.push(format!(
                "a change from {} is on probation until unix {}: `nodegate confirm` keeps it, `nodegate rollback` flips back now",
                r.source.display(),
                r.deadline
            ));
        } else if config_on_disk_matches == Some(false) {
            problems.push(format!(
                "{} on disk differs from the file the active rules came from (a reload is pending or was rejected)",
                d.config.display()
            ));
        }
    }

    let mut status = Status {
        pin_dir: layout.root().display().to_string(),
        installed,
        daemon,
        config_on_disk_matches,
        interfaces: BTreeMap::new(),
        program_variant: None,
        active_generation_slot: None,
        active_epoch: None,
        rules: Vec::new(),
        tables: None,
        healthy: false,
        problems,
    };
    if installed {
        let maps = FilterMaps::open_pinned(&layout.maps_dir()).with_context(|| {
            format!(
                "failed to open the pinned maps under {}",
                layout.version_dir().display()
            )
        })?;
        for ifname in layout.pinned_links() {
            let mode = attached_mode(&ifname);
            status.interfaces.insert(ifname, mode);
        }
        status.program_variant = layout.recorded_variant().map(|v| v.name());
        status.active_generation_slot = Some(
            maps.control()
                .context("failed to read the control word")?
                .active_gen,
        );
        status.active_epoch = maps
            .active_epoch()
            .context("failed to read the active generation")?;
        status.tables = Some(
            maps.table_usage()
                .context("failed to read the table settings")?,
        );
        let snap = maps.snapshot().context("failed to read counters")?;
        let known: BTreeMap<&str, &RuleSummary> = status
            .daemon
            .iter()
            .flat_map(|d| d.rules.iter().map(|r| (r.name.as_str(), r)))
            .collect();
        for (name, slot) in maps.pinned_rule_slots() {
            // With a daemon, its active rules; without, every named slot.
            if !known.is_empty() && !known.contains_key(name.as_str()) {
                continue;
            }
            let count = |would_drop: bool| {
                snap.rules
                    .iter()
                    .filter(|r| r.slot == u32::from(slot) && r.would_drop == would_drop)
                    .fold((0, 0), |(p, b), r| (p + r.packets, b + r.bytes))
            };
            let ((packets, bytes), (would_drop_packets, _)) = (count(false), count(true));
            let rule = known.get(name.as_str());
            status.rules.push(RuleStatus {
                kind: rule.map(|r| r.kind.clone()),
                sources: rule.map(|r| (r.ipv4_sources, r.ipv6_sources)),
                name,
                slot,
                packets,
                bytes,
                would_drop_packets,
            });
        }
        status.rules.sort_by_key(|r| r.slot);
    } else {
        status
            .problems
            .push(format!("nothing installed under {}", status.pin_dir));
    }
    status.healthy = status.installed && status.daemon.is_some() && status.problems.is_empty();

    if out.is_json() {
        out.document(&status)?;
    } else {
        print_text(&status);
    }
    Ok(ExitCode::from(if status.healthy {
        0
    } else if status.installed {
        2
    } else {
        3
    }))
}

fn print_rollout(r: &RolloutStatus) {
    match r.phase {
        Phase::Pending => println!(
            "probation       the change from {} rolls back at unix {} unless {}",
            r.source.display(),
            r.deadline,
            if r.probes.is_empty() {
                "`nodegate confirm` comes first".to_string()
            } else {
                format!("its probes keep passing ({} in use)", r.probes.len())
            }
        ),
        Phase::RolledBack => println!(
            "rolled back     the change from {}: {}",
            r.source.display(),
            r.reason.as_deref().unwrap_or("?")
        ),
    }
    for o in &r.last_round {
        let result = if o.passed { "passes" } else { "FAILS" };
        println!("probe           {} {result}: {}", o.probe, o.detail);
    }
}

fn print_text(s: &Status) {
    println!("pin directory   {}", s.pin_dir);
    match &s.daemon {
        Some(d) => {
            println!(
                "daemon          pid {}, variant {}",
                d.pid, d.program_variant
            );
            println!(
                "rule file       {} (fnv1a64 {}; on disk: {})",
                d.config.display(),
                d.config_hash.as_deref().unwrap_or("?"),
                match s.config_on_disk_matches {
                    Some(true) => "the same",
                    Some(false) => "DIFFERENT",
                    None => "?",
                }
            );
            println!(
                "active epoch    {} (published at unix {}), reloads {} ok / {} rejected",
                d.epoch,
                d.published_at
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into()),
                d.reloads_ok,
                d.reloads_failed
            );
            if let Some(err) = &d.last_reload_error {
                println!("last reload     REJECTED: {err}");
            }
            if let Some(r) = &d.rollout {
                print_rollout(r);
            }
            for set in &d.sets {
                println!(
                    "set             {}: {} IPv4 and {} IPv6 prefixes",
                    set.name, set.ipv4, set.ipv6
                );
            }
            for e in d.history.iter().rev().take(5) {
                let what = match (e.published, e.note) {
                    (true, _) => format!("epoch {} published", e.epoch),
                    (false, true) => format!("epoch {}", e.epoch),
                    (false, false) => "rejected".to_string(),
                };
                let detail = e.detail.lines().next().unwrap_or("");
                println!(
                    "history         unix {} {}: {what}: {detail}",
                    e.at, e.trigger
                );
            }
        }
        None => {
            println!("daemon          none");
            if let Some(epoch) = s.active_epoch {
                println!("active epoch    {epoch} (from the pins)");
            }
        }
    }
    for (name, mode) in &s.interfaces {
        println!("interface       {name}: XDP {}", mode.unwrap_or("?"));
    }
    if let Some(t) = &s.tables {
        println!(
            "source tables   IPv4 {:.1}% of {} KiB, IPv6 {:.1}% of {} KiB per generation",
            t.ipv4.fill() * 100.0,
            t.ipv4.bytes_per_generation / 1024,
            t.ipv6.fill() * 100.0,
            t.ipv6.bytes_per_generation / 1024
        );
    }
    if !s.rules.is_empty() {
        println!(
            "{:<32} {:<9} {:>15} {:>12} {:>14} {:>12}",
            "rule", "kind", "sources v4/v6", "packets", "bytes", "would drop"
        );
        for r in &s.rules {
            let sources = r
                .sources
                .map_or_else(|| "-".to_string(), |(v4, v6)| format!("{v4}/{v6}"));
            println!(
                "{:<32} {:<9} {:>15} {:>12} {:>14} {:>12}",
                r.name,
                r.kind.as_deref().unwrap_or("-"),
                sources,
                r.packets,
                r.bytes,
                r.would_drop_packets
            );
        }
    }
    if s.problems.is_empty() {
        println!("status          healthy");
    }
    for p in &s.problems {
        println!("problem         {p}");
    }
}
