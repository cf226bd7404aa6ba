//! Differential tests (TESTCASES K36, K37): the XDP program under `BPF_PROG_TEST_RUN` and the
//! reference model must give every frame the same verdict, reason and rule.
//!
//! - [`random_configs_and_frames`]: random small rule sets (proptest strategies over a small
//!   address space, every kind/protocol/option/mode; return traffic `ephemeral`, `off` or
//!   `stateful` with an empty flow table, where the kernel must give exactly the model's
//!   reason) and, for each, random frames: valid
//!   frames from `craft` with addresses and ports biased to the rule set's prefixes and
//!   boundaries, VLAN tags 0–3, IPv4 options, IPv6 extension-header chains in random order,
//!   fragmented datagrams (first fragment and followers), then malformations (header field
//!   overrides, truncation at every layer, random byte edits). Default ~20k frames over ~50
//!   rule sets; `NODEGATE_DIFF_CASES=1000000` runs 10^6 (K36). `NODEGATE_DIFF_SEED=<u64>`
//!   picks another seed (the seed is printed; the default is fixed so CI is reproducible).
//!   Frames arrive on an interface named [`DIFF_IFACE`] (the test runs' loopback stands in
//!   for it), and rule sets may give that interface, or another one, its own mode and
//!   default (`interfaces:`) and scope rules to either (a rule's `interfaces`), so the
//!   per-interface settings and rule profiles are compared too.
//! - [`tcpdump_corpus_enforce_and_monitor`]: every frame of the 434 captures in
//!   `shared/corpus/tcpdump` (8,261 frames, pcap and pcapng) under the TESTCASES fixture, in
//!   enforce and in monitor mode (K37).
//!
//! One program is loaded per test and each rule set is published into it (a new generation,
//! as a reload does). Fragment state: the model gets a fresh `ModelState` per rule set (per
//! capture file for the corpus) and the kernel's `NG_FRAGS` LRU is emptied at the same moment,
//! so no first fragment recorded under one rule set can let a follower through under another.
//!
//! Per frame, [`KernelJudge`] is told the model's reason and rule and reports what really
//! moved; a frame whose model rule is `None` cannot be checked for a stray rule count that
//! way, so after each rule set the rule and reason counters are also compared in total with
//! the model's tallies (snapshot diff). Frames shorter than 14 bytes cannot be test-run, nor
//! can frames beyond what fits in XDP frags (3,520 bytes linear + 17 pages: the 80 KB BIG TCP
//! captures, refused with ENOMEM); the model still judges them (and must not panic). Longer
//! frames that fit are judged by both: past 3,520 bytes the test run hands the program a
//! multi-buffer frame, which it reads with `bpf_xdp_load_bytes`.
#![cfg(feature = "privileged-tests")]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use filter_common::{Reason, MAX_RULES};
use filter_user::compiler::{compile, RuleSlots, Tables};
use filter_user::config::{load_file_with, LoadOptions};
use filter_user::craft::{tcp_flags, ExtHeader, Frame};
use filter_user::loader::counters::Snapshot;
use filter_user::loader::testrun::{
    os_error, refused_as_too_long, KernelJudge, KernelVerdict, XdpAction, MIN_TEST_RUN_FRAME,
};
use filter_user::loader::Filter;
use filter_user::model::{Judgement, Model, ModelState};
use filter_user::policy::{
    DefaultAction, Essentials, Fragments, InterfaceSettings, Mode, Policy, PrefixCapacity,
    Protocol, ReturnTraffic, Rule, RuleKind,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

/// Disagreements listed in full when a test fails.
const REPORT_LIMIT: usize = 20;
/// Frames per random rule set.
const FRAMES_PER_CONFIG: usize = 400;
/// Default total of random frames (`NODEGATE_DIFF_CASES` overrides).
const DEFAULT_CASES: usize = 20_000;
/// Default seed (`NODEGATE_DIFF_SEED` overrides).
const DEFAULT_SEED: u64 = 0x6e67_6469_6666_0001;

/// The interface the test runs' frames arrive on, as far as `interfaces:` settings go.
const DIFF_IFACE: &str = "ng-diff0";

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/testcases.yaml");

fn fixture() -> Policy {
    load_file_with(FIXTURE, &LoadOptions::fixed_ephemeral(32768..=60999))
        .unwrap_or_else(|e| panic!("the TESTCASES fixture does not load: {e}"))
        .policy
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim().replace('_', "");
    let parsed = match value.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

// ====================================================================== the judging harness

/// The kernel's answer for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KernelAnswer {
    action: XdpAction,
    reason: Reason,
    would_drop: bool,
    rule: Option<String>,
}

/// Reason counters: (interface slot, reason, would-drop) → packets.
fn reason_packets(s: &Snapshot) -> BTreeMap<(u32, &'static str, bool), u64> {
    s.reasons
        .iter()
        .map(|r| ((r.iface_slot, r.reason, r.would_drop), r.packets))
        .collect()
}

/// Rule counters: (slot, would-drop) → packets.
fn rule_packets(s: &Snapshot) -> BTreeMap<(u32, bool), u64> {
    s.rules
        .iter()
        .map(|r| ((r.slot, r.would_drop), r.packets))
        .collect()
}

fn diff<K: Ord + Clone>(before: &BTreeMap<K, u64>, after: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
    after
        .iter()
        .filter_map(|(k, a)| {
            let d = a - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// One loaded program, re-published per rule set, and the record of what disagreed.
struct Differ {
    filter: Filter,
    slots: RuleSlots,
    tally: Tally,
    /// Counter slot the test runs count in ([`DIFF_IFACE`]'s).
    iface_slot: u32,
    /// Publish the tables as the loader of this earlier layout did (`Tables::as_layout5`:
    /// no inline IPv4 prefixes; `as_layout4`: also tail records of one prefix only): what
    /// this program reads during a take-over from that layout.
    legacy: Option<u32>,
}

/// Counts and disagreements.
#[derive(Default)]
struct Tally {
    disagreements: Vec<String>,
    disagreement_count: usize,
    kernel_frames: usize,
    /// Shorter than an Ethernet header: `BPF_PROG_TEST_RUN` refuses them.
    model_only_frames: usize,
    /// Frames `BPF_PROG_TEST_RUN` refused (only accepted for frames longer than
    /// `testrun::MAX_LINEAR_TEST_RUN_FRAME`): past the first 3,520 bytes the kernel puts the frame into
    /// XDP frags, one page each, and refuses it beyond `MAX_SKB_FRAGS` (17) pages — the 80 KB
    /// BIG TCP captures. Frames it accepts are judged by both sides: the program reads the
    /// frags through `bpf_xdp_load_bytes` and `bpf_xdp_get_buff_len`.
    too_long_frames: usize,
    /// errno → refused frames.
    refusals: BTreeMap<i32, usize>,
    reasons: BTreeMap<(&'static str, bool), usize>,
    /// (model reason, kernel reason) → disagreeing frames.
    kinds: BTreeMap<(String, String), usize>,
}

/// A rule set published in the kernel, with its model and fragment state.
struct Published {
    tables: Tables,
    model: Model,
    state: ModelState,
    monitor: bool,
    iface_slot: u32,
    before: Snapshot,
    /// Model tallies of what the kernel should count while this generation is active.
    want_reasons: BTreeMap<(u32, &'static str, bool), u64>,
    want_rules: BTreeMap<(u32, bool), u64>,
}

/// Empties the kernel's fragment table (`NG_FRAGS`).
fn clear_fragments(filter: &mut Filter) {
    filter
        .clear_fragments()
        .expect("NG_FRAGS could not be emptied between rule sets");
}

impl Differ {
    fn new() -> Differ {
        Differ::with_filter(common::load_private())
    }

    /// A differ whose source tables are created for `capacity` prefixes.
    fn with_capacity(capacity: PrefixCapacity) -> Differ {
        Differ::with_filter(common::load_with(filter_user::loader::LoadOptions {
            prefix_capacity: Some(capacity),
            ..Default::default()
        }))
    }

    fn with_filter(mut filter: Filter) -> Differ {
        let iface_slot = filter
            .maps_mut()
            .test_runs_arrive_on(DIFF_IFACE)
            .expect("register the loopback as the test interface");
        Differ {
            filter,
            slots: RuleSlots::new(),
            tally: Tally::default(),
            iface_slot,
            legacy: None,
        }
    }

    /// Compiles and publishes `policy` (an error if it does not fit the kernel tables), and
    /// empties the kernel's fragment table.
    fn publish(&mut self, policy: &Policy) -> Result<Published, String> {
        let mut tables = compile(policy, &self.slots).map_err(|e| e.to_string())?;
        match self.legacy {
            Some(4) => tables = tables.as_layout4(),
            Some(5) => tables = tables.as_layout5(),
            Some(other) => panic!("no tables of layout {other} to publish"),
            None => {}
        }
        self.filter
            .maps_mut()
            .publish(&tables)
            .expect("publish a generation");
        self.slots.commit(&tables);
        clear_fragments(&mut self.filter);
        let before = self.filter.maps().snapshot().expect("snapshot");
        Ok(Published {
            tables,
            model: Model::on_interface(policy, DIFF_IFACE),
            state: ModelState::new(),
            monitor: policy.mode_on(Some(DIFF_IFACE)) == Mode::Monitor,
            iface_slot: self.iface_slot,
            before,
            want_reasons: BTreeMap::new(),
            want_rules: BTreeMap::new(),
        })
    }

    /// Compares the counters moved while `p` was active with the model's tallies: catches a
    /// rule counter moved by a frame the model gives no rule, or two reasons for one frame.
    fn finish_generation(&mut self, label: &str, p: Published) {
        let after = self.filter.maps().snapshot().expect("snapshot");
        let got_reasons = diff(&reason_packets(&p.before), &reason_packets(&after));
        let got_rules = diff(&rule_packets(&p.before), &rule_packets(&after));
        if got_reasons != p.want_reasons || got_rules != p.want_rules {
            let text = format!(
                "{label}: counters in total differ from the model's tallies\n    reasons model  {:?}\n    reasons kernel {:?}\n    rules   model  {:?}\n    rules   kernel {:?}",
                p.want_reasons, got_reasons, p.want_rules, got_rules
            );
            self.tally.push(text);
        }
    }
}

impl Tally {
    fn judged(&self) -> usize {
        self.kernel_frames + self.model_only_frames + self.too_long_frames
    }

    fn push(&mut self, text: String) {
        self.disagreement_count += 1;
        if self.disagreements.len() < REPORT_LIMIT {
            eprintln!("DISAGREEMENT {text}");
            self.disagreements.push(text);
        }
    }

    fn record(
        &mut self,
        context: &dyn Fn() -> String,
        frame: &[u8],
        model: &Judgement,
        kernel: &str,
    ) {
        if self.disagreements.len() >= REPORT_LIMIT {
            self.disagreement_count += 1;
            return;
        }
        let text = format!(
            "{} ({} bytes)\n    hex    {}\n    model  {model}\n    kernel {kernel}",
            context(),
            frame.len(),
            common::hex(frame)
        );
        self.push(text);
    }

    /// Judges one frame on both sides and records any disagreement.
    fn judge(
        &mut self,
        kernel: &mut KernelJudge<'_>,
        p: &mut Published,
        context: &dyn Fn() -> String,
        frame: &[u8],
    ) {
        let j = p.model.judge_tracked(frame, &mut p.state);
        *self
            .reasons
            .entry((j.reason.name(), j.would_drop))
            .or_default() += 1;
        if frame.len() < MIN_TEST_RUN_FRAME {
            self.model_only_frames += 1;
            return;
        }
        self.kernel_frames += 1;
        let expect_rule = j.rule.as_deref().map(|name| {
            let slot = p
                .tables
                .rule_names
                .iter()
                .find(|(_, n)| n == name)
                .map(|(s, _)| u32::from(*s))
                .unwrap_or_else(|| panic!("model rule {name} has no slot"));
            slot + if j.would_drop { MAX_RULES } else { 0 }
        });
        let slot = j.reason.stat_slot(p.monitor);
        let verdict: KernelVerdict = match kernel.judge(frame, Some(slot), expect_rule) {
            Ok(v) => v,
            Err(e) if refused_as_too_long(frame, &e) => {
                self.kernel_frames -= 1;
                self.too_long_frames += 1;
                *self.refusals.entry(os_error(&e).unwrap_or(0)).or_default() += 1;
                return;
            }
            Err(e) => {
                *self
                    .kinds
                    .entry((j.reason.name().to_string(), "test-run-error".to_string()))
                    .or_default() += 1;
                self.record(
                    context,
                    frame,
                    &j,
                    &format!("BPF_PROG_TEST_RUN failed: {e}"),
                );
                return;
            }
        };
        *p.want_reasons
            .entry((p.iface_slot, j.reason.name(), j.would_drop))
            .or_default() += 1;
        if let Some(rule) = expect_rule {
            *p.want_rules
                .entry((rule % MAX_RULES, rule >= MAX_RULES))
                .or_default() += 1;
        }
        let answer = KernelAnswer {
            action: verdict.action,
            reason: verdict.reason,
            would_drop: verdict.would_drop,
            rule: verdict
                .rule_slot
                .and_then(|s| p.tables.rule_name(s % MAX_RULES).map(str::to_string)),
        };
        let want_action = if j.pass {
            XdpAction::Pass
        } else {
            XdpAction::Drop
        };
        // Exact: the flow table is empty here (nothing runs the egress recorder), so a
        // `stateful` rule set must not pass anything as return traffic either.
        if (answer.reason, answer.rule.as_deref()) != (j.reason, j.rule.as_deref())
            || answer.action != want_action
            || answer.would_drop != j.would_drop
        {
            *self
                .kinds
                .entry((
                    j.reason.name().to_string(),
                    answer.reason.name().to_string(),
                ))
                .or_default() += 1;
            let kernel = format!(
                "{:?} ({}){}{}",
                answer.action,
                answer.reason.name(),
                answer
                    .rule
                    .as_deref()
                    .map(|r| format!(" rule {r}"))
                    .unwrap_or_default(),
                if answer.would_drop {
                    " [would drop]"
                } else {
                    ""
                },
            );
            self.record(context, frame, &j, &kernel);
        }
    }

    fn assert_agreement(&self, what: &str) {
        if !self.kinds.is_empty() {
            println!(
                "  disagreements by (model reason, kernel reason): {:?}",
                self.kinds
            );
        }
        assert!(
            self.disagreement_count == 0,
            "{what}: {} disagreements between kernel and model (first {}):\n{}",
            self.disagreement_count,
            self.disagreements.len(),
            self.disagreements.join("\n")
        );
    }
}

// ====================================================================== random rule sets

/// IPv4 prefixes rules are drawn from: nested, adjacent and disjoint around the fixture's.
fn v4_net_strategy() -> impl Strategy<Value = Ipv4Net> {
    let bases = [
        [10, 0, 0, 0],
        [10, 0, 0, 128],
        [10, 0, 1, 0],
        [10, 0, 128, 0],
        [10, 1, 0, 0],
        [192, 0, 2, 0],
        [198, 51, 100, 0],
        [198, 51, 100, 7],
    ];
    prop_oneof![
        3 => (
            prop::sample::select(bases.to_vec()),
            prop::sample::select(vec![8u8, 15, 16, 23, 24, 25, 26, 30, 31, 32]),
        )
            .prop_map(|(b, len)| Ipv4Net::new(Ipv4Addr::from(b), len).unwrap().trunc()),
        1 => (0u32..1024, 20u8..=32).prop_map(|(host, len)| {
            Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + host), len)
                .unwrap()
                .trunc()
        }),
    ]
}

fn v6_net_strategy() -> impl Strategy<Value = Ipv6Net> {
    let bases: Vec<Ipv6Addr> = [
        "2001:db8:cf::",
        "2001:db8:cf::5",
        "2001:db8:cf:1::",
        "2001:db8:c1::",
        "2001:db8:dead::",
        "2001:db8::",
        "fe80::",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    (
        prop::sample::select(bases),
        prop::sample::select(vec![16u8, 32, 47, 48, 63, 64, 65, 96, 127, 128]),
    )
        .prop_map(|(b, len)| Ipv6Net::new(b, len).unwrap().trunc())
}

fn source_strategy() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        3 => v4_net_strategy().prop_map(IpNet::V4),
        2 => v6_net_strategy().prop_map(IpNet::V6),
    ]
}

/// Port ranges biased to the classic boundaries.
fn port_range_strategy() -> impl Strategy<Value = RangeInclusive<u16>> {
    let named = vec![
        22..=22,
        53..=53,
        80..=80,
        443..=443,
        1024..=1024,
        1025..=65535,
        6443..=6443,
        8443..=8443,
        10250..=10250,
        32768..=60999,
        65535..=65535,
        1..=1,
        1..=1024,
    ];
    prop_oneof![
        3 => prop::sample::select(named),
        2 => (1u16..=65535).prop_map(|p| p..=p),
        2 => (1u16..=65535, 0u16..2000).prop_map(|(lo, w)| lo..=lo.saturating_add(w)),
    ]
}

fn type_range_strategy() -> impl Strategy<Value = RangeInclusive<u16>> {
    prop_oneof![
        2 => prop::sample::select(vec![0u16, 3, 8, 11, 128, 129, 133, 135, 255]).prop_map(|t| t..=t),
        1 => (0u16..=255, 0u16..16).prop_map(|(lo, w)| lo..=(lo + w).min(255)),
    ]
}

fn rule_strategy() -> impl Strategy<Value = Rule> {
    let kind = prop_oneof![
        1 => Just(RuleKind::Failsafe),
        2 => Just(RuleKind::Deny),
        5 => Just(RuleKind::Allow),
    ];
    let protocol = prop_oneof![
        4 => Just(Protocol::Tcp),
        3 => Just(Protocol::Udp),
        1 => Just(Protocol::Icmp),
        1 => Just(Protocol::Icmpv6),
        1 => Just(Protocol::Any),
    ];
    (
        kind,
        protocol,
        prop::collection::vec(source_strategy(), 1..=3),
        prop::collection::vec(port_range_strategy(), 0..=3),
        prop::collection::vec(type_range_strategy(), 0..=2),
        // Mostly every interface; else only the test interface, another one, or both.
        prop_oneof![
            6 => Just(Vec::new()),
            2 => Just(vec![DIFF_IFACE.to_owned()]),
            1 => Just(vec!["ng-other0".to_owned()]),
            1 => Just(vec![DIFF_IFACE.to_owned(), "ng-other0".to_owned()]),
        ],
    )
        .prop_map(|(kind, protocol, mut sources, ports, types, interfaces)| {
            sources.sort();
            sources.dedup();
            let keys = match protocol {
                Protocol::Tcp | Protocol::Udp => ports,
                Protocol::Icmp | Protocol::Icmpv6 => types,
                Protocol::Any => Vec::new(),
            };
            Rule {
                name: String::new(),
                kind,
                sources,
                protocol,
                keys,
                interfaces,
            }
        })
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    let essentials = (
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(arp, neighbor_discovery, icmp_errors)| Essentials {
            arp,
            neighbor_discovery,
            icmp_errors,
        });
    let return_traffic = prop_oneof![
        1 => Just(ReturnTraffic::Off),
        2 => Just(ReturnTraffic::Ephemeral { ports: 32768..=60999 }),
        1 => (1u16..=65535, 0u16..=30000).prop_map(|(lo, w)| ReturnTraffic::Ephemeral {
            ports: lo..=lo.saturating_add(w)
        }),
        1 => Just(ReturnTraffic::Stateful),
    ];
    let setting = (
        prop::option::of(prop_oneof![Just(Mode::Enforce), Just(Mode::Monitor)]),
        prop::option::of(prop_oneof![
            Just(DefaultAction::Drop),
            Just(DefaultAction::Pass)
        ]),
    )
        .prop_map(|(mode, default)| InterfaceSettings { mode, default });
    let interfaces = prop_oneof![
        2 => Just(BTreeMap::new()),
        2 => setting.clone().prop_map(|s| BTreeMap::from([(DIFF_IFACE.to_owned(), s)])),
        1 => setting.prop_map(|s| BTreeMap::from([("ng-other0".to_owned(), s)])),
    ];
    (
        prop::collection::vec(rule_strategy(), 0..=8),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.25),
        essentials,
        any::<bool>(),
        prop::bool::weighted(0.3),
        return_traffic,
        prop::bool::weighted(0.75),
        interfaces,
    )
        .prop_map(
            |(
                mut rules,
                monitor,
                default_pass,
                essentials,
                options,
                ethertypes,
                rt,
                track,
                interfaces,
            )| {
                for (i, rule) in rules.iter_mut().enumerate() {
                    rule.name = format!("r{i}");
                }
                Policy {
                    mode: if monitor {
                        Mode::Monitor
                    } else {
                        Mode::Enforce
                    },
                    default: if default_pass {
                        DefaultAction::Pass
                    } else {
                        DefaultAction::Drop
                    },
                    essentials,
                    ipv4_options_allow: options,
                    unknown_ethertypes_pass: ethertypes,
                    return_traffic: rt,
                    fragments: if track {
                        Fragments::Track
                    } else {
                        Fragments::Drop
                    },
                    rules,
                    interfaces,
                    ..Policy::default()
                }
            },
        )
}

// ====================================================================== random frames

/// What the frame generator knows about a rule set: its prefixes and key boundaries.
#[derive(Clone, Debug)]
struct Targets {
    v4_nets: Vec<Ipv4Net>,
    v6_nets: Vec<Ipv6Net>,
    v4_addrs: Vec<Ipv4Addr>,
    v6_addrs: Vec<Ipv6Addr>,
    ports: Vec<u16>,
    types: Vec<u8>,
}

impl Targets {
    fn of(policy: &Policy) -> Targets {
        let mut t = Targets {
            v4_nets: vec!["10.0.0.0/22".parse().unwrap()],
            v6_nets: vec!["2001:db8:cf::/120".parse().unwrap()],
            v4_addrs: [
                "10.0.0.5",
                "192.0.2.9",
                "198.51.100.7",
                "10.1.1.1",
                "0.0.0.0",
            ]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
            v6_addrs: [
                "2001:db8:cf::5",
                "2001:db8:c1::9",
                "2001:db8:dead::1",
                "fe80::1",
                "::",
            ]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
            ports: vec![
                0, 1, 22, 53, 80, 443, 1024, 1025, 6443, 10250, 32767, 32768, 60999, 61000, 65535,
            ],
            types: vec![0, 1, 2, 3, 4, 8, 11, 12, 128, 133, 134, 135, 136, 137, 138],
        };
        for rule in &policy.rules {
            for net in &rule.sources {
                match net {
                    IpNet::V4(n) => {
                        t.v4_nets.push(*n);
                        let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
                        for a in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                            t.v4_addrs.push(Ipv4Addr::from(a));
                        }
                    }
                    IpNet::V6(n) => {
                        t.v6_nets.push(*n);
                        let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
                        for a in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                            t.v6_addrs.push(Ipv6Addr::from(a));
                        }
                    }
                }
            }
            for r in &rule.keys {
                for k in [
                    r.start().wrapping_sub(1),
                    *r.start(),
                    *r.end(),
                    r.end().wrapping_add(1),
                ] {
                    t.ports.push(k);
                    t.types.push(k as u8);
                }
            }
        }
        if let ReturnTraffic::Ephemeral { ports } = &policy.return_traffic {
            for k in [
                ports.start().wrapping_sub(1),
                *ports.start(),
                *ports.end(),
                ports.end().wrapping_add(1),
            ] {
                t.ports.push(k);
            }
        }
        t
    }
}

