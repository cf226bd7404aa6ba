//! Waiting until no packet can still read a generation the program just flipped away from.
//!
//! XDP and TC programs run inside RCU read-side critical sections (the driver's NAPI poll,
//! `bpf_prog_run_xdp` under `rcu_read_lock`), so once one RCU grace period has passed after
//! the flip, every packet that read the old generation number has finished. Userspace can
//! wait for one with `membarrier(MEMBARRIER_CMD_GLOBAL)`, which the kernel implements as
//! `synchronize_rcu()` (kernel/sched/membarrier.c). It takes milliseconds, so it runs on a
//! thread started right after the flip and overlaps the next compile; the next publish only
//! waits for what is left of it.
//!
//! Where membarrier is unavailable (`nohz_full` kernels refuse it), a fixed wait stands in:
//! [`FALLBACK_WAIT`], far above any per-packet run time.

use std::{
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Wait used when `membarrier(MEMBARRIER_CMD_GLOBAL)` fails.
pub const FALLBACK_WAIT: Duration = Duration::from_millis(50);

/// How the last grace period was waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GraceMethod {
    /// `membarrier(MEMBARRIER_CMD_GLOBAL)`: a full RCU grace period.
    Membarrier,
    /// A fixed sleep ([`FALLBACK_WAIT`]).
    Sleep,
}

/// One RCU grace period from now; how it was waited for.
pub fn synchronize() -> GraceMethod {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes (cmd, flags, cpu_id) integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc == 0 {
        GraceMethod::Membarrier
    } else {
        std::thread::sleep(FALLBACK_WAIT);
        GraceMethod::Sleep
    }
}

/// The grace period owed to the generation slot the last flip retired.
#[derive(Default)]
pub(crate) struct Grace {
    /// The wait running since the last flip.
    running: Option<(Instant, JoinHandle<GraceMethod>)>,
    /// Whether a flip we did not see (a previous process) may still be in its grace period.
    unknown_past: bool,
}

/// What [`Grace::wait`] did.
#[derive(Clone, Copy, Debug)]
pub struct GraceWait {
    /// Time this call blocked.
    pub blocked: Duration,
    /// From the flip to the end of the grace period, when this process flipped.
    pub since_flip: Option<Duration>,
    /// How the period was waited for; `None` when no flip was pending.
    pub method: Option<GraceMethod>,
}

impl Grace {
    /// State for maps this process did not flip before (freshly created or adopted): the
    /// first write waits one grace period in full, since a previous owner may just have
    /// flipped.
    pub(crate) fn after_adoption() -> Self {
        Grace {
            running: None,
            unknown_past: true,
        }
    }

    /// Start the grace period of a flip that just happened.
    pub(crate) fn flipped(&mut self) {
        let started = Instant::now();
        let handle = std::thread::Builder::new()
            .name("nodegate-grace".into())
            .spawn(synchronize)
            .ok();
        match handle {
            Some(h) => self.running = Some((started, h)),
            // No thread: wait inline at the next publish.
            None => self.unknown_past = true,
        }
    }

    /// Block until the retired generation can be overwritten.
    pub(crate) fn wait(&mut self) -> GraceWait {
        let start = Instant::now();
        let mut out = GraceWait {
            blocked: Duration::ZERO,
            since_flip: None,
            method: None,
        };
        if let Some((flipped_at, handle)) = self.running.take() {
            out.method = Some(handle.join().unwrap_or_else(|_| synchronize()));
            out.since_flip = Some(flipped_at.elapsed());
        }
        if std::mem::take(&mut self.unknown_past) {
            out.method = Some(synchronize());
        }
        out.blocked = start.elapsed();
        out
    }
}
