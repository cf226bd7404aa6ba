//! Warnings about a file that loads: overlapping CIDRs, rules shadowed by others, and the
//! lockout risks of a default-drop file (SSH, DNS) that no rule keeps open.

use std::ops::RangeInclusive;

use ipnet::IpNet;

use super::document::Document;
use super::node::Cx;
use super::resolve::{Resolved, MAX_OVERLAP_WARNINGS};
use super::values::merge_ranges;
use super::yaml::Pos;
use crate::compiler::{Bits, Tables};
use crate::policy::{DefaultAction, Mode, Policy, Protocol, Rule, RuleKind};

// Warnings

pub(super) fn family_bits(net: &IpNet) -> (u8, u128, u8, u32) {
    match net {
        IpNet::V4(n) => (4, u128::from(u32::from(n.addr())), n.prefix_len(), 32),
        IpNet::V6(n) => (6, u128::from(n.addr()), n.prefix_len(), 128),
    }
}

pub(super) fn warn_overlaps(cx: &mut Cx, doc: &Document) {
    let mut defs: Vec<(u8, u128, u8, Pos, usize)> = doc
        .cidrs
        .iter()
        .enumerate()
        .map(|(i, (net, pos, _))| {
            let (f, a, l, _) = family_bits(net);
            (f, a, l, *pos, i)
        })
        .collect();
    defs.sort_unstable();
    let contains = |outer: &(u8, u128, u8, Pos, usize), inner: &(u8, u128, u8, Pos, usize)| {
        let width = if outer.0 == 4 { 32 } else { 128 };
        outer.0 == inner.0
            && outer.2 <= inner.2
            && (outer.2 == 0 || (outer.1 ^ inner.1) >> (width - u32::from(outer.2)) == 0)
    };
    let mut stack: Vec<(u8, u128, u8, Pos, usize)> = Vec::new();
    let mut shown = 0usize;
    let mut hidden = 0usize;
    let mut last_hidden_pos = None;
    for d in defs {
        while let Some(top) = stack.last() {
            if contains(top, &d) {
                break;
            }
            stack.pop();
        }
        if let Some(top) = stack.last() {
            let (net, pos, owner) = &doc.cidrs[d.4];
            let (onet, opos, oowner) = &doc.cidrs[top.4];
            let equal = net == onet;
            // The same prefix in two places is only worth a note within one list; across
            // sets and rules it changes nothing. A strictly nested prefix always is: the
            // union semantics make the narrower one inherit the wider one's rules. Messages
            // are built only for the notes shown: a list of 100k nested prefixes must not
            // format 100k of them.
            if !equal || owner == oowner {
                if shown < MAX_OVERLAP_WARNINGS {
                    shown += 1;
                    let (message, hint) = if equal {
                        (
                            format!("{net} is listed twice in {owner} (first at line {opos})"),
                            "remove the repetition",
                        )
                    } else {
                        (
                            format!("{net} ({owner}) overlaps {onet} ({oowner}, line {opos})"),
                            "overlapping sources are a union: an address in both gets the rules of both",
                        )
                    };
                    cx.warn(*pos, message, hint);
                } else {
                    hidden += 1;
                    last_hidden_pos = Some(*pos);
                }
            }
            if equal {
                // Keep the first definition on the stack as the one later prefixes cite.
                continue;
            }
        }
        stack.push(d);
    }
    if let Some(pos) = last_hidden_pos {
        cx.warn(
            pos,
            format!("{hidden} more overlapping CIDRs not shown"),
            "overlapping sources are a union: an address in both gets the rules of both",
        );
    }
}

/// Whether `s` applies on every interface `r` applies on.
pub(super) fn applies_wherever(s: &Rule, r: &Rule) -> bool {
    s.interfaces.is_empty()
        || (!r.interfaces.is_empty() && r.interfaces.iter().all(|i| s.interfaces.contains(i)))
}

/// The keys (ports or ICMP types) a rule covers, merged; every key when it lists none.
pub(super) fn covered_keys(r: &Rule) -> Vec<RangeInclusive<u16>> {
    let max: u16 = match r.protocol {
        Protocol::Tcp | Protocol::Udp => 65535,
        _ => 255,
    };
    if r.keys.is_empty() {
        vec![0..=max]
    } else {
        merge_ranges(r.keys.clone())
    }
}

