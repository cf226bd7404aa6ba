//! The cost of each stage of the XDP program, from knock-out builds in interleaved rounds.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context};
use benches::{allow_policy, peers::XdpFilter, v4_prefixes, v6_prefixes, NODE_V4};
use filter_user::{
    craft::Frame,
    lab::{Lab, LabAddrs},
    replay::{
        rawbpf::{action, PeerProgram, RawProgram},
        LoadedPolicy,
    },
};
use serde_json::json;

use crate::rounds::{interleaved, ratio_spread, spread, TimedRun};

/// The knock-out builds in program order (filter-ebpf/src/knockout.rs).
const STAGES: [&str; 5] = ["settings", "parse", "handoff", "lookup", "verdict"];

/// Per-stage cost: an allowed IPv4 and IPv6 TCP SYN (1 prefix per family, hot: one frame
/// repeated in the kernel's loop) through the empty program, every knock-out build, the
/// shipped program as root, the shipped program loaded with CAP_BPF + CAP_NET_ADMIN only,
/// and xdp-filter's program (the C peer) allowing the same sources. Measured in rounds, each
/// round running every program on every frame once in turn, and reported as the median per
/// program and frame, and the goal ratios as medians of per-round ratios ([`STAGE_RATIOS`]):
/// on a shared machine noise comes in phases, and a program (or a family) measured in one
/// block could land in a quiet or a loud one.
pub(crate) fn stages(quick: bool) -> anyhow::Result<usize> {
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
    // Held until the rounds are over: xdp-filter unloads before its lab goes.
    let peer = PeerRow::load(&[IpAddr::V4(v4[0].network()), IpAddr::V6(v6[0].network())]).and_then(
        |(row, program)| {
            // Its verdicts must be nodegate's, or the row times another path.
            for (family, frame) in &frames {
                let want = if *family == "v4-drop" {
                    action::DROP
                } else {
                    action::PASS
                };
                let got = program.test_run(frame, 1)?.retval;
                if got != want {
                    bail!("xdp-filter returned {got} for the {family} frame, not {want}");
                }
            }
            Ok((row, program))
        },
    );
    let _peer = match peer {
        Ok((row, program)) => {
            programs.push((
                PEER_ROW.into(),
                Box::new(move |f, n| Ok(program.test_run(f, n)?.duration.as_nanos() as f64)),
            ));
            Some(row)
        }
        Err(e) => {
            failed += 1;
            println!(
                "{}",
                json!({"kind": "stages", "build": PEER_ROW, "error": format!("{e:#}")})
            );
            None
        }
    };
    let (rounds, repeat) = if quick { (3, 20_000) } else { (15, 200_000) };
    // Every program on every frame in each round, so that the ratios between families come
    // from the same rounds too; frame by frame, so that a build's run is a few programs away
    // from the empty program's (the shipped program's IPv4 and IPv6 runs are a frame's
    // programs apart: tried the other way round, the empty and the shipped program were 24
    // runs apart and their ratio's rounds spread from 2.78 to 5.24).
    let mut runs: Vec<(usize, usize)> = (0..frames.len())
        .flat_map(|f| (0..programs.len()).map(move |p| (p, f)))
        .collect();
    let samples = interleaved(&mut runs, rounds, |&mut (p, f)| {
        (programs[p].1)(&frames[f].1, repeat)
    })?;
    let ns = |build: &str, family: &str| {
        let p = programs.iter().position(|(name, _)| name == build)?;
        let f = frames.iter().position(|(name, _)| *name == family)?;
        Some(&samples[f * programs.len() + p])
    };
    for (name, _) in &programs {
        for (family, _) in &frames {
            let Some(ns) = ns(name, family) else { continue };
            let (median, min, max) = spread(ns.clone());
            println!(
                "{}",
                json!({"kind": "stages", "build": name, "family": family, "ns": median,
                       "min_ns": min, "max_ns": max, "rounds": rounds, "repeat": repeat})
            );
        }
    }
    for (ratio, (num_build, num_family), (den_build, den_family)) in STAGE_RATIOS {
        if let (Some(num), Some(den)) = (ns(num_build, num_family), ns(den_build, den_family)) {
            let (median, min, max) = ratio_spread(num, den);
            println!(
                "{}",
                json!({"kind": "stage_ratio", "ratio": ratio, "median": median, "min": min,
                       "max": max, "rounds": rounds})
            );
        }
    }
    Ok(failed)
}

/// A row of the stage table: build, frame.
type Row = (&'static str, &'static str);

/// The goal ratios of the stage table, each the median of its per-round ratios (`ratio`,
/// numerator (build, frame), denominator (build, frame)): the shipped program over the empty
/// one, IPv6 over IPv4, and nodegate over xdp-filter's program.
const STAGE_RATIOS: [(&str, Row, Row); 5] = [
    ("v4 full / empty", ("full", "v4"), ("empty", "v4")),
    ("v6 full / empty", ("full", "v6"), ("empty", "v6")),
    ("full v6 / v4", ("full", "v6"), ("full", "v4")),
    ("v4 full / peer", ("full", "v4"), (PEER_ROW, "v4")),
    ("v6 full / peer", ("full", "v6"), (PEER_ROW, "v6")),
];

/// The stage table's peer row.
const PEER_ROW: &str = "xdp-filter, its program alone (C peer)";

/// xdp-filter's program loaded on a veth of a lab of its own, without libxdp's dispatcher:
/// the simplest C filter by the same method. Fields drop in order: xdp-filter unloads (and
/// removes its pins) while its interface still exists.
struct PeerRow {
    _filter: XdpFilter,
    _lab: Lab,
}

impl PeerRow {
    /// Load it allowing `allow`, and open its program for test runs.
    fn load(allow: &[IpAddr]) -> anyhow::Result<(PeerRow, PeerProgram)> {
        let lab = Lab::new("bst", LabAddrs::default())
            .context("failed to create a lab for xdp-filter")?;
        let filter = XdpFilter::load_alone(&lab.node_ns, &lab.node_if, allow)?;
        let program = PeerProgram::by_id(filter.program_id()?)
            .context("failed to open xdp-filter's program by id")?;
        Ok((
            PeerRow {
                _filter: filter,
                _lab: lab,
            },
            program,
        ))
    }
}
