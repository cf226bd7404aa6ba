//! `NG_IFACES`: the interfaces the program runs on, each with its counter slot and the
//! config's per-interface settings (mode, default, rule profile) for both generation slots.
//!
//! The config names interfaces; the kernel sees ifindexes. Names are resolved here, in the
//! loader's network namespace, when a generation is published (for every registered
//! interface) and when an interface is registered (for the generations this loader
//! published), so an interface attached after a reload gets the settings the rules already
//! in force give it.

use std::collections::{BTreeMap, HashMap};

use filter_common::{flags, iface_override, mode, IfaceEntry, DIRECT_IFINDEXES, MAX_IFACES};

use super::{
    attach::{ifindex, ifname},
    FilterMaps, LoaderError,
};

/// How the active generation judges packets arriving on one registered interface.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InterfaceState {
    /// Interface index.
    pub ifindex: u32,
    /// Counter slot.
    pub slot: u32,
    /// Name in this network namespace (`ifindex N` when it has none here).
    pub name: String,
    /// `enforce` or `monitor`.
    pub mode: &'static str,
    /// `drop` or `pass`.
    pub default: &'static str,
    /// Whether the config's `interfaces:` section set the mode or the default.
    pub overridden: bool,
}

/// Per-interface override bits by interface name, as one generation has them.
pub type InterfaceOverrides = BTreeMap<String, u32>;

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> LoaderError {
    move |source| LoaderError::Map { name, source }
}

impl FilterMaps {
    /// Registered interfaces: (ifindex, entry).
    pub fn interfaces(&self) -> Vec<(u32, IfaceEntry)> {
        self.ifaces.iter().filter_map(|r| r.ok()).collect()
    }

