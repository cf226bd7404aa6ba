//! VERDICTS.md §2a: the IPv4 header.

use core::ops::ControlFlow::{Break, Continue};

use filter_common::{flags, Reason};

use crate::{
    cursor::{be16, Cursor, Front},
    frags,
    headers::{ipv4_fragment_offset, ipv4_header_len},
    packet::{need, Flow, Packet, Settings, Verdict, FAMILY_V4, L3},
    proto::*,
};

/// Validate the IPv4 header at `l3` (`front` may hold it already). Narrows `cur` to the IP
/// packet. Non-first fragments end here (§3).
#[inline(always)]
pub fn parse(
    cur: &mut Cursor,
    l3: usize,
    front: &mut Front,
    s: &Settings,
    pkt: &mut Packet,
) -> Flow<L3> {
    pkt.family = FAMILY_V4;
    if l3 + IPV4_HDR_LEN > cur.end() {
        return Verdict::stop(Reason::Ipv4Truncated);
    }
    // The fixed header; options (if any) are skipped, never read.
    need(front.network::<IPV4_HDR_LEN, IPV4_HEAD>(cur, l3))?;
    let h = need(front.view::<0, IPV4_HDR_LEN>())?;
    let Some(hdr_len) = ipv4_header_len(h[IPV4_VIHL]) else {
        return Verdict::stop(Reason::Ipv4Header);
    };
    if l3 + hdr_len > cur.end() {
        return Verdict::stop(Reason::Ipv4Truncated);
    }
    let tot_len = be16(h, IPV4_TOT_LEN) as usize;
    if tot_len < hdr_len {
        return Verdict::stop(Reason::Ipv4Header);
    }
    if l3 + tot_len > cur.end() {
        return Verdict::stop(Reason::Ipv4Truncated);
    }
    let end = l3 + tot_len;
    cur.limit_to(end);

    let word = be16(h, IPV4_FRAGS);
    if word & IPV4_FLAG_RESERVED != 0 {
        return Verdict::stop(Reason::Ipv4Header);
    }
    if hdr_len > IPV4_HDR_LEN && !s.has(flags::IPV4_OPTIONS_ALLOW) {
        return Verdict::stop(Reason::Ipv4Options);
    }

    let proto = h[IPV4_PROTO];
    pkt.proto = proto;
    // IPv4 addresses fill the first 4 bytes of the 16-byte fields.
    let src = need(front.words::<IPV4_SRC, 1>())?;
    let dst = need(front.words::<IPV4_DST, 1>())?;
    pkt.set_addresses(src, dst);

    let frag_offset = ipv4_fragment_offset(word);
    let more = word & IPV4_FLAG_MF != 0;
    if frag_offset > 0 || more {
        pkt.frag_proto = proto;
        pkt.frag_id = u32::from(be16(h, IPV4_ID));
    }
    if frag_offset > 0 {
        return Break(frags::non_first(s, pkt, frag_offset));
    }
    pkt.first_frag = u8::from(more);
    Continue(L3 {
        l4: l3 + hdr_len,
        end,
        proto,
        // Without options, L4 starts right after the header in `front`.
        l4_head: if hdr_len == IPV4_HDR_LEN {
            front.view::<IPV4_HDR_LEN, L4_HEAD>().copied()
        } else {
            None
        },
    })
}
