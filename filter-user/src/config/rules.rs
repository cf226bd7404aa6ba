//! One entry of `failsafe:` or `rules:` decoded into a [`RawRule`]: name, action, `from`
//! (CIDRs and set names, resolved later), protocol, ports or ICMP types, interfaces.

use std::{ops::RangeInclusive, rc::Rc};

use filter_common::RULE_NAME_LEN;
use ipnet::IpNet;

use super::interfaces::decode_rule_interfaces;
use super::node::{fields, list, scalar, word, Cx, Fields};
use super::values::{cidr_node, is_invisible, is_set_name, key_list, KeyKind};
use super::yaml::{Node, NodeKind, Pos};
use crate::policy::{Protocol, RuleKind};

pub(super) const RULE_KEYS: &[&str] = &[
    "name",
    "from",
    "protocol",
    "ports",
    "types",
    "action",
    "interfaces",
    "description",
];

pub(super) enum FromItem {
    Cidr(IpNet, Pos),
    Set(String, Pos),
}

pub(super) struct RawRule {
    pub(super) name: String,
    pub(super) name_pos: Pos,
    pub(super) kind: RuleKind,
    pub(super) from: Vec<FromItem>,
    pub(super) protocol: Protocol,
    pub(super) keys: Vec<RangeInclusive<u16>>,
    /// Interfaces the rule applies on; empty: every interface.
    pub(super) interfaces: Vec<String>,
    /// False when a field failed to decode: the rule takes part in name checks only.
    pub(super) complete: bool,
}

/// Every CIDR written in the file: (prefix, position, owner) for overlap warnings. The
/// owner is shared: a set of 100k entries names itself once, not 100k times.
pub(super) type WrittenCidrs = Vec<(IpNet, Pos, Rc<str>)>;

/// Where decoded rules go: the document's rule list and its written CIDRs, with the one
/// top-level setting rule decoding needs.
pub(super) struct RuleSink<'d> {
    pub(super) rules: &'d mut Vec<RawRule>,
    pub(super) cidrs: &'d mut WrittenCidrs,
    /// `allow_any_source: true` at the top level: a `/0` in `from` is not refused.
    pub(super) allow_any_source: bool,
}

pub(super) fn decode_rule_list(
    cx: &mut Cx,
    node: &Node,
    doc: &mut RuleSink<'_>,
    list_kind: RuleKind,
    empty_ok: bool,
) {
    let section = if list_kind == RuleKind::Failsafe {
        "`failsafe`"
    } else {
        "`rules`"
    };
    let items = match &node.kind {
        NodeKind::Seq(items) => items,
        _ if node.is_null() => return,
        _ => {
            cx.error(
                node.pos,
                format!(
                    "expected a list of rules for {section}, found {}",
                    node.describe()
                ),
                "write each rule as a `- name: ...` entry",
            );
            return;
        }
    };
    for item in items {
        if let Some(rule) = decode_rule(cx, item, doc, list_kind, empty_ok) {
            doc.rules.push(rule);
        }
    }
}

pub(super) fn decode_rule(
    cx: &mut Cx,
    node: &Node,
    doc: &mut RuleSink<'_>,
    list_kind: RuleKind,
    empty_ok: bool,
) -> Option<RawRule> {
    let what = if list_kind == RuleKind::Failsafe {
        "a failsafe rule"
    } else {
        "a rule"
    };
    // `action` is accepted as a key in both lists so that a failsafe rule with an action
    // gets a dedicated message instead of "unknown key".
    let f = fields(cx, node, what, RULE_KEYS)?;
    decode_rule_fields(cx, node, &f, doc, list_kind, empty_ok)
}

