//! `ng-bench`: the privileged half of `cargo xtask bench`. Prints one JSON object per line:
//!
//! - `pipeline`: a live-frames generator → veth → receiver pipeline in a private lab (two
//!   fresh network namespaces), 64-byte frames, the same traffic for every receiver: bare
//!   `XDP_DROP` (the ceiling, measured first and last), nodegate with 1 and 100k CIDRs,
//!   xdp-filter, nftables netdev ingress + interval set, iptables raw + ipset hash:net;
//!   then random sources (`traffic: random`), and `pipeline_pair`: nodegate against
//!   xdp-filter on that traffic in paired rounds;
//! - `reload`: compile + publish + flip of 100k IPv4 + 10k IPv6 prefixes, next to `nft -f`
//!   and `ipset restore` of the same lists, when every prefix changes and when one does.
//!
//!   Also: the operator's wait from a changed 2.7 MB YAML file of 110k prefixes to the flip
//!   (read, validate, compile, publish), and all-new reloads of 1M IPv4 prefixes;
//! - `tables`: kernel memory of the source lookup tables (per generation, and the map as
//!   allocated for a capacity) beside a kernel LPM trie holding the same prefixes
//!   (`memlock` of its fdinfo), for random mixed-length sets, the bench lists and the
//!   shipped examples.
//!
//! - `stages`: the cost of each stage of the XDP program: the knock-out builds
//!   (`NODEGATE_KNOCKOUT`, built by `cargo xtask bench` into `NODEGATE_KNOCKOUT_DIR`), the
//!   shipped program loaded as root and loaded with CAP_BPF + CAP_NET_ADMIN only (the
//!   kernel's Spectre hardening on), and the empty program, measured in interleaved rounds;
//! - `lookup`: the source lookup with 1 → 1M random mixed-length prefixes and random
//!   sources, beside a plain XDP program on a kernel LPM trie, in interleaved rounds.
//!
//! Usage: `ng-bench [--quick] [pipeline|reload|tables|stages|lookup]...` (default all). Needs root.

use rand::{Rng as _, RngExt as _, SeedableRng as _};
use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use benches::{
    allow_policy, fit_capacity,
    peers::{ipset_script, nft_ruleset, run_in, IptablesIpset, Nft, TempFile, XdpFilter},
    v4_mixed_prefixes, v4_prefixes, v6_mixed_prefixes, v6_prefixes, NODE_V4,
};
use filter_user::{
    compiler::{compile, compile_after, Compiled, RuleSlots},
    config::{load_file_with, LoadOptions},
    craft::Frame,
    lab::{in_netns, Lab, LabAddrs},
    loader::attach::ifindex,
    replay::{
        live::{rx_packets, settle, Generator, LiveOptions},
        rawbpf::RawProgram,
        rawgen::SourceStamp,
        rawlpm::LpmBaseline,
        LoadedPolicy,
    },
};
use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::json;

/// Distinct sources (198.18.0.0/15, the RFC 2544 benchmarking range: in no allow-list, so
/// every receiver drops every frame). Each source is one generator call (one burst).
const SOURCES: u32 = 4;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let parts: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = parts.is_empty();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("ng-bench needs root (XDP attach, network namespaces, nft, ipset)");
    }
    // Ctrl-C stops the generator instead of the process, so every guard cleans up.
    filter_user::replay::live::stop_on_signal();
    let mut failed = 0;
    if all || parts.contains(&"pipeline") {
        failed += pipeline(quick)?;
    }
    if all || parts.contains(&"reload") {
        failed += reload(quick)?;
    }
    if all || parts.contains(&"tables") {
        failed += tables(quick)?;
    }
    if all || parts.contains(&"stages") {
        failed += stages(quick)?;
    }
    if all || parts.contains(&"lookup") {
        failed += lookup(quick)?;
    }
    if failed > 0 {
        bail!("{failed} measurement(s) failed");
    }
    Ok(())
}

/// Run one measurement; a failure is printed as a JSON line and counted, and the next
/// measurement still runs (each one's guards have cleaned up by then).
fn variant(kind: &str, name: &str, failed: &mut usize, f: impl FnOnce() -> anyhow::Result<()>) {
    if let Err(e) = f() {
        *failed += 1;
        println!(
            "{}",
            json!({"kind": kind, "name": name, "error": format!("{e:#}")})
        );
    }
}

struct Pipeline {
    lab: Lab,
    frames: Vec<Vec<u8>>,
    loops: u64,
    node_ifindex: u32,
    peer_ifindex: u32,
    /// Which traffic (`fixed`: each frame one burst; `random`: one frame whose every copy
    /// the generator stamps with a random source from `stamps`).
    traffic: &'static str,
    stamps: Vec<SourceStamp>,
    /// Distinct sources in the traffic.
    sources: usize,
}

