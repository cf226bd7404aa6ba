//! Reloads that change a few source prefixes, without recompiling the source side.
//!
//! A full compile classifies every prefix (sort and walk, `prefixes.rs`) and builds both
//! lookup tables from scratch: ~20 ms at 110k prefixes, whatever the change. But a prefix's
//! class is the union of the rules of the prefixes that contain it, so a changed prefix `P`
//! (added to or removed from a rule) can only change the classes of prefixes inside `P`, and
//! only the table's root slots that `P`'s addresses fall in. So: find the changed prefixes,
//! reclassify what lies inside each (walking it with its ancestors, which carry the inherited
//! rules), splice the result into the sorted prefix lists, and rebuild the root slots the
//! changed ranges touch. New subtrees are appended to the table; the replaced ones stay
//! behind, unreachable, until a full compile compacts the table.
//!
//! Anything else takes the full compile: rules added, removed or reordered, more than a few
//! changed prefixes, a short prefix with many prefixes inside it, a capacity change, too much
//! garbage. Tests check that an update answers every lookup exactly as a full compile does.

use filter_common::lookup::entry;
use foldhash::HashSet;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    lookup::{self, Family, TablePrefix},
    prefixes::{self, Classes, Interner},
    Tables,
};
use crate::policy::Policy;

/// Changed prefixes (added or removed, both families) one update handles.
const MAX_CHANGED: usize = 64;
/// Prefixes reclassified (inside the changed ones, with their ancestors).
const MAX_RECLASSIFIED: usize = 16_384;
/// Root slots rebuilt per family: an IPv4 /4 below the 18-bit root.
const MAX_ROOT_SLOTS: usize = 16_384;
/// A table is compacted (fully rebuilt) once replaced subtrees could make up this share of it.
const MAX_GARBAGE_SHARE: usize = 4;

/// The source side of a compile, updated from the previous generation's.
pub(super) struct Update {
    pub classes: Classes,
    pub v4_table: Vec<u32>,
    pub v6_table: Vec<u32>,
    /// Words appended to each table by updates since its last full build (an upper bound
    /// of the unreachable words in it).
    pub garbage: [usize; 2],
}

/// The previous generation's source side updated for `policy`, whose rules are in the
/// precedence order `precedence`; `None` when only a full compile will do.
pub(super) fn update(
    policy: &Policy,
    previous: &Policy,
    tables: &Tables,
    precedence: &[usize],
) -> Option<Update> {
    // Classes are sets of precedence positions: they keep their meaning only while the rules
    // keep their positions. The capacity decides the tables' room.
    if policy.rules.len() != previous.rules.len()
        || precedence != tables.precedence
        || policy.capacity != previous.capacity
    {
        return None;
    }
    let changed = changed_prefixes(policy, previous)?;
    let mut interner = Interner::from_sets(tables.class_rules.clone());
    let (words_v4, words_v6) = policy.capacity.table_words_per_gen();
    let (root_v4, root_v6) = policy.capacity.root_bits();
    let v4 = update_family::<Ipv4Net>(
        policy,
        precedence,
        &changed,
        (&tables.v4, &tables.v4_table, tables.garbage[0]),
        Room {
            words: words_v4,
            prefixes: policy.capacity.ipv4 as usize,
            root_bits: root_v4,
        },
        &mut interner,
    )?;
    let v6 = update_family::<Ipv6Net>(
        policy,
        precedence,
        &changed,
        (&tables.v6, &tables.v6_table, tables.garbage[1]),
        Room {
            words: words_v6,
            prefixes: policy.capacity.ipv6 as usize,
            root_bits: root_v6,
        },
        &mut interner,
    )?;
    if interner.sets.len() > filter_common::MAX_CLASSES as usize {
        return None;
    }
    Some(Update {
        classes: Classes {
            v4: v4.entries,
            v6: v6.entries,
            class_rules: interner.sets,
        },
        v4_table: v4.table,
        v6_table: v6.table,
        garbage: [v4.garbage, v6.garbage],
    })
}

