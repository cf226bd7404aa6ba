//! The source lookup table: a leaf-pushed multibit trie in one flat array of 32-bit words,
//! built by the loader (`filter-user::compiler::lookup`) and read by the program with a
//! bounded number of dependent reads (`filter-ebpf::lookup`). It replaces the kernel LPM
//! trie on the per-packet path (docs/ARCHITECTURE.md, "Source lookup").
//!
//! # Shape
//! - A *root* of `2^root_bits` words indexed by the address's top bits: [`V4_ROOT_BITS`]
//!   (18) for IPv4, or [`V4_LARGE_ROOT_BITS`] (20) from [`V4_LARGE_FROM`] prefixes of
//!   capacity, and [`V6_ROOT_BITS`] (16) for IPv6. A generation a layout-3 loader published
//!   has a [`V4_LEGACY_ROOT_BITS`] IPv4 root. The program reads which from the generation's
//!   flags ([`v4_root_bits`]), so it also judges such a generation right during a take-over.
//! - *Nodes* of `2^stride` words below it ([`V4_STRIDE`], [`V6_STRIDE`]), each indexed by the
//!   next `stride` bits: at most [`V4_LEVELS`] (IPv4) or [`V6_LEVELS`] (IPv6) of them. An
//!   IPv4 node may instead be *wide* ([`V4_WIDE_STRIDE`] bits, [`entry::WIDE_NODE`]) where
//!   most of a plain node's slots would need child nodes: a dense subtree (a provider's or a
//!   blocklist's /18) then costs one read less, for at most 2 words a prefix
//!   (`filter-user::compiler::lookup`).
//! - *Tails*: a slot whose subtree holds exactly one longer prefix points at a small record
//!   (the prefix, its mask length and the two possible answers) instead of a chain of nodes.
//!   Random prefix sets end in tails almost everywhere, which is what keeps the memory near
//!   a few words per prefix. A tail record may hold up to [`V4_TAIL_PREFIXES`] (IPv4) or
//!   [`V6_TAIL_PREFIXES`] (IPv6) prefixes, longest first ([`tail::count`]), where a node
//!   would otherwise hold them.
//! - *Inline prefixes* (IPv4): where a slot's subtree holds exactly one longer prefix and
//!   it fits, the slot's leaf word holds the prefix itself ([`inline`]) and the lookup ends
//!   there, without reading a record.
//!
//! Prefixes are *leaf-pushed*: every slot already holds the answer of the longest prefix
//! that covers it, so a lookup never backtracks. The answer is a [`entry`] leaf: 0 for "no
//! prefix contains the source", else the source class + 1.
//!
//! # Storage
//! The kernel map is a `BPF_F_MMAPABLE` array of `u64` elements (the kernel lays array
//! elements out with an 8-byte stride, so `u32` values would waste half): word `i` is the
//! low (`i` even) or high half of element `i / 2`, which on the little-endian BPF target is
//! exactly the `u32` slice the loader writes through its memory mapping. Each generation
//! owns one region of [`Shape::words_per_gen`] words; every index inside a table is relative
//! to its region's start, which the generation's settings carry (`GenConfig::src_v4_base`).

