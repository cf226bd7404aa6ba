//! Embedding nodegate in another Rust agent: compile a rule file, load the XDP program with
//! private maps, publish the rules, attach to an interface, print counters, and reload.
//!
//! ```sh
//! cargo run -p filter-user --example embed -- examples/eks-node.yaml eth0
//! ```
//! (root or CAP_BPF + CAP_NET_ADMIN; detaches when it exits because nothing is pinned —
//! `nodegate run` is the way to keep a filter enforcing beyond its loader.)

use std::time::Duration;

use anyhow::Context;
use filter_user::{
    compiler::{compile, RuleSlots},
    config,
    loader::{Filter, LoadOptions},
};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(rules), Some(iface)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: embed RULES.yaml IFACE");
    };

    // 1. YAML → validated Policy (errors carry file:line:column and a hint).
    let loaded = config::load_file(&rules).with_context(|| format!("failed to load {rules}"))?;
    for warning in &loaded.warnings {
        eprintln!("{warning}");
    }

    // 2. Policy → kernel tables; rule slots keep counters stable across reloads.
    let mut slots = RuleSlots::new();
    let tables = compile(&loaded.policy, &slots)?;

    // 3. Load the program (private maps: nothing outlives this process) and publish.
    let mut filter = Filter::load(&LoadOptions::default())?;
    let report = filter.maps_mut().publish(&tables)?;
    slots.commit(&tables);
    println!(
        "generation {} active ({} IPv4 / {} IPv6 prefixes)",
        report.epoch, tables.stats.v4_prefixes, tables.stats.v6_prefixes
    );

    // 4. Attach (driver mode, generic fallback) and watch the counters.
    let ifindex = filter_user::loader::attach::ifindex(&iface).context("no such interface")?;
    let link = filter
        .program()
        .attach_to_if_index(ifindex, aya::programs::XdpMode::Skb)?;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        for r in filter.maps().snapshot()?.reasons {
            println!(
                "{:<24} {:>10} packets {:>12} bytes",
                r.reason, r.packets, r.bytes
            );
        }
    }

    // 5. Reload: compile again and publish; the flip is atomic.
    let again = compile(&config::load_file(&rules)?.policy, &slots)?;
    filter.maps_mut().publish(&again)?;
    slots.commit(&again);
    filter.program().detach(link)?;
    Ok(())
}