impl Pipeline {
    /// The pipeline over `lab`: `frames` sent `loops` times each, every copy stamped with a
    /// random source from `stamps` when there are any (`random` traffic), else as they are
    /// (`fixed`).
    fn new(
        lab: Lab,
        frames: Vec<Vec<u8>>,
        loops: u64,
        stamps: Vec<SourceStamp>,
    ) -> anyhow::Result<Pipeline> {
        let node_ifindex = lab.node_ifindex()?;
        let peer_ifindex =
            in_netns(&lab.peer_ns, || ifindex(&lab.peer_if))?.context("peer interface vanished")?;
        let mut distinct: Vec<[u8; 4]> = stamps.iter().map(|s| s.src.octets()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        Ok(Pipeline {
            traffic: if stamps.is_empty() { "fixed" } else { "random" },
            sources: if stamps.is_empty() {
                frames.len()
            } else {
                distinct.len()
            },
            lab,
            frames,
            loops,
            node_ifindex,
            peer_ifindex,
            stamps,
        })
    }

    /// Send the traffic once; print and return Mpps delivered to the receiver.
    fn measure(
        &self,
        name: &str,
        cidrs: usize,
        filter_dropped: &mut dyn FnMut() -> anyhow::Result<Option<u64>>,
    ) -> anyhow::Result<f64> {
        let m = self.send(filter_dropped)?;
        println!(
            "{}",
            json!({"kind": "pipeline", "traffic": self.traffic, "sources": self.sources, "name": name, "cidrs": cidrs, "sent": m.sent, "delivered": m.delivered,
                   "elapsed_s": m.elapsed_s, "kernel_s": m.kernel_s, "mpps": m.mpps, "mpps_loop": m.mpps_loop, "filter_dropped": m.filter_dropped})
        );
        Ok(m.mpps)
    }

    /// Send the traffic once and measure what the receiver got.
    fn send(
        &self,
        filter_dropped: &mut dyn FnMut() -> anyhow::Result<Option<u64>>,
    ) -> anyhow::Result<Sent> {
        let (ns, iface) = (&self.lab.node_ns, &self.lab.node_if);
        let dropped_before = filter_dropped()?;
        let before = rx_packets(ns, iface)?;
        let frames: Vec<&[u8]> = self.frames.iter().map(Vec::as_slice).collect();
        let opts = LiveOptions {
            loops: self.loops,
            ..LiveOptions::default()
        };
        let peer_ifindex = self.peer_ifindex;
        let stamps = &self.stamps;
        let sent = in_netns(&self.lab.peer_ns, || -> anyhow::Result<_> {
            let generator = if stamps.is_empty() {
                Generator::new(peer_ifindex)?
            } else {
                Generator::rewriting_sources(peer_ifindex, stamps)?
            };
            Ok(generator.send(&frames, &opts, &mut |_| {})?)
        })??;
        let after = settle(|| rx_packets(ns, iface), Duration::from_secs(3))?;
        let delivered = after - before;
        let filter_dropped = match (dropped_before, filter_dropped()?) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        };
        Ok(Sent {
            sent: sent.frames,
            delivered,
            elapsed_s: sent.elapsed.as_secs_f64(),
            kernel_s: sent.kernel.as_secs_f64(),
            // Wall time of the send loop: everything the pipeline did, including the ~26 ms
            // of dispatcher switching per generator call (one call per source here), which
            // makes faster receivers look slower, never the other way round.
            mpps: delivered as f64 / sent.elapsed.as_secs_f64() / 1e6,
            // Time inside the kernel's generator loops only (receive work deferred to
            // ksoftirqd is not in it): for reference.
            mpps_loop: delivered as f64 / sent.kernel.as_secs_f64().max(1e-9) / 1e6,
            filter_dropped,
        })
    }
}

/// One pass of a pipeline's traffic, as the receiver got it.
struct Sent {
    sent: u64,
    delivered: u64,
    elapsed_s: f64,
    kernel_s: f64,
    mpps: f64,
    mpps_loop: f64,
    /// Frames the receiver's own counters say it dropped, when it has counters.
    filter_dropped: Option<u64>,
}

