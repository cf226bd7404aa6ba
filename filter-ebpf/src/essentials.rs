//! VERDICTS.md §5: traffic that keeps the node working passes before any rule. An ICMP
//! error's inner header is never read.

use core::ops::ControlFlow::Continue;

use filter_common::{flags, Reason, ServiceKind};

use crate::{
    packet::{Flow, Packet, Service, Settings, Verdict},
    proto::*,
};

#[inline(always)]
pub fn check(s: &Settings, pkt: &Packet, svc: &Service) -> Flow<()> {
    // Keys of ICMP kinds are the message type, always < 256.
    let ty = svc.key as u8;
    match svc.kind() {
        ServiceKind::Icmp if s.has(flags::ESSENTIAL_ICMP_ERRORS) => match ty {
            ICMP_DEST_UNREACH if svc.icmp_code == ICMP_FRAG_NEEDED => {
                Verdict::stop(Reason::EssentialPmtu)
            }
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB => {
                Verdict::stop(Reason::EssentialIcmpError)
            }
            _ => Continue(()),
        },
        ServiceKind::Icmpv6 => match ty {
            ICMPV6_PKT_TOOBIG if s.has(flags::ESSENTIAL_ICMP_ERRORS) => {
                Verdict::stop(Reason::EssentialPmtu)
            }
            ICMPV6_DEST_UNREACH | ICMPV6_TIME_EXCEED | ICMPV6_PARAMPROB
                if s.has(flags::ESSENTIAL_ICMP_ERRORS) =>
            {
                Verdict::stop(Reason::EssentialIcmpError)
            }
            ICMPV6_ND_FIRST..=ICMPV6_ND_LAST if s.has(flags::ESSENTIAL_ND) => {
                // Off-link senders cannot produce hop limit 255 (RFC 4861 §6.1); ND is never
                // fragmented (RFC 6980).
                if pkt.fragmented != 0 || pkt.hop_limit != ND_HOP_LIMIT {
                    Verdict::stop(Reason::NdInvalid)
                } else {
                    Verdict::stop(Reason::EssentialNd)
                }
            }
            _ => Continue(()),
        },
        _ => Continue(()),
    }
}
