//! The synchronous heart of `nodegate run`: bring the filter up (fresh, or adopting what a
//! previous loader pinned), and reload rule files. A reload either publishes a complete new
//! generation or changes nothing: the file is parsed, validated and compiled before any map
//! is touched, and a bad file leaves the last good rule set active.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
    time::{Duration, Instant, SystemTime},
};

use tracing::{info, warn};

use crate::{
    compiler::{Compiled, RuleSlots, Tables},
    config::{self, ConfigError},
    loader::{
        attach::{ifname, AttachError, Attached, XdpModeChoice},
        features::{EgressChoice, EgressHook, KernelFeatures, MissingFeature},
        holds::{Holds, LinkTrouble},
        pins::{PinError, PinLayout, TakenOver},
        privileges::{check_attach_privileges, MissingCapabilities, ProgramVariant},
        publish::PublishReport,
        Filter, LoadOptions, LoaderError,
    },
    policy::{Policy, Rule, RuleKind},
};

/// What `run` needs to start.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Rule file.
    pub config: PathBuf,
    /// Interfaces to attach to.
    pub ifaces: Vec<String>,
    /// XDP attach mode.
    pub xdp_mode: XdpModeChoice,
    /// How new egress recorders attach (TCX or clsact).
    pub egress: EgressChoice,
    /// Pin directory layout.
    pub pins: PinLayout,
    /// aya-log level of the programs, fixed at load (see [`LoadOptions::bpf_log_level`]).
    pub bpf_log_level: u8,
    /// `run --ipv4-capacity/--ipv6-capacity`: replaces the file's `capacity:`.
    pub capacity: config::CapacityOverride,
    /// Start with these rules instead of the file's: a confirmed change still on probation,
    /// or the generation a rolled-back change returned to (see [`super::rollout`]).
    pub start_text: Option<Arc<str>>,
}

impl EngineOptions {
    /// Where the first generation comes from.
    fn start_source(&self) -> Source<'_> {
        match &self.start_text {
            Some(text) => Source::Text {
                name: &self.config,
                text,
            },
            None => Source::File(&self.config),
        }
    }
}

/// Why the engine could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Missing privileges (checked before anything is loaded).
    #[error(transparent)]
    Privileges(#[from] MissingCapabilities),
    /// Pin directory problems.
    #[error(transparent)]
    Pins(#[from] PinError),
    /// The kernel lacks a feature without a fallback (probed before anything changes).
    #[error(transparent)]
    Kernel(#[from] MissingFeature),
    /// The rule file is invalid.
    #[error("{path}: rule file rejected, {kept}:\n{source}")]
    Config {
        /// File.
        path: PathBuf,
        /// What stays as it was: the active rules on a reload, everything at start.
        kept: &'static str,
        /// Diagnostics.
        source: ConfigError,
    },
    /// The reload would remove or change a failsafe rule without acknowledgement.
    #[error(
        "{path}: this reload would remove or change failsafe rule(s) {names}; failsafe rules are lockout \
         protection and never change silently. If intended, set `acknowledge_failsafe_change: true` in the \
         file for this reload (or restart `nodegate run`)"
    )]
    FailsafeChange {
        /// File.
        path: PathBuf,
        /// Affected failsafe rules.
        names: String,
    },
    /// Loading or a map operation failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Attaching failed.
    #[error(transparent)]
    Attach(#[from] AttachError),
}

// Transparent variants forward `source()` past the error they wrap, so the hint of that
// error is asked for here.
impl crate::hint::Hint for EngineError {
    fn hint(&self) -> Option<&str> {
        match self {
            EngineError::Privileges(e) => e.hint(),
            EngineError::Kernel(e) => e.hint(),
            EngineError::Loader(e) => e.hint(),
            EngineError::Attach(e) => e.hint(),
            _ => None,
        }
    }
}

/// Counters about the daemon itself (for logs and metrics).
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// Successful reloads (the initial load does not count).
    pub reloads_ok: u64,
    /// Rejected reloads.
    pub reloads_failed: u64,
    /// Wall-clock time of the last rejected reload.
    pub last_failure: Option<SystemTime>,
    /// Wall-clock time of the last successful publish.
    pub last_reload: Option<SystemTime>,
    /// Active epoch.
    pub epoch: u64,
    /// IPv4 prefixes loaded.
    pub v4_prefixes: usize,
    /// IPv6 prefixes loaded.
    pub v6_prefixes: usize,
    /// Last publish timing.
    pub last_publish: Option<PublishReport>,
    /// Last compile time.
    pub last_compile: Option<Duration>,
    /// Why the last reload was rejected, until one succeeds: the active rules are then not
    /// the file's.
    pub last_reload_error: Option<String>,
    /// [`config::content_hash`] of the rule file the active generation came from.
    pub config_hash: Option<u64>,
    /// Pins put back after they were removed by hand.
    pub pins_restored: u64,
    /// Interfaces attached again after their attachment was lost (detached by another
    /// tool, interface re-created, link updated to another program).
    pub links_restored: u64,
    /// Generations published, by what asked.
    pub publishes: BTreeMap<String, u64>,
}

