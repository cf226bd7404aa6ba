//! The walk over a flat source lookup table (`filter_common::lookup`): the root, at most
//! `V4_LEVELS` / `V6_LEVELS` nodes (IPv4 nodes plain or wide), and at most one tail record
//! (of up to `V4_TAIL_PREFIXES` or `V6_TAIL_PREFIXES` prefixes, read side by side), or for
//! IPv4 an inline prefix in the last word read (`inline::resolve`, no read at all). No loop
//! over prefixes and no kernel trie: every step is one inlined array read whose index the
//! previous word gave.
//!
//! Free of the program's maps and packet types: `lookup.rs` walks the generation's tables
//! with it, and the benches' lookup-candidates program (`candidates/main.rs`) walks a table
//! of its own, beside the structures it is compared with.

use aya_ebpf::maps::Array;
use filter_common::lookup::{
    entry, inline, tail, word_mask, V4_LEVELS, V4_STRIDE, V4_TAIL_PREFIXES, V4_TAIL_WORDS,
    V4_WIDE_STRIDE, V6_LEVELS, V6_ROOT_BITS, V6_STRIDE, V6_TAIL_PREFIXES, V6_TAIL_WORDS,
};

/// Word `base + rel` of a table (two words per `u64` element, low half first).
///
/// The only lookups whose key stays on the stack (`scratch::Key` has the others): through
/// the scratch key, the spectre-hardened variant measured 8 ns (IPv4) to 20 ns (IPv6) a
/// packet faster, but the verifier's work grew 2.6x on 6.18 without CAP_PERFMON (71,785 to
/// 186,098 instructions), headroom the walk may need for a later format.
#[inline(always)]
pub fn word(table: &Array<u64>, base: u32, rel: u32) -> Option<u32> {
    let at = base.wrapping_add(rel);
    let element = table.get(at >> 1)?;
    Some((*element >> ((at & 1) * 32)) as u32)
}

/// A source address as the walk reads it: 16 bytes in network order (IPv4 in the first 4),
/// held as four words so that each address word is one aligned load. Read as bytes, each
/// word took four loads and six shifts and ors, and an IPv6 walk reads one per step and one
/// per compared word of a tail prefix.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct Address(pub [u32; 4]);

/// Address word `w` (0–3, big-endian) of a source address as the parser stored it.
///
/// Read from the packet summary each time instead of kept in registers: the walk would
/// otherwise hold the address, the table base and the current word across every map lookup
/// and spill, pushing the verdict function past the 512-byte combined stack limit.
#[inline(always)]
fn addr_word(src: &Address, w: usize) -> u32 {
    u32::from_be(src.0[w & 3])
}

/// Bits `[from, from + count)` of the address; `from` and `count` are constants after
/// unrolling and never straddle a word (asserted in `filter_common::lookup`).
#[inline(always)]
fn bits(src: &Address, from: u32, count: u32) -> u32 {
    (addr_word(src, (from / 32) as usize) << (from % 32)) >> (32 - count)
}

/// Expand one step down per listed depth while the walk is on a node word. Written out (not
/// a loop) so every depth is a constant and the verifier walks straight-line code: without
/// CAP_PERFMON its speculative walk past a loop's last iteration explodes (see
/// `unroll.rs`). The first word that is not a node leaves the block: LLVM does not see that
/// the later tests of the same word fail too, and kept all of them on the path.
macro_rules! descend {
    ($table:expr, $base:expr, $now:ident, $src:expr, $stride:expr, [$($depth:expr),*]) => {
        'descend: {
            $(
                if entry::tag($now) != entry::NODE {
                    break 'descend;
                }
                $now = word($table, $base, ($now & entry::PAYLOAD) + bits($src, $depth, $stride))?;
            )*
        }
    };
}

/// IPv4: one step down from the node word `now` (plain or wide), or leave `$walk` when
/// `now` is not a node. `rest` holds the address bits not consumed yet, left-aligned, and
/// `left` how many there are; the step takes the node's stride (`entry::v4_stride`: from its
/// tag, without a branch, at most `left`) off the top. Leaving at the first word that is not
/// a node spares the later steps' tests, which LLVM keeps otherwise (see `descend!`).
macro_rules! step_v4 {
    ($walk:lifetime, $table:expr, $base:expr, $now:ident, $rest:ident, $left:ident) => {
        let tag = entry::tag($now);
        if !entry::is_node(tag) {
            break $walk;
        }
        let stride = entry::v4_stride(tag, $left);
        // `wrapping_shr`: a stride of 0 (a node with no bits left, which the compiler never
        // builds) must not be undefined behaviour; its index fails the map's bounds check.
        $now = word(
            $table,
            $base,
            ($now & entry::PAYLOAD) + $rest.wrapping_shr(32 - stride),
        )?;
        $rest = $rest.wrapping_shl(stride);
        $left -= stride;
    };
}

/// Whether the prefix of the tail record at `at` (`WORDS` address words, then `packed`,
/// already read) contains the source.
#[inline(always)]
fn tail_contains<const WORDS: u32>(
    table: &Array<u64>,
    base: u32,
    at: u32,
    packed: u32,
    src: &Address,
) -> Option<bool> {
    let len = tail::len(packed);
    let mut differs = 0;
    let mut w = 0;
    // Constant bound (1 or 4): unrolled.
    while w < WORDS {
        // Words past the prefix length compare nothing: not read at all (a /48 reads two
        // of its four).
        if w == 0 || len > 32 * w {
            let prefix = word(table, base, at + w)?;
            differs |=
                (addr_word(src, w as usize) ^ prefix) & word_mask(len.saturating_sub(32 * w));
        }
        w += 1;
    }
    Some(differs == 0)
}