fn addr_strategy(t: &Targets, v6: bool) -> BoxedStrategy<IpAddr> {
    if v6 {
        let nets = t.v6_nets.clone();
        prop_oneof![
            4 => prop::sample::select(t.v6_addrs.clone()).prop_map(IpAddr::V6),
            3 => (prop::sample::select(nets), any::<u128>()).prop_map(|(n, r)| {
                let host = if n.prefix_len() == 128 { 0 } else { r & (u128::MAX >> n.prefix_len()) };
                IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
            }),
            1 => any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
        .boxed()
    } else {
        let nets = t.v4_nets.clone();
        prop_oneof![
            4 => prop::sample::select(t.v4_addrs.clone()).prop_map(IpAddr::V4),
            3 => (prop::sample::select(nets), any::<u32>()).prop_map(|(n, r)| {
                let host = if n.prefix_len() == 32 { 0 } else { r & (u32::MAX >> n.prefix_len()) };
                IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
            }),
            1 => any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        ]
        .boxed()
    }
}

fn port_strategy(t: &Targets) -> BoxedStrategy<u16> {
    prop_oneof![
        3 => prop::sample::select(t.ports.clone()),
        1 => any::<u16>(),
    ]
    .boxed()
}

fn type_strategy(t: &Targets) -> BoxedStrategy<u8> {
    prop_oneof![
        3 => prop::sample::select(t.types.clone()),
        1 => any::<u8>(),
    ]
    .boxed()
}

/// The transport of a generated frame.
#[derive(Clone, Debug)]
enum L4 {
    Tcp { sport: u16, dport: u16, flags: u8 },
    Udp { sport: u16, dport: u16 },
    Icmp { ty: u8, code: u8 },
    Icmpv6 { ty: u8, code: u8 },
    Raw { proto: u8 },
}

impl L4 {
    fn proto(&self) -> u8 {
        match self {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } => 1,
            L4::Icmpv6 { .. } => 58,
            L4::Raw { proto } => *proto,
        }
    }

    fn frame(&self, src: IpAddr, dst: IpAddr) -> Frame {
        match *self {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => Frame::tcp(src, dst, sport, dport).flags(flags),
            L4::Udp { sport, dport } => Frame::udp(src, dst, sport, dport),
            L4::Icmp { ty, code } => Frame::icmp(src, dst, ty, code),
            L4::Icmpv6 { ty, code } => Frame::icmpv6(src, dst, ty, code),
            L4::Raw { proto } => Frame::ip_proto(src, dst, proto, &[]),
        }
    }
}

