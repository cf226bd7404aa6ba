//! `nodegate stats`: counters from the pinned maps.

use std::io::IsTerminal as _;
use std::{collections::HashMap, process::ExitCode, time::Duration};

use anyhow::Context;
use filter_user::loader::{
    attach::egress_programs, counters::Snapshot, features::KernelFeatures,
    interfaces::InterfaceState, pins::PinLayout, FilterMaps, EGRESS_PROGRAM,
};

use super::{output::Output, PinArgs};

/// Print counters.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pins: PinArgs,
    /// Refresh every second with per-second rates, until interrupted.
    #[arg(long)]
    watch: bool,
}

pub fn run(args: Args, out: Output) -> anyhow::Result<ExitCode> {
    let layout = PinLayout::new(&args.pins.pin_dir);
    layout.check()?;
    let maps = FilterMaps::open_pinned(&layout.maps_dir()).with_context(|| {
        format!(
            "failed to open nodegate's pinned maps under {} (is it attached? `nodegate run`)",
            layout.version_dir().display()
        )
    })?;
    // What the kernel offers does not change while we watch: probe once.
    let features = KernelFeatures::probe();
    let mut previous: Option<Snapshot> = None;
    loop {
        let attachments = attachments(&layout);
        // Re-read every round: a reload may change an interface's mode or default.
        let states = maps
            .interface_states()
            .context("failed to read the interface table")?;
        let names = iface_names(&states);
        let snap = maps.snapshot().context("failed to read counters")?;
        let control = maps.control().context("failed to read the control word")?;
        // Stateful return traffic: walks the flow table (evictions = inserts − entries).
        let flows = maps
            .flow_counts()
            .context("failed to read the flow table")?;
        let tables = maps
            .table_usage()
            .context("failed to read the lookup table settings")?;
        let variant = layout.recorded_variant().map(|v| v.name());
        if out.is_json() {
            let report = serde_json::json!({
                "kernel": features,
                "program_variant": variant,
                "attachments": attachments,
                "active_generation_slot": control.active_gen,
                "ready": control.ready != 0,
                "generations": snap.generations,
                "interfaces": states.iter().map(|s| serde_json::json!({
                    "interface": s.name, "ifindex": s.ifindex, "slot": s.slot, "mode": s.mode,
                    "default": s.default, "overridden": s.overridden,
                })).collect::<Vec<_>>(),
                "reasons": snap.reasons.iter().map(|r| serde_json::json!({
                    "interface": iface_name(&names, r.iface_slot), "reason": r.reason,
                    "verdict": verdict_of(r), "would_drop": r.would_drop,
                    "packets": r.packets, "bytes": r.bytes,
                })).collect::<Vec<_>>(),
                "rules": snap.rules.iter().map(|r| serde_json::json!({
                    "rule": r.name, "slot": r.slot, "would_drop": r.would_drop,
                    "packets": r.packets, "bytes": r.bytes,
                })).collect::<Vec<_>>(),
                "lookup_tables": tables,
                "flows": {
                    "entries": flows.entries,
                    "inserted": flows.inserts,
                    "refreshed": flows.refreshes,
                    "closing": flows.closing,
                    "evicted": flows.evictions,
                },
            });
            if args.watch {
                // A stream: one snapshot a line, whichever JSON spelling.
                let mut stdout = std::io::stdout().lock();
                super::output::line(&mut stdout, &report)?;
                std::io::Write::flush(&mut stdout)?;
            } else {
                out.document(&report)?;
            }
        } else {
            println!("{}", features.summary());
            println!("{}", variant_line(variant));
            print_attachments(&attachments);
            print_interfaces(&states);
            print_table(&snap, previous.as_ref(), &names, control.active_gen);
            let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
            for (family, t) in [("IPv4", tables.ipv4), ("IPv6", tables.ipv6)] {
                println!(
                    "\nlookup table {family}: {:.2} of {:.2} MiB per generation used ({:.1}%), {:.2} MiB of kernel memory (both generations)",
                    mib(t.bytes_used),
                    mib(t.bytes_per_generation),
                    100.0 * t.fill(),
                    mib(t.kernel_bytes)
                );
            }
            println!(
                "\nflow table (stateful return traffic): {} entries; inserted {}, refreshed {}, closing {}, evicted {} (inserted − entries)",
                flows.entries, flows.inserts, flows.refreshes, flows.closing, flows.evictions
            );
        }
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        previous = Some(snap);
        std::thread::sleep(Duration::from_secs(1));
        if out.is_json() {
            // One JSON object a line already separates the snapshots.
        } else if std::io::stdout().is_terminal() {
            print!("\x1b[2J\x1b[H");
        } else {
            // A pipe or a file: no escape sequences, a separator between snapshots.
            println!("\n---");
        }
    }
}

/// How each pinned interface is hooked: XDP through its pinned bpf_link, and the egress
/// flow recorder in the form the pins record, checked against what the kernel shows.
#[derive(serde::Serialize)]
struct Attachment {
    interface: String,
    xdp: &'static str,
    /// "tcx", "clsact", or null when no recorder is pinned.
    egress: Option<&'static str>,
    /// Whether the kernel shows nodegate's recorder on the interface in that form.
    egress_present: bool,
}

