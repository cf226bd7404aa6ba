//! Every map of the program. Names, sizes and value types come from `filter-common`, which
//! the loader uses too. `#[map(name = ...)]` needs a literal, so each name is checked against
//! its `filter_common::MAP_*` constant at compile time.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use filter_common::{
    flow_stat, lookup, ClassCells, Control, Counter, FlowKey, FlowState, FragKey, GenConfig,
    IfaceEntry, RuleName, SampleBucket, SegmentChunk, CLASS_CELLS_ENTRIES, CLASS_ROW_ENTRIES,
    DEFAULT_FLOW_CAPACITY, DIRECT_IFINDEXES, GENERATIONS, MAP_CLASS_CELLS, MAP_CLASS_ROWS,
    MAP_CONTROL, MAP_FLOWS, MAP_FLOW_STATS, MAP_FRAGS, MAP_GEN_CONFIG, MAP_GEN_STATS, MAP_IFACES,
    MAP_IFACE_INDEX, MAP_REASON_STATS, MAP_RULE_NAMES, MAP_RULE_STATS, MAP_SAMPLES,
    MAP_SAMPLE_RATE, MAP_SAMPLE_STATS, MAP_SEGMENTS, MAP_SRC_V4, MAP_SRC_V6, MAX_IFACES, MAX_RULES,
    MAX_TRACKED_FRAGMENTS, MAX_V4_PREFIXES, MAX_V6_PREFIXES, SAMPLE_RING_BYTES,
    SEGMENT_CHUNK_ENTRIES, STAT_SLOTS,
};

/// `a == b` in a const context (str's `PartialEq` is not const yet).
pub const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Fails the build when a `#[map(name)]` literal drifts from filter-common.
macro_rules! same_name {
    ($common:ident, $literal:literal) => {
        const _: () = assert!(
            same($common, $literal),
            concat!("map name ", $literal, " differs from filter_common")
        );
    };
}

same_name!(MAP_CONTROL, "NG_CONTROL");
#[map(name = "NG_CONTROL")]
pub static CONTROL: Array<Control> = Array::with_max_entries(1, 0);

same_name!(MAP_GEN_CONFIG, "NG_GENCFG");
#[map(name = "NG_GENCFG")]
pub static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(GENERATIONS, 0);

same_name!(MAP_IFACES, "NG_IFACES");
#[map(name = "NG_IFACES")]
pub static IFACES: HashMap<u32, IfaceEntry> = HashMap::with_max_entries(MAX_IFACES, 0);

same_name!(MAP_IFACE_INDEX, "NG_IFINDEX");
#[map(name = "NG_IFINDEX")]
pub static IFACE_INDEX: Array<IfaceEntry> = Array::with_max_entries(DIRECT_IFINDEXES, 0);

// Source lookup tables (filter_common::lookup), two table words per element. Mmapable so the
// loader writes a generation with plain stores; sized here for the default capacity, and
// resized by the loader from the configured one before creation.
same_name!(MAP_SRC_V4, "NG_SRC4");
#[map(name = "NG_SRC4")]
pub static SRC_V4: Array<u64> =
    Array::with_max_entries(lookup::V4.elements(MAX_V4_PREFIXES), BPF_F_MMAPABLE);

same_name!(MAP_SRC_V6, "NG_SRC6");
#[map(name = "NG_SRC6")]
pub static SRC_V6: Array<u64> =
    Array::with_max_entries(lookup::V6.elements(MAX_V6_PREFIXES), BPF_F_MMAPABLE);

same_name!(MAP_SEGMENTS, "NG_SEGMENTS");
#[map(name = "NG_SEGMENTS")]
pub static SEGMENTS: Array<SegmentChunk> = Array::with_max_entries(SEGMENT_CHUNK_ENTRIES, 0);

same_name!(MAP_CLASS_CELLS, "NG_CELLS");
#[map(name = "NG_CELLS")]
pub static CELLS: Array<ClassCells> = Array::with_max_entries(CLASS_CELLS_ENTRIES, 0);

same_name!(MAP_CLASS_ROWS, "NG_ROWS");
#[map(name = "NG_ROWS")]
pub static ROWS: Array<u32> = Array::with_max_entries(CLASS_ROW_ENTRIES, 0);

same_name!(MAP_REASON_STATS, "NG_STATS");
#[map(name = "NG_STATS")]
pub static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_IFACES * STAT_SLOTS, 0);

