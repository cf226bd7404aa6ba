//! Publishing a rule generation: write the compiled tables into the *inactive* generation
//! slot, then flip the control word once. A packet reads the control word once and then only
//! touches its generation's tables, so no packet is ever judged by a mix of two generations
//! or by a half-written one.
//!
//! Writes are diffs: the loader remembers (or, after adoption, reads back once) what each
//! generation slot of the prefix tries holds, and only inserts and removes the difference,
//! so a reload that changes a few prefixes out of 100k costs a few syscalls.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    MapData, PerCpuValues,
};
use filter_common::{Control, Counter, SrcV4Data, SrcV6Data, MAX_RULES};

use super::{FilterMaps, LoaderError};
use crate::compiler::Tables;

/// After a flip, packets that read the old generation just before it may still be in
/// flight (XDP runs under RCU, for well under a microsecond per packet). The next publish
/// waits at least this long after a flip before it overwrites that old generation.
pub const FLIP_GRACE: Duration = Duration::from_millis(20);

/// Where the time of one publish went.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PublishReport {
    /// Generation slot written and made active.
    pub gen_slot: u32,
    /// Monotonic generation number now active.
    pub epoch: u64,
    /// Prefix entries inserted / removed (both families).
    pub prefixes_written: usize,
    /// Prefix entries removed.
    pub prefixes_removed: usize,
    /// Time reading back a trie after adoption (first publish only).
    pub readback: Duration,
    /// Time writing prefix tries.
    pub prefixes: Duration,
    /// Time writing segment and cell tables, names, settings.
    pub tables: Duration,
    /// Time waiting for the previous flip's grace period.
    pub grace_wait: Duration,
    /// Total.
    pub total: Duration,
}

/// What each generation slot of the prefix tries holds (prefix_len, data) → class.
#[derive(Default)]
pub(crate) struct GenContents {
    v4: HashMap<(u32, SrcV4Data), u32>,
    v6: HashMap<(u32, SrcV6Data), u32>,
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoaderError {
    move |source| LoaderError::Map { name, source }
}

/// What generation slot `gen` of a prefix trie holds: keys whose data starts with the slot
/// number (big-endian), with their classes.
fn slot_entries<K: aya::Pod + AsRef<[u8]> + Eq + std::hash::Hash>(
    trie: &LpmTrie<MapData, K, u32>,
    name: &'static str,
    gen: u32,
) -> Result<HashMap<(u32, K), u32>, LoaderError> {
    let tag = gen.to_be_bytes();
    let mut entries = HashMap::new();
    for entry in trie.iter() {
        let (key, class) = entry.map_err(map_err(name))?;
        let data = key.data();
        if data.as_ref()[..tag.len()] == tag {
            entries.insert((key.prefix_len(), data), class);
        }
    }
    Ok(entries)
}

/// Make one generation slot of a prefix trie hold exactly `wanted`, writing only the
/// difference from `have` (what the slot holds now), and keep `have` up to date.
fn sync_trie<K: aya::Pod + Eq + std::hash::Hash>(
    trie: &mut LpmTrie<MapData, K, u32>,
    name: &'static str,
    wanted: impl Iterator<Item = (Key<K>, u32)>,
    have: &mut HashMap<(u32, K), u32>,
    report: &mut PublishReport,
) -> Result<(), LoaderError> {
    let wanted: HashMap<(u32, K), u32> = wanted
        .map(|(k, v)| ((k.prefix_len(), k.data()), v))
        .collect();
    // Remove stale entries first: the slot is inactive, so nothing reads it, and the trie is
    // sized for two full generations, so inserting a whole new list before removing the old
    // one would overflow it (ENOSPC) when both are large.
    let stale: Vec<(u32, K)> = have
        .keys()
        .filter(|k| !wanted.contains_key(k))
        .copied()
        .collect();
    for (len, data) in stale {
        trie.remove(&Key::new(len, data)).map_err(map_err(name))?;
        have.remove(&(len, data));
        report.prefixes_removed += 1;
    }
    for (&(len, data), &class) in &wanted {
        if have.get(&(len, data)) != Some(&class) {
            trie.insert(&Key::new(len, data), class, 0)
                .map_err(map_err(name))?;
            have.insert((len, data), class);
            report.prefixes_written += 1;
        }
    }
    Ok(())
}

impl FilterMaps {
    /// Make `tables` the active generation. On error the active generation is untouched
    /// (everything before the flip only writes the inactive slot).
    pub fn publish(&mut self, tables: &Tables) -> Result<PublishReport, LoaderError> {
        let start = Instant::now();
        let mut report = PublishReport::default();
        let control = self.control()?;
        let next = if control.ready == 0 {
            0
        } else {
            1 - (control.active_gen & 1)
        };
        report.gen_slot = next;

        if let Some(flip) = self.last_flip {
            let since = flip.elapsed();
            if since < FLIP_GRACE {
                report.grace_wait = FLIP_GRACE - since;
                std::thread::sleep(report.grace_wait);
            }
        }

        let t = Instant::now();
        if self.contents[next as usize].is_none() {
            self.contents[next as usize] = Some(self.read_back(next)?);
        }
        report.readback = t.elapsed();

        let t = Instant::now();
        let mut contents = self.contents[next as usize].take().unwrap_or_default();
        let result = self.write_prefixes(tables, next, &mut contents, &mut report);
        self.contents[next as usize] = Some(contents);
        result?;
        report.prefixes = t.elapsed();

        let t = Instant::now();
        for (index, chunk) in tables.segment_entries(next) {
            self.segments
                .set(index, chunk, 0)
                .map_err(map_err(filter_common::MAP_SEGMENTS))?;
        }
        for (index, cells) in tables.cell_entries(next) {
            self.cells
                .set(index, cells, 0)
                .map_err(map_err(filter_common::MAP_CLASS_CELLS))?;
        }
        for (index, row) in tables.row_entries(next) {
            self.rows
                .set(index, row, 0)
                .map_err(map_err(filter_common::MAP_CLASS_ROWS))?;
        }
        // A slot new to this generation must not inherit a removed rule's counts.
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| LoaderError::Cpus(source))?;
        let zero: PerCpuValues<Counter> =
            PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(LoaderError::Cpus)?;
        for slot in &tables.fresh_slots {
            for index in [u32::from(*slot), u32::from(*slot) + MAX_RULES] {
                self.rule_stats
                    .set(
                        index,
                        PerCpuValues::try_from(zero.to_vec()).map_err(LoaderError::Cpus)?,
                        0,
                    )
                    .map_err(map_err(filter_common::MAP_RULE_STATS))?;
            }
        }
        for (slot, name) in tables.rule_name_entries() {
            self.rule_names
                .set(slot, name, 0)
                .map_err(map_err(filter_common::MAP_RULE_NAMES))?;
        }
        let previous_epoch = (0..2)
            .filter_map(|g| self.gen_config.get(&g, 0).ok())
            .map(|c| c.epoch)
            .max()
            .unwrap_or(0);
        let mut gen_config = tables.gen_config;
        gen_config.epoch = previous_epoch + 1;
        report.epoch = gen_config.epoch;
        self.gen_config
            .set(next, gen_config, 0)
            .map_err(map_err(filter_common::MAP_GEN_CONFIG))?;
        self.write_iface_overrides(next, &tables.interfaces)?;
        report.tables = t.elapsed();

