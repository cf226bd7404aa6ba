//! VERDICTS.md §3 and the last paragraph: non-first fragments are judged without reading
//! their payload, following their first fragment when it passed recently.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use filter_common::{flags, FragKey, Reason, FRAG_TIMEOUT_NS};

use crate::{
    maps::{FRAGS, FRAG_KEY_SCRATCH},
    packet::{copy_address, Packet, Settings, Verdict, FAMILY_V4, FAMILY_V6},
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

/// Run `f` with the reassembly identity of the datagram `pkt` belongs to, or return `None`
/// (the per-CPU scratch slot is always there; the check is for the verifier).
///
/// The key is assembled in a per-CPU map value, not on the stack: verifiers before 6.6
/// record a 4-byte store of a bounded scalar at an 8-aligned stack offset as a register
/// spill and refuse a second narrow store into that slot ("attempt to corrupt spilled
/// pointer on stack") unless the loader has CAP_PERFMON. The struct literal this replaces
/// compiled to such stores, so on 6.1 the program did not load with CAP_BPF + CAP_NET_ADMIN
/// only (found by the kernel matrix). A map value pointer is a valid key argument.
#[inline(always)]
fn with_key<R>(pkt: &Packet, f: impl FnOnce(&FragKey) -> R) -> Option<R> {
    let key = FRAG_KEY_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: a per-CPU map value of FragKey size, ours for the duration of this program run.
    unsafe {
        (*key).family = pkt.family;
        (*key).proto = pkt.frag_proto;
        (*key)._pad = [0; 2];
        (*key).id = pkt.frag_id;
        copy_address(core::ptr::addr_of_mut!((*key).src), &pkt.src);
        copy_address(core::ptr::addr_of_mut!((*key).dst), &pkt.dst);
        Some(f(&*key))
    }
}

/// Judge a non-first fragment (`pkt.frag_*` filled in, offset in 8-octet units).
#[inline(always)]
pub fn non_first(s: &Settings, pkt: &Packet, frag_offset: u16) -> Verdict {
    if u32::from(frag_offset) * FRAG_OFFSET_UNIT < min_l4_len(pkt.family, pkt.frag_proto) {
        return Verdict::of(Reason::FragmentTiny);
    }
    if s.has(flags::FRAGMENT_TRACK) {
        if let Some(seen) = with_key(pkt, |key| FRAGS.get_ptr(key)).flatten() {
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
    let _ = with_key(pkt, |key| FRAGS.insert(key, now, 0));
}
