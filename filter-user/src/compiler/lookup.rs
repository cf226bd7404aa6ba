//! Source prefixes → the flat lookup table the program reads (`filter_common::lookup`).
//!
//! One recursive pass over the prefixes sorted by (address, length). A node covers the
//! addresses below some `depth` bits; its slots first get the answer of the longest prefix
//! that ends within the node (later prefixes in sorted order that overlap an earlier one are
//! nested in it, so writing ranges in order leaves the longest one in each slot). Prefixes
//! longer than the node fall into one slot each, in runs: a lone IPv4 prefix becomes an
//! inline word when it fits (`filter_common::lookup::inline`), a run of at most two (IPv4) or
//! four (IPv6) a tail record, a longer run a child node that inherits the slot's answer as its
//! default. Linear in the table size after the sort.
//!
//! An IPv4 child node is wide ([`V4_WIDE_STRIDE`] bits) when at least 12 of a plain node's
//! 16 slots would get child nodes themselves (with records of one prefix): every lookup
//! under it reads one word less, for at most 256 - (16 + 12 × 16) = 48 more words than the
//! plain node and its children. Such a node has at least 24 prefixes below it, and no path
//! passes two wide nodes (below an 18-bit root they start at /18 or /22 and end at /26 or
//! /30, below a 20-bit one at /20 or /24 and end at /28 or /32), so wide nodes add at most 2
//! words a prefix to the table over plain nodes with records of one prefix (a property test
//! checks it). With 15 (no extra words at all) only about 4 in 10 of a dense /18's nodes
//! qualified; with 12 a lookup inside the benches' 100k prefixes in 10.0.0.0/8 reads 2.6
//! words on average instead of 3.2 (an offline count over 10,000 sources, the table 2%
//! larger). The rule ignores that two prefixes in a slot now make a record rather than a
//! node: counting only slots with three or more, fewer of those /18s got wide nodes and a
//! lookup inside them read 3.04 words instead of 2.61.
//!
//! The reference model does not use this: it matches prefixes its own way
//! (`model::classify`), so the differential test compares two independent matchers.

use filter_common::lookup::{
    entry, inline, tail, V4_LEGACY_ROOT_BITS, V4_STRIDE, V4_TAIL_PREFIXES, V4_TAIL_WORDS,
    V4_WIDE_STRIDE, V6_STRIDE, V6_TAIL_PREFIXES, V6_TAIL_WORDS,
};

/// One prefix for the builder: the address left-aligned in 128 bits, its length, and the
/// leaf value (`entry::leaf(class)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TablePrefix {
    /// Address bits, most significant first (IPv4 in the top 32 bits).
    pub addr: u128,
    /// Prefix length.
    pub len: u8,
    /// What a lookup inside it (and in no longer prefix) answers.
    pub leaf: u32,
}

/// The family a table is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// 32-bit addresses, [`V4_STRIDE`]-bit nodes.
    V4,
    /// 128-bit addresses, [`V6_STRIDE`]-bit nodes.
    V6,
}

impl Family {
    fn width(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    fn stride(self) -> u32 {
        match self {
            Family::V4 => V4_STRIDE,
            Family::V6 => V6_STRIDE,
        }
    }

    /// Address words of one prefix in a tail record.
    fn tail_address_words(self) -> usize {
        match self {
            Family::V4 => V4_TAIL_WORDS as usize - 1,
            Family::V6 => V6_TAIL_WORDS as usize - 1,
        }
    }

    /// Most prefixes a tail record of this family holds (layout 5 on).
    fn tail_prefixes(self) -> usize {
        match self {
            Family::V4 => V4_TAIL_PREFIXES as usize,
            Family::V6 => V6_TAIL_PREFIXES as usize,
        }
    }
}

/// Bits `[from, from + count)` of a left-aligned address.
fn bits(addr: u128, from: u32, count: u32) -> usize {
    ((addr << from) >> (128 - count)) as usize
}

/// Plain-node slots that must get child nodes for a node to be wide (module docs).
const WIDE_WHEN_NODE_CHILDREN: usize = 12;
/// The most words wide nodes add to a table per prefix (module docs).
#[cfg(test)]
const WIDE_EXTRA_WORDS_PER_PREFIX: usize = 2;

struct Builder {
    family: Family,
    words: Vec<u32>,
    /// Whether IPv4 nodes may be wide (off only to compare against plain-only tables).
    wide: bool,
    /// Most prefixes a tail record holds (1 to build what a layout-4 loader built).
    tail_prefixes: usize,
    /// Whether a lone IPv4 prefix below a slot may be an inline word instead of a record
    /// (off to build what a layout-5 loader built).
    inline: bool,
}

impl Builder {
    fn new(family: Family, words: Vec<u32>, format: Format) -> Builder {
        Builder {
            family,
            words,
            wide: format.wide,
            tail_prefixes: if format.several {
                family.tail_prefixes()
            } else {
                1
            },
            inline: format.inline,
        }
    }

