//! VERDICTS.md §2b: the IPv6 header and its extension-header chain.

use core::{
    mem::MaybeUninit,
    ops::ControlFlow::{self, Break, Continue},
};

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};

use filter_common::Reason;

use crate::{
    cursor::{be16, be32, Cursor, Front},
    frags,
    headers::{extension_len, ipv6_fragment_offset, is_ipv6},
    packet::{need, zeroed, Flow, Packet, Settings, Verdict, Words, FAMILY_V6, L3},
    proto::*,
};

#[inline(always)]
fn is_extension(nh: u32) -> bool {
    nh <= u8::MAX as u32
        && matches!(
            nh as u8,
            IPPROTO_HOPOPTS | IPPROTO_DSTOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH
        )
}

/// Position of an extension header in the RFC 8200 §4.1 order; a header must rank above the
/// one before it. Destination Options rank twice: before Routing (1) or before the upper
/// layer (6).
#[inline(always)]
fn rank(nh: u8, seen_dest: bool, last_rank: i32) -> i32 {
    match nh {
        IPPROTO_HOPOPTS => 0,
        IPPROTO_ROUTING => 2,
        IPPROTO_FRAGMENT => 3,
        IPPROTO_AH => 4,
        _ if !seen_dest && last_rank < 2 => 1,
        _ => 6,
    }
}

/// Where the extension-header walk stands. It crosses into the global function
/// [`nodegate_ipv6_ext`]: plain integers, no implicit padding.
#[repr(C, align(8))]
pub struct ExtWalk {
    /// Offset of the header `nh` names.
    pub off: u32,
    /// End of the IP packet.
    pub end: u32,
    /// Type of the header at `off`.
    pub nh: u32,
    /// RFC 8200 §4.1 rank of the previous header; -1 before the first.
    pub last_rank: i32,
    /// 1 once a Destination Options header was seen.
    pub seen_dest: u32,
    /// Fragment header facts (see `Packet`), and the offset of a non-first fragment.
    pub first_frag: u32,
    pub fragmented: u32,
    pub frag_proto: u32,
    pub frag_id: u32,
    pub frag_offset: u32,
}
const _: () = assert!(core::mem::size_of::<ExtWalk>() == 40);
// SAFETY: integers only; align(8), size 40.
unsafe impl Words for ExtWalk {}

/// [`nodegate_ipv6_ext`] consumed one header; `off` and `nh` name the next.
const STEP_NEXT: u32 = u32::MAX;
/// [`nodegate_ipv6_ext`] found a non-first fragment (§3); `frag_*` are set.
const STEP_NON_FIRST: u32 = u32::MAX - 1;

/// Validate the IPv6 header at `l3` (`front` may hold it already) and walk its extension
/// headers. Narrows `cur` to the IP packet. Non-first fragments end here (§3).
#[inline(always)]
pub fn parse(
    cur: &mut Cursor,
    l3: usize,
    front: &mut Front,
    s: &Settings,
    pkt: &mut Packet,
) -> Flow<L3> {
    pkt.family = FAMILY_V6;
    if l3 + IPV6_HDR_LEN > cur.end() {
        return Verdict::stop(Reason::Ipv6Truncated);
    }
    need(front.network::<IPV6_HDR_LEN, IPV6_HEAD>(cur, l3))?;
    let h = need(front.view::<0, IPV6_HDR_LEN>())?;
    if !is_ipv6(h[IPV6_VCF]) {
        return Verdict::stop(Reason::Ipv6Header);
    }
    let payload_len = be16(h, IPV6_PAYLOAD_LEN) as usize;
    let end = l3 + IPV6_HDR_LEN + payload_len;
    if end > cur.end() {
        return Verdict::stop(Reason::Ipv6Truncated);
    }
    cur.limit_to(end);
    pkt.hop_limit = h[IPV6_HOP_LIMIT];
    let src = need(front.words::<IPV6_SRC, 4>())?;
    let dst = need(front.words::<IPV6_DST, 4>())?;
    pkt.set_addresses(src, dst);
    let nh = h[IPV6_NEXT_HDR];
    pkt.proto = nh;

    // Each header is one call of a global function, which the verifier checks once: walked
    // inline, every distinct chain (type order × lengths) would be verified separately.
    let mut slot = MaybeUninit::uninit();
    let w = zeroed::<ExtWalk>(&mut slot);
    w.off = (l3 + IPV6_HDR_LEN) as u32;
    w.end = end as u32;
    w.nh = u32::from(nh);
    w.last_rank = -1;
    // One block per header, unrolled by hand (unroll.rs).
    per_extension_header! {
        if is_extension(w.nh) {
            ext_header(cur, s, pkt, w)?;
        }
    }
    // Still an extension header after IPV6_EXT_MAX of them.
    if is_extension(w.nh) {
        return Verdict::stop(Reason::Ipv6ExtHeader);
    }
    let l4 = w.off as usize;
    // The walk never leaves the packet; the verifier cannot know that.
    if l4 > end {
        return Verdict::stop(Reason::Internal);
    }
    pkt.first_frag = w.first_frag as u8;
    pkt.fragmented = w.fragmented as u8;
    pkt.frag_proto = w.frag_proto as u8;
    pkt.frag_id = w.frag_id;
    Continue(L3 {
        l4,
        end,
        proto: w.nh as u8,
        // No extension header: L4 starts right after the header in `front`.
        l4_head: if l4 == l3 + IPV6_HDR_LEN {
            front.view::<IPV6_HDR_LEN, L4_HEAD>().copied()
        } else {
            None
        },
    })
}