fn l4_strategy(t: &Targets) -> BoxedStrategy<L4> {
    let flags = prop_oneof![
        3 => Just(tcp_flags::SYN),
        3 => Just(tcp_flags::ACK),
        1 => Just(tcp_flags::SYN | tcp_flags::ACK),
        1 => Just(tcp_flags::RST),
        1 => Just(tcp_flags::FIN | tcp_flags::ACK),
        1 => any::<u8>(),
    ];
    prop_oneof![
        5 => (port_strategy(t), port_strategy(t), flags)
            .prop_map(|(sport, dport, flags)| L4::Tcp { sport, dport, flags }),
        4 => (port_strategy(t), port_strategy(t)).prop_map(|(sport, dport)| L4::Udp { sport, dport }),
        2 => (type_strategy(t), prop_oneof![3 => Just(0u8), 1 => Just(4u8), 1 => any::<u8>()])
            .prop_map(|(ty, code)| L4::Icmp { ty, code }),
        2 => (type_strategy(t), prop_oneof![3 => Just(0u8), 1 => any::<u8>()])
            .prop_map(|(ty, code)| L4::Icmpv6 { ty, code }),
        1 => prop::sample::select(vec![0u8, 2, 41, 43, 44, 47, 50, 51, 59, 60, 89, 103, 132, 255])
            .prop_map(|proto| L4::Raw { proto }),
        1 => any::<u8>().prop_map(|proto| L4::Raw { proto }),
    ]
    .boxed()
}

