//! Cross-entry resolution: rule names unique across `failsafe` and `rules`, set references
//! resolved to their prefixes, unused sets, sources that cover a whole address family: the
//! [`Document`]'s rules become the policy's [`Rule`]s, with the positions of their sources.

// foldhash: the per-entry sets here see every CIDR of the file (100k+); SipHash was a
// tenth of the front end's time on such files.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use ipnet::IpNet;

use super::document::{Document, SetDef};
use super::node::{suggest, Cx};
use super::rules::{FromItem, RawRule};
use super::yaml::Pos;
use crate::compiler::MAX_POLICY_RULES;
use crate::policy::{Rule, RuleKind};

/// Overlap (and unused-set) warnings shown individually before they are summarised.
pub(super) const MAX_OVERLAP_WARNINGS: usize = 20;

/// The address family whose every address `sources` cover together (`0.0.0.0/1` and
/// `128.0.0.0/1` are "from anywhere" as much as `0.0.0.0/0`), if any.
fn whole_family(sources: &[IpNet]) -> Option<&'static str> {
    for (family, bits) in [("IPv4", 32u32), ("IPv6", 128)] {
        let in_family = || {
            sources
                .iter()
                .filter(move |n| u32::from(n.max_prefix_len()) == bits)
        };
        // Sizes summed (overlaps count twice) reach the family's size only if the union can:
        // the aggregation below runs only for such lists, never for large ordinary ones.
        let total: u128 = in_family()
            .map(|n| match bits - u32::from(n.prefix_len()) {
                128 => u128::MAX,
                host_bits => 1u128 << host_bits,
            })
            .fold(0u128, u128::saturating_add);
        let size = if bits == 128 {
            u128::MAX
        } else {
            1u128 << bits
        };
        if total >= size {
            let nets: Vec<IpNet> = in_family().copied().collect();
            if IpNet::aggregate(&nets).iter().any(|n| n.prefix_len() == 0) {
                return Some(family);
            }
        }
    }
    None
}

/// Refuse a rule whose sources together cover a whole address family unless the file says
/// `allow_any_source: true` (a single `/0` is refused where it is written).
fn any_source_allowed(cx: &mut Cx, r: &RawRule, sources: &[IpNet], allowed: bool) -> bool {
    if allowed {
        return true;
    }
    match whole_family(sources) {
        None => true,
        Some(family) => {
            cx.error(
                r.name_pos,
                format!(
                    "the sources of rule `{}` together cover every {family} address",
                    r.name
                ),
                "list the real source ranges, or set `allow_any_source: true` at the top level to \
                 allow traffic from anywhere",
            );
            false
        }
    }
}

/// A rule of the policy with the positions of its sources.
pub(super) struct Resolved {
    pub(super) rule: Rule,
    pub(super) name_pos: Pos,
    pub(super) source_pos: Vec<Pos>,
}

// Cross-entry checks

/// Prefixes in order of first occurrence, with their positions.
pub(super) fn unique_sources(
    items: impl ExactSizeIterator<Item = (IpNet, Pos)>,
) -> (Vec<IpNet>, Vec<Pos>) {
    let mut seen: HashSet<IpNet> = HashSet::with_capacity(items.len());
    items.filter(|(net, _)| seen.insert(*net)).unzip()
}

pub(super) fn resolved(r: &RawRule, sources: Vec<IpNet>, source_pos: Vec<Pos>) -> Resolved {
    Resolved {
        rule: Rule {
            name: r.name.clone(),
            kind: r.kind,
            sources,
            protocol: r.protocol,
            keys: r.keys.clone(),
            interfaces: r.interfaces.clone(),
        },
        name_pos: r.name_pos,
        source_pos,
    }
}

