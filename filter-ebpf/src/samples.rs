//! Drop samples for the loader's log: a per-CPU token bucket, then the ring buffer.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use filter_common::DropSample;

use crate::{
    maps::{SAMPLES, SAMPLE_EMITTED, SAMPLE_LOST, SAMPLE_RATE, SAMPLE_STATS},
    packet::Summary,
};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Take a token from this CPU's bucket: `rate` per second, bursts up to one second's worth.
#[inline(always)]
fn take_token(rate: u32) -> bool {
    if rate == 0 {
        return false;
    }
    let Some(bucket) = SAMPLE_RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; XDP runs with preemption off, so nothing else writes it.
    let bucket = unsafe { &mut *bucket };
    // SAFETY: no arguments; reads the monotonic clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let rate = u64::from(rate);
    let elapsed = now.saturating_sub(bucket.last_ns);
    if elapsed >= NS_PER_SEC {
        bucket.tokens = rate;
        bucket.last_ns = now;
    } else {
        // elapsed < 1e9 and rate < 2^32, so the product fits in 64 bits. The clock only moves
        // on when a whole token was earned, so slow trickles still add up.
        let earned = elapsed * rate / NS_PER_SEC;
        if earned > 0 {
            bucket.tokens = (bucket.tokens + earned).min(rate);
            bucket.last_ns = now;
        }
    }
    if bucket.tokens == 0 {
        return false;
    }
    bucket.tokens -= 1;
    true
}

#[inline(always)]
fn count(slot: u32) {
    if let Some(n) = SAMPLE_STATS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot, see take_token.
        unsafe { *n += 1 };
    }
}

/// Send a sample of the dropped (or, in monitor mode, would-be dropped) packet `sum`.
#[inline(always)]
pub fn emit(ifindex: u32, code: u32, rule: u32, monitor: bool, sum: &Summary) {
    if !take_token(sum.settings.samples_per_sec) {
        return;
    }
    let Some(mut entry) = SAMPLES.reserve::<DropSample>(0) else {
        count(SAMPLE_LOST);
        return;
    };
    let p = &sum.packet;
    entry.write(DropSample {
        ifindex,
        reason: code,
        rule,
        family: p.family,
        proto: p.proto,
        monitor: u8::from(monitor),
        _pad: 0,
        sport: p.sport,
        dport: p.dport,
        src: p.src,
        dst: p.dst,
    });
    entry.submit(0);
    count(SAMPLE_EMITTED);
}
