//! Live replay: frames go out of one end of a veth pair at full rate, injected by an XDP
//! live-frames generator (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` running an
//! `XDP_TX` program on the sending end), and arrive at the XDP hook of the other end, where
//! the filter judges them for real. Where the kernel refuses live-frames mode, the
//! generator sends the same copies through an AF_PACKET socket instead (`sockgen.rs`) and
//! says so ([`Generator::engine`]).
//!
//! NB: a frame sent with `XDP_TX` into a veth is only delivered when the receiving end has
//! an XDP program attached (veth only runs its NAPI receive path then); every receiver in
//! this module has one. Frames the receiving ring cannot take are dropped by veth before any
//! program sees them: *delivered* counts what the receiver processed.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::rawbpf::RawProgram;
use crate::{
    lab::{in_netns, ip, Lab, LabAddrs, LabError},
    loader::{counters::Snapshot, LoaderError},
};

/// Why a live replay failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Lab set-up or namespace entry failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// The generator or a raw program failed.
    #[error("live-frames generator: {0}")]
    Generator(#[source] std::io::Error),
    /// The filter could not be loaded, published, attached or read.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Attaching the filter failed.
    #[error("attaching the filter to {iface}: {source}")]
    Attach {
        /// Interface.
        iface: String,
        /// aya's error.
        source: aya::programs::ProgramError,
    },
    /// The replay itself could not be set up.
    #[error(transparent)]
    Replay(#[from] super::ReplayError),
    /// SIGINT or SIGTERM arrived (see [`stop_on_signal`]); everything was cleaned up.
    #[error("stopped by a signal")]
    Stopped,
    /// Interface statistics could not be read.
    #[error("cannot read statistics of {iface}: {detail}")]
    Stats {
        /// Interface.
        iface: String,
        /// What went wrong.
        detail: String,
    },
}

impl crate::hint::Hint for LiveError {
    fn hint(&self) -> Option<&str> {
        match self {
            LiveError::Lab(e) => e.hint(),
            LiveError::Loader(e) => e.hint(),
            _ => None,
        }
    }
}

/// How to send.
#[derive(Clone, Copy, Debug)]
pub struct LiveOptions {
    /// Times the whole capture is sent.
    pub loops: u64,
    /// Target rate in frames per second; `None` sends as fast as the generator can.
    pub rate: Option<u64>,
    /// Frames the kernel handles per generator batch (`batch_size` of the test run).
    pub batch: u32,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            loops: 1,
            rate: None,
            batch: 64,
        }
    }
}

/// Most consecutive copies of one frame per generator call.
pub const MAX_BURST: u64 = 1 << 22;

/// From this many loops on, each frame is sent in bursts (copies back to back, one call per
/// burst) instead of one call per frame.
///
/// NB: a `BPF_PROG_TEST_RUN` with `repeat > 1` switches the kernel's XDP dispatcher to the
/// program and back (`bpf_prog_change_xdp` in `net/bpf/test_run.c`), which waits for RCU
/// grace periods: about 26 ms per call here, against about 27 µs for a call with
/// `repeat == 1`. Bursts pay off from about a thousand copies; below that, frames go one
/// call each, in exact capture order, at a few tens of thousands of frames per second.
pub const BURST_FROM_LOOPS: u64 = 1000;

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Make SIGINT and SIGTERM stop a running [`Generator::send`] after its current call instead
/// of killing the process, so the lab, the attached programs and the peers' state are torn
/// down by their guards. Idempotent.
pub fn stop_on_signal() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, request_stop as *const () as libc::sighandler_t) };
    }
}

/// Whether a stop was requested by a signal (see [`stop_on_signal`]).
pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::Relaxed)
}

/// The generator bound to one interface.
pub struct Generator {
    engine: Engine,
    ifindex: u32,
}

/// How the generator puts copies on the wire.
enum Engine {
    /// `BPF_PROG_TEST_RUN` live-frames mode with an `XDP_TX` program: copies made and sent
    /// inside the kernel, batch by batch.
    LiveFrames(RawProgram),
    /// An AF_PACKET socket, where the kernel refuses live-frames mode.
    PacketSocket(std::cell::RefCell<super::sockgen::SocketSender>),
}

/// [`Generator::engine`] of the live-frames engine.
pub const LIVE_FRAMES: &str = "xdp-live-frames";
/// [`Generator::engine`] of the AF_PACKET engine.
pub const PACKET_SOCKET: &str = "af-packet";

