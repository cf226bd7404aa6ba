//! Rules that name interfaces: rule profiles and cell rows.
//!
//! A rule with `interfaces: [...]` exists only on those interfaces. Every interface gets a
//! *profile*: the set of rules that apply on it. Profile 0 is that of every interface no rule
//! names (the rules without `interfaces`); each named interface gets the profile of its rule
//! set, shared by interfaces with the same set. The kernel finds the profile in the
//! interface's `NG_IFACES` byte.
//!
//! A packet's source class says which rules cover the source; on an interface only those of
//! its profile count. Each (profile, class) therefore maps to a *row* of cells computed from
//! `class ∩ profile` (rows with the same rule set are shared), or to `NO_ROW` when no rule of
//! the profile covers the source: `no-source-match`, as if the other rules did not exist.
//! Without interface-scoped rules there is one profile and the rows are the classes.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};

use filter_common::{MAX_CLASSES, MAX_PROFILES, NO_ROW};

use super::{Bits, CompileError};
use crate::policy::Rule;

/// The rule profiles of a policy.
pub(crate) struct Profiles {
    /// Rules (precedence indices) that apply, per profile; profile 0 first.
    pub(crate) masks: Vec<Bits>,
    /// Profile of each interface a rule names.
    pub(crate) of_iface: BTreeMap<String, u32>,
}

/// The profiles of `prec_rules` (rules in precedence order).
pub(crate) fn profiles(prec_rules: &[&Rule]) -> Result<Profiles, CompileError> {
    let mask_on = |ifname: Option<&str>| -> Bits {
        let mut bits: Bits = [0; std::mem::size_of::<Bits>() / 8];
        for (p, rule) in prec_rules.iter().enumerate() {
            if rule.applies_on(ifname) {
                bits[p / 64] |= 1 << (p % 64);
            }
        }
        bits
    };
    let mut masks = vec![mask_on(None)];
    let mut of_iface = BTreeMap::new();
    let named: std::collections::BTreeSet<&str> = prec_rules
        .iter()
        .flat_map(|r| r.interfaces.iter().map(String::as_str))
        .collect();
    for name in named {
        let mask = mask_on(Some(name));
        let id = match masks.iter().position(|m| *m == mask) {
            Some(id) => id,
            None => {
                masks.push(mask);
                masks.len() - 1
            }
        };
        of_iface.insert(name.to_owned(), id as u32);
    }
    if masks.len() > MAX_PROFILES as usize {
        return Err(CompileError::TooManyProfiles {
            count: masks.len(),
            max: MAX_PROFILES as usize,
        });
    }
    Ok(Profiles { masks, of_iface })
}

/// Cell rows: per profile and class, the row id (or `NO_ROW`), and per row the rules it
/// decides among.
pub(crate) struct Rows {
    pub(crate) of: Vec<Vec<u32>>,
    pub(crate) rules: Vec<Bits>,
}

/// The rows of `class_rules` (rule set per class) under `profiles`.
pub(crate) fn rows(class_rules: &[Bits], profiles: &Profiles) -> Result<Rows, CompileError> {
    let mut id_of: HashMap<Bits, u32> = HashMap::new();
    let mut rules: Vec<Bits> = Vec::new();
    let of = profiles
        .masks
        .iter()
        .map(|mask| {
            class_rules
                .iter()
                .map(|class| {
                    let active: Bits = std::array::from_fn(|w| class[w] & mask[w]);
                    if active.iter().all(|w| *w == 0) {
                        return NO_ROW;
                    }
                    *id_of.entry(active).or_insert_with(|| {
                        rules.push(active);
                        (rules.len() - 1) as u32
                    })
                })
                .collect()
        })
        .collect();
    if rules.len() > MAX_CLASSES as usize {
        return Err(CompileError::TooManyClasses {
            count: rules.len(),
            max: MAX_CLASSES as usize,
        });
    }
    Ok(Rows { of, rules })
}