/// Walk over the extension header at `w.off` (a call of the global step function); a
/// non-first fragment or a broken chain ends the evaluation.
#[inline(always)]
fn ext_header(cur: &Cursor, s: &Settings, pkt: &mut Packet, w: &mut ExtWalk) -> Flow<()> {
    let step = nodegate_ipv6_ext(cur.raw_ctx(), w);
    // The header the walk stopped at (samples report it).
    pkt.proto = w.nh as u8;
    match step {
        STEP_NEXT => Continue(()),
        STEP_NON_FIRST => {
            pkt.fragmented = 1;
            pkt.frag_proto = w.frag_proto as u8;
            pkt.frag_id = w.frag_id;
            pkt.proto = pkt.frag_proto;
            Break(frags::non_first(s, pkt, w.frag_offset as u16))
        }
        code => Verdict::stop(Reason::from_u32(code).unwrap_or(Reason::Internal)),
    }
}

/// One step of the §2b.3 walk: check and consume the extension header at `w.off`.
/// Returns [`STEP_NEXT`], [`STEP_NON_FIRST`], or the code of the reason that ends the
/// evaluation.
///
/// NB: a global BPF function (`#[no_mangle]`, `extern "C"`, never inlined): the verifier
/// checks it once against its BTF argument types. `w` may be null as far as it knows.
#[no_mangle]
#[inline(never)]
pub extern "C" fn nodegate_ipv6_ext(ctx: *mut xdp_md, w: *mut ExtWalk) -> u32 {
    let ctx = XdpContext::new(ctx);
    // SAFETY: the only caller passes its own stack ExtWalk (non-null, exclusive).
    let Some(w) = (unsafe { w.as_mut() }) else {
        return Reason::Internal as u32;
    };
    let cur = Cursor::within(&ctx, w.end as usize);
    match step(&cur, w) {
        Continue(step) | Break(step) => step,
    }
}

#[inline(always)]
fn step(cur: &Cursor, w: &mut ExtWalk) -> ControlFlow<u32, u32> {
    let stop = |r: Reason| Break(r as u32);
    let internal = || Break(Reason::Internal as u32);
    if !is_extension(w.nh) {
        return internal();
    }
    let nh = w.nh as u8;
    let r = rank(nh, w.seen_dest != 0, w.last_rank);
    if r <= w.last_rank {
        return stop(Reason::Ipv6ExtHeader);
    }
    w.last_rank = r;
    if nh == IPPROTO_DSTOPTS {
        w.seen_dest = 1;
    }
    let (off, end) = (w.off as usize, w.end as usize);
    // A chain cut short: RFC 7112 wants a first fragment to carry all of it.
    let short = if w.first_frag != 0 {
        Reason::FragmentTiny
    } else {
        Reason::Ipv6ExtHeader
    };
    let (next, hdr_len) = if nh == IPPROTO_FRAGMENT {
        if off + FRAG_HDR_LEN > end {
            return stop(short);
        }
        let Some(f) = cur.read::<FRAG_HDR_LEN>(off) else {
            return internal();
        };
        let next = f[FRAG_NEXT_HDR];
        let word = be16(&f, FRAG_OFF);
        w.fragmented = 1;
        w.frag_proto = u32::from(next);
        w.frag_id = be32(&f, FRAG_ID);
        let frag_offset = ipv6_fragment_offset(word);
        if frag_offset > 0 {
            w.frag_offset = u32::from(frag_offset);
            return Break(STEP_NON_FIRST);
        }
        // Offset 0 without M is an atomic fragment (RFC 6946): judged as unfragmented.
        w.first_frag = u32::from(word & FRAG_FLAG_M != 0);
        (next, FRAG_HDR_LEN)
    } else {
        if off + EXT_MIN_LEN > end {
            return stop(short);
        }
        let Some(e) = cur.read::<EXT_MIN_LEN>(off) else {
            return internal();
        };
        let hdr_len = extension_len(nh, e[EXT_LEN]);
        if off + hdr_len > end {
            return stop(short);
        }
        // RFC 8200 §4.4: with Segments Left ≠ 0 this node is not the packet's final
        // destination (it would forward it on, or discard it for a type it does not run):
        // never passed on a rule meant for this node.
        if nh == IPPROTO_ROUTING {
            let Some(r) = cur.read::<RH_FIXED_LEN>(off) else {
                return internal();
            };
            if r[RH_SEGMENTS_LEFT] != 0 {
                return stop(Reason::Ipv6ExtHeader);
            }
        }
        (e[EXT_NEXT_HDR], hdr_len)
    };
    w.nh = u32::from(next);
    w.off = (off + hdr_len) as u32;
    Continue(STEP_NEXT)
}