/// A running filter: program, maps, pins, current rules.
pub struct Engine {
    filter: Filter,
    /// How the kernel runs `filter`'s program (decided by our privileges at load).
    variant: ProgramVariant,
    options: EngineOptions,
    slots: RuleSlots,
    /// The active generation's policy and tables (`None` before the first publish): the
    /// next reload compiles as an update of it.
    active: Option<Arc<Compiled>>,
    attached: Vec<Attached>,
    stats: EngineStats,
    features: KernelFeatures,
    egress_hook: EgressHook,
    /// Our own references on the pinned maps and links (see [`Engine::tend`]).
    holds: Holds,
    /// Id of the XDP program this engine attached.
    program_id: u32,
    /// The text of the rule file the active generation came from.
    active_text: Option<Arc<str>>,
    /// Its named sets and their sizes.
    active_sets: Vec<super::control::SetSummary>,
    /// The audit trail: the last [`HISTORY`] publishes and rejected reloads.
    history: std::collections::VecDeque<super::control::AuditEntry>,
    /// Requested interfaces the filter is not attached to, and why (what [`Engine::tend`]
    /// last found; logged when it changes).
    trouble: BTreeMap<String, String>,
    /// Why the active rules are not the rule file's although it loads: a confirmed change
    /// from it was rolled back.
    held_back: Option<String>,
}

/// Whether a publish may remove or change failsafe rules without the file acknowledging it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailsafeGuard {
    /// Refuse such a change (every reload).
    Check,
    /// Allow it: a rollback restores rules that were confirmed before.
    Skip,
}

/// Audit entries kept for `nodegate status`.
pub const HISTORY: usize = 16;

/// How often the daemon checks that its pins and attachments are still there.
pub const TEND_INTERVAL: Duration = Duration::from_secs(1);

/// Failsafe rules of `current` that `next` removes or changes (by name).
pub fn failsafe_changes(current: &Policy, next: &Policy) -> Vec<String> {
    let failsafe = |p: &Policy| -> Vec<Rule> {
        p.rules
            .iter()
            .filter(|r| r.kind == RuleKind::Failsafe)
            .cloned()
            .collect()
    };
    let next_failsafe = failsafe(next);
    failsafe(current)
        .into_iter()
        .filter(|old| !next_failsafe.contains(old))
        .map(|old| old.name)
        .collect()
}

/// A rule file made ready to publish.
pub struct Prepared {
    /// Its policy.
    pub policy: Policy,
    /// Its tables.
    pub tables: Tables,
    /// Read, validate and compile time.
    pub compile_time: Duration,
    /// [`config::content_hash`] of the bytes read.
    pub file_hash: Option<u64>,
    /// The text read.
    pub text: Option<Arc<str>>,
    /// Its named sets.
    pub sets: config::Sets,
}

/// Where a generation's rules come from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// The rule file, read now.
    File(&'a Path),
    /// Text kept from earlier (a confirmed change's previous or pending rules), named as
    /// the file it came from for diagnostics.
    Text {
        /// The file it came from.
        name: &'a Path,
        /// The rules.
        text: &'a str,
    },
}

