//! Typed handles on every map of the XDP program, whether freshly loaded or opened from pins.

use std::path::Path;

use aya::maps::{lpm_trie::LpmTrie, Array, HashMap, Map, MapData, PerCpuArray};
use filter_common::{
    ClassCells, Control, Counter, GenConfig, IfaceEntry, RuleName, SegmentChunk, SrcV4Data,
    SrcV6Data, MAP_CLASS_CELLS, MAP_CONTROL, MAP_GEN_CONFIG, MAP_GEN_STATS, MAP_IFACES,
    MAP_REASON_STATS, MAP_RULE_NAMES, MAP_RULE_STATS, MAP_SEGMENTS, MAP_SRC_V4, MAP_SRC_V6,
};

use super::LoaderError;

/// Names of every map the loader pins and adopts, in one list so pinning, adoption and
/// removal can never disagree about what exists.
pub const PINNED_MAPS: &[&str] = &[
    MAP_CONTROL,
    MAP_GEN_CONFIG,
    MAP_IFACES,
    MAP_SRC_V4,
    MAP_SRC_V6,
    MAP_SEGMENTS,
    MAP_CLASS_CELLS,
    MAP_REASON_STATS,
    MAP_RULE_STATS,
    MAP_GEN_STATS,
    MAP_RULE_NAMES,
    filter_common::MAP_SAMPLES,
    filter_common::MAP_SAMPLE_RATE,
    filter_common::MAP_SAMPLE_STATS,
    filter_common::MAP_FRAGS,
];

/// The rule tables, settings and counters of one loaded (or adopted) XDP program.
pub struct FilterMaps {
    pub(crate) control: Array<MapData, Control>,
    pub(crate) gen_config: Array<MapData, GenConfig>,
    pub(crate) ifaces: HashMap<MapData, u32, IfaceEntry>,
    pub(crate) src_v4: LpmTrie<MapData, SrcV4Data, u32>,
    pub(crate) src_v6: LpmTrie<MapData, SrcV6Data, u32>,
    pub(crate) segments: Array<MapData, SegmentChunk>,
    pub(crate) cells: Array<MapData, ClassCells>,
    pub(crate) stats: PerCpuArray<MapData, Counter>,
    pub(crate) rule_stats: PerCpuArray<MapData, Counter>,
    pub(crate) gen_stats: PerCpuArray<MapData, Counter>,
    pub(crate) rule_names: Array<MapData, RuleName>,
    pub(crate) sample_stats: PerCpuArray<MapData, u64>,
    /// What each generation slot of the prefix tries holds; `None` until known.
    pub(crate) contents: [Option<super::publish::GenContents>; 2],
    /// When the control word last flipped (from this process).
    pub(crate) last_flip: Option<std::time::Instant>,
}

impl FilterMaps {
    /// Take the maps out of a freshly loaded object.
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<Self, LoaderError> {
        Self::build(|name| ebpf.take_map(name).ok_or(LoaderError::MissingMap { name }))
    }

    /// Open the maps pinned under `dir` (one file per map name).
    pub fn open_pinned(dir: &Path) -> Result<Self, LoaderError> {
        Self::build(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|source| LoaderError::OpenPin {
                path: path.clone(),
                source,
            })?;
            Map::from_map_data(data).map_err(|source| LoaderError::Map { name, source })
        })
    }

    fn build(
        mut get: impl FnMut(&'static str) -> Result<Map, LoaderError>,
    ) -> Result<Self, LoaderError> {
        macro_rules! typed {
            ($name:expr) => {{
                let name: &'static str = $name;
                get(name)?
                    .try_into()
                    .map_err(|source| LoaderError::Map { name, source })?
            }};
        }
        Ok(FilterMaps {
            control: typed!(MAP_CONTROL),
            gen_config: typed!(MAP_GEN_CONFIG),
            ifaces: typed!(MAP_IFACES),
            src_v4: typed!(MAP_SRC_V4),
            src_v6: typed!(MAP_SRC_V6),
            segments: typed!(MAP_SEGMENTS),
            cells: typed!(MAP_CLASS_CELLS),
            stats: typed!(MAP_REASON_STATS),
            rule_stats: typed!(MAP_RULE_STATS),
            gen_stats: typed!(MAP_GEN_STATS),
            rule_names: typed!(MAP_RULE_NAMES),
            sample_stats: typed!(filter_common::MAP_SAMPLE_STATS),
            contents: [None, None],
            last_flip: None,
        })
    }

    /// Sum of one per-CPU counter across CPUs.
    pub(crate) fn sum(
        map: &PerCpuArray<MapData, Counter>,
        index: u32,
    ) -> Result<Counter, LoaderError> {
        let values = map.get(&index, 0).map_err(|source| LoaderError::Map {
            name: "counter",
            source,
        })?;
        Ok(values.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }))
    }

    /// Drop samples (emitted to the ring, lost because it was full), summed over CPUs.
    pub fn sample_counts(&self) -> Result<(u64, u64), LoaderError> {
        let sum = |i: u32| -> Result<u64, LoaderError> {
            let values = self
                .sample_stats
                .get(&i, 0)
                .map_err(|source| LoaderError::Map {
                    name: filter_common::MAP_SAMPLE_STATS,
                    source,
                })?;
            Ok(values.iter().sum())
        };
        Ok((sum(0)?, sum(1)?))
    }

    /// The active generation and whether any generation is loaded.
    pub fn control(&self) -> Result<Control, LoaderError> {
        self.control.get(&0, 0).map_err(|source| LoaderError::Map {
            name: MAP_CONTROL,
            source,
        })
    }
}
