//! VERDICTS.md §1: Ethernet header, VLAN tags, ethertype dispatch.

use core::ops::ControlFlow::Continue;

use filter_common::{flags, Reason};

use crate::{
    cursor::{Cursor, Front},
    headers::{is_vlan, skip_vlans},
    packet::{need, Flow, Settings, Verdict},
    proto::*,
};

/// Where the network header starts, and which one it is.
pub enum Network {
    Ipv4(usize),
    Ipv6(usize),
}

/// Parse up to the network header; non-IP frames end here. `front` gets the ethertype
/// read, which for an untagged frame also brings the network header.
#[inline(always)]
pub fn parse(cur: &Cursor, s: &Settings, front: &mut Front) -> Flow<Network> {
    if cur.end() < ETH_HDR_LEN {
        return Verdict::stop(Reason::EthTruncated);
    }
    let ethertype = need(front.read_ethertype(cur, ETH_TYPE))?;
    // A tag cut off by the end of the frame is as bad as one too many. The bytes read with
    // the ethertype are not where a tag moved the header: `front` forgets them.
    let Some((ethertype, off)) = skip_vlans(cur, ethertype, || front.forget()) else {
        return Verdict::stop(Reason::VlanDepth);
    };
    // Still a tag after VLAN_MAX_DEPTH of them: deeper than we follow.
    if is_vlan(ethertype) {
        return Verdict::stop(Reason::VlanDepth);
    }
    match ethertype {
        ETH_P_IPV4 => Continue(Network::Ipv4(off)),
        ETH_P_IPV6 => Continue(Network::Ipv6(off)),
        ETH_P_ARP if s.has(flags::ESSENTIAL_ARP) => Verdict::stop(Reason::EssentialArp),
        // Anything else, 802.3 length values and ARP without the essential included.
        _ if s.has(flags::UNKNOWN_ETHERTYPE_PASS) => Verdict::stop(Reason::EthertypePass),
        _ => Verdict::stop(Reason::UnknownEthertype),
    }
}