/// What a send loop did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sent {
    /// Frames handed to the generator.
    pub frames: u64,
    /// Wall-clock time of the send loop.
    pub elapsed: Duration,
    /// Time inside the kernel's generator loops (mean time per copy × copies): the send
    /// loop without syscall entry and the XDP dispatcher switching that every call with
    /// more than one copy costs (see [`BURST_FROM_LOOPS`]). The AF_PACKET engine has no
    /// such loop: its wall time.
    pub kernel: Duration,
    /// Which engine sent ([`LIVE_FRAMES`] or [`PACKET_SOCKET`]).
    pub engine: &'static str,
}

impl Generator {
    /// A generator sending out of `ifindex` of the namespace the caller is in (and will
    /// send from): live frames where the kernel allows them, else an AF_PACKET socket.
    pub fn new(ifindex: u32) -> Result<Generator, LiveError> {
        let prog = RawProgram::transmit().map_err(LiveError::Generator)?;
        Generator::with(prog, ifindex, &[])
    }

    /// A generator that sends every copy from another source of `stamps` (`rawgen`): IPv4
    /// TCP frames only. The live-frames engine picks each copy's source at random; the
    /// AF_PACKET one walks the table so that every source comes once per round.
    pub fn rewriting_sources(
        ifindex: u32,
        stamps: &[super::rawgen::SourceStamp],
    ) -> Result<Generator, LiveError> {
        let prog = super::rawgen::load(stamps).map_err(LiveError::Generator)?;
        Generator::with(prog, ifindex, stamps)
    }

    /// The AF_PACKET engine whatever the kernel allows (to test and compare it).
    pub fn packet_socket(
        ifindex: u32,
        stamps: &[super::rawgen::SourceStamp],
    ) -> Result<Generator, LiveError> {
        let sender =
            super::sockgen::SocketSender::open(ifindex, stamps).map_err(LiveError::Generator)?;
        Ok(Generator {
            engine: Engine::PacketSocket(std::cell::RefCell::new(sender)),
            ifindex,
        })
    }

    /// `prog` in live-frames mode if the kernel runs it so, else the AF_PACKET engine.
    fn with(
        prog: RawProgram,
        ifindex: u32,
        stamps: &[super::rawgen::SourceStamp],
    ) -> Result<Generator, LiveError> {
        if prog.live_frames_allowed().map_err(LiveError::Generator)? {
            return Ok(Generator {
                engine: Engine::LiveFrames(prog),
                ifindex,
            });
        }
        tracing::info!(
            "the kernel refuses BPF_PROG_TEST_RUN live-frames mode (EPERM): sending through \
             an AF_PACKET socket instead, at a lower rate"
        );
        Generator::packet_socket(ifindex, stamps)
    }