    /// How the active generation judges each registered interface (from the maps alone, so
    /// `nodegate stats` can say it without the daemon).
    pub fn interface_states(&self) -> Result<Vec<InterfaceState>, LoaderError> {
        let control = self.control()?;
        let generation = control.active_gen & 1;
        let config = self
            .gen_config
            .get(&generation, 0)
            .map_err(|source| LoaderError::Map {
                name: filter_common::MAP_GEN_CONFIG,
                source,
            })?;
        let mut states: Vec<InterfaceState> = self
            .interfaces()
            .into_iter()
            .map(|(ifindex, entry)| {
                let bits = iface_override::of_gen(entry.overrides, generation);
                let monitor = if bits & iface_override::MODE != 0 {
                    bits & iface_override::MONITOR != 0
                } else {
                    config.mode == mode::MONITOR
                };
                let pass = if bits & iface_override::DEFAULT != 0 {
                    bits & iface_override::DEFAULT_PASS != 0
                } else {
                    config.flags & flags::DEFAULT_PASS != 0
                };
                InterfaceState {
                    ifindex,
                    slot: entry.slot,
                    name: ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}")),
                    mode: if monitor { "monitor" } else { "enforce" },
                    default: if pass { "pass" } else { "drop" },
                    overridden: bits != 0,
                }
            })
            .collect();
        states.sort_by_key(|s| s.slot);
        Ok(states)
    }

    /// Give every registered interface generation slot `generation`'s bits of `overrides` (by
    /// name; 0 for interfaces it does not name). Only that slot's byte changes, so with
    /// `generation` inactive no packet sees the change before the flip.
    pub(crate) fn write_iface_overrides(
        &mut self,
        generation: u32,
        overrides: &InterfaceOverrides,
    ) -> Result<(), LoaderError> {
        for (ifindex, entry) in self.interfaces() {
            let bits = self
                .iface_name(ifindex)
                .and_then(|name| overrides.get(&name).copied())
                .unwrap_or(0);
            let updated = IfaceEntry {
                overrides: iface_override::with_gen(entry.overrides, generation, bits),
                ..entry
            };
            if updated != entry {
                self.put_iface(ifindex, updated)?;
            }
        }
        self.published_overrides[(generation & 1) as usize] = Some(overrides.clone());
        Ok(())
    }

    /// Give `ifindex` (named `ifname`) a counter slot, keeping an existing one, and the
    /// override bits of every generation slot this loader published.
    pub(crate) fn register_iface(&mut self, ifindex: u32, name: &str) -> Result<u32, LoaderError> {
        let existing = self.ifaces.get(&ifindex, 0).ok();
        let slot = match existing {
            Some(entry) => entry.slot,
            None => {
                let used: Vec<u32> = self.interfaces().iter().map(|(_, e)| e.slot).collect();
                (1..MAX_IFACES)
                    .find(|s| !used.contains(s))
                    .ok_or(LoaderError::TooManyInterfaces)?
            }
        };
        let mut overrides = existing.map_or(0, |e| e.overrides);
        for (generation, published) in (0u32..).zip(&self.published_overrides) {
            if let Some(published) = published {
                let bits = published.get(name).copied().unwrap_or(0);
                overrides = iface_override::with_gen(overrides, generation, bits);
            }
        }
        let entry = IfaceEntry { slot, overrides };
        if existing != Some(entry) {
            self.put_iface(ifindex, entry)?;
        }
        Ok(slot)
    }

    /// Free the counter slot of an interface that is gone (its index is never reused for
    /// it: a re-created interface gets a new one).
    pub(crate) fn forget_iface(&mut self, ifindex: u32) {
        if ifindex < DIRECT_IFINDEXES {
            let _ = self.iface_index.set(ifindex, IfaceEntry::default(), 0);
        }
        let _ = self.ifaces.remove(&ifindex);
    }

    /// Copy every registered interface with a small ifindex into `NG_IFINDEX`, where the
    /// program looks it up. Needed once after adopting state whose index may lag the hash
    /// (layout 2 had no index); idempotent.
    pub fn index_interfaces(&mut self) -> Result<(), LoaderError> {
        for (ifindex, entry) in self.interfaces() {
            if ifindex < DIRECT_IFINDEXES {
                self.iface_index
                    .set(ifindex, entry, 0)
                    .map_err(map_err(filter_common::MAP_IFACE_INDEX))?;
            }
        }
        Ok(())
    }

    /// Write `ifindex`'s entry where the program reads it: `NG_IFINDEX` for a small ifindex
    /// (the program's fast path), and `NG_IFACES` always (the list `interfaces()` walks, and
    /// what the program reads for the rest). Each is one 8-byte value written whole, so a
    /// packet sees the old entry or the new one.
    fn put_iface(&mut self, ifindex: u32, entry: IfaceEntry) -> Result<(), LoaderError> {
        self.ifaces
            .insert(ifindex, entry, 0)
            .map_err(map_err(filter_common::MAP_IFACES))?;
        if ifindex < DIRECT_IFINDEXES {
            self.iface_index
                .set(ifindex, entry, 0)
                .map_err(map_err(filter_common::MAP_IFACE_INDEX))?;
        }
        Ok(())
    }

    /// The name the config knows `ifindex` by: its stand-in name if it has one, else the
    /// interface's name in this network namespace.
    fn iface_name(&self, ifindex: u32) -> Option<String> {
        self.stand_ins
            .get(&ifindex)
            .cloned()
            .or_else(|| ifname(ifindex))
    }

    /// Make the loopback device stand in for interface `name`: `BPF_PROG_TEST_RUN` frames
    /// arrive on the loopback of the caller's network namespace, so this makes test runs
    /// (replay, tests) judge with `name`'s per-interface settings, in every generation
    /// published from now on. Counters of such runs go to the loopback's slot; returns it.
    /// Only for private maps: an attached filter would apply it to real loopback traffic.
    pub fn test_runs_arrive_on(&mut self, name: &str) -> Result<u32, LoaderError> {
        let lo = loopback_ifindex();
        self.stand_ins.insert(lo, name.to_owned());
        self.register_iface(lo, name)
    }

    /// Counter slot that test runs count in: the loopback's if registered, else 0.
    pub fn test_run_slot(&self) -> u32 {
        self.ifaces
            .get(&loopback_ifindex(), 0)
            .map_or(0, |entry| entry.slot)
    }
}

/// The loopback device's ifindex in this network namespace (1 unless renamed away).
fn loopback_ifindex() -> u32 {
    ifindex("lo").unwrap_or(1)
}

/// Stand-in names of interfaces ([`FilterMaps::test_runs_arrive_on`]): ifindex → name.
pub(crate) type StandIns = HashMap<u32, String>;

/// Interface slots currently registered: (ifindex, slot).
pub fn iface_slots(maps: &FilterMaps) -> Vec<(u32, u32)> {
    maps.interfaces()
        .into_iter()
        .map(|(ifindex, e)| (ifindex, e.slot))
        .collect()
}