/// Address bits the IPv4 root consumes: a quarter million words (1 MiB) per generation,
/// which most prefixes of a random 100k set end in (a /18 holds about one longer prefix in
/// five), so most lookups read once. Which root a generation's IPv4 table has is in its flags
/// ([`v4_root_bits`]).
pub const V4_ROOT_BITS: u32 = 18;
/// Address bits the IPv4 root consumes from [`V4_LARGE_FROM`] prefixes of capacity: 4 MiB per
/// generation, where a random set of a million prefixes puts about one in two /20s.
pub const V4_LARGE_ROOT_BITS: u32 = 20;
/// Prefixes of IPv4 capacity from which the root is [`V4_LARGE_ROOT_BITS`] wide: there the
/// capacity's own reservation is already 16 MiB per generation.
pub const V4_LARGE_FROM: u32 = 1 << 19;
/// Address bits the IPv4 root of a generation published by a layout-3 loader consumes.
pub const V4_LEGACY_ROOT_BITS: u32 = 16;
/// Address bits the IPv6 root consumes (a multiple of [`V6_STRIDE`], so no node's bits
/// straddle two 32-bit words of the address).
pub const V6_ROOT_BITS: u32 = 16;
/// Bits each IPv4 node below the root consumes, or the bits left when fewer: below an 18-bit
/// root a node at /30 has 2 bits and 4 words (`entry::v4_stride`).
pub const V4_STRIDE: u32 = 4;
/// Most IPv4 nodes a lookup passes below the root (either root).
pub const V4_LEVELS: u32 = (32 - V4_LEGACY_ROOT_BITS) / V4_STRIDE;
/// Bits a wide IPv4 node consumes: two strides.
pub const V4_WIDE_STRIDE: u32 = 2 * V4_STRIDE;
/// Bits each IPv6 node below the root consumes.
pub const V6_STRIDE: u32 = 8;
/// Most IPv6 nodes a lookup passes below the root.
pub const V6_LEVELS: u32 = (128 - V6_ROOT_BITS) / V6_STRIDE;
const _: () = assert!(V4_LEGACY_ROOT_BITS + V4_LEVELS * V4_STRIDE == 32);
const _: () = assert!(V4_LARGE_ROOT_BITS + (V4_LEVELS - 1) * V4_STRIDE == 32);

/// The IPv4 root bits of a generation with `flags` (`GenConfig::flags`): 16 + 2 for
/// `V4_ROOT_18`, + 4 for `V4_ROOT_20`, without a branch. Neither flag: a generation a layout-3
/// loader published.
#[inline(always)]
pub const fn v4_root_bits(flags: u32) -> u32 {
    V4_LEGACY_ROOT_BITS + ((flags >> 6) & 6)
}

/// The generation flag that announces an IPv4 root of `root_bits` (a layout-4 root).
pub const fn v4_root_flag(root_bits: u32) -> u32 {
    (root_bits - V4_LEGACY_ROOT_BITS) << 6
}
const _: () = assert!(
    v4_root_bits(crate::flags::V4_ROOT_18) == V4_ROOT_BITS
        && v4_root_bits(crate::flags::V4_ROOT_20) == V4_LARGE_ROOT_BITS
        && v4_root_bits(0) == V4_LEGACY_ROOT_BITS
        && v4_root_flag(V4_ROOT_BITS) == crate::flags::V4_ROOT_18
        && v4_root_flag(V4_LARGE_ROOT_BITS) == crate::flags::V4_ROOT_20
);
const _: () = assert!(V4_ROOT_BITS + V4_LEVELS * V4_STRIDE >= 32);
const _: () = assert!(V6_ROOT_BITS + V6_LEVELS * V6_STRIDE == 128);
// An IPv6 node never straddles a 32-bit word of the address (the program extracts bits from
// one word at a time).
const _: () = assert!(32 % V6_STRIDE == 0 && V6_ROOT_BITS.is_multiple_of(V6_STRIDE));

/// Words of an IPv4 tail record: the prefix address, then [`tail::pack`].
pub const V4_TAIL_WORDS: u32 = 2;
/// Words of one prefix in an IPv6 tail record: the address as four big-endian-ordered
/// words, then [`tail::pack`].
pub const V6_TAIL_WORDS: u32 = 5;
/// Most prefixes one IPv6 tail record holds (layout 5 on): a slot whose subtree holds at most
/// this many longer prefixes points at their records, longest first, instead of at a node.
/// Random IPv6 sets crowd two or three prefixes into many root slots, where a 256-word node
/// each cost 31.4 MiB per generation at 100k prefixes (docs/ARCHITECTURE.md).
pub const V6_TAIL_PREFIXES: u32 = 4;
/// Most prefixes one IPv4 tail record holds (layout 5 on). Two take a random 1M set's table
/// from 12.3 to 8.3 MiB per generation and its reads from 1.67 to 1.60 a lookup; three or
/// four took another 7 % of the table and 1 % of the reads, for more record bodies on the
/// hot family's path (docs/ARCHITECTURE.md).
pub const V4_TAIL_PREFIXES: u32 = 2;

