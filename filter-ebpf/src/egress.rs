//! `nodegate_egress`: the TC egress (TCX) program behind stateful return traffic
//! (VERDICTS.md §7). It records every flow the node opens — TCP and UDP 5-tuples, ICMP and
//! ICMPv6 echo requests by identifier — in `NG_FLOWS`, keyed in *inbound orientation* (the
//! tuple the replies carry), with the time of the node's last packet on it. The XDP program
//! looks replies up there.
//!
//! A pure recorder: it never drops, never logs, never modifies the packet, and always
//! returns `TC_ACT_UNSPEC` (= `TCX_NEXT`): the packet goes on to whatever else is attached,
//! exactly as if nodegate were not there.
//!
//! Scope (documented in VERDICTS.md §7): Ethernet with up to `VLAN_MAX_DEPTH` 802.1Q/802.1ad
//! tags in the frame (on egress the kernel usually carries a tag in skb metadata instead,
//! which looks untagged here: both work); IPv4 with or without options; IPv6 with up to
//! `IPV6_EXT_MAX` extension headers (Hop-by-Hop, Destination Options, Routing, Fragment, AH)
//! before the transport header; non-first fragments of either family are skipped (they
//! carry no ports). TCP packets carrying SYN+ACK or RST never create an entry: a SYN+ACK
//! answers a connection the remote opened, a RST refuses one.
//!
//! NB: packet bytes are copied with `bpf_skb_load_bytes` (offsets as numbers, range checked
//! by the helper) so the program loads with CAP_BPF + CAP_NET_ADMIN, like the XDP program.

use core::{
    mem::{align_of, size_of, MaybeUninit},
    ptr::write_volatile,
};

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_UNSPEC},
    helpers::bpf_ktime_get_ns,
    macros::classifier,
    programs::TcContext,
};
use filter_common::{flow_flags, flow_stat, FlowKey, FlowState};

use crate::{
    cursor::be16,
    headers::{
        extension_len, ipv4_fragment_offset, ipv4_header_len, ipv6_fragment_offset, is_ipv6, ports,
        skip_vlans, ReadBytes,
    },
    maps::FLOWS,
    packet::{zeroed, Words, FAMILY_V4, FAMILY_V6},
    proto::*,
    verdict::flow_stats_add,
};

/// `BPF_NOEXIST`: insert only when the key is absent, so two CPUs racing to create the same
/// flow count one insert (the eviction estimate relies on it).
const BPF_NOEXIST: u64 = 1;

