//! nodegate's XDP program: judges every ingress frame by the procedure in docs/VERDICTS.md,
//! one stage per module, against the active rule generation the loader wrote into the maps.
//!
//! Two halves, split for the verifier:
//! - `nodegate` (this file) reads the control word and the generation's settings and parses
//!   the frame (§0–§4) into the [`Summary`] in the per-CPU scratch, ending either with a
//!   verdict or with the service to judge;
//! - `finish.rs` judges the service (§5–§8), remembers passing first fragments, counts and
//!   samples, and returns the XDP action.
//!
//! The parser has hundreds of paths (VLAN depths × IPv6 extension chains × L4). Were the
//! second half walked once per path, with what each path knows about the summary, the
//! verifier would walk it hundreds of times (574,447 instructions to verify on 6.18 as root;
//! 6.1 walks this program about three times as long and stops at 1M). It walks it once: the
//! summary lives in map memory, whose contents the verifier does not track, and a compiler
//! barrier makes the second half read every field from there, so every path reaches it in
//! the same state. The native variant runs the
//! second half inlined; the spectre-hardened one calls it as the *global* function
//! `finish::nodegate_finish`, which the verifier checks once on its own (inlined, the
//! hardened variant's stack slots are shared in ways its verifier refuses). Nothing returns
//! except through the second half.
//!
//! The object also holds `nodegate_egress` (egress.rs), the TC egress program that learns
//! the flows the node opens for stateful return traffic.

#![no_std]
#![no_main]

// First: its macro is used by the modules below.
#[macro_use]
mod unroll;

mod counters;
mod cursor;
mod egress;
mod essentials;
mod eth;
mod finish;
mod frags;
mod headers;
mod ipv4;
mod ipv6;
mod knockout;
mod l4;
mod lookup;
mod maps;
mod packet;
mod proto;
mod samples;
mod scratch;
mod verdict;
mod walk;

use core::{
    mem::MaybeUninit,
    ops::ControlFlow::{Break, Continue},
};

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use filter_common::{iface_override, Reason, DIRECT_IFINDEXES, GENERATIONS, MAX_IFACES};

use crate::{
    cursor::{Cursor, Front},
    eth::Network,
    packet::{zeroed, Flow, Packet, Service, Settings, Summary, PENDING},
    scratch::{Key, Scratch},
};

const _: () = assert!(GENERATIONS.is_power_of_two());

#[xdp]
// aya's macro wraps this in the exported entry point; inlined there, or LLVM would make
// it a second BPF function once it holds both variants' parsers.
#[inline(always)]
pub fn nodegate(ctx: XdpContext) -> u32 {
    let Some(Scratch { summary, front }) = scratch::this_cpu() else {
        return xdp_action::XDP_DROP;
    };
    // Where the header copy lives depends on the variant (`scratch.rs`): one inlined copy of
    // the parser each; the verifier walks the loaded variant's only.
    if cursor::native() {
        let mut front = MaybeUninit::uninit();
        judge(&ctx, summary, Front::new(&mut front))
    } else {
        judge(&ctx, summary, Front::new(front))
    }
}

/// Parse the frame into a zeroed summary in `slot`, then hand it to the second half.
#[inline(always)]
fn judge(ctx: &XdpContext, slot: &mut MaybeUninit<Summary>, front: Front) -> u32 {
    let sum = zeroed::<Summary>(slot);
    sum.reason = Reason::Internal as u32;
    parse(ctx, sum, front);
    if knockout::STOP <= knockout::Stage::Parse {
        return knockout::action_of(sum.reason ^ sum.settings.generation ^ sum.iface_slot);
    }
    if cursor::native() {
        // The barrier (see the module comment): without it LLVM hands the second half the
        // values each path stored, and the verifier walks it once per path. Best effort by
        // its documentation, so the verifier counts are asserted in CI
        // (`kernel_return_traffic::VERIFIED_REFERENCE`). Inlined, the second half saves the
        // call and its return (under this CPU's Safe-RET mitigation a return thunk): 10 ns
        // an allowed IPv4 SYN, 4 ns IPv6, by the medians (docs/ARCHITECTURE.md, "Per-packet cost").
        let sum: &Summary = core::hint::black_box(sum);
        finish::run(ctx, sum)
    } else {
        finish::nodegate_finish(ctx.ctx, sum)
    }
}

