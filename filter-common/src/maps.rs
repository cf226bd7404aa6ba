//! Map names and capacities. The kernel `#[map]` declarations and the loader's `take_map`
//! both use these, so a rename or resize happens in one place.
//!
//! NB: the kernel truncates map names to 15 bytes (BPF_OBJ_NAME_LEN - 1); every name here is
//! shorter, which a const assertion below enforces.

/// Version of the pinned layout (maps, their key/value types, the program's contract).
/// A loader refuses to adopt pins written under another version, except the ones it takes
/// over in place (`filter-user::loader::pins::ADOPTABLE_LAYOUTS`). Layout 4: IPv4 source
/// tables have an 18- or 20-bit root (announced by the generation's flags) and may hold wide
/// nodes (`lookup::entry::WIDE_NODE`); a layout-3 program would read them as a 16-bit root
/// and leaves. Layout 5: a tail record may hold up to `lookup::V4_TAIL_PREFIXES` (IPv4) or
/// `lookup::V6_TAIL_PREFIXES` (IPv6) prefixes (`lookup::tail::count`); a layout-4 program
/// would read only the first and take the count bits for part of the record's index.
/// Layout 6: an IPv4 leaf word may be an inline prefix (`lookup::inline`); a layout-5
/// program would take it for a leaf of a source class that does not exist.
pub const LAYOUT_VERSION: u32 = 6;

/// Rule tables exist twice: the program reads the active one, the loader fills the other
/// and flips once.
pub const GENERATIONS: u32 = 2;

/// Control word: which generation is active and whether any is loaded. `Array<Control>[1]`.
pub const MAP_CONTROL: &str = "NG_CONTROL";
/// Per-generation settings. `Array<GenConfig>[GENERATIONS]`.
pub const MAP_GEN_CONFIG: &str = "NG_GENCFG";
/// Interfaces the loader attached to: ifindex → counter slot and the config's per-interface
/// overrides. `HashMap<u32, IfaceEntry>`.
pub const MAP_IFACES: &str = "NG_IFACES";
/// The same entries as [`MAP_IFACES`] for every ifindex below [`DIRECT_IFINDEXES`], in an
/// array indexed by ifindex (0 = not registered): the program reads it with an array lookup
/// the verifier inlines, where the hash lookup costs ~30 ns a packet (docs/BENCHMARKS.md).
/// Larger ifindexes are looked up in the hash. `Array<IfaceEntry>[DIRECT_IFINDEXES]`.
pub const MAP_IFACE_INDEX: &str = "NG_IFINDEX";
/// Interfaces with an ifindex below this are found through [`MAP_IFACE_INDEX`]. Host NICs get
/// small indexes at boot; the bound only decides which lookup a frame costs, not whether an
/// interface can be filtered. 512 KiB of kernel memory.
pub const DIRECT_IFINDEXES: u32 = 65_536;
/// IPv4 source lookup tables of both generations (`crate::lookup`): a `BPF_F_MMAPABLE`
/// `Array<u64>` of two table words per element, sized from the IPv4 prefix capacity.
pub const MAP_SRC_V4: &str = "NG_SRC4";
/// IPv6 counterpart of [`MAP_SRC_V4`].
pub const MAP_SRC_V6: &str = "NG_SRC6";
/// Service key (port, ICMP type, protocol number) → segment id, in chunks.
/// `Array<SegmentChunk>[GENERATIONS * SERVICE_CHUNKS]`.
pub const MAP_SEGMENTS: &str = "NG_SEGMENTS";
/// (row, service kind) → cell per segment. `Array<ClassCells>[GENERATIONS * MAX_CLASSES * SERVICE_KINDS]`.
pub const MAP_CLASS_CELLS: &str = "NG_CELLS";
/// (profile, source class) → cell row, or [`NO_ROW`] when no rule of the profile covers the
/// class. `Array<u32>[GENERATIONS * MAX_PROFILES * MAX_CLASSES]`.
pub const MAP_CLASS_ROWS: &str = "NG_ROWS";
/// Per-CPU packet/byte counters by interface slot and reason slot.
/// `PerCpuArray<Counter>[MAX_IFACES * STAT_SLOTS]`.
pub const MAP_REASON_STATS: &str = "NG_STATS";
/// Per-CPU packet/byte counters by rule slot (and would-drop slot in monitor mode).
/// `PerCpuArray<Counter>[2 * MAX_RULES]`.
pub const MAP_RULE_STATS: &str = "NG_RULE_STATS";
/// Per-CPU packets judged by each generation slot. `PerCpuArray<Counter>[GENERATIONS]`.
pub const MAP_GEN_STATS: &str = "NG_GEN_STATS";
/// Rule slot → rule name, so `nodegate stats` can label counters without a config file.
/// `Array<RuleName>[MAX_RULES]`.
pub const MAP_RULE_NAMES: &str = "NG_RULE_NAMES";
/// Drop samples to the loader. `RingBuf`.
pub const MAP_SAMPLES: &str = "NG_SAMPLES";
/// Per-CPU token bucket that rate-limits drop samples. `PerCpuArray<SampleBucket>[1]`.
pub const MAP_SAMPLE_RATE: &str = "NG_SAMPLE_RL";
/// Sample accounting (emitted, lost to a full ring). `PerCpuArray<u64>[2]`.
pub const MAP_SAMPLE_STATS: &str = "NG_SAMPLE_ST";