/// Words of one table slot: tag in the top two bits, payload below.
pub mod entry {
    /// Bits below the tag.
    pub const TAG_SHIFT: u32 = 30;
    /// Payload mask: a leaf value or a word index relative to the generation's region.
    pub const PAYLOAD: u32 = (1 << TAG_SHIFT) - 1;
    /// The answer itself: 0 = no prefix, else class + 1.
    pub const LEAF: u32 = 0;
    /// Index of a node of `2^stride` words.
    pub const NODE: u32 = 1;
    /// Index of a tail record.
    pub const TAIL: u32 = 2;
    /// Index of a wide IPv4 node of `2^V4_WIDE_STRIDE` words (layout 4 on; never in IPv6
    /// tables). The node tags are the odd ones: [`is_node`].
    pub const WIDE_NODE: u32 = 3;

    /// Whether a tag is [`NODE`] or [`WIDE_NODE`].
    #[inline(always)]
    pub const fn is_node(tag: u32) -> bool {
        tag & 1 == 1
    }

    /// Bits an IPv4 node of tag `tag` (one of the node tags) consumes when `left` address
    /// bits remain below it: [`super::V4_STRIDE`] or [`super::V4_WIDE_STRIDE`] (from the tag,
    /// without a branch), or fewer at the end of the address (a node at /30 below the 18-bit
    /// root has 2 bits and 4 words).
    #[inline(always)]
    pub const fn v4_stride(tag: u32, left: u32) -> u32 {
        let stride = super::V4_STRIDE << (tag >> 1);
        if stride < left {
            stride
        } else {
            left
        }
    }

    /// The tag of a word.
    #[inline(always)]
    pub const fn tag(word: u32) -> u32 {
        word >> TAG_SHIFT
    }

    /// A word with `tag` and `payload`.
    #[inline(always)]
    pub const fn make(tag: u32, payload: u32) -> u32 {
        (tag << TAG_SHIFT) | (payload & PAYLOAD)
    }

    /// The leaf value of a source class.
    #[inline(always)]
    pub const fn leaf(class: u32) -> u32 {
        class + 1
    }

    /// The class of a leaf value, if any prefix matched.
    #[inline(always)]
    pub const fn class(leaf: u32) -> Option<u32> {
        if leaf == 0 {
            None
        } else {
            Some(leaf - 1)
        }
    }
}

const _: () = assert!(
    entry::is_node(entry::NODE)
        && entry::is_node(entry::WIDE_NODE)
        && !entry::is_node(entry::LEAF)
        && !entry::is_node(entry::TAIL)
        && entry::v4_stride(entry::NODE, 32) == V4_STRIDE
        && entry::v4_stride(entry::WIDE_NODE, 32) == V4_WIDE_STRIDE
        && entry::v4_stride(entry::NODE, 2) == 2
);

/// Tail records: where they are, how many prefixes they hold, and the last word of each
/// prefix's record (both answers and the prefix length).
pub mod tail {
    /// Where a tail word's payload keeps the prefix count less one (0 for one prefix, as in
    /// every record before layout 5); the record's word index is below.
    pub const COUNT_SHIFT: u32 = 27;
    const AT_MASK: u32 = (1 << COUNT_SHIFT) - 1;
    const _: () = assert!(
        super::V6_TAIL_PREFIXES - 1 <= super::entry::PAYLOAD >> COUNT_SHIFT
            && super::V4_TAIL_PREFIXES - 1 <= super::entry::PAYLOAD >> COUNT_SHIFT
    );

    /// The payload of a tail word for a record at word `at` holding `count` (≥ 1) prefixes.
    #[inline(always)]
    pub const fn reference(at: u32, count: u32) -> u32 {
        at | ((count - 1) << COUNT_SHIFT)
    }

    /// The record's word index, from a tail word's payload.
    #[inline(always)]
    pub const fn at(payload: u32) -> u32 {
        payload & AT_MASK
    }