/// Whether `s` covers every (kind, key) that `r` covers, given their [`covered_keys`].
pub(super) fn keys_cover(
    s: &Rule,
    s_keys: &[RangeInclusive<u16>],
    r: &Rule,
    r_keys: &[RangeInclusive<u16>],
) -> bool {
    if s.protocol == Protocol::Any {
        return true;
    }
    if s.protocol != r.protocol {
        return false;
    }
    r_keys.iter().all(|rr| {
        s_keys
            .iter()
            .any(|sr| sr.start() <= rr.start() && rr.end() <= sr.end())
    })
}

pub(super) fn warn_shadowed(cx: &mut Cx, policy: &Policy, resolved: &[Resolved], tables: &Tables) {
    // Precedence index of each policy rule.
    let mut prec_of = vec![0usize; policy.rules.len()];
    for (p, &i) in tables.precedence.iter().enumerate() {
        prec_of[i] = p;
    }
    let keys: Vec<_> = policy.rules.iter().map(covered_keys).collect();
    for (i, rule) in policy.rules.iter().enumerate() {
        // Earlier rules that cover this one's keys wherever it applies: cheap per pair, and
        // usually none, so the scan over the rule's sources (100k in a big set) is rare.
        let mut candidates = Bits::default();
        for (p, &j) in tables.precedence[..prec_of[i]].iter().enumerate() {
            let earlier = &policy.rules[j];
            if keys_cover(earlier, &keys[j], rule, &keys[i]) && applies_wherever(earlier, rule) {
                candidates[p / 64] |= 1 << (p % 64);
            }
        }
        if candidates.iter().all(|&w| w == 0) {
            continue;
        }
        let Some(bits) = tables.candidates_covering_all_sources(rule, candidates) else {
            continue;
        };
        // The first in precedence order.
        let shadow = (0..prec_of[i])
            .find(|&p| bits[p / 64] & (1 << (p % 64)) != 0)
            .map(|p| tables.precedence[p]);
        if let Some(j) = shadow {
            let by = &policy.rules[j];
            cx.warn(
                resolved[i].name_pos,
                format!(
                    "rule `{}` is shadowed by `{}` (line {}): every packet it covers is decided \
                     by `{}` first",
                    rule.name, by.name, resolved[j].name_pos, by.name
                ),
                format!("remove `{}`, or narrow `{}`", rule.name, by.name),
            );
        }
    }
}

pub(super) fn warn_lockout(cx: &mut Cx, doc: &Document, policy: &Policy) {
    // Enforcing with default drop: on interfaces the file does not name (`None`), or on
    // one it names.
    let strict = |ifname: Option<&str>| {
        policy.mode_on(ifname) == Mode::Enforce && policy.default_on(ifname) == DefaultAction::Drop
    };
    // A failsafe rule that lets SSH in on that interface.
    let ssh_on = |ifname: Option<&str>| {
        policy.rules.iter().any(|r| {
            r.kind == RuleKind::Failsafe
                && r.applies_on(ifname)
                && !r.sources.is_empty()
                && match r.protocol {
                    Protocol::Any => true,
                    Protocol::Tcp => r.keys.is_empty() || r.keys.iter().any(|k| k.contains(&22)),
                    _ => false,
                }
        })
    };
    let at_risk = std::iter::once(None)
        .chain(policy.named_interfaces().into_iter().map(Some))
        .find(|i| strict(*i) && !ssh_on(*i));
    if let Some(first) = at_risk {
        cx.warn(
            doc.failsafe_pos.unwrap_or(doc.root_pos),
            format!(
                "lockout risk: no failsafe rule allows SSH (tcp 22) while enforcing with default \
                 drop{}",
                first
                    .map(|i| format!(" on interface `{i}`"))
                    .unwrap_or_default()
            ),
            "add a failsafe rule such as `- { name: admin-ssh, from: [<admin CIDR>], protocol: \
             tcp, ports: [22] }`",
        );
    }
}
