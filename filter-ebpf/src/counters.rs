//! The epilogue every packet goes through: one reason counter per interface, the deciding
//! rule's counter, the generation counter, a drop sample; then the XDP action.

use aya_ebpf::{bindings::xdp_action, maps::PerCpuArray, programs::XdpContext};
use filter_common::{Counter, Reason, DROP_BASE, MAX_RULES, REASON_SLOTS, STAT_SLOTS};

use crate::{
    maps::{GEN_STATS, RULE_STATS, STATS},
    packet::Summary,
    samples,
    scratch::Key,
};

/// `Reason::is_drop` on a raw code (the epilogue receives codes through memory).
#[inline(always)]
pub const fn is_drop(code: u32) -> bool {
    code == Reason::Internal as u32 || code >= DROP_BASE
}

/// `Reason::stat_slot` on a raw code.
#[inline(always)]
const fn stat_slot(code: u32, monitor: bool) -> u32 {
    if monitor && is_drop(code) {
        code + REASON_SLOTS
    } else {
        code
    }
}

const _: () = {
    let mut i = 0;
    while i < Reason::ALL.len() {
        let r = Reason::ALL[i];
        assert!(is_drop(r as u32) == r.is_drop());
        assert!(stat_slot(r as u32, true) == r.stat_slot(true));
        assert!(stat_slot(r as u32, false) == r.stat_slot(false));
        i += 1;
    }
};

#[inline(always)]
fn bump(key: &Key, map: &'static PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(c) = key.per_cpu(map, index) {
        // SAFETY: this CPU's slot; XDP runs with preemption off, so nothing else writes it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Count the verdict (`code`, `rule`) of the packet `sum` describes and turn it into an XDP
/// action. The only way out of the program.
#[inline(always)]
pub fn record(ctx: &XdpContext, code: u32, rule: u32, sum: &Summary, key: &Key) -> u32 {
    // Verifier: codes arrive through memory; anything out of range counts as internal.
    let code = if code < REASON_SLOTS {
        code
    } else {
        Reason::Internal as u32
    };
    let configured = sum.configured != 0;
    let monitor = configured && sum.settings.monitor != 0;
    let drop = is_drop(code);
    let ifindex = ctx.ingress_ifindex() as u32;
    let bytes = u64::from(sum.len);
    if code == Reason::Internal as u32 {
        // Never on a healthy path (a lookup that cannot fail did), so logging here costs
        // nothing per packet; the level is fixed at load (AYA_LOG_LEVEL).
        aya_log_ebpf::error!(
            ctx,
            "internal error on ifindex {}: a rule table lookup failed in generation slot {}; dropped",
            ifindex,
            sum.settings.generation
        );
    }

    bump(
        key,
        &STATS,
        sum.iface_slot * STAT_SLOTS + stat_slot(code, monitor),
        bytes,
    );
    if rule != 0 && rule < MAX_RULES {
        let slot = if monitor && drop {
            rule + MAX_RULES
        } else {
            rule
        };
        bump(key, &RULE_STATS, slot, bytes);
    }
    if configured {
        bump(key, &GEN_STATS, sum.settings.generation, bytes);
    }

    if !drop {
        return xdp_action::XDP_PASS;
    }
    if configured {
        samples::emit(ifindex, code, rule, monitor, sum, key);
    }
    // Monitor mode: a would-drop passes (counted in its own slots above).
    if monitor {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}