pub(super) fn resolve(cx: &mut Cx, doc: &Document) -> Vec<Resolved> {
    let sets: HashMap<&str, &SetDef> = doc.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut used_sets: HashSet<&str> = HashSet::new();

    // Rule names: unique across failsafe and rules.
    let mut names: HashMap<&str, Pos> = HashMap::new();
    let mut dup = vec![false; doc.rules.len()];
    for (i, r) in doc.rules.iter().enumerate() {
        if let Some(first) = names.get(r.name.as_str()) {
            cx.error(
                r.name_pos,
                format!("duplicate rule name `{}`", r.name),
                format!(
                    "first used at line {first}; rule names must be unique across `failsafe` and \
                     `rules`"
                ),
            );
            dup[i] = true;
        } else {
            names.insert(&r.name, r.name_pos);
        }
    }

    // Capacity: rules.
    if doc.rules.len() > MAX_POLICY_RULES {
        let mut by_pos: Vec<&RawRule> = doc.rules.iter().collect();
        by_pos.sort_by_key(|r| r.name_pos);
        cx.error(
            by_pos[MAX_POLICY_RULES].name_pos,
            format!(
                "too many rules: {} in the file, the kernel tables hold {MAX_POLICY_RULES}",
                doc.rules.len()
            ),
            "merge rules that share sources and protocol",
        );
    }

    // A rule's sources, first occurrence kept. Rules whose `from` is one set (the usual
    // shape of big files, often several rules on one set) share that set's deduplication.
    let mut set_sources: HashMap<&str, (Vec<IpNet>, Vec<Pos>)> = HashMap::new();
    let mut out = Vec::new();
    // Per entry of `out`: whether its sources count towards capacity, that is, it is not a
    // further rule on a set an earlier rule already brought in whole.
    let mut counted: Vec<bool> = Vec::new();
    for (i, r) in doc.rules.iter().enumerate() {
        if let [FromItem::Set(name, _)] = r.from.as_slice() {
            if let Some(set) = sets.get(name.as_str()) {
                used_sets.insert(&set.name);
                let first = !set_sources.contains_key(set.name.as_str());
                let (sources, source_pos) = set_sources
                    .entry(set.name.as_str())
                    .or_insert_with(|| unique_sources(set.entries.iter().copied()))
                    .clone();
                if r.complete
                    && !dup[i]
                    && any_source_allowed(cx, r, &sources, doc.allow_any_source)
                {
                    out.push(resolved(r, sources, source_pos));
                    counted.push(first);
                }
                continue;
            }
        }
        let mut seen_sets: HashSet<&str> = HashSet::new();
        let mut ok = r.complete && !dup[i];
        let mut items: Vec<(IpNet, Pos)> = Vec::new();
        let mut add = |net: IpNet, pos: Pos| items.push((net, pos));
        for item in &r.from {
            match item {
                FromItem::Cidr(net, pos) => add(*net, *pos),
                FromItem::Set(name, pos) => match sets.get(name.as_str()) {
                    Some(set) => {
                        used_sets.insert(&set.name);
                        if !seen_sets.insert(&set.name) {
                            cx.warn(
                                *pos,
                                format!(
                                    "set `{name}` is listed twice in `from` of rule `{}`",
                                    r.name
                                ),
                                "remove the repetition",
                            );
                        }
                        for (net, p) in &set.entries {
                            add(*net, *p);
                        }
                    }
                    None => {
                        let hint = match suggest(name, doc.sets.iter().map(|s| s.name.as_str())) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None if doc.sets.is_empty() => {
                                format!("define it under `sets:`, e.g. `sets: {{ {name}: [10.0.0.0/24] }}`")
                            }
                            None => format!(
                                "define it under `sets:`; known sets: {}",
                                doc.sets
                                    .iter()
                                    .map(|s| s.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        };
                        cx.error(*pos, format!("unknown set `{name}`"), hint);
                        ok = false;
                    }
                },
            }
        }
        if ok {
            let (sources, source_pos) = unique_sources(items.into_iter());
            if any_source_allowed(cx, r, &sources, doc.allow_any_source) {
                out.push(resolved(r, sources, source_pos));
                counted.push(true);
            }
        }
    }

    // Shown one by one up to a point, then summed up: 100,000 unused sets once meant
    // 100,000 log lines on every reload.
    let unused: Vec<&SetDef> = doc
        .sets
        .iter()
        .filter(|set| !used_sets.contains(set.name.as_str()))
        .collect();
    for set in unused.iter().take(MAX_OVERLAP_WARNINGS) {
        cx.warn(
            set.pos,
            format!("set `{}` is not used by any rule", set.name),
            "remove it, or name it in a rule's `from`",
        );
    }
    if let Some(first_unshown) = unused.get(MAX_OVERLAP_WARNINGS) {
        cx.warn(
            first_unshown.pos,
            format!(
                "{} more sets are not used by any rule (from here on)",
                unused.len() - MAX_OVERLAP_WARNINGS
            ),
            "remove them, or name them in rules' `from`",
        );
    }

    // Empty allow-list.
    let drop_on = doc.default_drop_on();
    if let Some(drop_on) = drop_on.filter(|_| {
        !doc.allow_empty
            && !doc
                .rules
                .iter()
                .any(|r| matches!(r.kind, RuleKind::Allow | RuleKind::Failsafe))
    }) {
        let (pos, whose) = match drop_on {
            None => (doc.rules_pos.unwrap_or(doc.root_pos), String::new()),
            Some(name) => {
                let i = &doc.interfaces[name];
                (
                    i.default_pos.unwrap_or(i.pos),
                    format!(" on interface `{name}`"),
                )
            }
        };
        cx.error(
            pos,
            format!(
                "no allow or failsafe rule, and the default is drop{whose}: only essentials and \
                 return traffic would pass"
            ),
            "add allow rules, or set `allow_empty: true` at the top level to acknowledge",
        );
    }

    // Capacity: distinct prefixes per family, counted in file order. Every file within
    // capacity even before duplicates are merged (nearly all) skips the exact count; rules
    // on a set another rule brought in already add nothing (big files put several rules on
    // one big set, which counted it several times and sent them down the exact count: a
    // fifth of the front end's time on a 110k-prefix file).
    let written = |v4: bool| {
        out.iter()
            .zip(&counted)
            .filter(|(_, counts)| **counts)
            .flat_map(|(r, _)| &r.rule.sources)
            .filter(|n| matches!(n, IpNet::V4(_)) == v4)
            .count()
    };
    if written(true) <= doc.capacity.ipv4 as usize && written(false) <= doc.capacity.ipv6 as usize {
        return out;
    }
    let mut order: Vec<(Pos, IpNet)> = out
        .iter()
        .flat_map(|r| {
            r.source_pos
                .iter()
                .copied()
                .zip(r.rule.sources.iter().copied())
        })
        .collect();
    order.sort_by_key(|(p, _)| *p);
    let mut v4: HashSet<IpNet> = HashSet::new();
    let mut v6: HashSet<IpNet> = HashSet::new();
    let (mut v4_reported, mut v6_reported) = (false, false);
    for (pos, net) in order {
        let (set, max, family, key, reported) = match net {
            IpNet::V4(_) => (&mut v4, doc.capacity.ipv4, "IPv4", "ipv4", &mut v4_reported),
            IpNet::V6(_) => (&mut v6, doc.capacity.ipv6, "IPv6", "ipv6", &mut v6_reported),
        };
        if set.insert(net) && set.len() > max as usize && !*reported {
            *reported = true;
            cx.error(
                pos,
                format!(
                    "too many {family} prefixes: this is number {}, the kernel table holds {max}",
                    max + 1
                ),
                format!("aggregate adjacent CIDRs, remove unneeded ones, or raise `capacity.{key}_prefixes`"),
            );
        }
    }
    out
}