impl Source<'_> {
    /// The file named in diagnostics.
    pub fn path(&self) -> &Path {
        match self {
            Source::File(path) | Source::Text { name: path, .. } => path,
        }
    }
}

/// Parse, validate and compile rules; nothing is touched.
pub fn prepare(
    source: Source<'_>,
    slots: &RuleSlots,
    previous: Option<Arc<Compiled>>,
    capacity: config::CapacityOverride,
) -> Result<Prepared, EngineError> {
    let start = Instant::now();
    // The front end's checks compile against the committed slots (as an update of the
    // active generation when there is one): their tables are the ones to publish.
    let kept = match previous {
        Some(_) => "the active rules are unchanged",
        None => "nothing was attached",
    };
    let opts = config::LoadOptions {
        capacity,
        slots: slots.clone(),
        previous,
        ..config::LoadOptions::system()
    };
    let loaded = match source {
        Source::File(path) => config::load_file_with(path, &opts),
        Source::Text { name, text } => {
            config::parse_str_with(&name.display().to_string(), text, &opts).map(|mut loaded| {
                loaded.file_hash = Some(config::content_hash(text.as_bytes()));
                loaded.text = Some(text.into());
                loaded
            })
        }
    }
    .map_err(|e| EngineError::Config {
        path: source.path().to_path_buf(),
        kept,
        source: e,
    })?;
    for warning in &loaded.warnings {
        warn!(%warning, "rule file warning");
    }
    Ok(Prepared {
        policy: loaded.policy,
        tables: loaded.tables,
        compile_time: start.elapsed(),
        file_hash: loaded.file_hash,
        text: loaded.text,
        sets: loaded.sets,
    })
}

/// The flow table's capacity is fixed when its map is created; a pinned table keeps it.
fn warn_flow_capacity(filter: &Filter, wanted: u32) {
    if let Ok(actual) = filter.maps().flow_capacity() {
        if actual != wanted {
            warn!(
                configured = wanted,
                actual,
                "return_traffic.capacity only applies when the flow table is created; the pinned table keeps {actual} entries until every interface is detached"
            );
        }
    }
}

/// The lookup tables' size is fixed when their maps are created; pinned tables keep it.
fn warn_table_capacity(filter: &Filter, wanted: crate::policy::PrefixCapacity) {
    let actual = filter.maps().table_words_per_gen();
    if actual != wanted.table_words_per_gen() {
        warn!(
            ipv4_prefixes = wanted.ipv4,
            ipv6_prefixes = wanted.ipv6,
            actual_v4_words = actual.0,
            actual_v6_words = actual.1,
            "`capacity` only applies when the lookup tables are created; the pinned tables keep their size until `nodegate unload` (a reload whose tables do not fit is rejected)"
        );
    }
}

impl Engine {
    /// Validate the rule file, then load (reusing pinned maps: counters and tables survive a
    /// restart), publish, and attach to every interface — adopting links a previous loader
    /// pinned with an atomic program swap. Nothing is attached when anything before fails.
    ///
    /// State pinned by the previous layout version is taken over in place
    /// ([`PinLayout::take_over_previous`]); a start that fails before its program is pinned
    /// gives it back its old name.
    pub fn start(options: EngineOptions) -> Result<Engine, EngineError> {
        check_attach_privileges()?;
        let mut taken_over = options.pins.take_over_previous()?;
        if let Some(t) = &taken_over {
            info!(
                from = %t.from.display(),
                to = %t.to.display(),
                "taking over the previous layout's pinned state in place; its program keeps enforcing until this one is swapped in on its links"
            );
        }
        let started = Self::start_on_pins(options, &mut taken_over);
        if let (Err(_), Some(t)) = (&started, taken_over) {
            let from = t.from.clone();
            match t.undo() {
                Ok(()) => {
                    info!(dir = %from.display(), "start failed: the previous layout's state has its old name back")
                }
                Err(e) => {
                    warn!(error = %e, "start failed and the previous layout's state could not be renamed back; the next `nodegate run` adopts it as it is")
                }
            }
        }
        started
    }

