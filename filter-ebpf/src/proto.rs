//! Wire constants and header field offsets, from `network-types` structs and `offset_of!`
//! where a struct exists, named here otherwise; wire numbers from `filter_common::wire`,
//! which userspace shares. No other module spells a header offset.

use core::mem::{offset_of, size_of};

use filter_common::wire;

use network_types::{
    eth::{EthHdr, EtherType},
    icmp::{IcmpIdSequence, Icmpv4Hdr, Icmpv6Hdr},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

/// `network-types` keeps ethertypes in network byte order; the parser compares host order.
const fn ethertype(t: EtherType) -> u16 {
    u16::from_be(t as u16)
}

// ---- Ethernet and VLAN ----
pub const ETH_HDR_LEN: usize = EthHdr::LEN;
pub const ETH_TYPE: usize = offset_of!(EthHdr, ether_type);
pub const VLAN_HDR_LEN: usize = VlanHdr::LEN;
pub const VLAN_TYPE: usize = offset_of!(VlanHdr, ether_type);

pub const ETH_P_IPV4: u16 = wire::ethertype::IPV4;
pub const ETH_P_IPV6: u16 = wire::ethertype::IPV6;
pub const ETH_P_ARP: u16 = wire::ethertype::ARP;
/// 802.1Q.
pub const ETH_P_8021Q: u16 = wire::ethertype::VLAN_8021Q;
/// 802.1ad (QinQ outer tag).
pub const ETH_P_8021AD: u16 = wire::ethertype::VLAN_8021AD;
/// Legacy QinQ outer tag.
pub const ETH_P_QINQ1: u16 = wire::ethertype::VLAN_QINQ_9100;
// The numbers are filter-common's (userspace builds frames with them); network-types agrees.
const _: () = assert!(
    ETH_P_IPV4 == ethertype(EtherType::Ipv4)
        && ETH_P_IPV6 == ethertype(EtherType::Ipv6)
        && ETH_P_ARP == ethertype(EtherType::Arp)
        && ETH_P_8021Q == ethertype(EtherType::Ieee8021q)
        && ETH_P_8021AD == ethertype(EtherType::Ieee8021ad)
        && ETH_P_QINQ1 == ethertype(EtherType::Ieee8021QinQ1)
);

// ---- IPv4 ----
pub const IPV4_HDR_LEN: usize = Ipv4Hdr::LEN;
pub const IPV4_VIHL: usize = offset_of!(Ipv4Hdr, vihl);
pub const IPV4_TOT_LEN: usize = offset_of!(Ipv4Hdr, tot_len);
pub const IPV4_ID: usize = offset_of!(Ipv4Hdr, id);
pub const IPV4_FRAGS: usize = offset_of!(Ipv4Hdr, frags);
pub const IPV4_PROTO: usize = offset_of!(Ipv4Hdr, proto);
pub const IPV4_SRC: usize = offset_of!(Ipv4Hdr, src_addr);
pub const IPV4_DST: usize = offset_of!(Ipv4Hdr, dst_addr);
pub const IPV4_VERSION: u8 = 4;
/// The version sits in the high nibble of an IP header's first byte (IPv4 and IPv6).
pub const IP_VERSION_SHIFT: u32 = 4;
/// IHL is the low nibble of the IPv4 header's first byte.
pub const IPV4_IHL_MASK: u8 = 0x0f;
/// IHL counts 32-bit words.
pub const IPV4_IHL_UNIT: usize = 4;
/// Smallest legal IHL: the fixed header alone.
pub const IPV4_MIN_IHL: usize = IPV4_HDR_LEN / IPV4_IHL_UNIT;
/// Flags/fragment-offset word: reserved ("evil") bit, More Fragments, offset mask.
pub const IPV4_FLAG_RESERVED: u16 = 0x8000;
pub const IPV4_FLAG_MF: u16 = 0x2000;
pub const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

// ---- IPv6 ----
pub const IPV6_HDR_LEN: usize = Ipv6Hdr::LEN;
pub const IPV6_VCF: usize = offset_of!(Ipv6Hdr, vcf);
pub const IPV6_PAYLOAD_LEN: usize = offset_of!(Ipv6Hdr, payload_len);
pub const IPV6_NEXT_HDR: usize = offset_of!(Ipv6Hdr, next_hdr);
pub const IPV6_HOP_LIMIT: usize = offset_of!(Ipv6Hdr, hop_limit);
pub const IPV6_SRC: usize = offset_of!(Ipv6Hdr, src_addr);
pub const IPV6_DST: usize = offset_of!(Ipv6Hdr, dst_addr);
pub const IPV6_VERSION: u8 = 6;

/// Common start of the Hop-by-Hop, Destination Options, Routing and AH headers
/// (RFC 8200 §4.3–4.6, RFC 4302 §2).
#[repr(C)]
pub struct Ipv6ExtHdr {
    pub next_hdr: u8,
    pub hdr_ext_len: u8,
}
pub const EXT_NEXT_HDR: usize = offset_of!(Ipv6ExtHdr, next_hdr);
pub const EXT_LEN: usize = offset_of!(Ipv6ExtHdr, hdr_ext_len);
/// Bytes needed to read an extension header's length field.
pub const EXT_MIN_LEN: usize = size_of::<Ipv6ExtHdr>();
/// The Routing header's fixed part up to Segments Left (RFC 8200 §4.4).
pub const RH_FIXED_LEN: usize = 4;
/// Offset of Segments Left in the Routing header.
pub const RH_SEGMENTS_LEFT: usize = 3;
/// HBH / DestOpts / Routing: length in 8-octet units, not counting the first 8.
pub const EXT_UNIT: usize = 8;
/// AH: length in 4-octet units, minus 2.
pub const AH_UNIT: usize = 4;
pub const AH_LEN_BIAS: usize = 2;

/// IPv6 Fragment header (RFC 8200 §4.5).
#[repr(C)]
pub struct Ipv6FragHdr {
    pub next_hdr: u8,
    pub reserved: u8,
    pub frag_off: [u8; 2],
    pub id: [u8; 4],
}
pub const FRAG_HDR_LEN: usize = size_of::<Ipv6FragHdr>();
pub const FRAG_NEXT_HDR: usize = offset_of!(Ipv6FragHdr, next_hdr);
// The walk reads every header's next-header byte at one offset.
const _: () = assert!(FRAG_NEXT_HDR == EXT_NEXT_HDR);
pub const FRAG_OFF: usize = offset_of!(Ipv6FragHdr, frag_off);
pub const FRAG_ID: usize = offset_of!(Ipv6FragHdr, id);
/// The offset sits above 3 flag bits; the lowest is M (more fragments).
pub const FRAG_OFFSET_SHIFT: u32 = 3;
pub const FRAG_FLAG_M: u16 = 1;

/// Fragment offsets (IPv4 and IPv6) count 8-octet units.
pub const FRAG_OFFSET_UNIT: u32 = 8;

// ---- IP protocol numbers ----
pub const IPPROTO_HOPOPTS: u8 = wire::ip_proto::HOP_BY_HOP;
pub const IPPROTO_ICMP: u8 = wire::ip_proto::ICMP;
pub const IPPROTO_TCP: u8 = wire::ip_proto::TCP;
pub const IPPROTO_UDP: u8 = wire::ip_proto::UDP;
pub const IPPROTO_ROUTING: u8 = wire::ip_proto::ROUTING;
pub const IPPROTO_FRAGMENT: u8 = wire::ip_proto::FRAGMENT;
pub const IPPROTO_AH: u8 = wire::ip_proto::AH;
pub const IPPROTO_ICMPV6: u8 = wire::ip_proto::ICMPV6;
pub const IPPROTO_DSTOPTS: u8 = wire::ip_proto::DEST_OPTS;
const _: () = assert!(
    IPPROTO_HOPOPTS == IpProto::HopOpt as u8
        && IPPROTO_ICMP == IpProto::Icmp as u8
        && IPPROTO_TCP == IpProto::Tcp as u8
        && IPPROTO_UDP == IpProto::Udp as u8
        && IPPROTO_ROUTING == IpProto::Ipv6Route as u8
        && IPPROTO_FRAGMENT == IpProto::Ipv6Frag as u8
        && IPPROTO_AH == IpProto::Ah as u8
        && IPPROTO_ICMPV6 == IpProto::Ipv6Icmp as u8
        && IPPROTO_DSTOPTS == IpProto::Ipv6Opts as u8
);

// ---- TCP ----
pub const TCP_HDR_LEN: usize = TcpHdr::LEN;
pub const TCP_SOURCE: usize = offset_of!(TcpHdr, source);
pub const TCP_DEST: usize = offset_of!(TcpHdr, dest);
/// Data offset (high nibble) byte, followed by the flags byte.
pub const TCP_DOFF: usize = offset_of!(TcpHdr, _bitfield_1);
pub const TCP_FLAGS: usize = TCP_DOFF + 1;
/// The part of the TCP header the parser reads: ports through the flags byte.
pub const TCP_PARSED_LEN: usize = TCP_FLAGS + 1;
pub const TCP_DOFF_SHIFT: u32 = 4;
/// Data offset counts 32-bit words.
pub const TCP_DOFF_UNIT: usize = 4;
pub const TCP_MIN_DOFF: usize = TCP_HDR_LEN / TCP_DOFF_UNIT;
pub const TCP_FLAG_FIN: u8 = wire::tcp_flags::FIN;
pub const TCP_FLAG_SYN: u8 = wire::tcp_flags::SYN;
pub const TCP_FLAG_RST: u8 = wire::tcp_flags::RST;
pub const TCP_FLAG_ACK: u8 = wire::tcp_flags::ACK;

// ---- UDP ----
pub const UDP_HDR_LEN: usize = UdpHdr::LEN;
pub const UDP_SOURCE: usize = offset_of!(UdpHdr, src);
pub const UDP_DEST: usize = offset_of!(UdpHdr, dst);
pub const UDP_LEN: usize = offset_of!(UdpHdr, len);

// ---- ICMP / ICMPv6 ----
pub const ICMP_HDR_LEN: usize = Icmpv4Hdr::LEN;
pub const ICMP_TYPE: usize = offset_of!(Icmpv4Hdr, type_);
pub const ICMP_CODE: usize = offset_of!(Icmpv4Hdr, code);
pub const ICMPV6_HDR_LEN: usize = Icmpv6Hdr::LEN;
pub const ICMPV6_TYPE: usize = offset_of!(Icmpv6Hdr, type_);
/// The part of any L4 header the parser reads: the most it needs (TCP).
pub const L4_HEAD: usize = TCP_PARSED_LEN;
/// What an IPv4 parser wants in one read: the fixed header and, when there are no options,
/// the L4 head right after it.
pub const IPV4_HEAD: usize = IPV4_HDR_LEN + L4_HEAD;
/// The same for IPv6 without extension headers.
pub const IPV6_HEAD: usize = IPV6_HDR_LEN + L4_HEAD;
/// The part of an ICMP/ICMPv6 header the parser reads: type and code.
pub const ICMP_PARSED_LEN: usize = ICMP_CODE + 1;
const _: () = assert!(ICMPV6_TYPE == ICMP_TYPE && ICMP_PARSED_LEN <= ICMPV6_HDR_LEN);
const _: () = assert!(UDP_HDR_LEN <= L4_HEAD && ICMP_PARSED_LEN <= L4_HEAD);

/// Echo identifier of an ICMP/ICMPv6 echo request or reply (same place in both).
pub const ICMP_ECHO_ID: usize = offset_of!(Icmpv4Hdr, data) + offset_of!(IcmpIdSequence, id);
const _: () = assert!(ICMP_ECHO_ID + 2 <= ICMP_HDR_LEN && ICMP_HDR_LEN == ICMPV6_HDR_LEN);
const _: () = assert!(ICMP_HDR_LEN <= L4_HEAD);
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

pub const ICMP_DEST_UNREACH: u8 = 3;
/// Code of Destination Unreachable: fragmentation needed and DF set (PMTU discovery).
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETERPROB: u8 = 12;

pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PKT_TOOBIG: u8 = 2;
pub const ICMPV6_TIME_EXCEED: u8 = 3;
pub const ICMPV6_PARAMPROB: u8 = 4;
/// Router Solicitation (133) through Redirect (137): Neighbor Discovery (RFC 4861).
pub const ICMPV6_ND_FIRST: u8 = 133;
pub const ICMPV6_ND_LAST: u8 = 137;
/// ND messages must arrive with the hop limit a router can never leave (RFC 4861 §6.1).
pub const ND_HOP_LIMIT: u8 = 255;

const _: () = assert!(TCP_DOFF == 12 && FRAG_HDR_LEN == 8 && ETH_HDR_LEN == 14);
