//! Rule name → rule slot, stable across reloads.

use std::collections::{BTreeMap, BTreeSet};

use filter_common::MAX_RULES;

use super::{CompileError, Tables};

/// The committed rule slot assignment: rule name → slot `1..MAX_RULES` (slot 0 = no rule).
///
/// Per-rule counters are indexed by slot, so a name keeps its slot for as long as it exists.
/// [`super::compile`] only *proposes* the next assignment (in [`Tables::rule_names`]): a new
/// name takes the lowest slot that is free both here and in the proposal, so a slot of a
/// removed rule is not reused while the active generation may still count packets into it.
/// After the new generation is published, [`RuleSlots::commit`] adopts the proposal and the
/// slots of removed names become free.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSlots {
    by_name: BTreeMap<String, u16>,
}

impl RuleSlots {
    /// No slot assigned.
    pub fn new() -> RuleSlots {
        RuleSlots::default()
    }

    /// Rebuild from (name, slot) pairs, e.g. read back from the pinned `NG_RULE_NAMES` map by
    /// a restarted loader. Pairs with slot 0 or `>= MAX_RULES` are ignored; a later pair for
    /// the same name or slot replaces an earlier one.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, u16)>) -> RuleSlots {
        let mut by_name = BTreeMap::new();
        let mut by_slot: BTreeMap<u16, String> = BTreeMap::new();
        for (name, slot) in pairs {
            if slot == 0 || u32::from(slot) >= MAX_RULES {
                continue;
            }
            if let Some(old) = by_slot.insert(slot, name.clone()) {
                by_name.remove(&old);
            }
            if let Some(old_slot) = by_name.insert(name, slot) {
                by_slot.remove(&old_slot);
            }
        }
        RuleSlots { by_name }
    }

    /// The slot of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }

    /// (name, slot) pairs, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u16)> {
        self.by_name.iter().map(|(n, s)| (n.as_str(), *s))
    }

    /// Number of assigned slots.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no slot is assigned.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Adopt the assignment of a generation that has been published: names absent from it
    /// lose their slots.
    pub fn commit(&mut self, tables: &Tables) {
        self.by_name = tables
            .rule_names
            .iter()
            .map(|(slot, name)| (name.clone(), *slot))
            .collect();
    }

    /// The assignment for `names` (distinct), without changing `self`, and the slots that
    /// are new.
    pub(super) fn propose<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(BTreeMap<String, u16>, Vec<u16>), CompileError> {
        let names: Vec<&str> = names.into_iter().collect();
        let mut used: BTreeSet<u16> = self.by_name.values().copied().collect();
        let mut out = BTreeMap::new();
        let mut fresh = Vec::new();
        let mut next = 1u16;
        for name in &names {
            if let Some(slot) = self.get(name) {
                out.insert(name.to_string(), slot);
            }
        }
        for name in names {
            if out.contains_key(name) {
                continue;
            }
            while used.contains(&next) {
                next += 1;
            }
            if u32::from(next) >= MAX_RULES {
                return Err(CompileError::SlotsExhausted {
                    name: name.to_string(),
                    reserved: self.by_name.len(),
                });
            }
            used.insert(next);
            out.insert(name.to_string(), next);
            fresh.push(next);
        }
        fresh.sort_unstable();
        Ok((out, fresh))
    }
}