/// Extension header lengths: mostly short, sometimes up to the 2 KB maximum, so a chain can
/// carry the transport header past the first 3,520 bytes (into XDP frags under test runs).
fn ext_len() -> impl Strategy<Value = u8> {
    prop_oneof![8 => 0u8..=3, 1 => any::<u8>()]
}

fn ext_header_strategy() -> BoxedStrategy<ExtHeader> {
    prop_oneof![
        3 => ext_len().prop_map(|len| ExtHeader::HopByHop { len }),
        3 => ext_len().prop_map(|len| ExtHeader::DestOpts { len }),
        2 => (ext_len(), any::<u8>(), 0u8..=2).prop_map(|(len, routing_type, segments_left)| {
            ExtHeader::Routing { len, routing_type, segments_left }
        }),
        2 => (prop_oneof![2 => Just(0u16), 1 => 0u16..=4, 1 => any::<u16>()], any::<bool>(), 0u32..4)
            .prop_map(|(offset, more, id)| ExtHeader::Fragment { offset, more, id }),
        2 => prop_oneof![8 => 0u8..=6, 1 => any::<u8>()].prop_map(|len| ExtHeader::Ah { len }),
        1 => (
            prop::sample::select(vec![0u8, 43, 44, 51, 60]),
            prop::collection::vec(any::<u8>(), 0..=24),
        )
            .prop_map(|(code, bytes)| ExtHeader::Raw { code, bytes }),
    ]
    .boxed()
}