    /// Which engine sends: [`LIVE_FRAMES`] or [`PACKET_SOCKET`].
    pub fn engine(&self) -> &'static str {
        match self.engine {
            Engine::LiveFrames(_) => LIVE_FRAMES,
            Engine::PacketSocket(_) => PACKET_SOCKET,
        }
    }

    /// Send `copies` copies of `frame` (live frames: `batch` per kernel batch); the time
    /// inside the kernel's generator loop.
    fn send_copies(&self, frame: &[u8], copies: u64, batch: u32) -> Result<Duration, LiveError> {
        match &self.engine {
            Engine::LiveFrames(prog) => {
                let run = prog
                    .run_live(frame, copies as u32, batch, self.ifindex)
                    .map_err(LiveError::Generator)?;
                Ok(run.duration * copies as u32)
            }
            Engine::PacketSocket(sender) => {
                let start = Instant::now();
                sender
                    .borrow_mut()
                    .send(frame, copies)
                    .map_err(LiveError::Generator)?;
                Ok(start.elapsed())
            }
        }
    }

    /// Send `frames` `opts.loops` times. Must run in the network namespace of the interface
    /// (see [`in_netns`]). `progress` is called with the frames sent so far.
    pub fn send(
        &self,
        frames: &[&[u8]],
        opts: &LiveOptions,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Sent, LiveError> {
        let start = Instant::now();
        let mut sent = 0u64;
        let mut kernel = Duration::ZERO;
        let pace = |sent: u64| {
            if let Some(rate) = opts.rate {
                let due = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
                let now = start.elapsed();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
        };
        let frames: Vec<&[u8]> = frames
            .iter()
            .copied()
            .filter(|f| f.len() >= super::MIN_FRAME)
            .collect();
        if opts.loops >= BURST_FROM_LOOPS {
            // Bursts: copies of one frame back to back, frames in capture order.
            let burst_cap = match opts.rate {
                Some(rate) => (rate / 10).clamp(BURST_FROM_LOOPS, MAX_BURST),
                None => MAX_BURST,
            };
            let mut remaining = opts.loops;
            while remaining > 0 {
                let burst = remaining.min(burst_cap);
                for frame in &frames {
                    if stop_requested() {
                        return Err(LiveError::Stopped);
                    }
                    kernel += self.send_copies(frame, burst, opts.batch)?;
                    sent += burst;
                    pace(sent);
                }
                remaining -= burst;
                progress(sent);
            }
        } else {
            // One call per frame: exact capture order, every loop.
            for _ in 0..opts.loops {
                for (i, frame) in frames.iter().enumerate() {
                    if stop_requested() {
                        return Err(LiveError::Stopped);
                    }
                    kernel += self.send_copies(frame, 1, opts.batch)?;
                    sent += 1;
                    pace(sent);
                    if i % 1024 == 0 {
                        progress(sent);
                    }
                }
            }
            progress(sent);
        }
        Ok(Sent {
            frames: sent,
            elapsed: start.elapsed(),
            kernel,
            engine: self.engine(),
        })
    }
}

/// Packets a receiving interface processed (its `rx_packets`, which for veth counts every
/// frame its XDP program saw, whatever the verdict).
pub fn rx_packets(netns: &str, iface: &str) -> Result<u64, LiveError> {
    let out = ip(&["-n", netns, "-s", "-j", "link", "show", "dev", iface])?;
    let stats_err = |detail: String| LiveError::Stats {
        iface: iface.to_string(),
        detail,
    };
    let json: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| stats_err(e.to_string()))?;
    json.get(0)
        .and_then(|l| l.get("stats64"))
        .and_then(|s| s.get("rx"))
        .and_then(|rx| rx.get("packets"))
        .and_then(|p| p.as_u64())
        .ok_or_else(|| stats_err("no stats64.rx.packets in `ip -s -j link` output".into()))
}

/// Wait until a counter stops moving (the receiver drained its ring), at most `limit`.
pub fn settle(
    mut read: impl FnMut() -> Result<u64, LiveError>,
    limit: Duration,
) -> Result<u64, LiveError> {
    let start = Instant::now();
    let mut last = read()?;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = read()?;
        if now == last || start.elapsed() > limit {
            return Ok(now);
        }
        last = now;
    }
}

/// Per-reason result of a live replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LiveReport {
    /// Which engine sent ([`LIVE_FRAMES`] or [`PACKET_SOCKET`]).
    pub generator: &'static str,
    /// Frames the generator sent.
    pub sent: u64,
    /// Frames the filter judged.
    pub delivered: u64,
    /// Frames it passed.
    pub passed: u64,
    /// Frames it dropped.
    pub dropped: u64,
    /// Frames it passed that it would have dropped if enforcing (monitor mode); part of
    /// `passed`.
    pub would_drop: u64,
    /// Frames per reason, monitor-mode would-drops not included.
    pub reasons: BTreeMap<String, u64>,
    /// Monitor-mode would-drops per reason.
    pub would_drop_reasons: BTreeMap<String, u64>,
    /// Frames per deciding rule.
    pub rules: BTreeMap<String, u64>,
    /// Send loop wall-clock time.
    pub elapsed: Duration,
    /// Delivered frames per second, in millions.
    pub mpps: f64,
}

impl LiveReport {
    /// Build from counter snapshots before and after.
    pub fn from_snapshots(before: &Snapshot, after: &Snapshot, sent: &Sent) -> LiveReport {
        let mut report = LiveReport {
            generator: sent.engine,
            sent: sent.frames,
            elapsed: sent.elapsed,
            ..Default::default()
        };
        let mut old: BTreeMap<(&str, bool), u64> = BTreeMap::new();
        for r in &before.reasons {
            *old.entry((r.reason, r.would_drop)).or_default() += r.packets;
        }
        for r in &after.reasons {
            let k = (r.reason, r.would_drop);
            let delta = r.packets - old.get(&k).copied().unwrap_or(0).min(r.packets);
            old.insert(k, r.packets);
            if delta == 0 {
                continue;
            }
            let by_reason = if r.would_drop {
                report.would_drop += delta;
                &mut report.would_drop_reasons
            } else {
                &mut report.reasons
            };
            *by_reason.entry(r.reason.to_owned()).or_default() += delta;
            report.delivered += delta;
            let drop = filter_common::Reason::from_name(r.reason).is_some_and(|x| x.is_drop())
                && !r.would_drop;
            if drop {
                report.dropped += delta;
            } else {
                report.passed += delta;
            }
        }
        let mut old_rules: BTreeMap<(u32, bool), u64> = BTreeMap::new();
        for r in &before.rules {
            old_rules.insert((r.slot, r.would_drop), r.packets);
        }
        for r in &after.rules {
            let delta = r.packets
                - old_rules
                    .get(&(r.slot, r.would_drop))
                    .copied()
                    .unwrap_or(0)
                    .min(r.packets);
            if delta > 0 {
                *report.rules.entry(r.name.clone()).or_default() += delta;
            }
        }
        let secs = sent.elapsed.as_secs_f64();
        report.mpps = if secs > 0.0 {
            report.delivered as f64 / secs / 1e6
        } else {
            0.0
        };
        report
    }
}