    /// [`Engine::start`] once the pin directory holds at most this layout's state;
    /// `taken_over` is cleared at the point after which the state belongs to this layout.
    fn start_on_pins(
        options: EngineOptions,
        taken_over: &mut Option<TakenOver>,
    ) -> Result<Engine, EngineError> {
        options.pins.check()?;
        options.pins.check_ownership()?;
        // Probe the kernel and validate the file before touching anything.
        let features = KernelFeatures::probe();
        info!(features = %features.summary(), "kernel features");
        features.require()?;
        let egress_hook = features.egress_hook(options.egress)?;
        info!(egress = %egress_hook, tcx = ?features.tcx, "egress flow recorder mechanism for new attachments");
        let first = prepare(
            options.start_source(),
            &RuleSlots::new(),
            None,
            options.capacity,
        )?
        .policy;
        // Every interface must be there and free (or ours) before the first pin or map
        // write: a failed start leaves the kernel as it found it.
        for ifname in &options.ifaces {
            crate::loader::attach::check_attachable(&options.pins, ifname, options.xdp_mode)?;
        }
        options.pins.create()?;
        let adopting = options.pins.has_state();
        let mut filter = Filter::load(&LoadOptions {
            map_pin_dir: Some(options.pins.maps_dir()),
            verbose_verifier: false,
            flow_capacity: Some(first.flows.capacity),
            prefix_capacity: Some(first.capacity),
            bpf_log_level: options.bpf_log_level,
            object: None,
        })?;
        let variant = ProgramVariant::of_this_process();
        match variant {
            ProgramVariant::Native => info!(variant = variant.name(), "XDP program loaded"),
            ProgramVariant::Hardened => warn!(
                variant = variant.name(),
                "XDP program loaded without CAP_PERFMON: the kernel hardens it against Spectre, \
                 measured 3 to 5 times slower per packet on 6.18 (docs/BENCHMARKS.md); grant CAP_PERFMON \
                 (Kubernetes: capabilities.add: [BPF, NET_ADMIN, PERFMON]) or run as root for full speed"
            ),
        }
        // NG_IFINDEX mirrors NG_IFACES; state taken over from layout 2 has only the hash,
        // and the program must find every registered interface before it goes live.
        filter.maps_mut().index_interfaces()?;
        warn_flow_capacity(&filter, first.flows.capacity);
        warn_table_capacity(&filter, first.capacity);
        let slots = RuleSlots::from_pairs(filter.maps().pinned_rule_slots());
        let prepared = prepare(options.start_source(), &slots, None, options.capacity)?;
        let holds = Holds::maps(&options.pins)?;
        let program_id =
            filter
                .program()
                .info()
                .map(|info| info.id())
                .map_err(|e| LoaderError::Program {
                    source: Box::new(e),
                    hint: "",
                })?;
        let mut engine = Engine {
            filter,
            variant,
            options,
            slots,
            active: None,
            attached: Vec::new(),
            stats: EngineStats::default(),
            features,
            egress_hook,
            holds,
            program_id,
            active_text: None,
            active_sets: Vec::new(),
            history: std::collections::VecDeque::new(),
            trouble: BTreeMap::new(),
            held_back: None,
        };
        // A previous layout's program must never read a generation this version publishes
        // (layout 5 misreads inline prefixes, layout 4 also tail records of several
        // prefixes, layout 3 also wider roots and wide nodes: `pins::ADOPTABLE_LAYOUTS`),
        // so on a
        // take-over this program goes live first, reading the previous layout's generation
        // (a format it understands), and publishes once the old program is off every CPU.
        let first_publish = if taken_over.is_some() {
            Some(prepared)
        } else {
            engine.apply(prepared, "start")?;
            None
        };
        // From here the pins change hands (program pin, then links): a failure leaves the
        // state in this layout, which the next start adopts.
        taken_over.take();
        engine.pin_program()?;
        for ifname in engine.options.ifaces.clone() {
            let attached = engine.filter.attach(
                &engine.options.pins,
                &ifname,
                engine.options.xdp_mode,
                engine.egress_hook,
            )?;
            if let Some(why) = &attached.fallback_reason {
                warn!(iface = %ifname, reason = %why, "driver-mode XDP is not available; fell back to generic mode, which runs later in the stack and is slower");
            }
            info!(iface = %ifname, ifindex = attached.ifindex, how = attached.how, egress = attached.egress, egress_hook = %attached.egress_hook, adopting, "attached");
            engine.hold_links(&attached)?;
            engine.attached.push(attached);
        }
        if let Some(prepared) = first_publish {
            // Packets that entered the previous layout's program before its links moved
            // finish inside one RCU grace period (`loader::grace`).
            let method = crate::loader::grace::synchronize();
            info!(grace = ?method, "the previous layout's program is off every CPU; publishing this version's first generation");
            engine.apply(prepared, "start")?;
        }
        for stale in engine.options.pins.pinned_links() {
            if !engine.options.ifaces.contains(&stale) {
                warn!(iface = %stale, "still attached from an earlier run but not in --iface; it keeps running this program's maps. `nodegate detach --iface {stale}` removes it");
            }
        }
        engine.warn_unattached_settings();
        Ok(engine)
    }

