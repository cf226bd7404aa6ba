//! Drop samples for the loader's log: a per-CPU token bucket, then the ring buffer.

use core::ptr::addr_of_mut;

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns};
use filter_common::DropSample;

use crate::{
    maps::{SAMPLES, SAMPLE_EMITTED, SAMPLE_LOST, SAMPLE_RATE, SAMPLE_STATS},
    packet::Summary,
    scratch::Key,
};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Take a token from this CPU's bucket: `rate` per second, bursts up to one second's worth.
///
/// Every drop comes here, and at line rate the bucket is empty: reading the clock on each
/// one (`bpf_ktime_get_ns`, ~36 ns a dropped packet measured with `BPF_PROG_TEST_RUN`; the
/// coarse clock 19-24 ns) cost more than the rest of the drop path's counting. The tick count
/// (`bpf_jiffies64`, which the verifier inlines into one load) says whether a tick has begun
/// since the last look; only then is the clock read and the bucket refilled, so refills
/// come at tick resolution (1-10 ms), as with the coarse clock.
#[inline(always)]
fn take_token(rate: u32, key: &Key) -> bool {
    if rate == 0 {
        return false;
    }
    let Some(bucket) = key.per_cpu(&SAMPLE_RATE, 0) else {
        return false;
    };
    // SAFETY: this CPU's slot; XDP runs with preemption off, so nothing else writes it.
    let bucket = unsafe { &mut *bucket };
    // SAFETY: no arguments; reads the kernel's tick counter.
    let tick = unsafe { bpf_jiffies64() } as u32;
    if tick != bucket.tick {
        bucket.tick = tick;
        refill(bucket, rate);
    }
    if bucket.tokens == 0 {
        return false;
    }
    bucket.tokens -= 1;
    true
}

/// Add the tokens earned since the last refill.
#[inline(always)]
fn refill(bucket: &mut filter_common::SampleBucket, rate: u32) {
    // SAFETY: no arguments; reads the monotonic clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let elapsed = now.saturating_sub(bucket.last_ns);
    if elapsed >= NS_PER_SEC {
        bucket.tokens = rate;
        bucket.last_ns = now;
    } else if elapsed * u64::from(rate) >= NS_PER_SEC {
        // At least one whole token earned; elapsed < 1e9 and rate < 2^32, so the product fits
        // in 64 bits. The clock only moves on when a whole token was earned, so slow
        // trickles still add up.
        let earned = elapsed * u64::from(rate) / NS_PER_SEC;
        // earned < rate here (elapsed < 1 s): the sum fits in a u64 and the minimum in a u32.
        bucket.tokens = (u64::from(bucket.tokens) + earned).min(u64::from(rate)) as u32;
        bucket.last_ns = now;
    }
}

#[inline(always)]
fn count(slot: u32, key: &Key) {
    if let Some(n) = key.per_cpu(&SAMPLE_STATS, slot) {
        // SAFETY: this CPU's slot, see take_token.
        unsafe { *n += 1 };
    }
}

/// Send a sample of the dropped (or, in monitor mode, would-be dropped) packet `sum`.
#[inline(always)]
pub fn emit(ifindex: u32, code: u32, rule: u32, monitor: bool, sum: &Summary, key: &Key) {
    if !take_token(sum.settings.samples_per_sec, key) {
        return;
    }
    let Some(mut entry) = SAMPLES.reserve::<DropSample>(0) else {
        count(SAMPLE_LOST, key);
        return;
    };
    let p = &sum.packet;
    // Field by field into the ring buffer's memory, never through a DropSample on the stack:
    // the struct literal compiled to pairs of 4-byte stack stores into one 8-byte slot, which
    // verifiers before 6.6 refuse without CAP_PERFMON ("attempt to corrupt spilled pointer
    // on stack"; found by the kernel matrix on 6.1).
    let out = entry.as_mut_ptr();
    // SAFETY: `out` points to the reserved, exclusively ours DropSample; every field is
    // written before submit.
    unsafe {
        addr_of_mut!((*out).ifindex).write(ifindex);
        addr_of_mut!((*out).reason).write(code);
        addr_of_mut!((*out).rule).write(rule);
        addr_of_mut!((*out).family).write(p.family);
        addr_of_mut!((*out).proto).write(p.proto);
        addr_of_mut!((*out).monitor).write(u8::from(monitor));
        addr_of_mut!((*out)._pad).write(0);
        addr_of_mut!((*out).sport).write(p.sport);
        addr_of_mut!((*out).dport).write(p.dport);
        crate::packet::copy_address(addr_of_mut!((*out).src), &p.src);
        crate::packet::copy_address(addr_of_mut!((*out).dst), &p.dst);
    }
    entry.submit(0);
    count(SAMPLE_EMITTED, key);
}
