//! Frame parser of the reference model: VERDICTS.md §1–§4, from bytes to what the classifier
//! needs, or to the reason that ends the evaluation early.
//!
//! Written against slices: every layer takes the bytes from its start to the end of what it
//! may read (the frame for Ethernet, `l3_end` from the IP header on) and `get`s or splits
//! what it needs, so a frame can never be over-read and Ethernet padding is never seen.
//! The parser knows one policy knob, because its stage (§2a.6) sits between checks of its own:
//! whether IPv4 options are allowed. Everything else that depends on the policy (ARP,
//! unknown ethertypes, fragments, rules) is the classifier's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filter_common::{Reason, ServiceKind, IPV6_EXT_MAX, VLAN_MAX_DEPTH};

/// Address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// What a frame is, once parsed as far as the policy needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not IPv4 or IPv6 (ARP included): the innermost ethertype after the VLAN tags, or an
    /// 802.3 length.
    Ethertype(u16),
    /// A non-first fragment (§3): its payload is not read.
    Fragment(NonFirstFragment),
    /// An IP packet parsed down to its transport header (§4).
    Packet(IpPacket),
}

/// The identity of a fragmented datagram: what fragment tracking records from a first
/// fragment and looks up for the following ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    /// Family.
    pub family: Family,
    /// IPv4: the protocol field. IPv6: the Fragment header's Next Header, which RFC 8200
    /// §4.5 makes the same in every fragment of a datagram.
    pub proto: u8,
    /// Identification (16 bits in IPv4, 32 in IPv6).
    pub id: u32,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
}

/// A fragment with a non-zero offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonFirstFragment {
    /// Its datagram.
    pub key: FragmentKey,
    /// Fragment offset in 8-byte units.
    pub offset: u16,
}

impl NonFirstFragment {
    /// The fragment's protocol (the key's).
    pub fn proto(&self) -> u8 {
        self.key.proto
    }
}

/// The transport header, as far as the rules look at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// The flags byte (offset 13).
        flags: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP in IPv4.
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
    },
    /// ICMPv6 in IPv6.
    Icmpv6 {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
    },
    /// Any other protocol, including ICMP in the wrong family; nothing after the IP
    /// headers is read.
    Other,
}

/// An IP packet (unfragmented, atomic, or a first fragment) with a valid transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    /// Family.
    pub family: Family,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// Transport protocol: the IPv4 protocol field, or the Next Header that ends the IPv6
    /// extension-header chain.
    pub proto: u8,
    /// The transport header.
    pub transport: Transport,
    /// Set for a first fragment (offset 0, more fragments): the key its followers carry.
    pub first_fragment: Option<FragmentKey>,
    /// IPv6: a Fragment header was present (atomic fragments included). IPv4: first
    /// fragment.
    pub fragmented: bool,
}

impl IpPacket {
    /// The service kind and key the rules match on (§4).
    pub fn service(&self) -> (ServiceKind, u16) {
        match self.transport {
            Transport::Tcp { dport, .. } => (ServiceKind::Tcp, dport),
            Transport::Udp { dport, .. } => (ServiceKind::Udp, dport),
            Transport::Icmp { ty, .. } => (ServiceKind::Icmp, u16::from(ty)),
            Transport::Icmpv6 { ty, .. } => (ServiceKind::Icmpv6, u16::from(ty)),
            Transport::Other => (ServiceKind::Other, u16::from(self.proto)),
        }
    }

    /// Source and destination ports (TCP and UDP), else zeros.
    pub fn ports(&self) -> (u16, u16) {
        match self.transport {
            Transport::Tcp { sport, dport, .. } | Transport::Udp { sport, dport } => (sport, dport),
            _ => (0, 0),
        }
    }
}