fn pipeline(quick: bool) -> anyhow::Result<usize> {
    let mut failed = 0;
    let lab = Lab::new("bch", LabAddrs::default()).context("failed to create the bench lab")?;
    let node_mac = lab.mac(&lab.node_ns, &lab.node_if)?;
    // Frames addressed to the node's MAC so the kernel stack takes them as its own
    // (iptables never sees PACKET_OTHERHOST frames).
    let frames: Vec<Vec<u8>> = (0..SOURCES)
        .map(|i| {
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i * 4099);
            Frame::tcp(IpAddr::V4(src), IpAddr::V4(NODE_V4), 40000 + i as u16, 443)
                .syn()
                .dst_mac(node_mac)
                .pad_to(64)
                .build()
        })
        .collect();
    let total: u64 = if quick { 1_000_000 } else { 8_000_000 };
    let p = Pipeline::new(lab, frames, total / u64::from(SOURCES), Vec::new())?;
    let node_ifindex = p.node_ifindex;
    let (ns, iface) = (p.lab.node_ns.clone(), p.lab.node_if.clone());
    let list = v4_prefixes(100_000, 31);
    let no_count = &mut || Ok(None);

    let attach_raw = |prog: &RawProgram| {
        in_netns(&ns, || prog.attach_xdp(node_ifindex))
            .map_err(anyhow::Error::from)?
            .map_err(anyhow::Error::from)
    };
    let drop = RawProgram::drop_all()?;
    variant(
        "pipeline",
        "bare XDP_DROP (ceiling, first)",
        &mut failed,
        || {
            let _link = attach_raw(&drop)?;
            p.measure("bare XDP_DROP (ceiling, first)", 0, no_count)?;
            Ok(())
        },
    );
    for n in [1usize, 100_000] {
        variant(
            "pipeline",
            &format!("nodegate, {n} CIDRs"),
            &mut failed,
            || {
                let policy = allow_policy(&list[..n], &[]);
                let mut loaded = LoadedPolicy::load(&policy).context("failed to load nodegate")?;
                let link = {
                    let program = loaded.filter.program();
                    in_netns(&ns, || {
                        program.attach_to_if_index(p.node_ifindex, aya::programs::XdpMode::Driver)
                    })??
                };
                let result = p.measure(&format!("nodegate, {n} CIDRs"), n, &mut || {
                    Ok(Some(dropped_by_nodegate(&loaded)?))
                });
                let _ = loaded.filter.program().detach(link);
                result?;
                Ok(())
            },
        );
    }
    variant("pipeline", "xdp-filter", &mut failed, || {
        let allowed: Vec<Ipv4Addr> = list[..1].iter().map(|n| n.network()).collect();
        let _xf = XdpFilter::load(&ns, &iface, &allowed)?;
        p.measure("xdp-filter (deny policy, 1 allowed address)", 1, no_count)?;
        Ok(())
    });
    // Frames sent with XDP_TX into a veth only arrive when the receiving end runs an XDP
    // program: the kernel-stack peers get the empty XDP_PASS program in front of them.
    let pass = RawProgram::pass()?;
    variant("pipeline", "nftables", &mut failed, || {
        let _link = attach_raw(&pass)?;
        let file = TempFile::new("pipeline.nft", &nft_ruleset(&iface, &list, &[]))?;
        let nft = Nft::load(&ns, &file.0)?;
        p.measure(
            "nftables netdev ingress, interval set (XDP_PASS in front)",
            list.len(),
            &mut || Ok(Some(nft.dropped()?)),
        )?;
        Ok(())
    });
    variant("pipeline", "iptables + ipset", &mut failed, || {
        let _link = attach_raw(&pass)?;
        let file = TempFile::new("pipeline.ipset", &ipset_script(&list, &[], false))?;
        let ipt = IptablesIpset::load(&ns, &file.0)?;
        p.measure(
            "iptables raw + ipset hash:net (XDP_PASS in front)",
            list.len(),
            &mut || Ok(Some(ipt.dropped()?)),
        )?;
        Ok(())
    });
    variant(
        "pipeline",
        "bare XDP_DROP (ceiling, last)",
        &mut failed,
        || {
            let _link = attach_raw(&drop)?;
            p.measure("bare XDP_DROP (ceiling, last)", 0, no_count)?;
            Ok(())
        },
    );
    // The fixed-traffic lab goes before the next one is made.
    std::mem::drop(p);
    failed += pipeline_random_sources(quick)?;
    Ok(failed)
}

/// Stamps per half of the random-source generator's table (`rawgen`).
const HALF: usize = 65_536;
/// What xdp-filter's `filter_ipv4` hash holds at most (its compile-time `max_entries`), and
/// so the number of distinct inside sources: every receiver can then allow all of them.
const XDP_FILTER_MAX: usize = 10_000;

