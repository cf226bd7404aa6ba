//! Confirmed changes: a generation published on probation, and flipped back to the last
//! confirmed one unless the change proves itself in time.
//!
//! A change goes on probation through `nodegate apply FILE --confirm-within D [--probe …]`,
//! or through a reload of a rule file that has a `rollout:` section (a ConfigMap edit on a
//! fleet). Before publishing, each probe is run once: one that fails *before* the change is
//! reported and not used, since it could only blame the change for what was already
//! broken. Then, until the deadline:
//!
//! - every probe runs again and again; the first failure rolls back at once;
//! - a drop sample of a TCP connection established before the change (the operator's SSH
//!   session, the API server's connection to the kubelet) rolls back at once
//!   (`watch_established`);
//! - at the deadline, a change with probes that kept passing is confirmed; one without
//!   probes is rolled back unless `nodegate confirm` came first.
//!
//! The probation lives in a state file beside the owner lock (`<pin root>.rollout.json`,
//! 0600, written before the answer): a daemon killed during the window resumes it on start,
//! and one that was down at the deadline rolls back as it starts. A rolled-back change whose
//! rule file still holds it (the `rollout:` case) keeps the daemon on the previous rules, not
//! ready, until the file changes: a restart does not re-apply a change the node refused.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    control::Answer,
    engine::{Engine, EngineError, FailsafeGuard, Prepared, Source},
    established::{Connection, Established},
    owner::OwnerLock,
};
use crate::{
    loader::pins::PinLayout,
    policy::Rollout,
    probe::{check_all, Outcome, ReachProbe},
};

/// Layout version of the state file.
const STATE_VERSION: u32 = 1;

/// Where the daemon owning `pins` keeps a change on probation.
pub fn state_path(run_dir: &Path, pins: &PinLayout) -> PathBuf {
    OwnerLock::path_for(run_dir, pins).with_extension("rollout.json")
}

/// Where a change stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Published, awaiting confirmation.
    Pending,
    /// Flipped back; kept while the rule file still holds the refused change.
    RolledBack,
}

/// Why a change was rolled back (the `cause` label of `nodegate_rollbacks_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// A probe failed.
    Probe,
    /// No confirmation (and no probes) by the deadline.
    Unconfirmed,
    /// The new rules dropped packets of a connection established before the change.
    EstablishedConnection,
    /// `nodegate rollback`.
    Operator,
}

impl Cause {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Probe => "probe",
            Cause::Unconfirmed => "unconfirmed",
            Cause::EstablishedConnection => "established_connection",
            Cause::Operator => "operator",
        }
    }
}

/// A change on probation, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probation {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Where it stands.
    pub phase: Phase,
    /// What asked for it (`nodegate apply`, `file change`, …).
    pub trigger: String,
    /// The file the change came from.
    pub source: PathBuf,
    /// `config::content_hash` of the applied text, hex.
    pub applied_hash: String,
    /// The rules on probation.
    pub applied_text: String,
    /// The last confirmed rules: what a rollback publishes.
    pub previous_text: String,
    /// Unix milliseconds when it was published.
    pub started_at_ms: u64,
    /// Unix milliseconds when it is decided.
    pub deadline_ms: u64,
    /// Probes in use (those that passed before the change).
    pub probes: Vec<ReachProbe>,
    /// Roll back on a dropped packet of a connection established before the change.
    pub watch_established: bool,
    /// The rule file to write the applied text into once confirmed (`nodegate apply` of
    /// another file); `None` when the change came from the rule file itself.
    pub install_into: Option<PathBuf>,
    /// Why it was rolled back.
    pub reason: Option<String>,
}

