//! Builder tests: byte layout, lengths, checksums, and round trips through the model's
//! parser.

use std::net::IpAddr;

use filter_common::Reason;

use super::*;
use crate::model::parse::{parse, Family, FragmentKey, Parsed, Transport};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn packet(frame: &[u8]) -> crate::model::parse::IpPacket {
    match parse(frame, true) {
        Ok(Parsed::Packet(p)) => p,
        other => panic!("expected a packet, got {other:?}"),
    }
}

/// Verifies a checksum field: the checksum over data including it is zero.
fn verifies(parts: &[&[u8]]) -> bool {
    checksum(parts) == 0
}

#[test]
fn tcp_v4_layout_and_checksums() {
    let f = Frame::tcp(ip("192.0.2.9"), ip("10.1.1.1"), 40000, 443)
        .syn()
        .build();
    assert_eq!(f.len(), 54);
    assert_eq!(&f[0..6], &DEFAULT_DST_MAC);
    assert_eq!(&f[6..12], &DEFAULT_SRC_MAC);
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    let l3 = &f[14..];
    assert_eq!(l3[0], 0x45);
    assert_eq!(u16::from_be_bytes([l3[2], l3[3]]), 40);
    assert_eq!(l3[8], 64);
    assert_eq!(l3[9], 6);
    assert!(verifies(&[&l3[..20]]), "IPv4 header checksum");
    let tcp = &l3[20..];
    assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 40000);
    assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 443);
    assert_eq!(tcp[12], 0x50);
    assert_eq!(tcp[13], tcp_flags::SYN);
    let pseudo = [&l3[12..20], &[0, 6, 0, 20][..]].concat();
    assert!(verifies(&[&pseudo, tcp]), "TCP checksum");
}

#[test]
fn udp_v6_checksum_and_length() {
    let f = Frame::udp(ip("2001:db8::1"), ip("2001:db8::2"), 53, 40000)
        .payload(b"hello")
        .build();
    assert_eq!(f.len(), 14 + 40 + 8 + 5);
    assert_eq!(&f[12..14], &[0x86, 0xdd]);
    let l3 = &f[14..];
    assert_eq!(l3[0] >> 4, 6);
    assert_eq!(u16::from_be_bytes([l3[4], l3[5]]), 13);
    assert_eq!(l3[6], 17);
    let udp = &l3[40..];
    assert_eq!(u16::from_be_bytes([udp[4], udp[5]]), 13);
    let pseudo = [&l3[8..40], &[0, 0, 0, 13, 0, 0, 0, 17][..]].concat();
    assert!(verifies(&[&pseudo, udp]), "UDP checksum");
}

#[test]
fn icmp_checksum() {
    let f = Frame::icmp(ip("10.0.0.5"), ip("10.0.0.1"), 8, 0)
        .payload(&[1, 2, 3])
        .build();
    assert!(verifies(&[&f[34..]]));
    assert_eq!(f[34], 8);
}

#[test]
fn tcp_round_trip_with_tags_and_options() {
    let f = Frame::tcp(ip("10.0.0.5"), ip("10.0.0.1"), 1234, 10250)
        .ack()
        .qinq(10, 20)
        .ipv4_options(&[1, 1, 1]) // three NOPs, padded to 4
        .payload(&[0xaa; 7])
        .build();
    assert_eq!(&f[12..14], &TPID_8021AD.to_be_bytes());
    assert_eq!(&f[16..18], &TPID_8021Q.to_be_bytes());
    assert_eq!(f[22], 0x46);
    let p = packet(&f);
    assert_eq!(p.family, Family::Ipv4);
    assert_eq!(p.src, ip("10.0.0.5"));
    assert_eq!(p.dst, ip("10.0.0.1"));
    assert_eq!(
        p.transport,
        Transport::Tcp {
            sport: 1234,
            dport: 10250,
            flags: tcp_flags::ACK
        }
    );
    assert_eq!(p.first_fragment, None);
}

#[test]
fn ipv6_ext_chain_round_trip() {
    let f = Frame::udp(ip("2001:db8:c1::9"), ip("2001:db8::1"), 5353, 53)
        .ipv6_ext(ExtHeader::hop_by_hop())
        .ipv6_ext(ExtHeader::DestOpts { len: 1 })
        .ipv6_ext(ExtHeader::routing())
        .ipv6_ext(ExtHeader::fragment(0, true, 0xdead_beef))
        .ipv6_ext(ExtHeader::ah())
        .ipv6_ext(ExtHeader::dest_opts())
        .hop_limit(7)
        .build();
    // 40 + 8 + 16 + 8 + 8 + 24 + 8 + 8
    assert_eq!(f.len(), 14 + 40 + 72 + 8);
    let l3 = &f[14..];
    assert_eq!(l3[6], 0, "first next header is Hop-by-Hop");
    assert_eq!(l3[40], 60, "HBH → DestOpts");
    assert_eq!(l3[48], 43, "DestOpts → Routing");
    let p = packet(&f);
    assert_eq!(p.proto, 17);
    assert_eq!(p.hop_limit, 7);
    assert!(p.fragmented);
    assert_eq!(
        p.first_fragment,
        Some(FragmentKey {
            family: Family::Ipv6,
            proto: 51,
            id: 0xdead_beef,
            src: ip("2001:db8:c1::9"),
            dst: ip("2001:db8::1"),
        })
    );
    assert_eq!(
        p.transport,
        Transport::Udp {
            sport: 5353,
            dport: 53
        }
    );
}

