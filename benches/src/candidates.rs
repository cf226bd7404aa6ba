//! Other source lookup structures, built here and walked in the kernel by the benches'
//! lookup-candidates program (`filter-ebpf/src/candidates/main.rs`), so that the flat table
//! nodegate ships is chosen by measurement against them (`ng-bench lookup`,
//! docs/ARCHITECTURE.md "Source lookup"):
//!
//! - [`dxr`] (IPv4): DXR (Zec, Rizzo, Mikuc 2012) in its D18R form: a direct table indexed by
//!   the top 18 bits whose entry is either the answer or a range of a sorted range table,
//!   which the lookup searches by bisection (one dependent read per halving).
//! - [`poptrie`] (IPv4 and IPv6): poptrie (Asai, Ohara 2015): a direct table (18 bits for
//!   IPv4, 16 for IPv6, as nodegate's roots), then nodes of 6 bits holding a 64-bit child
//!   vector and a 64-bit leaf vector; a child's or leaf's index is a population count of the
//!   vector below the address's bits. BPF has no popcount instruction: the compiler writes it
//!   out (a dozen shifts, masks and one multiply).
//!
//! Both are built into one array of 32-bit words, as nodegate's table is (two to a map
//! element), and answer with the same leaf values: 0 outside every prefix, else the prefix's
//! answer. Each builder has a userspace lookup that mirrors the program's walk word for word,
//! which the tests below hold against a plain longest-prefix match; the benchmark holds the
//! programs' answers against [`Oracle`].
//!
//! Addresses are `u128`, most significant bit first (IPv4 in the top 32 bits), as in
//! `filter_user::compiler::lookup`.

use std::collections::HashMap;

use ipnet::{Ipv4Net, Ipv6Net};

/// One prefix and what a lookup inside it (and in no longer prefix) answers (non-zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// Address bits, most significant first; host bits clear.
    pub addr: u128,
    pub len: u32,
    pub answer: u32,
}

/// The first `len` bits of an address set.
fn mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

impl Prefix {
    /// The IPv4 prefixes of `list`, answering 1 to `answers` in turn. Several answers, as
    /// several rules give: with one, a random /8–/32 set of 100k lists every /8, and a
    /// structure that merges equal neighbours (DXR's ranges, poptrie's leaves) would hold one
    /// answer for the whole address space, measuring nothing.
    pub fn v4_with_answers(list: &[Ipv4Net], answers: u32) -> Vec<Prefix> {
        let nets = list.iter().map(|n| {
            let addr = u128::from(u32::from(n.network())) << 96;
            (addr, u32::from(n.prefix_len()))
        });
        Prefix::with_answers(nets, answers)
    }

    /// [`Prefix::v4_with_answers`] for IPv6.
    pub fn v6_with_answers(list: &[Ipv6Net], answers: u32) -> Vec<Prefix> {
        let nets = list
            .iter()
            .map(|n| (u128::from(n.network()), u32::from(n.prefix_len())));
        Prefix::with_answers(nets, answers)
    }

    fn with_answers(nets: impl Iterator<Item = (u128, u32)>, answers: u32) -> Vec<Prefix> {
        nets.zip((1..=answers).cycle())
            .map(|((addr, len), answer)| Prefix { addr, len, answer })
            .collect()
    }

    fn contains(&self, addr: u128) -> bool {
        (addr ^ self.addr) & mask(self.len) == 0
    }
}

/// The longest prefix of `prefixes` containing `addr`, by a plain scan: the tests' oracle.
pub fn longest_match(prefixes: &[Prefix], addr: u128) -> u32 {
    prefixes
        .iter()
        .filter(|p| p.contains(addr))
        .max_by_key(|p| p.len)
        .map_or(0, |p| p.answer)
}

/// The answers of a prefix set by exact match per length, longest first: one hash lookup
/// per length the set has, fast enough to check every frame a benchmark sends against a
/// million prefixes, and built on nothing the candidates share.
pub struct Oracle {
    /// Lengths present, longest first, with their prefixes.
    by_len: Vec<(u32, HashMap<u128, u32>)>,
}

impl Oracle {
    pub fn new(prefixes: &[Prefix]) -> Oracle {
        let mut at: Vec<HashMap<u128, u32>> = vec![HashMap::new(); 129];
        for p in prefixes {
            at[p.len as usize].insert(p.addr, p.answer);
        }
        let by_len = (0..=128u32)
            .rev()
            .zip(at.into_iter().rev())
            .filter(|(_, at_len)| !at_len.is_empty())
            .collect();
        Oracle { by_len }
    }

