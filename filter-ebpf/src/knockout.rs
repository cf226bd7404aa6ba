//! Knock-out builds for the per-stage cost table (docs/BENCHMARKS.md, `cargo xtask bench`):
//! built with `NODEGATE_KNOCKOUT=<stage>`, the program stops right after that stage and
//! returns an action computed from what the stage produced, so the compiler cannot drop the
//! stage's work. Timing the builds side by side with `BPF_PROG_TEST_RUN` gives each stage's
//! cost as the difference to the previous one. The `lookup` and `verdict` builds return the
//! verdict's own action, so the veth pipeline can time the `verdict` build (everything but
//! counting and drop samples) beside the shipped program on the same passed and dropped
//! frames.
//!
//! The shipped object is built without the variable: [`STOP`] is then [`Stage::Full`] and
//! every check below is a constant `false` that the compiler removes.

use aya_ebpf::bindings::xdp_action;

use crate::maps::same;

/// The stages in program order; each knock-out keeps the ones up to and including it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// §0: interface entry, control word, generation settings.
    Settings,
    /// §1–§4: the header parser, up to the service.
    Parse,
    /// The summary handed to the second half (`finish.rs`): through the compiler barrier in
    /// the native variant, which the knock-outs are timed in.
    Handoff,
    /// §5 and the source table walk of §6.
    Lookup,
    /// The rest of §6–§8: rule row, segment, cell, return traffic, default.
    Verdict,
    /// Counters and samples: the whole program.
    Full,
}

/// Where this build stops.
pub const STOP: Stage = match option_env!("NODEGATE_KNOCKOUT") {
    None => Stage::Full,
    Some(name) => parse(name),
};

const fn parse(name: &str) -> Stage {
    if name.is_empty() {
        return Stage::Full;
    }
    if same(name, "settings") {
        Stage::Settings
    } else if same(name, "parse") {
        Stage::Parse
    } else if same(name, "handoff") {
        Stage::Handoff
    } else if same(name, "lookup") {
        Stage::Lookup
    } else if same(name, "verdict") {
        Stage::Verdict
    } else if same(name, "full") {
        Stage::Full
    } else {
        panic!("NODEGATE_KNOCKOUT: expected settings, parse, handoff, lookup, verdict or full")
    }
}

/// Whether this build ends right after `stage`.
#[inline(always)]
pub const fn stops_after(stage: Stage) -> bool {
    STOP as u8 == stage as u8
}

/// The action a knock-out build returns: depends on `value` (so the work that produced it
/// stays), always a valid XDP action.
#[inline(always)]
pub fn action_of(value: u32) -> u32 {
    if value == 0 {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}
