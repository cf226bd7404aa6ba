//! Reload latency: compile + publish + flip of 100k IPv4 + 10k IPv6 prefixes (and 1M IPv4)
//! back to back on one running program, beside `nft -f` and `ipset restore`, and the
//! operator's wait from a changed YAML file to the flip.

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use benches::{
    allow_policy,
    peers::{ipset_script, nft_ruleset, run_in, Nft, TempFile},
    v4_mixed_prefixes, v4_prefixes, v6_prefixes,
};
use filter_user::{
    compiler::{compile, compile_after, Compiled, RuleSlots},
    config::{load_file_with, LoadOptions},
    lab::{Lab, LabAddrs},
    replay::LoadedPolicy,
};
use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::json;

use crate::variant;

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    // Nearest rank.
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// One reload as the daemon does it: compile against the committed slots (as an update of
/// the active generation when there is one), publish (write the inactive generation, flip),
/// commit. Returns (total, compile) in milliseconds.
fn timed_reload(
    loaded: &mut LoadedPolicy,
    slots: &mut RuleSlots,
    active: &mut Option<Compiled>,
    policy: &filter_user::policy::Policy,
) -> anyhow::Result<(f64, f64)> {
    let t = Instant::now();
    let tables = match active {
        Some(previous) => compile_after(policy, slots, previous.previous())?,
        None => compile(policy, slots)?,
    };
    let compiled = t.elapsed();
    loaded.filter.maps_mut().publish(&tables)?;
    slots.commit(&tables);
    let total = t.elapsed();
    // The daemon keeps the file's policy it already owns; the bench clones it, untimed.
    *active = Some(Compiled {
        policy: policy.clone(),
        tables,
    });
    Ok((total.as_secs_f64() * 1e3, compiled.as_secs_f64() * 1e3))
}

fn report(name: &str, change: &str, samples: &[f64]) {
    println!(
        "{}",
        json!({"kind": "reload", "name": name, "change": change, "reloads": samples.len(),
               "p50_ms": percentile(samples, 50.0), "p99_ms": percentile(samples, 99.0), "samples_ms": samples})
    );
}

/// The lists of reload `i`: every prefix new (`all`), or the base lists with one prefix
/// replaced (`one`).
fn lists(
    change: &str,
    i: u64,
    base: &(Vec<Ipv4Net>, Vec<Ipv6Net>),
) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    match change {
        "all" => (
            v4_prefixes(100_000, 1000 + i),
            v6_prefixes(10_000, 2000 + i),
        ),
        _ => {
            let mut v4 = base.0.clone();
            // 11.0.0.0/8 is outside the base lists' 10.0.0.0/8: always a real change.
            v4[0] = Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 | ((i as u32 + 1) << 8)), 24)
                .expect("valid");
            (v4, base.1.clone())
        }
    }
}

/// The rule file of [`allow_policy`]: one set of every prefix, one rule.
fn allow_yaml(v4: &[Ipv4Net], v6: &[Ipv6Net]) -> String {
    let mut y = String::from(
        "version: 1\nreturn_traffic: off\ncapacity:\n  ipv4_prefixes: 131072\n  ipv6_prefixes: 32768\nsets:\n  allowed:\n",
    );
    for n in v4 {
        y.push_str(&format!("    - \"{n}\"\n"));
    }
    for n in v6 {
        y.push_str(&format!("    - \"{n}\"\n"));
    }
    y.push_str("rules:\n  - name: allowed-https\n    from: [allowed]\n    protocol: tcp\n    ports: [443]\n");
    y
}