/// Field overrides that make malformed frames (applied through `craft`).
#[derive(Clone, Debug)]
enum Malform {
    Ihl(u8),
    TotLen(u16),
    Version(u8),
    ReservedFlag,
    DontFragment,
    PayloadLen(u16),
    Protocol(u8),
    TcpDataOffset(u8),
    UdpLen(u16),
    L4Truncate(usize),
    PadTo(usize),
    Truncate(usize),
    SetEthertype(u16),
}

fn malform_strategy() -> BoxedStrategy<Malform> {
    prop_oneof![
        2 => (0u8..16).prop_map(Malform::Ihl),
        2 => prop_oneof![0u16..80, any::<u16>()].prop_map(Malform::TotLen),
        1 => (0u8..16).prop_map(Malform::Version),
        1 => Just(Malform::ReservedFlag),
        1 => Just(Malform::DontFragment),
        2 => prop_oneof![0u16..80, any::<u16>()].prop_map(Malform::PayloadLen),
        1 => any::<u8>().prop_map(Malform::Protocol),
        2 => (0u8..16).prop_map(Malform::TcpDataOffset),
        2 => prop_oneof![0u16..40, any::<u16>()].prop_map(Malform::UdpLen),
        2 => (0usize..24).prop_map(Malform::L4Truncate),
        2 => (0usize..160).prop_map(Malform::PadTo),
        // Truncation anywhere, biased to the header boundaries of every layer.
        3 => prop_oneof![
            prop::sample::select(vec![0usize, 13, 14, 17, 18, 21, 22, 33, 34, 37, 38, 41, 42, 53, 54, 57, 58, 61, 62, 73, 74, 77, 78]),
            0usize..200,
        ]
        .prop_map(Malform::Truncate),
        1 => prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x9100, 0x88cc, 0x05dc])
            .prop_map(Malform::SetEthertype),
    ]
    .boxed()
}

/// Applies a field override if it fits the frame (craft panics on a misuse, e.g. a UDP
/// length on a TCP frame; such an override is skipped).
fn malform(frame: Frame, m: &Malform, v6: bool, l4: &L4) -> Frame {
    match (*m).clone() {
        Malform::Ihl(x) if !v6 => frame.ihl(x),
        Malform::TotLen(x) if !v6 => frame.tot_len(x),
        Malform::ReservedFlag if !v6 => frame.reserved_flag(),
        Malform::DontFragment if !v6 => frame.dont_fragment(),
        Malform::PayloadLen(x) if v6 => frame.payload_len(x),
        Malform::Version(x) => frame.version(x),
        Malform::Protocol(x) => frame.protocol(x),
        Malform::TcpDataOffset(x) if matches!(l4, L4::Tcp { .. }) => frame.tcp_data_offset(x),
        Malform::UdpLen(x) if matches!(l4, L4::Udp { .. }) => frame.udp_len(x),
        Malform::L4Truncate(x) => frame.l4_truncate(x),
        Malform::PadTo(x) => frame.pad_to(x),
        Malform::Truncate(x) => frame.truncate(x),
        Malform::SetEthertype(x) => frame.set_ethertype(x),
        _ => frame,
    }
}

/// Raw byte edits after building: flips and overwrites, biased to the headers.
#[derive(Clone, Debug)]
enum ByteEdit {
    Xor { at: usize, mask: u8 },
    Set { at: usize, value: u8 },
    Cut { at: usize },
}

fn byte_edit_strategy() -> BoxedStrategy<ByteEdit> {
    let at = prop_oneof![3 => 12usize..80, 1 => any::<usize>()];
    prop_oneof![
        4 => (at.clone(), 1u8..=255).prop_map(|(at, mask)| ByteEdit::Xor { at, mask }),
        2 => (at.clone(), any::<u8>()).prop_map(|(at, value)| ByteEdit::Set { at, value }),
        1 => at.prop_map(|at| ByteEdit::Cut { at }),
    ]
    .boxed()
}

fn apply_edits(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for e in edits {
        if bytes.is_empty() {
            break;
        }
        let n = bytes.len();
        match *e {
            ByteEdit::Xor { at, mask } => bytes[at % n] ^= mask,
            ByteEdit::Set { at, value } => bytes[at % n] = value,
            ByteEdit::Cut { at } => bytes.truncate(at % (n + 1)),
        }
    }
    bytes
}

/// VLAN tags: 0 to 3, standard and odd TPIDs.
fn tags_strategy() -> BoxedStrategy<Vec<(u16, u16)>> {
    let tag = (
        prop::sample::select(vec![0x8100u16, 0x88a8, 0x9100]),
        any::<u16>(),
    );
    prop_oneof![
        8 => Just(Vec::new()),
        2 => prop::collection::vec(tag.clone(), 1..=1),
        2 => prop::collection::vec(tag.clone(), 2..=2),
        1 => prop::collection::vec(tag, 3..=3),
    ]
    .boxed()
}

fn with_tags(mut frame: Frame, tags: &[(u16, u16)]) -> Frame {
    for (tpid, tci) in tags {
        frame = frame.vlan_tag(*tpid, *tci);
    }
    frame
}

/// One IP packet, possibly malformed.
fn ip_frame_strategy(t: &Targets) -> BoxedStrategy<Vec<Vec<u8>>> {
    let t4 = (
        addr_strategy(t, false),
        addr_strategy(t, false),
        l4_strategy(t),
        prop_oneof![4 => Just(None), 1 => prop::collection::vec(any::<u8>(), 1..=40).prop_map(Some)],
        prop_oneof![12 => Just(None), 1 => (0u16..=8, any::<bool>(), any::<u16>()).prop_map(Some)],
    )
        .prop_map(|(src, dst, l4, options, frag)| (src, dst, l4, options, frag, Vec::new()));
    let t6 = (
        addr_strategy(t, true),
        addr_strategy(t, true),
        l4_strategy(t),
        prop_oneof![
            3 => Just(Vec::new()),
            3 => prop::collection::vec(ext_header_strategy(), 1..=3),
            1 => prop::collection::vec(ext_header_strategy(), 4..=10),
        ],
    )
        .prop_map(|(src, dst, l4, ext)| (src, dst, l4, None, None, ext));
    (
        prop_oneof![3 => t4, 2 => t6],
        tags_strategy(),
        // Payload: none, small, or past the first page (the frame continues in XDP frags).
        prop_oneof![6 => Just(0usize), 6 => 0usize..64, 1 => 3400usize..9000],
        prop_oneof![3 => Just(64u8), 1 => Just(255u8), 1 => any::<u8>()],
        prop_oneof![2 => Just(Vec::new()), 1 => prop::collection::vec(malform_strategy(), 1..=2)],
        prop_oneof![4 => Just(Vec::new()), 1 => prop::collection::vec(byte_edit_strategy(), 1..=3)],
    )
        .prop_map(
            |((src, dst, l4, options, frag, ext), tags, payload, ttl, malforms, edits)| {
                let v6 = src.is_ipv6();
                let mut frame = l4.frame(src, dst).ttl(ttl);
                if payload > 0 {
                    frame = frame.payload(&vec![0xa5; payload]);
                }
                if let Some(options) = options {
                    frame = frame.ipv4_options(&options);
                }
                if let Some((offset, more, id)) = frag {
                    frame = frame.ipv4_fragment(offset, more, id);
                }
                for h in ext {
                    frame = frame.ipv6_ext(h);
                }
                frame = with_tags(frame, &tags);
                for m in &malforms {
                    frame = malform(frame, m, v6, &l4);
                }
                vec![apply_edits(frame.build(), &edits)]
            },
        )
        .boxed()
}

