//! Embedding nodegate in another Rust agent through `filter_user::firewall`: load a rule
//! file, publish it, attach to an interface, print counters, reload, detach.
//!
//! ```sh
//! cargo run -p filter-user --example embed -- examples/eks-node.yaml eth0
//! ```
//! (root or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON; everything is detached when it exits —
//! `nodegate run` is the way to keep a filter enforcing beyond its loader.)

use std::time::Duration;

use anyhow::Context;
use filter_user::firewall::{Firewall, RuleSet};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(rules), Some(iface)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: embed RULES.yaml IFACE");
    };

    // YAML → a validated rule set (errors carry file:line:column and a hint).
    let rule_set = RuleSet::from_file(&rules).with_context(|| format!("failed to load {rules}"))?;
    for warning in rule_set.warnings() {
        eprintln!("{warning}");
    }

    // Load, publish (compile, fill the inactive generation, flip), attach.
    let mut firewall = Firewall::load()?;
    let report = firewall.publish(&rule_set)?;
    println!("generation {} active", report.epoch);
    let mode = firewall.attach(&iface)?;
    println!("attached to {iface} in {mode} mode");

    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        for r in firewall.counters()?.reasons {
            println!(
                "{:<24} {:>10} packets {:>12} bytes",
                r.reason, r.packets, r.bytes
            );
        }
    }

    // A reload is another publish; the flip is atomic and rule counters keep their slots.
    firewall.publish(&RuleSet::from_file(&rules)?)?;
    firewall.detach(&iface)?;
    Ok(())
}