        // The flip: one 8-byte array element, read once per packet.
        self.control
            .set(
                0,
                Control {
                    active_gen: next,
                    ready: 1,
                },
                0,
            )
            .map_err(map_err(filter_common::MAP_CONTROL))?;
        self.last_flip = Some(Instant::now());
        report.total = start.elapsed();
        Ok(report)
    }

    fn write_prefixes(
        &mut self,
        tables: &Tables,
        gen: u32,
        contents: &mut GenContents,
        report: &mut PublishReport,
    ) -> Result<(), LoaderError> {
        sync_trie(
            &mut self.src_v4,
            filter_common::MAP_SRC_V4,
            tables.v4_lpm_entries(gen),
            &mut contents.v4,
            report,
        )?;
        sync_trie(
            &mut self.src_v6,
            filter_common::MAP_SRC_V6,
            tables.v6_lpm_entries(gen),
            &mut contents.v6,
            report,
        )
    }

    /// Read what generation slot `gen` of the tries holds (after adopting pinned maps).
    fn read_back(&self, gen: u32) -> Result<GenContents, LoaderError> {
        Ok(GenContents {
            v4: slot_entries(&self.src_v4, filter_common::MAP_SRC_V4, gen)?,
            v6: slot_entries(&self.src_v6, filter_common::MAP_SRC_V6, gen)?,
        })
    }

    /// Rule slot assignment as pinned (slot → name), for a restarted loader.
    pub fn pinned_rule_slots(&self) -> Vec<(String, u16)> {
        (1..MAX_RULES)
            .filter_map(|slot| {
                let entry = self.rule_names.get(&slot, 0).ok()?;
                let end = entry
                    .name
                    .iter()
                    .position(|b| *b == 0)
                    .unwrap_or(entry.name.len());
                (end > 0).then(|| {
                    (
                        String::from_utf8_lossy(&entry.name[..end]).into_owned(),
                        slot as u16,
                    )
                })
            })
            .collect()
    }
}
