//! Source address → source class, through the generation's flat lookup table
//! (`filter_common::lookup`): the root, at most `V4_LEVELS` / `V6_LEVELS` nodes, and at most
//! one tail record. No loop over prefixes and no kernel trie: every step is one inlined
//! array read whose index the previous word gave.
//!
//! The verdict code only calls [`source_class`]; which structure answers is this module's
//! business.

use aya_ebpf::maps::Array;
use filter_common::lookup::{
    entry, tail, word_mask, ROOT_BITS, V4_LEVELS, V4_STRIDE, V4_TAIL_WORDS, V6_LEVELS, V6_STRIDE,
    V6_TAIL_WORDS,
};

use crate::{
    maps::{SRC_V4, SRC_V6},
    packet::{Packet, Settings, FAMILY_V4},
};

/// Word `base + rel` of a table (two words per `u64` element, low half first).
#[inline(always)]
fn word(table: &Array<u64>, base: u32, rel: u32) -> Option<u32> {
    let at = base.wrapping_add(rel);
    let element = table.get(at >> 1)?;
    Some((*element >> ((at & 1) * 32)) as u32)
}

/// Bits `[from, from + count)` of an address given as four big-endian-ordered words; the
/// strides never straddle a word (asserted in `filter_common::lookup`), so `from` and
/// `count` select one word. `from` is a constant after unrolling.
#[inline(always)]
fn bits(addr: &[u32; 4], from: u32, count: u32) -> u32 {
    let w = addr[(from / 32) as usize & 3];
    (w >> (32 - (from % 32) - count)) & ((1 << count) - 1)
}

/// The leaf `addr` finds in one family's table: the root, then node words down to a leaf or
/// a tail. `LEVELS`, `STRIDE` and `TAIL_WORDS` are constants, so the loops unroll into
/// straight-line steps.
#[inline(always)]
fn walk<const LEVELS: u32, const STRIDE: u32, const TAIL_WORDS: u32>(
    table: &Array<u64>,
    base: u32,
    addr: &[u32; 4],
) -> Option<u32> {
    let mut now = word(table, base, bits(addr, 0, ROOT_BITS))?;
    let mut depth = ROOT_BITS;
    let mut level = 0;
    while level < LEVELS && entry::tag(now) == entry::NODE {
        now = word(
            table,
            base,
            (now & entry::PAYLOAD) + bits(addr, depth, STRIDE),
        )?;
        depth += STRIDE;
        level += 1;
    }
    if entry::tag(now) != entry::TAIL {
        return Some(now);
    }
    let at = now & entry::PAYLOAD;
    let packed = word(table, base, at + TAIL_WORDS)?;
    let len = tail::len(packed);
    let mut differs = 0;
    let mut w = 0;
    while w < TAIL_WORDS {
        let prefix = word(table, base, at + w)?;
        differs |= (addr[w as usize & 3] ^ prefix) & word_mask(len.saturating_sub(32 * w));
        w += 1;
    }
    Some(if differs == 0 {
        tail::inside(packed)
    } else {
        tail::outside(packed)
    })
}

/// Source class of `pkt.src` in the packet's generation, if a prefix contains it.
#[inline(always)]
pub fn source_class(s: &Settings, pkt: &Packet) -> Option<u32> {
    let w =
        |i: usize| u32::from_be_bytes([pkt.src[i], pkt.src[i + 1], pkt.src[i + 2], pkt.src[i + 3]]);
    let leaf = if pkt.family == FAMILY_V4 {
        walk::<V4_LEVELS, V4_STRIDE, { V4_TAIL_WORDS - 1 }>(
            &SRC_V4,
            s.src_v4_base,
            &[w(0), 0, 0, 0],
        )?
    } else {
        let addr = [w(0), w(4), w(8), w(12)];
        walk::<V6_LEVELS, V6_STRIDE, { V6_TAIL_WORDS - 1 }>(&SRC_V6, s.src_v6_base, &addr)?
    };
    entry::class(leaf)
}
