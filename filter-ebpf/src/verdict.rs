//! VERDICTS.md §6–§8: rules (one LPM lookup, two array lookups, no loop over rules), return
//! traffic, default.

use core::ops::ControlFlow::{Break, Continue};

use aya_ebpf::maps::lpm_trie::Key;
use filter_common::{
    class_cells_index, flags, return_mode, segment_chunk_index, src_v4_data, src_v6_data, Cell,
    CellAction, Reason, ServiceKind, GEN_PREFIX_BITS, MAX_CLASSES, MAX_SEGMENTS, SEGMENT_CHUNK,
};

use crate::{
    maps::{CELLS, SEGMENTS, SRC_V4, SRC_V6},
    packet::{need, Flow, Packet, Service, Settings, Verdict, FAMILY_V4},
    proto::*,
};

/// Full-length lookups: the generation prefix plus every address bit.
const V4_LOOKUP_BITS: u32 = GEN_PREFIX_BITS + u32::BITS;
const V6_LOOKUP_BITS: u32 = GEN_PREFIX_BITS + u128::BITS;

/// Source class of `pkt.src` in generation `gen`, if any rule's prefix contains it.
#[inline(always)]
fn source_class(gen: u32, pkt: &Packet) -> Option<u32> {
    let class = if pkt.family == FAMILY_V4 {
        let addr = [pkt.src[0], pkt.src[1], pkt.src[2], pkt.src[3]];
        let key = Key::new(V4_LOOKUP_BITS, src_v4_data(gen, addr));
        SRC_V4.get(&key)
    } else {
        let key = Key::new(V6_LOOKUP_BITS, src_v6_data(gen, pkt.src));
        SRC_V6.get(&key)
    };
    class.copied()
}

/// §6: the first covering rule in precedence order decides; the compiler has already
/// resolved precedence into one cell per (class, kind, segment). Without one, the packet goes
/// on with `no-source-match` or `no-rule-match`.
#[inline(always)]
pub fn rules(s: &Settings, pkt: &Packet, svc: &Service) -> Flow<Reason> {
    let Some(class) = source_class(s.gen, pkt) else {
        return Continue(Reason::NoSourceMatch);
    };
    if class >= MAX_CLASSES {
        return Verdict::stop(Reason::Internal);
    }
    let kind = svc.kind();
    let index = kind.key_offset() + svc.key;
    let chunk = need(SEGMENTS.get(segment_chunk_index(s.gen, index)))?;
    let seg = u32::from(chunk.seg[(index % SEGMENT_CHUNK) as usize]);
    if seg >= MAX_SEGMENTS {
        return Verdict::stop(Reason::Internal);
    }
    let cells = need(CELLS.get(class_cells_index(s.gen, class, kind)))?;
    // Verifier: the mask restates `seg < MAX_SEGMENTS` (a power of two) as an index bound.
    let cell = Cell(cells.cell[(seg & (MAX_SEGMENTS - 1)) as usize]);
    let reason = match cell.action() {
        CellAction::Failsafe => Reason::Failsafe,
        CellAction::Deny => Reason::DenyRule,
        CellAction::Allow => Reason::AllowRule,
        CellAction::None => return Continue(Reason::NoRuleMatch),
    };
    Break(Verdict {
        reason,
        rule: cell.slot(),
    })
}

/// §7 and §8 for a packet no rule covered; `miss` is the reason §6 ended with.
#[inline(always)]
pub fn unmatched(s: &Settings, pkt: &Packet, svc: &Service, miss: Reason) -> Verdict {
    if is_return_traffic(s, pkt, svc) {
        Verdict::of(Reason::ReturnTraffic)
    } else if s.has(flags::DEFAULT_PASS) {
        Verdict::of(Reason::DefaultPass)
    } else {
        Verdict::of(miss)
    }
}

/// §7: replies to connections the node opened.
#[inline(always)]
fn is_return_traffic(s: &Settings, pkt: &Packet, svc: &Service) -> bool {
    match s.return_mode {
        return_mode::EPHEMERAL => {
            let reply_shaped = match svc.kind() {
                // A bare SYN opens a connection; anything else may belong to one.
                ServiceKind::Tcp => {
                    !(svc.tcp_flags & TCP_FLAG_SYN != 0 && svc.tcp_flags & TCP_FLAG_ACK == 0)
                }
                ServiceKind::Udp => true,
                _ => false,
            };
            reply_shaped && (s.ephemeral_lo..=s.ephemeral_hi).contains(&pkt.dport)
        }
        return_mode::STATEFUL => stateful_flow_match(pkt, svc),
        _ => false,
    }
}

/// HOOK (stateful return traffic, later issue): whether the reverse 5-tuple of `pkt`
/// (`pkt.family`, `pkt.proto`, `pkt.dst`:`pkt.dport` → `pkt.src`:`pkt.sport`) is a live flow
/// learned by the TC egress program. Until that flow table exists nothing matches.
#[inline(always)]
fn stateful_flow_match(_pkt: &Packet, _svc: &Service) -> bool {
    false
}
