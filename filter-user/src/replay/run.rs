//! The offline replay: every frame through the real XDP program (`BPF_PROG_TEST_RUN`) and
//! through the reference model, in capture order, with fragment state carried along on both
//! sides; then a timing pass of the program next to the empty XDP program.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use filter_common::{Reason, MAX_RULES};
use serde::Serialize;

use super::rawbpf::RawProgram;
use crate::{
    compiler::{compile, RuleSlots, Tables},
    loader::{
        testrun::{
            refused_as_too_long, KernelJudge, XdpAction, MAX_LINEAR_TEST_RUN_FRAME,
            MIN_TEST_RUN_FRAME,
        },
        Filter, FilterMaps, LoadOptions, LoaderError,
    },
    model::{Judgement, Model, ModelState, Outcome},
    policy::{Mode, Policy},
};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The policy does not fit the kernel tables.
    #[error("the rule file does not compile: {0}")]
    Compile(#[from] crate::compiler::CompileError),
    /// Loading, publishing or running the program failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// The empty baseline program could not be loaded or run.
    #[error("empty xdp baseline program: {0}")]
    Baseline(#[source] std::io::Error),
}

/// Where the kernel and the model differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    /// Frame index in the capture (0-based).
    pub index: u64,
    /// The XDP program's answer.
    pub kernel: Outcome,
    /// The reference model's answer.
    pub model: Outcome,
}

/// The verdict reported for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameResult {
    /// Frame index in the capture (0-based).
    pub index: u64,
    /// The answer reported: the XDP program's, or the model's when the kernel was not asked
    /// or refused the frame (model-only replay, a frame shorter than [`MIN_TEST_RUN_FRAME`],
    /// or one too long for XDP frags: see [`MAX_LINEAR_TEST_RUN_FRAME`]).
    pub answer: Outcome,
    /// The model's answer when it differs from the kernel's.
    pub disagreement: Option<Disagreement>,
}

/// Mean cost per frame over the whole capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Timing {
    /// Repetitions per frame in the kernel timing pass.
    pub repeat: u32,
    /// nodegate's XDP program, kernel-measured ns per frame.
    pub nodegate_ns: f64,
    /// The empty XDP program (`return XDP_PASS`) over the same frames, same run.
    pub empty_xdp_ns: f64,
    /// The reference model in userspace, wall-clock ns per frame.
    pub model_ns: f64,
}

/// Totals over a replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Frames in the capture.
    pub frames: u64,
    /// Frames run through the XDP program.
    pub kernel_frames: u64,
    /// Frames only the model judged (kernel off, or a length `BPF_PROG_TEST_RUN` refuses).
    pub model_only_frames: u64,
    /// Frames per verdict (`pass`, `drop`).
    pub verdicts: BTreeMap<&'static str, u64>,
    /// Frames per reason, monitor-mode would-drops not included.
    pub reasons: BTreeMap<&'static str, u64>,
    /// Monitor-mode would-drops (passed; enforcing would drop them) per reason.
    pub would_drop_reasons: BTreeMap<&'static str, u64>,
    /// Frames per deciding rule.
    pub rules: BTreeMap<String, u64>,
    /// Number of disagreements.
    pub disagreement_count: u64,
    /// Every disagreement (frame index and both answers).
    pub disagreements: Vec<Disagreement>,
    /// Per-frame cost, when measured.
    pub timing: Option<Timing>,
    /// Frames the snap length cut after their headers: judged padded to their length on
    /// the wire (see [`super::snap`]).
    pub cut_judged: u64,
    /// Frames the snap length cut inside their headers: counted here, not judged.
    pub cut_not_judged: u64,
}

impl Summary {
    fn count(&mut self, result: &FrameResult) {
        self.frames += 1;
        *self.verdicts.entry(result.answer.verdict).or_default() += 1;
        let by_reason = if result.answer.would_drop {
            &mut self.would_drop_reasons
        } else {
            &mut self.reasons
        };
        *by_reason.entry(result.answer.reason).or_default() += 1;
        if let Some(rule) = &result.answer.rule {
            *self.rules.entry(rule.clone()).or_default() += 1;
        }
        if let Some(d) = &result.disagreement {
            self.disagreement_count += 1;
            self.disagreements.push(d.clone());
        }
    }
}