/// A fragmented datagram: its first fragment and followers (same source, destination,
/// protocol and id, or a near miss), in order or not.
fn datagram_strategy(t: &Targets) -> BoxedStrategy<Vec<Vec<u8>>> {
    let follower = (
        prop_oneof![3 => 3u16..400, 1 => 1u16..=3],
        any::<bool>(),
        prop_oneof![6 => Just(0u8), 1 => 1u8..=4],
    );
    (
        any::<bool>(),
        addr_strategy(t, false),
        addr_strategy(t, false),
        addr_strategy(t, true),
        addr_strategy(t, true),
        l4_strategy(t),
        any::<u16>(),
        prop::collection::vec(follower, 1..=3),
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(ext_header_strategy(), 1..=2)],
        prop_oneof![6 => Just(true), 1 => Just(false)],
        prop_oneof![6 => Just(0usize), 1 => 0usize..24],
        tags_strategy(),
    )
        .prop_map(
            |(v6, s4, d4, s6, d6, l4, id, followers, pre, first_first, cut, tags)| {
                let (src, dst) = if v6 { (s6, d6) } else { (s4, d4) };
                let pre: Vec<ExtHeader> = pre
                    .into_iter()
                    .filter(|h| !matches!(h, ExtHeader::Fragment { .. }))
                    .collect();
                let payload = vec![0x5a; 48];
                let mut first = l4.frame(src, dst).payload(&payload);
                if cut > 0 {
                    first = first.l4_truncate(cut);
                }
                let first = if v6 {
                    let f = pre.iter().cloned().fold(first, Frame::ipv6_ext);
                    f.ipv6_fragment(0, true, u32::from(id))
                } else {
                    first.ipv4_fragment(0, true, id)
                };
                let mut frames = vec![with_tags(first, &tags).build()];
                for (offset, more, miss) in followers {
                    // A near miss changes one key field (id, protocol, source, destination).
                    let proto = if miss == 2 { l4.proto() ^ 1 } else { l4.proto() };
                    let fid = if miss == 1 { id ^ 1 } else { id };
                    let fsrc = if miss == 3 { dst } else { src };
                    let fdst = if miss == 4 { src } else { dst };
                    let f = Frame::ip_proto(fsrc, fdst, proto, &[0x5a; 24]);
                    let f = if v6 {
                        pre.iter()
                            .cloned()
                            .fold(f, Frame::ipv6_ext)
                            .ipv6_fragment(offset, more, u32::from(fid))
                    } else {
                        f.ipv4_fragment(offset, more, fid)
                    };
                    frames.push(with_tags(f, &tags).build());
                }
                if !first_first {
                    frames.rotate_left(1);
                }
                frames
            },
        )
        .boxed()
}

/// Non-IP frames: ARP, other ethertypes, 802.3 lengths, runts.
fn non_ip_strategy() -> BoxedStrategy<Vec<Vec<u8>>> {
    (
        prop_oneof![
            3 => Just(0x0806u16),
            2 => prop::sample::select(vec![0x88ccu16, 0x8035, 0x05dc, 0x0000, 0x8847, 0x88e5, 0xffff]),
            1 => any::<u16>(),
        ],
        prop::collection::vec(any::<u8>(), 0..=64),
        tags_strategy(),
        prop_oneof![4 => Just(None), 1 => (0usize..20).prop_map(Some)],
    )
        .prop_map(|(ethertype, body, tags, cut)| {
            let mut frame = if ethertype == 0x0806 && body.len() > 40 {
                Frame::arp()
            } else {
                Frame::ethertype(ethertype, &body)
            };
            frame = with_tags(frame, &tags);
            if let Some(len) = cut {
                frame = frame.truncate(len);
            }
            vec![frame.build()]
        })
        .boxed()
}

/// Frames for one rule set: each value is one frame, or a fragmented datagram in sequence.
fn frames_strategy(t: &Targets) -> BoxedStrategy<Vec<Vec<u8>>> {
    prop_oneof![
        8 => ip_frame_strategy(t),
        2 => datagram_strategy(t),
        1 => non_ip_strategy(),
    ]
    .boxed()
}

fn sample<S: Strategy>(strategy: &S, runner: &mut TestRunner) -> S::Value {
    strategy
        .new_tree(runner)
        .expect("strategies never reject")
        .current()
}

// ====================================================================== K36

/// K36: random rule sets × random, structured and malformed frames.
#[test]
fn random_configs_and_frames() {
    let cases = env_number("NODEGATE_DIFF_CASES").unwrap_or(DEFAULT_CASES as u64) as usize;
    let seed = env_number("NODEGATE_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let mut seed_bytes = [0u8; 32];
    for (i, chunk) in seed_bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes(),
        );
    }
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let configs = cases.div_ceil(FRAMES_PER_CONFIG).max(1);
    println!(
        "differential: {cases} frames over {configs} rule sets, seed {seed:#x} (NODEGATE_DIFF_CASES, NODEGATE_DIFF_SEED)"
    );

    // What reloading the program per rule set would cost (instead, NG_FRAGS is emptied).
    let t = Instant::now();
    drop(common::load_private());
    println!("  (loading the program once takes {:?})", t.elapsed());

    let start = Instant::now();
    let mut differ = Differ::new();
    let mut fixture_monitor = fixture();
    fixture_monitor.mode = Mode::Monitor;
    let policies = policy_strategy();
    let mut skipped = 0;
    let mut frames_done = 0;
    let mut publish_time = Duration::ZERO;
    // Rule sets that give the test interface its own settings / use stateful return traffic:
    // printed, so a change to the strategies that loses them shows.
    let (mut own_settings, mut stateful, mut scoped) = (0, 0, 0);
    for index in 0..configs {
        let policy = match index {
            0 => fixture(),
            1 => fixture_monitor.clone(),
            _ => sample(&policies, &mut runner),
        };
        let t = Instant::now();
        let mut published = match differ.publish(&policy) {
            Ok(p) => p,
            Err(e) => {
                skipped += 1;
                println!("  rule set {index} skipped: {e}");
                continue;
            }
        };
        publish_time += t.elapsed();
        own_settings += usize::from(policy.interfaces.contains_key(DIFF_IFACE));
        stateful += usize::from(policy.return_traffic == ReturnTraffic::Stateful);
        scoped += usize::from(policy.rules.iter().any(|r| !r.interfaces.is_empty()));
        let targets = Targets::of(&policy);
        let strategy = frames_strategy(&targets);
        let budget = FRAMES_PER_CONFIG.min(cases - frames_done.min(cases)).max(1);
        let mut n = 0;
        let mut kernel = KernelJudge::new(&mut differ.filter).expect("read the counters");
        while n < budget {
            for (i, frame) in sample(&strategy, &mut runner).iter().enumerate() {
                let context = || format!("rule set {index} frame {n}.{i} under {policy:?}\n   ");
                differ
                    .tally
                    .judge(&mut kernel, &mut published, &context, frame);
            }
            n += 1;
        }
        frames_done += n;
        differ.finish_generation(&format!("rule set {index} ({policy:?})"), published);
        if configs >= 100 && (index + 1) % (configs / 10) == 0 {
            println!(
                "  … {} rule sets, {} frames, {} disagreements, {:.0?}",
                index + 1,
                differ.tally.judged(),
                differ.tally.disagreement_count,
                start.elapsed()
            );
        }
    }
    let elapsed = start.elapsed();
    let judged = differ.tally.judged();
    println!(
        "  {judged} frames judged ({} kernel + model, {} model only) from {frames_done} cases over {} rule sets ({skipped} skipped; {own_settings} with settings for {DIFF_IFACE}, {scoped} with rules that name interfaces, {stateful} stateful) in {elapsed:.2?} ({:.0} frames/s; publishing {publish_time:.2?})",
        differ.tally.kernel_frames,
        differ.tally.model_only_frames + differ.tally.too_long_frames,
        configs - skipped,
        judged as f64 / elapsed.as_secs_f64(),
    );
    println!("  reasons (model): {:?}", differ.tally.reasons);
    assert!(
        skipped * 10 <= configs,
        "too many rule sets did not compile"
    );
    differ.tally.assert_agreement("random rule sets and frames");
}