    /// How many prefixes the record holds, from a tail word's payload.
    #[inline(always)]
    pub const fn count(payload: u32) -> u32 {
        ((payload & super::entry::PAYLOAD) >> COUNT_SHIFT) + 1
    }

    /// Bits of each answer (leaf values are at most `MAX_CLASSES`).
    pub const LEAF_BITS: u32 = 12;
    const LEAF_MASK: u32 = (1 << LEAF_BITS) - 1;
    const _: () = assert!(crate::MAX_CLASSES < 1 << LEAF_BITS);

    /// Pack the answer inside the prefix, the answer outside it, and its length.
    #[inline(always)]
    pub const fn pack(inside: u32, outside: u32, len: u32) -> u32 {
        (inside & LEAF_MASK) | ((outside & LEAF_MASK) << LEAF_BITS) | (len << (2 * LEAF_BITS))
    }

    /// The answer when the prefix contains the address.
    #[inline(always)]
    pub const fn inside(word: u32) -> u32 {
        word & LEAF_MASK
    }

    /// The answer when it does not.
    #[inline(always)]
    pub const fn outside(word: u32) -> u32 {
        (word >> LEAF_BITS) & LEAF_MASK
    }

    /// The prefix length.
    #[inline(always)]
    pub const fn len(word: u32) -> u32 {
        word >> (2 * LEAF_BITS)
    }
}

/// Inline prefixes (IPv4, layout 6 on): a leaf word that holds the one prefix its slot's
/// subtree has, instead of pointing at a tail record of one. The prefix's bits past the
/// slot's depth (at most [`inline::BITS`]: every IPv4 slot below an 18- or 20-bit root), its
/// length past that depth and both answers fit into the payload when both answers are below
/// 2^[`inline::LEAF_BITS`] (source classes 0–30); otherwise the builder writes a record. A
/// random 100k set ends in such slots almost everywhere below the root, so most lookups
/// that read a root word and then a record now read the root word alone
/// (docs/ARCHITECTURE.md, "Source lookup").
///
/// The walk knows the slot's depth: it holds the address bits not consumed yet,
/// left-aligned (`rest`), which is all [`inline::resolve`] compares.
pub mod inline {
    /// Set in the payload of a leaf word that is an inline prefix. Plain leaf values
    /// (`entry::leaf`) stay below it.
    pub const FLAG: u32 = 1 << 29;
    /// Most prefix bits past the slot's depth a word holds (left-aligned in the low
    /// `BITS` bits): 32 less the narrowest IPv4 root.
    pub const BITS: u32 = 14;
    /// Bits of each answer.
    pub const LEAF_BITS: u32 = 5;
    const BITS_MASK: u32 = (1 << BITS) - 1;
    const LEN_SHIFT: u32 = BITS;
    const LEN_BITS: u32 = 4;
    const OUTSIDE_SHIFT: u32 = LEN_SHIFT + LEN_BITS;
    const INSIDE_SHIFT: u32 = OUTSIDE_SHIFT + LEAF_BITS;
    const LEAF_MASK: u32 = (1 << LEAF_BITS) - 1;
    const _: () = assert!(
        BITS < 1 << LEN_BITS
            && INSIDE_SHIFT + LEAF_BITS < 29
            && crate::MAX_CLASSES < FLAG
            && 32 - super::V4_ROOT_BITS <= BITS
            && 32 - super::V4_LARGE_ROOT_BITS <= BITS
    );

    /// The word for a prefix of `len` (1 to [`BITS`]) bits past its slot's depth, whose
    /// bits those are (`bits`, right-aligned), answering `inside` within it and `outside`
    /// elsewhere in the slot; `None` when it does not fit (the builder then writes a record).
    pub const fn pack(bits: u32, len: u32, inside: u32, outside: u32) -> Option<u32> {
        if len == 0 || len > BITS || inside > LEAF_MASK || outside > LEAF_MASK {
            return None;
        }
        Some(
            FLAG | (inside << INSIDE_SHIFT)
                | (outside << OUTSIDE_SHIFT)
                | (len << LEN_SHIFT)
                | ((bits << (BITS - len)) & BITS_MASK),
        )
    }