    /// The answer at `addr`: the longest prefix's containing it, 0 if none.
    pub fn answer(&self, addr: u128) -> u32 {
        self.by_len
            .iter()
            .find_map(|(len, at_len)| at_len.get(&(addr & mask(*len))).copied())
            .unwrap_or(0)
    }
}

/// The prefixes split at a direct table of `direct_bits`: the answer each of its chunks
/// starts from (the longest prefix of at most `direct_bits` covering it, 0 if none), and
/// each chunk's longer prefixes (chunk-relative: address bits below the chunk, left-aligned,
/// and length past it), grouped by chunk.
struct Chunks {
    defaults: Vec<u32>,
    longer: Vec<(usize, Vec<Prefix>)>,
}

impl Chunks {
    fn split(prefixes: &[Prefix], direct_bits: u32) -> Chunks {
        let chunk_of = |addr: u128| (addr >> (128 - direct_bits)) as usize;
        let mut short: Vec<&Prefix> = prefixes.iter().filter(|p| p.len <= direct_bits).collect();
        // Longer prefixes paint over shorter ones.
        short.sort_by_key(|p| p.len);
        let mut defaults = vec![0u32; 1 << direct_bits];
        for p in short {
            let first = chunk_of(p.addr);
            defaults[first..first + (1 << (direct_bits - p.len))].fill(p.answer);
        }
        let mut long: Vec<Prefix> = prefixes
            .iter()
            .filter(|p| p.len > direct_bits)
            .copied()
            .collect();
        long.sort_by_key(|p| (p.addr, p.len));
        let mut longer: Vec<(usize, Vec<Prefix>)> = Vec::new();
        for p in long {
            let chunk = chunk_of(p.addr);
            let relative = Prefix {
                addr: p.addr << direct_bits,
                len: p.len - direct_bits,
                answer: p.answer,
            };
            match longer.last_mut() {
                Some((c, list)) if *c == chunk => list.push(relative),
                _ => longer.push((chunk, vec![relative])),
            }
        }
        Chunks { defaults, longer }
    }
}

/// The answer at `at` (relative to the prefixes of `inside`): the longest of `inside`
/// containing it, else `default`.
fn answer_at(inside: &[Prefix], default: u32, at: u128) -> u32 {
    inside
        .iter()
        .filter(|p| p.contains(at))
        .max_by_key(|p| p.len)
        .map_or(default, |p| p.answer)
}

/// A built structure: its words.
pub struct Built {
    pub words: Vec<u32>,
}

impl Built {
    /// Bytes of one copy.
    pub fn bytes(&self) -> usize {
        self.words.len() * 4
    }

    /// Map elements (`u64`, two words each) the words take.
    pub fn elements(&self) -> u32 {
        self.words.len().div_ceil(2) as u32
    }
}

pub mod dxr {
    //! D18R (IPv4): `words[0..2^18]` is the direct table; a word with [`RANGES`] set points
    //! at `count` range words (`index`, `count - 1` packed below), each the chunk-relative
    //! start of a range (14 bits) over its answer (18 bits), sorted by start, the first at 0.
    //! The lookup bisects for the last range starting at or before the address.

    use super::*;

    /// Address bits of the direct table.
    pub const DIRECT_BITS: u32 = 18;
    const CHUNK_BITS: u32 = 32 - DIRECT_BITS;
    /// Set in a direct word that points at ranges.
    pub const RANGES: u32 = 1 << 31;
    /// Bits of a direct word's range index.
    pub const INDEX_BITS: u32 = 22;
    /// Most ranges of one chunk: `COUNT_BITS` bits hold `count - 1`; the program bisects in
    /// `COUNT_BITS` steps.
    pub const COUNT_BITS: u32 = 9;
    /// Bits of a range word's answer.
    pub const ANSWER_BITS: u32 = 32 - CHUNK_BITS;
    const _: () = assert!(INDEX_BITS + COUNT_BITS + 1 == 32);

