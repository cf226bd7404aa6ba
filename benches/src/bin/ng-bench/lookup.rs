//! The source lookup rows: 1 → 1M random mixed-length prefixes, random sources.

use std::rc::Rc;

use anyhow::{bail, Context};
use benches::{
    allow_policy,
    candidates::{Oracle, Prefix},
    fit_capacity, v4_mixed_prefixes, v6_mixed_prefixes,
};
use filter_user::replay::{rawbpf::RawProgram, rawlpm::LpmBaseline, LoadedPolicy};
use serde_json::json;

use crate::{
    candidates,
    rounds::{interleaved, ratio_spread, spread, TimedRun},
};

/// Distinct frames of the source lookup rows: half from inside a listed prefix.
const LOOKUP_FRAMES: usize = 4096;

/// Answers the lookup candidates' prefixes take in turn (`Prefix::v4_with_answers`,
/// `v6_with_answers`).
const CANDIDATE_ANSWERS: u32 = 8;

/// Unmeasured passes over the frames between a lookup row's cold and warm pass. In a pinned
/// trial (2026-12-06) the second pass measured 100k IPv4 at 187 ns and 1M at 203, the pass
/// after six more 171 and 192: the caches keep warming for a few passes. With three, the
/// rows of both families take about 14 s (15 rounds).
const WARM_UP_PASSES: usize = 3;

/// The calling thread pinned to the CPU it runs on, until dropped. A test run executes on
/// the caller's CPU, and a warm pass only means something if the passes before it ran on
/// the same core's caches. (Whether pinning moves the figures on this machine is not shown:
/// one early trial read 290 ns unpinned against 155 pinned for the 1-prefix row, but three
/// alternating quick runs later gave 167–270 unpinned against 161–189 pinned, in a noisy
/// phase.)
struct PinnedCpu {
    before: libc::cpu_set_t,
}

impl PinnedCpu {
    fn current() -> anyhow::Result<PinnedCpu> {
        // SAFETY: cpu_set_t is plain bits; the calls get and set the calling thread's own
        // mask (pid 0) with the set's true size.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut before) != 0
            {
                bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
            }
            let cpu = libc::sched_getcpu();
            if cpu < 0 {
                bail!("sched_getcpu: {}", std::io::Error::last_os_error());
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) != 0 {
                bail!(
                    "sched_setaffinity (CPU {cpu}): {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(PinnedCpu { before })
        }
    }
}

impl Drop for PinnedCpu {
    fn drop(&mut self) {
        // SAFETY: as in `current`; restoring the mask the thread had.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.before);
        }
    }
}

/// A program of the source lookup rows: who (`nodegate`, `lpm`, `empty`, a lookup
/// candidate), at how many prefixes, the frames it runs (random sources, and the hot one),
/// and one test run of one frame (kernel-measured ns).
struct LookupProgram {
    who: &'static str,
    prefixes: usize,
    frames: Rc<LookupFrames>,
    run: TimedRun,
}

/// The frames of one prefix set's lookup rows.
struct LookupFrames {
    /// `LOOKUP_FRAMES` frames from random sources, half inside a listed prefix.
    random: Vec<Vec<u8>>,
    /// A frame from the set's first prefix, repeated `HOT_REPEAT` times in the kernel's loop
    /// for the *hot* figure: the walk with every line it reads cached.
    hot: Vec<u8>,
}

/// Repetitions of the hot frame per test run.
const HOT_REPEAT: u32 = 256;

