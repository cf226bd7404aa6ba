//! How a packet's (protocol, port) becomes a rule decision in O(1).
//!
//! Every packet has a *service kind* and a *service key*: TCP/UDP → destination port,
//! ICMP/ICMPv6 → message type, anything else → IP protocol number. All kinds' key spaces are
//! laid end to end into one index space; `NG_SEGMENTS` maps each index to a *segment*: a run
//! of keys covered by exactly the same set of rules. `NG_CELLS` then holds, for each source
//! class and service kind, one [`Cell`] per segment: the first rule in precedence order
//! (failsafe, deny, allow) that covers both. Two array lookups, no loop over rules.

use crate::maps::{GENERATIONS, MAX_CLASSES, MAX_PROFILES};

/// What the service key of a packet means.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceKind {
    /// TCP; key = destination port.
    Tcp = 0,
    /// UDP; key = destination port.
    Udp = 1,
    /// ICMP over IPv4; key = type.
    Icmp = 2,
    /// ICMPv6 over IPv6; key = type.
    Icmpv6 = 3,
    /// Any other IP protocol (or ICMP in the wrong family); key = protocol number.
    Other = 4,
}

/// Number of service kinds.
pub const SERVICE_KINDS: u32 = 5;

impl ServiceKind {
    /// All kinds, in index order.
    pub const ALL: [ServiceKind; 5] = [
        ServiceKind::Tcp,
        ServiceKind::Udp,
        ServiceKind::Icmp,
        ServiceKind::Icmpv6,
        ServiceKind::Other,
    ];

    /// Number of distinct keys of this kind.
    pub const fn key_space(self) -> u32 {
        match self {
            ServiceKind::Tcp | ServiceKind::Udp => 65_536,
            ServiceKind::Icmp | ServiceKind::Icmpv6 | ServiceKind::Other => 256,
        }
    }

    /// Where this kind's keys start in the concatenated service index space.
    pub const fn key_offset(self) -> u32 {
        match self {
            ServiceKind::Tcp => 0,
            ServiceKind::Udp => 65_536,
            ServiceKind::Icmp => 131_072,
            ServiceKind::Icmpv6 => 131_328,
            ServiceKind::Other => 131_584,
        }
    }
}

/// Size of the concatenated service index space.
pub const SERVICE_INDEX_SPACE: u32 = 131_840;
/// Segment ids per [`SegmentChunk`] map value.
pub const SEGMENT_CHUNK: u32 = 256;
/// Chunks per generation in `NG_SEGMENTS`.
pub const SERVICE_CHUNKS: u32 = SERVICE_INDEX_SPACE / SEGMENT_CHUNK;

const _: () = assert!(SERVICE_INDEX_SPACE.is_multiple_of(SEGMENT_CHUNK));
const _: () = assert!(
    ServiceKind::Other.key_offset() + ServiceKind::Other.key_space() == SERVICE_INDEX_SPACE
);

/// `NG_SEGMENTS` index of the chunk holding `service_index` in generation `generation`.
pub const fn segment_chunk_index(generation: u32, service_index: u32) -> u32 {
    generation * SERVICE_CHUNKS + service_index / SEGMENT_CHUNK
}

/// `NG_CELLS` index of (generation, cell row, kind). Without rules that name interfaces the
/// rows are the source classes themselves.
pub const fn class_cells_index(generation: u32, row: u32, kind: ServiceKind) -> u32 {
    (generation * MAX_CLASSES + row) * SERVICE_KINDS + kind as u32
}

/// `NG_ROWS` index of (generation, profile, class).
pub const fn class_row_index(generation: u32, profile: u32, class: u32) -> u32 {
    (generation * MAX_PROFILES + profile) * MAX_CLASSES + class
}

/// Entries in `NG_ROWS`.
pub const CLASS_ROW_ENTRIES: u32 = GENERATIONS * MAX_PROFILES * MAX_CLASSES;

/// Entries in `NG_CELLS`.
pub const CLASS_CELLS_ENTRIES: u32 = GENERATIONS * MAX_CLASSES * SERVICE_KINDS;
/// Entries in `NG_SEGMENTS`.
pub const SEGMENT_CHUNK_ENTRIES: u32 = GENERATIONS * SERVICE_CHUNKS;

/// What a cell decides. Ordered by precedence: a failsafe beats a deny beats an allow.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CellAction {
    /// No rule covers this (class, segment).
    None = 0,
    /// An allow rule.
    Allow = 1,
    /// A deny rule.
    Deny = 2,
    /// A failsafe rule.
    Failsafe = 3,
}

/// A rule decision packed into a `u32`: bits 0..16 rule slot, bits 16..18 [`CellAction`].
/// The empty cell (no rule) is 0.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cell(pub u32);

impl Cell {
    /// No rule.
    pub const EMPTY: Cell = Cell(0);

    /// A decision by rule `slot`.
    pub const fn new(action: CellAction, slot: u16) -> Cell {
        Cell(((action as u32) << 16) | slot as u32)
    }

    /// The rule slot (0 when empty).
    pub const fn slot(self) -> u32 {
        self.0 & 0xffff
    }

    /// The decision.
    pub const fn action(self) -> CellAction {
        match (self.0 >> 16) & 3 {
            1 => CellAction::Allow,
            2 => CellAction::Deny,
            3 => CellAction::Failsafe,
            _ => CellAction::None,
        }
    }
}

/// VLAN tags (802.1Q, 802.1ad, legacy 0x9100) the parser follows; one more is `vlan-depth`.
pub const VLAN_MAX_DEPTH: u32 = 2;
/// IPv6 extension headers the parser walks; a chain still going after that is `ipv6-exthdr`.
pub const IPV6_EXT_MAX: u32 = 8;
/// How long a passed first fragment lets its non-first fragments through (Linux ipfrag_time).
pub const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;