/// The pipeline with a cold source lookup: every copy the generator sends carries a source
/// drawn at random from a table of 131,072 stamps, one half inside the 100k CIDRs (10,000
/// distinct addresses, each in a different CIDR, repeated to fill the half: allowed, passed
/// to the stack) and the other half 65,536 distinct addresses outside them (dropped):
/// 75,536 distinct sources, half the frames passed. Frames go to a MAC that is not the
/// node's, so the stack discards passed frames early. Receivers: bare XDP_DROP (this
/// traffic's ceiling), nodegate with the 100k CIDRs, the plain LPM-trie program with the same
/// CIDRs, and xdp-filter with the 10,000 inside addresses (the same verdict for every frame
/// as the CIDR receivers) and with 1 address.
fn pipeline_random_sources(quick: bool) -> anyhow::Result<usize> {
    let mut failed = 0;
    let lab = Lab::new("bcr", LabAddrs::default()).context("failed to create the bench lab")?;
    let list = v4_prefixes(100_000, 31);
    let mut rng = benches::Rng::seed_from_u64(41);
    let template = |src: Ipv4Addr| {
        Frame::tcp(IpAddr::V4(src), IpAddr::V4(NODE_V4), 40000, 443)
            .syn()
            .dst_mac([0x02, 0, 0, 0, 0, 0x99])
            .pad_to(64)
            .build()
    };
    // One address in each of XDP_FILTER_MAX distinct CIDRs.
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < XDP_FILTER_MAX {
        picked.insert(rng.random_range(0..list.len() as u64) as usize);
    }
    let inside: Vec<Ipv4Addr> = picked
        .iter()
        .map(|&i| {
            let net = list[i];
            let host = rng.next_u64() as u32 & !u32::from(net.netmask());
            Ipv4Addr::from(u32::from(net.network()) | host)
        })
        .collect();
    let mut outside = std::collections::BTreeSet::new();
    while outside.len() < HALF {
        // The CIDRs all lie in 10.0.0.0/8.
        let a = Ipv4Addr::from(rng.next_u64() as u32);
        if a.octets()[0] != 10 {
            outside.insert(a);
        }
    }
    let outside: Vec<Ipv4Addr> = outside.into_iter().collect();
    let stamps: Vec<SourceStamp> = (0..HALF)
        .map(|i| inside[i % inside.len()])
        .chain(outside.iter().copied())
        .map(|a| SourceStamp::of_frame(&template(a)).expect("a 64-byte IPv4 TCP frame"))
        .collect();
    let total: u64 = if quick { 1_000_000 } else { 8_000_000 };
    let p = Pipeline::new(lab, vec![template(outside[0])], total, stamps)?;
    let node_ifindex = p.node_ifindex;
    let (ns, iface) = (p.lab.node_ns.clone(), p.lab.node_if.clone());
    let attach_raw = |prog: &RawProgram| {
        in_netns(&ns, || prog.attach_xdp(node_ifindex))
            .map_err(anyhow::Error::from)?
            .map_err(anyhow::Error::from)
    };
    let no_count = &mut || Ok(None);
    let drop = RawProgram::drop_all()?;
    let ceiling = |which: &str, failed: &mut usize| {
        let name = format!("bare XDP_DROP (ceiling, {which})");
        variant("pipeline", &name, failed, || {
            let _link = attach_raw(&drop)?;
            p.measure(&name, 0, &mut || Ok(None))?;
            Ok(())
        });
    };
    ceiling("first", &mut failed);
    variant("pipeline", "nodegate, 100k CIDRs", &mut failed, || {
        let mut loaded =
            LoadedPolicy::load(&allow_policy(&list, &[])).context("failed to load nodegate")?;
        let link = {
            let program = loaded.filter.program();
            in_netns(&ns, || {
                program.attach_to_if_index(node_ifindex, aya::programs::XdpMode::Driver)
            })??
        };
        let result = p.measure("nodegate, 100k CIDRs", list.len(), &mut || {
            Ok(Some(dropped_by_nodegate(&loaded)?))
        });
        let _ = loaded.filter.program().detach(link);
        result?;
        Ok(())
    });
    variant("pipeline", "LPM trie program", &mut failed, || {
        let lpm = LpmBaseline::v4(&list)?;
        let _link = attach_raw(lpm.program())?;
        p.measure(
            "XDP + kernel LPM trie (plain program), 100k CIDRs",
            list.len(),
            no_count,
        )?;
        Ok(())
    });
    for n in [1, XDP_FILTER_MAX] {
        variant("pipeline", &format!("xdp-filter, {n}"), &mut failed, || {
            let xf = XdpFilter::load(&ns, &iface, &inside[..1])?;
            if n > 1 {
                xf.allow_many(&inside[1..n])?;
            }
            p.measure(
                &format!("xdp-filter (deny policy, {n} allowed addresses)"),
                n,
                no_count,
            )?;
            Ok(())
        });
    }
    ceiling("last", &mut failed);
    variant(
        "pipeline_pair",
        "nodegate vs xdp-filter, paired rounds",
        &mut failed,
        || paired_rounds(&p, &list, &inside, if quick { 2 } else { 6 }),
    );
    Ok(failed)
}