    /// Replace the pinned program with the one just loaded (links hold their own reference).
    fn pin_program(&mut self) -> Result<(), EngineError> {
        let path = self.options.pins.prog_path();
        if path.exists() {
            let _ = std::fs::remove_file(&path);
        }
        self.filter.program().pin(&path).map_err(|e| {
            EngineError::Pins(PinError::Io {
                action: "pin program at",
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })
        })?;
        // `stats` reads it from here; the pinned program is this loader's.
        self.options.pins.record_variant(self.variant)?;
        Ok(())
    }

    /// Take our own references on the links just attached (or adopted) for `attached`.
    fn hold_links(&mut self, attached: &Attached) -> Result<(), EngineError> {
        self.holds
            .hold_links(&attached.ifname, attached.ifindex)
            .map_err(|e| {
                EngineError::Attach(AttachError::Pin {
                    action: "hold",
                    ifname: attached.ifname.clone(),
                    detail: e.to_string(),
                })
            })
    }

    /// Put back what the world took away, every [`TEND_INTERVAL`] while the daemon runs.
    ///
    /// - A pin removed by hand (a link, a map, the program, or the whole pin directory) is
    ///   pinned again: the daemon holds its own references, so the filter never stopped.
    /// - A requested interface whose attachment is gone (interface deleted, re-created with
    ///   a new index, link detached by another tool, or updated to another program) is
    ///   attached again as `--iface` asks, in `--xdp-mode`, as soon as the interface exists
    ///   and its XDP slot is free. An XDP program someone else attached there is never
    ///   replaced: the interface stays unfiltered, and the daemon not ready, until it goes.
    ///
    /// Returns whether anything changed (pins restored, interfaces lost or attached).
    pub fn tend(&mut self) -> bool {
        let mut changed = self.restore_pins();
        for ifname in self.options.ifaces.clone() {
            changed |= self.tend_interface(&ifname);
        }
        changed
    }

    fn restore_pins(&mut self) -> bool {
        let mut restored = match self.holds.repin() {
            Ok(paths) => paths,
            Err(err) => {
                warn!("{err}; the filter keeps running on the daemon's own references");
                return false;
            }
        };
        if !self.options.pins.prog_path().exists() && self.pin_program().is_ok() {
            restored.push(self.options.pins.prog_path());
        }
        for path in &restored {
            warn!(pin = %path.display(), "a pin was removed by hand; pinned it again (the daemon holds its own references, so the filter never stopped)");
        }
        self.stats.pins_restored += restored.len() as u64;
        !restored.is_empty()
    }

