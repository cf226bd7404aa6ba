//! Rule file text → [`Policy`] and its compiled [`Tables`], one stage after the other:
//! YAML nodes (`config::yaml`) → document (`config::document`, `config::rules`) → resolved
//! rules (`config::resolve`) → policy → tables (the compiler, once: the daemon publishes
//! what the check compiled) → warnings (`config::warnings`).
//!
//! Every check records an [`Issue`] at the node it is about and carries on, so one run
//! reports every error of the file. A value that failed to decode is left out (its rule is
//! dropped from the policy being built), which keeps later checks from piling follow-up
//! errors on it.

use std::collections::BTreeMap;

// foldhash: the per-entry sets here see every CIDR of the file (100k+); SipHash was a
// tenth of the front end's time on such files.

use ipnet::IpNet;

use super::document::decode_document;
use super::node::Cx;
use super::resolve::resolve;
use super::warnings::{warn_lockout, warn_overlaps, warn_shadowed};
use super::yaml::{self, Pos};
use super::{Issue, LoadOptions, Severity};
use crate::compiler::{self, CompileError, Tables};
use crate::policy::Policy;

/// Entry point: text → (policy, stats), with every issue recorded.
pub(super) fn load(
    text: &str,
    opts: &LoadOptions,
    issues: &mut Vec<Issue>,
) -> Option<(Policy, Tables, Sets)> {
    let root = yaml::parse(text, issues);
    if issues.iter().any(|i| i.severity == Severity::Error) {
        return None;
    }
    let mut cx = Cx { issues };
    let Some(root) = root.filter(|r| !r.is_null()) else {
        cx.error(
            Pos { line: 1, column: 1 },
            "the config file is empty",
            "start with `version: 1`",
        );
        return None;
    };
    let doc = decode_document(&mut cx, &root, opts)?;
    let resolved = resolve(&mut cx, &doc);
    let policy = Policy {
        mode: doc.mode,
        default: doc.default,
        essentials: doc.essentials,
        ipv4_options_allow: doc.ipv4_options_allow,
        unknown_ethertypes_pass: doc.unknown_ethertypes_pass,
        return_traffic: doc.return_traffic.clone(),
        flows: doc.flows,
        capacity: doc.capacity,
        fragments: doc.fragments,
        samples_per_sec: doc.samples_per_sec,
        rules: resolved.iter().map(|r| r.rule.clone()).collect(),
        acknowledge_failsafe_change: doc.acknowledge_failsafe_change,
        interfaces: doc
            .interfaces
            .iter()
            .map(|(name, i)| (name.clone(), i.settings))
            .collect(),
        rollout: doc.rollout.clone(),
    };
    if cx.has_errors() {
        return None;
    }
    // The overlap notes need only the document: they are found while the compiler builds
    // the tables on a second core (each is a tenth of the front end's time on a 110k-prefix
    // file).
    let (compiled, overlaps) = std::thread::scope(|scope| {
        let compiled = scope.spawn(|| match &opts.previous {
            Some(previous) => compiler::compile_after(&policy, &opts.slots, previous.previous()),
            None => compiler::compile(&policy, &opts.slots),
        });
        let mut overlaps = Vec::new();
        warn_overlaps(
            &mut Cx {
                issues: &mut overlaps,
            },
            &doc,
        );
        // A panic in the compiler is a bug, not a verdict on the file: carry it on.
        let compiled = compiled
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (compiled, overlaps)
    });
    let tables = match compiled {
        Ok(t) => t,
        Err(e) => {
            let pos = doc.rules_pos.unwrap_or(doc.root_pos);
            cx.error(pos, e.to_string(), compile_hint(&e));
            return None;
        }
    };
    cx.issues.extend(overlaps);
    warn_shadowed(&mut cx, &policy, &resolved, &tables);
    warn_lockout(&mut cx, &doc, &policy);
    let sets = doc
        .sets
        .iter()
        .map(|set| {
            let nets = set.entries.iter().map(|(net, _)| *net).collect();
            (set.name.clone(), nets)
        })
        .collect();
    Some((policy, tables, sets))
}

/// The file's named sets: name → prefixes as listed.
pub type Sets = BTreeMap<String, Vec<IpNet>>;

pub(super) fn compile_hint(e: &CompileError) -> &'static str {
    match e {
        CompileError::TooManyClasses { .. } => {
            "every distinct combination of rules covering a prefix needs a class; group CIDRs \
             into sets that share the same rules"
        }
        CompileError::TooManySegments { .. } => {
            "every distinct combination of rules covering a run of ports needs a segment; merge \
             port lists or reuse the same port list across rules"
        }
        CompileError::TooManyV4Prefixes { .. } | CompileError::TooManyV6Prefixes { .. } => {
            "aggregate adjacent CIDRs, remove unneeded ones, or raise `capacity`"
        }
        CompileError::TableTooLarge { .. } => {
            "clustered prefixes (many long prefixes inside the same short ones) need more table              per prefix; raise `capacity` for that family, or aggregate"
        }
        CompileError::TooManyProfiles { .. } => {
            "interfaces whose rules' `interfaces` lists give them the same set of rules share a \
             profile; give interfaces that should behave alike the same lists"
        }
        _ => "this is a bug in the config checks; please report it",
    }
}
