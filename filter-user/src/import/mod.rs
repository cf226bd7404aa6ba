//! `nodegate import`: the cloud's own policy, as a rule file with the same meaning.
//!
//! Each importer reads the JSON a cloud CLI prints and builds an [`Imported`] rule file:
//! [`aws`] (`aws ec2 describe-security-groups`, `aws eks describe-cluster`) and [`azure`]
//! (`az aks show`, `az network nsg show` / `nsg rule list`). An import is exact or it is
//! refused: a source it cannot resolve (another security group, a prefix list, a service
//! tag), a protocol or match nodegate cannot express (a single ICMP code, protocol 47, a
//! source port), or an NSG order nodegate's fixed order (deny before allow) would change is
//! named in an [`ImportError`] instead of being widened or narrowed. The operator supplies
//! what resolves it (flags naming CIDRs, ENI or subnet JSON) and imports again.
//!
//! The output ([`Imported::to_yaml`]) is deterministic (input order, no maps with random
//! order), commented, starts in monitor mode unless asked otherwise, and names where every
//! rule and set came from in its `description`.

pub mod aws;
pub mod azure;
mod json;

use std::{fmt::Write as _, ops::RangeInclusive};

use ipnet::IpNet;

use crate::policy::{Mode, Protocol, RuleKind};

/// One source address block of a rule, and where it came from (for its comment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The block.
    pub net: IpNet,
    /// Where it came from, e.g. `IpRanges: "office"` or `eni-0abc (sg-0123)`.
    pub note: String,
}

/// A named set of sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// Set name: unique, a letter first, then letters, digits, `-`, `_`.
    pub name: String,
    /// Its blocks, deduplicated, in input order.
    pub sources: Vec<Source>,
}

/// One imported rule: the sources of one set, one protocol, its ports or ICMP types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Rule name: unique, a letter first, then letters, digits, `-`, `_`.
    pub name: String,
    /// Allow or deny (never failsafe: an import does not decide what must never be cut).
    pub action: RuleKind,
    /// The protocol.
    pub protocol: Protocol,
    /// Destination ports (TCP/UDP) or ICMP types; empty: all.
    pub keys: Vec<RangeInclusive<u16>>,
    /// The set it matches sources from.
    pub from: String,
    /// Where it came from (`sg-0123 (web) IpPermissions[2]`), the rule's `description`.
    pub origin: String,
}

/// A rule file an importer built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The command that made it and what it read, for the header.
    pub source: String,
    /// `monitor` unless the operator asked for `enforce`.
    pub mode: Mode,
    /// What no rule decides: `drop` for security groups and an NSG's DenyAllInBound.
    pub default_pass: bool,
    /// `return_traffic.mode`, with the reason as a comment.
    pub return_traffic: (&'static str, &'static str),
    /// Notes for the operator, printed in the header (semantics that differ, choices to
    /// review).
    pub notes: Vec<String>,
    /// The sets the rules use.
    pub sets: Vec<Set>,
    /// The rules, deny and allow, in input order.
    pub rules: Vec<Rule>,
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is not the JSON the named CLI command prints.
    #[error("{file} is not what `{command}` prints: {detail}")]
    Shape {
        /// The file.
        file: String,
        /// The command whose output was expected.
        command: &'static str,
        /// What did not fit.
        detail: String,
    },
    /// The input cannot be imported exactly; every reason is listed.
    #[error("cannot import exactly, nothing written:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Refused {
        /// Each problem, naming the rule, group or range.
        problems: Vec<String>,
        /// What resolves the problems.
        hint: String,
    },
}

impl crate::hint::Hint for ImportError {
    fn hint(&self) -> Option<&str> {
        match self {
            ImportError::Shape { .. } => Some(
                "pass the command's JSON output unchanged (`--output json`, the default of the aws and az CLIs)",
            ),
            ImportError::Refused { hint, .. } => Some(hint),
        }
    }
}

/// Problems found while importing, reported together.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub(crate) fn push(&mut self, problem: impl Into<String>) {
        let problem = problem.into();
        if !self.0.contains(&problem) {
            self.0.push(problem);
        }
    }

    /// The problems, in the order found.
    pub(crate) fn into_list(self) -> Vec<String> {
        self.0
    }

    /// `Ok(value)` when there were none, else the refusal with `hint`.
    pub(crate) fn finish<T>(self, value: T, hint: &str) -> Result<T, ImportError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ImportError::Refused {
                problems: self.0,
                hint: hint.to_owned(),
            })
        }
    }
}

/// A name usable as a rule and set name: a letter first, then letters, digits, `-`, `_`
/// (anything else becomes `-`), at most 63 bytes.
pub(crate) fn name_of(parts: &[&str]) -> String {
    let mut name: String = parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "r-");
    }
    name.truncate(63);
    name
}

/// Add `source` unless its block is already there.
pub(crate) fn add_source(sources: &mut Vec<Source>, source: Source) {
    if !sources.iter().any(|s| s.net == source.net) {
        sources.push(source);
    }
}