/// nodegate (100k CIDRs) against xdp-filter (the `inside` addresses) on the random-source
/// pipeline, `rounds` times, each round one pass of each, the order alternating from round to
/// round. One pass each (the table above) leaves the goal to whatever the shared machine did
/// during those two passes: 0.93× and 1.00× in two runs of the same code. Pairing the passes
/// cancels slow drift, alternating cancels a bias of going first, and the median of the
/// rounds' ratios is what the key ratio quotes.
fn paired_rounds(
    p: &Pipeline,
    list: &[Ipv4Net],
    inside: &[Ipv4Addr],
    rounds: usize,
) -> anyhow::Result<()> {
    let (ns, iface) = (&p.lab.node_ns, &p.lab.node_if);
    let mut loaded =
        LoadedPolicy::load(&allow_policy(list, &[])).context("failed to load nodegate")?;
    for round in 0..rounds {
        let mut nodegate = || -> anyhow::Result<Sent> {
            let link = {
                let program = loaded.filter.program();
                in_netns(ns, || {
                    program.attach_to_if_index(p.node_ifindex, aya::programs::XdpMode::Driver)
                })??
            };
            let sent = p.send(&mut || Ok(None));
            loaded.filter.program().detach(link)?;
            sent
        };
        let xdp_filter = || -> anyhow::Result<Sent> {
            let xf = XdpFilter::load(ns, iface, &inside[..1])?;
            xf.allow_many(&inside[1..])?;
            p.send(&mut || Ok(None))
        };
        let nodegate_first = round % 2 == 0;
        let (ng, xf) = if nodegate_first {
            let ng = nodegate()?;
            (ng, xdp_filter()?)
        } else {
            let xf = xdp_filter()?;
            (nodegate()?, xf)
        };
        println!(
            "{}",
            json!({"kind": "pipeline_pair", "round": round + 1, "first": if nodegate_first { "nodegate" } else { "xdp-filter" },
                   "xdp_filter_addresses": inside.len(), "cidrs": list.len(),
                   "nodegate_mpps": ng.mpps, "xdp_filter_mpps": xf.mpps, "ratio": ng.mpps / xf.mpps,
                   "nodegate_mpps_loop": ng.mpps_loop, "xdp_filter_mpps_loop": xf.mpps_loop, "ratio_loop": ng.mpps_loop / xf.mpps_loop})
        );
    }
    Ok(())
}

/// Frames nodegate's counters say it dropped, all reasons together.
fn dropped_by_nodegate(loaded: &LoadedPolicy) -> anyhow::Result<u64> {
    let snap = loaded.filter.maps().snapshot()?;
    Ok(snap
        .reasons
        .iter()
        .filter(|r| filter_common::Reason::from_name(r.reason).is_some_and(|x| x.is_drop()))
        .map(|r| r.packets)
        .sum())
}

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

/// Kernel memory of the lookup tables beside an LPM trie of the same prefixes.
fn tables(quick: bool) -> anyhow::Result<usize> {
    let mut failed = 0;
    let mut sets: Vec<(String, Vec<Ipv4Net>, Vec<Ipv6Net>)> = Vec::new();
    let sizes: &[usize] = if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    for &n in sizes {
        sets.push((
            format!("{n} random mixed-length IPv4 /8-/32"),
            v4_mixed_prefixes(n, 60),
            Vec::new(),
        ));
    }
    for n in [10_000, 100_000] {
        sets.push((
            format!("{n} random mixed-length IPv6 /32-/128"),
            Vec::new(),
            v6_mixed_prefixes(n, 61),
        ));
    }
    sets.push((
        "bench lists: 100k IPv4 in 10/8 + 10k IPv6 in 2001:db8::/32".into(),
        v4_prefixes(100_000, 41),
        v6_prefixes(10_000, 42),
    ));
    sets.push((
        "100k random mixed IPv4 + 10k random mixed IPv6".into(),
        v4_mixed_prefixes(100_000, 62),
        v6_mixed_prefixes(10_000, 63),
    ));
    for (name, v4, v6) in sets {
        variant("tables", &name, &mut failed, || {
            let mut policy = allow_policy(&v4, &v6);
            fit_capacity(&mut policy);
            let t = Instant::now();
            let compiled = compile(&policy, &RuleSlots::new())?;
            let compile_ms = t.elapsed().as_secs_f64() * 1e3;
            let per_gen = 4 * (compiled.v4_table.len() + compiled.v6_table.len());
            let lpm = |bytes: anyhow::Result<u64>| bytes.ok();
            let lpm_v4 = if v4.is_empty() {
                Some(0)
            } else {
                lpm(LpmBaseline::v4(&v4)
                    .map_err(Into::into)
                    .and_then(|t| Ok(t.kernel_bytes()?)))
            };
            let lpm_v6 = if v6.is_empty() {
                Some(0)
            } else {
                lpm(LpmBaseline::v6(&v6)
                    .map_err(Into::into)
                    .and_then(|t| Ok(t.kernel_bytes()?)))
            };
            println!(
                "{}",
                json!({"kind": "tables", "name": name, "v4": compiled.stats.v4_prefixes, "v6": compiled.stats.v6_prefixes,
                       "table_bytes_per_generation": per_gen, "table_bytes_both_generations": 2 * per_gen,
                       "capacity_kernel_bytes": policy.capacity.table_bytes(),
                       "lpm_bytes_one_copy": lpm_v4.zip(lpm_v6).map(|(a, b)| a + b), "compile_ms": compile_ms})
            );
            Ok(())
        });
    }
    // The shipped examples, as the daemon would allocate for them (default capacity).
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in std::fs::read_dir(&examples)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = format!(
            "example {}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        variant("tables", &name, &mut failed, || {
            let file = load_file_with(&path, &LoadOptions::fixed_ephemeral(32768..=60999))?;
            let compiled = compile(&file.policy, &RuleSlots::new())?;
            let per_gen = 4 * (compiled.v4_table.len() + compiled.v6_table.len());
            println!(
                "{}",
                json!({"kind": "tables", "name": name, "v4": compiled.stats.v4_prefixes, "v6": compiled.stats.v6_prefixes,
                       "table_bytes_per_generation": per_gen, "table_bytes_both_generations": 2 * per_gen,
                       "capacity_kernel_bytes": file.policy.capacity.table_bytes(),
                       "lpm_bytes_one_copy": null, "compile_ms": null})
            );
            Ok(())
        });
    }
    Ok(failed)
}

