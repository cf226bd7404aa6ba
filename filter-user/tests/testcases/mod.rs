//! The packet cases of shared/TESTCASES.md (A–H27, and the edge cases docs/VERDICTS.md
//! names) as one table of checks on one fixture (`tests/fixtures/testcases.yaml` and
//! variants of its text), written once and driven twice:
//! - `model_packets`: by the reference model alone (no privileges);
//! - `kernel_packets`: by the real XDP program under `BPF_PROG_TEST_RUN`, with the model
//!   judging every frame beside it.
//!
//! A case is a function over a [`Bed`]: it builds the bed on its rule set and checks frames
//! in order (fragment state carries from one check to the next, as in the kernel's
//! `NG_FRAGS`), each with the verdict, reason and rule it must get. [`testcases!`] makes one
//! `#[test]` per case for a bed type.
#![allow(
    dead_code,
    reason = "included by two test crates; each uses the cases, not every helper"
)]

use std::net::IpAddr;

use filter_common::Reason::{self, *};
use filter_user::craft::{tcp_flags, ExtHeader, Frame};
use filter_user::policy::{DefaultAction, Mode, Policy, ReturnTraffic};

pub const PASS: bool = true;
pub const DROP: bool = false;

/// Where a case's checks run: a rule set loaded into a judge.
pub trait Bed {
    /// A bed judging by `policy`.
    fn new(policy: Policy) -> Self;
    /// The rule set it judges by.
    fn policy(&self) -> &Policy;
    /// Judge `frame`; it must get `pass`, `reason` and `rule` (in monitor mode a drop reason
    /// comes with `would_drop`). Failures are collected until [`Bed::finish`].
    #[track_caller]
    fn check(&mut self, frame: &Frame, pass: bool, reason: Reason, rule: Option<&str>);
    /// Panics listing every failed check.
    fn finish(self);
}

/// A frame's builder description, cut to a readable length.
pub fn describe(frame: &Frame) -> String {
    const SHOWN: usize = 800;
    let text = format!("{frame:?}");
    match text.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// What a check expects, as failure reports print it.
pub fn expected(pass: bool, reason: Reason, rule: Option<&str>, would_drop: bool) -> String {
    format!(
        "{} {}{}{}",
        if pass { "pass" } else { "drop" },
        reason.name(),
        rule.map(|r| format!(" rule {r}")).unwrap_or_default(),
        if would_drop { " [would drop]" } else { "" },
    )
}

/// A bed's failed checks, collected so that one run reports every disagreement of a case.
/// [`Failures::finish`] panics listing them; so does dropping it unfinished with some.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    /// Record one failed check.
    pub fn push(&mut self, failure: String) {
        self.0.push(failure);
    }

    /// Panic listing every failed check, if any; `checks` is how many there were.
    pub fn finish(&mut self, checks: usize) {
        let failures = std::mem::take(&mut self.0);
        assert!(checks > 0, "a case without checks");
        assert!(
            failures.is_empty(),
            "{} of {checks} checks failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

impl Drop for Failures {
    fn drop(&mut self) {
        if !self.0.is_empty() && !std::thread::panicking() {
            panic!(
                "a bed dropped without finish(); {} failed checks:\n{}",
                self.0.len(),
                self.0.join("\n")
            );
        }
    }
}

/// One `#[test]` per case, judged by `$bed`.
#[macro_export]
macro_rules! testcases {
    ($bed:ty) => {
        #[test]
        fn a1_port_per_set() {
            testcases::a1_port_per_set::<$bed>()
        }
        #[test]
        fn a2_source_allow_list() {
            testcases::a2_source_allow_list::<$bed>()
        }
        #[test]
        fn a3_port_and_protocol_must_match() {
            testcases::a3_port_and_protocol_must_match::<$bed>()
        }
        #[test]
        fn a4_failsafe() {
            testcases::a4_failsafe::<$bed>()
        }
        #[test]
        fn a5_boundaries() {
            testcases::a5_boundaries::<$bed>()
        }
        #[test]
        fn a6_overlapping_allow_rules_are_a_union() {
            testcases::a6_overlapping_allow_rules_are_a_union::<$bed>()
        }
        #[test]
        fn a7_deny_beats_allow_and_failsafe_beats_deny() {
            testcases::a7_deny_beats_allow_and_failsafe_beats_deny::<$bed>()
        }
        #[test]
        fn a8_monitor_mode() {
            testcases::a8_monitor_mode::<$bed>()
        }
        #[test]
        fn b9_ipv4_header_checks() {
            testcases::b9_ipv4_header_checks::<$bed>()
        }
        #[test]
        fn b10_ipv4_options() {
            testcases::b10_ipv4_options::<$bed>()
        }
        #[test]
        fn b11_ethernet_padding() {
            testcases::b11_ethernet_padding::<$bed>()
        }
        #[test]
        fn c12_truncation() {
            testcases::c12_truncation::<$bed>()
        }
        #[test]
        fn c13_tcp_data_offset_and_udp_length() {
            testcases::c13_tcp_data_offset_and_udp_length::<$bed>()
        }
        #[test]
        fn c14_protocols_without_rules() {
            testcases::c14_protocols_without_rules::<$bed>()
        }
        #[test]
        fn d15_ipv4_first_fragment_is_evaluated() {
            testcases::d15_ipv4_first_fragment_is_evaluated::<$bed>()
        }
        #[test]
        fn d16_non_first_fragment_payload_is_never_read() {
            testcases::d16_non_first_fragment_payload_is_never_read::<$bed>()
        }
        #[test]
        fn d17_fragment_tracking_ipv4() {
            testcases::d17_fragment_tracking_ipv4::<$bed>()
        }
        #[test]
        fn d18_tiny_fragments() {
            testcases::d18_tiny_fragments::<$bed>()
        }
        #[test]
        fn d19_ipv6_fragments() {
            testcases::d19_ipv6_fragments::<$bed>()
        }
        #[test]
        fn e20_ipv6_rules() {
            testcases::e20_ipv6_rules::<$bed>()
        }
        #[test]
        fn e21_extension_headers() {
            testcases::e21_extension_headers::<$bed>()
        }
        #[test]
        fn e22_no_next_header() {
            testcases::e22_no_next_header::<$bed>()
        }
        #[test]
        fn f23_vlan() {
            testcases::f23_vlan::<$bed>()
        }
        #[test]
        fn g24_arp_and_ethertypes() {
            testcases::g24_arp_and_ethertypes::<$bed>()
        }
        #[test]
        fn g25_icmp() {
            testcases::g25_icmp::<$bed>()
        }
        #[test]
        fn g26_icmpv6_and_neighbor_discovery() {
            testcases::g26_icmpv6_and_neighbor_discovery::<$bed>()
        }
        #[test]
        fn h27_return_traffic_ephemeral() {
            testcases::h27_return_traffic_ephemeral::<$bed>()
        }
        #[test]
        fn default_pass_and_malformed_drops_under_it() {
            testcases::default_pass_and_malformed_drops_under_it::<$bed>()
        }
        #[test]
        fn frames_past_the_first_page() {
            testcases::frames_past_the_first_page::<$bed>()
        }
    };
}

// ------------------------------------------------------------------ fixture and variants

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/testcases.yaml");

/// Rule names of the fixture.
const ADMIN: Option<&str> = Some("admin");
const CP_API: Option<&str> = Some("control-plane-api");
const CP_TCP_HIGH: Option<&str> = Some("control-plane-tcp-high");
const CP_UDP_HIGH: Option<&str> = Some("control-plane-udp-high");
const CLIENTS_HTTPS: Option<&str> = Some("clients-https");

fn fixture_text() -> String {
    std::fs::read_to_string(FIXTURE)
        .unwrap_or_else(|e| panic!("cannot read the TESTCASES fixture {FIXTURE}: {e}"))
}

use crate::common::policy_of;

fn fixture() -> Policy {
    policy_of("testcases.yaml", &fixture_text())
}

/// The fixture text with `from` replaced by `to`; `from` must occur exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the fixture should contain {from:?} exactly once"
    );
    text.replacen(from, to, 1)
}

/// The fixture text with top-level `lines` added after `version: 1`.
fn with_top(text: &str, lines: &str) -> String {
    replace_once(text, "version: 1\n", &format!("version: 1\n{lines}\n"))
}

/// The fixture text with `rules` (YAML list items, indented by two) appended to its rule
/// list, i.e. after every fixture rule in file order. The rule list must be the file's last
/// top-level key for this to be an append.
fn with_rules(text: &str, rules: &str) -> String {
    let last_top = text
        .lines()
        .rfind(|l| !l.is_empty() && !l.starts_with([' ', '#', '-']));
    assert_eq!(
        last_top,
        Some("rules:"),
        "the fixture's last top-level key must be `rules:`"
    );
    format!("{}\n{rules}\n", text.trim_end())
}

/// The fixture plus `10.0.0.0/16 tcp 8443` (TESTCASES 6), after the fixture's rules.
const OVERLAP_RULE: &str =
    "  - name: cp16-8443\n    from: [10.0.0.0/16]\n    protocol: tcp\n    ports: [8443]";
/// A deny rule for the upper half of the control plane's /24 (TESTCASES 7).
const DENY_RULE: &str =
    "  - name: deny-upper\n    from: [10.0.0.128/25]\n    protocol: any\n    action: deny";
/// Every protocol from the control plane (TESTCASES 14, 22).
const ANY_RULE: &str = "  - name: cp-any\n    from: [control-plane]\n    protocol: any";
/// Echo requests from the disallowed sample's /24 (TESTCASES 25).
const PING_RULE: &str =
    "  - name: ping\n    from: [198.51.100.0/24]\n    protocol: icmp\n    types: [8]";

fn variant(top: &str, rules: &str) -> Policy {
    let mut text = fixture_text();
    if !top.is_empty() {
        text = with_top(&text, top);
    }
    if !rules.is_empty() {
        text = with_rules(&text, rules);
    }
    policy_of("testcases-variant.yaml", &text)
}

/// The fixture in monitor mode, plus `rules`.
fn monitor_variant(rules: &str) -> Policy {
    let text = replace_once(&fixture_text(), "mode: enforce\n", "mode: monitor\n");
    let text = if rules.is_empty() {
        text
    } else {
        with_rules(&text, rules)
    };
    let policy = policy_of("testcases-monitor.yaml", &text);
    assert_eq!(policy.mode, Mode::Monitor);
    policy
}

// ------------------------------------------------------------------ addresses and frames

const CP4: &str = "10.0.0.5";
const CLIENT4: &str = "192.0.2.9";
const BAD4: &str = "198.51.100.7";
const NODE4: &str = "10.1.1.1";
const CP6: &str = "2001:db8:cf::5";
const CLIENT6: &str = "2001:db8:c1::9";
const BAD6: &str = "2001:db8:dead::1";
const NODE6: &str = "2001:db8::1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn node_of(src: &str) -> IpAddr {
    if ip(src).is_ipv4() {
        ip(NODE4)
    } else {
        ip(NODE6)
    }
}