/// What a probation's state says to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Keep waiting.
    Wait,
    /// Keep the change.
    Confirm,
    /// Flip back.
    RollBack(Cause, String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `Unix ms` as `HH:MM:SS UTC`, for answers and logs.
fn clock(ms: u64) -> String {
    let secs = ms / 1000 % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn window(p: &Probation) -> String {
    format!("{} s", p.deadline_ms.saturating_sub(p.started_at_ms) / 1000)
}

impl Probation {
    /// What to do at `now_ms`, given the last complete probe round.
    pub fn decide(&self, now_ms: u64, last_round: Option<&[Outcome]>) -> Decision {
        if let Some(failed) = last_round.into_iter().flatten().find(|o| !o.passed) {
            return Decision::RollBack(
                Cause::Probe,
                format!("probe {} failed: {}", failed.probe, failed.detail),
            );
        }
        if now_ms < self.deadline_ms {
            return Decision::Wait;
        }
        if self.probes.is_empty() {
            return Decision::RollBack(
                Cause::Unconfirmed,
                format!("not confirmed within {}", window(self)),
            );
        }
        match last_round {
            Some(_) => Decision::Confirm,
            // Resumed after the deadline: one round decides.
            None => Decision::Wait,
        }
    }

    fn load(path: &Path) -> Result<Option<Probation>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let p: Probation = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a probation record: {e}", path.display()))?;
        if p.version != STATE_VERSION {
            return Err(format!(
                "{} has layout version {}, this nodegate reads {STATE_VERSION}",
                path.display(),
                p.version
            ));
        }
        Ok(Some(p))
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        super::run::write_replacing(path, &json, 0o600)
    }
}

/// Confirmed-change counters, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutCounts {
    /// Changes confirmed (by `nodegate confirm` or by their probes).
    pub confirmed: u64,
    /// Rollbacks by [`Cause::name`].
    pub rolled_back: BTreeMap<&'static str, u64>,
    /// A change is on probation now.
    pub pending: bool,
}

/// What `nodegate status` shows of a confirmed change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// Where it stands.
    pub phase: Phase,
    /// The file it came from.
    pub source: PathBuf,
    /// Unix seconds of the deadline.
    pub deadline: u64,
    /// Probes in use.
    pub probes: Vec<ReachProbe>,
    /// The last complete probe round.
    pub last_round: Vec<Outcome>,
    /// Why it was rolled back.
    pub reason: Option<String>,
}

/// The daemon's side of confirmed changes.
pub struct Driver {
    path: PathBuf,
    config: PathBuf,
    current: Option<Probation>,
    probing: Option<tokio::task::JoinHandle<Vec<Outcome>>>,
    last_round: Option<Vec<Outcome>>,
    /// Connections to watch, shared with the drop-sample reader.
    watch: Arc<Mutex<Option<Established>>>,
    counts: RolloutCounts,
    /// A rollback done while starting, audited once the engine runs.
    rolled_back_at_start: Option<String>,
}

/// The hex spelling of a content hash, as the state file and the audit trail keep it.
fn hex(hash: Option<u64>) -> String {
    hash.map(|h| format!("{h:016x}")).unwrap_or_default()
}

/// The content hash of the rule file at `path`, read as the engine reads it (a FIFO, a
/// device or an oversized file is no rule file: `None`, never a wait).
fn file_hash(path: &Path) -> Option<String> {
    crate::config::read_rule_file(path)
        .ok()
        .map(|bytes| hex(Some(crate::config::content_hash(&bytes))))
}

impl Driver {
    /// Read the probation state of the daemon whose rule file is `config`. An unreadable
    /// record cannot be acted on: it is reported and set aside.
    pub fn load(path: PathBuf, config: PathBuf) -> Driver {
        let current = match Probation::load(&path) {
            Ok(p) => p,
            Err(why) => {
                warn!(
                    "{why}; the confirmed change it recorded is forgotten, the rule file decides"
                );
                let _ = std::fs::rename(&path, path.with_extension("json.bad"));
                None
            }
        };
        Driver {
            path,
            config,
            current,
            probing: None,
            last_round: None,
            watch: Arc::new(Mutex::new(None)),
            counts: RolloutCounts::default(),
            rolled_back_at_start: None,
        }
    }

    /// The connections the drop-sample reader checks samples against.
    pub fn watch_handle(&self) -> Arc<Mutex<Option<Established>>> {
        self.watch.clone()
    }

    /// Counters for metrics.
    pub fn counts(&self) -> RolloutCounts {
        RolloutCounts {
            pending: self.pending().is_some(),
            ..self.counts.clone()
        }
    }

    fn pending(&self) -> Option<&Probation> {
        self.current.as_ref().filter(|p| p.phase == Phase::Pending)
    }

    /// The content hash of a change that was rolled back while the rule file still holds
    /// it: a file event with that content re-applies nothing.
    pub fn refused_hash(&self) -> Option<&str> {
        self.current
            .as_ref()
            .filter(|p| p.phase == Phase::RolledBack)
            .map(|p| p.applied_hash.as_str())
    }