    /// Check one requested interface and attach it again when its attachment is lost.
    fn tend_interface(&mut self, ifname: &str) -> bool {
        let mut changed = false;
        if let Some(trouble) = self.holds.link_trouble(ifname, self.program_id) {
            warn!(iface = %ifname, "{trouble}; attaching again");
            match trouble {
                LinkTrouble::Detached | LinkTrouble::Recreated { .. } => {
                    self.holds.drop_links(ifname);
                    if let Some(gone) = self.attached.iter().position(|a| a.ifname == ifname) {
                        let gone = self.attached.remove(gone);
                        self.filter.maps_mut().forget_iface(gone.ifindex);
                    }
                }
                // The XDP link is fine; the pinned one is adopted again below.
                LinkTrouble::Replaced { .. } => {}
                LinkTrouble::EgressDetached => self.holds.drop_egress(ifname),
            }
            changed = true;
        } else if self.holds.holds(ifname) {
            return self.note_trouble(ifname, None);
        }
        let result = self.filter.attach(
            &self.options.pins,
            ifname,
            self.options.xdp_mode,
            self.egress_hook,
        );
        let outcome = result.map_err(EngineError::from).and_then(|attached| {
            self.hold_links(&attached)?;
            Ok(attached)
        });
        match outcome {
            Ok(attached) => {
                info!(iface = %ifname, ifindex = attached.ifindex, how = attached.how, egress = attached.egress, "attached again");
                self.attached.retain(|a| a.ifname != ifname);
                self.attached.push(attached);
                self.stats.links_restored += 1;
                self.note_trouble(ifname, None);
                true
            }
            Err(err) => changed | self.note_trouble(ifname, Some(err.to_string())),
        }
    }

    /// Record why `ifname` is not attached (`None`: it is), logging changes only: a
    /// missing interface is retried every second without a line each time.
    fn note_trouble(&mut self, ifname: &str, why: Option<String>) -> bool {
        let before = self.trouble.get(ifname).cloned();
        if before == why {
            return false;
        }
        match &why {
            Some(why) => {
                warn!(iface = %ifname, "not filtering {ifname}: {why}; retrying every {}s", TEND_INTERVAL.as_secs());
                self.trouble.insert(ifname.to_string(), why.clone());
            }
            None => {
                self.trouble.remove(ifname);
            }
        }
        true
    }

    /// How the kernel runs the program this engine loaded.
    pub fn variant(&self) -> ProgramVariant {
        self.variant
    }

    /// Reload the rule file because `trigger` asked (recorded in the audit trail). On any
    /// error the active generation stays as it was.
    pub fn reload(&mut self, trigger: &str) -> Result<&PublishReport, EngineError> {
        let config = self.options.config.clone();
        match self.prepare(Source::File(&config)) {
            Ok(prepared) => self.publish(prepared, trigger, FailsafeGuard::Check),
            Err(err) => Err(self.rejected(trigger, err)),
        }
    }

    /// Parse, validate and compile `source` as the next generation; nothing is touched.
    pub fn prepare(&self, source: Source<'_>) -> Result<Prepared, EngineError> {
        prepare(
            source,
            &self.slots,
            self.active.clone(),
            self.options.capacity,
        )
    }

    /// Publish prepared rules because `trigger` asked. On any error the active generation
    /// stays as it was, and the rejection is counted and audited.
    pub fn publish(
        &mut self,
        prepared: Prepared,
        trigger: &str,
        guard: FailsafeGuard,
    ) -> Result<&PublishReport, EngineError> {
        let result = (|| {
            let policy = &prepared.policy;
            if guard == FailsafeGuard::Check {
                self.guard_failsafe(policy)?;
            }
            if policy.flows.capacity != self.policy().flows.capacity {
                warn_flow_capacity(&self.filter, policy.flows.capacity);
            }
            if policy.capacity != self.policy().capacity {
                warn_table_capacity(&self.filter, policy.capacity);
            }
            self.apply(prepared, trigger)
        })();
        match result {
            Ok(()) => Ok(self.stats.last_publish.as_ref().expect("set by apply")),
            Err(err) => Err(self.rejected(trigger, err)),
        }
    }

    /// Count, remember and audit a rejected reload.
    pub fn rejected(&mut self, trigger: &str, err: EngineError) -> EngineError {
        self.stats.reloads_failed += 1;
        self.stats.last_failure = Some(SystemTime::now());
        self.stats.last_reload_error = Some(err.to_string());
        self.audit(trigger, false, None, err.to_string());
        err
    }