// ====================================================================== K37

/// Frames of one capture file, in file order, as the replay harness reads them (the same
/// reader: a capture the differential test reads, `nodegate replay` reads too). The
/// frames are judged as captured: stumps of the snap length exercise both parsers' length
/// checks.
fn read_capture(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    filter_user::replay::read_capture(path)
        .map(|c| c.frames.into_iter().map(|f| f.data).collect())
        .map_err(|e| e.to_string())
}

fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/tcpdump");
    assert!(
        dir.is_dir(),
        "the capture corpus is missing: expected {} (shared/corpus/tcpdump beside the repository checkout, \
         as in CI); K37 cannot run without it",
        dir.display()
    );
    dir
}

/// K37: every frame of the real captures, fixture rule set, enforce and monitor mode (and
/// two variants of the fixture with the other policy switches).
#[test]
fn tcpdump_corpus_enforce_and_monitor() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("pcap" | "pcapng")
            )
        })
        .collect();
    files.sort();

    let start = Instant::now();
    let mut captures = Vec::new();
    let mut per_file = Vec::new();
    let mut problems = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match read_capture(path) {
            Ok(frames) => {
                per_file.push((name.clone(), frames.len()));
                captures.push((name, frames));
            }
            Err(e) => problems.push(format!("{name}: unreadable: {e}")),
        }
    }
    let total: usize = per_file.iter().map(|(_, n)| n).sum();
    let short = captures
        .iter()
        .flat_map(|(_, f)| f)
        .filter(|f| f.len() < MIN_TEST_RUN_FRAME)
        .count();
    let largest = per_file
        .iter()
        .max_by_key(|(_, n)| *n)
        .cloned()
        .unwrap_or_default();
    let empty: Vec<&str> = per_file
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(f, _)| f.as_str())
        .collect();
    println!(
        "corpus: {} files, {total} frames ({short} shorter than {MIN_TEST_RUN_FRAME} bytes, model only), read in {:.2?}; most frames: {} ({}); files without frames: {empty:?}",
        files.len(),
        start.elapsed(),
        largest.0,
        largest.1
    );
    assert!(
        problems.is_empty(),
        "corpus problems:\n{}",
        problems.join("\n")
    );
    assert_eq!(files.len(), 434, "capture files in {}", dir.display());
    assert_eq!(total, 8261, "frames in the corpus");

    let mut differ = Differ::new();
    // K37 asks for the fixture in enforce and monitor mode; three more variants of it cover
    // the other policy switches on the same real traffic (the kernel_vs_model fuzz target's
    // rule sets).
    let runs = filter_user::fuzzing::rule_sets();
    for (mode, policy) in &runs {
        let t = Instant::now();
        let before = (
            differ.tally.kernel_frames,
            differ.tally.model_only_frames,
            differ.tally.too_long_frames,
        );
        let mut published = differ.publish(policy).expect("the fixture compiles");
        differ.tally.refusals.clear();
        let mut kernel = KernelJudge::new(&mut differ.filter).expect("read the counters");
        for (name, frames) in &captures {
            // Each capture is its own trace: fragments do not carry over between files.
            published.state.clear();
            clear_fragments(kernel.filter());
            for (index, frame) in frames.iter().enumerate() {
                let context = || format!("{mode}: {name} frame {index}");
                differ
                    .tally
                    .judge(&mut kernel, &mut published, &context, frame);
            }
        }
        differ.finish_generation(&format!("{mode}: corpus"), published);
        let kernel_frames = differ.tally.kernel_frames - before.0;
        let short = differ.tally.model_only_frames - before.1;
        let long = differ.tally.too_long_frames - before.2;
        println!(
            "  {mode}: {kernel_frames} frames judged by kernel and model, by the model only {short} \
             shorter than {MIN_TEST_RUN_FRAME} bytes and {long} that BPF_PROG_TEST_RUN refused \
             (errno → frames {:?}), in {:.2?}",
            differ.tally.refusals,
            t.elapsed()
        );
        assert_eq!(kernel_frames + short + long, total, "every frame judged");
    }
    println!("  reasons (model, all runs): {:?}", differ.tally.reasons);
    differ.tally.assert_agreement("tcpdump corpus");
}

// ====================================================== large and adversarial prefix sets

/// SplitMix64: deterministic prefix sets without a proptest runner.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn v4(&mut self, lens: RangeInclusive<u8>) -> IpNet {
        let len = *lens.start() + self.below(u64::from(lens.end() - lens.start()) + 1) as u8;
        IpNet::V4(
            Ipv4Net::new(Ipv4Addr::from(self.next() as u32), len)
                .unwrap()
                .trunc(),
        )
    }

    fn v6(&mut self, lens: RangeInclusive<u8>) -> IpNet {
        let len = *lens.start() + self.below(u64::from(lens.end() - lens.start()) + 1) as u8;
        let bits = (u128::from(self.next()) << 64) | u128::from(self.next());
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(bits), len).unwrap().trunc())
    }
}

