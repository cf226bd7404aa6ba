//! `nodegate run` as a long-running daemon: start the [`Engine`], then reload on file
//! change, SIGHUP or `nodegate reload`, serve metrics and log drop samples, until SIGTERM or
//! SIGINT — which leave the filter attached and enforcing (only `nodegate detach` removes it).

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use super::{
    control::{self, Answer, ControlListener, Request},
    engine::{
        Engine, EngineError, EngineOptions, FailsafeGuard, Source as RulesFrom, TEND_INTERVAL,
    },
    established::{Connection, Established},
    metrics::{self, DaemonState, MetricsSource},
    notify,
    owner::{self, OwnerLock},
    rollout::{self, Cause, Driver},
    watch::ConfigWatcher,
};
use crate::{
    loader::{
        counters::Snapshot,
        pins::PinLayout,
        FilterMaps, LoaderError,
        {attach::XdpModeChoice, interfaces::iface_slots},
    },
    policy::{Policy, Rollout},
};

/// Everything `run` is told on the command line.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Rule file.
    pub config: PathBuf,
    /// Interfaces.
    pub ifaces: Vec<String>,
    /// XDP attach mode.
    pub xdp_mode: XdpModeChoice,
    /// How new egress recorders attach: TCX where the kernel has it, else clsact.
    pub egress: crate::loader::features::EgressChoice,
    /// Metrics address, `None` to disable.
    pub metrics: Option<SocketAddr>,
    /// Whether the metrics address was given explicitly (needed for non-loopback).
    pub metrics_explicit: bool,
    /// Pin layout.
    pub pins: PinLayout,
    /// PID file; `None`: `/run/nodegate/<pin dir>.pid` ([`pid_path`]).
    pub pid_file: Option<PathBuf>,
    /// Debounce for file changes.
    pub debounce: Duration,
    /// aya-log level of the programs (0 off … 5 trace), fixed at load.
    pub bpf_log_level: u8,
    /// `--ipv4-capacity/--ipv6-capacity`: replaces the file's `capacity:`.
    pub capacity: crate::config::CapacityOverride,
    /// How long to wait for another daemon that owns the pin directory to exit
    /// (`--owner-wait`; zero refuses at once).
    pub owner_wait: Duration,
    /// Where the owner lock lives ([`owner::RUN_DIR`]).
    pub run_dir: PathBuf,
}

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Start-up failed; nothing was attached.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Metrics could not be served.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// The config watcher failed.
    #[error(transparent)]
    Watch(#[from] super::watch::WatchError),
    /// Another daemon owns the pin directory, or its lock is unsafe.
    #[error(transparent)]
    Owner(#[from] owner::OwnerError),
    /// The control socket could not be set up.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// Signal handling or the PID file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl crate::hint::Hint for RunError {
    fn hint(&self) -> Option<&str> {
        match self {
            RunError::Engine(e) => e.hint(),
            RunError::Metrics(e) => e.hint(),
            RunError::Watch(e) => e.hint(),
            _ => None,
        }
    }
}

/// How long a count of the flow table's entries is reused, at least. Counting walks the
/// table, one syscall per entry: 146 ms for a full 65536-entry table, measured here in the
/// test build (`a_full_flow_table_is_counted_by_its_walk`); the largest capacity holds 16
/// times as many entries, and the walk grows with them.
const FLOW_COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// ...and at least this many times as long as the last walk took, so walking never takes
/// more than 1% of a core however large the table and however often someone scrapes.
const FLOW_COUNT_IDLE_FACTOR: u32 = 100;

/// The last count of the flow table's entries: when it was taken, how long it took, and
/// the count.
#[derive(Clone, Copy)]
struct FlowCount {
    at: std::time::Instant,
    took: std::time::Duration,
    entries: u64,
}

/// Metrics source: its own handles on the pinned maps, so scrapes never wait for a reload.
struct Source {
    maps: FilterMaps,
    state: Arc<Mutex<DaemonState>>,
    flow_count: Mutex<Option<FlowCount>>,
}

impl Source {
    /// Entries in the flow table, recounted when the last count is older than
    /// [`FLOW_COUNT_EVERY`] and [`FLOW_COUNT_IDLE_FACTOR`] times its walk.
    fn flow_entries(&self) -> Option<u64> {
        let mut cached = self.flow_count.lock().ok()?;
        if let Some(last) = *cached {
            let reuse_for = FLOW_COUNT_EVERY.max(last.took * FLOW_COUNT_IDLE_FACTOR);
            if last.at.elapsed() < reuse_for {
                return Some(last.entries);
            }
        }
        let at = std::time::Instant::now();
        let entries = self.maps.flow_counts().ok()?.entries;
        *cached = Some(FlowCount {
            at,
            took: at.elapsed(),
            entries,
        });
        Some(entries)
    }
}

impl MetricsSource for Source {
    fn snapshot(&self) -> Result<Snapshot, LoaderError> {
        self.maps.snapshot()
    }

    fn daemon_state(&self) -> DaemonState {
        let mut state = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        if let Ok((emitted, lost)) = self.maps.sample_counts() {
            state.samples_emitted = emitted;
            state.samples_lost = lost;
        }
        if let Ok(flows) = self.maps.flow_events() {
            state.flows_inserted = flows.inserts;
            state.flows_refreshed = flows.refreshes;
            state.flows_closing = flows.closing;
        }
        state.flow_capacity = self.maps.flow_capacity().ok();
        state.flow_entries = self.flow_entries();
        state
    }
}

fn refresh_state(engine: &mut Engine, state: &Mutex<DaemonState>) {
    let names: std::collections::HashMap<u32, String> = iface_slots(engine.filter().maps())
        .into_iter()
        .filter_map(|(ifindex, slot)| {
            engine
                .attached()
                .iter()
                .find(|a| a.ifindex == ifindex)
                .map(|a| (slot, a.ifname.clone()))
        })
        .collect();
    let policy = engine.policy();
    let settings = engine
        .attached()
        .iter()
        .map(|a| {
            let name = Some(a.ifname.as_str());
            (
                a.ifname.clone(),
                (policy.mode_on(name), policy.default_on(name)),
            )
        })
        .collect();
    let stats = engine.stats().clone();
    let kinds = rule_kinds(engine.policy());
    let tables = engine.filter().maps().table_usage().unwrap_or_default();
    let variant = engine.variant().name();
    let not_ready = engine.not_ready();
    let attached: std::collections::BTreeMap<String, Option<&'static str>> = engine
        .requested_ifaces()
        .iter()
        .map(|i| {
            let mode = engine.attached().iter().find(|a| &a.ifname == i);
            (i.clone(), mode.map(|a| a.xdp_mode))
        })
        .collect();
    if let Ok(mut s) = state.lock() {
        s.interfaces_attached = attached;
        s.pins_restored = stats.pins_restored;
        s.links_restored = stats.links_restored;
        s.not_ready = not_ready;
        s.program_variant = variant;
        s.tables = tables;
        s.interfaces = names;
        s.interface_settings = settings;
        s.rule_kinds = kinds;
        s.reloads_succeeded = stats.reloads_ok;
        s.publishes = stats.publishes;
        s.reloads_failed = stats.reloads_failed;
        s.active_generation = stats.epoch;
        s.prefixes_v4 = stats.v4_prefixes as u64;
        s.prefixes_v6 = stats.v6_prefixes as u64;
        s.last_reload = stats.last_reload;
        s.last_failure = stats.last_failure;
    }
}

fn rule_kinds(policy: &Policy) -> std::collections::HashMap<String, crate::policy::RuleKind> {
    policy
        .rules
        .iter()
        .map(|r| (r.name.clone(), r.kind))
        .collect()
}

/// Reload the rule file because `trigger` asked: at once, or on probation when the file
/// has a `rollout:` section.
async fn reload(
    engine: &mut Engine,
    driver: &mut Driver,
    state: &Mutex<DaemonState>,
    options: &RunOptions,
    trigger: &str,
) -> Answer {
    sd_notify(&notify::reloading_state());
    let answer = match engine.prepare(RulesFrom::File(&options.config)) {
        Err(err) => rejected(engine.rejected(trigger, err), engine, trigger),
        Ok(prepared) => {
            let hash = prepared.file_hash.map(|h| format!("{h:016x}"));
            let unchanged = trigger == FILE_CHANGE
                && engine.not_ready().is_none()
                && prepared.file_hash.is_some()
                && prepared.file_hash == engine.stats().config_hash;
            if unchanged {
                // A ConfigMap swap or a confirmed change written into the file: the
                // active generation already is this file.
                info!(
                    trigger,
                    "the rule file's content is unchanged; nothing to publish"
                );
                Answer {
                    ok: true,
                    epoch: engine.stats().epoch,
                    message: "unchanged".into(),
                }
            } else if trigger == FILE_CHANGE
                && hash.as_deref() == driver.refused_hash()
                && hash.is_some()
            {
                info!(trigger, "the rule file still holds the change that was rolled back; nothing to publish (`nodegate reload` tries it again)");
                Answer {
                    ok: false,
                    epoch: engine.stats().epoch,
                    message: "rolled back earlier; unchanged".into(),
                }
            } else if let Some(terms) = prepared.policy.rollout.clone() {
                driver
                    .begin(engine, prepared, &terms, trigger, &options.config, None)
                    .await
            } else {
                match engine.publish(prepared, trigger, FailsafeGuard::Check) {
                    Ok(report) => {
                        let answer = published(report, trigger);
                        driver.superseded(engine);
                        answer
                    }
                    Err(err) => rejected(err, engine, trigger),
                }
            }
        }
    };
    after_request(engine, driver, state, options, answer.ok);
    answer
}

/// The rule file's name for the watcher's trigger.
const FILE_CHANGE: &str = "file change";

fn published(report: &crate::loader::publish::PublishReport, trigger: &str) -> Answer {
    info!(
        trigger,
        epoch = report.epoch,
        table_words_written = report.table_words_written,
        grace_wait_ms = report.grace_wait.as_secs_f64() * 1e3,
        publish_ms = report.total.as_secs_f64() * 1e3,
        "reloaded"
    );
    Answer {
        ok: true,
        epoch: report.epoch,
        message: format!(
            "epoch {} active ({} table words written)",
            report.epoch, report.table_words_written
        ),
    }
}

fn rejected(err: EngineError, engine: &Engine, trigger: &str) -> Answer {
    error!(
        trigger,
        "reload rejected; the previous rules stay active: {err}"
    );
    Answer {
        ok: false,
        epoch: engine.stats().epoch,
        message: format!("reload rejected; the previous rules stay active: {err}"),
    }
}

/// `nodegate apply`: publish another file on probation.
async fn apply(
    engine: &mut Engine,
    driver: &mut Driver,
    state: &Mutex<DaemonState>,
    options: &RunOptions,
    request: control::ApplyRequest,
) -> Answer {
    sd_notify(&notify::reloading_state());
    let trigger = "nodegate apply";
    let answer = match engine.prepare(RulesFrom::File(&request.file)) {
        Err(err) => {
            let err = engine.rejected(trigger, err);
            Answer {
                ok: false,
                epoch: engine.stats().epoch,
                message: format!("not applied; the active rules are unchanged: {err}"),
            }
        }
        Ok(prepared) => {
            let same = |a: &std::path::Path, b: &std::path::Path| {
                a.canonicalize()
                    .ok()
                    .is_some_and(|a| b.canonicalize().ok() == Some(a))
            };
            let install_into =
                (!same(&request.file, &options.config)).then(|| options.config.clone());
            let terms = Rollout {
                confirm_within: Duration::from_secs(request.confirm_within_secs),
                probes: request.probes,
                watch_established: request.watch_established,
            };
            driver
                .begin(
                    engine,
                    prepared,
                    &terms,
                    trigger,
                    &request.file,
                    install_into,
                )
                .await
        }
    };
    after_request(engine, driver, state, options, answer.ok);
    answer
}

/// After anything that may have published: record the active text, refresh metrics and
/// readiness, tell systemd we are back.
fn after_request(
    engine: &mut Engine,
    driver: &Driver,
    state: &Mutex<DaemonState>,
    options: &RunOptions,
    published: bool,
) {
    record_state(engine, driver, state, options, published);
    sd_notify("READY=1");
}

/// Record the active text (when `published`) and refresh metrics and readiness.
fn record_state(
    engine: &mut Engine,
    driver: &Driver,
    state: &Mutex<DaemonState>,
    options: &RunOptions,
    published: bool,
) {
    if published {
        record_active_rules(options, engine);
    }
    refresh_state(engine, state);
    if let Ok(mut s) = state.lock() {
        s.rollouts = driver.counts();
    }
}

/// The daemon's own account of itself, for `nodegate status`.
fn daemon_status(
    engine: &mut Engine,
    driver: &Driver,
    recent: &Mutex<control::RecentDrops>,
) -> control::DaemonStatus {
    let stats = engine.stats().clone();
    control::DaemonStatus {
        pid: std::process::id(),
        config: engine.config_path().to_path_buf(),
        config_hash: stats.config_hash.map(|h| format!("{h:016x}")),
        epoch: stats.epoch,
        published_at: stats
            .last_reload
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        reloads_ok: stats.reloads_ok,
        reloads_failed: stats.reloads_failed,
        last_reload_error: stats.last_reload_error,
        interfaces: engine
            .attached()
            .iter()
            .map(|a| (a.ifname.clone(), a.how.to_string()))
            .collect(),
        requested: engine.requested_ifaces().to_vec(),
        program_variant: engine.variant().name().to_string(),
        rules: engine
            .policy()
            .rules
            .iter()
            .map(|r| {
                let (ipv4_sources, ipv6_sources) = crate::policy::family_counts(&r.sources);
                control::RuleSummary {
                    name: r.name.clone(),
                    kind: r.kind.name().to_owned(),
                    ipv4_sources,
                    ipv6_sources,
                }
            })
            .collect(),
        not_ready: engine.not_ready(),
        history: engine.history(),
        sets: engine.active_sets().to_vec(),
        rollout: driver.status(),
        recent_drops: recent.lock().map(|r| r.list()).unwrap_or_default(),
    }
}

/// Tell systemd (when it runs us with `NOTIFY_SOCKET`) what we are doing.
fn sd_notify(state: &str) {
    if let Err(err) = notify::notify(state) {
        warn!("cannot notify systemd ({state:?}): {err}");
    }
}

/// Log drop samples from the pinned ring as structured lines, naming rule and interface,
/// and relay each to the `nodegate observe` subscribers of `relay`; a sample of a
/// connection in `watch` (a confirmed change's established connections) is also sent to
/// `cuts`.
fn spawn_sample_logger(
    pins: &PinLayout,
    watch: Arc<Mutex<Option<Established>>>,
    cuts: tokio::sync::mpsc::Sender<Connection>,
    recent: Arc<Mutex<control::RecentDrops>>,
    relay: tokio::sync::broadcast::Sender<super::observe::Observed>,
) -> Option<tokio::task::JoinHandle<()>> {
    let path = pins.maps_dir().join(filter_common::MAP_SAMPLES);
    let ring = aya::maps::MapData::from_pin(&path)
        .ok()
        .and_then(|data| aya::maps::Map::from_map_data(data).ok())
        .and_then(|map| aya::maps::RingBuf::try_from(map).ok());
    let Some(ring) = ring else {
        warn!(path = %path.display(), "cannot open the drop-sample ring; drops are still counted, not sampled");
        return None;
    };
    let mut reader = match super::samples::SampleReader::new(ring) {
        Ok(r) => r,
        Err(err) => {
            warn!("drop samples unavailable: {err}");
            return None;
        }
    };
    let mut namer = super::observe::SampleNamer::pinned(pins);
    Some(tokio::spawn(async move {
        loop {
            let sample = match reader.recv().await {
                Ok(sample) => sample,
                Err(err) => {
                    warn!("drop-sample logging stopped: {err}");
                    return;
                }
            };
            let cut = watch
                .lock()
                .ok()
                .and_then(|w| w.as_ref().and_then(|w| w.cut_by(&sample)));
            if let Some(conn) = cut {
                // Full: a rollback is already on its way.
                let _ = cuts.try_send(conn);
            }
            if let (Some(src), false) = (sample.src, sample.monitor) {
                if let Ok(mut recent) = recent.lock() {
                    recent.record(control::SeenPacket {
                        src,
                        proto: sample.proto,
                        port: sample.dport,
                    });
                }
            }
            let observed = namer.observe(&sample);
            sample.log(observed.rule.as_deref(), Some(&observed.interface));
            // No subscriber is the usual case, not an error.
            let _ = relay.send(observed);
        }
    }))
}

/// Forward the programs' aya-log records (error and load-time diagnostics) into our logs.
fn spawn_bpf_logger(engine: &mut Engine) -> Option<tokio::task::JoinHandle<()>> {
    let logger = engine.filter().take_bpf_logger()?;
    // SAFETY: the logger owns its ring's map fd for as long as the AsyncFd owns the logger,
    // and `as_raw_fd` always returns that same descriptor.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(err) => {
            warn!("cannot poll the programs' log ring: {}", err.into_parts().1);
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}

/// The default PID file of the daemon owning `pins`: beside its owner lock.
pub fn pid_path(run_dir: &std::path::Path, pins: &PinLayout) -> PathBuf {
    OwnerLock::path_for(run_dir, pins).with_extension("pid")
}

/// The PID file while we own the pin directory: removed when dropped, on a failed start
/// as on a clean exit (before the owner lock goes).
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &std::path::Path) -> std::io::Result<PidFile> {
        write_pid_file(path)?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Write our PID to `path` atomically and without following a symlink there.
fn write_pid_file(path: &std::path::Path) -> std::io::Result<()> {
    write_replacing(path, format!("{}\n", std::process::id()).as_bytes(), 0o644)
}

/// Where the daemon owning `pins` records the text of the rule file its active generation
/// came from (`nodegate diff` compares against it, daemon or not).
pub fn active_rules_path(run_dir: &std::path::Path, pins: &PinLayout) -> PathBuf {
    OwnerLock::path_for(run_dir, pins).with_extension("active.yaml")
}

/// Record the active generation's rule file text (owner-only: it may name internal
/// ranges). A failure costs only `diff`'s default baseline, so it is logged, not fatal.
fn record_active_rules(options: &RunOptions, engine: &Engine) {
    let Some(text) = engine.active_text() else {
        return;
    };
    let path = active_rules_path(&options.run_dir, &options.pins);
    if let Err(err) = write_replacing(&path, text.as_bytes(), 0o600) {
        warn!(path = %path.display(), "cannot record the active rules for `nodegate diff`: {err}");
    }
}

/// Write `bytes` to `path` atomically and without following a symlink there: a temporary
/// file created exclusively beside it, renamed over it (a rename replaces a symlink, it
/// does not write through it).
pub(crate) fn write_replacing(
    path: &std::path::Path,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    file.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

/// Run until SIGTERM/SIGINT.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    if let Some(addr) = options.metrics {
        metrics::check_bind_addr(addr, options.metrics_explicit)?;
    }
    let io = |what: &str| {
        let what = what.to_string();
        move |source| RunError::Io { what, source }
    };
    // One owner per pin directory, before anything is written. Taken before the signal
    // handlers: a start that waits for the owner still dies on SIGTERM.
    let _owner = OwnerLock::acquire(&options.run_dir, &options.pins, options.owner_wait)?;
    let pid_path = options
        .pid_file
        .clone()
        .unwrap_or_else(|| pid_path(&options.run_dir, &options.pins));
    let _pid_file = PidFile::write(&pid_path).map_err(io("write the PID file"))?;
    // Bound now, served once the maps exist: a taken port must fail the start before the
    // first map write.
    let listener = options.metrics.map(metrics::bind).transpose()?;
    let control_path = control::socket_path(&options.run_dir, &options.pins);
    let control = ControlListener::bind(&control_path)?;
    let mut requests = control.spawn();
    // Signals first, so a SIGHUP during start-up is not fatal.
    let mut hup = signal(SignalKind::hangup()).map_err(io("install SIGHUP handler"))?;
    let mut term = signal(SignalKind::terminate()).map_err(io("install SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("install SIGINT handler"))?;

    // Watch before the engine reads the file, so a change in between is not missed.
    let mut watcher = ConfigWatcher::with_debounce(&options.config, options.debounce)?;
    let mut driver = Driver::load(
        rollout::state_path(&options.run_dir, &options.pins),
        options.config.clone(),
    );
    let start_text = driver.start_text();
    let mut engine = Engine::start(EngineOptions {
        config: options.config.clone(),
        ifaces: options.ifaces.clone(),
        xdp_mode: options.xdp_mode,
        egress: options.egress,
        pins: options.pins.clone(),
        bpf_log_level: options.bpf_log_level,
        capacity: options.capacity,
        start_text,
    })?;
    driver.started(&mut engine);
    let state = Arc::new(Mutex::new(DaemonState::default()));
    // systemd hears READY once everything below serves.
    record_state(&mut engine, &driver, &state, &options, true);

    let _metrics = match listener {
        Some(listener) => {
            let addr = listener
                .local_addr()
                .map_err(io("read the metrics address"))?;
            let maps =
                FilterMaps::open_pinned(&options.pins.maps_dir()).map_err(EngineError::from)?;
            let handle = metrics::serve_listener(
                listener,
                Arc::new(Source {
                    maps,
                    state: state.clone(),
                    flow_count: Mutex::new(None),
                }),
            )?;
            info!(%addr, "serving Prometheus metrics at /metrics");
            Some(handle)
        }
        None => None,
    };
    let (cuts_tx, mut cuts) = tokio::sync::mpsc::channel(4);
    let recent = Arc::new(Mutex::new(control::RecentDrops::default()));
    let (relay, _) = tokio::sync::broadcast::channel(super::observe::RELAY_CAPACITY);
    let _samples = spawn_sample_logger(
        &options.pins,
        driver.watch_handle(),
        cuts_tx,
        recent.clone(),
        relay.clone(),
    );
    let _bpf_log = spawn_bpf_logger(&mut engine);
    info!(config = %options.config.display(), "running; reloads on file change, SIGHUP or `nodegate reload`");
    sd_notify("READY=1\nSTATUS=running");
    let mut tend = tokio::time::interval(TEND_INTERVAL);
    tend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            changed = watcher.changed() => match changed {
                Ok(()) => {
                    reload(&mut engine, &mut driver, &state, &options, FILE_CHANGE).await;
                }
                Err(err) => warn!(hint = crate::hint::of(&err), "config watcher: {err}; SIGHUP still reloads"),
            },
            _ = hup.recv() => {
                reload(&mut engine, &mut driver, &state, &options, "SIGHUP").await;
            }
            Some((mut stream, request)) = requests.recv() => {
                let answer = match request {
                    Request::Status => {
                        let _ = control::reply(&mut stream, &daemon_status(&mut engine, &driver, &recent)).await;
                        continue;
                    }
                    Request::Observe => {
                        tokio::spawn(super::observe::relay(stream, relay.subscribe()));
                        continue;
                    }
                    Request::ReloadNoWait => {
                        let queued = Answer {
                            ok: true,
                            epoch: engine.stats().epoch,
                            message: "reload queued".into(),
                        };
                        let _ = control::reply(&mut stream, &queued).await;
                        reload(&mut engine, &mut driver, &state, &options, "nodegate reload").await;
                        continue;
                    }
                    Request::Reload => {
                        reload(&mut engine, &mut driver, &state, &options, "nodegate reload").await
                    }
                    Request::Apply(request) => {
                        apply(&mut engine, &mut driver, &state, &options, request).await
                    }
                    Request::Confirm => {
                        let answer = driver.confirm(&mut engine, "nodegate confirm");
                        after_request(&mut engine, &driver, &state, &options, false);
                        answer
                    }
                    Request::Rollback => {
                        let answer = driver.roll_back(&mut engine, Cause::Operator, "`nodegate rollback`".into());
                        after_request(&mut engine, &driver, &state, &options, answer.ok);
                        answer
                    }
                };
                let _ = control::reply(&mut stream, &answer).await;
            }
            Some(conn) = cuts.recv() => {
                if let Some(answer) = driver.cut(&mut engine, conn) {
                    after_request(&mut engine, &driver, &state, &options, answer.ok);
                }
            }
            _ = tend.tick() => {
                let repaired = engine.tend();
                if driver.tick(&mut engine).await {
                    after_request(&mut engine, &driver, &state, &options, true);
                } else if repaired {
                    refresh_state(&mut engine, &state);
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    sd_notify("STOPPING=1");
    // While we still own the pin directory: the listener task only ends with the runtime,
    // after the lock is gone.
    let _ = std::fs::remove_file(&control_path);
    match engine.not_ready() {
        None => info!("exiting; the filter stays attached with the active rules (`nodegate detach --iface IF` removes it)"),
        Some(why) => warn!("exiting; {why}: the filter stays as it is, a new `nodegate run` attaches again"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_file_replaces_a_planted_symlink_and_goes_with_its_guard() {
        let dir = std::env::temp_dir().join(format!("ng-pidfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let path = dir.join("nodegate.pid");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let guard = PidFile::write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(guard);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