    /// Record something that changed no generation (a confirmation) in the audit trail.
    pub fn note(&mut self, trigger: &str, detail: String) {
        let hash = self.stats.config_hash;
        self.audit(trigger, false, hash, detail);
        if let Some(entry) = self.history.back_mut() {
            entry.note = true;
        }
    }

    /// Hold the node not ready with `why` (a rolled-back change whose file is still there),
    /// or clear it (`None`).
    pub fn hold_back(&mut self, why: Option<String>) {
        self.held_back = why;
    }

    fn guard_failsafe(&self, next: &Policy) -> Result<(), EngineError> {
        let changed = failsafe_changes(self.policy(), next);
        if changed.is_empty() || next.acknowledge_failsafe_change {
            Ok(())
        } else {
            Err(EngineError::FailsafeChange {
                path: self.options.config.clone(),
                names: changed.join(", "),
            })
        }
    }

    fn audit(&mut self, trigger: &str, published: bool, hash: Option<u64>, detail: String) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(super::control::AuditEntry {
            at: SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            trigger: trigger.to_string(),
            published,
            epoch: self.stats.epoch,
            config_hash: hash.map(|h| format!("{h:016x}")),
            detail,
            note: false,
        });
    }

    /// The audit trail, oldest first.
    pub fn history(&self) -> Vec<super::control::AuditEntry> {
        self.history.iter().cloned().collect()
    }

    fn apply(&mut self, prepared: Prepared, trigger: &str) -> Result<(), EngineError> {
        let Prepared {
            policy,
            tables,
            compile_time,
            file_hash,
            text,
            sets,
        } = prepared;
        let report = self.filter.maps_mut().publish(&tables)?;
        self.slots.commit(&tables);
        let changes = crate::diff::summary(self.policy(), &policy);
        info!(
            epoch = report.epoch,
            trigger,
            changes = %changes,
            config_hash = %file_hash.map(|h| format!("{h:016x}")).unwrap_or_default(),
            writer = std::process::id(),
            slot = report.gen_slot,
            v4 = tables.stats.v4_prefixes,
            v6 = tables.stats.v6_prefixes,
            rules = tables.stats.rules,
            incremental = tables.incremental,
            compile_ms = compile_time.as_secs_f64() * 1e3,
            publish_ms = report.total.as_secs_f64() * 1e3,
            "rule generation active"
        );
        // The start is the first load, not a reload (publishes_total{trigger="start"} counts it).
        if trigger != "start" {
            self.stats.reloads_ok += 1;
        }
        *self.stats.publishes.entry(trigger.to_string()).or_default() += 1;
        self.stats.last_reload = Some(SystemTime::now());
        self.stats.epoch = report.epoch;
        self.stats.v4_prefixes = tables.stats.v4_prefixes;
        self.stats.v6_prefixes = tables.stats.v6_prefixes;
        self.stats.last_compile = Some(compile_time);
        self.stats.last_reload_error = None;
        self.stats.config_hash = file_hash;
        self.active_text = text;
        self.active_sets = sets
            .into_iter()
            .map(|(name, nets)| {
                let (ipv4, ipv6) = crate::policy::family_counts(&nets);
                super::control::SetSummary { name, ipv4, ipv6 }
            })
            .collect();
        self.stats.last_publish = Some(report);
        self.active = Some(Arc::new(Compiled { policy, tables }));
        self.audit(trigger, true, file_hash, changes);
        if !self.attached.is_empty() {
            self.warn_unattached_settings();
        }
        Ok(())
    }

    /// Settings under `interfaces:`, or rules scoped to an interface the filter does not run
    /// on apply to nothing: most likely a typo, or a file shared by nodes with other NICs.
    fn warn_unattached_settings(&self) {
        let running: Vec<String> = self
            .filter
            .maps()
            .interfaces()
            .into_iter()
            .filter_map(|(ifindex, _)| ifname(ifindex))
            .collect();
        for name in self.policy().named_interfaces() {
            if !running.iter().any(|r| r == name) {
                warn!(iface = %name, running = %running.join(","), "the rule file has settings or rules for interface {name}, but nodegate runs on no interface of that name; they apply to nothing until it is attached (`--iface {name}`)");
            }
        }
    }

    /// Daemon statistics.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The filter (maps, program).
    pub fn filter(&mut self) -> &mut Filter {
        &mut self.filter
    }

    /// Interfaces attached by this engine.
    pub fn attached(&self) -> &[Attached] {
        &self.attached
    }

    /// The active rule file's named sets and their sizes.
    pub fn active_sets(&self) -> &[super::control::SetSummary] {
        &self.active_sets
    }

    /// The text of the rule file the active generation came from.
    pub fn active_text(&self) -> Option<&str> {
        self.active_text.as_deref()
    }

    /// The rule file this engine reloads.
    pub fn config_path(&self) -> &Path {
        &self.options.config
    }

    /// Interfaces `--iface` asked for.
    pub fn requested_ifaces(&self) -> &[String] {
        &self.options.ifaces
    }

    /// Why the node is not as the operator asked (`None`: attached on every requested
    /// interface, with the rule file's current generation active): what `/readyz` answers.
    pub fn not_ready(&self) -> Option<String> {
        let missing: Vec<&str> = self
            .options
            .ifaces
            .iter()
            .filter(|i| !self.attached.iter().any(|a| &a.ifname == *i))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let why: Vec<String> = missing
                .iter()
                .map(|i| match self.trouble.get(*i) {
                    Some(why) => format!("{i} ({why})"),
                    None => (*i).to_string(),
                })
                .collect();
            return Some(format!("not attached on {}", why.join(", ")));
        }
        if let Some(err) = &self.stats.last_reload_error {
            return Some(format!(
                "the rule file's last reload was rejected, the previous rules are active: {err}"
            ));
        }
        self.held_back.clone()
    }

    /// The active policy (empty before the first publish).
    pub fn policy(&self) -> &Policy {
        static NONE: LazyLock<Policy> = LazyLock::new(|| Policy {
            rules: Vec::new(),
            ..Policy::default()
        });
        self.active.as_ref().map_or(&NONE, |a| &a.policy)
    }

    /// What the kernel offered at start.
    pub fn features(&self) -> &KernelFeatures {
        &self.features
    }
}

