//! VERDICTS.md §6–§8: rules (one source table walk, three array lookups, no loop over rules), return
//! traffic, default.

use core::{
    ops::ControlFlow::{Break, Continue},
    ptr::read_volatile,
};

use aya_ebpf::helpers::bpf_ktime_get_ns;
use filter_common::{
    class_cells_index, class_row_index, flags, flow_flags, flow_stat, return_mode,
    segment_chunk_index, Cell, CellAction, FlowKey, Reason, ServiceKind, MAX_CLASSES, MAX_PROFILES,
    MAX_SEGMENTS, NO_ROW, SEGMENT_CHUNK,
};

use crate::{
    knockout,
    maps::{CELLS, FLOWS, FLOW_STATS, ROWS, SEGMENTS},
    packet::{need, Flow, Packet, Service, Settings, Verdict},
    proto::*,
    scratch::Key,
};

/// §6: the first covering rule in precedence order decides; the compiler has already
/// resolved precedence into one cell per (row, kind, segment), where the row stands for the
/// rules that cover the source and apply on the arriving interface. Without one, the packet
/// goes on with `no-source-match` or `no-rule-match`.
#[inline(always)]
pub fn rules(s: &Settings, pkt: &Packet, svc: &Service, key: &Key) -> Flow<Reason> {
    let Some(class) = crate::lookup::source_class(s, pkt) else {
        return Continue(Reason::NoSourceMatch);
    };
    if knockout::stops_after(knockout::Stage::Lookup) {
        return Break(Verdict {
            reason: Reason::AllowRule,
            rule: class,
        });
    }
    if class >= MAX_CLASSES {
        return Verdict::stop(Reason::Internal);
    }
    // The rules that apply on the arriving interface (its profile) and cover the source.
    let profile = s.profile & (MAX_PROFILES - 1);
    let row = *need(key.array(&ROWS, class_row_index(s.generation, profile, class)))?;
    if row == NO_ROW {
        return Continue(Reason::NoSourceMatch);
    }
    if row >= MAX_CLASSES {
        return Verdict::stop(Reason::Internal);
    }
    let kind = svc.kind();
    let index = kind.key_offset() + svc.key;
    let chunk = need(key.array(&SEGMENTS, segment_chunk_index(s.generation, index)))?;
    let seg = u32::from(chunk.seg[(index % SEGMENT_CHUNK) as usize]);
    if seg >= MAX_SEGMENTS {
        return Verdict::stop(Reason::Internal);
    }
    let cells = need(key.array(&CELLS, class_cells_index(s.generation, row, kind)))?;
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
        return_mode::STATEFUL => stateful_flow_match(s, pkt, svc),
        _ => false,
    }
}

/// Whether `pkt` is a reply on a live flow the TC egress program (`egress.rs`) learned: its
/// (src, dst, sport, dport) as they are is the flow key, which egress stores swapped. A bare
/// SYN opens a connection and never matches; an echo reply matches by its identifier.
///
/// Inbound packets do not refresh a flow (only the node's own packets do, so a remote peer
/// cannot keep a pinhole open on its own); a FIN or RST marks it closing, which shortens its
/// life to `tcp_closing`.
#[inline(always)]
fn stateful_flow_match(s: &Settings, pkt: &Packet, svc: &Service) -> bool {
    let mut key = FlowKey {
        family: pkt.family,
        proto: pkt.proto,
        _pad: [0; 2],
        remote_port: pkt.sport,
        local_port: pkt.dport,
        remote: pkt.src,
        local: pkt.dst,
    };
    // Verifier: volatile reads keep LLVM from turning "pick one of these fields" into a
    // variable offset from the `Summary` pointer (pointer arithmetic the verifier refuses
    // without CAP_PERFMON).
    // SAFETY: plain reads of fields of a live reference.
    let (tcp, udp, icmp) = unsafe {
        (
            read_volatile(&s.flow_tcp_secs),
            read_volatile(&s.flow_udp_secs),
            read_volatile(&s.flow_icmp_secs),
        )
    };
    let timeout_secs = match svc.kind() {
        ServiceKind::Tcp => {
            if svc.tcp_flags & TCP_FLAG_SYN != 0 && svc.tcp_flags & TCP_FLAG_ACK == 0 {
                return false;
            }
            tcp
        }
        ServiceKind::Udp => udp,
        ServiceKind::Icmp if svc.key == u32::from(ICMP_ECHO_REPLY) => {
            key.remote_port = svc.echo_id;
            key.local_port = 0;
            icmp
        }
        ServiceKind::Icmpv6 if svc.key == u32::from(ICMPV6_ECHO_REPLY) => {
            key.remote_port = svc.echo_id;
            key.local_port = 0;
            icmp
        }
        _ => return false,
    };
    let Some(state) = FLOWS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: a map value pointer; another CPU may write it concurrently, which at worst
    // gives a slightly stale timestamp or flag.
    let (seen, closing) = unsafe { ((*state).last_seen_ns, (*state).flags & flow_flags::CLOSING) };
    let secs = if closing != 0 {
        // SAFETY: as above.
        unsafe { read_volatile(&s.flow_tcp_closing_secs) }
    } else {
        timeout_secs
    };
    // SAFETY: no arguments; reads the monotonic clock.
    let now = unsafe { bpf_ktime_get_ns() };
    // NB: egress on another CPU may have stamped it a moment "after" our clock read.
    if now.saturating_sub(seen) >= u64::from(secs) * NS_PER_SEC {
        return false;
    }
    if svc.kind() == ServiceKind::Tcp
        && svc.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) != 0
        && closing == 0
    {
        // SAFETY: as above.
        unsafe { (*state).flags |= flow_flags::CLOSING };
        flow_stats_add(flow_stat::CLOSING);
    }
    true
}

const NS_PER_SEC: u64 = 1_000_000_000;

/// Count one flow-table event (`filter_common::flow_stat` slot).
#[inline(always)]
pub fn flow_stats_add(slot: u32) {
    if let Some(n) = crate::maps::per_cpu_slot(&FLOW_STATS, slot) {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe { *n += 1 };
    }
}