fn reload(quick: bool) -> anyhow::Result<usize> {
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

/// One program's test run of a frame, `repeat` times: mean ns per run.
type TimedRun = Box<dyn FnMut(&[u8], u32) -> anyhow::Result<f64>>;

/// The knock-out builds in program order (filter-ebpf/src/knockout.rs).
const STAGES: [&str; 5] = ["settings", "parse", "call", "lookup", "verdict"];

/// Per-stage cost: an allowed IPv4 and IPv6 TCP SYN (1 prefix per family, hot: one frame
/// repeated in the kernel's loop) through the empty program, every knock-out build, the
/// shipped program as root, and the shipped program loaded with CAP_BPF + CAP_NET_ADMIN
/// only. Measured in rounds, each round running every program once in turn, and reported as
/// the median per program: on a shared machine noise comes in phases, and a program measured
/// in one block could land in a quiet or a loud one.
fn stages(quick: bool) -> anyhow::Result<usize> {
    use filter_user::loader::privileges::{with_only, CAP_BPF, CAP_NET_ADMIN};
    let mut failed = 0;
    let v4 = v4_prefixes(1, 11);
    let v6 = v6_prefixes(1, 13);
    let policy = allow_policy(&v4, &v6);
    // `v4-drop`: from outside every set, so dropped (`no-source-match`) and offered to the
    // drop sampler at the default rate: the path of a flood.
    let frames = [
        ("v4", benches::syn_frame(v4[0].network())),
        ("v6", benches::syn_frame_v6(v6[0].network())),
        (
            "v4-drop",
            benches::syn_frame(Ipv4Addr::new(198, 51, 100, 7)),
        ),
        // One 802.1Q tag: the network header at a variable offset.
        (
            "v4-vlan",
            Frame::tcp(IpAddr::V4(v4[0].network()), IpAddr::V4(NODE_V4), 40000, 443)
                .syn()
                .vlan(100)
                .pad_to(64)
                .build(),
        ),
    ];
    let mut programs: Vec<(String, TimedRun)> = Vec::new();
    let empty = RawProgram::pass()?;
    programs.push((
        "empty".into(),
        Box::new(move |f, n| Ok(empty.test_run(f, n)?.duration.as_nanos() as f64)),
    ));
    let dir = std::env::var_os("NODEGATE_KNOCKOUT_DIR");
    for stage in STAGES {
        let Some(dir) = &dir else {
            failed += 1;
            println!(
                "{}",
                json!({"kind": "stages", "build": stage, "error": "NODEGATE_KNOCKOUT_DIR unset: run through `cargo xtask bench`, which builds the knock-outs"})
            );
            continue;
        };
        let path = std::path::Path::new(dir).join(format!("{stage}.o"));
        let loaded = std::fs::read(&path)
            .with_context(|| format!("failed to read {}", path.display()))
            .and_then(|bytes| Ok(LoadedPolicy::load_object(&policy, bytes.into())?));
        match loaded {
            Ok(mut l) => programs.push((
                stage.into(),
                Box::new(move |f, n| Ok(l.filter.test_run(f, n)?.1.as_nanos() as f64)),
            )),
            Err(e) => {
                failed += 1;
                println!(
                    "{}",
                    json!({"kind": "stages", "build": stage, "error": format!("{e:#}")})
                );
            }
        }
    }
    let mut full = LoadedPolicy::load(&policy).context("failed to load nodegate")?;
    programs.push((
        "full".into(),
        Box::new(move |f, n| Ok(full.filter.test_run(f, n)?.1.as_nanos() as f64)),
    ));
    match with_only(&[CAP_BPF, CAP_NET_ADMIN], || LoadedPolicy::load(&policy))? {
        Ok(mut hardened) => programs.push((
            "full, CAP_BPF + CAP_NET_ADMIN only".into(),
            Box::new(move |f, n| Ok(hardened.filter.test_run(f, n)?.1.as_nanos() as f64)),
        )),
        Err(e) => {
            // Kernels before 6.18 refuse the program without CAP_PERFMON.
            println!(
                "{}",
                json!({"kind": "stages", "build": "full, CAP_BPF + CAP_NET_ADMIN only", "refused": format!("{e:#}")})
            );
        }
    }
    let (rounds, repeat) = if quick { (3, 20_000) } else { (15, 200_000) };
    for (family, frame) in &frames {
        let samples = interleaved(&mut programs, rounds, |(_, run)| run(frame, repeat))?;
        for ((name, _), ns) in programs.iter().zip(samples) {
            let (median, min, max) = spread(ns);
            println!(
                "{}",
                json!({"kind": "stages", "build": name, "family": family, "ns": median,
                       "min_ns": min, "max_ns": max, "rounds": rounds, "repeat": repeat})
            );
        }
    }
    Ok(failed)
}

/// Every program's figure in each of `rounds` rounds (`samples[program][round]`). A round
/// measures every program once, in turn, each round starting one program later so that no
/// program always follows the same one: on a shared machine noise comes in phases, and
/// programs measured one block after another can land one in a quiet phase and the next in
/// a loud one.
fn interleaved<P, S: Clone>(
    programs: &mut [P],
    rounds: usize,
    mut measure: impl FnMut(&mut P) -> anyhow::Result<S>,
) -> anyhow::Result<Vec<Vec<S>>> {
    let count = programs.len();
    let mut samples = vec![Vec::with_capacity(rounds); count];
    for round in 0..rounds {
        for k in 0..count {
            let i = (round + k) % count;
            samples[i].push(measure(&mut programs[i])?);
        }
    }
    Ok(samples)
}

/// Median, minimum and maximum of `samples` (not empty).
fn spread(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

/// Distinct frames of the source lookup rows: half from inside a listed prefix.
const LOOKUP_FRAMES: usize = 4096;

/// Unmeasured passes over the frames between a lookup row's cold and warm pass. With three,
/// the warm figures were within noise of six (pinned, 2026-12-06: 100k IPv4 171 against
/// 187 ns after none, 1M IPv4 192 against 203).
const WARM_UP_PASSES: usize = 3;

/// The calling thread pinned to the CPU it runs on, until dropped. A test run executes on
/// the caller's CPU, and a thread the scheduler moves between CPUs finds every cache cold
/// after each move: unpinned, the 1-prefix row measured 290 ns, pinned 155 ns.
struct PinnedCpu {
    before: libc::cpu_set_t,
}

impl PinnedCpu {
    fn current() -> anyhow::Result<PinnedCpu> {
        // SAFETY: cpu_set_t is plain bits; the calls get and set the calling thread's own
        // mask (pid 0) with the set's true size.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut before) != 0
            {
                bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
            }
            let cpu = libc::sched_getcpu();
            if cpu < 0 {
                bail!("sched_getcpu: {}", std::io::Error::last_os_error());
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) != 0 {
                bail!(
                    "sched_setaffinity (CPU {cpu}): {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(PinnedCpu { before })
        }
    }
}

impl Drop for PinnedCpu {
    fn drop(&mut self) {
        // SAFETY: as in `current`; restoring the mask the thread had.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.before);
        }
    }
}

/// A program of the source lookup rows: who (`nodegate`, `lpm`, `empty`), at how many
/// prefixes, the frames it runs, and one test run of one frame (kernel-measured ns).
struct LookupProgram {
    who: &'static str,
    prefixes: usize,
    frames: Arc<Vec<Vec<u8>>>,
    run: TimedRun,
}

/// Source lookup cost at 1 → 1M prefixes of random mixed lengths (IPv4 /8–/32, IPv6
/// /32–/128): nodegate's flat tables, a plain XDP program on a kernel LPM trie holding the
/// same prefixes (`LpmBaseline`, what the peers use) and the empty program, each on the
/// random-source frames of its prefix set, one test run per frame (not one frame repeated in
/// the kernel's loop, which would keep one source's path hot), on one CPU.
///
/// Every table size of a family is loaded at once and measured in interleaved rounds; a
/// size's cost relative to 1 prefix is the median of the per-round ratios, so that a
/// noisy phase moves both sides of a ratio alike. (Measured one size after another,
/// criterion's blocks gave 1.13× and 1.43× for the same 100k set in two runs of the same
/// code.)
fn lookup(quick: bool) -> anyhow::Result<usize> {
    let mut failed = 0;
    let rounds = if quick { 3 } else { 15 };
    let _pinned = PinnedCpu::current()?;
    for (family, sizes) in [
        ("v4", &benches::LOOKUP_SIZES_V4[..]),
        ("v6", &benches::LOOKUP_SIZES_V6[..]),
    ] {
        let mut programs: Vec<LookupProgram> = Vec::new();
        for &n in sizes {
            if let Err(e) = lookup_programs(family, n, &mut programs) {
                failed += 1;
                println!(
                    "{}",
                    json!({"kind": "lookup", "family": family, "prefixes": n, "error": format!("{e:#}")})
                );
            }
        }
        // Per program and round, the first pass over the frames finds the table as the other
        // programs' passes left the caches (`cold`); the last, after `WARM_UP_PASSES`, as
        // these sources keep it (`warm`, where the goal applies: the cost of the structure
        // and its size, not of the other tables measured beside it).
        let samples = interleaved(&mut programs, rounds, |p| {
            let mut pass = || -> anyhow::Result<f64> {
                let mut total = 0.0;
                for frame in p.frames.iter() {
                    total += (p.run)(frame, 1)?;
                }
                Ok(total / p.frames.len() as f64)
            };
            let cold = pass()?;
            for _ in 0..WARM_UP_PASSES {
                pass()?;
            }
            Ok([cold, pass()?])
        })?;
        for (which, pass) in [("warm", 1), ("cold", 0)] {
            let ns: Vec<Vec<f64>> = samples
                .iter()
                .map(|rounds| rounds.iter().map(|s| s[pass]).collect())
                .collect();
            let at_one = |who: &str| {
                programs
                    .iter()
                    .position(|p| p.who == who && p.prefixes == 1)
                    .map(|i| &ns[i])
            };
            for (p, ns_p) in programs.iter().zip(&ns) {
                let vs_one = at_one(p.who)
                    .map(|one| spread(ns_p.iter().zip(one).map(|(a, b)| a / b).collect()).0);
                let (median, min, max) = spread(ns_p.clone());
                println!(
                    "{}",
                    json!({"kind": "lookup", "family": family, "prefixes": p.prefixes, "who": p.who,
                           "cache": which, "ns": median, "min_ns": min, "max_ns": max,
                           "vs_one_prefix": vs_one, "rounds": rounds, "frames": p.frames.len()})
                );
            }
        }
    }
    Ok(failed)
}

/// Load nodegate, the LPM-trie program and the empty program for `n` random mixed-length
/// prefixes of `family` into `programs`.
fn lookup_programs(
    family: &str,
    n: usize,
    programs: &mut Vec<LookupProgram>,
) -> anyhow::Result<()> {
    let (mut policy, frames, lpm) = if family == "v4" {
        let list = v4_mixed_prefixes(n, 21);
        let frames = benches::random_frames(&list, LOOKUP_FRAMES, 22);
        (allow_policy(&list, &[]), frames, LpmBaseline::v4(&list))
    } else {
        let list = v6_mixed_prefixes(n, 23);
        let frames = benches::random_v6_frames(&list, LOOKUP_FRAMES, 24);
        (allow_policy(&[], &list), frames, LpmBaseline::v6(&list))
    };
    fit_capacity(&mut policy);
    let mut nodegate = LoadedPolicy::load(&policy)
        .with_context(|| format!("cannot load nodegate with {n} {family} prefixes"))?;
    let lpm =
        lpm.with_context(|| format!("cannot build the LPM baseline with {n} {family} prefixes"))?;
    let empty = RawProgram::pass()?;
    let frames = Arc::new(frames);
    let rows: [(&'static str, TimedRun); 3] = [
        (
            "nodegate",
            Box::new(move |f, n| Ok(nodegate.filter.test_run(f, n)?.1.as_nanos() as f64)),
        ),
        (
            "lpm",
            Box::new(move |f, n| Ok(lpm.program().test_run(f, n)?.duration.as_nanos() as f64)),
        ),
        (
            "empty",
            Box::new(move |f, n| Ok(empty.test_run(f, n)?.duration.as_nanos() as f64)),
        ),
    ];
    for (who, run) in rows {
        programs.push(LookupProgram {
            who,
            prefixes: n,
            frames: Arc::clone(&frames),
            run,
        });
    }
    Ok(())
}
