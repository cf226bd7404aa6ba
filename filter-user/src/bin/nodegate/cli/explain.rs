//! `nodegate explain`: what would happen to one packet.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use filter_user::{
    config,
    model::{Model, ProbeProtocol},
};

use super::Format;

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
    /// Destination port (tcp/udp) or message type (icmp/icmpv6). TCP probes are SYNs.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Judge the packet as arriving on this interface: the mode and default the file's
    /// `interfaces:` section gives it apply (the file's own for an interface it does not
    /// name).
    #[arg(long, value_name = "IF")]
    on_iface: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = config::load_file(&args.file)
        .with_context(|| format!("failed to load {}", args.file.display()))?;
    let policy = &loaded.policy;
    let iface = args.on_iface.as_deref();
    let model = match iface {
        Some(name) => Model::on_interface(policy, name),
        None => Model::new(policy),
    };
    let j = model.explain(args.from, args.proto, args.port);
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"verdict": j.verdict(), "reason": j.reason.name(), "rule": j.rule, "would_drop": j.would_drop, "stateful_unknown": j.stateful_unknown, "interface": iface})
        ),
        Format::Text => {
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
    Ok(ExitCode::SUCCESS)
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