/// Source lookup cost at 1 → 1M prefixes of random mixed lengths (IPv4 /8–/32, IPv6
/// /32–/128): nodegate's flat tables, a plain XDP program on a kernel LPM trie holding the
/// same prefixes (`LpmBaseline`, what the peers use) and the empty program, each on the
/// random-source frames of its prefix set, one test run per frame (not one frame repeated in
/// the kernel's loop, which would keep one source's path hot), on one CPU.
///
/// Every table size of a family is loaded at once and measured in interleaved rounds; a
/// size's cost relative to 1 prefix is the median of the per-round ratios, so that a
/// noisy phase moves both sides of a ratio alike. (Measured one size after another,
/// criterion's blocks gave 1.13× and 1.43× for the same 100k IPv4 set in two runs with the
/// same IPv4 walk.)
pub(crate) fn lookup(quick: bool) -> anyhow::Result<usize> {
    let mut failed = 0;
    let rounds = if quick { 3 } else { 15 };
    let _pinned = PinnedCpu::current()?;
    // DXR (IPv4) and poptrie beside the flat table.
    let candidates = candidates::object();
    if let Err(e) = &candidates {
        failed += 1;
        println!(
            "{}",
            json!({"kind": "candidate", "error": format!("{e:#}")})
        );
    }
    for (family, sizes) in [
        ("v4", &benches::LOOKUP_SIZES_V4[..]),
        ("v6", &benches::LOOKUP_SIZES_V6[..]),
    ] {
        let mut programs: Vec<LookupProgram> = Vec::new();
        for &n in sizes {
            let object = candidates.as_deref().ok();
            if let Err(e) = lookup_programs(family, n, object, &mut programs) {
                failed += 1;
                println!(
                    "{}",
                    json!({"kind": "lookup", "family": family, "prefixes": n, "error": format!("{e:#}")})
                );
            }
        }
        // Per program and round, the first pass over the frames finds the table as the other
        // programs' passes left the caches (`cold`); the last, after `WARM_UP_PASSES`, as
        // these sources keep it (`warm`, where the goal applies: the cost of the structure
        // and its size, not of the other tables measured beside it); then the hot frame.
        let samples = interleaved(&mut programs, rounds, |p| {
            let frames = Rc::clone(&p.frames);
            let mut pass = || -> anyhow::Result<f64> {
                let mut total = 0.0;
                for frame in &frames.random {
                    total += (p.run)(frame, 1)?;
                }
                Ok(total / frames.random.len() as f64)
            };
            let cold = pass()?;
            for _ in 0..WARM_UP_PASSES {
                pass()?;
            }
            let warm = pass()?;
            Ok([cold, warm, (p.run)(&frames.hot, HOT_REPEAT)?])
        })?;
        for (which, pass) in [("warm", 1), ("cold", 0), ("hot", 2)] {
            let ns: Vec<Vec<f64>> = samples
                .iter()
                .map(|rounds| rounds.iter().map(|s| s[pass]).collect())
                .collect();
            let at_one = |who: &str| {
                programs
                    .iter()
                    .position(|p| p.who == who && p.prefixes == 1)
                    .map(|i| &ns[i])
            };
            for (p, ns_p) in programs.iter().zip(&ns) {
                let vs_one = at_one(p.who).map(|one| ratio_spread(ns_p, one).0);
                let (median, min, max) = spread(ns_p.clone());
                println!(
                    "{}",
                    json!({"kind": "lookup", "family": family, "prefixes": p.prefixes, "who": p.who,
                           "cache": which, "ns": median, "min_ns": min, "max_ns": max,
                           "vs_one_prefix": vs_one, "rounds": rounds, "frames": p.frames.random.len()})
                );
            }
        }
    }
    Ok(failed)
}

