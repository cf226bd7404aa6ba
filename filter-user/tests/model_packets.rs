//! The TESTCASES table (`tests/testcases`: A–H27 and the VERDICTS.md edge cases) judged by
//! the reference model alone. It needs no privileges, so every host run checks every case;
//! `kernel_packets` drives the same table through the real XDP program, with the model
//! beside it.
//!
//! Run: `cargo test -p filter-user --test model_packets`.

mod common;
mod testcases;

use filter_common::Reason;
use filter_user::craft::Frame;
use filter_user::model::{Model, ModelState};
use filter_user::policy::{Mode, Policy};
use testcases::Bed;

crate::testcases!(ModelBed);

/// The model of one rule set, and the fragment state it keeps from check to check.
struct ModelBed {
    policy: Policy,
    model: Model,
    state: ModelState,
    checks: usize,
    failures: testcases::Failures,
}

impl Bed for ModelBed {
    fn new(policy: Policy) -> ModelBed {
        ModelBed {
            model: Model::new(&policy),
            policy,
            state: ModelState::new(),
            checks: 0,
            failures: testcases::Failures::default(),
        }
    }

    fn policy(&self) -> &Policy {
        &self.policy
    }

    #[track_caller]
    fn check(&mut self, frame: &Frame, pass: bool, reason: Reason, rule: Option<&str>) {
        let caller = std::panic::Location::caller();
        let bytes = frame.build();
        let would_drop = self.policy.mode == Mode::Monitor && reason.is_drop();
        self.checks += 1;
        let j = self.model.judge_tracked(&bytes, &mut self.state);
        if (j.pass, j.reason, j.rule.as_deref(), j.would_drop) != (pass, reason, rule, would_drop) {
            self.failures.push(format!(
                "{caller}: {}\n  hex      {}\n  expected {}\n  model:   {j}",
                testcases::describe(frame),
                common::hex(&bytes),
                testcases::expected(pass, reason, rule, would_drop),
            ));
        }
    }

    fn finish(mut self) {
        self.failures.finish(self.checks);
    }
}