pub(crate) fn reload(quick: bool) -> anyhow::Result<usize> {
    let reloads: u64 = if quick { 2 } else { 20 };
    let base = (v4_prefixes(100_000, 41), v6_prefixes(10_000, 42));
    let mut failed = 0;
    variant(
        "reload",
        "nodegate compile + publish + flip",
        &mut failed,
        || {
            // nodegate: compile + publish (write the inactive generation) + flip, private maps,
            // reloads back to back on one program. Both generation slots hold the base lists
            // before the clock starts, so every measured publish overwrites a full slot:
            // "all" replaces 110k prefixes with 110k others (removes + inserts), "one" changes
            // a single prefix (a two-entry diff, an incremental compile). Back to back, each
            // publish first waits out the RCU grace period of the flip before it (a few ms,
            // `loader::grace`); "one, spaced" reloads after that period is over, as an operator's
            // edit does.
            for change in ["all", "one", "one, spaced"] {
                let policy = allow_policy(&base.0, &base.1);
                let mut loaded = LoadedPolicy::load(&policy).context("failed to load nodegate")?;
                let mut slots = RuleSlots::new();
                slots.commit(&loaded.tables);
                let mut active = None;
                timed_reload(&mut loaded, &mut slots, &mut active, &policy)?;
                let (mut total_ms, mut compile_ms) = (Vec::new(), Vec::new());
                for i in 0..reloads {
                    let (v4, v6) = lists(change, i, &base);
                    let next = allow_policy(&v4, &v6);
                    if change == "one, spaced" {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let (total, compile) =
                        timed_reload(&mut loaded, &mut slots, &mut active, &next)?;
                    total_ms.push(total);
                    compile_ms.push(compile);
                }
                report("nodegate compile + publish + flip", change, &total_ms);
                report("nodegate compile only", change, &compile_ms);
            }
            Ok(())
        },
    );

    variant(
        "reload",
        "nodegate YAML file → flip (read, validate, compile, publish)",
        &mut failed,
        || {
            // What the daemon does after the file watcher fires: read and validate the file
            // (the front end's checks compile it against the committed slots, as an update of
            // the active generation when few prefixes change; those tables are published),
            // publish. A 2.7 MB file of 110k prefixes: every prefix new, or one changed.
            let dir = std::env::temp_dir().join(format!("ng-bench-yaml-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join("rules.yaml");
            let mut bytes = 0;
            for change in ["all", "one"] {
                let policy = allow_policy(&base.0, &base.1);
                let mut loaded = LoadedPolicy::load(&policy).context("failed to load nodegate")?;
                let mut slots = RuleSlots::new();
                slots.commit(&loaded.tables);
                let mut active = Some(Arc::new(Compiled {
                    tables: loaded.tables.clone(),
                    policy,
                }));
                let mut total_ms = Vec::new();
                for i in 0..reloads {
                    let (v4, v6) = lists(change, i, &base);
                    let text = allow_yaml(&v4, &v6);
                    bytes = text.len();
                    std::fs::write(&path, text)?;
                    let t = Instant::now();
                    let opts = LoadOptions {
                        slots: slots.clone(),
                        previous: active.take(),
                        ..LoadOptions::fixed_ephemeral(32768..=60999)
                    };
                    let file = load_file_with(&path, &opts)?;
                    loaded.filter.maps_mut().publish(&file.tables)?;
                    slots.commit(&file.tables);
                    active = Some(Arc::new(Compiled {
                        policy: file.policy,
                        tables: file.tables,
                    }));
                    total_ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
                report(
                    "nodegate YAML file → flip (read, validate, compile, publish)",
                    change,
                    &total_ms,
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("yaml reload: {bytes} bytes per file");
            Ok(())
        },
    );
    variant(
        "reload",
        "nodegate 1M IPv4 compile + publish + flip",
        &mut failed,
        || {
            let reloads = if quick { 1 } else { 5 };
            let mut policy = allow_policy(&v4_mixed_prefixes(1_000_000, 50), &base.1);
            policy.capacity.ipv4 = 1 << 20;
            let mut loaded = LoadedPolicy::load(&policy).context("failed to load nodegate")?;
            let mut slots = RuleSlots::new();
            slots.commit(&loaded.tables);
            let mut active = None;
            let mut total_ms = Vec::new();
            for i in 0..reloads {
                let mut next = allow_policy(&v4_mixed_prefixes(1_000_000, 51 + i), &base.1);
                next.capacity = policy.capacity;
                total_ms.push(timed_reload(&mut loaded, &mut slots, &mut active, &next)?.0);
            }
            report(
                "nodegate 1M IPv4 compile + publish + flip",
                "all",
                &total_ms,
            );
            Ok(())
        },
    );

    // nft -f and ipset restore in a lab namespace (the netdev chain needs a device there).
    let lab = Lab::new("rld", LabAddrs::default())?;
    let (ns, iface) = (lab.node_ns.clone(), lab.node_if.clone());
    let first = TempFile::new("reload0.nft", &nft_ruleset(&iface, &base.0, &base.1))?;
    let _nft = Nft::load(&ns, &first.0)?;
    let first = TempFile::new("reload0.ipset", &ipset_script(&base.0, &base.1, false))?;
    run_in(
        &ns,
        "ipset",
        &["restore", "-f", &first.0.display().to_string()],
        None,
    )?;
    for change in ["all", "one"] {
        let (mut nft_ms, mut ipset_ms) = (Vec::new(), Vec::new());
        for i in 0..reloads {
            let (v4, v6) = lists(change, i, &base);
            let nft_file = TempFile::new("reload.nft", &nft_ruleset(&iface, &v4, &v6))?;
            let ipset_file = TempFile::new("reload.ipset", &ipset_script(&v4, &v6, true))?;
            let t = Instant::now();
            run_in(&ns, "nft", &["-f", &nft_file.0.display().to_string()], None)?;
            nft_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            run_in(
                &ns,
                "ipset",
                &["restore", "-f", &ipset_file.0.display().to_string()],
                None,
            )?;
            ipset_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        report("nft -f (interval sets, auto-merge)", change, &nft_ms);
        report("ipset restore (hash:net, swap)", change, &ipset_ms);
    }
    for set in ["ng4", "ng6"] {
        let _ = run_in(&ns, "ipset", &["destroy", set], None);
    }
    Ok(failed)
}
