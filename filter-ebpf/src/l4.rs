//! VERDICTS.md §4: the transport header, reduced to the service (kind, key) the rule tables
//! are indexed by.

use core::ops::ControlFlow::Continue;

use filter_common::{Reason, ServiceKind};

use crate::{
    cursor::{be16, prefix, Cursor},
    headers::ports,
    packet::{need, Flow, Packet, Service, Verdict, FAMILY_V4, FAMILY_V6, L3},
    proto::*,
};

/// The first `N` bytes of the transport header: from the copy the IP header's read brought
/// along when there is one, else read now. Callers have checked that `N` bytes are there.
#[inline(always)]
fn transport_head<const N: usize>(cur: &Cursor, l3: &L3) -> Flow<[u8; N]> {
    Continue(match &l3.l4_head {
        Some(b) => prefix(b),
        None => need(cur.read_by_helper(l3.l4))?,
    })
}

/// Identifier of an echo reply whose whole ICMP header is in the packet (`avail` bytes).
#[inline(always)]
fn echo_id(cur: &Cursor, l3: &L3, avail: usize) -> Flow<u16> {
    if avail < ICMP_HDR_LEN {
        return Continue(0);
    }
    let h = transport_head::<ICMP_HDR_LEN>(cur, l3)?;
    Continue(be16(&h, ICMP_ECHO_ID))
}

#[inline(always)]
pub fn parse(cur: &Cursor, l3: &L3, pkt: &mut Packet) -> Flow<Service> {
    let l4 = l3.l4;
    // Both parsers guarantee l4 <= end.
    let avail = l3.end - l4;
    // A first fragment must hold the whole L4 header (RFC 1858, RFC 7112).
    let short = if pkt.is_first_frag() {
        Reason::FragmentTiny
    } else {
        Reason::L4Truncated
    };
    let mut svc = Service {
        kind: ServiceKind::Other as u32,
        key: u32::from(l3.proto),
        ..Service::NONE
    };
    match l3.proto {
        IPPROTO_TCP => {
            if avail < TCP_HDR_LEN {
                return Verdict::stop(short);
            }
            // Ports through the flags byte; options are never read.
            let t = transport_head::<TCP_PARSED_LEN>(cur, l3)?;
            let doff = (t[TCP_DOFF] >> TCP_DOFF_SHIFT) as usize;
            if doff < TCP_MIN_DOFF {
                return Verdict::stop(Reason::TcpHeader);
            }
            if doff * TCP_DOFF_UNIT > avail {
                return Verdict::stop(if pkt.is_first_frag() {
                    Reason::FragmentTiny
                } else {
                    Reason::TcpHeader
                });
            }
            (pkt.sport, pkt.dport) = ports(&t);
            svc.kind = ServiceKind::Tcp as u32;
            svc.key = u32::from(pkt.dport);
            svc.tcp_flags = t[TCP_FLAGS];
        }
        IPPROTO_UDP => {
            if avail < UDP_HDR_LEN {
                return Verdict::stop(short);
            }
            let u = transport_head::<UDP_HDR_LEN>(cur, l3)?;
            let ulen = be16(&u, UDP_LEN) as usize;
            // A first fragment's UDP length covers the whole datagram, not this fragment.
            if ulen < UDP_HDR_LEN || (!pkt.is_first_frag() && ulen > avail) {
                return Verdict::stop(Reason::UdpHeader);
            }
            (pkt.sport, pkt.dport) = ports(&u);
            svc.kind = ServiceKind::Udp as u32;
            svc.key = u32::from(pkt.dport);
        }
        IPPROTO_ICMP if pkt.family == FAMILY_V4 => {
            if avail < ICMP_HDR_LEN {
                return Verdict::stop(short);
            }
            let i = transport_head::<ICMP_PARSED_LEN>(cur, l3)?;
            pkt.dport = u16::from(i[ICMP_TYPE]);
            svc.kind = ServiceKind::Icmp as u32;
            svc.key = u32::from(i[ICMP_TYPE]);
            svc.icmp_code = i[ICMP_CODE];
            if i[ICMP_TYPE] == ICMP_ECHO_REPLY {
                svc.echo_id = echo_id(cur, l3, avail)?;
            }
        }
        IPPROTO_ICMPV6 if pkt.family == FAMILY_V6 => {
            if avail < ICMPV6_HDR_LEN {
                return Verdict::stop(short);
            }
            let i = transport_head::<ICMP_PARSED_LEN>(cur, l3)?;
            pkt.dport = u16::from(i[ICMPV6_TYPE]);
            svc.kind = ServiceKind::Icmpv6 as u32;
            svc.key = u32::from(i[ICMPV6_TYPE]);
            if i[ICMPV6_TYPE] == ICMPV6_ECHO_REPLY {
                svc.echo_id = echo_id(cur, l3, avail)?;
            }
        }
        // Including ICMP in the wrong family and No Next Header (59): kind other, no ports.
        _ => {}
    }
    Continue(svc)
}
