//! The veth pipeline: a live-frames generator (an AF_PACKET socket where the kernel refuses
//! live-frames mode: `replay::live`) → veth → receiver, nodegate beside the peers,
//! with 4 fixed sources and with random sources, and nodegate against xdp-filter in paired
//! rounds.

use rand::{Rng as _, RngExt as _, SeedableRng as _};
use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use anyhow::Context;
use benches::{
    allow_policy,
    peers::{ipset_script, nft_ruleset, IptablesIpset, Nft, TempFile, XdpFilter},
    v4_prefixes, NODE_V4,
};
use filter_user::{
    craft::Frame,
    lab::{in_netns, Lab, LabAddrs},
    loader::attach::ifindex,
    policy::Policy,
    replay::{
        live::{rx_packets, settle, Generator, LiveOptions},
        rawbpf::{RawLink, RawProgram},
        rawgen::SourceStamp,
        rawlpm::LpmBaseline,
        LoadedPolicy,
    },
};
use ipnet::Ipv4Net;
use serde_json::json;

use crate::variant;

/// Distinct sources (198.18.0.0/15, the RFC 2544 benchmarking range: in no allow-list, so
/// every receiver drops every frame). Each source is one generator call (one burst).
const SOURCES: u32 = 4;

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
    /// Attach a raw program to the receiver's interface (a link that detaches when dropped).
    fn attach_raw(&self, prog: &RawProgram) -> anyhow::Result<RawLink> {
        Ok(in_netns(&self.lab.node_ns, || {
            prog.attach_xdp(self.node_ifindex)
        })??)
    }

    /// One pass with `loaded`'s program attached to the receiver, detached afterwards.
    fn send_nodegate(&self, loaded: &mut LoadedPolicy) -> anyhow::Result<Sent> {
        let link = {
            let program = loaded.filter.program();
            in_netns(&self.lab.node_ns, || {
                program.attach_to_if_index(self.node_ifindex, aya::programs::XdpMode::Driver)
            })??
        };
        let sent = self.send(&mut || Ok(None));
        loaded.filter.program().detach(link)?;
        sent
    }

    /// This traffic's ceiling: the bare `XDP_DROP` program as the receiver, measured before
    /// (`which` = "first") and after ("last") the receivers it bounds.
    fn ceiling(&self, drop: &RawProgram, which: &str, failed: &mut usize) {
        let name = format!("bare XDP_DROP (ceiling, {which})");
        variant("pipeline", &name, failed, || {
            let _link = self.attach_raw(drop)?;
            self.measure(&name, 0, &mut || Ok(None))?;
            Ok(())
        });
    }

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
            json!({"kind": "pipeline", "traffic": self.traffic, "sources": self.sources, "generator": m.generator, "name": name, "cidrs": cidrs, "sent": m.sent, "delivered": m.delivered,
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
            generator: sent.engine,
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
    /// Which engine sent (`live::LIVE_FRAMES` or `live::PACKET_SOCKET`).
    generator: &'static str,
    sent: u64,
    delivered: u64,
    elapsed_s: f64,
    kernel_s: f64,
    mpps: f64,
    mpps_loop: f64,
    /// Frames the receiver's own counters say it dropped, when it has counters.
    filter_dropped: Option<u64>,
}

pub(crate) fn pipeline(quick: bool) -> anyhow::Result<usize> {
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
    let (ns, iface) = (p.lab.node_ns.clone(), p.lab.node_if.clone());
    let list = v4_prefixes(100_000, 31);
    let no_count = &mut || Ok(None);

    let drop = RawProgram::drop_all()?;
    p.ceiling(&drop, "first", &mut failed);
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
        let _link = p.attach_raw(&pass)?;
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
        let _link = p.attach_raw(&pass)?;
        let file = TempFile::new("pipeline.ipset", &ipset_script(&list, &[], false))?;
        let ipt = IptablesIpset::load(&ns, &file.0)?;
        p.measure(
            "iptables raw + ipset hash:net (XDP_PASS in front)",
            list.len(),
            &mut || Ok(Some(ipt.dropped()?)),
        )?;
        Ok(())
    });
    p.ceiling(&drop, "last", &mut failed);
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
    let no_count = &mut || Ok(None);
    let drop = RawProgram::drop_all()?;
    p.ceiling(&drop, "first", &mut failed);
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
        let _link = p.attach_raw(lpm.program())?;
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
    p.ceiling(&drop, "last", &mut failed);
    variant(
        "pipeline_pair",
        "nodegate vs xdp-filter, paired rounds",
        &mut failed,
        || paired_rounds(&p, &list, &inside, if quick { 2 } else { 12 }),
    );
    Ok(failed)
}