/// How to replay.
#[derive(Clone, Copy, Debug)]
pub struct ReplayOptions {
    /// Run frames through the kernel program (needs root); `false` judges with the model only.
    pub kernel: bool,
    /// Repetitions per frame of the timing pass; 0 skips it. Keep it at 1: a test run with
    /// `repeat > 1` costs the kernel about 26 ms of dispatcher switching per call (see
    /// [`super::live::BURST_FROM_LOOPS`]), while the empty-program baseline measured the
    /// same way cancels the timer overhead a single run carries.
    pub timing_repeat: u32,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            kernel: true,
            timing_repeat: 1,
        }
    }
}

/// The XDP program loaded with private maps and one published generation of `policy`.
pub struct LoadedPolicy {
    /// The program and its maps.
    pub filter: Filter,
    /// The published tables.
    pub tables: Tables,
    /// The interface frames are judged as arriving on (its `interfaces:` settings apply).
    pub iface: Option<String>,
}

impl LoadedPolicy {
    /// Load the program (private maps) and publish `policy`.
    pub fn load(policy: &Policy) -> Result<LoadedPolicy, ReplayError> {
        LoadedPolicy::load_on(policy, None)
    }

    /// Load the program (private maps) and publish `policy`, with test runs judged as
    /// arriving on `iface` when given.
    pub fn load_on(policy: &Policy, iface: Option<&str>) -> Result<LoadedPolicy, ReplayError> {
        LoadedPolicy::load_with(policy, iface, None)
    }

    /// Load `object` instead of the embedded program (the benches' knock-out builds) and
    /// publish `policy`.
    pub fn load_object(
        policy: &Policy,
        object: std::sync::Arc<[u8]>,
    ) -> Result<LoadedPolicy, ReplayError> {
        LoadedPolicy::load_with(policy, None, Some(object))
    }

    fn load_with(
        policy: &Policy,
        iface: Option<&str>,
        object: Option<std::sync::Arc<[u8]>>,
    ) -> Result<LoadedPolicy, ReplayError> {
        let mut slots = RuleSlots::new();
        let tables = compile(policy, &slots)?;
        let mut filter = Filter::load(&LoadOptions {
            prefix_capacity: Some(policy.capacity),
            object,
            ..LoadOptions::default()
        })?;
        if let Some(name) = iface {
            filter.maps_mut().test_runs_arrive_on(name)?;
        }
        filter.maps_mut().publish(&tables)?;
        slots.commit(&tables);
        Ok(LoadedPolicy {
            filter,
            tables,
            iface: iface.map(str::to_owned),
        })
    }
}

/// The model for frames arriving on `iface` (the file's own settings for `None`).
fn model_on(policy: &Policy, iface: Option<&str>) -> Model {
    match iface {
        Some(name) => Model::on_interface(policy, name),
        None => Model::new(policy),
    }
}

/// Replays frames against one policy. Call [`Replayer::frame`] for each frame in order,
/// then [`Replayer::finish`].
pub struct Replayer<'p> {
    model: Model,
    state: ModelState,
    monitor: bool,
    kernel: Option<KernelSide<'p>>,
    summary: Summary,
    model_time: Duration,
    timing_repeat: u32,
}

struct KernelSide<'p> {
    judge: KernelJudge<'p>,
    slot_of: HashMap<String, u32>,
    name_of: HashMap<u32, String>,
    rule_counts: HashMap<u32, u64>,
}

