//! Every packet case of shared/TESTCASES.md A–H27 (the one table in `tests/testcases`)
//! through the real XDP program with `BPF_PROG_TEST_RUN`, asserting the verdict, the exact
//! reason counter and the rule counter, and that the reference model gives the same answer.
//! `model_packets` drives the same table through the model alone, without privileges.
//!
//! Each test loads the program with private maps, publishes one rule generation compiled from
//! the case's rule set, and [`TestBed::check`]s its frames:
//! - the model (`judge_tracked`, with one fragment state per test bed, like the kernel's
//!   `NG_FRAGS`) must give the expected verdict, reason and rule;
//! - the kernel must return XDP_PASS/XDP_DROP accordingly, [`KernelJudge`] must see the
//!   expected reason slot (the would-drop slot in monitor mode) and rule slot move, and a
//!   snapshot diff of all counters must show exactly one reason counter and at most one rule
//!   counter moving, by one packet and by the frame's length in bytes.
//!
//! Failures are collected per test bed and reported together, so one run shows every
//! disagreement of a case, each with the frame, its hex, and expected/model/kernel answers.
//!
//! Run: `cargo test -p filter-user --features privileged-tests --test kernel_packets --
//! --test-threads=1` as root. The ns/packet figures are benchmarks (`cargo xtask bench`,
//! the `testrun` and `stages` groups), not tests.
#![cfg(feature = "privileged-tests")]

mod common;

mod testcases;

use std::collections::BTreeMap;

use filter_common::{Reason, MAX_RULES};
use filter_user::compiler::Tables;
use filter_user::craft::Frame;
use filter_user::loader::counters::Snapshot;
use filter_user::loader::testrun::{KernelJudge, XdpAction, MIN_TEST_RUN_FRAME};
use filter_user::loader::Filter;
use filter_user::model::{Model, ModelState};
use filter_user::policy::{Mode, Policy};
use testcases::Bed;

crate::testcases!(TestBed);

// ------------------------------------------------------------------ the test bed