same_name!(MAP_RULE_STATS, "NG_RULE_STATS");
#[map(name = "NG_RULE_STATS")]
pub static RULE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(2 * MAX_RULES, 0);

same_name!(MAP_GEN_STATS, "NG_GEN_STATS");
#[map(name = "NG_GEN_STATS")]
pub static GEN_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(GENERATIONS, 0);

// Written by userspace only (rule slot → name for `nodegate stats`); declared here so the map
// is part of the object, created with it and pinned beside the others.
same_name!(MAP_RULE_NAMES, "NG_RULE_NAMES");
#[map(name = "NG_RULE_NAMES")]
pub static RULE_NAMES: Array<RuleName> = Array::with_max_entries(MAX_RULES, 0);

same_name!(MAP_SAMPLES, "NG_SAMPLES");
#[map(name = "NG_SAMPLES")]
pub static SAMPLES: RingBuf = RingBuf::with_byte_size(SAMPLE_RING_BYTES, 0);

same_name!(MAP_SAMPLE_RATE, "NG_SAMPLE_RL");
#[map(name = "NG_SAMPLE_RL")]
pub static SAMPLE_RATE: PerCpuArray<SampleBucket> = PerCpuArray::with_max_entries(1, 0);

/// [`SAMPLE_STATS`] slots.
pub const SAMPLE_EMITTED: u32 = 0;
pub const SAMPLE_LOST: u32 = 1;

same_name!(MAP_SAMPLE_STATS, "NG_SAMPLE_ST");
#[map(name = "NG_SAMPLE_ST")]
pub static SAMPLE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

same_name!(MAP_FRAGS, "NG_FRAGS");
#[map(name = "NG_FRAGS")]
pub static FRAGS: LruHashMap<FragKey, u64> = LruHashMap::with_max_entries(MAX_TRACKED_FRAGMENTS, 0);

/// Per-CPU scratch space the fragment key is assembled in (see `frags::with_key`): not on
/// the stack, where verifiers before 6.6 refuse the narrow stores a key is made of without
/// CAP_PERFMON. Private to the program (never pinned).
#[map(name = "NG_FRAG_KEY")]
pub static FRAG_KEY_SCRATCH: PerCpuArray<FragKey> = PerCpuArray::with_max_entries(1, 0);

// Written by the TC egress program, read by XDP. The loader resizes it to the config's
// capacity before creating it (`EbpfLoader::map_max_entries`).
same_name!(MAP_FLOWS, "NG_FLOWS");
#[map(name = "NG_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowState> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_CAPACITY, 0);

same_name!(MAP_FLOW_STATS, "NG_FLOW_STATS");
#[map(name = "NG_FLOW_STATS")]
pub static FLOW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(flow_stat::SLOTS, 0);

/// This CPU's slot `index` of a per-CPU array, looked up with the key written to the stack as
/// one whole 8-byte word (the kernel reads the array's 4-byte key from its low half: the BPF
/// target is little-endian).
///
/// Why not `get_ptr_mut`: it stores the `u32` key with a 4-byte store into whatever stack slot
/// LLVM picks, and LLVM reuses slots that earlier held a spilled register (the ring buffer
/// entry pointer, say). Verifiers before 6.6 refuse a narrow store into a spilled slot unless
/// the loader has CAP_PERFMON ("attempt to corrupt spilled pointer on stack"); an 8-byte
/// store replaces the slot whole and is accepted everywhere. Found by the kernel matrix on
/// 6.1 with CAP_BPF + CAP_NET_ADMIN only.
#[inline(always)]
pub fn per_cpu_slot<T>(map: &PerCpuArray<T>, index: u32) -> Option<*mut T> {
    let mut key = core::mem::MaybeUninit::<u64>::uninit();
    // SAFETY: writes the whole u64 we own; volatile so it stays one 8-byte store.
    unsafe { core::ptr::write_volatile(key.as_mut_ptr(), u64::from(index)) };
    // SAFETY: PerCpuArray is repr(transparent) over its map definition, so its address is the
    // map's; the key pointer is valid for the 4 bytes the kernel reads.
    let value = unsafe {
        aya_ebpf::helpers::bpf_map_lookup_elem(
            map as *const PerCpuArray<T> as *mut core::ffi::c_void,
            key.as_ptr() as *const core::ffi::c_void,
        )
    };
    (!value.is_null()).then_some(value as *mut T)
}