/// The answer of a tail record of exactly `COUNT` prefixes, longest first: the first that
/// contains the source answers. Checked from the last to the first, each match overwriting
/// the answer; every prefix's record is at a constant offset from `at`, so the reads do not
/// wait on each other.
#[inline(always)]
fn records_leaf<const WORDS: u32, const COUNT: u32>(
    table: &Array<u64>,
    base: u32,
    at: u32,
    src: &Address,
) -> Option<u32> {
    let first = word(table, base, at + WORDS)?;
    let mut answer = tail::outside(first);
    let mut i = COUNT - 1;
    // Constant bound: unrolled.
    while i > 0 {
        let record = at + i * (WORDS + 1);
        let packed = word(table, base, record + WORDS)?;
        if tail_contains::<WORDS>(table, base, record, packed, src)? {
            answer = tail::inside(packed);
        }
        i -= 1;
    }
    if tail_contains::<WORDS>(table, base, at, first, src)? {
        answer = tail::inside(first);
    }
    Some(answer)
}

/// The answer of a tail word's record (`payload`: where, and how many prefixes, at most
/// `MAX`): one straight-line body per count. Not one body that skips the prefixes past the
/// count: once a path knows `count > 3`, the later `count > 2` test has a known outcome, and
/// without CAP_PERFMON the verifier then walks its other side too (Spectre v1), which took
/// the program past the verifier's 1M-instruction limit. Here no test's outcome is known.
#[inline(always)]
fn tail_answer<const WORDS: u32, const MAX: u32>(
    table: &Array<u64>,
    base: u32,
    payload: u32,
    src: &Address,
) -> Option<u32> {
    const { assert!(MAX >= 1 && MAX <= 4) };
    let (at, count) = (tail::at(payload), tail::count(payload));
    // `MAX == n ||`: a constant that removes the bodies past `MAX`.
    if MAX == 1 || count == 1 {
        records_leaf::<WORDS, 1>(table, base, at, src)
    } else if MAX == 2 || count == 2 {
        records_leaf::<WORDS, 2>(table, base, at, src)
    } else if MAX == 3 || count == 3 {
        records_leaf::<WORDS, 3>(table, base, at, src)
    } else {
        records_leaf::<WORDS, 4>(table, base, at, src)
    }
}

/// The leaf a word that is not a node gives: itself, or its tail record's answer.
#[inline(always)]
fn leaf<const WORDS: u32, const MAX: u32>(
    table: &Array<u64>,
    base: u32,
    now: u32,
    src: &Address,
) -> Option<u32> {
    if entry::tag(now) == entry::TAIL {
        tail_answer::<WORDS, MAX>(table, base, now & entry::PAYLOAD, src)
    } else {
        Some(now)
    }
}

/// The leaf an IPv4 source `src` (in its first 4 bytes) finds in the table at word `base`
/// of `table`, whose root has `root_bits` (`filter_common::lookup::v4_root_bits`).
#[inline(always)]
pub fn v4_leaf(table: &Array<u64>, base: u32, root_bits: u32, src: &Address) -> Option<u32> {
    const _: () = assert!(V4_LEVELS == 4 && V4_STRIDE == 4 && V4_WIDE_STRIDE == 8);
    let addr = addr_word(src, 0);
    // 18 or 20 bits, or 16 in a generation a layout-3 loader published (read only
    // during a take-over).
    let mut now = word(table, base, addr >> (32 - root_bits))?;
    let mut rest = addr << root_bits;
    let mut left = 32 - root_bits;
    // At most V4_LEVELS steps from either root: a wide node consumes two plain levels'
    // bits, a node at /30 the last two, and the walk is on a leaf or tail word by /32.
    // Written out so every step is straight-line code.
    #[expect(unused_assignments, reason = "the last step's `left` is not read")]
    'walk: {
        step_v4!('walk, table, base, now, rest, left);
        step_v4!('walk, table, base, now, rest, left);
        step_v4!('walk, table, base, now, rest, left);
        step_v4!('walk, table, base, now, rest, left);
    }
    // `rest` now holds the bits past the slot `now` came from: all an inline prefix
    // compares.
    Some(inline::resolve(
        leaf::<{ V4_TAIL_WORDS - 1 }, V4_TAIL_PREFIXES>(table, base, now, src)?,
        rest,
    ))
}

/// The leaf an IPv6 source `src` finds in the table at word `base` of `table`.
#[inline(always)]
pub fn v6_leaf(table: &Array<u64>, base: u32, src: &Address) -> Option<u32> {
    const _: () = assert!(V6_LEVELS == 14 && V6_STRIDE == 8 && V6_ROOT_BITS == 16);
    let mut now = word(table, base, bits(src, 0, V6_ROOT_BITS))?;
    descend!(
        table,
        base,
        now,
        src,
        V6_STRIDE,
        [16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120]
    );
    leaf::<{ V6_TAIL_WORDS - 1 }, V6_TAIL_PREFIXES>(table, base, now, src)
}