/// (interface slot, reason name, would-drop) → (packets, bytes).
type ReasonCounts = BTreeMap<(u32, &'static str, bool), (u64, u64)>;
/// (rule slot, would-drop) → (name, packets, bytes).
type RuleCounts = BTreeMap<(u32, bool), (String, u64, u64)>;

fn reason_counts(s: &Snapshot) -> ReasonCounts {
    s.reasons
        .iter()
        .map(|r| ((r.iface_slot, r.reason, r.would_drop), (r.packets, r.bytes)))
        .collect()
}

fn rule_counts(s: &Snapshot) -> RuleCounts {
    s.rules
        .iter()
        .map(|r| ((r.slot, r.would_drop), (r.name.clone(), r.packets, r.bytes)))
        .collect()
}

/// One loaded program with one published rule generation, the model of the same policy, and
/// the fragment state both sides keep.
struct TestBed {
    filter: Filter,
    tables: Tables,
    policy: Policy,
    model: Model,
    state: ModelState,
    failures: testcases::Failures,
    kernel_frames: usize,
    model_only_frames: usize,
}

impl TestBed {
    fn monitor(&self) -> bool {
        self.policy.mode == Mode::Monitor
    }

    fn rule_slot(&self, name: &str) -> u32 {
        self.tables
            .rule_names
            .iter()
            .find(|(_, n)| n == name)
            .map(|(slot, _)| u32::from(*slot))
            .unwrap_or_else(|| panic!("no rule named {name} in the published generation"))
    }
}

impl Bed for TestBed {
    fn new(policy: Policy) -> TestBed {
        let (filter, tables) = common::published(&policy);
        TestBed {
            filter,
            tables,
            model: Model::new(&policy),
            policy,
            state: ModelState::new(),
            failures: testcases::Failures::default(),
            kernel_frames: 0,
            model_only_frames: 0,
        }
    }

    fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Checks one frame against the expected verdict, reason and rule, in the model and in
    /// the kernel (frames of 14 bytes or more). Failures are collected; see [`Self::finish`].
    #[track_caller]
    fn check(&mut self, frame: &Frame, pass: bool, reason: Reason, rule: Option<&str>) {
        let caller = std::panic::Location::caller();
        let bytes = frame.build();
        let would_drop = self.monitor() && reason.is_drop();
        let expected = testcases::expected(pass, reason, rule, would_drop);
        let mut problems = Vec::new();

        // The model.
        let j = self.model.judge_tracked(&bytes, &mut self.state);
        if (j.pass, j.reason, j.rule.as_deref(), j.would_drop) != (pass, reason, rule, would_drop) {
            problems.push(format!("model:    {j}"));
        }

        // The kernel.
        if bytes.len() < MIN_TEST_RUN_FRAME {
            self.model_only_frames += 1;
        } else {
            self.kernel_frames += 1;
            let monitor = self.monitor();
            let expect_rule =
                rule.map(|r| self.rule_slot(r) + if would_drop { MAX_RULES } else { 0 });
            let before = self.filter.maps().snapshot().expect("snapshot");
            let verdict = KernelJudge::new(&mut self.filter)
                .and_then(|mut judge| {
                    judge.judge(&bytes, Some(reason.stat_slot(monitor)), expect_rule)
                })
                .expect("BPF_PROG_TEST_RUN");
            let after = self.filter.maps().snapshot().expect("snapshot");

            let len = bytes.len() as u64;
            let (rb, ra) = (reason_counts(&before), reason_counts(&after));
            let moved_reasons: Vec<_> = ra
                .iter()
                .filter(|(k, v)| rb.get(k) != Some(v))
                .map(|(k, (p, b))| {
                    let (p0, b0) = rb.get(k).copied().unwrap_or((0, 0));
                    (*k, p - p0, b - b0)
                })
                .collect();
            let (ub, ua) = (rule_counts(&before), rule_counts(&after));
            let moved_rules: Vec<_> = ua
                .iter()
                .filter(|(k, v)| ub.get(k) != Some(v))
                .map(|(k, (name, p, b))| {
                    let (p0, b0) = ub.get(k).map(|(_, p, b)| (*p, *b)).unwrap_or((0, 0));
                    (name.clone(), k.1, p - p0, b - b0)
                })
                .collect();
            let generations: u64 =
                after.generations.iter().sum::<u64>() - before.generations.iter().sum::<u64>();

            let want_action = if pass {
                XdpAction::Pass
            } else {
                XdpAction::Drop
            };
            let kernel_rule = moved_rules.first().map(|(n, ..)| n.as_str());
            let kernel = format!(
                "kernel:   {:?} {}{} rule counters {:?} reason counters {:?}",
                verdict.action,
                verdict.reason.name(),
                if verdict.would_drop {
                    " [would drop]"
                } else {
                    ""
                },
                moved_rules,
                moved_reasons,
            );
            let mut kernel_wrong = verdict.action != want_action
                || verdict.reason != reason
                || verdict.would_drop != would_drop
                || verdict.rule_slot != expect_rule
                || kernel_rule != rule
                || moved_rules.len() > 1;
            // Exactly one reason counter, of the test-run interface slot, by this frame.
            if moved_reasons != [((0, reason.name(), would_drop), 1, len)] {
                kernel_wrong = true;
            }
            if let Some((_, wd, p, b)) = moved_rules.first() {
                if (*wd, *p, *b) != (would_drop, 1, len) {
                    kernel_wrong = true;
                }
            }
            if generations != 1 {
                kernel_wrong = true;
            }
            if kernel_wrong {
                problems.push(format!("{kernel} generation packets +{generations}"));
            }
            if !j.agrees(verdict.reason, kernel_rule)
                || j.pass != (verdict.action == XdpAction::Pass)
            {
                problems.push("kernel and model DISAGREE".to_string());
            }
        }

        if !problems.is_empty() {
            self.failures.push(format!(
                "{caller}: {}\n  hex      {}\n  expected {expected}\n  {}",
                testcases::describe(frame),
                common::hex(&bytes),
                problems.join("\n  ")
            ));
        }
    }

    fn finish(mut self) {
        println!(
            "{} frames checked in the kernel and the model, {} (< {MIN_TEST_RUN_FRAME} bytes) in the model only",
            self.kernel_frames, self.model_only_frames
        );
        self.failures
            .finish(self.kernel_frames + self.model_only_frames);
    }
}