#[cfg(test)]
mod tests {
    use super::failsafe_changes;
    use crate::config::{parse_str_with, LoadOptions};

    const BASE: &str = "version: 1\nreturn_traffic: off\nfailsafe:\n  - {name: ssh, from: [10.0.0.0/24], protocol: tcp, ports: [22]}\n  - {name: api, from: [10.0.0.0/24], protocol: tcp, ports: [6443]}\nrules:\n  - {name: web, from: [192.0.2.0/24], protocol: tcp, ports: [443]}\n";

    fn policy(text: &str) -> crate::policy::Policy {
        parse_str_with("t.yaml", text, &LoadOptions::fixed_ephemeral(32768..=60999))
            .expect("valid")
            .policy
    }

    #[test]
    fn failsafe_guard_sees_removed_and_narrowed_failsafe_rules() {
        let base = policy(BASE);
        assert!(
            failsafe_changes(&base, &base).is_empty(),
            "an identical reload changes nothing"
        );
        let other_rules = policy(&BASE.replace("192.0.2.0/24", "198.51.100.0/24"));
        assert!(
            failsafe_changes(&base, &other_rules).is_empty(),
            "allow rules may change freely"
        );
        let removed = policy(&BASE.replace(
            "  - {name: api, from: [10.0.0.0/24], protocol: tcp, ports: [6443]}\n",
            "",
        ));
        assert_eq!(failsafe_changes(&base, &removed), vec!["api".to_string()]);
        let narrowed = policy(&BASE.replace(
            "[10.0.0.0/24], protocol: tcp, ports: [22]",
            "[10.0.0.0/25], protocol: tcp, ports: [22]",
        ));
        assert_eq!(failsafe_changes(&base, &narrowed), vec!["ssh".to_string()]);
        let acknowledged = policy(&format!(
            "acknowledge_failsafe_change: true\n{}",
            BASE.replace("ports: [22]", "ports: [2222]")
        ));
        assert!(acknowledged.acknowledge_failsafe_change, "the key is read");
    }
}