#[test]
fn ah_length_is_words_plus_two() {
    let mut out = Vec::new();
    ExtHeader::Ah { len: 1 }.write(6, &mut out);
    assert_eq!(out.len(), 12);
    out.clear();
    ExtHeader::Ah { len: 7 }.write(6, &mut out);
    assert_eq!(out.len(), 36);
    assert_eq!(out[..2], [6, 7]);
}

#[test]
fn ipv4_fragment_fields() {
    let f = Frame::udp(ip("10.0.0.5"), ip("10.0.0.1"), 1, 2)
        .ipv4_fragment(185, false, 0x4242)
        .build();
    match parse(&f, false) {
        Ok(Parsed::Fragment(frag)) => {
            assert_eq!(frag.offset, 185);
            assert_eq!(frag.key.id, 0x4242);
            assert_eq!(frag.key.proto, 17);
        }
        other => panic!("{other:?}"),
    }
    let word = u16::from_be_bytes([f[20], f[21]]);
    assert_eq!(word, 185);
    let first = Frame::udp(ip("10.0.0.5"), ip("10.0.0.1"), 1, 2)
        .ipv4_fragment(0, true, 1)
        .dont_fragment()
        .build();
    assert_eq!(u16::from_be_bytes([first[20], first[21]]), 0x6000);
}

#[test]
fn overrides_change_fields_not_bytes() {
    let f = Frame::tcp(ip("10.0.0.5"), ip("10.0.0.1"), 1, 2)
        .ihl(4)
        .tot_len(9)
        .version(5)
        .tcp_data_offset(3)
        .build();
    assert_eq!(f.len(), 54);
    assert_eq!(f[14], 0x54);
    assert_eq!(u16::from_be_bytes([f[16], f[17]]), 9);
    assert_eq!(f[14 + 20 + 12], 0x30);
    assert!(verifies(&[&f[14..34]]), "checksum follows the overrides");

    let u = Frame::udp(ip("10.0.0.5"), ip("10.0.0.1"), 1, 2)
        .udp_len(3)
        .build();
    assert_eq!(u16::from_be_bytes([u[38], u[39]]), 3);
}

#[test]
fn padding_and_truncation() {
    let f = Frame::udp(ip("10.0.0.5"), ip("10.0.0.1"), 1, 2)
        .pad_to(60)
        .build();
    assert_eq!(f.len(), 60);
    assert_eq!(
        u16::from_be_bytes([f[16], f[17]]),
        28,
        "padding is not counted"
    );
    assert!(matches!(parse(&f, false), Ok(Parsed::Packet(_))));

    let t = Frame::udp(ip("10.0.0.5"), ip("10.0.0.1"), 1, 2)
        .truncate(40)
        .build();
    assert_eq!(t.len(), 40);
    assert_eq!(parse(&t, false), Err(Reason::Ipv4Truncated));

    let l4 = Frame::tcp(ip("10.0.0.5"), ip("10.0.0.1"), 1, 2)
        .l4_truncate(10)
        .build();
    assert_eq!(l4.len(), 14 + 20 + 10);
    assert_eq!(u16::from_be_bytes([l4[16], l4[17]]), 30);
    assert_eq!(parse(&l4, false), Err(Reason::L4Truncated));
}

#[test]
fn non_ip_frames() {
    let arp = Frame::arp().build();
    assert_eq!(arp.len(), 14 + 28);
    assert_eq!(&arp[0..6], &[0xff; 6]);
    assert_eq!(parse(&arp, false), Ok(Parsed::Ethertype(0x0806)));

    let lldp = Frame::ethertype(0x88cc, &[1, 2, 3]).vlan(5).build();
    assert_eq!(lldp.len(), 14 + 4 + 3);
    assert_eq!(parse(&lldp, false), Ok(Parsed::Ethertype(0x88cc)));
}

#[test]
fn neighbor_solicitation() {
    let target: std::net::Ipv6Addr = "2001:db8::abcd:1234".parse().unwrap();
    let f = Frame::neighbor_solicitation("fe80::1".parse().unwrap(), target).build();
    assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0xcd, 0x12, 0x34]);
    let p = packet(&f);
    assert_eq!(p.hop_limit, 255);
    assert_eq!(p.dst, ip("ff02::1:ffcd:1234"));
    assert_eq!(p.transport, Transport::Icmpv6 { ty: 135, code: 0 });
}

#[test]
fn wrong_family_icmp_and_protocol_override() {
    let f = Frame::icmp(ip("2001:db8::1"), ip("2001:db8::2"), 8, 0).build();
    let p = packet(&f);
    assert_eq!((p.proto, p.transport), (1, Transport::Other));

    let g = Frame::tcp(ip("10.0.0.5"), ip("10.0.0.1"), 1, 2)
        .protocol(132)
        .build();
    assert_eq!(packet(&g).proto, 132);

    let h = Frame::ip_proto(ip("2001:db8::1"), ip("2001:db8::2"), 59, &[])
        .ipv6_ext(ExtHeader::dest_opts())
        .build();
    assert_eq!(packet(&h).proto, 59);
}

#[test]
#[should_panic(expected = "on an IPv6 frame")]
fn ipv4_setter_on_ipv6_panics() {
    let _ = Frame::tcp(ip("2001:db8::1"), ip("2001:db8::2"), 1, 2).ihl(6);
}

#[test]
#[should_panic(expected = "different families")]
fn mixed_families_panic() {
    let _ = Frame::tcp(ip("10.0.0.1"), ip("2001:db8::2"), 1, 2);
}