    /// Build the table of IPv4 `prefixes`, or say why this variant cannot hold the set.
    pub fn build(prefixes: &[Prefix]) -> Result<Built, String> {
        let chunks = Chunks::split(prefixes, DIRECT_BITS);
        let mut words = chunks.defaults.clone();
        // A chunk-relative address's offset in the chunk, and back.
        let offset = |relative: u128| (relative >> (128 - CHUNK_BITS)) as u32;
        let relative = |offset: u32| u128::from(offset) << (128 - CHUNK_BITS);
        for (chunk, inside) in &chunks.longer {
            let default = chunks.defaults[*chunk];
            // Where the answer may change: each prefix's first address and the one past
            // its last.
            let mut starts = vec![0u32];
            for p in inside {
                let end = offset(p.addr) + (1 << (CHUNK_BITS - p.len));
                starts.push(offset(p.addr));
                if end < 1 << CHUNK_BITS {
                    starts.push(end);
                }
            }
            starts.sort_unstable();
            starts.dedup();
            let mut ranges: Vec<(u32, u32)> = Vec::new();
            for start in starts {
                let answer = answer_at(inside, default, relative(start));
                if ranges.last().is_none_or(|&(_, a)| a != answer) {
                    ranges.push((start, answer));
                }
            }
            if ranges.len() == 1 {
                words[*chunk] = ranges[0].1;
                continue;
            }
            let index = words.len() as u32;
            if ranges.len() > 1 << COUNT_BITS || index >= 1 << INDEX_BITS {
                return Err(format!(
                    "DXR variant limits: chunk {chunk} has {} ranges (at most {}), range index \
                     {index} (below {})",
                    ranges.len(),
                    1 << COUNT_BITS,
                    1u32 << INDEX_BITS
                ));
            }
            words[*chunk] = RANGES | ((ranges.len() as u32 - 1) << INDEX_BITS) | index;
            for (start, answer) in ranges {
                if answer >= 1 << ANSWER_BITS {
                    return Err(format!("answer {answer} does not fit {ANSWER_BITS} bits"));
                }
                words.push((start << ANSWER_BITS) | answer);
            }
        }
        Ok(Built { words })
    }

    /// The program's walk (`candidates/main.rs`, `dxr`), on the words.
    pub fn lookup(words: &[u32], addr: u32) -> u32 {
        let direct = words[(addr >> CHUNK_BITS) as usize];
        if direct & RANGES == 0 {
            return direct;
        }
        let index = direct & ((1 << INDEX_BITS) - 1);
        let count = ((direct >> INDEX_BITS) & ((1 << COUNT_BITS) - 1)) + 1;
        let key = addr & ((1 << CHUNK_BITS) - 1);
        let mut low = 0;
        let mut step = 1 << (COUNT_BITS - 1);
        while step > 0 {
            if low + step < count && words[(index + low + step) as usize] >> ANSWER_BITS <= key {
                low += step;
            }
            step >>= 1;
        }
        words[(index + low) as usize] & ((1 << ANSWER_BITS) - 1)
    }
}

pub mod poptrie {
    //! `words[0..2^direct_bits]` is the direct table: a word with [`LEAF`] set is the answer
    //! (below it), else the word index of a node. A node is [`NODE_WORDS`] words at an even
    //! index (three map elements): the child vector, the leaf vector, then the leaves' and the
    //! children's word indexes. Bit `v` of the child vector is set when the node's `v`-th
    //! slot (the next bits of the address, [`Shape::strides`]) has a child node; the children
    //! follow one another from their index in slot order, so slot `v`'s is the popcount of
    //! the vector up to `v`, less one. The other slots are leaves, compressed: bit `v` of the
    //! leaf vector is set where a run of equal answers starts, so a leaf slot's answer is at
    //! the popcount of the leaf vector up to `v`, less one.

    use super::*;

    /// Set in a direct word that is an answer.
    pub const LEAF: u32 = 1 << 31;
    /// Words of a node.
    pub const NODE_WORDS: u32 = 6;

    /// A family's direct table and node strides.
    #[derive(Clone, Copy)]
    pub struct Shape {
        pub direct_bits: u32,
        pub strides: &'static [u32],
    }

    /// IPv4: 18 bits direct (as nodegate's root), then 6, 6 and 2.
    pub const V4: Shape = Shape {
        direct_bits: 18,
        strides: &[6, 6, 2],
    };
    /// IPv6: 16 bits direct (as nodegate's root), then 18 nodes of 6 and one of 4.
    pub const V6: Shape = Shape {
        direct_bits: 16,
        strides: &[6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 4],
    };
    const _: () = {
        let (mut v4, mut v6, mut i) = (V4.direct_bits, V6.direct_bits, 0);
        while i < V4.strides.len() {
            v4 += V4.strides[i];
            i += 1;
        }
        i = 0;
        while i < V6.strides.len() {
            v6 += V6.strides[i];
            i += 1;
        }
        assert!(v4 == 32 && v6 == 128);
    };