/// Add the block `text` names with `note`, or the problem `at: why not`.
pub(crate) fn add_parsed(
    out: &mut Vec<Source>,
    text: &str,
    note: &str,
    at: &str,
    problems: &mut Problems,
) {
    match parse_net(text) {
        Ok(net) => add_source(
            out,
            Source {
                net,
                note: note.to_owned(),
            },
        ),
        Err(e) => problems.push(format!("{at}: {e}")),
    }
}

/// The host-bits-free block of `text` (a CIDR or a bare address), or why not.
pub(crate) fn parse_net(text: &str) -> Result<IpNet, String> {
    let net: IpNet = match text.parse() {
        Ok(net) => net,
        Err(_) => text
            .parse::<std::net::IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{text:?} is not a CIDR or an address"))?,
    };
    if net.trunc() != net {
        return Err(format!(
            "{text} has host bits set (the block is {}); the cloud would not accept it either",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Whether two blocks share an address.
pub(crate) fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// A comment's text on one line.
fn comment(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn keys_yaml(keys: &[RangeInclusive<u16>]) -> String {
    let items: Vec<String> = keys
        .iter()
        .map(|k| {
            if k.start() == k.end() {
                k.start().to_string()
            } else {
                quoted(&format!("{}-{}", k.start(), k.end()))
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

impl Imported {
    /// Add `rule` with a set of its own, named as it is, holding `sources`.
    pub(crate) fn push_with_own_set(
        sets: &mut Vec<Set>,
        rules: &mut Vec<Rule>,
        rule: Rule,
        sources: Vec<Source>,
    ) {
        sets.push(Set {
            name: rule.from.clone(),
            sources,
        });
        rules.push(rule);
    }

    /// Whether a rule lists a block covering every address of a family.
    fn any_source(&self) -> bool {
        self.sets
            .iter()
            .flat_map(|set| &set.sources)
            .any(|s| s.net.prefix_len() == 0)
    }

    /// The rule file, commented.
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let w = &mut y;
        let _ = writeln!(w, "# {}", comment(&self.source));
        let _ = writeln!(
            w,
            "# Review before enforcing; `nodegate check` this file, then run it in monitor mode"
        );
        let _ = writeln!(
            w,
            "# and read `nodegate stats` / `nodegate observe` until the would-drops are expected."
        );
        let _ = writeln!(
            w,
            "# - nodegate passes ARP, IPv6 neighbour discovery and ICMP errors (essentials) before any rule."
        );
        for note in &self.notes {
            let _ = writeln!(w, "# - {}", comment(note));
        }
        let _ = writeln!(w);
        let mut setting = |text: String, why: &str| {
            let _ = if why.is_empty() {
                writeln!(w, "{text}")
            } else {
                writeln!(w, "{text:<27} # {}", comment(why))
            };
        };
        setting("version: 1".into(), "");
        setting(
            format!("mode: {}", self.mode.name()),
            match self.mode {
                Mode::Monitor => {
                    "count would-drops first; `--mode enforce` or edit when they are right"
                }
                Mode::Enforce => "asked for with --mode enforce",
            },
        );
        setting(
            format!(
                "default: {}",
                if self.default_pass { "pass" } else { "drop" }
            ),
            "what no imported rule decides",
        );
        let any = self.any_source();
        setting(
            format!("allow_any_source: {any}"),
            if any {
                "the cloud's policy names 0.0.0.0/0 or ::/0 itself"
            } else {
                ""
            },
        );
        if !self.rules.iter().any(|r| r.action == RuleKind::Allow) {
            setting(
                "allow_empty: true".into(),
                "the imported policy allows nothing by a rule of its own",
            );
        }
        setting("return_traffic:".into(), "");
        setting(
            format!("  mode: {}", self.return_traffic.0),
            self.return_traffic.1,
        );
        let _ = writeln!(
            w,
            "# failsafe: none imported. Add the access that must survive any rule edit (your SSH"
        );
        let _ = writeln!(
            w,
            "# or VPN range) as `failsafe:` rules before enforcing: `nodegate check` warns until then."
        );
        if !self.sets.is_empty() {
            let _ = writeln!(w, "\nsets:");
        }
        for set in &self.sets {
            let _ = writeln!(w, "  {}:", set.name);
            for s in &set.sources {
                let _ = writeln!(
                    w,
                    "    - {:<24} # {}",
                    quoted(&s.net.to_string()),
                    comment(&s.note)
                );
            }
        }
        let _ = writeln!(w, "\nrules:");
        for rule in &self.rules {
            let _ = writeln!(w, "  - name: {}", rule.name);
            let _ = writeln!(w, "    description: {}", quoted(&rule.origin));
            if rule.action == RuleKind::Deny {
                let _ = writeln!(w, "    action: deny");
            }
            let _ = writeln!(w, "    from: [{}]", rule.from);
            let _ = writeln!(w, "    protocol: {}", rule.protocol.name());
            if !rule.keys.is_empty() {
                let key = match rule.protocol {
                    Protocol::Icmp | Protocol::Icmpv6 => "types",
                    _ => "ports",
                };
                let _ = writeln!(w, "    {key}: {}", keys_yaml(&rule.keys));
            }
        }
        y
    }
}

#[cfg(test)]
mod tests;
