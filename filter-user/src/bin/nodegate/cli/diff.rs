//! `nodegate diff`: what loading a rule file would change against the running rules.
//!
//! The running rules are the text the daemon recorded when it published the active
//! generation (`/run/nodegate/<pin dir>.active.yaml`, kept when the daemon exits), or the
//! file given with `--against`. Exit status as diff(1): 0 no change, 1 changes, 2 trouble.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use filter_user::{
    config,
    daemon::{control, established::Established, owner::RUN_DIR, run::active_rules_path},
    diff::{
        connections_cut, diff_files, flows_cut, needed_on_this_node, recent_drops_flipped, Diff,
        Probe,
    },
    loader::{pins::PinLayout, FilterMaps},
    model::ProbeProtocol,
};

use super::{output::Output, PinArgs};

#[derive(clap::Args)]
pub struct Args {
    /// The rule file you mean to load.
    file: PathBuf,
    /// Compare against this file instead of the rules the running daemon published.
    #[arg(long, value_name = "FILE")]
    against: Option<PathBuf>,
    /// A packet whose verdict to compare: PROTO:ADDR[:PORT], e.g. `tcp:10.0.0.5:443`,
    /// `icmp:10.0.0.5:8`, `udp:[2001:db8::53]:53` (repeatable). Probes that keep their
    /// verdict are listed too.
    #[arg(long, value_name = "PROTO:ADDR[:PORT]", value_parser = parse_probe)]
    probe: Vec<Probe>,
    #[command(flatten)]
    pins: PinArgs,
    /// The resolver configuration whose nameservers' DNS replies must keep passing.
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Where the routing tables are read (`route`, `ipv6_route`): the default gateways'
    /// echo replies must keep passing.
    #[arg(long, value_name = "DIR", default_value = "/proc/net")]
    proc_net: PathBuf,
    /// Refuse (exit 2) when the new rules would cut off the SSH session this runs in
    /// (`SSH_CONNECTION`), the resolvers' DNS replies, the default gateways' echo replies or
    /// the control plane (a `control-plane` set) on tcp 443/10250; without it a warning.
    #[arg(long)]
    strict: bool,
}

fn parse_probe(text: &str) -> Result<Probe, String> {
    let (proto, rest) = text
        .split_once(':')
        .ok_or("expected PROTO:ADDR[:PORT], e.g. tcp:10.0.0.5:443")?;
    let proto: ProbeProtocol = proto.parse().map_err(|e| format!("{e}"))?;
    let (addr, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (addr, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address with a port goes in brackets: udp:[2001:db8::1]:53")?;
        (addr, after.strip_prefix(':'))
    } else if rest.parse::<IpAddr>().is_ok() {
        (rest, None)
    } else {
        match rest.rsplit_once(':') {
            Some((addr, port)) => (addr, Some(port)),
            None => (rest, None),
        }
    };
    let src: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("{p:?} is not a port or ICMP type"))?,
        None => 0,
    };
    Ok(Probe { src, proto, port })
}

pub fn run(args: Args, out: Output) -> anyhow::Result<ExitCode> {
    match compare(&args) {
        Ok(d) => {
            if out.is_json() {
                out.document(&d)?;
            } else {
                print_text(&d);
            }
            if args.strict && !d.lockout.is_empty() {
                let refused = anyhow::anyhow!("refused (--strict): the new rules would cut off what this node needs (see the lockout warnings)");
                super::output::report(&refused, out);
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::from(if d.is_empty() { 0 } else { 1 }))
        }
        Err(err) => {
            super::output::report(&err, out);
            Ok(ExitCode::from(2))
        }
    }
}

fn compare(args: &Args) -> anyhow::Result<Diff> {
    let against = match &args.against {
        Some(file) => file.clone(),
        None => {
            let recorded = active_rules_path(RUN_DIR.as_ref(), &PinLayout::new(&args.pins.pin_dir));
            if !recorded.try_exists().unwrap_or(false) {
                bail!(
                    "no running rules recorded at {} (written by `nodegate run` when it publishes); \
                     start the daemon, or compare with --against FILE",
                    recorded.display()
                );
            }
            recorded
        }
    };
    let old = config::load_file(&against)
        .with_context(|| format!("the running rules ({}) do not load", against.display()))?;
    let new = config::load_file(&args.file)
        .with_context(|| format!("{} is rejected", args.file.display()))?;
    let needed = needed_on_this_node(&args.resolv_conf, &args.proc_net, &[&old, &new]);
    let mut d = diff_files(&old, &new, &args.probe, &needed);
    d.connections = connections_cut(&old.policy, &new.policy, &established_here());
    d.flows = flows_cut(&old.policy, &new.policy, &open_flows(&args.pins));
    d.recent_drops = recent_drops_flipped(&old.policy, &new.policy, &recent_drops(&args.pins));
    Ok(d)
}

