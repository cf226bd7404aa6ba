//! The TC egress flow recorder (`nodegate_egress`) under `BPF_PROG_TEST_RUN`: which outgoing
//! packets it learns, in which orientation, the closing flag, that it never drops, and the
//! eviction estimate with a small table. End to end with the XDP program: a reply to a flow
//! the recorder learned passes as `return-traffic`.
#![cfg(feature = "privileged-tests")]

mod common;

use common::flows::{ip, key};

use aya::programs::{TestRun, TestRunOptions};
use filter_common::{flow_flags, Reason, IPV6_EXT_MAX, VLAN_MAX_DEPTH};
use filter_user::compiler::{compile, RuleSlots};
use filter_user::config::{parse_str_with, LoadOptions};
use filter_user::craft::{tcp_flags, ExtHeader, Frame};
use filter_user::loader::testrun::{reason_counter, XdpAction};
use filter_user::loader::{self, Filter};

const NODE4: &str = "10.1.1.1";
const PEER4: &str = "192.0.2.9";
const NODE6: &str = "2001:db8::1";
const PEER6: &str = "2001:db8:c1::9";

/// `TC_ACT_UNSPEC` (= `TCX_NEXT`) as the test run reports it.
const TC_NEXT: u32 = u32::MAX;

const CONFIG: &str = "version: 1
mode: enforce
return_traffic: { mode: stateful, timeouts: { udp: 30 } }
rules:
  - name: https
    from: [203.0.113.0/24]
    protocol: tcp
    ports: [443]
";

fn load(capacity: Option<u32>) -> Filter {
    common::require_root();
    let mut f = Filter::load(&loader::LoadOptions {
        flow_capacity: capacity,
        ..Default::default()
    })
    .expect("load");
    let policy = parse_str_with(
        "eg.yaml",
        CONFIG,
        &LoadOptions::fixed_ephemeral(32768..=60999),
    )
    .expect("config loads")
    .policy;
    f.maps_mut()
        .publish(&compile(&policy, &RuleSlots::new()).unwrap())
        .unwrap();
    f
}

/// Run `frame` through the egress program; it must never drop.
fn egress(f: &mut Filter, frame: &Frame) {
    let bytes = frame.build();
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&bytes);
    let result = f.egress_program().test_run(opts).expect("egress test run");
    assert_eq!(result.return_value, TC_NEXT, "the recorder never decides");
}