impl<'p> Replayer<'p> {
    /// Judge with the model only.
    pub fn model_only(policy: &Policy) -> Replayer<'static> {
        Replayer::model_only_on(policy, None)
    }

    /// Judge with the model only, as frames arriving on `iface`.
    pub fn model_only_on(policy: &Policy, iface: Option<&str>) -> Replayer<'static> {
        Replayer {
            model: model_on(policy, iface),
            state: ModelState::new(),
            monitor: policy.mode_on(iface) == Mode::Monitor,
            kernel: None,
            summary: Summary::default(),
            model_time: Duration::ZERO,
            timing_repeat: 0,
        }
    }

    /// Judge with the model and the loaded program.
    pub fn with_kernel(
        policy: &Policy,
        loaded: &'p mut LoadedPolicy,
        timing_repeat: u32,
    ) -> Result<Replayer<'p>, ReplayError> {
        let slot_of: HashMap<String, u32> = loaded
            .tables
            .rule_names
            .iter()
            .map(|(s, n)| (n.clone(), u32::from(*s)))
            .collect();
        let name_of = slot_of.iter().map(|(n, s)| (*s, n.clone())).collect();
        let mut rule_counts = HashMap::new();
        for &slot in slot_of.values() {
            for index in [slot, slot + MAX_RULES] {
                rule_counts.insert(
                    index,
                    FilterMaps::sum(&loaded.filter.maps().rule_stats, index)?.packets,
                );
            }
        }
        let iface = loaded.iface.clone();
        let judge = KernelJudge::new(&mut loaded.filter)?;
        Ok(Replayer {
            model: model_on(policy, iface.as_deref()),
            state: ModelState::new(),
            monitor: policy.mode_on(iface.as_deref()) == Mode::Monitor,
            kernel: Some(KernelSide {
                judge,
                slot_of,
                name_of,
                rule_counts,
            }),
            summary: Summary::default(),
            model_time: Duration::ZERO,
            timing_repeat,
        })
    }

    /// Forget every tracked fragment, in the model and in the kernel: what follows is a
    /// new trace. (The kernel's table may hold what the model's does not: an entry the
    /// model never made is still cleared.)
    pub fn clear_fragments(&mut self) -> Result<(), ReplayError> {
        self.state.clear();
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.judge.filter().clear_fragments()?;
        }
        Ok(())
    }

    /// Pass over the next frame of the capture without judging it: the snap length cut its
    /// headers (it keeps its index; `cut_not_judged` counts it).
    pub fn not_judged(&mut self) {
        self.summary.frames += 1;
        self.summary.cut_not_judged += 1;
    }

    /// Count the frame judged next as one the snap length cut after its headers.
    pub fn judging_cut(&mut self) {
        self.summary.cut_judged += 1;
    }

    /// Judge the next frame of the capture.
    pub fn frame(&mut self, frame: &[u8]) -> Result<FrameResult, ReplayError> {
        let index = self.summary.frames;
        let t = Instant::now();
        let judgement = self.model.judge_tracked(frame, &mut self.state);
        self.model_time += t.elapsed();
        let model = judgement.outcome();

        let result = match &mut self.kernel {
            Some(kernel) if frame.len() >= MIN_TEST_RUN_FRAME => {
                let kernel_answer = match kernel.judge(frame, &judgement, self.monitor) {
                    Ok(answer) => answer,
                    // A frame too long for any XDP program (80 KB BIG TCP captures): the
                    // model's answer stands, as for frames shorter than an Ethernet header.
                    Err(ReplayError::Loader(e)) if refused_as_too_long(frame, &e) => {
                        self.summary.model_only_frames += 1;
                        let result = FrameResult {
                            index,
                            answer: model,
                            disagreement: None,
                        };
                        self.summary.count(&result);
                        return Ok(result);
                    }
                    Err(e) => return Err(e),
                };
                self.summary.kernel_frames += 1;
                let agrees = judgement.agrees(
                    Reason::from_name(kernel_answer.reason).unwrap_or(Reason::Internal),
                    kernel_answer.rule.as_deref(),
                ) && (kernel_answer.verdict == model.verdict
                    || (judgement.stateful_unknown
                        && kernel_answer.reason == Reason::ReturnTraffic.name()));
                let disagreement = (!agrees).then(|| Disagreement {
                    index,
                    kernel: kernel_answer.clone(),
                    model: model.clone(),
                });
                FrameResult {
                    index,
                    answer: kernel_answer,
                    disagreement,
                }
            }
            _ => {
                self.summary.model_only_frames += 1;
                FrameResult {
                    index,
                    answer: model,
                    disagreement: None,
                }
            }
        };
        self.summary.count(&result);
        Ok(result)
    }

    /// Finish: run the timing pass over `frames` (the same frames, when the kernel side is
    /// on and timing was asked for) and return the summary.
    pub fn finish(mut self, frames: &[&[u8]]) -> Result<Summary, ReplayError> {
        let judged = self.summary.frames.max(1) as f64;
        let model_ns = self.model_time.as_nanos() as f64 / judged;
        if let Some(kernel) = self.kernel.as_mut() {
            if self.timing_repeat > 0 {
                let mut timing = time_frames(kernel.judge.filter(), frames, self.timing_repeat)?;
                timing.model_ns = model_ns;
                self.summary.timing = Some(timing);
            }
        }
        Ok(self.summary)
    }
}