    /// The answer of a leaf word for an address whose bits past the slot's depth are
    /// `rest` (left-aligned): the word itself when it is a plain leaf, else the inline
    /// prefix's inside or outside answer. Without a branch on the comparison.
    #[inline(always)]
    pub const fn resolve(word: u32, rest: u32) -> u32 {
        if word & FLAG == 0 {
            return word;
        }
        let len = (word >> LEN_SHIFT) & ((1 << LEN_BITS) - 1);
        let differs = ((rest >> (32 - BITS)) ^ word) & (BITS_MASK & !(BITS_MASK >> len));
        let (inside, outside) = (
            (word >> INSIDE_SHIFT) & LEAF_MASK,
            (word >> OUTSIDE_SHIFT) & LEAF_MASK,
        );
        // All ones when the bits agree, else 0.
        let within = ((differs == 0) as u32).wrapping_neg();
        outside ^ ((inside ^ outside) & within)
    }
}

const _: () = {
    // /19 at an 18-bit root: bit 0 past the root is 1.
    let Some(word) = inline::pack(1, 1, 3, 1) else {
        panic!()
    };
    assert!(inline::resolve(word, 1 << 31) == 3 && inline::resolve(word, 0) == 1);
    assert!(inline::resolve(entry::leaf(7), 0) == entry::leaf(7));
    assert!(inline::pack(0, 15, 1, 0).is_none() && inline::pack(0, 3, 32, 0).is_none());
};

/// The mask of the first `len` bits of a 32-bit word (`len` may exceed 32 or be 0).
#[inline(always)]
pub const fn word_mask(len: u32) -> u32 {
    if len == 0 {
        0
    } else if len >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - len)
    }
}

/// How one family's table is sized: its root, and the words reserved per prefix of
/// capacity beyond it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Address bits the root consumes.
    pub root_bits: u32,
    /// Address bits the root consumes from [`Shape::large_from`] prefixes of capacity.
    pub large_root_bits: u32,
    /// Prefixes of capacity from which the root is [`Shape::large_root_bits`] wide.
    pub large_from: u32,
    /// Table words reserved per prefix of capacity, beyond the root.
    pub words_per_prefix: u32,
}

impl Shape {
    /// Address bits of the root of a table with `prefixes` prefixes of capacity.
    pub const fn root_bits_for(self, prefixes: u32) -> u32 {
        if prefixes >= self.large_from {
            self.large_root_bits
        } else {
            self.root_bits
        }
    }

    /// Words of the root of a table with `prefixes` prefixes of capacity.
    pub const fn root_words(self, prefixes: u32) -> u32 {
        1 << self.root_bits_for(prefixes)
    }

    /// Words of one generation's region for `prefixes` prefixes of capacity, rounded up to
    /// whole map elements.
    pub const fn words_per_gen(self, prefixes: u32) -> u32 {
        let words = self.root_words(prefixes) + prefixes * self.words_per_prefix;
        words + (words & 1)
    }

    /// Map elements (`u64`, two words each) of a table holding every generation.
    pub const fn elements(self, prefixes: u32) -> u32 {
        crate::GENERATIONS * self.words_per_gen(prefixes) / 2
    }
}

/// IPv4 tables. Random mixed-length sets need about 3 words a prefix (docs/ARCHITECTURE.md);
/// the rest is headroom for clustered sets.
pub const V4: Shape = Shape {
    root_bits: V4_ROOT_BITS,
    large_root_bits: V4_LARGE_ROOT_BITS,
    large_from: V4_LARGE_FROM,
    words_per_prefix: 8,
};
// Every word index of the largest tables fits below a tail word's count bits.
const _: () = assert!(
    V6.words_per_gen(1 << 20) <= 1 << tail::COUNT_SHIFT
        && V4.words_per_gen(1 << 22) <= 1 << tail::COUNT_SHIFT
);
/// IPv6 tables (one root size).
pub const V6: Shape = Shape {
    root_bits: V6_ROOT_BITS,
    large_root_bits: V6_ROOT_BITS,
    large_from: u32::MAX,
    words_per_prefix: 16,
};