#[test]
fn learns_outgoing_flows_in_inbound_orientation() {
    let mut f = load(None);
    egress(&mut f, &Frame::tcp(ip(NODE4), ip(PEER4), 45000, 7000).syn());
    egress(&mut f, &Frame::udp(ip(NODE4), ip(PEER4), 40000, 53));
    egress(
        &mut f,
        &Frame::icmp(ip(NODE4), ip(PEER4), 8, 0).echo(0x77, 1),
    );
    egress(&mut f, &Frame::udp(ip(NODE6), ip(PEER6), 40001, 53));
    egress(
        &mut f,
        &Frame::icmpv6(ip(NODE6), ip(PEER6), 128, 0).echo(0x66, 1),
    );
    for k in [
        key(6, PEER4, 7000, NODE4, 45000),
        key(17, PEER4, 53, NODE4, 40000),
        key(1, PEER4, 0x77, NODE4, 0),
        key(17, PEER6, 53, NODE6, 40001),
        key(58, PEER6, 0x66, NODE6, 0),
    ] {
        let s = f
            .maps()
            .flow(&k)
            .unwrap_or_else(|| panic!("no entry for {k:?}"));
        assert_eq!(s.flags, 0);
    }
    let counts = f.maps().flow_counts().unwrap();
    assert_eq!(
        (counts.inserts, counts.entries, counts.evictions),
        (5, 5, 0)
    );

    // The same flow again refreshes it.
    egress(&mut f, &Frame::udp(ip(NODE4), ip(PEER4), 40000, 53));
    let counts = f.maps().flow_counts().unwrap();
    assert_eq!((counts.inserts, counts.refreshes), (5, 1));

    // End to end: the XDP program passes the replies as return traffic.
    for (what, reply) in [
        (
            "syn-ack",
            Frame::tcp(ip(PEER4), ip(NODE4), 7000, 45000).syn_ack(),
        ),
        ("dns reply", Frame::udp(ip(PEER4), ip(NODE4), 53, 40000)),
        (
            "echo reply",
            Frame::icmp(ip(PEER4), ip(NODE4), 0, 0).echo(0x77, 1),
        ),
        ("dns6 reply", Frame::udp(ip(PEER6), ip(NODE6), 53, 40001)),
        (
            "echo6 reply",
            Frame::icmpv6(ip(PEER6), ip(NODE6), 129, 0).echo(0x66, 1),
        ),
    ] {
        let before = reason_counter(f.maps(), 0, Reason::ReturnTraffic, false)
            .unwrap()
            .packets;
        let (action, _) = f.test_run(&reply.build(), 1).unwrap();
        let after = reason_counter(f.maps(), 0, Reason::ReturnTraffic, false)
            .unwrap()
            .packets;
        assert_eq!(action, XdpAction::Pass, "{what}");
        assert_eq!(after, before + 1, "{what} counted as return traffic");
    }
    // The peer's own new connection on the same tuple is not.
    let (action, _) = f
        .test_run(
            &Frame::tcp(ip(PEER4), ip(NODE4), 7000, 45000).syn().build(),
            1,
        )
        .unwrap();
    assert_eq!(action, XdpAction::Drop, "a bare SYN never matches");
}

#[test]
fn answers_and_non_flows_are_not_learned() {
    let mut f = load(None);
    // The node answering a connection the peer opened, or refusing one.
    egress(
        &mut f,
        &Frame::tcp(ip(NODE4), ip(PEER4), 22, 50000).syn_ack(),
    );
    egress(
        &mut f,
        &Frame::tcp(ip(NODE4), ip(PEER4), 22, 50001).flags(tcp_flags::RST | tcp_flags::ACK),
    );
    // Echo replies, other ICMP, ICMP in the wrong family, ARP, other protocols.
    egress(&mut f, &Frame::icmp(ip(NODE4), ip(PEER4), 0, 0).echo(1, 1));
    egress(&mut f, &Frame::icmp(ip(NODE4), ip(PEER4), 3, 3));
    egress(&mut f, &Frame::icmp(ip(NODE6), ip(PEER6), 8, 0).echo(1, 1));
    egress(&mut f, &Frame::arp());
    egress(&mut f, &Frame::ip_proto(ip(NODE4), ip(PEER4), 47, &[0; 8]));
    // A non-first fragment has no ports.
    egress(
        &mut f,
        &Frame::udp(ip(NODE4), ip(PEER4), 40000, 53).ipv4_fragment(8, false, 9),
    );
    let counts = f.maps().flow_counts().unwrap();
    assert_eq!(counts.entries, 0, "nothing learned: {counts:?}");
    assert_eq!(counts.inserts, 0);
}