/// A TCP SYN from `src` port 40000 to the node.
fn syn(src: &str, dport: u16) -> Frame {
    Frame::tcp(ip(src), node_of(src), 40000, dport).syn()
}

/// A UDP datagram from `src` port 40000 to the node.
fn udp(src: &str, dport: u16) -> Frame {
    Frame::udp(ip(src), node_of(src), 40000, dport)
}

// ------------------------------------------------------------------ A. Allow and deny

pub fn a1_port_per_set<B: Bed>() {
    let mut t = B::new(fixture());
    t.check(&syn(CP4, 10250), PASS, AllowRule, CP_API);
    t.check(&syn(CLIENT4, 10250), DROP, NoRuleMatch, None);
    t.check(&syn(CP6, 10250), PASS, AllowRule, CP_API);
    t.check(&syn(CLIENT6, 10250), DROP, NoRuleMatch, None);
    t.finish();
}

pub fn a2_source_allow_list<B: Bed>() {
    let mut t = B::new(fixture());
    t.check(&syn(CLIENT4, 443), PASS, AllowRule, CLIENTS_HTTPS);
    t.check(&syn(BAD4, 443), DROP, NoSourceMatch, None);
    t.check(&syn(CLIENT6, 443), PASS, AllowRule, CLIENTS_HTTPS);
    t.check(&syn(BAD6, 443), DROP, NoSourceMatch, None);
    // The control plane's 443 comes from its own rule, first in file order.
    t.check(&syn(CP4, 443), PASS, AllowRule, CP_API);
    t.finish();
}

pub fn a3_port_and_protocol_must_match<B: Bed>() {
    let mut t = B::new(fixture());
    // NB: TESTCASES A3 says "TCP → 8080 from 10.0.0.5 → DROP", but the same fixture allows
    // tcp 1025-65535 from the control plane (TESTCASES rule set), so 8080 passes there under
    // `control-plane-tcp-high`. The intent — a TCP port no rule of the source allows drops —
    // is tested with a port below 1025, and 8080 from a source without the high-port rule.
    t.check(&syn(CP4, 8080), PASS, AllowRule, CP_TCP_HIGH);
    t.check(&syn(CP4, 80), DROP, NoRuleMatch, None);
    t.check(&syn(CP6, 80), DROP, NoRuleMatch, None);
    t.check(&syn(CLIENT4, 8080), DROP, NoRuleMatch, None);
    // UDP → 443: only TCP allows 443, and the UDP rule starts at 1025.
    t.check(&udp(CP4, 443), DROP, NoRuleMatch, None);
    t.check(&udp(CP6, 443), DROP, NoRuleMatch, None);
    t.check(&udp(CLIENT4, 443), DROP, NoRuleMatch, None);
    t.check(&udp(CP4, 5000), PASS, AllowRule, CP_UDP_HIGH);
    t.finish();
}

pub fn a4_failsafe<B: Bed>() {
    let mut t = B::new(fixture());
    t.check(&syn(CP4, 22), PASS, Failsafe, ADMIN);
    // 6443 is also inside control-plane-tcp-high: the failsafe decides first.
    t.check(&syn(CP4, 6443), PASS, Failsafe, ADMIN);
    t.check(&syn(BAD4, 22), DROP, NoSourceMatch, None);
    t.check(&syn(CLIENT4, 22), DROP, NoRuleMatch, None);
    // The failsafe is IPv4-only in the fixture.
    t.check(&syn(CP6, 22), DROP, NoRuleMatch, None);
    t.finish();

    // Every user rule removed: the fixture cut before its `rules:` list.
    let text = fixture_text();
    let cut = &text[..text.find("\nrules:\n").expect("fixture has a rules list") + 1];
    let policy = policy_of("failsafe-only.yaml", cut);
    assert!(policy
        .rules
        .iter()
        .all(|r| r.kind == filter_user::policy::RuleKind::Failsafe));
    let mut t = B::new(policy);
    t.check(&syn(CP4, 22), PASS, Failsafe, ADMIN);
    t.check(&syn(CP4, 6443), PASS, Failsafe, ADMIN);
    t.check(&syn(BAD4, 22), DROP, NoSourceMatch, None);
    t.check(&syn(CP4, 443), DROP, NoRuleMatch, None);
    t.check(&syn(CLIENT4, 443), DROP, NoSourceMatch, None);
    t.finish();
}

pub fn a5_boundaries<B: Bed>() {
    let mut t = B::new(fixture());
    // Source prefix boundaries.
    t.check(&syn("10.0.0.0", 443), PASS, AllowRule, CP_API);
    t.check(&syn("10.0.0.255", 443), PASS, AllowRule, CP_API);
    t.check(&syn("10.0.1.0", 443), DROP, NoSourceMatch, None);
    t.check(&syn("9.255.255.255", 443), DROP, NoSourceMatch, None);
    t.check(&syn("192.0.2.255", 443), PASS, AllowRule, CLIENTS_HTTPS);
    t.check(&syn("192.0.3.0", 443), DROP, NoSourceMatch, None);
    t.check(&syn("2001:db8:cf::", 443), PASS, AllowRule, CP_API);
    t.check(
        &syn("2001:db8:cf:0:ffff:ffff:ffff:ffff", 443),
        PASS,
        AllowRule,
        CP_API,
    );
    t.check(&syn("2001:db8:cf:1::", 443), DROP, NoSourceMatch, None);
    t.check(
        &syn("2001:db8:ce:ffff:ffff:ffff:ffff:ffff", 443),
        DROP,
        NoSourceMatch,
        None,
    );
    // Port boundaries, TCP and UDP, both families.
    for src in [CP4, CP6] {
        t.check(&syn(src, 1024), DROP, NoRuleMatch, None);
        t.check(&syn(src, 1025), PASS, AllowRule, CP_TCP_HIGH);
        t.check(&syn(src, 65535), PASS, AllowRule, CP_TCP_HIGH);
        t.check(&syn(src, 0), DROP, NoRuleMatch, None);
        t.check(&syn(src, 442), DROP, NoRuleMatch, None);
        t.check(&syn(src, 444), DROP, NoRuleMatch, None);
        t.check(&udp(src, 1024), DROP, NoRuleMatch, None);
        t.check(&udp(src, 1025), PASS, AllowRule, CP_UDP_HIGH);
        t.check(&udp(src, 65535), PASS, AllowRule, CP_UDP_HIGH);
        t.check(&udp(src, 0), DROP, NoRuleMatch, None);
    }
    t.check(&syn(CLIENT4, 442), DROP, NoRuleMatch, None);
    t.check(&syn(CLIENT4, 444), DROP, NoRuleMatch, None);
    t.finish();
}

pub fn a6_overlapping_allow_rules_are_a_union<B: Bed>() {
    // `10.0.0.0/16 tcp 8443` appended after the fixture's rules.
    let mut t = B::new(variant("", OVERLAP_RULE));
    // 10.0.0.5 is in both the /24 and the /16: the rules of both apply. 8443 is also inside
    // control-plane-tcp-high, which comes first in file order.
    t.check(&syn(CP4, 8443), PASS, AllowRule, CP_TCP_HIGH);
    t.check(&syn(CP4, 10250), PASS, AllowRule, CP_API);
    t.check(&syn("10.0.7.1", 8443), PASS, AllowRule, Some("cp16-8443"));
    t.check(&syn("10.0.7.1", 10250), DROP, NoRuleMatch, None);
    t.check(
        &syn("10.0.255.255", 8443),
        PASS,
        AllowRule,
        Some("cp16-8443"),
    );
    t.check(&syn("10.1.0.0", 8443), DROP, NoSourceMatch, None);
    t.check(&udp("10.0.7.1", 8443), DROP, NoRuleMatch, None);
    // The failsafe's /24 still only covers the /24.
    t.check(&syn("10.0.7.1", 22), DROP, NoRuleMatch, None);
    t.finish();

    // The /16 rule first in file order: 10.0.0.5 → 8443 is decided by the /16 rule, which a
    // longest-prefix lookup (landing on the /24) only finds if the compiler merged it in.
    let text = replace_once(
        &fixture_text(),
        "\nrules:\n",
        &format!("\nrules:\n{OVERLAP_RULE}\n"),
    );
    let mut t = B::new(policy_of("overlap-first.yaml", &text));
    t.check(&syn(CP4, 8443), PASS, AllowRule, Some("cp16-8443"));
    t.check(&syn(CP4, 10250), PASS, AllowRule, CP_API);
    t.check(&syn(CP4, 8444), PASS, AllowRule, CP_TCP_HIGH);
    t.check(&syn("10.0.7.1", 8443), PASS, AllowRule, Some("cp16-8443"));
    t.check(&syn("10.0.7.1", 10250), DROP, NoRuleMatch, None);
    t.finish();
}