    fn alloc(&mut self, words: u32) -> usize {
        let at = self.words.len();
        self.words.resize(at + words as usize, 0);
        at
    }

    /// Fill the node at `node` (covering addresses that share their first `depth` bits,
    /// indexed by the next `stride` bits) with `prefixes` (all longer than `depth`, all
    /// inside the node, sorted), where no prefix answers `default`.
    fn node(
        &mut self,
        node: usize,
        depth: u32,
        stride: u32,
        prefixes: &[TablePrefix],
        default: u32,
    ) {
        let end = depth + stride;
        self.words[node..node + (1 << stride)].fill(default);
        for p in prefixes.iter().filter(|p| u32::from(p.len) <= end) {
            let first = bits(p.addr, depth, stride);
            let span = 1usize << (end - u32::from(p.len));
            self.words[node + first..node + first + span].fill(p.leaf);
        }
        let mut deeper = prefixes
            .iter()
            .filter(|p| u32::from(p.len) > end)
            .peekable();
        let mut run: Vec<TablePrefix> = Vec::new();
        while let Some(&p) = deeper.next() {
            run.clear();
            run.push(p);
            let slot = bits(p.addr, depth, stride);
            while let Some(&&q) = deeper.peek() {
                if bits(q.addr, depth, stride) != slot {
                    break;
                }
                run.push(q);
                deeper.next();
            }
            let outside = self.words[node + slot];
            self.words[node + slot] = self.below(end, &run, outside);
        }
    }

    /// The entry of a slot at `depth` bits whose addresses fall under the (non-empty)
    /// `deeper` prefixes, all longer than `depth`, sorted, or else answer `outside`.
    fn below(&mut self, depth: u32, deeper: &[TablePrefix], outside: u32) -> u32 {
        if let Some(word) = self.inline_word(depth, deeper, outside) {
            word
        } else if deeper.len() <= self.tail_prefixes {
            entry::make(entry::TAIL, self.tail(deeper, outside))
        } else {
            let (tag, child_stride) = if self.wide_pays(depth, deeper) {
                (entry::WIDE_NODE, V4_WIDE_STRIDE)
            } else {
                (
                    entry::NODE,
                    self.family.stride().min(self.family.width() - depth),
                )
            };
            let child = self.alloc(1 << child_stride);
            self.node(child, depth, child_stride, deeper, outside);
            entry::make(tag, child as u32)
        }
    }

    /// Whether a node at `depth` over `deeper` (sorted, all longer than `depth`) should be
    /// wide: IPv4, room for the wide stride, and enough of a plain node's slots would need
    /// child nodes with records of one prefix (two or more prefixes longer than the plain
    /// node below them; module docs).
    fn wide_pays(&self, depth: u32, deeper: &[TablePrefix]) -> bool {
        if !self.wide || self.family != Family::V4 || depth + V4_WIDE_STRIDE > 32 {
            return false;
        }
        let end = depth + V4_STRIDE;
        let mut per_slot = [0u8; 1 << V4_STRIDE];
        for p in deeper.iter().filter(|p| u32::from(p.len) > end) {
            let slot = &mut per_slot[bits(p.addr, depth, V4_STRIDE)];
            *slot = slot.saturating_add(1);
        }
        per_slot.iter().filter(|&&n| n >= 2).count() >= WIDE_WHEN_NODE_CHILDREN
    }

    /// The inline word (`filter_common::lookup::inline`) of a slot at `depth` whose only
    /// longer prefix is `deeper[0]`, if it has one prefix, the table is IPv4 and the word
    /// holds it.
    fn inline_word(&self, depth: u32, deeper: &[TablePrefix], outside: u32) -> Option<u32> {
        let [p] = deeper else { return None };
        if !self.inline || self.family != Family::V4 {
            return None;
        }
        let len = u32::from(p.len) - depth;
        inline::pack(bits(p.addr, depth, len) as u32, len, p.leaf, outside)
    }