pub(super) fn decode_rule_fields(
    cx: &mut Cx,
    node: &Node,
    f: &Fields<'_>,
    doc: &mut RuleSink<'_>,
    list_kind: RuleKind,
    empty_ok: bool,
) -> Option<RawRule> {
    let mut complete = true;
    let (name, name_pos) = match f.get("name") {
        None => {
            cx.error(
                node.pos,
                "rule has no `name`",
                "give every rule a unique `name`; counters are keyed by it",
            );
            return None;
        }
        Some(n) => {
            let (text, _) = scalar(cx, n, "`name`", "a string")?;
            (text.to_string(), n.pos)
        }
    };
    if name.trim().is_empty() {
        cx.error(
            name_pos,
            "rule name is empty",
            "give every rule a unique, non-empty `name`; counters are keyed by it",
        );
        complete = false;
    } else if name.len() > RULE_NAME_LEN - 1 {
        cx.error(
            name_pos,
            format!(
                "rule name is {} bytes long; the limit is {}",
                name.len(),
                RULE_NAME_LEN - 1
            ),
            "shorten the name",
        );
        complete = false;
    } else if name.chars().any(|c| c.is_control() || is_invisible(c)) {
        cx.error(
            name_pos,
            "rule name contains control or invisible characters (bidi overrides, zero-width or separator characters): two names could print the same",
            "use printable characters only",
        );
        complete = false;
    }
    let owner: Rc<str> = format!("rule `{name}`").into();

    let kind = match (list_kind, f.get("action")) {
        (RuleKind::Failsafe, Some(_)) => {
            cx.error(
                f.key_pos("action").expect("present"),
                "failsafe rules always allow; `action` is not accepted here",
                "remove `action`, or move the rule to `rules:` to deny traffic",
            );
            complete = false;
            RuleKind::Failsafe
        }
        (RuleKind::Failsafe, None) => RuleKind::Failsafe,
        (_, None) => RuleKind::Allow,
        (_, Some(n)) => match word(
            cx,
            n,
            "`action`",
            &[("allow", RuleKind::Allow), ("deny", RuleKind::Deny)],
        ) {
            Some(k) => k,
            None => {
                complete = false;
                RuleKind::Allow
            }
        },
    };

    if let Some(n) = f.get("description") {
        if scalar(cx, n, "`description`", "a string").is_none() {
            complete = false;
        }
    }

    let mut from = Vec::new();
    let interfaces = match f.get("interfaces") {
        None => Vec::new(),
        Some(n) => decode_rule_interfaces(cx, n, &name).unwrap_or_else(|| {
            complete = false;
            Vec::new()
        }),
    };
    match f.get("from") {
        None => {
            cx.error(
                node.pos,
                format!("{owner} has no `from`"),
                "list the sources: set names and/or CIDRs, e.g. `from: [control-plane]`",
            );
            complete = false;
        }
        Some(n) => match list(cx, n, "`from`") {
            None => complete = false,
            Some(items) => {
                if items.is_empty() && !empty_ok {
                    cx.error(
                        n.pos,
                        format!("{owner} has an empty `from`: it matches no source"),
                        "list its sources, or set `allow_empty: true` at the top level if this \
                         is intended",
                    );
                    complete = false;
                }
                for item in items {
                    let Some((text, _)) =
                        scalar(cx, item, "an entry of `from`", "a set name or a CIDR")
                    else {
                        complete = false;
                        continue;
                    };
                    if is_set_name(text) {
                        from.push(FromItem::Set(text.to_string(), item.pos));
                    } else if let Some(net) = cidr_node(cx, item, text, doc.allow_any_source) {
                        from.push(FromItem::Cidr(net, item.pos));
                        doc.cidrs.push((net, item.pos, Rc::clone(&owner)));
                    } else {
                        complete = false;
                    }
                }
            }
        },
    }

    let protocol = match f.get("protocol") {
        None => {
            cx.error(
                node.pos,
                format!("{owner} has no `protocol`"),
                "add `protocol: tcp`, `udp`, `icmp`, `icmpv6` or `any`",
            );
            None
        }
        Some(n) => word(
            cx,
            n,
            "`protocol`",
            &[
                ("tcp", Protocol::Tcp),
                ("udp", Protocol::Udp),
                ("icmp", Protocol::Icmp),
                ("icmpv6", Protocol::Icmpv6),
                ("any", Protocol::Any),
            ],
        ),
    };
    let mut keys = Vec::new();
    if let Some(protocol) = protocol {
        let pname = protocol.name();
        let ports_ok = matches!(protocol, Protocol::Tcp | Protocol::Udp);
        let types_ok = matches!(protocol, Protocol::Icmp | Protocol::Icmpv6);
        if let Some(n) = f.get("ports") {
            if ports_ok {
                match key_list(cx, n, KeyKind::Port, "`ports`") {
                    Some(k) => keys = k,
                    None => complete = false,
                }
            } else {
                let hint = if types_ok {
                    "use `types` for ICMP message types"
                } else {
                    "protocol `any` covers every port; remove `ports`, or use `tcp` or `udp`"
                };
                cx.error(
                    f.key_pos("ports").unwrap_or(n.pos),
                    format!("`ports` does not apply to protocol `{pname}`"),
                    hint,
                );
                complete = false;
            }
        }
        if let Some(n) = f.get("types") {
            if types_ok {
                match key_list(cx, n, KeyKind::IcmpType, "`types`") {
                    Some(k) => keys = k,
                    None => complete = false,
                }
            } else {
                let hint = if ports_ok {
                    "use `ports` for TCP/UDP destination ports"
                } else {
                    "protocol `any` covers every ICMP type; remove `types`, or use `icmp` or `icmpv6`"
                };
                cx.error(
                    f.key_pos("types").unwrap_or(n.pos),
                    format!("`types` does not apply to protocol `{pname}`"),
                    hint,
                );
                complete = false;
            }
        }
    } else {
        complete = false;
    }
    Some(RawRule {
        name,
        name_pos,
        kind,
        from,
        protocol: protocol.unwrap_or(Protocol::Any),
        keys,
        interfaces,
        complete,
    })
}
