//! Other IPv4 source lookup structures, built here and walked in the kernel by the
//! benches' lookup-candidates program (`filter-ebpf/src/candidates/main.rs`), so that the
//! flat table nodegate ships is chosen by measurement against them (`ng-bench lookup`,
//! docs/ARCHITECTURE.md "Source lookup"):
//!
//! - [`dxr`]: DXR (Zec, Rizzo, Mikuc 2012) in its D18R form: a direct table indexed by the
//!   top 18 bits whose entry is either the answer or a range of a sorted range table, which
//!   the lookup searches by bisection (one dependent read per halving).
//! - [`poptrie`]: poptrie (Asai, Ohara 2015): the same 18-bit direct table, then nodes of
//!   6 bits (the last one of 2) holding a 64-bit child vector and a 64-bit leaf vector; a
//!   child's or leaf's index is a population count of the vector below the address's bits.
//!   BPF has no popcount instruction: the compiler writes it out (a dozen shifts, masks and
//!   one multiply).
//!
//! Both are built into one array of 32-bit words, as nodegate's table is (two to a map
//! element), and both answer with the same leaf values: 0 outside every prefix, else the
//! prefix's answer. Each builder has a userspace lookup that mirrors the program's walk word
//! for word, which the tests below hold against a plain longest-prefix match; the benchmark
//! holds the programs' answers against [`Oracle`].

use ipnet::Ipv4Net;

/// Address bits the direct table of both candidates consumes (D18R; poptrie's paper uses
/// 16 or 18).
pub const DIRECT_BITS: u32 = 18;
const CHUNK_BITS: u32 = 32 - DIRECT_BITS;

/// One prefix and what a lookup inside it (and in no longer prefix) answers (non-zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: u32,
    pub len: u32,
    pub answer: u32,
}

impl Prefix {
    /// The prefixes of `list`, answering 1 to `answers` in turn. Several answers, as several
    /// rules give: with one, a random /8–/32 set of 100k lists every /8, and a structure
    /// that merges equal neighbours (DXR's ranges, poptrie's leaves) would hold one answer
    /// for the whole address space, measuring nothing.
    pub fn with_answers(list: &[Ipv4Net], answers: u32) -> Vec<Prefix> {
        list.iter()
            .zip((1..=answers).cycle())
            .map(|(net, answer)| Prefix {
                addr: u32::from(net.network()),
                len: u32::from(net.prefix_len()),
                answer,
            })
            .collect()
    }

    fn contains(&self, addr: u32) -> bool {
        self.len == 0 || (addr ^ self.addr) >> (32 - self.len) == 0
    }
}

/// The longest prefix of `prefixes` containing `addr`, by a plain scan: the tests' oracle.
pub fn longest_match(prefixes: &[Prefix], addr: u32) -> u32 {
    prefixes
        .iter()
        .filter(|p| p.contains(addr))
        .max_by_key(|p| p.len)
        .map_or(0, |p| p.answer)
}

/// The answers of a prefix set by exact match per length, longest first: at most 33 hash
/// lookups an address, fast enough to check every frame a benchmark sends against a million
/// prefixes, and built on nothing the candidates share.
pub struct Oracle {
    by_len: Vec<std::collections::HashMap<u32, u32>>,
}

impl Oracle {
    pub fn new(prefixes: &[Prefix]) -> Oracle {
        let mut by_len = vec![std::collections::HashMap::new(); 33];
        for p in prefixes {
            by_len[p.len as usize].insert(p.addr, p.answer);
        }
        Oracle { by_len }
    }

    /// The answer at `addr`: the longest prefix's containing it, 0 if none.
    pub fn answer(&self, addr: u32) -> u32 {
        (0..=32u32)
            .rev()
            .find_map(|len| {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                self.by_len[len as usize].get(&(addr & mask)).copied()
            })
            .unwrap_or(0)
    }
}

/// The prefixes split at the direct table: the answer each of the `2^DIRECT_BITS` chunks
/// starts from (the longest prefix of at most `DIRECT_BITS` covering it, 0 if none), and
/// each chunk's longer prefixes (chunk-relative: address bits below the chunk, length past
/// it), sorted by chunk.
struct Chunks {
    defaults: Vec<u32>,
    longer: Vec<(u32, Vec<Prefix>)>,
}