    /// Append the tail record of `prefixes` (1 to the family's [`Family::tail_prefixes`]):
    /// longest first, so the first one that contains an address is the longest match
    /// (prefixes of one length are disjoint), each answering `outside` when it does not.
    /// Returns the tail word's payload.
    fn tail(&mut self, prefixes: &[TablePrefix], outside: u32) -> u32 {
        let mut longest_first = prefixes.to_vec();
        longest_first.sort_by_key(|p| std::cmp::Reverse(p.len));
        let at = self.words.len();
        let words = self.family.tail_address_words();
        for p in &longest_first {
            for w in 0..words {
                self.words.push((p.addr >> (96 - 32 * w)) as u32);
            }
            self.words
                .push(tail::pack(p.leaf, outside, u32::from(p.len)));
        }
        tail::reference(at as u32, prefixes.len() as u32)
    }
}

/// Build the table of one family with a root of `root_bits` (the capacity's:
/// `filter_common::lookup::Shape::root_bits_for`). `prefixes` must be distinct (address,
/// length) pairs with host bits clear; they need not be sorted. Indices inside are relative
/// to the table start.
pub fn build(family: Family, prefixes: &mut [TablePrefix], root_bits: u32) -> Vec<u32> {
    build_with(family, prefixes, Format::LATEST, root_bits)
}

/// What the builder may write, as the loader of each layout wrote it.
#[derive(Clone, Copy)]
struct Format {
    /// Wide IPv4 nodes (layout 4 on).
    wide: bool,
    /// Records of several prefixes (layout 5 on).
    several: bool,
    /// Inline IPv4 prefixes (layout 6 on).
    inline: bool,
}

impl Format {
    const LATEST: Format = Format {
        wide: true,
        several: true,
        inline: true,
    };
    /// Plain nodes and records of one prefix.
    const LAYOUT3: Format = Format {
        wide: false,
        several: false,
        inline: false,
    };
}

/// An IPv4 table as a layout-3 loader built it: a [`V4_LEGACY_ROOT_BITS`] root, no wide
/// nodes. What a take-over finds in the active generation; for tests of the program's
/// reading of it ([`lookup`] does not read it).
pub fn build_layout3_v4(prefixes: &mut [TablePrefix]) -> Vec<u32> {
    build_with(Family::V4, prefixes, Format::LAYOUT3, V4_LEGACY_ROOT_BITS)
}

/// A table as a layout-4 loader built it: a tail record per prefix, a node wherever two or
/// more longer prefixes share a slot (IPv4 nodes wide where 12 slots of a plain one would
/// need child nodes). What a take-over from layout 4 finds in the active generation; for
/// tests of the program's reading of it ([`lookup`] reads it too).
pub fn build_layout4(family: Family, prefixes: &mut [TablePrefix], root_bits: u32) -> Vec<u32> {
    let format = Format {
        several: false,
        inline: false,
        ..Format::LATEST
    };
    build_with(family, prefixes, format, root_bits)
}

/// A table as a layout-5 loader built it: records of several prefixes, no inline IPv4
/// prefixes. What a take-over from layout 5 finds in the active generation; for tests of
/// the program's reading of it ([`lookup`] reads it too).
pub fn build_layout5(family: Family, prefixes: &mut [TablePrefix], root_bits: u32) -> Vec<u32> {
    let format = Format {
        inline: false,
        ..Format::LATEST
    };
    build_with(family, prefixes, format, root_bits)
}

/// [`build`] in `format`, with a root of `root_bits`.
fn build_with(
    family: Family,
    prefixes: &mut [TablePrefix],
    format: Format,
    root_bits: u32,
) -> Vec<u32> {
    prefixes.sort_unstable();
    let mut builder = Builder::new(family, Vec::new(), format);
    let root = builder.alloc(1 << root_bits);
    // The root covers everything: prefixes of length 0 are just short ones there.
    builder.node(root, 0, root_bits, prefixes, 0);
    builder.words
}

/// Rebuild root slot `slot` of an existing table in place: its entry becomes `outside` (the
/// leaf of the longest prefix of at most the root's `root_bits` bits covering the slot, or 0)
/// when `deeper` is empty, else a subtree for `deeper` (the prefixes longer than the root
/// inside the slot, sorted) appended to `words`. The slot's old subtree stays
/// behind, unreachable, until the next full [`build`]; returns the words appended.
pub fn rebuild_root_slot(
    family: Family,
    root_bits: u32,
    words: &mut Vec<u32>,
    slot: usize,
    deeper: &[TablePrefix],
    outside: u32,
) -> usize {
    debug_assert!(deeper
        .iter()
        .all(|p| u32::from(p.len) > root_bits && bits(p.addr, 0, root_bits) == slot));
    let before = words.len();
    let mut builder = Builder::new(family, std::mem::take(words), Format::LATEST);
    builder.words[slot] = if deeper.is_empty() {
        outside
    } else {
        builder.below(root_bits, deeper, outside)
    };
    *words = builder.words;
    words.len() - before
}

/// Look `addr` (left-aligned) up in a table the way the program does; the leaf value.
/// For tests and `nodegate check --explain`-style tools: the kernel has its own copy of this
/// walk (`filter-ebpf/src/lookup.rs`).
pub fn lookup(family: Family, root_bits: u32, words: &[u32], addr: u128) -> u32 {
    let mut depth = root_bits;
    let mut word = words[bits(addr, 0, depth)];
    while entry::is_node(entry::tag(word)) {
        let stride = match family {
            Family::V4 => entry::v4_stride(entry::tag(word), 32 - depth),
            Family::V6 => family.stride(),
        };
        let at = (word & entry::PAYLOAD) as usize;
        word = words[at + bits(addr, depth, stride)];
        depth += stride;
    }
    if entry::tag(word) != entry::TAIL {
        // Inline prefixes are IPv4 only; a plain leaf comes back as it is.
        let rest = if depth < 32 {
            (addr << depth >> 96) as u32
        } else {
            0
        };
        return inline::resolve(word, rest);
    }
    let payload = word & entry::PAYLOAD;
    let at = tail::at(payload) as usize;
    let address_words = family.tail_address_words();
    let records = (0..tail::count(payload) as usize).map(|i| {
        let record = at + i * (address_words + 1);
        let prefix = (0..address_words)
            .fold(0u128, |acc, w| (acc << 32) | u128::from(words[record + w]))
            << (128 - 32 * address_words);
        (prefix, words[record + address_words])
    });
    let mut outside = 0;
    for (prefix, packed) in records {
        let len = tail::len(packed);
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        if (addr ^ prefix) & mask == 0 {
            return tail::inside(packed);
        }
        outside = tail::outside(packed);
    }
    outside
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use filter_common::lookup::{V4_LARGE_ROOT_BITS, V4_ROOT_BITS, V6_ROOT_BITS};

    use super::*;

    /// The root every test table has unless it says otherwise: the default capacity's.
    fn root(family: Family) -> u32 {
        match family {
            Family::V4 => V4_ROOT_BITS,
            Family::V6 => V6_ROOT_BITS,
        }
    }

    /// Longest-prefix match by brute force: the oracle for these tests.
    fn brute(prefixes: &[TablePrefix], addr: u128) -> u32 {
        prefixes
            .iter()
            .filter(|p| p.len == 0 || (addr ^ p.addr) >> (128 - u32::from(p.len)) == 0)
            .max_by_key(|p| p.len)
            .map_or(0, |p| p.leaf)
    }

    fn prefix(family: Family, addr: u128, len: u8, leaf: u32) -> TablePrefix {
        let width = family.width();
        let addr = if width == 32 { addr << 96 } else { addr };
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        };
        TablePrefix {
            addr: addr & mask,
            len,
            leaf,
        }
    }