/// Prefixes some rule gained or lost, or `None` when there are more than [`MAX_CHANGED`].
/// Sources keep file order, so an edit leaves a common head and tail. Between them: a few
/// prefixes replaced in place are found position by position, a short middle counts whole,
/// a long one (an insertion far from a deletion) is compared as sets. A prefix
/// that merely moved may count as changed: it is reclassified to the class it had.
fn changed_prefixes(policy: &Policy, previous: &Policy) -> Option<Vec<IpNet>> {
    let mut changed: Vec<IpNet> = Vec::new();
    let mut add = |net: &IpNet| {
        changed.push(net.trunc());
        changed.len() <= MAX_CHANGED
    };
    for (new, old) in policy.rules.iter().zip(&previous.rules) {
        let (new, old) = (&new.sources, &old.sources);
        if new == old {
            continue;
        }
        let head = new.iter().zip(old).take_while(|(a, b)| a == b).count();
        let tail = new[head..]
            .iter()
            .rev()
            .zip(old[head..].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let (new, old) = (&new[head..new.len() - tail], &old[head..old.len() - tail]);
        let in_place = || {
            let mut pairs = new.iter().zip(old).filter(|(a, b)| a != b);
            let replaced: Vec<_> = pairs.by_ref().take(MAX_CHANGED / 2 + 1).collect();
            (replaced.len() <= MAX_CHANGED / 2).then_some(replaced)
        };
        let all_added = match (new.len() == old.len()).then(in_place).flatten() {
            Some(replaced) => replaced.into_iter().all(|(a, b)| add(a) && add(b)),
            None if new.len() + old.len() <= MAX_CHANGED => new.iter().chain(old).all(&mut add),
            None => {
                // Shifted lists (an insertion far from a deletion): compare as sets.
                let (in_new, in_old): (HashSet<&IpNet>, HashSet<&IpNet>) =
                    (new.iter().collect(), old.iter().collect());
                new.iter()
                    .filter(|n| !in_old.contains(n))
                    .chain(old.iter().filter(|o| !in_new.contains(o)))
                    .all(&mut add)
            }
        };
        if !all_added {
            return None;
        }
    }
    changed.sort_unstable();
    changed.dedup();
    Some(changed)
}

/// One address family's prefix type, seen as walk entries: (address bits, length). Rule
/// sources and table entries have their host bits clear (`Rule::sources`), so the address
/// is the network.
trait FamilyNet: Copy + Ord {
    const FAMILY: Family;
    const WIDTH: u32;
    fn of(net: &IpNet) -> Option<Self>;
    fn bits(&self) -> (u128, u8);
    fn from_bits(addr: u128, len: u8) -> Self;
}

impl FamilyNet for Ipv4Net {
    const FAMILY: Family = Family::V4;
    const WIDTH: u32 = 32;
    fn of(net: &IpNet) -> Option<Self> {
        match net {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        }
    }
    fn bits(&self) -> (u128, u8) {
        (u128::from(u32::from(self.addr())), self.prefix_len())
    }
    fn from_bits(addr: u128, len: u8) -> Self {
        Ipv4Net::new((addr as u32).into(), len).expect("length ≤ 32")
    }
}

impl FamilyNet for Ipv6Net {
    const FAMILY: Family = Family::V6;
    const WIDTH: u32 = 128;
    fn of(net: &IpNet) -> Option<Self> {
        match net {
            IpNet::V6(n) => Some(*n),
            IpNet::V4(_) => None,
        }
    }
    fn bits(&self) -> (u128, u8) {
        (u128::from(self.addr()), self.prefix_len())
    }
    fn from_bits(addr: u128, len: u8) -> Self {
        Ipv6Net::new(addr.into(), len).expect("length ≤ 128")
    }
}

/// First and last address of a prefix, as walk address bits.
fn span<N: FamilyNet>(net: &N) -> (u128, u128) {
    let (addr, len) = net.bits();
    let host = N::WIDTH - u32::from(len);
    let host_mask = if host == 0 {
        0
    } else {
        u128::MAX >> (128 - host)
    };
    (addr & !host_mask, addr | host_mask)
}

/// Whether `outer` contains `inner` (or equals it).
fn contains<N: FamilyNet>(outer: &N, inner: &N) -> bool {
    let ((first, last), (a, _)) = (span(outer), inner.bits());
    outer.bits().1 <= inner.bits().1 && first <= a && a <= last
}

/// One family's source side: sorted (prefix, class) list, lookup table, and the words
/// incremental updates appended to the table since its last full build.
struct Side<N> {
    entries: Vec<(N, u32)>,
    table: Vec<u32>,
    garbage: usize,
}

/// How big one family's side may grow: table words per generation, prefixes.
struct Room {
    words: usize,
    prefixes: usize,
    /// Address bits of the table's root (the capacity's; unchanged since the previous
    /// generation, whose capacity this update requires to be the same).
    root_bits: u32,
}

/// Update one family's side (`entries`, `table`, `garbage` from the previous generation).
fn update_family<N: FamilyNet>(
    policy: &Policy,
    precedence: &[usize],
    changed: &[IpNet],
    (entries, table, garbage): (&[(N, u32)], &[u32], usize),
    room: Room,
    interner: &mut Interner,
) -> Option<Side<N>> {
    // The outermost changed prefixes: disjoint, sorted; nested ones are inside their range.
    let mut outer: Vec<N> = Vec::new();
    for net in changed.iter().filter_map(N::of) {
        if !outer.last().is_some_and(|o| contains(o, &net)) {
            outer.push(net);
        }
    }
    if outer.is_empty() {
        return Some(Side {
            entries: entries.to_vec(),
            table: table.to_vec(),
            garbage,
        });
    }

    // Every (prefix, rule) inside a changed prefix or containing one: two prefixes nest
    // exactly when their address ranges meet, and the outer ranges are disjoint and sorted,
    // so one binary search per source prefix decides.
    let ranges: Vec<(u128, u128)> = outer.iter().map(span).collect();
    let mut walked: Vec<(u128, u8, u32)> = Vec::new();
    for (position, &rule) in precedence.iter().enumerate() {
        for net in policy.rules[rule].sources.iter().filter_map(N::of) {
            let (first, last) = span(&net);
            let i = ranges.partition_point(|r| r.1 < first);
            if i < ranges.len() && ranges[i].0 <= last {
                walked.push((first, net.bits().1, position as u32));
                if walked.len() > MAX_RECLASSIFIED {
                    return None;
                }
            }
        }
    }
    walked.sort_unstable();
    let classified = prefixes::walk(walked, N::WIDTH, interner);

    // Splice each changed range's new prefixes over its old ones, last range first.
    let mut next = entries.to_vec();
    for o in outer.iter().rev() {
        let (first, last) = span(o);
        let lo = next.partition_point(|(n, _)| n < o);
        let hi = next.partition_point(|(n, _)| n.bits().0 <= last);
        let inside = classified
            .iter()
            .filter(|&&(a, l, _)| l >= o.bits().1 && first <= a && a <= last)
            .map(|&(a, l, class)| (N::from_bits(a, l), class));
        next.splice(lo..hi, inside);
    }
    if next.len() > room.prefixes {
        return None;
    }

    // Rebuild the root slots the changed ranges cover.
    let root_bits = room.root_bits;
    let shift = N::WIDTH - root_bits;
    let mut slots: Vec<usize> = Vec::new();
    for o in &outer {
        let (first, last) = span(o);
        let (a, b) = ((first >> shift) as usize, (last >> shift) as usize);
        if slots.len() + (b - a + 1) > MAX_ROOT_SLOTS {
            return None;
        }
        slots.extend(a..=b);
    }
    slots.dedup();
    let mut words = table.to_vec();
    let mut appended = 0;
    let align = 128 - N::WIDTH;
    for slot in slots {
        let start = (slot as u128) << shift;
        let last = start | ((1u128 << shift) - 1);
        // The longest prefix of at most the root's bits covering the slot answers outside
        // the slot's deeper prefixes.
        let outside = (0..=root_bits as u8)
            .rev()
            .find_map(|len| {
                let host = N::WIDTH - u32::from(len);
                let net = N::from_bits(
                    if host >= 128 {
                        0
                    } else {
                        start >> host << host
                    },
                    len,
                );
                next.binary_search_by(|(n, _)| n.cmp(&net))
                    .ok()
                    .map(|i| entry::leaf(next[i].1))
            })
            .unwrap_or(0);
        let deeper_from = N::from_bits(start, root_bits as u8 + 1);
        let lo = next.partition_point(|(n, _)| *n < deeper_from);
        let hi = next.partition_point(|(n, _)| n.bits().0 <= last);
        let deeper: Vec<TablePrefix> = next[lo..hi]
            .iter()
            .map(|(n, class)| {
                let (addr, len) = n.bits();
                TablePrefix {
                    addr: addr << align,
                    len,
                    leaf: entry::leaf(*class),
                }
            })
            .collect();
        appended +=
            lookup::rebuild_root_slot(N::FAMILY, root_bits, &mut words, slot, &deeper, outside);
    }
    let garbage = garbage + appended;
    if words.len() > room.words || garbage * MAX_GARBAGE_SHARE > words.len() {
        return None;
    }
    Some(Side {
        entries: next,
        table: words,
        garbage,
    })
}
