//! Fragments on a real veth attach (issue 6, TESTCASES §D end to end): a UDP datagram larger
//! than the MTU, fragmented by the sender's own stack, is delivered whole from an allowed
//! source (first fragment by rule, the rest as `fragment-tracked`) and not at all from a
//! disallowed one; forged non-first fragments whose payload looks like an allowed port drop.
#![cfg(feature = "privileged-tests")]

mod common;

use std::{net::UdpSocket, time::Duration};

use common::daemon::reason_total;
use filter_user::{
    craft::Frame,
    lab::{in_netns, ip, Lab, LabAddrs},
};

const RULES: &str = "version: 1
return_traffic: off
fragments: track
rules:
  - name: clients-udp
    from: [192.0.2.0/24]
    protocol: udp
    ports: [5000]
";
const NODE: &str = "192.0.2.1";
const DISALLOWED: &str = "198.51.100.7";
/// Three fragments on a 1500-byte MTU: 1480 + 1480 + the rest.
const DATAGRAM: usize = 4000;

#[test]
fn oversized_udp_is_reassembled_only_from_allowed_sources() {
    let (mut filter, _) = common::published(&common::policy_of("rules.yaml", RULES));
    let lab = Lab::new("frg", LabAddrs::default()).unwrap();
    let link = common::attach_to_lab(&mut filter, &lab);
    // The disallowed source lives on the peer too; the node needs no route back for UDP.
    ip(&[
        "-n",
        &lab.peer_ns,
        "addr",
        "add",
        &format!("{DISALLOWED}/32"),
        "dev",
        &lab.peer_if,
    ])
    .unwrap();

    let server = in_netns(&lab.node_ns, || UdpSocket::bind((NODE, 5000)))
        .unwrap()
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let send_from = |src: &str| {
        let socket = in_netns(&lab.peer_ns, || UdpSocket::bind((src, 0)))
            .unwrap()
            .unwrap();
        socket
            .send_to(&vec![0x5a; DATAGRAM], (NODE, 5000))
            .expect("send the datagram");
    };
    let mut buf = vec![0u8; 65536];

    send_from("192.0.2.9");
    let (len, from) = server
        .recv_from(&mut buf)
        .expect("the allowed datagram arrives");
    assert_eq!(len, DATAGRAM, "delivered whole");
    assert_eq!(from.ip().to_string(), "192.0.2.9");
    let snap = filter.maps().snapshot().unwrap();
    assert_eq!(
        reason_total(&snap, "allow-rule").0,
        1,
        "the first fragment is judged by the rule"
    );
    assert_eq!(
        reason_total(&snap, "fragment-tracked").0,
        2,
        "the other two follow it"
    );

    send_from(DISALLOWED);
    let err = server
        .recv_from(&mut buf)
        .expect_err("nothing from the disallowed source");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    let snap = filter.maps().snapshot().unwrap();
    assert_eq!(
        reason_total(&snap, "no-source-match").0,
        1,
        "its first fragment drops"
    );
    assert_eq!(
        reason_total(&snap, "fragment-untracked").0,
        2,
        "and so do the rest"
    );

    // A forged non-first fragment carrying what looks like a UDP header to port 5000.
    let mut fake_header = Vec::new();
    fake_header.extend_from_slice(&40000u16.to_be_bytes());
    fake_header.extend_from_slice(&5000u16.to_be_bytes());
    fake_header.extend_from_slice(&[0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let forged = Frame::ip_proto(
        DISALLOWED.parse().unwrap(),
        NODE.parse().unwrap(),
        17,
        &fake_header,
    )
    .ipv4_fragment(185, false, 0x7777)
    .build();
    let sender = lab.peer_sender().unwrap();
    for _ in 0..5 {
        sender.send(&forged).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let snap = filter.maps().snapshot().unwrap();
    assert_eq!(
        reason_total(&snap, "fragment-untracked").0,
        7,
        "forged fragments never have their payload read as ports"
    );
    assert_eq!(reason_total(&snap, "allow-rule").0, 1);
    filter.program().detach(link).unwrap();
}