fn attachments(layout: &PinLayout) -> Vec<Attachment> {
    layout
        .pinned_links()
        .into_iter()
        .map(|ifname| {
            let hook = layout.egress_hook(&ifname);
            let egress_present = hook.is_some_and(|hook| {
                egress_programs(&ifname)
                    .iter()
                    .any(|(h, name)| *h == hook && name == EGRESS_PROGRAM)
            });
            Attachment {
                xdp: "bpf_link",
                egress: hook.map(|h| h.name()),
                egress_present,
                interface: ifname,
            }
        })
        .collect()
}

fn variant_line(variant: Option<&str>) -> String {
    match variant {
        Some(v @ "spectre-hardened") => format!(
            "program: {v} (loaded without CAP_PERFMON; grant it and restart `nodegate run` for full speed)"
        ),
        Some(v) => format!("program: {v}"),
        None => "program: variant not recorded (pinned by an older nodegate)".into(),
    }
}

fn print_attachments(attachments: &[Attachment]) {
    for a in attachments {
        let egress = match (a.egress, a.egress_present) {
            (Some(form), true) => format!("egress recorder via {form}"),
            (Some(form), false) => {
                format!("egress recorder via {form}, NOT FOUND on the interface (restart `nodegate run` to re-attach it)")
            }
            (None, _) => "no egress recorder".into(),
        };
        println!("attached {}: XDP via {}, {egress}", a.interface, a.xdp);
    }
}

/// Interface name per counter slot (slot 0: frames on interfaces nodegate did not register).
fn iface_names(states: &[InterfaceState]) -> HashMap<u32, String> {
    let mut names: HashMap<u32, String> = states.iter().map(|s| (s.slot, s.name.clone())).collect();
    names.insert(0, "(unregistered)".into());
    names
}

/// The name of interface counter slot `slot`.
fn iface_name(names: &HashMap<u32, String>, slot: u32) -> String {
    names
        .get(&slot)
        .cloned()
        .unwrap_or_else(|| format!("slot {slot}"))
}

/// What happened to the packets a reason counter counts: `pass` or `drop` (a monitor-mode
/// would-drop passes; its `would_drop` flag says what enforcing would do).
fn verdict_of(r: &filter_user::loader::counters::ReasonCount) -> &'static str {
    let drop = filter_common::Reason::from_name(r.reason).is_some_and(|x| x.is_drop());
    if drop && !r.would_drop {
        "drop"
    } else {
        "pass"
    }
}

fn print_interfaces(states: &[InterfaceState]) {
    for s in states {
        let source = if s.overridden {
            " (set by `interfaces:`)"
        } else {
            ""
        };
        println!(
            "interface {} (slot {}): {}, default {}{source}",
            s.name, s.slot, s.mode, s.default
        );
    }
}

fn print_table(
    snap: &Snapshot,
    previous: Option<&Snapshot>,
    names: &HashMap<u32, String>,
    generation: u32,
) {
    let rate = |now: u64, before: Option<u64>| {
        before
            .map(|b| format!("{:>10}/s", now.saturating_sub(b)))
            .unwrap_or_default()
    };
    println!(
        "active generation slot {generation}; packets judged per slot: {:?}",
        snap.generations
    );
    println!(
        "\n{:<18} {:<22} {:<10} {:>14} {:>16}",
        "INTERFACE", "REASON", "VERDICT", "PACKETS", "BYTES"
    );
    for r in &snap.reasons {
        let verdict = if r.would_drop {
            "would_drop"
        } else {
            verdict_of(r)
        };
        let before = previous
            .and_then(|p| {
                p.reasons.iter().find(|x| {
                    x.iface_slot == r.iface_slot
                        && x.reason == r.reason
                        && x.would_drop == r.would_drop
                })
            })
            .map(|x| x.packets);
        let iface = iface_name(names, r.iface_slot);
        println!(
            "{:<18} {:<22} {:<10} {:>14} {:>16} {}",
            iface,
            r.reason,
            verdict,
            r.packets,
            r.bytes,
            rate(r.packets, before)
        );
    }
    println!(
        "\n{:<40} {:<10} {:>14} {:>16}",
        "RULE", "VERDICT", "PACKETS", "BYTES"
    );
    for r in &snap.rules {
        let before = previous
            .and_then(|p| {
                p.rules
                    .iter()
                    .find(|x| x.slot == r.slot && x.would_drop == r.would_drop)
            })
            .map(|x| x.packets);
        let name = if r.name.is_empty() {
            format!("(slot {})", r.slot)
        } else {
            r.name.clone()
        };
        println!(
            "{:<40} {:<10} {:>14} {:>16} {}",
            name,
            if r.would_drop {
                "would_drop"
            } else {
                "matched"
            },
            r.packets,
            r.bytes,
            rate(r.packets, before)
        );
    }
}