const TPIDS: [u16; 3] = [0x8100, 0x88A8, 0x9100];
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Parses `frame` as far as VERDICTS.md §1–§4 go. `Err` is the reason that ends the
/// evaluation in the parser (a malformed or truncated frame, VLAN depth, IPv4 options when
/// `ipv4_options_allow` is false, a tiny first fragment).
pub fn parse(frame: &[u8], ipv4_options_allow: bool) -> Result<Parsed, Reason> {
    // §1 Ethernet and VLAN.
    let (eth, mut rest) = frame
        .split_first_chunk::<14>()
        .ok_or(Reason::EthTruncated)?;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut depth = 0;
    while TPIDS.contains(&ethertype) {
        if depth == VLAN_MAX_DEPTH {
            return Err(Reason::VlanDepth);
        }
        let (tag, after) = rest.split_first_chunk::<4>().ok_or(Reason::VlanDepth)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        rest = after;
        depth += 1;
    }
    match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(rest, ipv4_options_allow),
        ETHERTYPE_IPV6 => parse_ipv6(rest),
        other => Ok(Parsed::Ethertype(other)),
    }
}

/// §2a. `l3` runs from the IPv4 header to the end of the frame.
fn parse_ipv4(l3: &[u8], options_allow: bool) -> Result<Parsed, Reason> {
    if l3.len() < 20 {
        return Err(Reason::Ipv4Truncated);
    }
    let version = l3[0] >> 4;
    let ihl = usize::from(l3[0] & 0x0f);
    if version != 4 || ihl < 5 {
        return Err(Reason::Ipv4Header);
    }
    let header_len = ihl * 4;
    if l3.len() < header_len {
        return Err(Reason::Ipv4Truncated);
    }
    let tot_len = usize::from(be16(l3, 2));
    if tot_len < header_len {
        return Err(Reason::Ipv4Header);
    }
    // Everything past tot_len is Ethernet padding: cut it off here, never read it.
    let packet = l3.get(..tot_len).ok_or(Reason::Ipv4Truncated)?;
    let word = be16(packet, 6);
    if word & 0x8000 != 0 {
        return Err(Reason::Ipv4Header);
    }
    if ihl > 5 && !options_allow {
        return Err(Reason::Ipv4Options);
    }
    let proto = packet[9];
    let src = IpAddr::V4(Ipv4Addr::new(
        packet[12], packet[13], packet[14], packet[15],
    ));
    let dst = IpAddr::V4(Ipv4Addr::new(
        packet[16], packet[17], packet[18], packet[19],
    ));
    let key = FragmentKey {
        family: Family::Ipv4,
        proto,
        id: u32::from(be16(packet, 4)),
        src,
        dst,
    };
    let offset = word & 0x1fff;
    let more = word & 0x2000 != 0;
    if offset > 0 {
        return Ok(Parsed::Fragment(NonFirstFragment { key, offset }));
    }
    let first_frag = more;
    let transport = parse_transport(&packet[header_len..], Family::Ipv4, proto, first_frag)?;
    Ok(Parsed::Packet(IpPacket {
        family: Family::Ipv4,
        src,
        dst,
        hop_limit: packet[8],
        proto,
        transport,
        first_fragment: first_frag.then_some(key),
        fragmented: first_frag,
    }))
}

/// Rank of an extension header in RFC 8200 §4.1 order (VERDICTS §2b.3), or `None` when `nh`
/// is not an extension header the walk follows.
fn ext_rank(nh: u8, seen_dest: bool, last_rank: i8) -> Option<i8> {
    match nh {
        EXT_HOP_BY_HOP => Some(0),
        EXT_ROUTING => Some(2),
        EXT_FRAGMENT => Some(3),
        EXT_AH => Some(4),
        EXT_DEST_OPTS if !seen_dest && last_rank < 2 => Some(1),
        EXT_DEST_OPTS => Some(6),
        _ => None,
    }
}

