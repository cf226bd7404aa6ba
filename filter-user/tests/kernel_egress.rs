//! The TC egress flow recorder (`nodegate_egress`) under `BPF_PROG_TEST_RUN`: which outgoing
//! packets it learns, in which orientation, the closing flag, that it never drops, and the
//! eviction estimate with a small table. End to end with the XDP program: a reply to a flow
//! the recorder learned passes as `return-traffic`.
#![cfg(feature = "privileged-tests")]

mod common;

use common::flows::{ip, key};

use aya::programs::{TestRun, TestRunOptions};
use filter_common::{flow_flags, Reason};
use filter_user::compiler::{compile, RuleSlots};
use filter_user::config::{parse_str_with, LoadOptions};
use filter_user::craft::{tcp_flags, Frame};
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