/// Outgoing frames with VLAN tags in the frame, and IPv6 with extension headers before the
/// transport header (first fragments included), are learned like plain ones; what carries
/// no ports, or nests deeper than the named limits, is not.
#[test]
fn learns_through_vlan_tags_and_ipv6_extension_headers() {
    let mut f = load(None);
    let udp6 = |sport| Frame::udp(ip(NODE6), ip(PEER6), sport, 53);
    egress(
        &mut f,
        &Frame::tcp(ip(NODE4), ip(PEER4), 45001, 7001)
            .syn()
            .vlan(100),
    );
    egress(&mut f, &udp6(40002).qinq(10, 20));
    egress(
        &mut f,
        &udp6(40003)
            .ipv6_ext(ExtHeader::hop_by_hop())
            .ipv6_ext(ExtHeader::dest_opts()),
    );
    egress(
        &mut f,
        &Frame::tcp(ip(NODE6), ip(PEER6), 45004, 443)
            .syn()
            .ipv6_ext(ExtHeader::routing())
            .ipv6_ext(ExtHeader::ah()),
    );
    // The first fragment of a datagram the node fragmented itself.
    egress(&mut f, &udp6(40005).ipv6_fragment(0, true, 7));
    for k in [
        key(6, PEER4, 7001, NODE4, 45001),
        key(17, PEER6, 53, NODE6, 40002),
        key(17, PEER6, 53, NODE6, 40003),
        key(6, PEER6, 443, NODE6, 45004),
        key(17, PEER6, 53, NODE6, 40005),
    ] {
        assert!(f.maps().flow(&k).is_some(), "no entry for {k:?}");
    }

    // Not learned: a non-first fragment; a chain one header longer than IPV6_EXT_MAX; a tag
    // deeper than VLAN_MAX_DEPTH.
    egress(&mut f, &udp6(40006).ipv6_fragment(8, false, 8));
    let long_chain = (0..=IPV6_EXT_MAX).fold(udp6(40007), |frame, _| {
        frame.ipv6_ext(ExtHeader::dest_opts())
    });
    egress(&mut f, &long_chain);
    let deep = (0..=VLAN_MAX_DEPTH).fold(
        Frame::tcp(ip(NODE4), ip(PEER4), 45008, 7008).syn(),
        |frame, i| frame.vlan(i as u16 + 1),
    );
    egress(&mut f, &deep);
    let counts = f.maps().flow_counts().unwrap();
    assert_eq!(counts.entries, 5, "only the five above: {counts:?}");

    // End to end: the reply to the tagged flow passes as return traffic.
    let (action, _) = f
        .test_run(
            &Frame::tcp(ip(PEER4), ip(NODE4), 7001, 45001)
                .syn_ack()
                .vlan(100)
                .build(),
            1,
        )
        .unwrap();
    assert_eq!(action, XdpAction::Pass);
}

#[test]
fn fin_marks_closing_and_a_new_syn_reopens() {
    let mut f = load(None);
    let k = key(6, PEER4, 443, NODE4, 45000);
    egress(&mut f, &Frame::tcp(ip(NODE4), ip(PEER4), 45000, 443).syn());
    egress(
        &mut f,
        &Frame::tcp(ip(NODE4), ip(PEER4), 45000, 443).flags(tcp_flags::FIN | tcp_flags::ACK),
    );
    assert_eq!(f.maps().flow(&k).unwrap().flags, flow_flags::CLOSING);
    assert_eq!(f.maps().flow_counts().unwrap().closing, 1);
    egress(&mut f, &Frame::tcp(ip(NODE4), ip(PEER4), 45000, 443).syn());
    assert_eq!(
        f.maps().flow(&k).unwrap().flags,
        0,
        "a new SYN starts afresh"
    );
}

#[test]
fn a_full_table_evicts_and_the_estimate_counts_it() {
    let mut f = load(Some(64));
    assert_eq!(f.maps().flow_capacity().unwrap(), 64);
    for port in 0..300u16 {
        egress(&mut f, &Frame::udp(ip(NODE4), ip(PEER4), 20000 + port, 53));
    }
    let counts = f.maps().flow_counts().unwrap();
    assert_eq!(counts.inserts, 300, "{counts:?}");
    assert!(counts.entries <= 64, "{counts:?}");
    assert_eq!(counts.evictions, counts.inserts - counts.entries);
    assert!(counts.evictions >= 236, "{counts:?}");
    // The newest flow survived the evictions.
    assert!(f.maps().flow(&key(17, PEER4, 53, NODE4, 20299)).is_some());
}