    /// Build the table of `prefixes` in `shape`.
    pub fn build(prefixes: &[Prefix], shape: Shape) -> Built {
        let chunks = Chunks::split(prefixes, shape.direct_bits);
        let mut words: Vec<u32> = chunks.defaults.iter().map(|&a| a | LEAF).collect();
        for (chunk, inside) in &chunks.longer {
            let default = chunks.defaults[*chunk];
            let at = new_node(&mut words);
            words[*chunk] = at;
            fill(&mut words, at, (inside, default), (0, 0), shape.strides);
        }
        Built { words }
    }

    /// Room for one more node at the end of `words`, at an even index.
    fn new_node(words: &mut Vec<u32>) -> u32 {
        if words.len() % 2 == 1 {
            words.push(0);
        }
        let at = words.len() as u32;
        words.resize(words.len() + NODE_WORDS as usize, 0);
        at
    }

    /// Fill the node at `at` for the subtree at chunk-relative `base` (left-aligned, `depth`
    /// bits below the direct table) whose slots take the first of `strides`, holding `inside`
    /// (the prefixes longer than `depth`), where no longer prefix answers `default`.
    fn fill(
        words: &mut Vec<u32>,
        at: u32,
        (inside, default): (&[Prefix], u32),
        (base, depth): (u128, u32),
        strides: &[u32],
    ) {
        let stride = strides[0];
        let below = depth + stride;
        let slot_of = |v: u32| base | (u128::from(v) << (128 - below));
        // The prefixes that end within this node's bits: they decide its slots' answers.
        let ending: Vec<Prefix> = inside.iter().filter(|p| p.len <= below).copied().collect();
        // Per slot: the prefixes below it, and the answer of its longest prefix ending at
        // or above the slot's depth.
        let slots: Vec<(Vec<Prefix>, u32)> = (0..1u32 << stride)
            .map(|v| {
                let slot = slot_of(v);
                let deeper: Vec<Prefix> = inside
                    .iter()
                    .filter(|p| p.len > below && (p.addr ^ slot) & mask(below) == 0)
                    .copied()
                    .collect();
                (deeper, answer_at(&ending, default, slot))
            })
            .collect();
        let (mut children, mut leafvec, mut leaves) = (0u64, 0u64, Vec::new());
        let mut last = None;
        for (v, (deeper, answer)) in slots.iter().enumerate() {
            if deeper.is_empty() {
                if last != Some(*answer) {
                    leafvec |= 1 << v;
                    leaves.push(*answer);
                    last = Some(*answer);
                }
            } else {
                children |= 1 << v;
            }
        }
        // Leaves first, then the children, each contiguous.
        let leaf_at = words.len() as u32;
        words.extend(&leaves);
        let first_child = match children.count_ones() {
            0 => 0,
            count => {
                let first = new_node(words);
                for _ in 1..count {
                    new_node(words);
                }
                first
            }
        };
        let node = at as usize;
        words[node..node + NODE_WORDS as usize].copy_from_slice(&[
            children as u32,
            (children >> 32) as u32,
            leafvec as u32,
            (leafvec >> 32) as u32,
            leaf_at,
            first_child,
        ]);
        let mut child = first_child;
        for (v, (deeper, answer)) in slots.iter().enumerate() {
            if !deeper.is_empty() {
                let subtree = (slot_of(v as u32), below);
                fill(words, child, (deeper, *answer), subtree, &strides[1..]);
                child += NODE_WORDS;
            }
        }
    }