impl KernelSide<'_> {
    fn judge(
        &mut self,
        frame: &[u8],
        model: &Judgement,
        monitor: bool,
    ) -> Result<Outcome, ReplayError> {
        let expect_slot = model.reason.stat_slot(monitor);
        let expect_rule = model
            .rule
            .as_ref()
            .and_then(|name| self.slot_of.get(name))
            .map(|slot| slot + if model.would_drop { MAX_RULES } else { 0 });
        let verdict = self.judge.judge(frame, Some(expect_slot), expect_rule)?;
        let mut rule = verdict.rule_slot.and_then(|index| {
            self.rule_counts.entry(index).and_modify(|c| *c += 1);
            self.name_of.get(&(index % MAX_RULES)).cloned()
        });
        if rule.is_none()
            && matches!(
                verdict.reason,
                Reason::AllowRule | Reason::DenyRule | Reason::Failsafe
            )
        {
            // The kernel decided by a rule the model did not predict: find the counter that moved.
            let maps = self.judge.filter().maps();
            for (index, before) in self.rule_counts.iter_mut() {
                let now = FilterMaps::sum(&maps.rule_stats, *index)?.packets;
                if now != *before {
                    *before = now;
                    rule = self.name_of.get(&(index % MAX_RULES)).cloned();
                }
            }
        }
        let verdict_name = match verdict.action {
            XdpAction::Pass => "pass",
            XdpAction::Drop | XdpAction::Aborted | XdpAction::Other(_) => "drop",
        };
        Ok(Outcome {
            verdict: verdict_name,
            reason: verdict.reason.name(),
            rule,
            would_drop: verdict.would_drop,
        })
    }
}

/// Mean kernel-measured cost per frame of nodegate's program and of the empty XDP program,
/// each frame run `repeat` times, over the same frames in the same run.
pub fn time_frames(
    filter: &mut Filter,
    frames: &[&[u8]],
    repeat: u32,
) -> Result<Timing, ReplayError> {
    let empty = RawProgram::pass().map_err(ReplayError::Baseline)?;
    let (mut nodegate, mut baseline, mut n) = (0u128, 0u128, 0u128);
    // The empty baseline program has no XDP frags support: time one-buffer frames only.
    for frame in frames
        .iter()
        .filter(|f| (MIN_TEST_RUN_FRAME..=MAX_LINEAR_TEST_RUN_FRAME).contains(&f.len()))
    {
        let (_, d) = filter.test_run(frame, repeat)?;
        nodegate += d.as_nanos();
        baseline += empty
            .test_run(frame, repeat)
            .map_err(ReplayError::Baseline)?
            .duration
            .as_nanos();
        n += 1;
    }
    let n = n.max(1) as f64;
    Ok(Timing {
        repeat,
        nodegate_ns: nodegate as f64 / n,
        empty_xdp_ns: baseline as f64 / n,
        model_ns: 0.0,
    })
}