    /// For `nodegate status`.
    pub fn status(&self) -> Option<RolloutStatus> {
        self.current.as_ref().map(|p| RolloutStatus {
            phase: p.phase,
            source: p.source.clone(),
            deadline: p.deadline_ms / 1000,
            probes: p.probes.clone(),
            last_round: self.last_round.clone().unwrap_or_default(),
            reason: p.reason.clone(),
        })
    }

    /// The rules the daemon starts with instead of the rule file's (`None`: the file's),
    /// deciding a probation that ran out while no daemon was running.
    pub fn start_text(&mut self) -> Option<Arc<str>> {
        self.current.as_ref()?;
        let on_disk = file_hash(&self.config);
        let p = self.current.as_mut()?;
        match p.phase {
            Phase::Pending if now_ms() < p.deadline_ms || !p.probes.is_empty() => {
                info!(source = %p.source.display(), deadline = %clock(p.deadline_ms), "resuming a confirmed change on probation");
                Some(p.applied_text.as_str().into())
            }
            Phase::Pending => {
                let reason = format!(
                    "not confirmed within {} (no daemon was running at the deadline, {})",
                    window(p),
                    clock(p.deadline_ms)
                );
                warn!(source = %p.source.display(), "rolling back at start: {reason}");
                p.phase = Phase::RolledBack;
                p.reason = Some(reason.clone());
                *self
                    .counts
                    .rolled_back
                    .entry(Cause::Unconfirmed.name())
                    .or_default() += 1;
                self.rolled_back_at_start = Some(reason);
                let text = p.previous_text.as_str().into();
                self.keep_or_forget();
                Some(text)
            }
            Phase::RolledBack if on_disk.as_deref() == Some(p.applied_hash.as_str()) => {
                info!(source = %p.source.display(), "the rule file still holds a change that was rolled back; starting with the rules it replaced");
                Some(p.previous_text.as_str().into())
            }
            Phase::RolledBack => {
                self.forget();
                None
            }
        }
    }

    /// Once the engine runs: audit a rollback done while starting, hold the node not
    /// ready while the file holds a refused change, and watch connections again.
    pub fn started(&mut self, engine: &mut Engine) {
        if let Some(reason) = self.rolled_back_at_start.take() {
            engine.note("rollback (unconfirmed)", reason);
        }
        self.hold_back(engine);
        if let Some(p) = self.pending() {
            let watched = p.watch_established.then(Established::snapshot);
            self.set_watch(watched);
        }
    }

    fn set_watch(&self, watched: Option<Established>) {
        if let Ok(mut w) = self.watch.lock() {
            *w = watched;
        }
    }

    fn hold_back(&self, engine: &mut Engine) {
        let why = self
            .current
            .as_ref()
            .filter(|p| p.phase == Phase::RolledBack)
            .map(|p| {
                format!(
                    "a change from {} was rolled back ({}); the rules it replaced are active until the file changes (or `nodegate reload` tries it again)",
                    p.source.display(),
                    p.reason.as_deref().unwrap_or("no reason recorded")
                )
            });
        engine.hold_back(why);
    }

