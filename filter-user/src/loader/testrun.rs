//! Running frames through the real XDP program with `BPF_PROG_TEST_RUN`, and finding out
//! which reason and rule counter each frame moved. Used by the packet test suite, the
//! differential tests and `nodegate replay`.

use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions};
use filter_common::{Counter, Reason, MAX_RULES, REASON_SLOTS, STAT_SLOTS};

use super::{Filter, FilterMaps, LoaderError};

/// Frames shorter than an Ethernet header cannot go through `BPF_PROG_TEST_RUN` (EINVAL).
pub const MIN_TEST_RUN_FRAME: usize = 14;

/// Longest frame `BPF_PROG_TEST_RUN` puts in one buffer: a page minus `XDP_PACKET_HEADROOM`
/// (256) and `struct skb_shared_info` (320 on x86_64). Past it, the kernel hands the program
/// a multi-buffer frame (XDP frags, one page each), which nodegate reads with
/// `bpf_xdp_load_bytes`; frames that need more than `MAX_SKB_FRAGS` (17) pages are refused.
pub const MAX_LINEAR_TEST_RUN_FRAME: usize = 4096 - 256 - 320;

/// The errno at the bottom of an error chain (e.g. why `BPF_PROG_TEST_RUN` refused a frame).
pub fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        cur = err.source();
    }
    None
}

/// Whether `BPF_PROG_TEST_RUN` failed on `frame` because it is too long to hand to an XDP
/// program at all (more XDP frags than the kernel allows): the frame, not the program.
pub fn refused_as_too_long(frame: &[u8], e: &LoaderError) -> bool {
    frame.len() > MAX_LINEAR_TEST_RUN_FRAME
        && matches!(os_error(e), Some(libc::ENOMEM | libc::E2BIG | libc::EINVAL))
}

/// An XDP return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    /// XDP_ABORTED.
    Aborted,
    /// XDP_DROP.
    Drop,
    /// XDP_PASS.
    Pass,
    /// Any other code (TX, REDIRECT, unknown).
    Other(u32),
}

impl XdpAction {
    fn from_code(code: u32) -> Self {
        match code {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            other => XdpAction::Other(other),
        }
    }
}

impl Filter {
    /// Run one frame through the program `repeat` times; returns the action and the mean
    /// time per run as measured by the kernel.
    pub fn test_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(XdpAction, Duration), LoaderError> {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat.max(1);
        let result = self
            .program()
            .test_run(opts)
            .map_err(|e| LoaderError::TestRun(Box::new(e)))?;
        Ok((XdpAction::from_code(result.return_value), result.duration))
    }
}

/// What the kernel decided for one frame, read back from its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelVerdict {
    /// The program's return code.
    pub action: XdpAction,
    /// The reason counter that moved.
    pub reason: Reason,
    /// Whether it moved in the monitor-mode would-drop range.
    pub would_drop: bool,
    /// Rule slot whose counter moved, if one was asked about and moved.
    pub rule_slot: Option<u32>,
}

/// Runs frames one at a time and attributes each to the counter it moved. Counters of the
/// interface slot test runs count in (0, the unregistered loopback, unless it stands in for
/// an interface: [`FilterMaps::test_runs_arrive_on`]) are cached so a frame costs one
/// counter read when the caller's expectation is right, and a scan of all reason slots only
/// when it is not.
pub struct KernelJudge<'a> {
    filter: &'a mut Filter,
    /// First reason counter index of the test runs' interface slot.
    base: u32,
    reasons: Vec<u64>,
    rules: std::collections::HashMap<u32, u64>,
}

impl<'a> KernelJudge<'a> {
    /// Start judging; snapshots the reason counters.
    pub fn new(filter: &'a mut Filter) -> Result<Self, LoaderError> {
        let base = filter.maps.test_run_slot() * STAT_SLOTS;
        let reasons = (0..STAT_SLOTS)
            .map(|slot| Ok(FilterMaps::sum(&filter.maps.stats, base + slot)?.packets))
            .collect::<Result<Vec<_>, LoaderError>>()?;
        Ok(KernelJudge {
            filter,
            base,
            reasons,
            rules: Default::default(),
        })
    }

    /// The filter being judged with.
    pub fn filter(&mut self) -> &mut Filter {
        self.filter
    }

    fn reason_packets(&self, slot: u32) -> Result<u64, LoaderError> {
        Ok(FilterMaps::sum(&self.filter.maps.stats, self.base + slot)?.packets)
    }

    fn rule_packets(&self, slot: u32) -> Result<u64, LoaderError> {
        Ok(FilterMaps::sum(&self.filter.maps.rule_stats, slot)?.packets)
    }

    /// Run `frame` once. `expect_slot` is the reason stat slot the caller predicts (checked
    /// first), `expect_rule` the rule counter slot (including the monitor offset) to check.
    pub fn judge(
        &mut self,
        frame: &[u8],
        expect_slot: Option<u32>,
        expect_rule: Option<u32>,
    ) -> Result<KernelVerdict, LoaderError> {
        if let Some(rule) = expect_rule {
            if let std::collections::hash_map::Entry::Vacant(e) = self.rules.entry(rule) {
                let before = FilterMaps::sum(&self.filter.maps.rule_stats, rule)?.packets;
                e.insert(before);
            }
        }
        let (action, _) = self.filter.test_run(frame, 1)?;

        let mut moved = None;
        if let Some(slot) = expect_slot.filter(|s| *s < STAT_SLOTS) {
            let now = self.reason_packets(slot)?;
            if now != self.reasons[slot as usize] {
                self.reasons[slot as usize] = now;
                moved = Some(slot);
            }
        }
        if moved.is_none() {
            for slot in 0..STAT_SLOTS {
                let now = self.reason_packets(slot)?;
                if now != self.reasons[slot as usize] {
                    self.reasons[slot as usize] = now;
                    moved = Some(slot);
                }
            }
        }
        let slot = moved.unwrap_or(Reason::Internal as u32);
        let reason = Reason::from_u32(slot % REASON_SLOTS).unwrap_or(Reason::Internal);

        let mut rule_slot = None;
        if let Some(rule) = expect_rule.filter(|r| *r < 2 * MAX_RULES) {
            let now = self.rule_packets(rule)?;
            let before = self.rules.insert(rule, now).unwrap_or(now);
            if now != before {
                rule_slot = Some(rule);
            }
        }
        Ok(KernelVerdict {
            action,
            reason,
            would_drop: slot >= REASON_SLOTS,
            rule_slot,
        })
    }
}

/// Sum a reason counter of one interface slot (0 = unregistered/test runs).
pub fn reason_counter(
    maps: &FilterMaps,
    iface_slot: u32,
    reason: Reason,
    monitor: bool,
) -> Result<Counter, LoaderError> {
    FilterMaps::sum(
        &maps.stats,
        iface_slot * STAT_SLOTS + reason.stat_slot(monitor),
    )
}
