//! Typed handles on every map of the XDP program, whether freshly loaded or opened from pins.

use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use filter_common::{
    flow_stat, ClassCells, Control, Counter, FlowKey, FlowState, GenConfig, IfaceEntry, RuleName,
    SegmentChunk, MAP_CLASS_CELLS, MAP_CONTROL, MAP_GEN_CONFIG, MAP_GEN_STATS, MAP_IFACES,
    MAP_REASON_STATS, MAP_RULE_NAMES, MAP_RULE_STATS, MAP_SEGMENTS, MAP_SRC_V4, MAP_SRC_V6,
};

use super::LoaderError;

/// Names of every map the loader pins and adopts, in one list so pinning, adoption and
/// removal can never disagree about what exists.
pub const PINNED_MAPS: &[&str] = filter_common::ALL_MAPS;

/// One counter summed over every CPU's copy.
pub(crate) fn sum_cpus(values: &[Counter]) -> Counter {
    values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

/// The rule tables, settings and counters of one loaded (or adopted) XDP program.
pub struct FilterMaps {
    pub(crate) control: Array<MapData, Control>,
    pub(crate) gen_config: Array<MapData, GenConfig>,
    pub(crate) ifaces: HashMap<MapData, u32, IfaceEntry>,
    /// `NG_IFINDEX`: the entries of `ifaces` with a small ifindex, indexed by it.
    pub(crate) iface_index: Array<MapData, IfaceEntry>,
    pub(crate) src_v4: super::table::MappedTable,
    pub(crate) src_v6: super::table::MappedTable,
    pub(crate) segments: Array<MapData, SegmentChunk>,
    pub(crate) cells: Array<MapData, ClassCells>,
    pub(crate) rows: Array<MapData, u32>,
    pub(crate) stats: PerCpuArray<MapData, Counter>,
    pub(crate) rule_stats: PerCpuArray<MapData, Counter>,
    pub(crate) gen_stats: PerCpuArray<MapData, Counter>,
    pub(crate) rule_names: Array<MapData, RuleName>,
    pub(crate) sample_stats: PerCpuArray<MapData, u64>,
    pub(crate) flows: aya::maps::HashMap<MapData, FlowKey, FlowState>,
    pub(crate) flow_stats: PerCpuArray<MapData, u64>,
    /// The grace period owed to the generation slot the last flip retired.
    pub(crate) grace: super::grace::Grace,
    /// Per-interface overrides of each generation slot this process published.
    pub(crate) published_overrides: [Option<super::interfaces::InterfaceOverrides>; 2],
    /// Interfaces that stand in for others in test runs.
    pub(crate) stand_ins: super::interfaces::StandIns,
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
            iface_index: typed!(filter_common::MAP_IFACE_INDEX),
            src_v4: super::table::MappedTable::new(MAP_SRC_V4, get(MAP_SRC_V4)?)?,
            src_v6: super::table::MappedTable::new(MAP_SRC_V6, get(MAP_SRC_V6)?)?,
            segments: typed!(MAP_SEGMENTS),
            cells: typed!(MAP_CLASS_CELLS),
            rows: typed!(filter_common::MAP_CLASS_ROWS),
            stats: typed!(MAP_REASON_STATS),
            rule_stats: typed!(MAP_RULE_STATS),
            gen_stats: typed!(MAP_GEN_STATS),
            rule_names: typed!(MAP_RULE_NAMES),
            sample_stats: typed!(filter_common::MAP_SAMPLE_STATS),
            flows: typed!(filter_common::MAP_FLOWS),
            flow_stats: typed!(filter_common::MAP_FLOW_STATS),
            grace: super::grace::Grace::after_adoption(),
            published_overrides: [None, None],
            stand_ins: Default::default(),
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
        Ok(sum_cpus(&values))
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

    /// Flow table accounting (stateful return traffic), summed over CPUs, with the live
    /// entry count.
    ///
    /// Evictions are an estimate of what the LRU map hides: nothing but LRU eviction ever
    /// deletes an entry (expired flows stay until evicted), and the egress program counts an
    /// insert only when it created a key (`BPF_NOEXIST`), so `inserts − entries` is the
    /// number of entries evicted — exact except for entries written from userspace (tests).
    pub fn flow_counts(&self) -> Result<FlowCounts, LoaderError> {
        let mut counts = self.flow_events()?;
        counts.entries = self.flows.keys().filter(|k| k.is_ok()).count() as u64;
        counts.evictions = counts.inserts.saturating_sub(counts.entries);
        Ok(counts)
    }

    /// The flow table's event counters only (inserts, refreshes, closing), without walking
    /// the table: cheap enough for every metrics scrape. `entries` and `evictions` are 0.
    pub fn flow_events(&self) -> Result<FlowCounts, LoaderError> {
        let sum = |i: u32| -> Result<u64, LoaderError> {
            let values = self
                .flow_stats
                .get(&i, 0)
                .map_err(|source| LoaderError::Map {
                    name: filter_common::MAP_FLOW_STATS,
                    source,
                })?;
            Ok(values.iter().sum())
        };
        Ok(FlowCounts {
            inserts: sum(flow_stat::INSERTS)?,
            refreshes: sum(flow_stat::REFRESHES)?,
            closing: sum(flow_stat::CLOSING)?,
            entries: 0,
            evictions: 0,
        })
    }

    /// Entries the flow table holds at most: the capacity it was created with.
    pub fn flow_capacity(&self) -> Result<u32, LoaderError> {
        use aya::maps::IterableMap as _;
        let name = filter_common::MAP_FLOWS;
        self.flows
            .map()
            .info()
            .map(|info| info.max_entries())
            .map_err(|source| LoaderError::Map { name, source })
    }

    /// Insert a flow entry by hand (tests, diagnostics).
    pub fn insert_flow(&mut self, key: FlowKey, state: FlowState) -> Result<(), LoaderError> {
        self.flows
            .insert(key, state, 0)
            .map_err(|source| LoaderError::Map {
                name: filter_common::MAP_FLOWS,
                source,
            })
    }

    /// Up to `limit` keys of the flow table: the flows the node has open now (expired ones
    /// included until the LRU evicts them).
    pub fn flow_keys(&self, limit: usize) -> Vec<FlowKey> {
        self.flows
            .keys()
            .filter_map(Result::ok)
            .take(limit)
            .collect()
    }

    /// One flow entry, if present.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowState> {
        self.flows.get(key, 0).ok()
    }

    /// Kernel memory of the source lookup tables (IPv4, IPv6), bytes, every generation.
    pub fn table_bytes(&self) -> (usize, usize) {
        (self.src_v4.bytes(), self.src_v6.bytes())
    }

    /// Words each generation of the source lookup tables holds at most (IPv4, IPv6).
    pub fn table_words_per_gen(&self) -> (usize, usize) {
        (self.src_v4.words_per_gen(), self.src_v6.words_per_gen())
    }

    /// How full the source lookup tables are: the active generation's words against what
    /// each generation may use, and the kernel memory of both maps.
    pub fn table_usage(&self) -> Result<TableUsage, LoaderError> {
        let control = self.control()?;
        let cfg = self
            .gen_config
            .get(&(control.active_gen & 1), 0)
            .map_err(|source| LoaderError::Map {
                name: MAP_GEN_CONFIG,
                source,
            })?;
        let (v4_room, v6_room) = self.table_words_per_gen();
        let (v4_bytes, v6_bytes) = self.table_bytes();
        let used = |words: u32| {
            if control.ready == 0 {
                0
            } else {
                words as usize
            }
        };
        Ok(TableUsage {
            ipv4: FamilyTable {
                bytes_used: used(cfg.src_v4_words) * 4,
                bytes_per_generation: v4_room * 4,
                kernel_bytes: v4_bytes,
            },
            ipv6: FamilyTable {
                bytes_used: used(cfg.src_v6_words) * 4,
                bytes_per_generation: v6_room * 4,
                kernel_bytes: v6_bytes,
            },
        })
    }

    /// The first `words` words of generation slot `generation`'s IPv4 and IPv6 source tables.
    pub fn read_tables(&self, generation: u32, words: (usize, usize)) -> (Vec<u32>, Vec<u32>) {
        (
            self.src_v4.read(generation, words.0),
            self.src_v6.read(generation, words.1),
        )
    }

    /// The active generation and whether any generation is loaded.
    pub fn control(&self) -> Result<Control, LoaderError> {
        self.control.get(&0, 0).map_err(|source| LoaderError::Map {
            name: MAP_CONTROL,
            source,
        })
    }

    /// The epoch of the generation packets are judged by now (`None` before the first).
    pub fn active_epoch(&self) -> Result<Option<u64>, LoaderError> {
        let control = self.control()?;
        if control.ready == 0 {
            return Ok(None);
        }
        self.gen_config
            .get(&control.active_gen, 0)
            .map(|config| Some(config.epoch))
            .map_err(|source| LoaderError::Map {
                name: MAP_GEN_CONFIG,
                source,
            })
    }
}

/// One family's source lookup table; see [`FilterMaps::table_usage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FamilyTable {
    /// Bytes the active generation's table uses.
    pub bytes_used: usize,
    /// Bytes each generation may use.
    pub bytes_per_generation: usize,
    /// Kernel memory of the map (every generation).
    pub kernel_bytes: usize,
}

impl FamilyTable {
    /// `bytes_used / bytes_per_generation`.
    pub fn fill(&self) -> f64 {
        self.bytes_used as f64 / self.bytes_per_generation.max(1) as f64
    }
}

/// Both families' source lookup tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableUsage {
    /// IPv4.
    pub ipv4: FamilyTable,
    /// IPv6.
    pub ipv6: FamilyTable,
}

/// Flow table accounting; see [`FilterMaps::flow_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// Entries the egress program created.
    pub inserts: u64,
    /// Egress packets that refreshed an entry.
    pub refreshes: u64,
    /// Entries that entered the closing state.
    pub closing: u64,
    /// Entries in the map now (live or expired, not yet evicted).
    pub entries: u64,
    /// `inserts − entries`: entries the LRU evicted (estimate; see `flow_counts`).
    pub evictions: u64,
}