    fn forget(&mut self) {
        self.current = None;
        self.last_round = None;
        if let Some(task) = self.probing.take() {
            task.abort();
        }
        self.set_watch(None);
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %self.path.display(), "cannot remove the probation record: {e}"),
        }
    }

    /// After a rollback: keep the record only while the rule file still holds the refused
    /// change (so that a restart does not re-apply it).
    fn keep_or_forget(&mut self) {
        let Some(p) = &self.current else { return };
        let file_holds_it =
            p.install_into.is_none() && file_hash(&self.config).as_deref() == Some(&p.applied_hash);
        if file_holds_it {
            self.persist();
        } else {
            self.forget();
        }
    }

    fn persist(&self) {
        if let Some(p) = &self.current {
            if let Err(e) = p.save(&self.path) {
                warn!(path = %self.path.display(), "cannot record the confirmed change ({e}); it is decided in memory, a daemon restart would lose it");
            }
        }
    }

    /// A plain reload published the rule file: whatever was on probation is superseded.
    pub fn superseded(&mut self, engine: &mut Engine) {
        if let Some(p) = &self.current {
            if p.phase == Phase::Pending {
                info!(source = %p.source.display(), "the change on probation is superseded by a reload of the rule file");
            }
            self.forget();
        }
        engine.hold_back(None);
    }

    /// Publish `prepared` on probation under `terms`. Probes are checked first; the
    /// previous generation to return to is the last confirmed one.
    pub async fn begin(
        &mut self,
        engine: &mut Engine,
        prepared: Prepared,
        terms: &Rollout,
        trigger: &str,
        source: &Path,
        install_into: Option<PathBuf>,
    ) -> Answer {
        let given = terms.probes.clone();
        let before = tokio::task::spawn_blocking(move || check_all(&given))
            .await
            .unwrap_or_default();
        let (usable, failing): (Vec<Outcome>, Vec<Outcome>) =
            before.into_iter().partition(|o| o.passed);
        for o in &failing {
            warn!(probe = %o.probe, "probe fails before the change ({}); not used", o.detail);
        }
        let previous = match (self.pending(), engine.active_text()) {
            (Some(p), _) => p.previous_text.clone(),
            (None, Some(text)) => text.to_string(),
            (None, None) => {
                return Answer {
                    ok: false,
                    epoch: engine.stats().epoch,
                    message: "no active rules to return to; nothing was changed".into(),
                }
            }
        };
        let watched = terms.watch_established.then(Established::snapshot);
        let applied_text = prepared.text.as_deref().unwrap_or_default().to_string();
        let applied_hash = hex(prepared.file_hash);
        let epoch = match engine.publish(prepared, trigger, FailsafeGuard::Check) {
            Ok(report) => report.epoch,
            Err(err) => {
                return Answer {
                    ok: false,
                    epoch: engine.stats().epoch,
                    message: format!("not applied; the active rules are unchanged: {err}"),
                }
            }
        };
        let started_at_ms = now_ms();
        let p = Probation {
            version: STATE_VERSION,
            phase: Phase::Pending,
            trigger: trigger.to_string(),
            source: source.to_path_buf(),
            applied_hash,
            applied_text,
            previous_text: previous,
            started_at_ms,
            deadline_ms: started_at_ms + terms.confirm_within.as_millis() as u64,
            probes: usable.iter().map(|o| o.probe.clone()).collect(),
            watch_established: terms.watch_established,
            install_into,
            reason: None,
        };
        if let Some(task) = self.probing.take() {
            task.abort();
        }
        self.last_round = None;
        let watching = watched.as_ref().map_or(0, Established::len);
        self.set_watch(watched);
        let how = if p.probes.is_empty() {
            "rolls back unless `nodegate confirm` comes first".to_string()
        } else {
            format!(
                "confirmed if its probes keep passing, rolled back at the first failure ({})",
                join(&p.probes)
            )
        };
        let mut message = format!(
            "epoch {epoch} active on probation for {} until {}: {how}",
            window(&p),
            clock(p.deadline_ms)
        );
        if !failing.is_empty() {
            let names: Vec<String> = failing
                .iter()
                .map(|o| format!("{} ({})", o.probe, o.detail))
                .collect();
            message.push_str(&format!(
                "; not used, failing before the change: {}",
                names.join(", ")
            ));
        }
        if p.watch_established {
            message.push_str(&format!(
                "; watching {watching} established TCP connection(s)"
            ));
        }
        info!(epoch, deadline = %clock(p.deadline_ms), source = %p.source.display(), "change on probation: {message}");
        self.current = Some(p);
        self.persist();
        engine.hold_back(None);
        Answer {
            ok: true,
            epoch,
            message,
        }
    }

    /// Keep the change on probation (`by`: who confirmed it).
    pub fn confirm(&mut self, engine: &mut Engine, by: &str) -> Answer {
        let epoch = engine.stats().epoch;
        let Some(p) = self.pending().cloned() else {
            return self.nothing_pending(epoch);
        };
        let mut message = format!(
            "confirmed: the change from {} stays (epoch {epoch})",
            p.source.display()
        );
        if let Some(target) = &p.install_into {
            match write_keeping_mode(target, p.applied_text.as_bytes()) {
                Ok(()) => message.push_str(&format!("; written into {}", target.display())),
                Err(e) => {
                    warn!(file = %target.display(), "cannot write the confirmed rules into the rule file: {e}");
                    message.push_str(&format!(
                        "; but writing it into {} failed ({e}): the next reload or restart loads that file again",
                        target.display()
                    ));
                }
            }
        }
        self.forget();
        self.counts.confirmed += 1;
        info!(by, epoch, "{message}");
        engine.note(by, message.clone());
        Answer {
            ok: true,
            epoch,
            message,
        }
    }

    fn nothing_pending(&self, epoch: u64) -> Answer {
        let message = match &self.current {
            Some(p) => format!(
                "no change is on probation: the last one, from {}, was rolled back ({})",
                p.source.display(),
                p.reason.as_deref().unwrap_or("no reason recorded")
            ),
            None => "no change is on probation".into(),
        };
        Answer {
            ok: false,
            epoch,
            message,
        }
    }

    /// Flip back to the last confirmed rules.
    pub fn roll_back(&mut self, engine: &mut Engine, cause: Cause, reason: String) -> Answer {
        let epoch = engine.stats().epoch;
        let Some(p) = self.pending().cloned() else {
            return self.nothing_pending(epoch);
        };
        let trigger = format!("rollback ({})", cause.name());
        let config = self.config.clone();
        let published = engine
            .prepare(Source::Text {
                name: &config,
                text: &p.previous_text,
            })
            .and_then(|prepared| {
                engine
                    .publish(prepared, &trigger, FailsafeGuard::Skip)
                    .map(|r| r.epoch)
            });
        let epoch = match published {
            Ok(epoch) => epoch,
            Err(err) => return self.rollback_failed(engine, err),
        };
        let after = now_ms().saturating_sub(p.started_at_ms);
        warn!(cause = cause.name(), epoch, after_ms = after, source = %p.source.display(), "rolled back: {reason}");
        *self.counts.rolled_back.entry(cause.name()).or_default() += 1;
        if let Some(current) = self.current.as_mut() {
            current.phase = Phase::RolledBack;
            current.reason = Some(reason.clone());
        }
        self.set_watch(None);
        if let Some(task) = self.probing.take() {
            task.abort();
        }
        self.keep_or_forget();
        self.hold_back(engine);
        engine.note(&trigger, reason.clone());
        Answer {
            ok: true,
            epoch,
            message: format!(
                "rolled back to the rules before the change from {} (epoch {epoch}, {} ms after it): {reason}",
                p.source.display(),
                after
            ),
        }
    }

    fn rollback_failed(&mut self, engine: &mut Engine, err: EngineError) -> Answer {
        tracing::error!(
            "cannot roll back, the change stays active: the previous rules no longer load: {err}"
        );
        Answer {
            ok: false,
            epoch: engine.stats().epoch,
            message: format!("cannot roll back, the change stays active: {err}"),
        }
    }

    /// A dropped packet of a watched connection.
    pub fn cut(&mut self, engine: &mut Engine, conn: Connection) -> Option<Answer> {
        self.pending()?;
        Some(self.roll_back(
            engine,
            Cause::EstablishedConnection,
            format!("the new rules dropped a packet of a connection established before the change ({conn})"),
        ))
    }

    /// Every [`super::engine::TEND_INTERVAL`]: collect a finished probe round, decide,
    /// start the next round. Returns whether the active generation changed.
    pub async fn tick(&mut self, engine: &mut Engine) -> bool {
        if self.pending().is_none() {
            return false;
        }
        if self.probing.as_ref().is_some_and(|t| t.is_finished()) {
            if let Some(task) = self.probing.take() {
                self.last_round = Some(task.await.unwrap_or_default());
            }
        }
        let decision = self
            .pending()
            .map(|p| p.decide(now_ms(), self.last_round.as_deref()));
        match decision {
            Some(Decision::Confirm) => {
                self.confirm(engine, "probes passed through the window");
                return true;
            }
            Some(Decision::RollBack(cause, reason)) => {
                self.roll_back(engine, cause, reason);
                return true;
            }
            Some(Decision::Wait) | None => {}
        }
        if let Some(p) = self.pending() {
            if self.probing.is_none() && !p.probes.is_empty() {
                let probes = p.probes.clone();
                self.probing = Some(tokio::task::spawn_blocking(move || check_all(&probes)));
            }
        }
        false
    }
}

