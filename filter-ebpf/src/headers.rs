//! The header arithmetic both programs share: the VLAN walk, IPv4 header length and fragment
//! offset, IPv6 extension-header lengths, transport ports. Pure functions over header
//! copies, and one seam for reading packet bytes ([`ReadBytes`]) that the XDP cursor and the
//! TC context both implement.
//!
//! What to *do* with a header stays with each program: the XDP parser turns every anomaly
//! into a reason (VERDICTS.md), the egress recorder simply does not learn the packet.

use aya_ebpf::programs::TcContext;
use filter_common::VLAN_MAX_DEPTH;

use crate::{
    cursor::{be16, Cursor},
    proto::*,
};

/// Copies `N` packet bytes at an offset, or `None` when any of them lies outside what may
/// be read. XDP reads with `bpf_xdp_load_bytes` within the cursor's range, TC with
/// `bpf_skb_load_bytes`; both helpers check the range against the packet themselves.
pub trait ReadBytes {
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
}

impl ReadBytes for Cursor<'_> {
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.read(off)
    }
}

impl ReadBytes for TcContext {
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.load::<[u8; N]>(off).ok()
    }
}

/// Whether an ethertype field holds a VLAN tag's TPID (802.1Q, 802.1ad, the old 0x9100).
#[inline(always)]
pub fn is_vlan(ethertype: u16) -> bool {
    matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ1)
}

/// Follow up to `VLAN_MAX_DEPTH` VLAN tags after the Ethernet header, given the frame's
/// outer `ethertype`: the ethertype found last and the offset after the tags. The result is
/// still a TPID when the frame has more tags than that (the caller decides what that means);
/// `None` when a tag is cut off by the end of what may be read. `on_tag` runs once per tag.
#[inline(always)]
pub fn skip_vlans<R: ReadBytes>(
    r: &R,
    mut ethertype: u16,
    mut on_tag: impl FnMut(),
) -> Option<(u16, usize)> {
    let mut off = ETH_HDR_LEN;
    for _ in 0..VLAN_MAX_DEPTH {
        if !is_vlan(ethertype) {
            break;
        }
        ethertype = be16(&r.bytes::<2>(off + VLAN_TYPE)?, 0);
        off += VLAN_HDR_LEN;
        on_tag();
    }
    Some((ethertype, off))
}

/// The IPv4 header's length in bytes from its version/IHL byte, or `None` unless it is
/// version 4 with an IHL of at least 5 words.
#[inline(always)]
pub fn ipv4_header_len(vihl: u8) -> Option<usize> {
    let ihl = (vihl & IPV4_IHL_MASK) as usize;
    if vihl >> IP_VERSION_SHIFT != IPV4_VERSION || ihl < IPV4_MIN_IHL {
        return None;
    }
    Some(ihl * IPV4_IHL_UNIT)
}

/// The fragment offset (8-byte units) of IPv4's flags/fragment-offset word.
#[inline(always)]
pub fn ipv4_fragment_offset(word: u16) -> u16 {
    word & IPV4_FRAG_OFFSET_MASK
}

/// Whether the first byte of an IPv6 header says version 6.
#[inline(always)]
pub fn is_ipv6(vcf: u8) -> bool {
    vcf >> IP_VERSION_SHIFT == IPV6_VERSION
}

/// The fragment offset (8-byte units) of an IPv6 Fragment header's offset/flags word.
#[inline(always)]
pub fn ipv6_fragment_offset(word: u16) -> u16 {
    word >> FRAG_OFFSET_SHIFT
}

/// Length in bytes of the Hop-by-Hop, Destination Options, Routing (8-octet units, not
/// counting the first) or AH (4-octet units, not counting the first two) header `nh` whose
/// length field holds `units`. The Fragment header has a fixed length, `FRAG_HDR_LEN`.
#[inline(always)]
pub fn extension_len(nh: u8, units: u8) -> usize {
    if nh == IPPROTO_AH {
        (units as usize + AH_LEN_BIAS) * AH_UNIT
    } else {
        (units as usize + 1) * EXT_UNIT
    }
}

/// Source and destination ports of a TCP or UDP header copy (both start with them).
#[inline(always)]
pub fn ports<const N: usize>(h: &[u8; N]) -> (u16, u16) {
    const { assert!(TCP_SOURCE == UDP_SOURCE && TCP_DEST == UDP_DEST && N >= 4) };
    (be16(h, TCP_SOURCE), be16(h, TCP_DEST))
}
