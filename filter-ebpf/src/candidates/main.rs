//! The benches' lookup-candidates object (never shipped, never attached): XDP programs that
//! each take an untagged IPv4 or IPv6 frame's source address, look it up in one source lookup
//! structure and return the answer (0: no prefix contains it), which `BPF_PROG_TEST_RUN`
//! reports as the program's return value. `ng-bench lookup` checks every answer and times
//! them beside nodegate and a kernel LPM trie on the same prefixes and frames
//! (docs/ARCHITECTURE.md, "Source lookup"):
//!
//! - `cand_flat`, `cand_flat6`: nodegate's own flat table, through the program's walk
//!   (`walk.rs`);
//! - `cand_dxr`: DXR, D18R, IPv4 (`benches::candidates::dxr`);
//! - `cand_poptrie`, `cand_poptrie6`: poptrie (`benches::candidates::poptrie`).
//!
//! Each reads its table from `CAND_TABLE` (word 0 on; the loader sizes and fills it) and
//! nothing else but `CAND_ROOT[0]` (the flat IPv4 table's root bits), so the programs of a
//! family differ only in the structure they walk. The layouts are the builders' in
//! `benches/src/candidates.rs`.

#![no_std]
#![no_main]

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

/// Address bits of the IPv4 direct tables, DXR's and poptrie's (`candidates::dxr::DIRECT_BITS`,
/// `candidates::poptrie::V4`).
const DIRECT_BITS: u32 = 18;
const CHUNK_BITS: u32 = 32 - DIRECT_BITS;

/// The `N` bytes at `SRC` of a frame whose ethertype is `ETHERTYPE` (untagged), read at
/// constant offsets.
#[inline(always)]
fn source<const ETHERTYPE: u16, const SRC: usize, const N: usize>(
    ctx: &XdpContext,
) -> Option<[u8; N]> {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + SRC + N > end {
        return None;
    }
    // SAFETY: the bytes at 12..14 and SRC..SRC + N lie inside the frame (checked above);
    // read unaligned, as the frame's start gives them.
    let (ethertype, src) = unsafe {
        (
            core::ptr::read_unaligned((data + 12) as *const u16),
            core::ptr::read_unaligned((data + SRC) as *const [u8; N]),
        )
    };
    if u16::from_be(ethertype) != ETHERTYPE {
        return None;
    }
    Some(src)
}

/// The source address of an untagged IPv4 frame.
#[inline(always)]
fn source_v4(ctx: &XdpContext) -> Option<u32> {
    source::<0x0800, { 14 + 12 }, 4>(ctx).map(u32::from_be_bytes)
}

/// The source address of an untagged IPv6 frame.
#[inline(always)]
fn source_v6(ctx: &XdpContext) -> Option<[u8; 16]> {
    source::<0x86dd, { 14 + 8 }, 16>(ctx)
}

/// The walk's address from its bytes (network order).
#[inline(always)]
fn address(bytes: [u8; 16]) -> walk::Address {
    walk::Address(core::array::from_fn(|w| {
        u32::from_ne_bytes([
            bytes[4 * w],
            bytes[4 * w + 1],
            bytes[4 * w + 2],
            bytes[4 * w + 3],
        ])
    }))
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
    let addr = source_v4(ctx)?;
    let root_bits = *ROOT.get(0)?;
    let src = walk::Address([addr.to_be(), 0, 0, 0]);
    walk::v4_leaf(&TABLE, 0, root_bits, &src)
}

#[xdp]
pub fn cand_flat6(ctx: XdpContext) -> u32 {
    action(source_v6(&ctx).and_then(|src| walk::v6_leaf(&TABLE, 0, &address(src))))
}

#[xdp]
pub fn cand_dxr(ctx: XdpContext) -> u32 {
    action(source_v4(&ctx).and_then(dxr))
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
    action(source_v4(&ctx).and_then(poptrie))
}

#[xdp]
pub fn cand_poptrie6(ctx: XdpContext) -> u32 {
    action(source_v6(&ctx).and_then(|src| poptrie6(&src)))
}

/// `candidates::poptrie` layout constants.
const LEAF: u32 = 1 << 31;
const NODE_WORDS: u32 = 6;

/// One poptrie node per `(from, count)`: the slot is the address's bits `[from, from +
/// count)` (`$bits`); an answer ends the lookup. Written out: straight-line code for the
/// verifier.
macro_rules! poptrie_levels {
    ($node:ident, $bits:expr, [$(($from:expr, $count:expr)),*]) => {
        let bits = $bits;
        $(
            $node = match node_step($node, bits($from, $count))? {
                Step::Answer(a) => return Some(a),
                Step::Node(n) => n,
            };
        )*
    };
}

/// What one poptrie node gives: the answer, or the next node.
enum Step {
    Answer(u32),
    Node(u32),
}

/// The node at word `node` (even) for slot `v` (the address's next bits).
#[inline(always)]
fn node_step(node: u32, v: u32) -> Option<Step> {
    let element = node >> 1;
    let children = *TABLE.get(element)?;
    let leafvec = *TABLE.get(element + 1)?;
    let bases = *TABLE.get(element + 2)?;
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
    let mut node = direct;
    poptrie_levels!(
        node,
        |from, count| (addr << from) >> (32 - count),
        [(18, 6), (24, 6), (30, 2)]
    );
    // Past the last level: a builder bug.
    let _ = node;
    None
}

/// Bits `[from, from + count)` of an IPv6 address (`count` at most 32; `from` and `count`
/// constants after inlining).
#[inline(always)]
fn bits128(src: &[u8; 16], from: u32, count: u32) -> u32 {
    let word = |i: usize| {
        if i < 4 {
            u32::from_be_bytes([src[4 * i], src[4 * i + 1], src[4 * i + 2], src[4 * i + 3]])
        } else {
            0
        }
    };
    let i = (from / 32) as usize;
    let pair = (u64::from(word(i)) << 32) | u64::from(word(i + 1));
    ((pair << (from % 32)) >> (64 - count)) as u32
}

/// Poptrie, IPv6: the 16-bit direct word, then at most 19 nodes (18 of 6 bits, one of 4).
#[inline(always)]
fn poptrie6(src: &[u8; 16]) -> Option<u32> {
    let direct = word(&TABLE, 0, bits128(src, 0, 16))?;
    if direct & LEAF != 0 {
        return Some(direct & !LEAF);
    }
    let mut node = direct;
    poptrie_levels!(
        node,
        |from, count| bits128(src, from, count),
        [
            (16, 6),
            (22, 6),
            (28, 6),
            (34, 6),
            (40, 6),
            (46, 6),
            (52, 6),
            (58, 6),
            (64, 6),
            (70, 6),
            (76, 6),
            (82, 6),
            (88, 6),
            (94, 6),
            (100, 6),
            (106, 6),
            (112, 6),
            (118, 6),
            (124, 4)
        ]
    );
    // Past the last level: a builder bug.
    let _ = node;
    None
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