/// nodegate (100k CIDRs) against xdp-filter (the `inside` addresses) on the random-source
/// pipeline, `rounds` times, each round one pass of each, the order rotating from round to
/// round. One pass each (the table above) leaves the goal to whatever the shared machine did
/// during those two passes: 0.93× and 1.00× in two runs of the same code. Pairing the passes
/// cancels slow drift, rotating the order cancels a bias of going first, and the median of
/// the rounds' ratios is what the key ratio quotes.
///
/// A third receiver in every round is nodegate's `verdict` knock-out build (the whole
/// program but counting and drop samples, passing and dropping the same frames) from
/// `NODEGATE_KNOCKOUT_DIR`: how much of the gap to xdp-filter the epilogue is on this path,
/// where the stack's work between packets evicts what a test run keeps in the caches.
fn paired_rounds(
    p: &Pipeline,
    list: &[Ipv4Net],
    inside: &[Ipv4Addr],
    rounds: usize,
) -> anyhow::Result<()> {
    let (ns, iface) = (&p.lab.node_ns, &p.lab.node_if);
    let policy = allow_policy(list, &[]);
    let mut shipped = LoadedPolicy::load(&policy).context("failed to load nodegate")?;
    let mut uncounted = uncounted_build(&policy);
    if let Err(e) = &uncounted {
        println!(
            "{}",
            json!({"kind": "pipeline_pair", "name": "nodegate without counting", "error": format!("{e:#}")})
        );
    }
    let xdp_filter = || -> anyhow::Result<Sent> {
        let xf = XdpFilter::load(ns, iface, &inside[..1])?;
        xf.allow_many(&inside[1..])?;
        p.send(&mut || Ok(None))
    };
    for round in 0..rounds {
        // Slot 0 nodegate, 1 xdp-filter, 2 the knock-out; the first to go rotates.
        let mut passes: [Option<Sent>; 3] = [None, None, None];
        for k in 0..3 {
            let slot = (round + k) % 3;
            passes[slot] = match slot {
                0 => Some(p.send_nodegate(&mut shipped)?),
                1 => Some(xdp_filter()?),
                _ => match &mut uncounted {
                    Ok(loaded) => Some(p.send_nodegate(loaded)?),
                    Err(_) => None,
                },
            };
        }
        let [Some(ng), Some(xf), uncounted_pass] = passes else {
            unreachable!("nodegate and xdp-filter pass every round");
        };
        let first = ["nodegate", "xdp-filter", "nodegate without counting"][round % 3];
        let mut line = json!({"kind": "pipeline_pair", "round": round + 1, "first": first, "generator": ng.generator,
               "xdp_filter_addresses": inside.len(), "cidrs": list.len(),
               "nodegate_mpps": ng.mpps, "xdp_filter_mpps": xf.mpps, "ratio": ng.mpps / xf.mpps,
               "nodegate_mpps_loop": ng.mpps_loop, "xdp_filter_mpps_loop": xf.mpps_loop, "ratio_loop": ng.mpps_loop / xf.mpps_loop});
        if let Some(u) = uncounted_pass {
            line["uncounted_mpps"] = json!(u.mpps);
            line["uncounted_ratio"] = json!(u.mpps / xf.mpps);
            line["shipped_over_uncounted"] = json!(ng.mpps / u.mpps);
        }
        println!("{line}");
    }
    Ok(())
}

/// nodegate's `verdict` knock-out build with `policy` published, from the directory `cargo
/// xtask bench` built the knock-outs into.
fn uncounted_build(policy: &Policy) -> anyhow::Result<LoadedPolicy> {
    let dir = std::env::var_os("NODEGATE_KNOCKOUT_DIR").context(
        "NODEGATE_KNOCKOUT_DIR unset: run through `cargo xtask bench`, which builds the knock-outs",
    )?;
    let path = std::path::Path::new(&dir).join("verdict.o");
    let bytes =
        std::fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(LoadedPolicy::load_object(policy, bytes.into())?)
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
