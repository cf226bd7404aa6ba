//! The benches' lookup-candidates object (never shipped, never attached): three XDP programs
//! that each take an untagged IPv4 frame's source address, look it up in one IPv4 source
//! lookup structure and return the answer (0: no prefix contains it), which
//! `BPF_PROG_TEST_RUN` reports as the program's return value. `ng-bench lookup` checks every
//! answer and times them beside nodegate and a kernel LPM trie on the same prefixes and
//! frames (docs/ARCHITECTURE.md, "Source lookup"):
//!
//! - `cand_flat`: nodegate's own flat table, through the program's walk (`walk.rs`);
//! - `cand_dxr`: DXR, D18R (`benches::candidates::dxr`);
//! - `cand_poptrie`: poptrie (`benches::candidates::poptrie`).
//!
//! Each reads its table from `CAND_TABLE` (word 0 on; the loader sizes and fills it) and
//! nothing else but `CAND_ROOT[0]` (the flat table's root bits), so the three differ only in
//! the structure they walk. The layouts are the builders' in `benches/src/candidates.rs`.

#![no_std]
#![no_main]

#[expect(
    dead_code,
    reason = "the IPv6 walk and some helpers serve the nodegate program only"
)]
#[path = "../walk.rs"]
mod walk;

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};

use walk::word;

/// The structure's words, two to an element.
#[map(name = "CAND_TABLE")]
static TABLE: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The flat table's root bits.
#[map(name = "CAND_ROOT")]
static ROOT: Array<u32> = Array::with_max_entries(1, 0);

/// Address bits of both candidates' direct tables (`candidates::DIRECT_BITS`).
const DIRECT_BITS: u32 = 18;
const CHUNK_BITS: u32 = 32 - DIRECT_BITS;

/// The source address of an untagged Ethernet + IPv4 frame, read at constant offsets.
#[inline(always)]
fn source(ctx: &XdpContext) -> Option<u32> {
    const SRC: usize = 14 + 12;
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + SRC + 4 > end {
        return None;
    }
    // SAFETY: the bytes at 12..14 and SRC..SRC + 4 lie inside the frame (checked above);
    // read unaligned, as the frame's start gives them.
    let (ethertype, src) = unsafe {
        (
            core::ptr::read_unaligned((data + 12) as *const u16),
            core::ptr::read_unaligned((data + SRC) as *const u32),
        )
    };
    if u16::from_be(ethertype) != 0x0800 {
        return None;
    }
    Some(u32::from_be(src))
}

/// The return value: the answer, 0 when no prefix contains the source (or the frame is not
/// untagged IPv4, or a read failed).
#[inline(always)]
fn action(answer: Option<u32>) -> u32 {
    answer.unwrap_or(0)
}

#[xdp]
pub fn cand_flat(ctx: XdpContext) -> u32 {
    action(flat(&ctx))
}

#[inline(always)]
fn flat(ctx: &XdpContext) -> Option<u32> {
    let addr = source(ctx)?;
    let root_bits = *ROOT.get(0)?;
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&addr.to_be_bytes());
    walk::v4_leaf(&TABLE, 0, root_bits, &src)
}

#[xdp]
pub fn cand_dxr(ctx: XdpContext) -> u32 {
    action(source(&ctx).and_then(dxr))
}

/// One bisection step: move `low` up by `step` when that range exists and starts at or
/// before `key`.
macro_rules! bisect {
    ($index:expr, $count:expr, $key:expr, $low:ident, [$($step:expr),*]) => {
        $(
            if $low + $step < $count && word(&TABLE, 0, $index + $low + $step)? >> ANSWER_BITS <= $key {
                $low += $step;
            }
        )*
    };
}

/// `candidates::dxr` layout constants.
const RANGES: u32 = 1 << 31;
const INDEX_BITS: u32 = 22;
const COUNT_BITS: u32 = 9;
const ANSWER_BITS: u32 = 32 - CHUNK_BITS;

/// D18R: the direct word, then bisection over the chunk's ranges (at most 2^COUNT_BITS: nine
/// steps, written out).
#[inline(always)]
fn dxr(addr: u32) -> Option<u32> {
    let direct = word(&TABLE, 0, addr >> CHUNK_BITS)?;
    if direct & RANGES == 0 {
        return Some(direct);
    }
    let index = direct & ((1 << INDEX_BITS) - 1);
    let count = ((direct >> INDEX_BITS) & ((1 << COUNT_BITS) - 1)) + 1;
    let key = addr & ((1 << CHUNK_BITS) - 1);
    let mut low = 0;
    const _: () = assert!(COUNT_BITS == 9);
    bisect!(index, count, key, low, [256, 128, 64, 32, 16, 8, 4, 2, 1]);
    Some(word(&TABLE, 0, index + low)? & ((1 << ANSWER_BITS) - 1))
}

#[xdp]
pub fn cand_poptrie(ctx: XdpContext) -> u32 {
    action(source(&ctx).and_then(poptrie))
}

/// `candidates::poptrie` layout constants.
const LEAF: u32 = 1 << 31;
const NODE_WORDS: u32 = 6;

/// What one poptrie node gives: the answer, or the next node.
enum Step {
    Answer(u32),
    Node(u32),
}

/// The node at word `node` (even) for the next `STRIDE` bits of `rest` (left-aligned).
#[inline(always)]
fn node_step<const STRIDE: u32>(node: u32, rest: u32) -> Option<Step> {
    let element = node >> 1;
    let children = *TABLE.get(element)?;
    let leafvec = *TABLE.get(element + 1)?;
    let bases = *TABLE.get(element + 2)?;
    let v = rest >> (32 - STRIDE);
    // Bits 0..=v.
    let upto = (2u64 << v).wrapping_sub(1);
    if (children >> v) & 1 == 0 {
        let leaf = (bases as u32)
            .wrapping_add((leafvec & upto).count_ones())
            .wrapping_sub(1);
        return Some(Step::Answer(word(&TABLE, 0, leaf)?));
    }
    let first_child = (bases >> 32) as u32;
    Some(Step::Node(first_child.wrapping_add(
        NODE_WORDS * (children & upto).count_ones().wrapping_sub(1),
    )))
}

/// Poptrie: the direct word, then at most three nodes (6, 6 and 2 bits).
#[inline(always)]
fn poptrie(addr: u32) -> Option<u32> {
    let direct = word(&TABLE, 0, addr >> CHUNK_BITS)?;
    if direct & LEAF != 0 {
        return Some(direct & !LEAF);
    }
    let rest = addr << DIRECT_BITS;
    let node = match node_step::<6>(direct, rest)? {
        Step::Answer(a) => return Some(a),
        Step::Node(n) => n,
    };
    let node = match node_step::<6>(node, rest << 6)? {
        Step::Answer(a) => return Some(a),
        Step::Node(n) => n,
    };
    match node_step::<2>(node, rest << 12)? {
        Step::Answer(a) => Some(a),
        Step::Node(_) => None,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
