//! The second half of the program (see main.rs): §5–§8 for a parsed service, fragment
//! tracking, counting, sampling. Inlined into the native variant ([`run`]); a global BPF
//! function for the spectre-hardened one ([`nodegate_finish`]), so the verifier checks it
//! once either way.

use core::ops::ControlFlow::{Break, Continue};

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    programs::XdpContext,
};
use filter_common::Reason;

use crate::{
    counters, essentials, frags, knockout,
    packet::{Flow, Summary, Verdict, PENDING},
    scratch::Key,
    verdict,
};

/// [`run`] as a global function, for the spectre-hardened variant.
///
/// NB: `#[no_mangle]` + `extern "C"` + never inlined keeps it a global function in the
/// object's BTF; the verifier then checks it once against its argument types (context, and
/// a possibly-null pointer to the [`Summary`] in the per-CPU scratch), not once per call
/// path.
#[no_mangle]
#[inline(never)]
pub extern "C" fn nodegate_finish(ctx: *mut xdp_md, sum: *const Summary) -> u32 {
    let ctx = XdpContext::new(ctx);
    // Verifier: pointer arguments of global functions may be null. The caller never
    // passes null; fail closed anyway.
    // SAFETY: non-null here; the caller's summary outlives the call, and nothing else uses
    // it meanwhile.
    let Some(sum) = (unsafe { sum.as_ref() }) else {
        return xdp_action::XDP_DROP;
    };
    run(&ctx, sum)
}

/// Judge what `parse` left in `sum`, count it, and return the XDP action.
#[inline(always)]
pub fn run(ctx: &XdpContext, sum: &Summary) -> u32 {
    let key = &sum.key;
    // Knock-outs read the context too: an unused argument is not passed at all, and the
    // verifier refuses a global function call without its context.
    if knockout::stops_after(knockout::Stage::Handoff) {
        return knockout::action_of(sum.reason ^ ctx.ingress_ifindex() as u32);
    }
    let (code, rule) = if sum.reason != PENDING {
        (sum.reason, sum.rule)
    } else if sum.configured == 0 {
        // PENDING is only ever set after the settings; fail closed if not.
        (Reason::Internal as u32, 0)
    } else {
        let v = match judge(sum, key) {
            Continue(v) | Break(v) => v,
        };
        (v.reason as u32, v.rule)
    };
    if knockout::STOP <= knockout::Stage::Verdict {
        // The action the verdict names (enforce mode), so that these builds pass and drop
        // what the shipped program does: the veth pipeline times the `verdict` build beside
        // it, where a passed frame costs the stack far more than a dropped one. The rule is
        // unused but costs no read of its own: it sits in the cell word the reason comes
        // from. (`black_box` on it changed the shipped object's code, though this branch is
        // compiled out of it.)
        return knockout::action_of(u32::from(!counters::is_drop(code)));
    }
    // "A first fragment whose (non-monitor) verdict is pass": the reason, not the action.
    if sum.configured != 0 && sum.packet.is_first_frag() && !counters::is_drop(code) {
        frags::remember(&sum.packet);
    }
    counters::record(ctx, code, rule, sum, key)
}

/// §5–§8.
#[inline(always)]
fn judge(sum: &Summary, key: &Key) -> Flow<Verdict> {
    let (s, pkt, svc) = (&sum.settings, &sum.packet, &sum.service);
    essentials::check(s, pkt, svc)?;
    let miss = verdict::rules(s, pkt, svc, key)?;
    Continue(verdict::unmatched(s, pkt, svc, miss))
}
