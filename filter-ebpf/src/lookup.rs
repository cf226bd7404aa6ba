//! Source address → source class, through the generation's flat lookup table
//! (`filter_common::lookup`), walked by `walk.rs`: a bounded number of dependent array
//! reads, no loop over prefixes and no kernel trie.
//!
//! The verdict code only calls [`source_class`]; which structure answers is this module's
//! business.

use filter_common::lookup::{entry, v4_root_bits};

use crate::{
    maps::{SRC_V4, SRC_V6},
    packet::{Packet, Settings, FAMILY_V4},
    walk,
};

/// Source class of `pkt.src` in the packet's generation, if a prefix contains it.
#[inline(always)]
pub fn source_class(s: &Settings, pkt: &Packet) -> Option<u32> {
    let found = if pkt.family == FAMILY_V4 {
        // 18 or 20 bits, or 16 in a generation a layout-3 loader published (read only
        // during a take-over).
        walk::v4_leaf(&SRC_V4, s.src_v4_base, v4_root_bits(s.flags), pkt.source())?
    } else {
        walk::v6_leaf(&SRC_V6, s.src_v6_base, pkt.source())?
    };
    entry::class(found)
}
