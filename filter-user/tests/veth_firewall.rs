//! The embeddable face (`filter_user::firewall`) on a lab veth: a rule set built in code is
//! published, attached, judged on frames from the peer namespace, replaced by a second
//! publish, and detached — each in one call, counters read through the same face.
//!
//! Run: `cargo test -p filter-user --features privileged-tests --test veth_firewall` as root.
#![cfg(feature = "privileged-tests")]

mod common;

use std::time::Duration;

use filter_user::craft::Frame;
use filter_user::firewall::{Firewall, RuleSet};
use filter_user::lab::{in_netns, Lab, LabAddrs};
use filter_user::loader::counters::Snapshot;
use filter_user::policy::Protocol;

/// Packets counted for `reason` on any interface.
fn reason_packets(s: &Snapshot, reason: &str) -> u64 {
    s.reasons
        .iter()
        .filter(|r| r.reason == reason)
        .map(|r| r.packets)
        .sum()
}

/// Packets counted for rule `name`.
fn rule_packets(s: &Snapshot, name: &str) -> u64 {
    s.rules
        .iter()
        .filter(|r| r.name == name)
        .map(|r| r.packets)
        .sum()
}

#[test]
fn publish_attach_count_republish_detach() {
    common::require_root();
    let lab = Lab::new("fwl", LabAddrs::default()).expect("create lab");
    let peer = lab.addrs.peer_v4.parse::<ipnet::IpNet>().unwrap().addr();
    let node = lab.addrs.node_v4.parse::<ipnet::IpNet>().unwrap().addr();
    let syn = |port: u16| Frame::tcp(peer, node, 40000, port).syn().build();
    let sender = lab.peer_sender().unwrap();
    let send = |port: u16, n: usize| {
        for _ in 0..n {
            sender.send(&syn(port)).unwrap();
        }
        std::thread::sleep(common::patience(Duration::from_millis(300)));
    };
    let https_only = RuleSet::new().allow(
        "lab-https",
        [format!("{peer}/32").parse().unwrap()],
        Protocol::Tcp,
        [443..=443],
    );

    let mut fw = Firewall::load().expect("load");
    fw.publish(&https_only).expect("publish");
    let how = in_netns(&lab.node_ns, || fw.attach(&lab.node_if))
        .expect("enter the node namespace")
        .expect("attach");
    assert_eq!(how, "driver", "veth has native XDP");

    let before = fw.counters().unwrap();
    send(443, 5);
    send(80, 3);
    let after = fw.counters().unwrap();
    assert_eq!(
        rule_packets(&after, "lab-https") - rule_packets(&before, "lab-https"),
        5
    );
    assert_eq!(
        reason_packets(&after, "no-rule-match") - reason_packets(&before, "no-rule-match"),
        3
    );

    // A reload is another publish: port 80 now has a rule, and the first rule keeps its
    // counter slot.
    let both = https_only.allow(
        "lab-http",
        [format!("{peer}/32").parse().unwrap()],
        Protocol::Tcp,
        [80..=80],
    );
    fw.publish(&both).expect("publish again");
    send(80, 4);
    let reloaded = fw.counters().unwrap();
    assert_eq!(rule_packets(&reloaded, "lab-http"), 4);
    assert_eq!(rule_packets(&reloaded, "lab-https"), 5);

    let detached = in_netns(&lab.node_ns, || fw.detach(&lab.node_if)).unwrap();
    assert!(detached.expect("detach"));
    assert!(!in_netns(&lab.node_ns, || fw.detach(&lab.node_if))
        .unwrap()
        .expect("a second detach"));
    send(80, 2);
    let gone = fw.counters().unwrap();
    assert_eq!(
        rule_packets(&gone, "lab-http"),
        4,
        "nothing is judged after detach"
    );
}
