//! VERDICTS.md §1: Ethernet header, VLAN tags, ethertype dispatch.

use core::ops::ControlFlow::Continue;

use filter_common::{flags, Reason, VLAN_MAX_DEPTH};

use crate::{
    cursor::{be16, Cursor, Front},
    packet::{need, Flow, Settings, Verdict},
    proto::*,
};

/// Where the network header starts, and which one it is.
pub enum Network {
    Ipv4(usize),
    Ipv6(usize),
}

/// Whether an ethertype field holds a VLAN tag's TPID (802.1Q, 802.1ad, the old 0x9100).
#[inline(always)]
pub fn is_vlan(ethertype: u16) -> bool {
    matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ1)
}

/// The ethertype (or TPID) field at `off`.
#[inline(always)]
fn ethertype_at(cur: &Cursor, off: usize) -> Flow<u16> {
    Continue(be16(&need(cur.read::<2>(off))?, 0))
}

/// Parse up to the network header; non-IP frames end here. `front` gets the ethertype
/// read, which for an untagged frame also brings the network header.
#[inline(always)]
pub fn parse(cur: &Cursor, s: &Settings, front: &mut Front) -> Flow<Network> {
    if cur.end() < ETH_HDR_LEN {
        return Verdict::stop(Reason::EthTruncated);
    }
    let mut ethertype = need(front.read_ethertype(cur, ETH_TYPE))?;
    let mut off = ETH_HDR_LEN;
    for _ in 0..VLAN_MAX_DEPTH {
        if !is_vlan(ethertype) {
            break;
        }
        if off + VLAN_HDR_LEN > cur.end() {
            return Verdict::stop(Reason::VlanDepth);
        }
        ethertype = ethertype_at(cur, off + VLAN_TYPE)?;
        off += VLAN_HDR_LEN;
        // The bytes read with the ethertype are not where the tag moved the header.
        front.forget();
    }
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
