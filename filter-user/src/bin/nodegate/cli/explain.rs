//! `nodegate explain`: what would happen to one packet.
//!
//! Exit status: 0 when the packet passes (a monitor-mode `would_drop` passes), 1 when it is
//! dropped, 2 when it could not be judged (an unreadable or invalid rule file, a missing
//! `--port`).

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use filter_user::{
    config,
    model::{Model, ProbeProtocol, PROBE_DST_V4, PROBE_DST_V6, PROBE_SPORT},
};

use super::output::Output;

/// Judge one synthetic packet with the reference model.
#[derive(clap::Args)]
pub struct Args {
    /// The rule file.
    file: PathBuf,
    /// Source address of the packet (IPv4 or IPv6).
    #[arg(long)]
    from: IpAddr,
    /// Protocol: tcp, udp, icmp, icmpv6 or a protocol number.
    #[arg(long, default_value = "tcp")]
    proto: ProbeProtocol,
    /// Destination port (tcp/udp: required) or message type (icmp/icmpv6: echo request
    /// when left out). TCP probes are SYNs.
    #[arg(long)]
    port: Option<u16>,
    /// Judge the packet as arriving on this interface: the mode and default the file's
    /// `interfaces:` section gives it apply (the file's own for an interface it does not
    /// name).
    #[arg(long, value_name = "IF")]
    on_iface: Option<String>,
}

/// Exit status of a packet that could not be judged.
const EXIT_NOT_JUDGED: u8 = 2;

pub fn run(args: Args, out: Output) -> anyhow::Result<ExitCode> {
    match judge(args, out) {
        Ok(code) => Ok(code),
        Err(err) => {
            super::output::report(&err, out);
            Ok(ExitCode::from(EXIT_NOT_JUDGED))
        }
    }
}

/// The destination port (or ICMP type) to judge, and what was assumed for it when
/// `--port` was left out.
fn port_of(proto: ProbeProtocol, port: Option<u16>) -> anyhow::Result<(u16, Option<&'static str>)> {
    Ok(match (port, proto) {
        (Some(port), _) => (port, None),
        (None, ProbeProtocol::Tcp | ProbeProtocol::Udp) => bail!(
            "--port is missing: a TCP or UDP packet is judged by its destination port; give \
             one, e.g. --port 443"
        ),
        (None, ProbeProtocol::Icmp) => (
            8,
            Some("ICMP type 8 (echo request), as --port was not given"),
        ),
        (None, ProbeProtocol::Icmpv6) => (
            128,
            Some("ICMPv6 type 128 (echo request), as --port was not given"),
        ),
        (None, ProbeProtocol::Ip(_)) => (0, None),
    })
}

/// The judged packet, as `explain` echoes it.
fn packet_json(from: IpAddr, proto: &str, port: u16, assumed: Option<&str>) -> serde_json::Value {
    let to = match from {
        IpAddr::V4(_) => IpAddr::V4(PROBE_DST_V4),
        IpAddr::V6(_) => IpAddr::V6(PROBE_DST_V6),
    };
    serde_json::json!({
        "src": from, "dst": to, "proto": proto, "sport": PROBE_SPORT, "port": port,
        "assumed": assumed,
    })
}

fn judge(args: Args, out: Output) -> anyhow::Result<ExitCode> {
    let (port, assumed) = port_of(args.proto, args.port)?;
    let proto = args.proto.to_string();
    let loaded = config::load_file(&args.file)
        .with_context(|| format!("failed to load {}", args.file.display()))?;
    let policy = &loaded.policy;
    let iface = args.on_iface.as_deref();
    let model = match iface {
        Some(name) => Model::on_interface(policy, name),
        None => Model::new(policy),
    };
    let j = model.explain(args.from, args.proto, port);
    let packet = packet_json(args.from, &proto, port, assumed);
    match out {
        Output::Json | Output::Jsonl => out.document(&serde_json::json!({
            "packet": packet, "verdict": j.verdict(), "reason": j.reason.name(), "rule": j.rule,
            "would_drop": j.would_drop, "stateful_unknown": j.stateful_unknown, "interface": iface,
        }))?,
        Output::Text => {
            println!(
                "packet: {proto} from {} to {} port/type {port}{}",
                packet["src"].as_str().unwrap_or_default(),
                packet["dst"].as_str().unwrap_or_default(),
                if args.proto == ProbeProtocol::Tcp {
                    " (SYN)"
                } else {
                    ""
                }
            );
            if let Some(assumed) = assumed {
                println!("  assumed: {assumed}");
            }
            println!("{}", j);
            println!("  reason {}: {}", j.reason.name(), describe(j.reason));
            if let Some(name) = iface {
                let own = if policy.interfaces.contains_key(name) {
                    "its `interfaces:` entry"
                } else {
                    "not named under `interfaces:`, so the file's own"
                };
                println!(
                    "  on {name}: mode {}, default {} ({own})",
                    model.policy().mode.name(),
                    model.policy().default.name()
                );
            }
            let elsewhere: Vec<&str> = policy
                .rules
                .iter()
                .filter(|r| !r.applies_on(iface))
                .map(|r| r.name.as_str())
                .collect();
            if !elsewhere.is_empty() {
                let on = policy.named_interfaces().into_iter().collect::<Vec<_>>();
                println!(
                    "  not applying {}: rule(s) {} (scoped to other interfaces; --on-iface {} judges as one of them)",
                    iface.map_or("on interfaces no rule names".to_owned(), |i| format!("on {i}")),
                    elsewhere.join(", "),
                    on.join("|")
                );
            }
        }
    }
    Ok(if j.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn describe(reason: filter_common::Reason) -> &'static str {
    use filter_common::Reason::*;
    match reason {
        AllowRule => "an allow rule matched source, protocol and port",
        Failsafe => "a failsafe rule matched (evaluated before deny and allow rules)",
        DenyRule => "a deny rule matched",
        NoSourceMatch => "the source is in no rule's allow-list",
        NoRuleMatch => "the source is allowed, but not for this protocol and port",
        ReturnTraffic => "treated as a reply to a connection the node opened",
        DefaultPass => "nothing matched and the default is pass",
        EssentialIcmpError | EssentialPmtu | EssentialNd | EssentialArp => {
            "an essential the node needs to function"
        }
        _ => "see docs/VERDICTS.md",
    }
}