/// Replay `frames` in a private lab: two fresh network namespaces joined by a veth pair,
/// `policy` loaded and attached (driver mode) on the node end, the generator on the peer
/// end. Everything is deleted again when this returns, also on error.
pub fn replay_in_lab(
    policy: &crate::policy::Policy,
    frames: &[&[u8]],
    opts: &LiveOptions,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<LiveReport, LiveError> {
    let mut loaded = super::LoadedPolicy::load(policy)?;
    let lab = Lab::new("rpl", LabAddrs::default())?;
    let node_ifindex = lab.node_ifindex()?;
    let node_if = lab.node_if.clone();
    let program = loaded.filter.program();
    let link = in_netns(&lab.node_ns, || {
        program.attach_to_if_index(node_ifindex, aya::programs::XdpMode::Driver)
    })?
    .map_err(|source| LiveError::Attach {
        iface: node_if.clone(),
        source,
    })?;
    let result = (|| {
        let before = loaded.filter.maps().snapshot()?;
        let peer_ifindex = in_netns(&lab.peer_ns, || {
            crate::loader::attach::ifindex(&lab.peer_if)
        })?
        .ok_or_else(|| LiveError::Stats {
            iface: lab.peer_if.clone(),
            detail: "no such interface".into(),
        })?;
        let sent = in_netns(&lab.peer_ns, || -> Result<Sent, LiveError> {
            let generator = Generator::new(peer_ifindex)?;
            generator.send(frames, opts, progress)
        })??;
        let maps = loaded.filter.maps();
        settle(
            || Ok(maps.snapshot()?.reasons.iter().map(|r| r.packets).sum()),
            Duration::from_secs(2),
        )?;
        let after = maps.snapshot()?;
        Ok(LiveReport::from_snapshots(&before, &after, &sent))
    })();
    let _ = loaded.filter.program().detach(link);
    drop(lab);
    result
}

/// Replay `frames` out of an existing interface `iface` (in network namespace `netns`, or
/// the current one), e.g. one end of a veth pair whose other end runs `nodegate run`.
/// With `maps` (the pinned maps of that filter) the report has per-reason counts;
/// without, only `sent` and a rate over sent frames.
pub fn replay_on_iface(
    iface: &str,
    netns: Option<&str>,
    maps: Option<&crate::loader::FilterMaps>,
    frames: &[&[u8]],
    opts: &LiveOptions,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<LiveReport, LiveError> {
    let mut send = || -> Result<Sent, LiveError> {
        let ifindex = crate::loader::attach::ifindex(iface).ok_or_else(|| LiveError::Stats {
            iface: iface.to_string(),
            detail: "no such interface".into(),
        })?;
        Generator::new(ifindex)?.send(frames, opts, progress)
    };
    let before = maps.map(|m| m.snapshot()).transpose()?;
    let sent = match netns {
        Some(ns) => in_netns(ns, send)??,
        None => send()?,
    };
    match (maps, before) {
        (Some(maps), Some(before)) => {
            settle(
                || Ok(maps.snapshot()?.reasons.iter().map(|r| r.packets).sum()),
                Duration::from_secs(2),
            )?;
            Ok(LiveReport::from_snapshots(
                &before,
                &maps.snapshot()?,
                &sent,
            ))
        }
        _ => {
            let secs = sent.elapsed.as_secs_f64();
            Ok(LiveReport {
                sent: sent.frames,
                elapsed: sent.elapsed,
                mpps: if secs > 0.0 {
                    sent.frames as f64 / secs / 1e6
                } else {
                    0.0
                },
                ..Default::default()
            })
        }
    }
}
