//! `BPF_PROG_TEST_RUN` ns/packet of nodegate's XDP program with 1, 1k and 100k IPv4 prefixes
//! loaded, for a hot source (one frame repeated in the kernel) and random sources (a
//! different frame per run), each next to an empty XDP program (`return XDP_PASS`) measured
//! the same way in the same run. Times are the kernel's own (`duration` of the test run),
//! so syscall overhead is excluded; the empty program is the floor of the method.
//!
//! `bench_lookup` adds the source-lookup rows: random mixed-length prefix sets of 1 to 1M
//! IPv4 and 1 to 100k IPv6 prefixes, nodegate beside a plain LPM-trie XDP program.
//!
//! Needs root (or CAP_BPF + CAP_NET_ADMIN). Without privileges, or while the embedded object
//! cannot be loaded, it prints why and measures nothing.

use rand::SeedableRng as _;
use std::time::Duration;

use benches::{
    allow_policy, fit_capacity, random_frames, random_v6_frames, syn_frame, v4_mixed_prefixes,
    v4_prefixes, v6_mixed_prefixes, Rng, LOOKUP_SIZES_V4, LOOKUP_SIZES_V6, SIZES,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use filter_user::replay::{rawbpf::RawProgram, rawlpm::LpmBaseline, LoadedPolicy};

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
            let mut i = 0usize;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += loaded
                        .filter
                        .test_run(&random[i % RANDOM_FRAMES], 1)
                        .expect("test run")
                        .1;
                    i += 1;
                }
                total
            })
        });
        g.bench_function(BenchmarkId::new("empty_random", n), |b| {
            let mut i = 0usize;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += empty
                        .test_run(&random[i % RANDOM_FRAMES], 1)
                        .expect("test run")
                        .duration;
                    i += 1;
                }
                total
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

/// Source lookup cost at 1 → 1M prefixes of random mixed lengths (IPv4 /8–/32, IPv6
/// /32–/128): nodegate's flat tables next to a plain XDP program on a kernel LPM trie
/// (`LpmBaseline`, what the peers use) holding the same prefixes, and the empty program,
/// each on the same random-source frames in the same run.
fn bench_lookup(c: &mut Criterion) {
    let Ok(empty) = RawProgram::pass() else {
        eprintln!("lookup: cannot load the empty XDP program; lookup benches skipped (need root)");
        return;
    };
    let sizes: Vec<(&str, usize)> = LOOKUP_SIZES_V4
        .iter()
        .map(|&n| ("v4", n))
        .chain(LOOKUP_SIZES_V6.iter().map(|&n| ("v6", n)))
        .collect();
    for (family, n) in sizes {
        let (policy, frames, lpm) = if family == "v4" {
            let list = v4_mixed_prefixes(n, 21);
            let frames = random_frames(&list, RANDOM_FRAMES, 22);
            (allow_policy(&list, &[]), frames, LpmBaseline::v4(&list))
        } else {
            let list = v6_mixed_prefixes(n, 23);
            let frames = random_v6_frames(&list, RANDOM_FRAMES, 24);
            (allow_policy(&[], &list), frames, LpmBaseline::v6(&list))
        };
        let mut policy = policy;
        fit_capacity(&mut policy);
        let (mut loaded, lpm) = match (LoadedPolicy::load(&policy), lpm) {
            (Ok(l), Ok(t)) => (l, t),
            (Err(e), _) => {
                eprintln!("lookup: cannot load nodegate with {n} {family} prefixes ({e}); skipped");
                continue;
            }
            (_, Err(e)) => {
                eprintln!("lookup: cannot build the LPM baseline with {n} {family} prefixes ({e}); skipped");
                continue;
            }
        };
        let mut g = c.benchmark_group(format!("lookup_{family}"));
        g.sampling_mode(SamplingMode::Flat);
        g.sample_size(20);
        g.warm_up_time(Duration::from_millis(5));
        g.measurement_time(Duration::from_millis(200));
        g.bench_function(BenchmarkId::new("nodegate_random", n), |b| {
            random_runs(b, &frames, |f| {
                loaded.filter.test_run(f, 1).expect("test run").1
            })
        });
        g.bench_function(BenchmarkId::new("lpm_random", n), |b| {
            random_runs(b, &frames, |f| {
                lpm.program().test_run(f, 1).expect("test run").duration
            })
        });
        g.bench_function(BenchmarkId::new("empty_random", n), |b| {
            random_runs(b, &frames, |f| {
                empty.test_run(f, 1).expect("test run").duration
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench_testrun, bench_lookup);
criterion_main!(benches);
