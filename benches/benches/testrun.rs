//! `BPF_PROG_TEST_RUN` ns/packet of nodegate's XDP program with 1, 1k and 100k IPv4 prefixes
//! loaded, for a hot source (one frame repeated in the kernel) and random sources (a
//! different frame per run), each next to an empty XDP program (`return XDP_PASS`) measured
//! the same way in the same run. Times are the kernel's own (`duration` of the test run),
//! so syscall overhead is excluded; the empty program is the floor of the method.
//!
//! The source lookup rows (random mixed-length prefix sets of 1 to 1M prefixes) are
//! `ng-bench lookup`'s: it measures every table size in interleaved rounds.
//!
//! Needs root (or CAP_BPF + CAP_NET_ADMIN). Without privileges, or while the embedded object
//! cannot be loaded, it prints why and measures nothing.

use rand::SeedableRng as _;
use std::time::Duration;

use benches::{allow_policy, random_frames, syn_frame, v4_prefixes, Rng, SIZES};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use filter_user::replay::{rawbpf::RawProgram, LoadedPolicy};

/// Distinct frames cycled through for "random sources".
const RANDOM_FRAMES: usize = 4096;

fn bench_testrun(c: &mut Criterion) {
    let empty = match RawProgram::pass() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("testrun: cannot load the empty XDP program ({e}); BPF_PROG_TEST_RUN benches skipped (need root)");
            return;
        }
    };
    for n in SIZES {
        let list = v4_prefixes(n, 11);
        let mut loaded = match LoadedPolicy::load(&allow_policy(&list, &[])) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("testrun: cannot load nodegate's XDP program ({e}); BPF_PROG_TEST_RUN benches skipped");
                return;
            }
        };
        let hot = syn_frame(benches::random_source(&mut Rng::seed_from_u64(5), &list));
        let random = random_frames(&list, RANDOM_FRAMES, 12);

        let mut g = c.benchmark_group("testrun");
        // One kernel loop of `iters` repetitions of the same frame.
        g.bench_function(BenchmarkId::new("nodegate_hot", n), |b| {
            b.iter_custom(|iters| {
                loaded
                    .filter
                    .test_run(&hot, iters.min(u32::MAX as u64) as u32)
                    .expect("test run")
                    .1
                    * iters as u32
            })
        });
        g.bench_function(BenchmarkId::new("empty_hot", n), |b| {
            b.iter_custom(|iters| {
                empty
                    .test_run(&hot, iters.min(u32::MAX as u64) as u32)
                    .expect("test run")
                    .duration
                    * iters as u32
            })
        });
        g.finish();

        // One run per frame, each a different source: every call is a syscall (~27 µs of
        // wall time) while criterion plans by the kernel's ~tens of ns, so the measurement
        // window is kept tiny to bound the wall time.
        let mut g = c.benchmark_group("testrun");
        g.sampling_mode(SamplingMode::Flat);
        g.sample_size(10);
        g.warm_up_time(Duration::from_micros(500));
        g.measurement_time(Duration::from_millis(3));
        g.bench_function(BenchmarkId::new("nodegate_random", n), |b| {
            random_runs(b, &random, |f| {
                loaded.filter.test_run(f, 1).expect("test run").1
            })
        });
        g.bench_function(BenchmarkId::new("empty_random", n), |b| {
            random_runs(b, &random, |f| {
                empty.test_run(f, 1).expect("test run").duration
            })
        });
        g.finish();
    }
}

/// Random sources (`RANDOM_FRAMES` distinct frames, half of them listed) through one program,
/// one frame per test run; the kernel's duration summed.
fn random_runs(
    b: &mut criterion::Bencher,
    frames: &[Vec<u8>],
    mut run: impl FnMut(&[u8]) -> Duration,
) {
    let mut i = 0usize;
    b.iter_custom(|iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            total += run(&frames[i % frames.len()]);
            i += 1;
        }
        total
    })
}

criterion_group!(benches, bench_testrun);
criterion_main!(benches);