/// §0 (the arriving interface, control word, active generation and its settings), then
/// §1–§4.
#[inline(always)]
fn parse(ctx: &XdpContext, sum: &mut Summary, front: Front) {
    let key = &sum.key;
    let mut cur = Cursor::new(ctx);
    sum.len = cur.end() as u32;
    let iface = Interface::of(ctx, key);
    sum.iface_slot = iface.slot;
    let Some(control) = key.array(&maps::CONTROL, 0) else {
        return;
    };
    if control.ready == 0 {
        sum.reason = Reason::NotConfigured as u32;
        return;
    }
    let generation = control.active_gen & (GENERATIONS - 1);
    let Some(cfg) = key.array(&maps::GEN_CONFIG, generation) else {
        return;
    };
    // Built in a local and stored whole. Writing the fields straight into `sum.settings`
    // saves the spills of the copy (~40 instructions, 3-5 ns, within the bench's noise) but
    // puts the per-field constants on the stack, where the verifier tells paths apart by
    // them: measured 18,299 -> 32,563 instructions to verify as root on 6.18, 50,000 ->
    // 79,649 with CAP_BPF + CAP_NET_ADMIN. Not worth it.
    let mut s = Settings::new(generation, cfg);
    s.override_for_iface(iface_override::of_gen(iface.overrides, generation));
    sum.settings = s;
    sum.configured = 1;
    if knockout::stops_after(knockout::Stage::Settings) {
        return;
    }
    match headers(&mut cur, &s, &mut sum.packet, front) {
        Continue(svc) => {
            sum.reason = PENDING;
            sum.service = svc;
        }
        Break(v) => {
            sum.reason = v.reason as u32;
            sum.rule = v.rule;
        }
    }
}

/// The loader's entry for the interface a frame arrived on.
struct Interface {
    /// Counter slot; 0 for interfaces the loader did not register (and for
    /// `BPF_PROG_TEST_RUN` on an unregistered loopback).
    slot: u32,
    /// [`iface_override`] bits, one byte per generation slot.
    overrides: u32,
}

impl Interface {
    /// Small ifindexes (every host NIC in practice) come from the array the verifier inlines
    /// into a bounds check and an address computation; the rest from the hash, which costs a
    /// helper call and a hash of the key (~30 ns, docs/BENCHMARKS.md). The loader writes
    /// both (`loader/interfaces.rs`).
    #[inline(always)]
    fn of(ctx: &XdpContext, key: &Key) -> Interface {
        let ifindex = ctx.ingress_ifindex() as u32;
        let entry = if ifindex < DIRECT_IFINDEXES {
            key.array(&maps::IFACE_INDEX, ifindex).copied()
        } else {
            // SAFETY: plain u32 reads from a live map value.
            key.hash(&maps::IFACES, ifindex).map(|e| unsafe { *e })
        };
        match entry {
            Some(entry) => Interface {
                slot: if entry.slot < MAX_IFACES {
                    entry.slot
                } else {
                    0
                },
                overrides: entry.overrides,
            },
            None => Interface {
                slot: 0,
                overrides: 0,
            },
        }
    }
}

/// §1–§4: from the Ethernet header to the service; `Break` is the first stage that reached
/// a reason.
#[inline(always)]
fn headers(cur: &mut Cursor, s: &Settings, pkt: &mut Packet, mut front: Front) -> Flow<Service> {
    let l3 = match eth::parse(cur, s, &mut front)? {
        Network::Ipv4(off) => ipv4::parse(cur, off, &mut front, s, pkt)?,
        Network::Ipv6(off) => ipv6::parse(cur, off, &mut front, s, pkt)?,
    };
    l4::parse(cur, &l3, pkt)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // A reachable panic must fail verification rather than hide: loop forever.
    loop {}
}