    fn dedup(mut v: Vec<TablePrefix>) -> Vec<TablePrefix> {
        v.sort_unstable_by_key(|p| (p.addr, p.len));
        v.dedup_by_key(|p| (p.addr, p.len));
        v
    }

    /// Every prefix's first and last address, ±1, agree with brute force.
    /// With every root the family's tables can have (IPv4: 18 bits, and 20 for large
    /// capacities).
    fn check_boundaries(family: Family, prefixes: Vec<TablePrefix>) {
        let roots: &[u32] = match family {
            Family::V4 => &[V4_ROOT_BITS, V4_LARGE_ROOT_BITS],
            Family::V6 => &[V6_ROOT_BITS],
        };
        let mut prefixes = dedup(prefixes);
        let top: u128 = if family == Family::V4 {
            (u128::from(u32::MAX)) << 96
        } else {
            u128::MAX
        };
        let unit: u128 = if family == Family::V4 { 1 << 96 } else { 1 };
        for &root_bits in roots {
            let table = build(family, &mut prefixes, root_bits);
            for p in &prefixes {
                let last = p.addr
                    | if p.len == 0 {
                        top
                    } else {
                        top & !(u128::MAX << (128 - u32::from(p.len)))
                    };
                for a in [
                    p.addr,
                    last,
                    p.addr.wrapping_sub(unit) & top,
                    last.wrapping_add(unit) & top,
                ] {
                    assert_eq!(
                        lookup(family, root_bits, &table, a),
                        brute(&prefixes, a),
                        "{family:?} root {root_bits} address {a:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_length_nested_in_one_chain() {
        for family in [Family::V4, Family::V6] {
            let width = family.width() as u8;
            let addr: u128 = if family == Family::V4 {
                0x0a01_0203
            } else {
                0x2001_0db8_0000_0000_0000_0000_0000_0001
            };
            let set = (0..=width)
                .map(|len| prefix(family, addr, len, u32::from(len) + 1))
                .collect();
            check_boundaries(family, set);
        }
    }

    /// 64 pairs of /32s in one /18: all of a plain node's /22 slots hold two or more, so
    /// the /18 gets a wide node, and each pair, alone in its /26,
    /// becomes one record of two (4 words) instead of a chain of nodes down to /32.
    #[test]
    fn pairs_of_host_routes_differing_in_the_last_bit_share_one_record() {
        let set: Vec<_> = (0..64u128)
            .flat_map(|i| {
                [
                    prefix(Family::V4, i << 8, 32, 1),
                    prefix(Family::V4, (i << 8) | 1, 32, 2),
                ]
            })
            .collect();
        let mut sorted = dedup(set.clone());
        let table = build(Family::V4, &mut sorted, root(Family::V4));
        assert_eq!(entry::tag(table[0]), entry::WIDE_NODE);
        assert_eq!(table.len(), (1 << V4_ROOT_BITS) + 256 + 64 * 4);
        let singles = build_layout4(Family::V4, &mut sorted, V4_ROOT_BITS);
        assert!(
            singles.len() > table.len() + 64 * 4,
            "records of one need /30 nodes"
        );
        check_boundaries(Family::V4, set);
    }

    /// Every /24 of 10.1.0.0/16 holds two /32s: a plain node's 16 slots at /22 below each
    /// /18 root slot would all need children, so the /18s' nodes are wide, every lookup
    /// below them reads one word less, and the table is no larger than with plain nodes.
    #[test]
    fn a_dense_slash_16_gets_wide_nodes_that_cost_no_extra_words() {
        let set: Vec<_> = (0..256u128)
            .flat_map(|i| {
                [
                    prefix(Family::V4, 0x0a01_0000 | i << 8 | 1, 32, 1),
                    prefix(Family::V4, 0x0a01_0000 | i << 8 | 9, 32, 2),
                ]
            })
            .collect();
        let mut sorted = dedup(set.clone());
        let wide = build(Family::V4, &mut sorted, root(Family::V4));
        let plain = build_with(Family::V4, &mut sorted, Format::LAYOUT3, V4_ROOT_BITS);
        let slots = (0x0a01_0000 >> (32 - V4_ROOT_BITS))..(0x0a02_0000 >> (32 - V4_ROOT_BITS));
        for slot in slots {
            assert_eq!(entry::tag(wide[slot]), entry::WIDE_NODE);
            assert_eq!(entry::tag(plain[slot]), entry::NODE);
        }
        assert!(
            wide.len() <= plain.len(),
            "{} > {}",
            wide.len(),
            plain.len()
        );
        check_boundaries(Family::V4, set);
    }

    /// The shape of an export or a blocklist (and of the benches' lists): 100k /16-/32
    /// prefixes inside 10.0.0.0/8. Most of its /18 root slots start with a wide node, and a
    /// lookup of an address inside a prefix reads fewer words than with plain nodes only.
    #[test]
    fn an_export_shaped_set_starts_most_slash_18s_with_a_wide_node() {
        let mut next = lcg(0x6e67_7769_6465_0001);
        let set: Vec<_> = (0..100_000)
            .map(|_| {
                let len = 16 + (next() % 17) as u8;
                prefix(
                    Family::V4,
                    u128::from(0x0a00_0000 | (next() & 0x00ff_ffff)),
                    len,
                    1,
                )
            })
            .collect();
        let mut sorted = dedup(set);
        let table = build(Family::V4, &mut sorted, root(Family::V4));
        let plain = build_with(
            Family::V4,
            &mut sorted,
            Format {
                wide: false,
                ..Format::LATEST
            },
            V4_ROOT_BITS,
        );
        let slots = (0x0a00_0000 >> (32 - V4_ROOT_BITS))..(0x0b00_0000 >> (32 - V4_ROOT_BITS));
        let wide = slots
            .clone()
            .filter(|&slot| entry::tag(table[slot]) == entry::WIDE_NODE)
            .count();
        assert!(wide * 2 > slots.len(), "{wide} of {} /18s", slots.len());
        // One address inside each prefix: its host bits from a fixed pattern.
        let inside = |p: &TablePrefix| {
            let host = !(u128::MAX << (128 - u32::from(p.len))) & (u128::from(u32::MAX) << 96);
            p.addr | (host & (0x5a5a_5a5a << 96))
        };
        let reads = |words: &[u32]| -> usize {
            sorted
                .iter()
                .map(|p| dependent_reads(words, inside(p)))
                .sum()
        };
        assert!(reads(&table) < reads(&plain));
    }

    /// A lone prefix below a slot is an inline word when both its answers fit (source
    /// classes 0–30), else a record of one: the answer is the same either way. A random
    /// 100k set reads fewer words with inline prefixes than with layout 5's records.
    #[test]
    fn lone_prefixes_are_inline_words_when_their_answers_fit() {
        for (class, inline) in [(0u32, true), (30, true), (31, false), (400, false)] {
            let p = prefix(Family::V4, 0x0a00_0000, 24, entry::leaf(class));
            let mut set = vec![p];
            let table = build(Family::V4, &mut set, V4_ROOT_BITS);
            let slot = table[0x0a00_0000 >> (32 - V4_ROOT_BITS)];
            assert_eq!(
                slot & inline::FLAG != 0 && entry::tag(slot) == entry::LEAF,
                inline,
                "class {class}"
            );
            assert_eq!(table.len() == 1 << V4_ROOT_BITS, inline);
            check_boundaries(Family::V4, set);
        }
        let mut next = lcg(0x6e67_696e_6c69_6e65);
        let set: Vec<_> = (0..100_000)
            .map(|_| {
                let len = 8 + (next() % 25) as u8;
                let addr = next() & (u32::MAX << (32 - u32::from(len)));
                prefix(Family::V4, u128::from(addr), len, 1)
            })
            .collect();
        let mut sorted = dedup(set);
        let table = build(Family::V4, &mut sorted, V4_ROOT_BITS);
        let records = build_layout5(Family::V4, &mut sorted, V4_ROOT_BITS);
        let sources: Vec<u128> = (0..10_000).map(|_| u128::from(next()) << 96).collect();
        let reads =
            |words: &[u32]| -> usize { sources.iter().map(|&a| dependent_reads(words, a)).sum() };
        let (inline, before) = (reads(&table), reads(&records));
        assert!(
            inline * 100 < before * 90 && table.len() < records.len(),
            "reads {inline} vs {before}, words {} vs {}",
            table.len(),
            records.len()
        );
    }

    /// A small deterministic generator for the large test sets (a 64-bit LCG's high bits).
    fn lcg(mut state: u64) -> impl FnMut() -> u32 {
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as u32
        }
    }

    /// Words a lookup of `addr` reads (root, nodes, a tail record counts once).
    fn dependent_reads(words: &[u32], addr: u128) -> usize {
        let mut depth = V4_ROOT_BITS;
        let mut word = words[bits(addr, 0, depth)];
        let mut reads = 1;
        while entry::is_node(entry::tag(word)) {
            let stride = entry::v4_stride(entry::tag(word), 32 - depth);
            word = words[(word & entry::PAYLOAD) as usize + bits(addr, depth, stride)];
            depth += stride;
            reads += 1;
        }
        reads + usize::from(entry::tag(word) == entry::TAIL)
    }

    #[test]
    fn an_empty_set_answers_nothing_and_a_default_route_answers_everywhere() {
        let mut none = Vec::new();
        let table = build(Family::V4, &mut none, root(Family::V4));
        assert_eq!(
            lookup(Family::V4, root(Family::V4), &table, 0x0a00_0001 << 96),
            0
        );
        check_boundaries(Family::V6, vec![prefix(Family::V6, 0, 0, 7)]);
        check_boundaries(Family::V4, vec![prefix(Family::V4, 0, 0, 7)]);
    }

    #[test]
    fn ipv4_mapped_ipv6_is_plain_ipv6() {
        let mapped = 0xffff_0a00_0000u128;
        check_boundaries(
            Family::V6,
            vec![
                prefix(Family::V6, mapped, 104, 3),
                prefix(Family::V6, mapped | 5, 128, 4),
                prefix(Family::V6, 0, 96, 5),
            ],
        );
    }

    /// Four prefixes under one IPv6 root slot, three of them nested: one tail record of
    /// four, longest first, every answer right; a fifth makes the slot a node again.
    #[test]
    fn crowded_ipv6_slots_share_one_tail_record_longest_first() {
        let base = 0x2001_0db8_0000_0000_0000_0000_0000_0000u128;
        let mut set = vec![
            prefix(Family::V6, base, 40, 1),
            prefix(Family::V6, base | 1 << 60, 64, 2),
            prefix(Family::V6, base | 1 << 60 | 7, 128, 3),
            prefix(Family::V6, base | 0xff << 72, 48, 4),
        ];
        let slot = bits(base, 0, V6_ROOT_BITS);
        let mut sorted = dedup(set.clone());
        let table = build(Family::V6, &mut sorted, V6_ROOT_BITS);
        let word = table[slot];
        assert_eq!(entry::tag(word), entry::TAIL);
        let payload = word & entry::PAYLOAD;
        assert_eq!(tail::count(payload), 4);
        let at = tail::at(payload) as usize;
        let lengths: Vec<u32> = (0..4)
            .map(|i| tail::len(table[at + i * V6_TAIL_WORDS as usize + 4]))
            .collect();
        assert_eq!(lengths, [128, 64, 48, 40]);
        assert_eq!(
            table.len(),
            (1 << V6_ROOT_BITS) + 4 * V6_TAIL_WORDS as usize
        );
        check_boundaries(Family::V6, set.clone());

        set.push(prefix(Family::V6, base | 0x0f << 84, 44, 5));
        let mut sorted = dedup(set.clone());
        let table = build(Family::V6, &mut sorted, V6_ROOT_BITS);
        assert_eq!(entry::tag(table[slot]), entry::NODE);
        check_boundaries(Family::V6, set);
    }

    /// Random IPv6 /32–/128 prefixes crowd two or more into almost half of the root's slots.
    /// With tail records of up to four prefixes such a slot costs a record instead of a
    /// 256-word node: measured 81.5 words a prefix beyond the root with records of one
    /// (layout 4: 31 MiB for these 100k), 8.3 with records of four (the nodes left are the
    /// slots with five or more, about 2% of them).
    #[test]
    fn random_ipv6_prefixes_cost_a_few_words_each() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let set: Vec<_> = (0..100_000)
            .map(|_| {
                let addr = u128::from(next()) << 64 | u128::from(next());
                prefix(Family::V6, addr, 32 + (next() % 97) as u8, 1)
            })
            .collect();
        let mut sorted = dedup(set);
        let count = sorted.len() as f64;
        let per_prefix = |table: &[u32]| (table.len() - (1 << V6_ROOT_BITS)) as f64 / count;
        let records = build(Family::V6, &mut sorted, V6_ROOT_BITS);
        let singles = build_layout4(Family::V6, &mut sorted, V6_ROOT_BITS);
        assert!(per_prefix(&records) < 9.0, "{}", per_prefix(&records));
        assert!(per_prefix(&singles) > 80.0, "{}", per_prefix(&singles));
    }

    fn arb_set(family: Family, max: usize) -> impl Strategy<Value = Vec<TablePrefix>> {
        let width = family.width() as u8;
        // Cluster the addresses so that prefixes nest and share nodes, not only tails.
        let addr = prop_oneof![
            any::<u128>(),
            (0u128..64).prop_map(move |x| if width == 32 {
                0x0a00_0000 | x << 2
            } else {
                0x2001_0db8u128 << 96 | x << 70
            }),
        ];
        prop::collection::vec((addr, 0..=width, 1u32..=512), 1..max).prop_map(move |v| {
            v.into_iter()
                .map(|(a, l, leaf)| prefix(family, a, l, leaf))
                .collect()
        })
    }

    /// A table with the family's records of several prefixes against one with records of
    /// one (layout 4's): the same answer at `probes` and at every prefix's first address,
    /// and no more words.
    fn records_answer_as_singles(
        family: Family,
        set: Vec<TablePrefix>,
        probes: impl IntoIterator<Item = u128>,
    ) -> Result<(), TestCaseError> {
        let mut sorted = dedup(set);
        let root_bits = root(family);
        let records = build(family, &mut sorted, root_bits);
        let singles = build_layout4(family, &mut sorted, root_bits);
        prop_assert!(records.len() <= singles.len());
        for a in probes.into_iter().chain(sorted.iter().map(|p| p.addr)) {
            prop_assert_eq!(
                lookup(family, root_bits, &records, a),
                lookup(family, root_bits, &singles, a)
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn ipv4_tables_agree_with_brute_force(set in arb_set(Family::V4, 300), probes in prop::collection::vec(any::<u32>(), 64)) {
            check_boundaries(Family::V4, set.clone());
            let mut sorted = dedup(set);
            let table = build(Family::V4, &mut sorted, root(Family::V4));
            for a in probes {
                let a = u128::from(a) << 96;
                prop_assert_eq!(lookup(Family::V4, root(Family::V4), &table, a), brute(&sorted, a));
            }
        }

        /// Wide nodes add at most 2 words a prefix and never change an answer.
        #[test]
        fn wide_nodes_add_at_most_two_words_a_prefix(set in arb_set(Family::V4, 600), probes in prop::collection::vec(any::<u32>(), 64)) {
            let mut sorted = dedup(set);
            let wide = build(Family::V4, &mut sorted, root(Family::V4));
            let plain = build_with(Family::V4, &mut sorted, Format::LAYOUT3, V4_ROOT_BITS);
            prop_assert!(wide.len() <= plain.len() + WIDE_EXTRA_WORDS_PER_PREFIX * sorted.len());
            for a in probes {
                let a = u128::from(a) << 96;
                prop_assert_eq!(lookup(Family::V4, root(Family::V4), &wide, a), lookup(Family::V4, root(Family::V4), &plain, a));
            }
        }

        /// Inline prefixes answer what layout 5's records of one answer, in fewer words, at
        /// either IPv4 root.
        #[test]
        fn inline_prefixes_answer_as_records(set in arb_set(Family::V4, 300), probes in prop::collection::vec(any::<u32>(), 64), large in any::<bool>()) {
            check_boundaries(Family::V4, set.clone());
            let mut sorted = dedup(set);
            let root_bits = if large { V4_LARGE_ROOT_BITS } else { V4_ROOT_BITS };
            let inline = build(Family::V4, &mut sorted, root_bits);
            let records = build_layout5(Family::V4, &mut sorted, root_bits);
            prop_assert!(inline.len() <= records.len());
            for a in probes.into_iter().map(|a| u128::from(a) << 96).chain(sorted.iter().map(|p| p.addr)) {
                prop_assert_eq!(lookup(Family::V4, root_bits, &inline, a), lookup(Family::V4, root_bits, &records, a));
            }
        }

        /// Tail records of several prefixes answer what records of one (layout 4) answer,
        /// in fewer words.
        #[test]
        fn ipv4_records_of_two_answer_as_records_of_one(set in arb_set(Family::V4, 300), probes in prop::collection::vec(any::<u32>(), 64)) {
            records_answer_as_singles(Family::V4, set, probes.into_iter().map(|a| u128::from(a) << 96))?;
        }

        #[test]
        fn ipv6_records_of_several_prefixes_answer_as_records_of_one(set in arb_set(Family::V6, 200), probes in prop::collection::vec(any::<u128>(), 64)) {
            records_answer_as_singles(Family::V6, set, probes)?;
        }

        #[test]
        fn ipv6_tables_agree_with_brute_force(set in arb_set(Family::V6, 200), probes in prop::collection::vec(any::<u128>(), 64)) {
            check_boundaries(Family::V6, set.clone());
            let mut sorted = dedup(set);
            let table = build(Family::V6, &mut sorted, root(Family::V6));
            for a in probes {
                prop_assert_eq!(lookup(Family::V6, root(Family::V6), &table, a), brute(&sorted, a));
            }
        }
    }
}
