//! Publishing a rule generation: write the compiled tables into the *inactive* generation
//! slot, then flip the control word once. A packet reads the control word once and then only
//! touches its generation's tables, so no packet is ever judged by a mix of two generations
//! or by a half-written one.
//!
//! The source lookup tables are written through a memory mapping, only the words that
//! differ from what the slot holds (`loader::table`); before the inactive slot is written,
//! the grace period of the flip that retired it must be over (`loader::grace`).

use std::time::{Duration, Instant};

use aya::maps::PerCpuValues;
use filter_common::{Control, Counter, MAX_RULES};

use super::{grace::GraceMethod, FilterMaps, LoaderError};
use crate::compiler::Tables;

/// Where the time of one publish went.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PublishReport {
    /// Generation slot written and made active.
    pub gen_slot: u32,
    /// Monotonic generation number now active.
    pub epoch: u64,
    /// Source table words written (both families): the words that differed.
    pub table_words_written: usize,
    /// Source table words of the new generation (both families).
    pub table_words: usize,
    /// Time writing the source tables.
    pub prefixes: Duration,
    /// Time writing segment and cell tables, names, settings.
    pub tables: Duration,
    /// Time blocked on the grace period of the previous flip.
    pub grace_wait: Duration,
    /// From the previous flip (by this process) until its grace period was known to be
    /// over, if there was one.
    pub grace_since_flip: Option<Duration>,
    /// How that grace period was waited for.
    pub grace_method: Option<GraceMethod>,
    /// Total.
    pub total: Duration,
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoaderError {
    move |source| LoaderError::Map { name, source }
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

        let grace = self.grace.wait();
        report.grace_wait = grace.blocked;
        report.grace_since_flip = grace.since_flip;
        report.grace_method = grace.method;

        let t = Instant::now();
        let v4 = self.src_v4.write(next, &tables.v4_table)?;
        let v6 = self.src_v6.write(next, &tables.v6_table)?;
        report.table_words_written = v4.words_written + v6.words_written;
        report.table_words = v4.words + v6.words;
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
        gen_config.src_v4_base = self.src_v4.region_start(next);
        gen_config.src_v6_base = self.src_v6.region_start(next);
        gen_config.src_v4_words = tables.v4_table.len() as u32;
        gen_config.src_v6_words = tables.v6_table.len() as u32;
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
        self.grace.flipped();
        report.total = start.elapsed();
        Ok(report)
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