/// Default IPv4 prefix capacity per generation (`capacity.ipv4_prefixes`).
pub const MAX_V4_PREFIXES: u32 = 131_072;
/// Default IPv6 prefix capacity per generation (`capacity.ipv6_prefixes`).
pub const MAX_V6_PREFIXES: u32 = 32_768;
/// Distinct source classes (sets of rules covering a prefix) per generation; also the
/// number of cell rows (distinct sets of rules that apply to a source on an interface).
pub const MAX_CLASSES: u32 = 512;
/// Rule profiles per generation: distinct sets of rules that apply on an interface, when
/// rules name interfaces (`interfaces:` of a rule). Profile 0 serves every interface no rule
/// names.
pub const MAX_PROFILES: u32 = 4;
/// `NG_ROWS` value: no rule of this interface's profile covers the source.
pub const NO_ROW: u32 = u32::MAX;
/// Distinct key segments per service kind (port ranges with the same rule membership).
pub const MAX_SEGMENTS: u32 = 128;
/// Rule slots, including failsafe rules. Slot 0 means "no rule".
pub const MAX_RULES: u32 = 1024;
/// Interface counter slots. Slot 0 collects packets from interfaces the loader did not
/// register (for example `BPF_PROG_TEST_RUN` on loopback).
pub const MAX_IFACES: u32 = 64;
/// Longest rule name stored for `stats`, in bytes.
pub const RULE_NAME_LEN: usize = 64;
/// Ring buffer size for drop samples, bytes (power of two, multiple of the page size).
pub const SAMPLE_RING_BYTES: u32 = 256 * 1024;

/// Every map of the program. The loader pins and adopts exactly these; the check below
/// keeps their names within what the kernel stores.
pub const ALL_MAPS: &[&str] = &[
    MAP_CONTROL,
    MAP_GEN_CONFIG,
    MAP_IFACES,
    MAP_IFACE_INDEX,
    MAP_SRC_V4,
    MAP_SRC_V6,
    MAP_SEGMENTS,
    MAP_CLASS_CELLS,
    MAP_CLASS_ROWS,
    MAP_REASON_STATS,
    MAP_RULE_STATS,
    MAP_GEN_STATS,
    MAP_RULE_NAMES,
    MAP_SAMPLES,
    MAP_SAMPLE_RATE,
    MAP_SAMPLE_STATS,
    MAP_FRAGS,
    MAP_FLOWS,
    MAP_FLOW_STATS,
];

const _: () = {
    let names = ALL_MAPS;
    let mut i = 0;
    while i < names.len() {
        assert!(
            names[i].len() <= 15,
            "map name longer than the kernel keeps"
        );
        i += 1;
    }
};

/// Passed first fragments: (family, proto, id, src, dst) → time seen.
/// `LruHashMap<FragKey, u64>[MAX_TRACKED_FRAGMENTS]`.
pub const MAP_FRAGS: &str = "NG_FRAGS";
/// Fragmented datagrams tracked at once.
pub const MAX_TRACKED_FRAGMENTS: u32 = 65_536;

/// Flows the node opened (stateful return traffic): `LruHashMap<FlowKey, FlowState>`, sized
/// by the config's `return_traffic.capacity` when the map is created.
pub const MAP_FLOWS: &str = "NG_FLOWS";
/// Flow table accounting by `flow_stat` slot. `PerCpuArray<u64>[flow_stat::SLOTS]`.
pub const MAP_FLOW_STATS: &str = "NG_FLOW_STATS";
/// Default (and compiled-in) capacity of `NG_FLOWS`.
pub const DEFAULT_FLOW_CAPACITY: u32 = 65_536;