/// §2b. `l3` runs from the IPv6 header to the end of the frame.
fn parse_ipv6(l3: &[u8]) -> Result<Parsed, Reason> {
    let (header, after) = l3.split_first_chunk::<40>().ok_or(Reason::Ipv6Truncated)?;
    if header[0] >> 4 != 6 {
        return Err(Reason::Ipv6Header);
    }
    let payload_len = usize::from(be16(header, 4));
    // The IPv6 payload: from the end of the fixed header to l3_end.
    let payload = after.get(..payload_len).ok_or(Reason::Ipv6Truncated)?;
    let hop_limit = header[7];
    let src = IpAddr::V6(Ipv6Addr::from(
        <[u8; 16]>::try_from(&header[8..24]).expect("16 bytes"),
    ));
    let dst = IpAddr::V6(Ipv6Addr::from(
        <[u8; 16]>::try_from(&header[24..40]).expect("16 bytes"),
    ));

    let mut nh = header[6];
    let mut rest = payload;
    let mut last_rank: i8 = -1;
    let mut seen_dest = false;
    let mut first_frag: Option<FragmentKey> = None;
    let mut fragmented = false;
    let mut count = 0;
    while let Some(rank) = ext_rank(nh, seen_dest, last_rank) {
        if count == IPV6_EXT_MAX {
            return Err(Reason::Ipv6ExtHeader);
        }
        if rank <= last_rank {
            return Err(Reason::Ipv6ExtHeader);
        }
        last_rank = rank;
        seen_dest |= nh == EXT_DEST_OPTS;

        let runs_past = if first_frag.is_some() {
            Reason::FragmentTiny
        } else {
            Reason::Ipv6ExtHeader
        };
        let header_len = match nh {
            EXT_FRAGMENT => 8,
            _ => {
                let len_byte = *rest.get(1).ok_or(runs_past)?;
                if nh == EXT_AH {
                    (usize::from(len_byte) + 2) * 4
                } else {
                    (usize::from(len_byte) + 1) * 8
                }
            }
        };
        let ext = rest.get(..header_len).ok_or(runs_past)?;
        // RFC 8200 §4.4: Segments Left ≠ 0, the packet is bound elsewhere (VERDICTS §2b.3).
        if nh == EXT_ROUTING && ext[3] != 0 {
            return Err(Reason::Ipv6ExtHeader);
        }
        if nh == EXT_FRAGMENT {
            let word = be16(ext, 2);
            let offset = word >> 3;
            let more = word & 1 != 0;
            let key = FragmentKey {
                family: Family::Ipv6,
                proto: ext[0],
                id: u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]),
                src,
                dst,
            };
            fragmented = true;
            if offset > 0 {
                return Ok(Parsed::Fragment(NonFirstFragment { key, offset }));
            }
            if more {
                first_frag = Some(key);
            }
        }
        nh = ext[0];
        rest = &rest[header_len..];
        count += 1;
    }
    let transport = parse_transport(rest, Family::Ipv6, nh, first_frag.is_some())?;
    Ok(Parsed::Packet(IpPacket {
        family: Family::Ipv6,
        src,
        dst,
        hop_limit,
        proto: nh,
        transport,
        first_fragment: first_frag,
        fragmented,
    }))
}

/// §4. `l4` runs from the transport header to `l3_end`.
fn parse_transport(
    l4: &[u8],
    family: Family,
    proto: u8,
    first_frag: bool,
) -> Result<Transport, Reason> {
    let short = if first_frag {
        Reason::FragmentTiny
    } else {
        Reason::L4Truncated
    };
    match (proto, family) {
        (PROTO_TCP, _) => {
            let header = l4.get(..20).ok_or(short)?;
            let doff = usize::from(header[12] >> 4);
            if doff < 5 {
                return Err(Reason::TcpHeader);
            }
            if doff * 4 > l4.len() {
                return Err(if first_frag {
                    Reason::FragmentTiny
                } else {
                    Reason::TcpHeader
                });
            }
            Ok(Transport::Tcp {
                sport: be16(header, 0),
                dport: be16(header, 2),
                flags: header[13],
            })
        }
        (PROTO_UDP, _) => {
            let header = l4.get(..8).ok_or(short)?;
            let ulen = usize::from(be16(header, 4));
            if ulen < 8 || (!first_frag && ulen > l4.len()) {
                return Err(Reason::UdpHeader);
            }
            Ok(Transport::Udp {
                sport: be16(header, 0),
                dport: be16(header, 2),
            })
        }
        (PROTO_ICMP, Family::Ipv4) => {
            let header = l4.get(..8).ok_or(short)?;
            Ok(Transport::Icmp {
                ty: header[0],
                code: header[1],
            })
        }
        (PROTO_ICMPV6, Family::Ipv6) => {
            let header = l4.get(..8).ok_or(short)?;
            Ok(Transport::Icmpv6 {
                ty: header[0],
                code: header[1],
            })
        }
        _ => Ok(Transport::Other),
    }
}