pub fn a7_deny_beats_allow_and_failsafe_beats_deny<B: Bed>() {
    let mut t = B::new(variant("", DENY_RULE));
    let deny = Some("deny-upper");
    // Lower half: the allow rules.
    t.check(&syn(CP4, 443), PASS, AllowRule, CP_API);
    t.check(&syn("10.0.0.127", 10250), PASS, AllowRule, CP_API);
    // Upper half: the deny rule beats every allow rule, for every protocol.
    t.check(&syn("10.0.0.128", 443), DROP, DenyRule, deny);
    t.check(&syn("10.0.0.200", 10250), DROP, DenyRule, deny);
    t.check(&syn("10.0.0.255", 5000), DROP, DenyRule, deny);
    t.check(&udp("10.0.0.200", 5000), DROP, DenyRule, deny);
    t.check(
        &Frame::icmp(ip("10.0.0.200"), ip(NODE4), 8, 0),
        DROP,
        DenyRule,
        deny,
    );
    // The failsafe beats the deny.
    t.check(&syn("10.0.0.200", 22), PASS, Failsafe, ADMIN);
    t.check(&syn("10.0.0.200", 6443), PASS, Failsafe, ADMIN);
    // Essentials come before every rule.
    t.check(
        &Frame::icmp(ip("10.0.0.200"), ip(NODE4), 3, 4),
        PASS,
        EssentialPmtu,
        None,
    );
    // Return traffic comes after the rules: a denied reply stays denied.
    t.check(
        &Frame::tcp(ip("10.0.0.200"), ip(NODE4), 443, 40000).ack(),
        DROP,
        DenyRule,
        deny,
    );
    // IPv6 control plane is untouched.
    t.check(&syn(CP6, 443), PASS, AllowRule, CP_API);
    t.finish();
}

/// The drops of A1–A7 (with the overlap and deny rules added), and a few malformed ones.
fn a_drop_cases() -> Vec<(Frame, Reason, Option<&'static str>)> {
    vec![
        (syn(CLIENT4, 10250), NoRuleMatch, None),
        (syn(CLIENT6, 10250), NoRuleMatch, None),
        (syn(BAD4, 443), NoSourceMatch, None),
        (syn(BAD6, 443), NoSourceMatch, None),
        (syn(CP4, 80), NoRuleMatch, None),
        (udp(CP4, 443), NoRuleMatch, None),
        (syn(BAD4, 22), NoSourceMatch, None),
        (syn("10.1.0.0", 443), NoSourceMatch, None),
        (syn(CP4, 1024), NoRuleMatch, None),
        (syn(CP4, 0), NoRuleMatch, None),
        (syn("10.0.7.1", 10250), NoRuleMatch, None),
        (syn("10.0.0.200", 443), DenyRule, Some("deny-upper")),
        (udp("10.0.0.200", 5000), DenyRule, Some("deny-upper")),
        (syn(CLIENT4, 443).ihl(4), Ipv4Header, None),
        (Frame::ethertype(0x88cc, &[0; 46]), UnknownEthertype, None),
        (
            syn(BAD4, 443).ipv4_fragment(100, false, 0x0a08),
            FragmentUntracked,
            None,
        ),
        (syn(CLIENT4, 443).truncate(30), Ipv4Truncated, None),
    ]
}