    /// The program's walk (`candidates/main.rs`, `poptrie`), on the words.
    pub fn lookup(words: &[u32], shape: Shape, addr: u128) -> u32 {
        let direct = words[(addr >> (128 - shape.direct_bits)) as usize];
        if direct & LEAF != 0 {
            return direct & !LEAF;
        }
        let (mut node, mut rest) = (direct as usize, addr << shape.direct_bits);
        for &stride in shape.strides {
            let pair =
                |i: usize| u64::from(words[node + i]) | (u64::from(words[node + i + 1]) << 32);
            let (children, leafvec) = (pair(0), pair(2));
            let v = (rest >> (128 - stride)) as u32;
            let upto = (2u64 << v).wrapping_sub(1);
            if (children >> v) & 1 == 0 {
                let leaf = words[node + 4] + (leafvec & upto).count_ones() - 1;
                return words[leaf as usize];
            }
            node = (words[node + 5] + NODE_WORDS * ((children & upto).count_ones() - 1)) as usize;
            rest <<= stride;
        }
        unreachable!("a node below the last level")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{v4_mixed_prefixes, v6_mixed_prefixes, Rng};
    use rand::{Rng as _, SeedableRng as _};

    fn v4(addr: u32, len: u32, answer: u32) -> Prefix {
        Prefix {
            addr: u128::from(addr) << 96,
            len,
            answer,
        }
    }

    /// Addresses to probe `prefixes` at: every prefix's first and last address, one before
    /// and one past each (within the family's `bits`), and random ones.
    fn probes(prefixes: &[Prefix], bits: u32, rng: &mut Rng) -> Vec<u128> {
        let family = mask(bits);
        let mut at: Vec<u128> = (0..20_000)
            .map(|_| ((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) & family)
            .collect();
        for p in prefixes {
            let last = (p.addr | !mask(p.len)) & family;
            let step = 1u128 << (128 - bits);
            at.extend([
                p.addr,
                last,
                p.addr.wrapping_sub(step) & family,
                last.wrapping_add(step) & family,
            ]);
        }
        at
    }

    /// Each of `walks` (and the oracle) answers like a plain longest-prefix match at every
    /// address [`probes`] gives for `prefixes` (of a `bits`-bit family).
    fn assert_answers(
        prefixes: &[Prefix],
        bits: u32,
        seed: u64,
        walks: &[(&str, &dyn Fn(u128) -> u32)],
    ) {
        let oracle = Oracle::new(prefixes);
        for addr in probes(prefixes, bits, &mut Rng::seed_from_u64(seed)) {
            let want = longest_match(prefixes, addr);
            assert_eq!(oracle.answer(addr), want, "oracle at {addr:#x}");
            for (name, walk) in walks {
                assert_eq!(walk(addr), want, "{name} at {addr:#x}");
            }
        }
    }

    /// Nested, adjacent and overlapping prefixes around chunk edges, plus a random mixed set,
    /// with several answers: both candidates (and the oracle) answer like a plain
    /// longest-prefix match at every prefix's edges and at random addresses.
    #[test]
    fn ipv4_candidates_answer_like_a_longest_prefix_match() {
        let mut prefixes = vec![
            v4(0x0a00_0000, 8, 1),
            v4(0x0a01_0000, 16, 2),
            v4(0x0a01_0200, 24, 3),
            v4(0x0a01_0203, 32, 4),
            v4(0x0a01_0204, 31, 5),
            v4(0x0a01_4000, 18, 6),
            v4(0x0a01_7ffc, 30, 7),
            v4(0xc000_2000, 19, 8),
            v4(0xffff_ffff, 32, 9),
        ];
        prefixes.extend(Prefix::v4_with_answers(&v4_mixed_prefixes(3000, 5), 5));
        let dxr = dxr::build(&prefixes).expect("fits");
        let pop = poptrie::build(&prefixes, poptrie::V4);
        assert_answers(
            &prefixes,
            32,
            7,
            &[
                ("dxr", &|a| dxr::lookup(&dxr.words, (a >> 96) as u32)),
                ("poptrie", &|a| poptrie::lookup(&pop.words, poptrie::V4, a)),
            ],
        );
    }

    /// The same for IPv6 poptrie: nesting chains down to /128, neighbours across the direct
    /// table's chunks, and a random /32–/128 set.
    #[test]
    fn ipv6_poptrie_answers_like_a_longest_prefix_match() {
        let base = 0x2001_0db8u128 << 96;
        let mut prefixes = vec![
            Prefix {
                addr: base,
                len: 32,
                answer: 1,
            },
            Prefix {
                addr: base | 1 << 80,
                len: 48,
                answer: 2,
            },
            Prefix {
                addr: base | 1 << 80 | 7,
                len: 128,
                answer: 3,
            },
            Prefix {
                addr: base | 1 << 80 | 6,
                len: 127,
                answer: 4,
            },
            Prefix {
                addr: 0x2001_u128 << 112,
                len: 16,
                answer: 5,
            },
            Prefix {
                addr: 0x2002_u128 << 112,
                len: 17,
                answer: 6,
            },
            Prefix {
                addr: u128::MAX,
                len: 128,
                answer: 7,
            },
        ];
        prefixes.extend(Prefix::v6_with_answers(&v6_mixed_prefixes(2000, 9), 5));
        let pop = poptrie::build(&prefixes, poptrie::V6);
        assert_answers(
            &prefixes,
            128,
            8,
            &[("poptrie", &|a| poptrie::lookup(&pop.words, poptrie::V6, a))],
        );
    }

    /// A chunk with more ranges than the variant holds is refused with the numbers.
    #[test]
    fn dxr_refuses_a_chunk_past_its_range_limit() {
        let prefixes: Vec<Prefix> = (0..600).map(|i| v4(0x0a00_0000 | (i * 8), 30, 1)).collect();
        let error = dxr::build(&prefixes).err().expect("refused");
        assert!(error.contains("ranges (at most 512)"), "{error}");
    }
}
