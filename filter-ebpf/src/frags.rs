//! VERDICTS.md §3 and the last paragraph: non-first fragments are judged without reading
//! their payload, following their first fragment when it passed recently.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use filter_common::{flags, FragKey, Reason, FRAG_TIMEOUT_NS};

use crate::{
    maps::FRAGS,
    packet::{Packet, Settings, Verdict, FAMILY_V4, FAMILY_V6},
    proto::*,
};

/// Bytes of L4 header a first fragment must hold for this protocol; a later fragment
/// starting inside them would overlap it (RFC 1858, RFC 3128).
#[inline(always)]
fn min_l4_len(family: u8, proto: u8) -> u32 {
    match proto {
        IPPROTO_TCP => TCP_HDR_LEN as u32,
        IPPROTO_UDP => UDP_HDR_LEN as u32,
        IPPROTO_ICMP if family == FAMILY_V4 => ICMP_HDR_LEN as u32,
        IPPROTO_ICMPV6 if family == FAMILY_V6 => ICMPV6_HDR_LEN as u32,
        _ => 0,
    }
}

/// The reassembly identity of the datagram `pkt` belongs to.
#[inline(always)]
fn key(pkt: &Packet) -> FragKey {
    FragKey {
        family: pkt.family,
        proto: pkt.frag_proto,
        _pad: [0; 2],
        id: pkt.frag_id,
        src: pkt.src,
        dst: pkt.dst,
    }
}

/// Judge a non-first fragment (`pkt.frag_*` filled in, offset in 8-octet units).
#[inline(always)]
pub fn non_first(s: &Settings, pkt: &Packet, frag_offset: u16) -> Verdict {
    if u32::from(frag_offset) * FRAG_OFFSET_UNIT < min_l4_len(pkt.family, pkt.frag_proto) {
        return Verdict::of(Reason::FragmentTiny);
    }
    if s.has(flags::FRAGMENT_TRACK) {
        if let Some(seen) = FRAGS.get_ptr(key(pkt)) {
            // SAFETY: a u64 map value; a concurrent update can only replace it whole.
            let seen = unsafe { *seen };
            // NB: another CPU may have stamped it a moment "after" our clock read.
            // SAFETY: no arguments; reads the monotonic clock.
            let now = unsafe { bpf_ktime_get_ns() };
            if now.saturating_sub(seen) < FRAG_TIMEOUT_NS {
                return Verdict::of(Reason::FragmentTracked);
            }
        }
    }
    Verdict::of(Reason::FragmentUntracked)
}

/// A first fragment passed (on its own merits, whatever the mode): let the rest follow.
#[inline(always)]
pub fn remember(pkt: &Packet) {
    // SAFETY: no arguments; reads the monotonic clock.
    let now = unsafe { bpf_ktime_get_ns() };
    // A full LRU map evicts the oldest entry; nothing useful to do on error.
    let _ = FRAGS.insert(key(pkt), now, 0);
}