/// The packets the running daemon's drop samples showed lately (none without a daemon).
fn recent_drops(pins: &PinArgs) -> Vec<Probe> {
    let layout = PinLayout::new(&pins.pin_dir);
    let Ok(status) = control::ask_status(RUN_DIR.as_ref(), &layout, Duration::from_secs(5)) else {
        return Vec::new();
    };
    status
        .recent_drops
        .iter()
        .map(|p| Probe {
            src: p.src,
            proto: ProbeProtocol::from_number(p.proto),
            port: p.port,
        })
        .collect()
}

/// Flows kept in the pinned flow table, at most this many judged.
const MAX_FLOWS: usize = 4096;

/// One reply packet of every flow the pinned flow table holds (none when nothing is
/// installed or the table cannot be read: the rest of the diff does not need it).
fn open_flows(pins: &PinArgs) -> Vec<Probe> {
    let layout = PinLayout::new(&pins.pin_dir);
    let Ok(maps) = FilterMaps::open_pinned(&layout.maps_dir()) else {
        return Vec::new();
    };
    maps.flow_keys(MAX_FLOWS)
        .into_iter()
        .filter_map(|k| {
            let src = match k.family {
                4 => IpAddr::from([k.remote[0], k.remote[1], k.remote[2], k.remote[3]]),
                6 => IpAddr::from(k.remote),
                _ => return None,
            };
            // An ICMP flow is an echo: its reply is an echo reply.
            let (proto, port) = match (k.proto, k.family) {
                (6, _) => (ProbeProtocol::Tcp, k.local_port),
                (17, _) => (ProbeProtocol::Udp, k.local_port),
                (_, 4) => (ProbeProtocol::Icmp, 0),
                (_, _) => (ProbeProtocol::Icmpv6, 129),
            };
            Some(Probe { src, proto, port })
        })
        .collect()
}

/// One inbound packet of every TCP connection this node has established now.
fn established_here() -> Vec<Probe> {
    Established::snapshot()
        .iter()
        .map(|c| Probe {
            src: c.remote.ip(),
            proto: ProbeProtocol::Tcp,
            port: c.local_port,
        })
        .collect()
}

fn probe_name(p: ProbeProtocol) -> &'static str {
    match p {
        ProbeProtocol::Tcp => "tcp",
        ProbeProtocol::Udp => "udp",
        ProbeProtocol::Icmp => "icmp",
        ProbeProtocol::Icmpv6 => "icmpv6",
        ProbeProtocol::Ip(_) => "ip",
    }
}

/// At most 20 flipped packets of one kind, then how many more.
fn print_flips(label: &str, what: &str, flips: &[filter_user::diff::VerdictChange]) {
    for f in flips.iter().take(20) {
        println!(
            "{label:<9} {} from {} to port/type {} ({what}): {} → {}",
            probe_name(f.probe.proto),
            f.probe.src,
            f.probe.port,
            f.before,
            f.after
        );
    }
    if flips.len() > 20 {
        println!("{label:<9} … and {} more", flips.len() - 20);
    }
}

fn print_text(d: &Diff) {
    if d.is_empty() {
        println!("no change");
    }
    for s in &d.settings {
        println!("setting   {s}");
    }
    for name in &d.sets_added {
        println!("set +     {name}");
    }
    for name in &d.sets_removed {
        println!("set -     {name}");
    }
    for c in &d.sets_changed {
        println!("set ~     {}", c.name);
        for n in &c.added {
            println!("            + {n}");
        }
        for n in &c.removed {
            println!("            - {n}");
        }
    }
    for r in &d.rules_added {
        println!("rule +    {r}");
    }
    for r in &d.rules_removed {
        println!("rule -    {r}");
    }
    for c in &d.rules_changed {
        println!("rule ~    {}", c.name);
        for f in &c.fields {
            println!("            {f}");
        }
        for n in &c.sources_added {
            println!("            + from {n}");
        }
        for n in &c.sources_removed {
            println!("            - from {n}");
        }
    }
    for v in &d.verdicts {
        println!("verdict   {}: {} → {}", v.probe, v.before, v.after);
    }
    for same in &d.unchanged_probes {
        println!("same      {}: {}", same.probe, same.outcome);
    }
    for c in &d.connections {
        println!(
            "session   TCP from {} to local port {}: {} → {}",
            c.probe.src, c.probe.port, c.before, c.after
        );
    }
    print_flips("seen", "dropped lately", &d.recent_drops);
    print_flips("flow", "an open flow", &d.flows);
    for risk in &d.lockout {
        println!("WARNING   {risk}");
    }
}