/// Load nodegate, the LPM-trie program and the empty program for `n` random mixed-length
/// prefixes of `family` into `programs`, and the lookup candidates from `candidates` (the
/// object) when given.
fn lookup_programs(
    family: &str,
    n: usize,
    candidates: Option<&[u8]>,
    programs: &mut Vec<LookupProgram>,
) -> anyhow::Result<()> {
    // The candidates' prefixes, and where a frame's source is (untagged Ethernet + IP).
    let (mut policy, frames, lpm, prefixes, source) = if family == "v4" {
        let list = v4_mixed_prefixes(n, 21);
        let frames = LookupFrames {
            random: benches::random_frames(&list, LOOKUP_FRAMES, 22),
            hot: benches::syn_frame(list[0].network()),
        };
        let prefixes = Prefix::v4_with_answers(&list, CANDIDATE_ANSWERS);
        let lpm = LpmBaseline::v4(&list);
        (allow_policy(&list, &[]), frames, lpm, prefixes, 26..30)
    } else {
        let list = v6_mixed_prefixes(n, 23);
        let frames = LookupFrames {
            random: benches::random_v6_frames(&list, LOOKUP_FRAMES, 24),
            hot: benches::syn_frame_v6(list[0].network()),
        };
        let prefixes = Prefix::v6_with_answers(&list, CANDIDATE_ANSWERS);
        let lpm = LpmBaseline::v6(&list);
        (allow_policy(&[], &list), frames, lpm, prefixes, 22..38)
    };
    fit_capacity(&mut policy);
    let mut nodegate = LoadedPolicy::load(&policy)
        .with_context(|| format!("cannot load nodegate with {n} {family} prefixes"))?;
    let lpm =
        lpm.with_context(|| format!("cannot build the LPM baseline with {n} {family} prefixes"))?;
    let empty = RawProgram::pass()?;
    let frames = Rc::new(frames);
    if let Some(object) = candidates {
        let oracle = Oracle::new(&prefixes);
        let expected: Vec<u32> = frames
            .random
            .iter()
            .map(|f| {
                let src = &f[source.clone()];
                // Left-aligned, as the prefixes are.
                let bits = src.iter().fold(0u128, |a, &b| (a << 8) | u128::from(b));
                oracle.answer(bits << (128 - 8 * src.len()))
            })
            .collect();
        for (f, who, _) in candidates::CANDIDATES {
            if f != family {
                continue;
            }
            match candidate_program(object, family, who, &prefixes, &frames, &expected) {
                Ok((program, line)) => {
                    println!("{line}");
                    programs.push(program);
                }
                Err(e) => println!(
                    "{}",
                    json!({"kind": "candidate", "family": family, "prefixes": n, "who": who,
                           "error": format!("{e:#}")})
                ),
            }
        }
    }
    let rows: [(&'static str, TimedRun); 3] = [
        (
            "nodegate",
            Box::new(move |f, n| Ok(nodegate.filter.test_run(f, n)?.1.as_nanos() as f64)),
        ),
        (
            "lpm",
            Box::new(move |f, n| Ok(lpm.program().test_run(f, n)?.duration.as_nanos() as f64)),
        ),
        (
            "empty",
            Box::new(move |f, n| Ok(empty.test_run(f, n)?.duration.as_nanos() as f64)),
        ),
    ];
    for (who, run) in rows {
        programs.push(LookupProgram {
            who,
            prefixes: n,
            frames: Rc::clone(&frames),
            run,
        });
    }
    Ok(())
}

/// Candidate `who` loaded for `prefixes`, once it gave every frame `expected`'s answer: its
/// lookup row, and its `candidate` line (table bytes, build time).
fn candidate_program(
    object: &[u8],
    family: &str,
    who: &'static str,
    prefixes: &[Prefix],
    frames: &Rc<LookupFrames>,
    expected: &[u32],
) -> anyhow::Result<(LookupProgram, serde_json::Value)> {
    let loaded = candidates::load(object, family, who, prefixes)?;
    let wrong = frames
        .random
        .iter()
        .zip(expected)
        .map(|(f, want)| Ok(u32::from(loaded.program.test_run(f, 1)?.retval != *want)))
        .sum::<anyhow::Result<u32>>()?;
    if wrong > 0 {
        anyhow::bail!(
            "{who} answered {wrong} of {} frames unlike a plain longest-prefix match",
            frames.random.len()
        );
    }
    let line = json!({"kind": "candidate", "family": family, "prefixes": prefixes.len(), "who": who,
                      "bytes": loaded.bytes, "build_ms": loaded.build_ms, "frames_checked": frames.random.len()});
    let program = loaded.program;
    Ok((
        LookupProgram {
            who,
            prefixes: prefixes.len(),
            frames: Rc::clone(frames),
            run: Box::new(move |f, n| Ok(program.test_run(f, n)?.duration.as_nanos() as f64)),
        },
        line,
    ))
}