pub fn a8_monitor_mode<B: Bed>() {
    let rules = format!("{OVERLAP_RULE}\n{DENY_RULE}");
    let mut enforce = B::new(variant("", &rules));
    let mut monitor = B::new(monitor_variant(&rules));
    for (frame, reason, rule) in a_drop_cases() {
        enforce.check(&frame, DROP, reason, rule);
        // Passes, counted in the would-drop slot of the same reason (and rule).
        monitor.check(&frame, PASS, reason, rule);
    }
    // Passing packets are counted as usual.
    monitor.check(&syn(CLIENT4, 443), PASS, AllowRule, CLIENTS_HTTPS);
    monitor.check(&syn("10.0.0.200", 22), PASS, Failsafe, ADMIN);
    monitor.check(&Frame::arp(), PASS, EssentialArp, None);
    monitor.check(
        &Frame::tcp(ip(BAD4), ip(NODE4), 443, 40000).ack(),
        PASS,
        ReturnTraffic,
        None,
    );
    // A first fragment that would drop is not recorded: its followers are untracked; one
    // that passes is recorded.
    monitor.check(
        &syn(CLIENT4, 80).ipv4_fragment(0, true, 0x0a81),
        PASS,
        NoRuleMatch,
        None,
    );
    monitor.check(
        &Frame::ip_proto(ip(CLIENT4), ip(NODE4), 6, &[0; 16]).ipv4_fragment(5, false, 0x0a81),
        PASS,
        FragmentUntracked,
        None,
    );
    monitor.check(
        &syn(CLIENT4, 443).ipv4_fragment(0, true, 0x0a82),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    monitor.check(
        &Frame::ip_proto(ip(CLIENT4), ip(NODE4), 6, &[0; 16]).ipv4_fragment(5, false, 0x0a82),
        PASS,
        FragmentTracked,
        None,
    );
    enforce.finish();
    monitor.finish();
}

// ------------------------------------------------------------------ B. IPv4 headers

pub fn b9_ipv4_header_checks<B: Bed>() {
    let mut t = B::new(fixture());
    t.check(&syn(CLIENT4, 443).ihl(5), PASS, AllowRule, CLIENTS_HTTPS);
    for ihl in 0..5 {
        t.check(&syn(CLIENT4, 443).ihl(ihl), DROP, Ipv4Header, None);
    }
    // IHL 15 claims 60 bytes; the frame has 40 after the Ethernet header.
    t.check(&syn(CLIENT4, 443).ihl(15), DROP, Ipv4Truncated, None);
    t.check(&syn(CLIENT4, 443).ihl(11), DROP, Ipv4Truncated, None);
    // IHL 6 fits: the header checks pass, then the options policy (drop) applies.
    t.check(&syn(CLIENT4, 443).ihl(6), DROP, Ipv4Options, None);
    // tot_len below IHL*4, or beyond the frame.
    t.check(&syn(CLIENT4, 443).tot_len(19), DROP, Ipv4Header, None);
    t.check(&syn(CLIENT4, 443).tot_len(0), DROP, Ipv4Header, None);
    t.check(&syn(CLIENT4, 443).tot_len(41), DROP, Ipv4Truncated, None);
    t.check(&syn(CLIENT4, 443).tot_len(65535), DROP, Ipv4Truncated, None);
    // tot_len = IHL*4: a valid header and no transport header.
    t.check(&syn(CLIENT4, 443).tot_len(20), DROP, L4Truncated, None);
    // §2a.3 (IHL beyond the frame) before §2a.4 (tot_len below IHL*4).
    t.check(
        &syn(CLIENT4, 443).ihl(15).tot_len(10),
        DROP,
        Ipv4Truncated,
        None,
    );
    for v in [0, 5, 6, 15] {
        t.check(&syn(CLIENT4, 443).version(v), DROP, Ipv4Header, None);
    }
    // An IPv6 packet under ethertype 0x0800.
    t.check(
        &syn(CLIENT6, 443).set_ethertype(0x0800),
        DROP,
        Ipv4Header,
        None,
    );
    // The reserved flag drops; DF is fine.
    t.check(&syn(CLIENT4, 443).reserved_flag(), DROP, Ipv4Header, None);
    t.check(
        &syn(CLIENT4, 443).dont_fragment(),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    // Under 20 bytes of IPv4 header, whatever the IHL says.
    t.check(
        &syn(CLIENT4, 443).truncate(14 + 19),
        DROP,
        Ipv4Truncated,
        None,
    );
    t.check(
        &syn(CLIENT4, 443).ihl(4).truncate(14 + 19),
        DROP,
        Ipv4Truncated,
        None,
    );
    t.finish();
}

pub fn b10_ipv4_options<B: Bed>() {
    let router_alert = [0x94, 0x04, 0, 0];
    // Default policy: options drop, and are counted as such, whoever sends them.
    let mut t = B::new(fixture());
    t.check(
        &syn(CLIENT4, 443).ipv4_options(&router_alert),
        DROP,
        Ipv4Options,
        None,
    );
    t.check(
        &syn(BAD4, 443).ipv4_options(&router_alert),
        DROP,
        Ipv4Options,
        None,
    );
    t.check(
        &syn(CP4, 22).ipv4_options(&[1; 40]),
        DROP,
        Ipv4Options,
        None,
    );
    // Options are judged before fragments.
    t.check(
        &syn(BAD4, 443)
            .ipv4_options(&router_alert)
            .ipv4_fragment(100, false, 1),
        DROP,
        Ipv4Options,
        None,
    );
    t.finish();

    let mut t = B::new(variant("ipv4_options: allow", ""));
    assert!(t.policy().ipv4_options_allow);
    // Ports are read after the options, for every IHL from 6 to 15.
    for words in 1..=10usize {
        t.check(
            &syn(CLIENT4, 443).ipv4_options(&vec![1; words * 4]),
            PASS,
            AllowRule,
            CLIENTS_HTTPS,
        );
        t.check(
            &syn(CLIENT4, 80).ipv4_options(&vec![1; words * 4]),
            DROP,
            NoRuleMatch,
            None,
        );
    }
    // Options whose bytes 2..4 read as port 443 if the TCP header were taken at a fixed
    // offset of 20.
    t.check(
        &syn(CLIENT4, 80).ipv4_options(&[1, 1, 0x01, 0xbb]),
        DROP,
        NoRuleMatch,
        None,
    );
    t.check(
        &udp(CP4, 5000).ipv4_options(&router_alert),
        PASS,
        AllowRule,
        CP_UDP_HIGH,
    );
    // IHL 6 with no real options: the TCP header starts 4 bytes late (16 bytes left).
    t.check(&syn(CLIENT4, 443).ihl(6), DROP, L4Truncated, None);
    t.finish();
}

pub fn b11_ethernet_padding<B: Bed>() {
    let mut t = B::new(fixture());
    let padded = udp(CP4, 5000).pad_to(60);
    assert_eq!(padded.build().len(), 60);
    t.check(&padded, PASS, AllowRule, CP_UDP_HIGH);
    t.check(
        &syn(CLIENT4, 443).pad_to(200),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(&udp(CP6, 5000).pad_to(1000), PASS, AllowRule, CP_UDP_HIGH);
    t.check(&Frame::arp().pad_to(60), PASS, EssentialArp, None);
    // Padding is never read: a UDP length that only fits with the padding is bad ...
    t.check(
        &udp(CP4, 5000).udp_len(20).pad_to(60),
        DROP,
        UdpHeader,
        None,
    );
    // ... and so is a TCP header only complete with the padding.
    t.check(
        &syn(CLIENT4, 443).l4_truncate(12).pad_to(80),
        DROP,
        L4Truncated,
        None,
    );
    t.check(
        &syn(CLIENT6, 443).l4_truncate(12).pad_to(100),
        DROP,
        L4Truncated,
        None,
    );
    t.finish();
}

// ------------------------------------------------------------------ C. Truncation, L4

pub fn c12_truncation<B: Bed>() {
    let mut t = B::new(fixture());
    // Inside the Ethernet header (model only: test runs need 14 bytes).
    for len in 0..14 {
        t.check(&syn(CLIENT4, 443).truncate(len), DROP, EthTruncated, None);
    }
    // Inside the IPv4 header.
    for len in 14..34 {
        t.check(&syn(CLIENT4, 443).truncate(len), DROP, Ipv4Truncated, None);
    }
    // Inside the TCP/UDP header while tot_len claims the whole packet.
    for len in 34..54 {
        t.check(&syn(CLIENT4, 443).truncate(len), DROP, Ipv4Truncated, None);
    }
    for len in 34..42 {
        t.check(&udp(CP4, 5000).truncate(len), DROP, Ipv4Truncated, None);
    }
    // Inside the IPv6 header, and inside TCP/UDP after it.
    for len in 14..54 {
        t.check(&syn(CLIENT6, 443).truncate(len), DROP, Ipv6Truncated, None);
    }
    for len in 54..74 {
        t.check(&syn(CLIENT6, 443).truncate(len), DROP, Ipv6Truncated, None);
    }
    for len in 54..62 {
        t.check(&udp(CP6, 5000).truncate(len), DROP, Ipv6Truncated, None);
    }
    t.check(
        &syn(CLIENT6, 443).payload_len(21),
        DROP,
        Ipv6Truncated,
        None,
    );
    // Consistent lengths, short transport header.
    for (frame, short) in [
        (syn(CLIENT4, 443), 19),
        (syn(CLIENT6, 443), 19),
        (udp(CP4, 5000), 7),
        (udp(CP6, 5000), 7),
        (Frame::icmp(ip(CP4), ip(NODE4), 8, 0), 7),
        (Frame::icmpv6(ip(CP6), ip(NODE6), 128, 0), 7),
    ] {
        for len in 0..=short {
            t.check(&frame.clone().l4_truncate(len), DROP, L4Truncated, None);
        }
    }
    // IPv6 payload length 0 with a TCP next header.
    t.check(&syn(CLIENT6, 443).payload_len(0), DROP, L4Truncated, None);
    // A VLAN tag, then a cut IPv4 / IPv6 header.
    t.check(
        &syn(CLIENT4, 443).vlan(7).truncate(18 + 19),
        DROP,
        Ipv4Truncated,
        None,
    );
    t.check(
        &syn(CLIENT6, 443).vlan(7).truncate(18 + 39),
        DROP,
        Ipv6Truncated,
        None,
    );
    t.finish();
}

pub fn c13_tcp_data_offset_and_udp_length<B: Bed>() {
    let mut t = B::new(fixture());
    for doff in 0..5 {
        t.check(
            &syn(CLIENT4, 443).tcp_data_offset(doff),
            DROP,
            TcpHeader,
            None,
        );
        t.check(
            &syn(CLIENT6, 443).tcp_data_offset(doff),
            DROP,
            TcpHeader,
            None,
        );
    }
    // Larger than the bytes present.
    t.check(&syn(CLIENT4, 443).tcp_data_offset(6), DROP, TcpHeader, None);
    t.check(
        &syn(CLIENT4, 443).tcp_data_offset(15),
        DROP,
        TcpHeader,
        None,
    );
    t.check(
        &syn(CLIENT6, 443).tcp_data_offset(15),
        DROP,
        TcpHeader,
        None,
    );
    t.check(
        &syn(CLIENT4, 443).tcp_data_offset(15).payload(&[1; 39]),
        DROP,
        TcpHeader,
        None,
    );
    // Covered by the bytes present: fine (options are not inspected).
    t.check(
        &syn(CLIENT4, 443).tcp_data_offset(6).payload(&[1, 1, 1, 1]),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(
        &syn(CLIENT4, 443).tcp_data_offset(15).payload(&[1; 40]),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(
        &syn(CLIENT6, 443).tcp_data_offset(15).payload(&[1; 40]),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    // UDP length below 8, or beyond the packet.
    for ulen in 0..8 {
        t.check(&udp(CP4, 5000).udp_len(ulen), DROP, UdpHeader, None);
        t.check(&udp(CP6, 5000).udp_len(ulen), DROP, UdpHeader, None);
    }
    t.check(&udp(CP4, 5000).udp_len(9), DROP, UdpHeader, None);
    t.check(
        &udp(CP6, 5000).payload(&[0; 4]).udp_len(13),
        DROP,
        UdpHeader,
        None,
    );
    t.check(&udp(CP4, 5000).udp_len(65535), DROP, UdpHeader, None);
    // Shorter than the IP payload is accepted.
    t.check(
        &udp(CP4, 5000).payload(&[0; 10]).udp_len(8),
        PASS,
        AllowRule,
        CP_UDP_HIGH,
    );
    t.check(
        &udp(CP6, 5000).payload(&[0; 10]).udp_len(12),
        PASS,
        AllowRule,
        CP_UDP_HIGH,
    );
    t.finish();
}

pub fn c14_protocols_without_rules<B: Bed>() {
    let protos = [132u8, 47, 50, 255];
    let mut t = B::new(fixture());
    for proto in protos {
        t.check(
            &Frame::ip_proto(ip(CP4), ip(NODE4), proto, &[0; 20]),
            DROP,
            NoRuleMatch,
            None,
        );
        t.check(
            &Frame::ip_proto(ip(CP6), ip(NODE6), proto, &[0; 20]),
            DROP,
            NoRuleMatch,
            None,
        );
        t.check(
            &Frame::ip_proto(ip(BAD4), ip(NODE4), proto, &[0; 20]),
            DROP,
            NoSourceMatch,
            None,
        );
    }
    // ICMP in the wrong family is "other" too, even from an allowed source.
    t.check(
        &Frame::icmp(ip(CP6), ip(NODE6), 8, 0),
        DROP,
        NoRuleMatch,
        None,
    );
    t.finish();

    let mut t = B::new(variant("", ANY_RULE));
    let any = Some("cp-any");
    for proto in protos {
        t.check(
            &Frame::ip_proto(ip(CP4), ip(NODE4), proto, &[0; 20]),
            PASS,
            AllowRule,
            any,
        );
        t.check(
            &Frame::ip_proto(ip(CP6), ip(NODE6), proto, &[0; 20]),
            PASS,
            AllowRule,
            any,
        );
        // `any` is scoped to its source.
        t.check(
            &Frame::ip_proto(ip(CLIENT4), ip(NODE4), proto, &[0; 20]),
            DROP,
            NoRuleMatch,
            None,
        );
    }
    // `any` covers what the earlier rules leave out; they still decide first.
    t.check(&syn(CP4, 80), PASS, AllowRule, any);
    t.check(&udp(CP4, 53), PASS, AllowRule, any);
    t.check(&syn(CP4, 443), PASS, AllowRule, CP_API);
    t.finish();
}

// ------------------------------------------------------------------ D. Fragments

pub fn d15_ipv4_first_fragment_is_evaluated<B: Bed>() {
    let mut t = B::new(fixture());
    t.check(
        &syn(CLIENT4, 443)
            .payload(&[0; 64])
            .ipv4_fragment(0, true, 0x0f01),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(
        &syn(BAD4, 443).ipv4_fragment(0, true, 0x0f02),
        DROP,
        NoSourceMatch,
        None,
    );
    t.check(
        &syn(CLIENT4, 80).ipv4_fragment(0, true, 0x0f03),
        DROP,
        NoRuleMatch,
        None,
    );
    // A first UDP fragment carries part of the datagram: its length may exceed it ...
    let udp_first = udp(CP4, 5000)
        .payload(&[0; 16])
        .udp_len(1000)
        .ipv4_fragment(0, true, 0x0f04);
    t.check(&udp_first, PASS, AllowRule, CP_UDP_HIGH);
    // ... but not be below 8.
    t.check(
        &udp_first.clone().udp_len(7).ipv4_fragment(0, true, 0x0f05),
        DROP,
        UdpHeader,
        None,
    );
    // Return traffic and failsafe decide first fragments like any packet.
    t.check(
        &Frame::tcp(ip(BAD4), ip(NODE4), 443, 40000)
            .ack()
            .ipv4_fragment(0, true, 0x0f06),
        PASS,
        ReturnTraffic,
        None,
    );
    t.check(
        &syn(CP4, 22).ipv4_fragment(0, true, 0x0f07),
        PASS,
        Failsafe,
        ADMIN,
    );
    t.finish();
}

pub fn d16_non_first_fragment_payload_is_never_read<B: Bed>() {
    let mut t = B::new(fixture());
    // The bytes after the header are a TCP header to port 443: irrelevant.
    t.check(
        &syn(BAD4, 443).ipv4_fragment(185, false, 0x1001),
        DROP,
        FragmentUntracked,
        None,
    );
    t.check(
        &udp(BAD4, 40000).ipv4_fragment(185, true, 0x1002),
        DROP,
        FragmentUntracked,
        None,
    );
    // Even from an allowed source: without its first fragment it drops.
    t.check(
        &syn(CLIENT4, 443).ipv4_fragment(185, true, 0x1003),
        DROP,
        FragmentUntracked,
        None,
    );
    // Nothing at all after the header is needed.
    t.check(
        &Frame::ip_proto(ip(CLIENT4), ip(NODE4), 6, &[]).ipv4_fragment(3, false, 0x1004),
        DROP,
        FragmentUntracked,
        None,
    );
    t.finish();
}

pub fn d17_fragment_tracking_ipv4<B: Bed>() {
    let rest = |id: u16, offset: u16, more: bool| {
        Frame::ip_proto(ip(CLIENT4), ip(NODE4), 6, &[0; 40]).ipv4_fragment(offset, more, id)
    };
    let first = |id: u16| {
        syn(CLIENT4, 443)
            .payload(&[0; 64])
            .ipv4_fragment(0, true, id)
    };

    let mut t = B::new(fixture());
    // First fragment passes, its followers pass as fragment-tracked.
    t.check(&first(0x1101), PASS, AllowRule, CLIENTS_HTTPS);
    t.check(&rest(0x1101, 6, true), PASS, FragmentTracked, None);
    t.check(&rest(0x1101, 11, false), PASS, FragmentTracked, None);
    // The first fragment never seen: untracked; seen only after: the follower stays dropped.
    t.check(&rest(0x1102, 11, false), DROP, FragmentUntracked, None);
    t.check(&first(0x1102), PASS, AllowRule, CLIENTS_HTTPS);
    // Every key field matters: id, protocol, source, destination.
    t.check(&first(0x1103), PASS, AllowRule, CLIENTS_HTTPS);
    t.check(&rest(0x1104, 11, false), DROP, FragmentUntracked, None);
    t.check(
        &rest(0x1103, 11, false).protocol(17),
        DROP,
        FragmentUntracked,
        None,
    );
    t.check(
        &Frame::ip_proto(ip("192.0.2.10"), ip(NODE4), 6, &[0; 40]).ipv4_fragment(11, false, 0x1103),
        DROP,
        FragmentUntracked,
        None,
    );
    t.check(
        &Frame::ip_proto(ip(CLIENT4), ip("10.1.1.2"), 6, &[0; 40]).ipv4_fragment(11, false, 0x1103),
        DROP,
        FragmentUntracked,
        None,
    );
    t.check(&rest(0x1103, 11, false), PASS, FragmentTracked, None);
    // A dropped first fragment is not recorded.
    t.check(
        &syn(CLIENT4, 80).ipv4_fragment(0, true, 0x1105),
        DROP,
        NoRuleMatch,
        None,
    );
    t.check(&rest(0x1105, 11, false), DROP, FragmentUntracked, None);
    // Any passing reason records, here return traffic.
    t.check(
        &Frame::tcp(ip(BAD4), ip(NODE4), 443, 40000)
            .ack()
            .ipv4_fragment(0, true, 0x1106),
        PASS,
        ReturnTraffic,
        None,
    );
    t.check(
        &Frame::ip_proto(ip(BAD4), ip(NODE4), 6, &[0; 8]).ipv4_fragment(3, false, 0x1106),
        PASS,
        FragmentTracked,
        None,
    );
    // UDP and ICMP datagrams too.
    t.check(
        &udp(CP4, 5000)
            .payload(&[0; 32])
            .ipv4_fragment(0, true, 0x1107),
        PASS,
        AllowRule,
        CP_UDP_HIGH,
    );
    t.check(
        &Frame::ip_proto(ip(CP4), ip(NODE4), 17, &[0; 8]).ipv4_fragment(5, false, 0x1107),
        PASS,
        FragmentTracked,
        None,
    );
    t.finish();

    // Tracking off (`fragments: drop`): the first fragment passes, the rest is untracked.
    let mut t = B::new(variant("fragments: drop", ""));
    t.check(&first(0x1201), PASS, AllowRule, CLIENTS_HTTPS);
    t.check(&rest(0x1201, 11, false), DROP, FragmentUntracked, None);
    t.finish();
}

pub fn d18_tiny_fragments<B: Bed>() {
    let mut t = B::new(fixture());
    // First fragments too small for their transport header.
    t.check(
        &Frame::ip_proto(ip(CLIENT4), ip(NODE4), 6, &[0; 10]).ipv4_fragment(0, true, 0x1301),
        DROP,
        FragmentTiny,
        None,
    );
    t.check(
        &syn(CLIENT4, 443)
            .l4_truncate(19)
            .ipv4_fragment(0, true, 0x1302),
        DROP,
        FragmentTiny,
        None,
    );
    t.check(
        &udp(CP4, 5000).l4_truncate(7).ipv4_fragment(0, true, 0x1303),
        DROP,
        FragmentTiny,
        None,
    );
    t.check(
        &Frame::icmp(ip(CP4), ip(NODE4), 8, 0)
            .l4_truncate(4)
            .ipv4_fragment(0, true, 0x1304),
        DROP,
        FragmentTiny,
        None,
    );
    // A TCP data offset beyond a first fragment's bytes: tiny, not tcp-header ...
    t.check(
        &syn(CLIENT4, 443)
            .tcp_data_offset(8)
            .ipv4_fragment(0, true, 0x1305),
        DROP,
        FragmentTiny,
        None,
    );
    // ... but a data offset below 5 is still a bad header.
    t.check(
        &syn(CLIENT4, 443)
            .tcp_data_offset(4)
            .ipv4_fragment(0, true, 0x1306),
        DROP,
        TcpHeader,
        None,
    );
    // Non-first fragments overlapping the first fragment's transport header (RFC 1858).
    let at = |proto: u8, offset: u16| {
        Frame::ip_proto(ip(CLIENT4), ip(NODE4), proto, &[0; 8]).ipv4_fragment(offset, false, 0x1307)
    };
    t.check(&at(6, 1), DROP, FragmentTiny, None);
    t.check(&at(6, 2), DROP, FragmentTiny, None);
    t.check(&at(6, 3), DROP, FragmentUntracked, None);
    t.check(&at(17, 1), DROP, FragmentUntracked, None);
    t.check(&at(1, 1), DROP, FragmentUntracked, None);
    t.check(&at(58, 1), DROP, FragmentUntracked, None);
    t.check(&at(132, 1), DROP, FragmentUntracked, None);
    // Tiny even when its first fragment was tracked.
    t.check(
        &syn(CLIENT4, 443).ipv4_fragment(0, true, 0x1307),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(&at(6, 2), DROP, FragmentTiny, None);
    t.check(&at(6, 3), PASS, FragmentTracked, None);
    t.finish();
}

pub fn d19_ipv6_fragments<B: Bed>() {
    let mut t = B::new(fixture());
    let rest = |id: u32, offset: u16| {
        Frame::ip_proto(ip(CLIENT6), ip(NODE6), 6, &[0; 40]).ipv6_fragment(offset, false, id)
    };
    // First fragment evaluated like an unfragmented packet; its followers tracked.
    t.check(
        &syn(CLIENT6, 443)
            .payload(&[0; 64])
            .ipv6_fragment(0, true, 0x1234_5678),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(&rest(0x1234_5678, 11), PASS, FragmentTracked, None);
    // 32-bit identification: a neighbour id is another datagram.
    t.check(&rest(0x1234_5679, 11), DROP, FragmentUntracked, None);
    t.check(&rest(0x0234_5678, 11), DROP, FragmentUntracked, None);
    // Disallowed source, payload looking like port 443.
    t.check(
        &syn(BAD6, 443).ipv6_fragment(100, false, 1),
        DROP,
        FragmentUntracked,
        None,
    );
    t.check(
        &syn(BAD6, 443).ipv6_fragment(0, true, 2),
        DROP,
        NoSourceMatch,
        None,
    );
    // Non-first fragments overlapping the transport header.
    let at = |proto: u8, offset: u16| {
        Frame::ip_proto(ip(CLIENT6), ip(NODE6), proto, &[0; 8]).ipv6_fragment(offset, false, 0x99)
    };
    t.check(&at(6, 1), DROP, FragmentTiny, None);
    t.check(&at(6, 2), DROP, FragmentTiny, None);
    t.check(&at(6, 3), DROP, FragmentUntracked, None);
    t.check(&at(17, 1), DROP, FragmentUntracked, None);
    t.check(&at(58, 1), DROP, FragmentUntracked, None);
    // The ICMP minimum is IPv4-only: next header 1 in IPv6 has none.
    t.check(&at(1, 1), DROP, FragmentUntracked, None);
    // First fragments too small for the transport header.
    t.check(
        &syn(CLIENT6, 443)
            .l4_truncate(10)
            .ipv6_fragment(0, true, 0x9a),
        DROP,
        FragmentTiny,
        None,
    );
    t.check(
        &udp(CP6, 5000).l4_truncate(7).ipv6_fragment(0, true, 0x9b),
        DROP,
        FragmentTiny,
        None,
    );
    t.check(
        &Frame::icmpv6(ip(CP6), ip(NODE6), 128, 0)
            .l4_truncate(7)
            .ipv6_fragment(0, true, 0x9c),
        DROP,
        FragmentTiny,
        None,
    );
    // RFC 7112: a first fragment must carry the whole header chain.
    let cut_chain = Frame::ip_proto(ip(CLIENT6), ip(NODE6), 6, &[])
        .ipv6_fragment(0, true, 0x9d)
        .ipv6_ext(ExtHeader::Raw {
            code: 60,
            bytes: vec![6, 2, 1, 0, 0, 0, 0, 0],
        });
    t.check(&cut_chain, DROP, FragmentTiny, None);
    let no_len_byte = Frame::ip_proto(ip(CLIENT6), ip(NODE6), 6, &[])
        .ipv6_fragment(0, true, 0x9e)
        .ipv6_ext(ExtHeader::Raw {
            code: 60,
            bytes: vec![6],
        });
    t.check(&no_len_byte, DROP, FragmentTiny, None);
    // The same cut chain without a Fragment header is a bad chain.
    t.check(
        &Frame::ip_proto(ip(CLIENT6), ip(NODE6), 6, &[]).ipv6_ext(ExtHeader::Raw {
            code: 60,
            bytes: vec![6, 2, 1, 0, 0, 0, 0, 0],
        }),
        DROP,
        Ipv6ExtHeader,
        None,
    );
    // A non-first fragment is judged at its Fragment header, before the rest of the chain.
    t.check(
        &Frame::ip_proto(ip(CLIENT6), ip(NODE6), 6, &[])
            .ipv6_fragment(100, false, 0x9f)
            .ipv6_ext(ExtHeader::Raw {
                code: 60,
                bytes: vec![6, 200],
            }),
        DROP,
        FragmentUntracked,
        None,
    );
    // A Fragment header cut short is a bad chain.
    t.check(
        &Frame::ip_proto(ip(CLIENT6), ip(NODE6), 6, &[]).ipv6_ext(ExtHeader::Raw {
            code: 44,
            bytes: vec![6, 0, 0, 1, 0, 0, 0],
        }),
        DROP,
        Ipv6ExtHeader,
        None,
    );
    // Atomic fragment (offset 0, M 0): unfragmented, and never recorded.
    t.check(
        &syn(CLIENT6, 443).ipv6_fragment(0, false, 0xa0),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(&rest(0xa0, 11), DROP, FragmentUntracked, None);
    // The tracking key is the Fragment header's Next Header, even with headers after it.
    t.check(
        &syn(CLIENT6, 443)
            .ipv6_fragment(0, true, 0xa1)
            .ipv6_ext(ExtHeader::ah()),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(
        &Frame::ip_proto(ip(CLIENT6), ip(NODE6), 51, &[0; 16]).ipv6_fragment(20, false, 0xa1),
        PASS,
        FragmentTracked,
        None,
    );
    // Fragment after other extension headers.
    t.check(
        &syn(CLIENT6, 443)
            .ipv6_ext(ExtHeader::hop_by_hop())
            .ipv6_fragment(0, true, 0xa2),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(
        &Frame::ip_proto(ip(CLIENT6), ip(NODE6), 6, &[0; 16])
            .ipv6_ext(ExtHeader::hop_by_hop())
            .ipv6_fragment(20, false, 0xa2),
        PASS,
        FragmentTracked,
        None,
    );
    t.finish();

    let mut t = B::new(variant("fragments: drop", ""));
    t.check(
        &syn(CLIENT6, 443).ipv6_fragment(0, true, 0xb1),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(&rest(0xb1, 11), DROP, FragmentUntracked, None);
    t.finish();
}

// ------------------------------------------------------------------ E. IPv6

pub fn e20_ipv6_rules<B: Bed>() {
    let mut t = B::new(fixture());
    t.check(&syn(CP6, 10250), PASS, AllowRule, CP_API);
    t.check(&syn(BAD6, 10250), DROP, NoSourceMatch, None);
    t.check(&syn(CLIENT6, 443), PASS, AllowRule, CLIENTS_HTTPS);
    t.check(&syn(CLIENT6, 10250), DROP, NoRuleMatch, None);
    t.check(&udp(CP6, 5000), PASS, AllowRule, CP_UDP_HIGH);
    // IPv4-mapped sources are IPv6 addresses: never the IPv4 prefixes.
    t.check(&syn("::ffff:10.0.0.5", 22), DROP, NoSourceMatch, None);
    t.check(&syn("::ffff:192.0.2.9", 443), DROP, NoSourceMatch, None);
    t.finish();
}

pub fn e21_extension_headers<B: Bed>() {
    let mut t = B::new(fixture());
    let base = || syn(CLIENT6, 443);
    // Each header type, with its length formula: HBH/DestOpts/Routing (len + 1) * 8,
    // AH (len + 2) * 4, Fragment 8. A wrong formula reads the ports at the wrong place.
    for h in [
        ExtHeader::hop_by_hop(),
        ExtHeader::HopByHop { len: 3 },
        ExtHeader::dest_opts(),
        ExtHeader::DestOpts { len: 5 },
        ExtHeader::routing(),
        ExtHeader::Routing {
            len: 4,
            routing_type: 4,
            segments_left: 0,
        },
        ExtHeader::fragment(0, false, 3),
        ExtHeader::ah(),
        ExtHeader::Ah { len: 1 },
        ExtHeader::Ah { len: 5 },
    ] {
        t.check(&base().ipv6_ext(h.clone()), PASS, AllowRule, CLIENTS_HTTPS);
        t.check(&syn(CLIENT6, 80).ipv6_ext(h), DROP, NoRuleMatch, None);
    }
    // The full RFC 8200 order: HBH, DestOpts, Routing, Fragment, AH, DestOpts.
    let full = base()
        .ipv6_ext(ExtHeader::hop_by_hop())
        .ipv6_ext(ExtHeader::dest_opts())
        .ipv6_ext(ExtHeader::routing())
        .ipv6_ext(ExtHeader::fragment(0, false, 3))
        .ipv6_ext(ExtHeader::ah())
        .ipv6_ext(ExtHeader::DestOpts { len: 2 });
    t.check(&full, PASS, AllowRule, CLIENTS_HTTPS);
    t.check(
        &base()
            .ipv6_ext(ExtHeader::Ah { len: 1 })
            .ipv6_ext(ExtHeader::dest_opts()),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    // A Routing header with Segments Left ≠ 0 sends the packet on (RFC 8200 §4.4): never
    // passed on a rule meant for this node, whatever its type (0: RFC 5095, 2: Mobile IPv6,
    // 4: SRv6, 253: experimental). Segments Left 0: the node is the final destination.
    for routing_type in [0, 2, 4, 253] {
        let routed = |segments_left| {
            base().ipv6_ext(ExtHeader::Routing {
                len: 2,
                routing_type,
                segments_left,
            })
        };
        t.check(&routed(1), DROP, Ipv6ExtHeader, None);
        t.check(&routed(255), DROP, Ipv6ExtHeader, None);
        t.check(&routed(0), PASS, AllowRule, CLIENTS_HTTPS);
    }
    // Destination Options twice: before Routing and before the upper layer.
    let d = ExtHeader::dest_opts;
    t.check(
        &base()
            .ipv6_ext(d())
            .ipv6_ext(ExtHeader::routing())
            .ipv6_ext(d()),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(
        &base().ipv6_ext(d()).ipv6_ext(d()),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(
        &base().ipv6_ext(ExtHeader::routing()).ipv6_ext(d()),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    // Order violations (RFC 8200 §4.1).
    let violations = [
        vec![d(), ExtHeader::hop_by_hop()],
        vec![ExtHeader::hop_by_hop(), ExtHeader::hop_by_hop()],
        vec![ExtHeader::routing(), ExtHeader::routing()],
        vec![
            ExtHeader::fragment(0, false, 1),
            ExtHeader::fragment(0, false, 1),
        ],
        vec![ExtHeader::ah(), ExtHeader::ah()],
        vec![ExtHeader::ah(), ExtHeader::routing()],
        vec![ExtHeader::fragment(0, false, 1), ExtHeader::routing()],
        vec![ExtHeader::routing(), ExtHeader::hop_by_hop()],
        vec![d(), d(), d()],
        vec![ExtHeader::routing(), d(), d()],
        vec![ExtHeader::ah(), d(), ExtHeader::fragment(0, false, 1)],
    ];
    for chain in violations {
        let frame = chain.into_iter().fold(base(), Frame::ipv6_ext);
        t.check(&frame, DROP, Ipv6ExtHeader, None);
    }
    // Depth: IPV6_EXT_MAX (8) headers at most. A chain in valid order has at most six, so a
    // longer one always breaks the order rule too; both are ipv6-exthdr.
    let deep = (0..9).fold(base(), |f, _| f.ipv6_ext(d()));
    t.check(&deep, DROP, Ipv6ExtHeader, None);
    let deep_hbh = (0..12).fold(base().ipv6_ext(ExtHeader::hop_by_hop()), |f, _| {
        f.ipv6_ext(ExtHeader::routing())
    });
    t.check(&deep_hbh, DROP, Ipv6ExtHeader, None);
    // Lengths that point past the packet.
    for (code, bytes) in [
        (0u8, vec![6, 1, 1, 0, 0, 0, 0, 0]),
        (60, vec![6, 1, 1, 0, 0, 0, 0, 0]),
        (43, vec![6, 0, 0, 0, 0, 0, 0]),
        (51, vec![6, 1, 0, 0, 0, 0, 0, 0]),
        (43, vec![6]),
        (44, vec![6, 0, 0, 0]),
    ] {
        t.check(
            &base()
                .l4_truncate(0)
                .ipv6_ext(ExtHeader::Raw { code, bytes }),
            DROP,
            Ipv6ExtHeader,
            None,
        );
    }
    t.check(
        &Frame::ip_proto(ip(CLIENT6), ip(NODE6), 0, &[]),
        DROP,
        Ipv6ExtHeader,
        None,
    );
    // A jumbogram (payload length 0, the real length in Hop-by-Hop) runs past l3_end.
    t.check(
        &base().ipv6_ext(ExtHeader::hop_by_hop()).payload_len(0),
        DROP,
        Ipv6ExtHeader,
        None,
    );
    // The payload length bounds the walk, not the frame.
    t.check(
        &base()
            .l4_truncate(0)
            .ipv6_ext(ExtHeader::hop_by_hop())
            .payload_len(4),
        DROP,
        Ipv6ExtHeader,
        None,
    );
    // ESP is not walked: it is the transport (kind other).
    t.check(
        &Frame::ip_proto(ip(CLIENT6), ip(NODE6), 50, &[0; 16]),
        DROP,
        NoRuleMatch,
        None,
    );
    t.finish();
}

pub fn e22_no_next_header<B: Bed>() {
    let none = Frame::ip_proto(ip(CP6), ip(NODE6), 59, &[]);
    let mut t = B::new(fixture());
    t.check(&none, DROP, NoRuleMatch, None);
    t.check(
        &none.clone().ipv6_ext(ExtHeader::dest_opts()),
        DROP,
        NoRuleMatch,
        None,
    );
    // Bytes after a next header 59 are never read.
    t.check(
        &Frame::ip_proto(ip(CP6), ip(NODE6), 59, &[0xff; 7]),
        DROP,
        NoRuleMatch,
        None,
    );
    t.check(
        &Frame::ip_proto(ip(BAD6), ip(NODE6), 59, &[]),
        DROP,
        NoSourceMatch,
        None,
    );
    t.finish();

    let mut t = B::new(variant("", ANY_RULE));
    t.check(&none, PASS, AllowRule, Some("cp-any"));
    t.check(
        &none.clone().ipv6_ext(ExtHeader::hop_by_hop()),
        PASS,
        AllowRule,
        Some("cp-any"),
    );
    t.check(
        &Frame::ip_proto(ip(CLIENT6), ip(NODE6), 59, &[]),
        DROP,
        NoRuleMatch,
        None,
    );
    t.finish();
}

// ------------------------------------------------------------------ F. VLAN

pub fn f23_vlan<B: Bed>() {
    let mut t = B::new(fixture());
    t.check(&syn(CLIENT4, 443).vlan(100), PASS, AllowRule, CLIENTS_HTTPS);
    t.check(&syn(CLIENT6, 443).vlan(100), PASS, AllowRule, CLIENTS_HTTPS);
    t.check(&syn(BAD4, 443).vlan(100), DROP, NoSourceMatch, None);
    t.check(&syn(BAD4, 443).qinq(10, 20), DROP, NoSourceMatch, None);
    t.check(&syn(BAD6, 443).qinq(10, 20), DROP, NoSourceMatch, None);
    t.check(
        &syn(CLIENT4, 443).qinq(10, 20),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(
        &syn(CLIENT6, 443).qinq(10, 20),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(
        &syn(CLIENT4, 443).vlan_tag(0x9100, 5),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(
        &syn(CLIENT4, 443).vlan_tag(0x9100, 5).vlan_tag(0x88a8, 6),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    // Ports are read after the tags.
    t.check(&syn(CLIENT4, 80).qinq(10, 20), DROP, NoRuleMatch, None);
    // Deeper than VLAN_MAX_DEPTH (2) drops, whatever the TPIDs and the payload.
    t.check(
        &syn(CLIENT4, 443).qinq(10, 20).vlan(30),
        DROP,
        VlanDepth,
        None,
    );
    t.check(
        &syn(CLIENT4, 443).vlan(1).vlan(2).vlan_tag(0x9100, 3),
        DROP,
        VlanDepth,
        None,
    );
    t.check(&Frame::arp().vlan(1).vlan(2).vlan(3), DROP, VlanDepth, None);
    // A frame ending inside a tag.
    for len in 14..18 {
        t.check(
            &syn(CLIENT4, 443).vlan(1).truncate(len),
            DROP,
            VlanDepth,
            None,
        );
    }
    t.check(
        &syn(CLIENT4, 443).vlan(1).vlan(2).truncate(21),
        DROP,
        VlanDepth,
        None,
    );
    // The third TPID is checked before the frame's end: depth wins.
    t.check(
        &syn(CLIENT4, 443).vlan(1).vlan(2).vlan(3).truncate(22),
        DROP,
        VlanDepth,
        None,
    );
    t.check(
        &syn(CLIENT4, 443).vlan(1).truncate(18),
        DROP,
        Ipv4Truncated,
        None,
    );
    // Tags carry ARP and other ethertypes too.
    t.check(&Frame::arp().qinq(1, 2), PASS, EssentialArp, None);
    t.check(
        &Frame::ethertype(0x88cc, &[0; 40]).vlan(1),
        DROP,
        UnknownEthertype,
        None,
    );
    t.finish();
}

// ------------------------------------------------------------------ G. Non-IP and ICMP

pub fn g24_arp_and_ethertypes<B: Bed>() {
    let lldp = || Frame::ethertype(0x88cc, &[0; 46]);
    let mut t = B::new(fixture());
    t.check(&Frame::arp(), PASS, EssentialArp, None);
    t.check(&Frame::arp().pad_to(60), PASS, EssentialArp, None);
    // Even an ARP frame with no body: the ethertype decides.
    t.check(&Frame::ethertype(0x0806, &[]), PASS, EssentialArp, None);
    t.check(&lldp(), DROP, UnknownEthertype, None);
    // An 802.3 length field, and ethertype 0.
    t.check(
        &Frame::ethertype(0x05dc, &[0; 46]),
        DROP,
        UnknownEthertype,
        None,
    );
    t.check(&Frame::ethertype(0x0000, &[]), DROP, UnknownEthertype, None);
    t.check(
        &Frame::ethertype(0x8035, &[0; 28]),
        DROP,
        UnknownEthertype,
        None,
    ); // RARP
    t.finish();

    let mut t = B::new(variant("unknown_ethertypes: pass", ""));
    t.check(&lldp(), PASS, EthertypePass, None);
    t.check(
        &Frame::ethertype(0x05dc, &[0; 46]),
        PASS,
        EthertypePass,
        None,
    );
    t.check(&Frame::arp(), PASS, EssentialArp, None);
    // IP is still judged by the rules.
    t.check(&syn(BAD4, 443), DROP, NoSourceMatch, None);
    t.finish();

    let mut t = B::new(variant("essentials:\n  arp: false", ""));
    t.check(&Frame::arp(), DROP, UnknownEthertype, None);
    t.finish();

    let mut t = B::new(variant(
        "essentials:\n  arp: false\nunknown_ethertypes: pass",
        "",
    ));
    t.check(&Frame::arp(), PASS, EthertypePass, None);
    t.finish();
}

pub fn g25_icmp<B: Bed>() {
    let icmp = |src: &str, ty: u8, code: u8| Frame::icmp(ip(src), ip(NODE4), ty, code);
    let mut t = B::new(fixture());
    t.check(&icmp(BAD4, 8, 0), DROP, NoSourceMatch, None);
    t.check(&icmp(CP4, 8, 0), DROP, NoRuleMatch, None);
    // Fragmentation needed passes, from anyone; so do the other errors.
    t.check(&icmp(BAD4, 3, 4), PASS, EssentialPmtu, None);
    t.check(&icmp(CP4, 3, 4), PASS, EssentialPmtu, None);
    for (ty, code) in [(3, 0), (3, 1), (3, 3), (3, 13), (11, 0), (11, 1), (12, 0)] {
        t.check(&icmp(BAD4, ty, code), PASS, EssentialIcmpError, None);
    }
    // Not errors: echo reply, redirect, timestamp.
    for ty in [0, 5, 13] {
        t.check(&icmp(BAD4, ty, 0), DROP, NoSourceMatch, None);
    }
    // The inner header of an error is never read.
    t.check(
        &icmp(BAD4, 3, 4).payload(&[0xff; 28]),
        PASS,
        EssentialPmtu,
        None,
    );
    t.check(
        &icmp(BAD4, 3, 4).payload(&syn(BAD4, 22).build()[14..]),
        PASS,
        EssentialPmtu,
        None,
    );
    t.finish();

    // An icmp rule allows echo requests from the sample's /24.
    let mut t = B::new(variant("", PING_RULE));
    t.check(&icmp(BAD4, 8, 0), PASS, AllowRule, Some("ping"));
    t.check(&icmp(BAD4, 13, 0), DROP, NoRuleMatch, None);
    t.check(&icmp(BAD4, 3, 4), PASS, EssentialPmtu, None);
    // ICMP rules do not cover ICMPv6, nor ICMP carried over IPv6.
    t.check(
        &Frame::icmp(ip(BAD6), ip(NODE6), 8, 0),
        DROP,
        NoSourceMatch,
        None,
    );
    t.finish();

    // Errors off: judged by the rules.
    let mut t = B::new(variant("essentials:\n  icmp_errors: false", ""));
    t.check(&icmp(BAD4, 3, 4), DROP, NoSourceMatch, None);
    t.check(&icmp(BAD4, 11, 0), DROP, NoSourceMatch, None);
    t.check(&icmp(CP4, 3, 4), DROP, NoRuleMatch, None);
    t.finish();
}

pub fn g26_icmpv6_and_neighbor_discovery<B: Bed>() {
    let ns = |hop: u8| {
        Frame::neighbor_solicitation(
            "2001:db8:dead::1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        )
        .hop_limit(hop)
    };
    let mut t = B::new(fixture());
    t.check(&ns(255), PASS, EssentialNd, None);
    t.check(&ns(64), DROP, NdInvalid, None);
    t.check(&ns(254), DROP, NdInvalid, None);
    for ty in 133..=137 {
        let nd = Frame::icmpv6(ip("fe80::1"), ip("ff02::1"), ty, 0).hop_limit(255);
        t.check(&nd, PASS, EssentialNd, None);
        t.check(&nd.clone().hop_limit(64), DROP, NdInvalid, None);
        t.check(&nd.clone().hop_limit(1), DROP, NdInvalid, None);
        // Fragmented ND is never valid: atomic, or a first fragment.
        t.check(
            &nd.clone().ipv6_fragment(0, false, 1),
            DROP,
            NdInvalid,
            None,
        );
        t.check(
            &nd.clone().ipv6_fragment(0, true, 0x5000 + u32::from(ty)),
            DROP,
            NdInvalid,
            None,
        );
    }
    // Neighbours of the ND range are ordinary ICMPv6.
    for ty in [128, 132, 138] {
        t.check(
            &Frame::icmpv6(ip(BAD6), ip(NODE6), ty, 0).hop_limit(255),
            DROP,
            NoSourceMatch,
            None,
        );
    }
    // Packet Too Big and the other errors pass.
    t.check(
        &Frame::icmpv6(ip(BAD6), ip(NODE6), 2, 0),
        PASS,
        EssentialPmtu,
        None,
    );
    for ty in [1, 3, 4] {
        t.check(
            &Frame::icmpv6(ip(BAD6), ip(NODE6), ty, 0),
            PASS,
            EssentialIcmpError,
            None,
        );
    }
    // ICMPv6 types over IPv4 (protocol 58) are not essentials.
    t.check(
        &Frame::icmpv6(ip(BAD4), ip(NODE4), 2, 0),
        DROP,
        NoSourceMatch,
        None,
    );
    t.finish();

    let mut t = B::new(variant("essentials:\n  neighbor_discovery: false", ""));
    t.check(&ns(255), DROP, NoSourceMatch, None);
    t.check(&ns(64), DROP, NoSourceMatch, None);
    t.finish();
}

// ------------------------------------------------------------------ H. Return traffic

pub fn h27_return_traffic_ephemeral<B: Bed>() {
    use tcp_flags::*;
    let reply = |flags: u8, dport: u16| Frame::tcp(ip(BAD4), ip(NODE4), 443, dport).flags(flags);
    let dns = |dport: u16| Frame::udp(ip(BAD4), ip(NODE4), 53, dport);
    let mut t = B::new(fixture());
    assert_eq!(
        t.policy().return_traffic,
        ReturnTraffic::Ephemeral {
            ports: 32768..=60999
        }
    );
    // ACK to an ephemeral port passes; SYN to the same port drops.
    t.check(&reply(ACK, 40000), PASS, ReturnTraffic, None);
    t.check(&reply(SYN, 40000), DROP, NoSourceMatch, None);
    t.check(&reply(SYN | ACK, 40000), PASS, ReturnTraffic, None);
    t.check(&reply(SYN | FIN, 40000), DROP, NoSourceMatch, None);
    t.check(&reply(SYN | PSH | URG, 40000), DROP, NoSourceMatch, None);
    for flags in [0, FIN, RST, PSH | ACK, FIN | ACK, RST | ACK] {
        t.check(&reply(flags, 40000), PASS, ReturnTraffic, None);
    }
    // Range boundaries (32768-60999).
    t.check(&reply(ACK, 32768), PASS, ReturnTraffic, None);
    t.check(&reply(ACK, 60999), PASS, ReturnTraffic, None);
    t.check(&reply(ACK, 32767), DROP, NoSourceMatch, None);
    t.check(&reply(ACK, 61000), DROP, NoSourceMatch, None);
    // UDP replies, both families.
    t.check(&dns(40000), PASS, ReturnTraffic, None);
    t.check(&dns(32768), PASS, ReturnTraffic, None);
    t.check(&dns(1000), DROP, NoSourceMatch, None);
    t.check(&dns(61000), DROP, NoSourceMatch, None);
    t.check(
        &Frame::udp(ip(BAD6), ip(NODE6), 53, 40000),
        PASS,
        ReturnTraffic,
        None,
    );
    t.check(
        &Frame::tcp(ip(BAD6), ip(NODE6), 443, 40000).ack(),
        PASS,
        ReturnTraffic,
        None,
    );
    // A source with some rule: no-rule-match unless it is a reply.
    t.check(
        &Frame::tcp(ip(CLIENT4), ip(NODE4), 443, 40000).syn(),
        DROP,
        NoRuleMatch,
        None,
    );
    t.check(
        &Frame::tcp(ip(CLIENT4), ip(NODE4), 443, 40000).ack(),
        PASS,
        ReturnTraffic,
        None,
    );
    // Rules decide first.
    t.check(
        &Frame::tcp(ip(CP4), ip(NODE4), 443, 40000).ack(),
        PASS,
        AllowRule,
        CP_TCP_HIGH,
    );
    // Other protocols never count as return traffic.
    t.check(
        &Frame::ip_proto(ip(BAD4), ip(NODE4), 132, &[0, 1, 0x9c, 0x40, 0, 0, 0, 0]),
        DROP,
        NoSourceMatch,
        None,
    );
    t.check(
        &Frame::icmp(ip(BAD4), ip(NODE4), 0, 0),
        DROP,
        NoSourceMatch,
        None,
    );
    t.finish();

    let mut off = fixture();
    off.return_traffic = ReturnTraffic::Off;
    let mut t = B::new(off);
    t.check(&reply(ACK, 40000), DROP, NoSourceMatch, None);
    t.check(&dns(40000), DROP, NoSourceMatch, None);
    t.finish();

    let mut narrow = fixture();
    narrow.return_traffic = ReturnTraffic::Ephemeral {
        ports: 50000..=50010,
    };
    let mut t = B::new(narrow);
    t.check(&reply(ACK, 40000), DROP, NoSourceMatch, None);
    t.check(&reply(ACK, 50000), PASS, ReturnTraffic, None);
    t.check(&reply(ACK, 50010), PASS, ReturnTraffic, None);
    t.check(&reply(ACK, 50011), DROP, NoSourceMatch, None);
    t.finish();
}

// ------------------------------------------------------------------ other verdict paths

pub fn default_pass_and_malformed_drops_under_it<B: Bed>() {
    let text = replace_once(&fixture_text(), "default: drop\n", "default: pass\n");
    let mut t = B::new(policy_of(
        "default-pass.yaml",
        &with_rules(&text, DENY_RULE),
    ));
    assert_eq!(t.policy().default, DefaultAction::Pass);
    t.check(&syn(BAD4, 443), PASS, DefaultPass, None);
    t.check(&syn(CLIENT4, 80), PASS, DefaultPass, None);
    t.check(
        &Frame::ip_proto(ip(BAD6), ip(NODE6), 59, &[]),
        PASS,
        DefaultPass,
        None,
    );
    // Return traffic still comes before the default.
    t.check(
        &Frame::tcp(ip(BAD4), ip(NODE4), 443, 40000).ack(),
        PASS,
        ReturnTraffic,
        None,
    );
    // Rules and malformed-packet drops still apply.
    t.check(&syn(CLIENT4, 443), PASS, AllowRule, CLIENTS_HTTPS);
    t.check(&syn("10.0.0.200", 443), DROP, DenyRule, Some("deny-upper"));
    t.check(&syn(BAD4, 443).ihl(3), DROP, Ipv4Header, None);
    t.check(&Frame::ethertype(0x88cc, &[]), DROP, UnknownEthertype, None);
    t.check(
        &syn(BAD4, 443).ipv4_fragment(9, false, 0x2001),
        DROP,
        FragmentUntracked,
        None,
    );
    t.finish();
}

pub fn frames_past_the_first_page<B: Bed>() {
    // Under BPF_PROG_TEST_RUN a frame longer than 3,520 bytes continues in XDP frags (one
    // page each); the verdict and the byte counter must still cover the whole frame.
    let mut t = B::new(fixture());
    t.check(
        &syn(CLIENT4, 443).pad_to(9000),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    t.check(
        &udp(CP6, 5000).payload(&[7; 8000]),
        PASS,
        AllowRule,
        CP_UDP_HIGH,
    );
    t.check(
        &syn(CLIENT4, 443).payload(&[7; 6000]),
        PASS,
        AllowRule,
        CLIENTS_HTTPS,
    );
    // IPv4 total length beyond the frame, far into the frags.
    t.check(
        &syn(CLIENT4, 443).payload(&[7; 6000]).truncate(5000),
        DROP,
        Ipv4Truncated,
        None,
    );
    // 4 KB of extension headers: the TCP header starts in the frags.
    let long_chain = |dport: u16| {
        syn(CLIENT6, dport)
            .ipv6_ext(ExtHeader::HopByHop { len: 255 })
            .ipv6_ext(ExtHeader::DestOpts { len: 255 })
    };
    assert!(long_chain(443).build().len() > 4096 + 54);
    t.check(&long_chain(443), PASS, AllowRule, CLIENTS_HTTPS);
    t.check(&long_chain(80), DROP, NoRuleMatch, None);
    // ... and a chain whose second header ends past the packet, inside the frags.
    t.check(
        &long_chain(443).payload_len(4000),
        DROP,
        Ipv6ExtHeader,
        None,
    );
    t.check(&long_chain(443).l4_truncate(10), DROP, L4Truncated, None);
    t.finish();
}