fn join(probes: &[ReachProbe]) -> String {
    probes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replace `path`'s contents atomically, keeping its permissions.
fn write_keeping_mode(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    super::run::write_replacing(path, bytes, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probation(probes: &[&str]) -> Probation {
        Probation {
            version: STATE_VERSION,
            phase: Phase::Pending,
            trigger: "nodegate apply".into(),
            source: "/etc/nodegate/next.yaml".into(),
            applied_hash: "00000000000000aa".into(),
            applied_text: "new".into(),
            previous_text: "old".into(),
            started_at_ms: 1_000,
            deadline_ms: 121_000,
            probes: probes.iter().map(|p| p.parse().unwrap()).collect(),
            watch_established: true,
            install_into: None,
            reason: None,
        }
    }

    fn round(passed: bool) -> Vec<Outcome> {
        vec![Outcome {
            probe: "tcp:10.0.0.10:443".parse().unwrap(),
            passed,
            detail: if passed { "connected" } else { "timed out" }.into(),
        }]
    }

    #[test]
    fn a_failing_probe_rolls_back_at_once_and_passing_ones_confirm_at_the_deadline() {
        let p = probation(&["tcp:10.0.0.10:443"]);
        assert_eq!(p.decide(2_000, None), Decision::Wait);
        assert_eq!(p.decide(2_000, Some(&round(true))), Decision::Wait);
        match p.decide(2_000, Some(&round(false))) {
            Decision::RollBack(Cause::Probe, why) => {
                assert!(why.contains("tcp:10.0.0.10:443 failed: timed out"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.decide(121_000, Some(&round(true))), Decision::Confirm);
        assert_eq!(
            p.decide(500_000, None),
            Decision::Wait,
            "resumed after the deadline: one round decides"
        );
    }

    #[test]
    fn without_probes_only_a_confirmation_keeps_the_change() {
        let p = probation(&[]);
        assert_eq!(p.decide(120_999, None), Decision::Wait);
        match p.decide(121_000, None) {
            Decision::RollBack(Cause::Unconfirmed, why) => {
                assert!(why.contains("not confirmed within 120 s"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_record_round_trips_and_a_foreign_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("ng-rollout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pins.rollout.json");
        assert_eq!(Probation::load(&path), Ok(None));
        let p = probation(&["icmp:10.0.0.1"]);
        p.save(&path).unwrap();
        assert_eq!(Probation::load(&path), Ok(Some(p.clone())));
        let mut newer = p;
        newer.version = 9;
        newer.save(&path).unwrap();
        assert!(Probation::load(&path)
            .unwrap_err()
            .contains("layout version 9"));
        std::fs::write(&path, "{").unwrap();
        assert!(Probation::load(&path)
            .unwrap_err()
            .contains("not a probation record"));
        // The driver sets an unreadable record aside instead of acting on it.
        let driver = Driver::load(path.clone(), dir.join("rules.yaml"));
        assert!(driver.status().is_none());
        assert!(!path.exists() && path.with_extension("json.bad").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_probation_that_ran_out_while_no_daemon_ran_is_rolled_back_at_start() {
        let dir = std::env::temp_dir().join(format!("ng-rollout-start-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (path, config) = (dir.join("pins.rollout.json"), dir.join("rules.yaml"));
        std::fs::write(&config, "new").unwrap();
        let mut p = probation(&[]);
        p.applied_hash = hex(Some(crate::config::content_hash(b"new")));
        p.save(&path).unwrap();
        let mut driver = Driver::load(path.clone(), config.clone());
        assert_eq!(driver.start_text().as_deref(), Some("old"));
        assert_eq!(driver.counts().rolled_back.get("unconfirmed"), Some(&1));
        // The rule file still holds the refused change: kept, and a restart keeps to "old".
        assert_eq!(driver.refused_hash(), Some(p.applied_hash.as_str()));
        let mut again = Driver::load(path.clone(), config.clone());
        assert_eq!(again.start_text().as_deref(), Some("old"));
        // Once the file changes, the file decides again and the record goes.
        std::fs::write(&config, "edited").unwrap();
        let mut edited = Driver::load(path.clone(), config);
        assert_eq!(edited.start_text(), None);
        assert!(!path.exists());
        // Still within its window: the change resumes.
        let mut live = probation(&[]);
        live.deadline_ms = now_ms() + 60_000;
        live.save(&path).unwrap();
        let mut resumed = Driver::load(path.clone(), dir.join("rules.yaml"));
        assert_eq!(resumed.start_text().as_deref(), Some("new"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
