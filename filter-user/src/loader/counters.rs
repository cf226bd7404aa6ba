//! Reading counters out of the maps: per interface and reason, per rule, per generation.

use filter_common::{Counter, Reason, RuleName, MAX_IFACES, MAX_RULES, STAT_SLOTS};

use super::{FilterMaps, LoaderError};

/// One non-zero reason counter.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReasonCount {
    /// Interface counter slot (0 = unregistered interfaces and test runs).
    pub iface_slot: u32,
    /// Reason name.
    pub reason: &'static str,
    /// Whether this counts monitor-mode would-drops.
    pub would_drop: bool,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One non-zero rule counter.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleCount {
    /// Rule slot.
    pub slot: u32,
    /// Rule name as last published (empty if the slot was never named).
    pub name: String,
    /// Whether this counts monitor-mode would-drops.
    pub would_drop: bool,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// All non-zero counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    /// Reason counters.
    pub reasons: Vec<ReasonCount>,
    /// Rule counters.
    pub rules: Vec<RuleCount>,
    /// Packets judged per generation slot.
    pub generations: [u64; 2],
}

fn name_of(entry: &RuleName) -> String {
    let end = entry
        .name
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(entry.name.len());
    String::from_utf8_lossy(&entry.name[..end]).into_owned()
}

/// Every non-zero counter of a per-CPU counter array, summed over CPUs: (index, total).
fn nonzero(
    map: &aya::maps::PerCpuArray<aya::maps::MapData, Counter>,
    name: &'static str,
) -> Result<Vec<(u32, Counter)>, LoaderError> {
    let mut out = Vec::new();
    for (index, values) in map.iter().enumerate() {
        let values = values.map_err(|source| LoaderError::Map { name, source })?;
        let total = super::maps::sum_cpus(&values);
        if total.packets != 0 {
            out.push((index as u32, total));
        }
    }
    Ok(out)
}

impl FilterMaps {
    /// Read every counter (one pass over the per-CPU arrays).
    pub fn snapshot(&self) -> Result<Snapshot, LoaderError> {
        let mut snap = Snapshot::default();
        for (index, total) in nonzero(&self.stats, filter_common::MAP_REASON_STATS)? {
            let (iface_slot, slot) = (index / STAT_SLOTS, index % STAT_SLOTS);
            if iface_slot >= MAX_IFACES {
                continue;
            }
            let Some(reason) = Reason::from_u32(slot % filter_common::REASON_SLOTS) else {
                continue;
            };
            snap.reasons.push(ReasonCount {
                iface_slot,
                reason: reason.name(),
                would_drop: slot >= filter_common::REASON_SLOTS,
                packets: total.packets,
                bytes: total.bytes,
            });
        }
        for (index, total) in nonzero(&self.rule_stats, filter_common::MAP_RULE_STATS)? {
            let slot = index % MAX_RULES;
            let name = self
                .rule_names
                .get(&slot, 0)
                .map(|n| name_of(&n))
                .unwrap_or_default();
            snap.rules.push(RuleCount {
                slot,
                name,
                would_drop: index >= MAX_RULES,
                packets: total.packets,
                bytes: total.bytes,
            });
        }
        for generation in 0..2u32 {
            snap.generations[generation as usize] =
                FilterMaps::sum(&self.gen_stats, generation)?.packets;
        }
        Ok(snap)
    }
}