impl Chunks {
    fn split(prefixes: &[Prefix]) -> Chunks {
        let mut short: Vec<&Prefix> = prefixes.iter().filter(|p| p.len <= DIRECT_BITS).collect();
        // Longer prefixes paint over shorter ones.
        short.sort_by_key(|p| p.len);
        let mut defaults = vec![0u32; 1 << DIRECT_BITS];
        for p in short {
            let first = (p.addr >> CHUNK_BITS) as usize;
            let count = 1usize << (DIRECT_BITS - p.len);
            defaults[first..first + count].fill(p.answer);
        }
        let mut long: Vec<Prefix> = prefixes
            .iter()
            .filter(|p| p.len > DIRECT_BITS)
            .copied()
            .collect();
        long.sort_by_key(|p| (p.addr, p.len));
        let mut longer: Vec<(u32, Vec<Prefix>)> = Vec::new();
        for p in long {
            let chunk = p.addr >> CHUNK_BITS;
            let relative = Prefix {
                addr: p.addr << DIRECT_BITS,
                len: p.len - DIRECT_BITS,
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

/// The answer at chunk-relative address `at` (left-aligned): the longest of `inside`
/// containing it, else `default`.
fn answer_in_chunk(inside: &[Prefix], default: u32, at: u32) -> u32 {
    inside
        .iter()
        .filter(|p| p.contains(at))
        .max_by_key(|p| p.len)
        .map_or(default, |p| p.answer)
}

/// A built structure: its words, and what the lookup program needs to know.
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
    //! D18R: `words[0..2^18]` is the direct table; a word with [`RANGES`] set points at
    //! `count` range words (`index`, `count - 1` packed below), each the chunk-relative
    //! start of a range (14 bits) over its answer (18 bits), sorted by start, the first at
    //! 0. The lookup bisects for the last range starting at or before the address.

    use super::*;

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

    /// Build the table, or say why this variant cannot hold the set.
    pub fn build(prefixes: &[Prefix]) -> Result<Built, String> {
        let chunks = Chunks::split(prefixes);
        let mut words = chunks.defaults.clone();
        for (chunk, inside) in &chunks.longer {
            let default = chunks.defaults[*chunk as usize];
            // Where the answer may change: each prefix's first address and the one past
            // its last.
            let mut starts = vec![0u32];
            for p in inside {
                starts.push(p.addr >> DIRECT_BITS);
                let end = (p.addr >> DIRECT_BITS) + (1 << (CHUNK_BITS - p.len));
                if end < 1 << CHUNK_BITS {
                    starts.push(end);
                }
            }
            starts.sort_unstable();
            starts.dedup();
            let mut ranges: Vec<(u32, u32)> = Vec::new();
            for start in starts {
                let answer = answer_in_chunk(inside, default, start << DIRECT_BITS);
                if ranges.last().is_none_or(|&(_, a)| a != answer) {
                    ranges.push((start, answer));
                }
            }
            if ranges.len() == 1 {
                words[*chunk as usize] = ranges[0].1;
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
            words[*chunk as usize] = RANGES | ((ranges.len() as u32 - 1) << INDEX_BITS) | index;
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
    //! `words[0..2^18]` is the direct table: a word with [`LEAF`] set is the answer (below
    //! it), else the word index of a node. A node is [`NODE_WORDS`] words at an even index
    //! (three map elements): the child vector, the leaf vector, then the leaves' and the
    //! children's word indexes. Bit `v` of the child vector is set when the node's `v`-th
    //! slot (the next [`STRIDES`] bits) has a child node; the children follow one another
    //! from their index in slot order, so slot `v`'s is the popcount of the vector up to `v`,
    //! less one. The other slots are leaves, compressed: bit `v` of the leaf vector is set
    //! where a run of equal answers starts, so a leaf slot's answer is at the popcount of the
    //! leaf vector up to `v`, less one.

    use super::*;

    /// Set in a direct word that is an answer.
    pub const LEAF: u32 = 1 << 31;
    /// Words of a node.
    pub const NODE_WORDS: u32 = 6;
    /// Bits each node level consumes below the direct table.
    pub const STRIDES: [u32; 3] = [6, 6, 2];
    const _: () = assert!(STRIDES[0] + STRIDES[1] + STRIDES[2] == CHUNK_BITS);

    /// Build the table.
    pub fn build(prefixes: &[Prefix]) -> Built {
        let chunks = Chunks::split(prefixes);
        let mut words: Vec<u32> = chunks.defaults.iter().map(|&a| a | LEAF).collect();
        for (chunk, inside) in &chunks.longer {
            let default = chunks.defaults[*chunk as usize];
            let at = node_index(&mut words);
            words[*chunk as usize] = at;
            fill(&mut words, at, inside, default, 0, 0);
        }
        Built { words }
    }

    /// Room for one more node at the end of `words`, at an even index.
    fn node_index(words: &mut Vec<u32>) -> u32 {
        if words.len() % 2 == 1 {
            words.push(0);
        }
        let at = words.len() as u32;
        words.resize(words.len() + NODE_WORDS as usize, 0);
        at
    }

    /// Fill the node at `at` for the subtree at chunk-relative `base` (left-aligned, `depth`
    /// bits below the direct table) holding `inside` (the prefixes longer than `depth`),
    /// where no longer prefix answers `default`.
    fn fill(
        words: &mut Vec<u32>,
        at: u32,
        inside: &[Prefix],
        default: u32,
        base: u32,
        level: usize,
    ) {
        let depth: u32 = STRIDES[..level].iter().sum();
        let stride = STRIDES[level];
        let below = depth + stride;
        let (mut children, mut leafvec, mut leaves) = (0u64, 0u64, Vec::new());
        // Per slot: the prefixes below it, and the answer of its longest prefix ending at
        // or above the slot's depth.
        let slots: Vec<(Vec<Prefix>, u32)> = (0..1u32 << stride)
            .map(|v| {
                let slot = base | (v << (32 - below));
                let deeper: Vec<Prefix> = inside
                    .iter()
                    .filter(|p| p.len > below && (p.addr ^ slot) >> (32 - below) == 0)
                    .copied()
                    .collect();
                let ending: Vec<Prefix> = inside
                    .iter()
                    .filter(|p| p.len <= below && p.contains(slot))
                    .copied()
                    .collect();
                (deeper, answer_in_chunk(&ending, default, slot))
            })
            .collect();
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
        let child_count = children.count_ones();
        let first_child = if child_count > 0 {
            let first = node_index(words);
            for _ in 1..child_count {
                node_index(words);
            }
            first
        } else {
            0
        };
        let node = at as usize;
        words[node] = children as u32;
        words[node + 1] = (children >> 32) as u32;
        words[node + 2] = leafvec as u32;
        words[node + 3] = (leafvec >> 32) as u32;
        words[node + 4] = leaf_at;
        words[node + 5] = first_child;
        let mut k = 0;
        for (v, (deeper, answer)) in slots.iter().enumerate() {
            if !deeper.is_empty() {
                let child = first_child + k * NODE_WORDS;
                let slot = base | ((v as u32) << (32 - below));
                fill(words, child, deeper, *answer, slot, level + 1);
                k += 1;
            }
        }
    }

    /// The program's walk (`candidates/main.rs`, `poptrie`), on the words.
    pub fn lookup(words: &[u32], addr: u32) -> u32 {
        let direct = words[(addr >> CHUNK_BITS) as usize];
        if direct & LEAF != 0 {
            return direct & !LEAF;
        }
        let (mut node, mut rest) = (direct as usize, addr << DIRECT_BITS);
        for stride in STRIDES {
            let pair =
                |i: usize| u64::from(words[node + i]) | (u64::from(words[node + i + 1]) << 32);
            let (children, leafvec) = (pair(0), pair(2));
            let v = rest >> (32 - stride);
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
    use crate::{v4_mixed_prefixes, Rng};
    use rand::{Rng as _, SeedableRng as _};

    /// Nested, adjacent and overlapping prefixes around chunk edges, plus a random mixed set,
    /// with several answers: both candidates answer like a plain longest-prefix match at every
    /// prefix's first and last address, one past each, and at random addresses.
    #[test]
    fn candidates_answer_like_a_longest_prefix_match() {
        let mut prefixes = vec![
            Prefix {
                addr: 0x0a00_0000,
                len: 8,
                answer: 1,
            },
            Prefix {
                addr: 0x0a01_0000,
                len: 16,
                answer: 2,
            },
            Prefix {
                addr: 0x0a01_0200,
                len: 24,
                answer: 3,
            },
            Prefix {
                addr: 0x0a01_0203,
                len: 32,
                answer: 4,
            },
            Prefix {
                addr: 0x0a01_0204,
                len: 31,
                answer: 5,
            },
            Prefix {
                addr: 0x0a01_4000,
                len: 18,
                answer: 6,
            },
            Prefix {
                addr: 0x0a01_7ffc,
                len: 30,
                answer: 7,
            },
            Prefix {
                addr: 0xc000_2000,
                len: 19,
                answer: 8,
            },
            Prefix {
                addr: 0xffff_ffff,
                len: 32,
                answer: 9,
            },
        ];
        let mut rng = Rng::seed_from_u64(7);
        prefixes.extend(Prefix::with_answers(&v4_mixed_prefixes(3000, 5), 5));
        let dxr = dxr::build(&prefixes).expect("fits");
        let pop = poptrie::build(&prefixes);
        let mut probes: Vec<u32> = (0..20_000).map(|_| rng.next_u64() as u32).collect();
        for p in &prefixes {
            let last = p.addr | (u32::MAX >> p.len.min(31) >> u32::from(p.len == 32));
            probes.extend([p.addr, last, p.addr.wrapping_sub(1), last.wrapping_add(1)]);
        }
        let oracle = Oracle::new(&prefixes);
        for addr in probes {
            let want = longest_match(&prefixes, addr);
            assert_eq!(oracle.answer(addr), want, "oracle at {addr:#x}");
            assert_eq!(dxr::lookup(&dxr.words, addr), want, "dxr at {addr:#x}");
            assert_eq!(
                poptrie::lookup(&pop.words, addr),
                want,
                "poptrie at {addr:#x}"
            );
        }
    }

    /// A chunk with more ranges than the variant holds is refused with the numbers.
    #[test]
    fn dxr_refuses_a_chunk_past_its_range_limit() {
        let prefixes: Vec<Prefix> = (0..600)
            .map(|i| Prefix {
                addr: 0x0a00_0000 | (i * 8),
                len: 30,
                answer: 1,
            })
            .collect();
        let error = dxr::build(&prefixes).err().expect("refused");
        assert!(error.contains("ranges (at most 512)"), "{error}");
    }
}