#[classifier]
pub fn nodegate_egress(ctx: TcContext) -> i32 {
    record(&ctx);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn record(ctx: &TcContext) -> Option<()> {
    let (ethertype, l3) = network(ctx)?;
    let mut slot = MaybeUninit::<[u64; KEY_WORDS]>::uninit();
    let key = zeroed_key(&mut slot);
    let l4 = match ethertype {
        ETH_P_IPV4 => ipv4(ctx, l3, key)?,
        ETH_P_IPV6 => ipv6(ctx, l3, key)?,
        _ => return None,
    };
    let mut tcp_flags = 0u8;
    match key.proto {
        IPPROTO_TCP => {
            let t = ctx.bytes::<TCP_PARSED_LEN>(l4)?;
            (key.local_port, key.remote_port) = ports(&t);
            tcp_flags = t[TCP_FLAGS];
        }
        IPPROTO_UDP => {
            let u = ctx.bytes::<UDP_HDR_LEN>(l4)?;
            (key.local_port, key.remote_port) = ports(&u);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            // ICMP in the wrong family is no echo.
            if (key.proto == IPPROTO_ICMP) != (key.family == FAMILY_V4) {
                return None;
            }
            let i = ctx.bytes::<ICMP_HDR_LEN>(l4)?;
            let request = if key.family == FAMILY_V4 {
                ICMP_ECHO_REQUEST
            } else {
                ICMPV6_ECHO_REQUEST
            };
            if i[ICMP_TYPE] != request {
                return None;
            }
            key.remote_port = be16(&i, ICMP_ECHO_ID);
        }
        _ => return None,
    }
    // SAFETY: no arguments; reads the monotonic clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let ends = tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) != 0;
    let opens = tcp_flags & TCP_FLAG_SYN != 0 && tcp_flags & TCP_FLAG_ACK == 0;
    if let Some(state) = FLOWS.get_ptr_mut(*key) {
        // SAFETY: a map value pointer; concurrent writers only race on a timestamp or flag.
        unsafe {
            (*state).last_seen_ns = now;
            if opens {
                // A new connection on a reused tuple starts a fresh life.
                (*state).flags &= !flow_flags::CLOSING;
            } else if ends && (*state).flags & flow_flags::CLOSING == 0 {
                (*state).flags |= flow_flags::CLOSING;
                flow_stats_add(flow_stat::CLOSING);
            }
        }
        flow_stats_add(flow_stat::REFRESHES);
        return Some(());
    }
    if tcp_flags & TCP_FLAG_RST != 0 || (tcp_flags & TCP_FLAG_SYN != 0 && !opens) {
        return None;
    }
    let state = FlowState {
        last_seen_ns: now,
        flags: if ends { flow_flags::CLOSING } else { 0 },
        _pad: 0,
    };
    if FLOWS.insert(*key, state, BPF_NOEXIST).is_ok() {
        flow_stats_add(flow_stat::INSERTS);
    }
    Some(())
}

/// [`FlowKey`] in 8-byte words.
const KEY_WORDS: usize = size_of::<FlowKey>() / 8;
const _: () = assert!(size_of::<FlowKey>().is_multiple_of(8) && align_of::<FlowKey>() <= 8);

/// An all-zero flow key in `slot`.
///
/// NB: as in `packet::zeroed`: LLVM folds zero stores into a `memset` call that bpf-linker
/// does not expand, and whose byte loop is variable-offset stack arithmetic the verifier
/// refuses without CAP_PERFMON. Volatile word stores cannot be folded.
#[inline(always)]
fn zeroed_key(slot: &mut MaybeUninit<[u64; KEY_WORDS]>) -> &mut FlowKey {
    let words = slot.as_mut_ptr().cast::<u64>();
    for i in 0..KEY_WORDS {
        // SAFETY: in bounds of `slot`, 8-aligned.
        unsafe { write_volatile(words.add(i), 0) };
    }
    // SAFETY: all bytes are zero, a valid FlowKey; the alignment of [u64; N] suffices.
    unsafe { &mut *words.cast::<FlowKey>() }
}

/// The ethertype after any VLAN tags in the frame, and where the network header starts.
#[inline(always)]
fn network(ctx: &TcContext) -> Option<(u16, usize)> {
    // More tags than VLAN_MAX_DEPTH leave a TPID here, which `record` does not learn.
    skip_vlans(ctx, be16(&ctx.bytes::<2>(ETH_TYPE)?, 0), || {})
}

/// Family, protocol and addresses of an outgoing IPv4 packet at `l3` into `key` (swapped:
/// the destination is the remote); the transport header's offset.
#[inline(always)]
fn ipv4(ctx: &TcContext, l3: usize, key: &mut FlowKey) -> Option<usize> {
    let h = ctx.bytes::<IPV4_HDR_LEN>(l3)?;
    let hdr_len = ipv4_header_len(h[IPV4_VIHL])?;
    // A non-first fragment carries no transport header.
    if ipv4_fragment_offset(be16(&h, IPV4_FRAGS)) != 0 {
        return None;
    }
    key.family = FAMILY_V4;
    key.proto = h[IPV4_PROTO];
    key.local[..4].copy_from_slice(&h[IPV4_SRC..IPV4_SRC + 4]);
    key.remote[..4].copy_from_slice(&h[IPV4_DST..IPV4_DST + 4]);
    Some(l3 + hdr_len)
}

/// The same for IPv6, past its extension headers.
#[inline(always)]
fn ipv6(ctx: &TcContext, l3: usize, key: &mut FlowKey) -> Option<usize> {
    let h = ctx.bytes::<IPV6_HDR_LEN>(l3)?;
    if !is_ipv6(h[IPV6_VCF]) {
        return None;
    }
    key.family = FAMILY_V6;
    key.local.copy_from_slice(&h[IPV6_SRC..IPV6_SRC + 16]);
    key.remote.copy_from_slice(&h[IPV6_DST..IPV6_DST + 16]);
    let (proto, l4) = skip_extension_headers(ctx, h[IPV6_NEXT_HDR], l3 + IPV6_HDR_LEN)?;
    key.proto = proto;
    Some(l4)
}

/// Walk the node's own extension headers (it wrote them, so unlike the XDP side there is no
/// evasion to judge: a chain that is too long or runs past the packet is simply not
/// learned). Returns the transport protocol and its offset; `None` for a non-first fragment.
#[inline(always)]
fn skip_extension_headers(ctx: &TcContext, next: u8, off: usize) -> Option<(u8, usize)> {
    let mut slot = MaybeUninit::uninit();
    let w = zeroed::<EgressWalk>(&mut slot);
    w.off = off as u32;
    w.next = u32::from(next);
    let transport = |w: &EgressWalk| Some((w.next as u8, w.off as usize));
    // One block per header, unrolled by hand (unroll.rs); then one more call, which must
    // find the transport header.
    per_extension_header! {
        match nodegate_egress_ext(ctx.skb.skb, w) {
            EXT_CONSUMED => {}
            EXT_AT_TRANSPORT => return transport(w),
            _ => return None,
        }
    }
    if nodegate_egress_ext(ctx.skb.skb, w) == EXT_AT_TRANSPORT {
        return transport(w);
    }
    None
}

/// Where the egress extension-header walk stands. It crosses into the global function
/// [`nodegate_egress_ext`]: plain integers, no implicit padding.
#[repr(C, align(8))]
pub struct EgressWalk {
    /// Offset of the header `next` names.
    pub off: u32,
    /// Its type (an IP protocol number).
    pub next: u32,
}
const _: () = assert!(size_of::<EgressWalk>() == 8);
// SAFETY: integers only; align(8), size 8.
unsafe impl Words for EgressWalk {}

/// [`nodegate_egress_ext`] consumed one extension header.
const EXT_CONSUMED: u32 = 0;
/// `next` is not an extension header: the transport header is at `off`.
const EXT_AT_TRANSPORT: u32 = 1;
/// A non-first fragment, or a header that cannot be read: nothing to learn.
const EXT_GIVE_UP: u32 = 2;

/// One step of the egress walk over the extension header at `w.off`.
///
/// NB: a global BPF function, like `ipv6::nodegate_ipv6_ext`: the verifier checks it once.
/// Inlined, each header's four outcomes multiplied through the loop, and without
/// CAP_PERFMON the speculative-path checks pushed that past the verifier's 8,192 pending
/// branches.
#[no_mangle]
#[inline(never)]
pub extern "C" fn nodegate_egress_ext(skb: *mut __sk_buff, w: *mut EgressWalk) -> u32 {
    let ctx = TcContext::new(skb);
    // SAFETY: the only caller passes its own stack EgressWalk (non-null, exclusive).
    let Some(w) = (unsafe { w.as_mut() }) else {
        return EXT_GIVE_UP;
    };
    let off = w.off as usize;
    let nh = w.next as u8;
    let (next, len) = match nh {
        IPPROTO_HOPOPTS | IPPROTO_DSTOPTS | IPPROTO_ROUTING | IPPROTO_AH => {
            let Some(e) = ctx.bytes::<EXT_MIN_LEN>(off) else {
                return EXT_GIVE_UP;
            };
            (e[EXT_NEXT_HDR], extension_len(nh, e[EXT_LEN]))
        }
        IPPROTO_FRAGMENT => {
            let Some(f) = ctx.bytes::<FRAG_HDR_LEN>(off) else {
                return EXT_GIVE_UP;
            };
            if ipv6_fragment_offset(be16(&f, FRAG_OFF)) != 0 {
                return EXT_GIVE_UP;
            }
            (f[FRAG_NEXT_HDR], FRAG_HDR_LEN)
        }
        _ => return EXT_AT_TRANSPORT,
    };
    w.next = u32::from(next);
    w.off = (off + len) as u32;
    EXT_CONSUMED
}
