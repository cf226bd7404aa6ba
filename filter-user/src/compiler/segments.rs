//! Service keys → segments: runs of keys of one kind covered by the same set of rules.

use foldhash::{HashMap, HashMapExt};

use filter_common::{ServiceKind, SERVICE_INDEX_SPACE, SERVICE_KINDS};

use super::{kind_name, Bits, CompileError, MAX_KIND_SEGMENTS};
use crate::policy::{Protocol, Rule};

/// Output of [`segment`].
pub(super) struct Segments {
    /// Segment id per service index.
    pub index: Vec<u16>,
    /// Per kind: rule set per segment id; id 0 is the empty set.
    pub rules: [Vec<Bits>; SERVICE_KINDS as usize],
}

/// The key ranges of `kind` a rule covers (empty: none).
pub(crate) fn rule_ranges(rule: &Rule, kind: ServiceKind) -> Vec<(u32, u32)> {
    let full = vec![(0, kind.key_space() - 1)];
    let own = match (rule.protocol, kind) {
        (Protocol::Any, _) => return full,
        (Protocol::Tcp, ServiceKind::Tcp)
        | (Protocol::Udp, ServiceKind::Udp)
        | (Protocol::Icmp, ServiceKind::Icmp)
        | (Protocol::Icmpv6, ServiceKind::Icmpv6) => &rule.keys,
        _ => return Vec::new(),
    };
    if own.is_empty() {
        return full;
    }
    let max = kind.key_space() - 1;
    own.iter()
        .filter(|r| r.start() <= r.end() && u32::from(*r.start()) <= max)
        .map(|r| (u32::from(*r.start()), u32::from(*r.end()).min(max)))
        .collect()
}

/// Cut every kind's key space at all range boundaries. `rules` are in precedence order.
pub(super) fn segment(rules: &[&Rule]) -> Result<Segments, CompileError> {
    let mut index = vec![0u16; SERVICE_INDEX_SPACE as usize];
    let rules_per_kind = ServiceKind::ALL.map(|kind| {
        // (point, rule, +1 start / -1 end), end = one past the range.
        let mut events: Vec<(u32, usize, i32)> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for (lo, hi) in rule_ranges(rule, kind) {
                events.push((lo, i, 1));
                events.push((hi + 1, i, -1));
            }
        }
        events.sort_unstable();
        let mut count = vec![0i32; rules.len()];
        let mut current: Bits = [0; std::mem::size_of::<Bits>() / 8];
        let mut ids: HashMap<Bits, u16> = HashMap::new();
        let mut sets: Vec<Bits> = vec![current];
        ids.insert(current, 0);
        let space = kind.key_space();
        let base = kind.key_offset() as usize;
        let mut e = 0;
        let mut point = 0u32;
        while point < space {
            while e < events.len() && events[e].0 == point {
                let (_, r, d) = events[e];
                count[r] += d;
                if count[r] > 0 {
                    current[r / 64] |= 1 << (r % 64);
                } else {
                    current[r / 64] &= !(1 << (r % 64));
                }
                e += 1;
            }
            let next = events.get(e).map_or(space, |ev| ev.0.min(space));
            let id = *ids.entry(current).or_insert_with(|| {
                sets.push(current);
                (sets.len() - 1) as u16
            });
            index[base + point as usize..base + next as usize].fill(id);
            point = next;
        }
        sets
    });
    for kind in ServiceKind::ALL {
        let count = rules_per_kind[kind as usize].len() - 1;
        if count > MAX_KIND_SEGMENTS {
            return Err(CompileError::TooManySegments {
                kind: kind_name(kind),
                count,
                max: MAX_KIND_SEGMENTS,
            });
        }
    }
    Ok(Segments {
        index,
        rules: rules_per_kind,
    })
}