/// The named adversarial source sets: random mixed lengths at scale, host routes that share
/// every node level, deep nesting chains, every prefix length of both families, IPv4-mapped
/// IPv6 beside IPv4.
fn adversarial_sets() -> Vec<(&'static str, Vec<IpNet>)> {
    let mut rng = Mix(0x6e67_6164_7673_0001);
    let mut sets = Vec::new();
    let mut random: Vec<IpNet> = (0..100_000).map(|_| rng.v4(8..=32)).collect();
    random.extend((0..10_000).map(|_| rng.v6(32..=128)));
    sets.push((
        "100k random mixed-length IPv4 /8-/32 + 10k IPv6 /32-/128",
        random,
    ));
    // Crowded: two or more in almost half of the IPv6 root's slots, so most end in tail
    // records of several prefixes.
    sets.push((
        "100k random IPv6 /32-/128",
        (0..100_000).map(|_| rng.v6(32..=128)).collect(),
    ));
    // Clustered like an export or a blocklist: 100k /16-/32 inside 10.0.0.0/8, dense enough
    // that the walk below most /16s starts with a wide node.
    let clustered: Vec<IpNet> = (0..100_000)
        .map(|_| {
            let len = 16 + rng.below(17) as u8;
            let addr = Ipv4Addr::from(0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff));
            IpNet::V4(Ipv4Net::new(addr, len).unwrap().trunc())
        })
        .collect();
    sets.push(("100k IPv4 /16-/32 clustered in 10.0.0.0/8", clustered));
    // Pairs of host routes that differ only in their last bit, 20 pairs per /24 in a few
    // /16s: every IPv4 node level down to /26 is built, then a record of two per pair; the
    // IPv6 pairs crowd one /116, so nodes go down to /128.
    let mut hosts = Vec::new();
    for i in 0..20_000u32 {
        let base = 0x0a40_0000 | ((i % 1024) << 8) | ((i / 1024) << 3);
        for last in [0, 1] {
            hosts.push(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(base | last), 32).unwrap(),
            ));
        }
    }
    for i in 0..2_000u128 {
        let base = (0x2001_0db8_00aa_u128 << 80) | (i << 1);
        for last in [0, 1] {
            hosts.push(IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(base | last), 128).unwrap(),
            ));
        }
    }
    sets.push(("40k IPv4 /32s and 4k IPv6 /128s in adjacent pairs", hosts));
    let mut chains = Vec::new();
    for _ in 0..500 {
        let a = rng.next() as u32;
        for len in [8, 16, 24, 32] {
            chains.push(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc(),
            ));
        }
        let b = (u128::from(rng.next()) << 64) | u128::from(rng.next());
        for len in [32, 48, 64, 96, 128] {
            chains.push(IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(b), len).unwrap().trunc(),
            ));
        }
    }
    sets.push((
        "500 nesting chains /8 ⊃ /16 ⊃ /24 ⊃ /32 and /32 ⊃ … ⊃ /128",
        chains,
    ));
    let mut lengths = Vec::new();
    for a in [0x0a01_0203u32, 0xc0a8_fffe, 0xffff_ffff, 0] {
        for len in 0..=32 {
            lengths.push(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc(),
            ));
        }
    }
    for b in [0x2001_0db8_0000_0000_0000_0000_0000_0001u128, u128::MAX, 1] {
        for len in 0..=128 {
            lengths.push(IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(b), len).unwrap().trunc(),
            ));
        }
    }
    sets.push(("every prefix length 0-32 and 0-128", lengths));
    let mapped = |a: u32, len: u8| {
        IpNet::V6(
            Ipv6Net::new(Ipv4Addr::from(a).to_ipv6_mapped(), 96 + len)
                .unwrap()
                .trunc(),
        )
    };
    sets.push((
        "IPv4-mapped IPv6 beside IPv4",
        vec![
            mapped(0x0a00_0000, 8),
            mapped(0x0a00_0005, 32),
            mapped(0xc000_0200, 24),
            IpNet::V6("::ffff:0:0/96".parse().unwrap()),
            IpNet::V4("10.0.0.0/8".parse().unwrap()),
            IpNet::V4("10.0.0.4/30".parse().unwrap()),
        ],
    ));
    sets
}

/// First and last address of a prefix, and the neighbours just outside it.
fn boundaries(net: &IpNet) -> Vec<IpAddr> {
    match net {
        IpNet::V4(n) => {
            let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
            [first, last, first.wrapping_sub(1), last.wrapping_add(1)]
                .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .to_vec()
        }
        IpNet::V6(n) => {
            let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
            [first, last, first.wrapping_sub(1), last.wrapping_add(1)]
                .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .to_vec()
        }
    }
}

/// The kernel's flat source tables against the model's own prefix matching, on large and
/// adversarial source sets: every set split over rules of different kinds and ports (so
/// nested prefixes have different classes), probed at the boundaries of sampled prefixes
/// (`NODEGATE_DIFF_PREFIX_PROBES` per set, default 1,500) and at random addresses.
#[test]
fn adversarial_prefix_sets() {
    // Capacity for the 100k random IPv6 prefixes. Once with the 18-bit IPv4 root, once with
    // the 20-bit one a large capacity gets, and once each with the tables a layout-5 loader
    // published (no inline IPv4 prefixes) and a layout-4 one (tail records of one prefix:
    // an IPv6 1 KiB node wherever two prefixes share a slot, so the 100k random IPv6 set
    // then takes 31 MiB and needs 4x the capacity).
    for (ipv4, ipv6, legacy) in [
        (262_144, 131_072, None),
        (filter_common::lookup::V4_LARGE_FROM, 131_072, None),
        (262_144, 131_072, Some(5)),
        (262_144, 524_288, Some(4)),
    ] {
        adversarial_prefix_sets_with(PrefixCapacity { ipv4, ipv6 }, legacy);
    }
}

fn adversarial_prefix_sets_with(capacity: PrefixCapacity, legacy: Option<u32>) {
    let probes = env_number("NODEGATE_DIFF_PREFIX_PROBES").unwrap_or(1_500) as usize;
    println!(
        "  IPv4 capacity {}, IPv6 capacity {}{}:",
        capacity.ipv4,
        capacity.ipv6,
        legacy.map_or(String::new(), |layout| format!(
            ", as layout {layout} published"
        ))
    );
    let mut differ = Differ::with_capacity(capacity);
    differ.legacy = legacy;
    let mut rng = Mix(0x6e67_7072_6f62_0001);
    for (label, sources) in adversarial_sets() {
        let kinds = [
            (RuleKind::Allow, 443..=443),
            (RuleKind::Deny, 400..=500),
            (RuleKind::Allow, 1..=65535),
        ];
        let rules = kinds
            .iter()
            .enumerate()
            .map(|(k, (kind, ports))| Rule {
                name: format!("part-{k}"),
                kind: *kind,
                sources: sources
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % kinds.len() == k)
                    .map(|(_, s)| *s)
                    .collect(),
                protocol: Protocol::Tcp,
                keys: vec![ports.clone()],
                interfaces: Vec::new(),
            })
            .collect();
        let policy = Policy {
            rules,
            return_traffic: ReturnTraffic::Off,
            capacity,
            ..Policy::default()
        };
        let t = Instant::now();
        let mut published = differ
            .publish(&policy)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let s = &published.tables.stats;
        println!(
            "  {label}: {} + {} prefixes, tables {} + {} KiB, compiled and published in {:.1?}",
            s.v4_prefixes,
            s.v6_prefixes,
            s.v4_table_words * 4 / 1024,
            s.v6_table_words * 4 / 1024,
            t.elapsed()
        );
        let mut addrs: Vec<IpAddr> = Vec::new();
        for _ in 0..probes.min(sources.len()) {
            let net = &sources[rng.below(sources.len() as u64) as usize];
            addrs.extend(boundaries(net));
        }
        for _ in 0..probes / 4 {
            addrs.push(IpAddr::V4(Ipv4Addr::from(rng.next() as u32)));
            let bits = (u128::from(rng.next()) << 64) | u128::from(rng.next());
            addrs.push(IpAddr::V6(Ipv6Addr::from(bits)));
        }
        let mut kernel = KernelJudge::new(&mut differ.filter).expect("read the counters");
        for src in addrs {
            let dst = match src {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                IpAddr::V6(_) => IpAddr::V6("2001:db8::1".parse().unwrap()),
            };
            let dport = [443, 450, 8080][rng.below(3) as usize];
            let frame = Frame::tcp(src, dst, 40_000, dport).syn().build();
            let context = || format!("{label}: source {src} port {dport}\n   ");
            differ
                .tally
                .judge(&mut kernel, &mut published, &context, &frame);
        }
        differ.finish_generation(label, published);
    }
    println!(
        "  {} frames judged, {} disagreements",
        differ.tally.judged(),
        differ.tally.disagreement_count
    );
    differ.tally.assert_agreement("adversarial prefix sets");
}
