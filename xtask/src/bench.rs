//! `cargo xtask bench [--quick]`: every benchmark of docs/BENCHMARKS.md in one run, printed as
//! the tables that document quotes.
//!
//! 1. installs the peers if missing (Debian: xdp-tools, nftables, ipset, iptables, bpftool);
//! 2. criterion (`cargo bench -p benches`): reference model, compiler, and
//!    `BPF_PROG_TEST_RUN` ns/packet next to an empty XDP program; results are read back from
//!    criterion's `estimates.json` (stale ones are deleted first, so every number printed
//!    was measured by this run);
//! 3. `ng-bench`: the veth pipeline against the peers, reload latency, table memory, stage
//!    costs and the source lookup rows (JSON lines);
//! 4. prints the tables (stdout) and writes them to `target/bench-report.md`.
//!
//! `--quick` runs every benchmark once, briefly (criterion `--quick`, fewer frames and
//! reloads); `cargo xtask test` runs it as a smoke test: it fails when any benchmark
//! produced no number, never because of a number.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    os::fd::AsFd,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cmd::{is_root, output, sh, workspace_root};

/// Debian packages of the peers (bpftool bulk-loads xdp-filter's address map).
const PEERS: &[&str] = &["xdp-tools", "nftables", "ipset", "iptables", "bpftool"];
const SIZES: [u64; 3] = [1, 1_000, 100_000];
/// The stage table's row of xdp-filter's program (`ng-bench stages`).
const PEER_ROW: &str = "xdp-filter, its program alone (C peer)";
/// Prefix counts of the source lookup rows (`benches::LOOKUP_SIZES_V4`, `_V6`).
const LOOKUP_V4: [u64; 4] = [1, 1_000, 100_000, 1_000_000];
const LOOKUP_V6: [u64; 3] = [1, 10_000, 100_000];

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

pub fn run(quick: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    if !is_root() {
        bail!("the benchmarks need root (BPF_PROG_TEST_RUN, XDP attach, network namespaces, nft, ipset): run `sudo -E cargo xtask bench`");
    }
    if Path::new("/etc/debian_version").exists() {
        let mut lines = Vec::new();
        crate::setup::install_debian_packages(PEERS, &mut lines)?;
        eprintln!("bench peers: {}", lines.join("; "));
    }
    let root = workspace_root();
    let target = target_dir(&root);
    let criterion_dir = target.join("criterion");
    for group in ["model", "compile", "config", "testrun", "source_table"] {
        let _ = std::fs::remove_dir_all(criterion_dir.join(group));
    }

    eprintln!("== build (release)");
    sh(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "benches",
        "--bins",
        "--benches",
    ]))?;
    eprintln!("== knock-out builds of the XDP program (stage costs)");
    let knockouts = crate::knockout::build(&root, &target)?;
    let measure_start = Instant::now();

    eprintln!("== criterion: reference model, compiler, BPF_PROG_TEST_RUN");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root).args([
        "bench", "--locked", "-p", "benches", "--bench", "model", "--bench", "compile", "--bench",
        "testrun", "--",
    ]);
    if quick {
        cmd.args([
            "--quick",
            "--warm-up-time",
            "0.1",
            "--measurement-time",
            "0.5",
            "--noplot",
        ]);
    } else {
        cmd.args(["--noplot"]);
    }
    // Criterion reports on stdout; keep stdout for the tables.
    cmd.stdout(std::io::stderr().as_fd().try_clone_to_owned()?);
    sh(&mut cmd)?;

    eprintln!("== ng-bench: veth pipeline and reload");
    let ng_bench = target.join("release").join("ng-bench");
    let mut cmd = Command::new(&ng_bench);
    cmd.env("NODEGATE_KNOCKOUT_DIR", &knockouts);
    if quick {
        cmd.arg("--quick");
    }
    eprintln!(
        "+ {}{}",
        ng_bench.display(),
        if quick { " --quick" } else { "" }
    );
    let out = cmd
        .output()
        .with_context(|| format!("failed to run {}", ng_bench.display()))?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let measured = measure_start.elapsed();

    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let (report, missing) = render(&criterion_dir, &lines, command);
    println!("{report}");
    let path = target.join("bench-report.md");
    std::fs::write(&path, &report)
        .with_context(|| format!("failed to write {}", path.display()))?;
    eprintln!(
        "bench: measurements took {:.0} s ({:.0} s with the build); report in {}",
        measured.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        path.display()
    );
    if !out.status.success() || !missing.is_empty() {
        bail!(
            "benchmarks without a number: {}{}",
            missing.join("; "),
            if out.status.success() {
                ""
            } else {
                " (ng-bench failed)"
            }
        );
    }
    Ok(())
}

/// Median ns per iteration of a criterion benchmark (the median of its samples), if this
/// run produced it. The median, not the mean: on a shared machine one sample that met an
/// interrupt storm moves the mean of ten by microseconds and the median not at all.
fn estimate(criterion: &Path, id: &str) -> Option<f64> {
    let text =
        std::fs::read_to_string(criterion.join(id).join("new").join("estimates.json")).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    json.get("median")?.get("point_estimate")?.as_f64()
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn render(criterion: &Path, lines: &[Value], command: &str) -> (String, Vec<String>) {
    let mut missing = Vec::new();
    let mut r = String::new();
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let kernel = output("uname", &["-r"]).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cpus = output("nproc", &[]).unwrap_or_default();
    let _ = writeln!(
        r,
        "Run: {} · kernel {} · {} × {} · command: `{command}`\n",
        date.trim(),
        kernel.trim(),
        cpus.trim(),
        cpu
    );

    let mut need = |id: &str| {
        let v = estimate(criterion, id);
        if v.is_none() {
            missing.push(format!("criterion {id}"));
        }
        v
    };
    let cell = |v: Option<f64>, f: &dyn Fn(f64) -> String| {
        v.map(f).unwrap_or_else(|| "not measured".into())
    };

    let _ = writeln!(
        r,
        "### Reference model (criterion, random sources, 1024 frames per iteration)\n"
    );
    let _ = writeln!(
        r,
        "| IPv4 prefixes | ns/frame | frames/s |\n|---:|---:|---:|"
    );
    for n in SIZES {
        let per = need(&format!("model/random_sources/{n}")).map(|ns| ns / 1024.0);
        let _ = writeln!(
            r,
            "| {n} | {} | {} |",
            cell(per, &|v| format!("{v:.0}")),
            cell(per, &|v| format!("{:.2} M", 1e3 / v))
        );
    }

    let _ = writeln!(
        r,
        "\n### Compiler (criterion, 100k IPv4 + 10k IPv6 prefixes, `benches/benches/compile.rs`)\n"
    );
    let _ = writeln!(r, "| benchmark | time per run |\n|---|---:|");
    for id in [
        "compile/100k_v4_10k_v6",
        "compile/100k_v4_10k_v6_one_prefix_changed",
        "config/parse_check_compile_100k_v4_10k_v6",
        "source_table/v4_mixed/100000",
        "source_table/v4_mixed/1000000",
        "source_table/v6_mixed/100000",
    ] {
        let _ = writeln!(r, "| `{id}` | {} |", cell(need(id), &fmt_ns));
    }

    let _ = writeln!(
        r,
        "\n### `BPF_PROG_TEST_RUN` (criterion medians, kernel-measured ns/packet, 64-byte TCP SYN)\n"
    );
    let _ = writeln!(r, "| IPv4 prefixes | sources | nodegate ns | empty XDP ns (same run) | nodegate − empty | nodegate / empty |\n|---:|---|---:|---:|---:|---:|");
    let mut testrun = BTreeMap::new();
    for n in SIZES {
        for src in ["hot", "random"] {
            let ng = need(&format!("testrun/nodegate_{src}/{n}"));
            let empty = need(&format!("testrun/empty_{src}/{n}"));
            testrun.insert((n, src), (ng, empty));
            let (d, q) = match (ng, empty) {
                (Some(a), Some(b)) => (format!("{:.1}", a - b), format!("{:.2}", a / b)),
                _ => ("—".into(), "—".into()),
            };
            let _ = writeln!(
                r,
                "| {n} | {src} | {} | {} | {d} | {q} |",
                cell(ng, &|v| format!("{v:.1}")),
                cell(empty, &|v| format!("{v:.1}"))
            );
        }
    }

    let _ = writeln!(
        r,
        "\n### Cost per stage (`BPF_PROG_TEST_RUN`, allowed TCP SYN, 1 prefix per family, a dropped one, and an allowed one behind a VLAN tag, hot; knock-out builds `NODEGATE_KNOCKOUT`)\n"
    );
    let _ = writeln!(r, "Each build stops after the stage named; a stage costs the difference to the row above; `full` is the shipped program; the last two rows differ from `full`. Medians of interleaved rounds (every program on every frame once per round), kernel-measured ns/packet.\n");
    let _ = writeln!(
        r,
        "| build | IPv4 ns | stage IPv4 | IPv6 ns | stage IPv6 | IPv4 dropped ns | stage IPv4 dropped | IPv4 in a VLAN ns | stage IPv4 in a VLAN |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let stage_lines: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "stages").collect();
    // Pushed into `missing` once `need` (which borrows it) is done.
    let mut stage_missing = Vec::new();
    let stage_ns = |build: &str, family: &str| {
        stage_lines
            .iter()
            .find(|l| l["build"] == build && l["family"] == family)
            .and_then(|l| l["ns"].as_f64())
    };
    let mut builds: Vec<&str> = Vec::new();
    for l in &stage_lines {
        let b = l["build"].as_str().unwrap_or("?");
        if !builds.contains(&b) {
            builds.push(b);
        }
        if let Some(err) = l["error"].as_str() {
            stage_missing.push(format!("stages {b}: {err}"));
        }
    }
    if stage_lines.is_empty() {
        stage_missing.push("stages: no result".into());
    }
    let mut before: BTreeMap<&str, Option<f64>> = BTreeMap::new();
    for build in &builds {
        let mut row = format!("| {build} |");
        for family in ["v4", "v6", "v4-drop", "v4-vlan"] {
            let v = stage_ns(build, family);
            // The hardened load is compared with the shipped program, not a stage.
            let step = match (v, before.get(family).copied().flatten()) {
                (Some(a), Some(b)) => format!("{:+.1}", a - b),
                _ => "—".into(),
            };
            let _ = write!(row, " {} | {step} |", cell(v, &|x| format!("{x:.1}")));
            // The hardened load and the peer's program are compared with the shipped
            // program, not with a stage.
            if !build.starts_with("full,") && *build != PEER_ROW {
                before.insert(family, v);
            }
        }
        if let Some(refused) = stage_lines
            .iter()
            .find(|l| l["build"] == *build)
            .and_then(|l| l["refused"].as_str())
        {
            row = format!(
                "| {build} | refused by this kernel's verifier: {} | | | | | | | |",
                refused.chars().take(120).collect::<String>()
            );
        }
        let _ = writeln!(r, "{row}");
    }
    let stage_goals = stage_goal_line(lines);
    match &stage_goals {
        Some(line) => {
            let _ = writeln!(r, "\n{line}");
        }
        None => stage_missing.push("stages: the goal ratios (stage_ratio lines)".into()),
    }
    if let (Some(d), Some(e)) = (stage_ns("full", "v4-drop"), stage_ns("empty", "v4-drop")) {
        let _ = writeln!(r, "A dropped IPv4 SYN (`no-source-match`, offered to the drop sampler at the default 10/s): {d:.1} ns, {:.2}× the empty program.", d / e);
    }
    if let (Some(v), Some(f), Some(e)) = (
        stage_ns("full", "v4-vlan"),
        stage_ns("full", "v4"),
        stage_ns("empty", "v4-vlan"),
    ) {
        let _ = writeln!(r, "An allowed IPv4 SYN behind one 802.1Q tag: {v:.1} ns, {:.2}× the empty program, {:+.1} ns against the untagged one.", v / e, v - f);
    }
    if let (Some(h), Some(f)) = (
        stage_ns("full, CAP_BPF + CAP_NET_ADMIN only", "v4"),
        stage_ns("full", "v4"),
    ) {
        let _ = writeln!(r, "Loaded without CAP_PERFMON (Spectre hardening on): IPv4 {h:.1} ns, {:+.1} ns against the same program loaded as root.", h - f);
    }
    if let (Some(p4), Some(p6), Some(e4), Some(over4), Some(over6)) = (
        stage_ns(PEER_ROW, "v4"),
        stage_ns(PEER_ROW, "v6"),
        stage_ns("empty", "v4"),
        stage_ratio(lines, "v4 full / peer"),
        stage_ratio(lines, "v6 full / peer"),
    ) {
        let _ = writeln!(r, "The C peer by the same method (xdp-filter's program, no libxdp dispatcher, the same sources allowed and the same verdicts): IPv4 {p4:.1} ns = {:.2}× the empty program, IPv6 {p6:.1} ns; nodegate / xdp-filter, median of the per-round ratios, {} (IPv4), {} (IPv6).", p4 / e4, show_ratio(over4, ""), show_ratio(over6, ""));
    }

    let _ = writeln!(
        r,
        "\n### Source lookup: random mixed-length prefixes (IPv4 /8–/32, IPv6 /32–/128), random sources, `BPF_PROG_TEST_RUN` ns/packet\n"
    );
    let _ = writeln!(r, "nodegate's flat tables beside a plain XDP program on a kernel LPM trie holding the same prefixes (`replay::rawlpm`, what the peers use) and the empty program, each on 4096 frames from random sources (half of them inside a listed prefix), one test run per frame, on one CPU (`ng-bench lookup`). Every table size of a family is loaded at once and measured in interleaved rounds; a program's figure is its median over the rounds, and \"vs 1 prefix\" the median of the per-round ratios. *Warm*: the last of five passes over the frames, the table as these sources keep it; *cold*: the first pass, after the other programs' passes.\n");
    let _ = writeln!(r, "| family | prefixes | nodegate warm ns | vs 1 prefix | nodegate cold ns | vs 1 prefix | LPM program warm ns | vs 1 prefix | LPM program cold ns | vs 1 prefix | empty ns |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let lookup_lines: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "lookup").collect();
    for l in &lookup_lines {
        if let Some(err) = l["error"].as_str() {
            missing.push(format!("lookup {} {}: {err}", l["family"], l["prefixes"]));
        }
    }
    // (family, prefixes, who, cache) → (ns, ratio to 1 prefix)
    let lookup_row = |family: &str, n: u64, who: &str, cache: &str| {
        lookup_lines
            .iter()
            .find(|l| {
                l["family"] == family
                    && l["prefixes"].as_u64() == Some(n)
                    && l["who"] == who
                    && l["cache"] == cache
            })
            .and_then(|l| Some((l["ns"].as_f64()?, l["vs_one_prefix"].as_f64()?)))
    };
    // A program's warm and cold cells (ns and ratio to 1 prefix), or "not measured".
    let lookup_cells =
        |row: &mut String, missing: &mut Vec<String>, family: &str, n: u64, who: &str| {
            for cache in ["warm", "cold"] {
                match lookup_row(family, n, who, cache) {
                    Some((ns, vs)) => {
                        let _ = write!(row, " {ns:.1} | {vs:.2}× |");
                    }
                    None => {
                        missing.push(format!("lookup {family} {n} {who} {cache}"));
                        row.push_str(" not measured | — |");
                    }
                }
            }
        };
    for (family, sizes) in [("v4", &LOOKUP_V4[..]), ("v6", &LOOKUP_V6[..])] {
        for &n in sizes {
            let mut row = format!("| {family} | {n} |");
            for who in ["nodegate", "lpm"] {
                lookup_cells(&mut row, &mut missing, family, n, who);
            }
            let empty = lookup_row(family, n, "empty", "warm").map(|(ns, _)| ns);
            if empty.is_none() {
                missing.push(format!("lookup {family} {n} empty"));
            }
            let _ = writeln!(row, " {} |", cell(empty, &|v| format!("{v:.1}")));
            r.push_str(&row);
        }
    }

    let mib = |v: &Value| {
        v.as_f64()
            .map(|b| format!("{:.2} MiB", b / 1048576.0))
            .unwrap_or_else(|| "—".into())
    };
    let _ = writeln!(
        r,
        "\n### Source lookup structures side by side: random mixed-length prefixes, random sources, `BPF_PROG_TEST_RUN` ns/packet\n"
    );
    let _ = writeln!(r, "nodegate's flat table, DXR (D18R, IPv4) and poptrie (18-bit direct table and 6-6-2-bit nodes for IPv4, 16 bits and 18 nodes of 6 and one of 4 for IPv6), each walked by a minimal XDP program of the lookup-candidates object (`filter-ebpf/src/candidates/main.rs`: the same constant-offset parse, one table map, the answer as the return value), on the prefixes and frames of the table above with the prefixes answering 1 to 8 in turn (`benches::candidates`); every frame's answer checked against a plain longest-prefix match before timing. Measured in the same interleaved rounds as the table above; *hot*: one frame from the set's first prefix, repeated 256 times in the kernel's loop; table bytes are one copy, build the builder's time in `ng-bench`.\n");
    let _ = writeln!(r, "| family | prefixes | structure | table | build | hot ns | warm ns | vs 1 prefix | cold ns | vs 1 prefix |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let candidate_lines: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "candidate").collect();
    for l in &candidate_lines {
        if let Some(err) = l["error"].as_str() {
            // The object's own error names no candidate.
            let which: Vec<String> = ["family", "prefixes", "who"]
                .iter()
                .filter_map(|k| l.get(*k).map(|v| v.to_string().replace('"', "")))
                .collect();
            missing.push(format!("lookup candidates {}: {err}", which.join(" ")));
        }
    }
    let structures = [
        ("v4", &LOOKUP_V4[..], &["flat", "dxr", "poptrie"][..]),
        ("v6", &LOOKUP_V6[..], &["flat", "poptrie"][..]),
    ];
    for (family, sizes, whos) in structures {
        for (&n, &who) in sizes.iter().flat_map(|n| whos.iter().map(move |w| (n, w))) {
            let built = candidate_lines.iter().find(|l| {
                l["family"] == family
                    && l["prefixes"].as_u64() == Some(n)
                    && l["who"] == who
                    && l["error"].is_null()
            });
            let mut row = format!("| {family} | {n} | {who} |");
            match built {
                Some(l) => {
                    let _ = write!(
                        row,
                        " {} | {} |",
                        mib(&l["bytes"]),
                        cell(l["build_ms"].as_f64(), &|v| format!("{v:.1} ms"))
                    );
                }
                None => row.push_str(" not built | — |"),
            }
            let hot = lookup_row(family, n, who, "hot").map(|(ns, _)| ns);
            if hot.is_none() {
                missing.push(format!("lookup {family} {n} {who} hot"));
            }
            let _ = write!(row, " {} |", cell(hot, &|v| format!("{v:.1}")));
            lookup_cells(&mut row, &mut missing, family, n, who);
            let _ = writeln!(r, "{row}");
        }
    }

    let _ = writeln!(r, "\n### Source lookup tables: kernel memory\n");
    let _ = writeln!(r, "nodegate: bytes of one generation's tables as built, both generations, and the maps as the default (or the set's) capacity allocates them. LPM trie: the kernel's own accounting (`memlock` in the map's fdinfo) of one trie holding the same prefixes once.\n");
    let _ = writeln!(r, "| prefix set | IPv4 | IPv6 | nodegate, one generation | nodegate, both | maps as allocated for the capacity | LPM trie, one copy | compile |\n|---|---:|---:|---:|---:|---:|---:|---:|");
    let table_lines: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "tables").collect();
    for l in &table_lines {
        let name = l["name"].as_str().unwrap_or("?");
        if let Some(err) = l["error"].as_str() {
            missing.push(format!("tables {name}: {err}"));
            let _ = writeln!(r, "| {name} | not measured: {err} | | | | | | |");
            continue;
        }
        let _ = writeln!(
            r,
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            l["v4"],
            l["v6"],
            mib(&l["table_bytes_per_generation"]),
            mib(&l["table_bytes_both_generations"]),
            mib(&l["capacity_kernel_bytes"]),
            mib(&l["lpm_bytes_one_copy"]),
            l["compile_ms"]
                .as_f64()
                .map(|v| format!("{v:.0} ms"))
                .unwrap_or_else(|| "—".into()),
        );
    }
    if table_lines.is_empty() {
        missing.push("tables: no result".into());
    }

    let mut ratios = BTreeMap::new();
    for (traffic, title) in [
        ("fixed", "4 sources, each frame one burst (the source lookup stays hot)"),
        ("random", "a random source per copy from 75,536 (10,000 inside the 100k CIDRs, each in another CIDR: half the frames, passed; 65,536 outside: the other half, dropped); frames to a foreign MAC, so the stack discards passed frames early"),
    ] {
        let pipeline: Vec<&Value> = lines
            .iter()
            .filter(|l| l["kind"] == "pipeline" && l["traffic"].as_str().unwrap_or("fixed") == traffic)
            .collect();
        let _ = writeln!(r, "\n### veth pipeline, {title} ({} → veth → receiver, 64-byte frames)\n", generator_of(&pipeline));
        let is_ceiling = |l: &&&Value| {
            l["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("bare XDP_DROP"))
        };
        let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let ceiling = mean(pipeline.iter().filter(is_ceiling).filter_map(|l| l["mpps"].as_f64()).collect());
        let ceiling_loop = mean(pipeline.iter().filter(is_ceiling).filter_map(|l| l["mpps_loop"].as_f64()).collect());
        let _ = writeln!(r, "| receiver | CIDRs | frames delivered | dropped by the filter | Mpps | ratio to ceiling | Mpps in the generator loop | ratio (loop) |\n|---|---:|---:|---:|---:|---:|---:|---:|");
        for l in &pipeline {
            let name = l["name"].as_str().unwrap_or("?");
            if let Some(err) = l["error"].as_str() {
                missing.push(format!("pipeline ({traffic}) {name}: {err}"));
                let _ = writeln!(r, "| {name} | — | — | — | not measured: {err} | — | — | — |");
                continue;
            }
            let mpps = l["mpps"].as_f64().unwrap_or(0.0);
            let mpps_loop = l["mpps_loop"].as_f64().unwrap_or(0.0);
            let ratio = ceiling.map(|c| mpps / c);
            let ratio_loop = ceiling_loop.map(|c| mpps_loop / c);
            ratios.insert(format!("{name} [{traffic}]"), (mpps, ratio, ratio_loop));
            let dropped = l["filter_dropped"]
                .as_u64()
                .map(|d| d.to_string())
                .unwrap_or_else(|| "—".into());
            let _ = writeln!(
                r,
                "| {name} | {} | {} | {dropped} | {mpps:.3} | {} | {mpps_loop:.3} | {} |",
                l["cidrs"],
                l["delivered"],
                cell(ratio, &|v| format!("{v:.2}")),
                cell(ratio_loop, &|v| format!("{v:.2}")),
            );
        }
        if pipeline.is_empty() {
            missing.push(format!("pipeline ({traffic}): no result"));
        }
        if let (Some(c), Some(cl)) = (ceiling, ceiling_loop) {
            let _ = writeln!(r, "\nCeiling = mean of this traffic's two bare XDP_DROP runs: {c:.3} Mpps by wall time, {cl:.3} Mpps in the generator loop.");
        }
    }

    let paired = paired_rounds(lines, &mut r, &mut missing);

    let _ = writeln!(r, "\n### Reload: 100k IPv4 + 10k IPv6 prefixes (and 1M IPv4), back to back on one running program\n");
    let _ = writeln!(
        r,
        "| what | prefixes changed | reloads | p50 | p99 |\n|---|---|---:|---:|---:|"
    );
    let reload: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "reload").collect();
    let mut p50s = BTreeMap::new();
    for l in &reload {
        let name = l["name"].as_str().unwrap_or("?");
        if let Some(err) = l["error"].as_str() {
            missing.push(format!("reload {name}: {err}"));
            let _ = writeln!(r, "| {name} | — | — | not measured: {err} | — |");
            continue;
        }
        let change = match (l["change"].as_str(), name) {
            (Some("all"), n) if n.contains("1M") => "all 1M + 10k",
            (Some("all"), _) => "all 110k",
            (Some("one, spaced"), _) => "one, after the last flip's grace period",
            _ => "one",
        };
        let p50 = l["p50_ms"].as_f64().unwrap_or(0.0);
        p50s.insert(
            (
                name.to_string(),
                l["change"].as_str().unwrap_or("").to_string(),
            ),
            p50,
        );
        let _ = writeln!(
            r,
            "| {name} | {change} | {} | {p50:.1} ms | {:.1} ms |",
            l["reloads"],
            l["p99_ms"].as_f64().unwrap_or(0.0)
        );
    }
    if reload.is_empty() {
        missing.push("reload: no result".into());
    }
    for l in lines.iter().filter(|l| l["kind"] == "finding") {
        let name = l["name"].as_str().unwrap_or("?");
        let outcome = if l["ok"] == true {
            format!("succeeded in {:.1} ms", l["ms"].as_f64().unwrap_or(0.0))
        } else {
            format!(
                "failed after {:.1} ms: {}",
                l["ms"].as_f64().unwrap_or(0.0),
                l["error"].as_str().unwrap_or("?")
            )
        };
        let _ = writeln!(r, "\nFinding: {name}: {outcome}.");
    }

    let _ = writeln!(r, "\n### Key ratios (from the tables above)\n");
    if let Some(line) = &stage_goals {
        let _ = writeln!(
            r,
            "- `BPF_PROG_TEST_RUN`, allowed SYN, 1 prefix, hot: {line}"
        );
    }
    for src in ["hot", "random"] {
        if let (Some((Some(a1), Some(e1))), Some((Some(a2), Some(e2)))) =
            (testrun.get(&(1, src)), testrun.get(&(100_000, src)))
        {
            let _ = writeln!(
                r,
                "- `BPF_PROG_TEST_RUN`, {src} sources: nodegate adds {:.1} ns over the empty program at 1 prefix and {:.1} ns at 100k ({:.2}x and {:.2}x the empty program).",
                a1 - e1,
                a2 - e2,
                a1 / e1,
                a2 / e2
            );
        }
    }
    for (family, big) in [
        ("v4", &[100_000u64, 1_000_000][..]),
        ("v6", &[100_000u64][..]),
    ] {
        for &n in big {
            let get = |who, cache| {
                Some((
                    lookup_row(family, 1, who, cache)?.0,
                    lookup_row(family, n, who, cache)?,
                ))
            };
            if let (Some((ng1, (ngn, ngr))), Some((_, (_, ngr_cold))), Some((lpm1, (lpmn, lpmr)))) = (
                get("nodegate", "warm"),
                get("nodegate", "cold"),
                get("lpm", "warm"),
            ) {
                let _ = writeln!(
                    r,
                    "- source lookup, {family} random mixed prefixes, random sources (warm): nodegate {ngn:.1} ns at {n} prefixes = {ngr:.2}× its 1-prefix {ng1:.1} ns (goal ≤ 1.15×; cold {ngr_cold:.2}×); the LPM-trie program {lpmn:.1} ns = {lpmr:.2}× its 1-prefix {lpm1:.1} ns."
                );
            }
        }
    }
    for line in &paired {
        let _ = writeln!(r, "{line}");
    }
    let pipeline_lines: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "pipeline").collect();
    let sender = sender_note(&pipeline_lines);
    for (name, (mpps, ratio, ratio_loop)) in &ratios {
        if !name.starts_with("bare") {
            if let (Some(q), Some(ql)) = (ratio, ratio_loop) {
                let _ = writeln!(
                    r,
                    "- veth pipeline{sender}, {name}: {mpps:.3} Mpps, {q:.2} of the XDP_DROP ceiling ({ql:.2} by generator loop time)."
                );
            }
        }
    }
    for change in ["all", "one"] {
        let ng = p50s.get(&(
            "nodegate compile + publish + flip".to_string(),
            change.to_string(),
        ));
        let nft = p50s.get(&(
            "nft -f (interval sets, auto-merge)".to_string(),
            change.to_string(),
        ));
        let ips = p50s.get(&(
            "ipset restore (hash:net, swap)".to_string(),
            change.to_string(),
        ));
        if let (Some(ng), Some(nft), Some(ips)) = (ng, nft, ips) {
            let _ = writeln!(
                r,
                "- reload p50 with {} changed: nodegate {ng:.1} ms, nft -f {nft:.1} ms ({:.2}x nodegate), ipset restore {ips:.1} ms ({:.2}x nodegate).",
                if change == "all" { "every prefix" } else { "one prefix" },
                nft / ng,
                ips / ng
            );
        }
    }
    if let Some(spaced) = p50s.get(&(
        "nodegate compile + publish + flip".to_string(),
        "one, spaced".to_string(),
    )) {
        let _ = writeln!(
            r,
            "- reload p50 with one prefix changed, the previous flip's grace period over: nodegate {spaced:.1} ms (goal ≤ 5 ms)."
        );
    }
    missing.extend(stage_missing);
    (r, missing)
}

/// A goal ratio of the stage table (`stage_ratio` lines: the median of its per-round ratios,
/// and the rounds' lowest and highest), if this run produced it.
fn stage_ratio(lines: &[Value], name: &str) -> Option<(f64, f64, f64)> {
    let l = lines
        .iter()
        .find(|l| l["kind"] == "stage_ratio" && l["ratio"] == name)?;
    Some((
        l["median"].as_f64()?,
        l["min"].as_f64()?,
        l["max"].as_f64()?,
    ))
}

/// `1.23× (rounds 1.10–1.40)` for a [`stage_ratio`] with `unit` `×`.
fn show_ratio((median, min, max): (f64, f64, f64), unit: &str) -> String {
    format!("{median:.2}{unit} (rounds {min:.2}–{max:.2})")
}

/// The stage table's goal line: the shipped program over the empty one per family, and IPv6
/// over IPv4, each the median of its per-round ratios (steadier than a ratio of medians,
/// whose two sides can come from a quiet and a loud phase); `None` if one is missing.
fn stage_goal_line(lines: &[Value]) -> Option<String> {
    let (v4, v6, v6_v4) = (
        stage_ratio(lines, "v4 full / empty")?,
        stage_ratio(lines, "v6 full / empty")?,
        stage_ratio(lines, "full v6 / v4")?,
    );
    Some(format!(
        "Shipped program / empty program, median of the per-round ratios: IPv4 {}, IPv6 {} (goal ≤ 2.0×); IPv6 / IPv4 {} (goal ≤ 1.2).",
        show_ratio(v4, "×"),
        show_ratio(v6, "×"),
        show_ratio(v6_v4, "")
    ))
}

/// What sent a pipeline's frames, from its lines' `generator` field: the XDP live-frames
/// generator, or the AF_PACKET socket that stands in where the kernel refuses live-frames
/// mode (a ceiling about a tenth as high, so its ratios are not comparable with the other's).
fn generator_of(lines: &[&Value]) -> &'static str {
    let mut engines: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["generator"].as_str())
        .collect();
    engines.sort_unstable();
    engines.dedup();
    match engines.as_slice() {
        ["af-packet"] => "AF_PACKET sender: this kernel refuses BPF_PROG_TEST_RUN live-frames mode, so the ceiling is the sender's and every receiver's share of it is higher than with live frames",
        ["xdp-live-frames"] | [] => "XDP live-frames generator",
        _ => "XDP live-frames generator and AF_PACKET sender mixed",
    }
}

/// What the key-ratio lines say after "veth pipeline" when the AF_PACKET sender measured
/// any of them (nothing for live frames alone).
fn sender_note(lines: &[&Value]) -> &'static str {
    if lines.iter().any(|l| l["generator"] == "af-packet") {
        " (AF_PACKET sender, not comparable with live-frames figures)"
    } else {
        ""
    }
}

/// The random-source pipeline's paired rounds (`pipeline_pair` lines): a table of the rounds
/// and the median of their nodegate / xdp-filter ratios, and of nodegate's `verdict`
/// knock-out (no counting, no drop samples) in the same rounds. Returns the key-ratio lines.
fn paired_rounds(lines: &[Value], r: &mut String, missing: &mut Vec<String>) -> Vec<String> {
    let rounds: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "pipeline_pair")
        .collect();
    let _ = writeln!(r, "\n### veth pipeline, random sources: nodegate (100k CIDRs) against xdp-filter (10,000 addresses) in paired rounds ({})\n", generator_of(&rounds));
    let _ = writeln!(r, "The traffic of the table above; each round one pass of each receiver, the first to go rotating. The ratio is nodegate's Mpps over xdp-filter's in the same round. The third receiver is nodegate's `verdict` knock-out build: the same program and verdicts without counting and drop samples (the epilogue).\n");
    let _ = writeln!(r, "| round | first | nodegate Mpps | xdp-filter Mpps | ratio | ratio (generator loop) | without counting Mpps | without counting / xdp-filter | nodegate / without counting |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let (mut ratios, mut uncounted, mut epilogue) = (Vec::new(), Vec::new(), Vec::new());
    for l in &rounds {
        if let Some(err) = l["error"].as_str() {
            missing.push(format!("pipeline paired rounds: {err}"));
            let _ = writeln!(r, "| — | — | not measured: {err} | — | — | — | — | — | — |");
            continue;
        }
        let f = |k: &str| l[k].as_f64().unwrap_or(f64::NAN);
        let cell = |k: &str| l[k].as_f64().map_or("—".to_string(), |v| format!("{v:.3}"));
        ratios.push(f("ratio"));
        if let (Some(u), Some(e)) = (
            l["uncounted_ratio"].as_f64(),
            l["shipped_over_uncounted"].as_f64(),
        ) {
            uncounted.push(u);
            epilogue.push(e);
        }
        let _ = writeln!(
            r,
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            l["round"],
            l["first"].as_str().unwrap_or("?"),
            f("nodegate_mpps"),
            f("xdp_filter_mpps"),
            f("ratio"),
            f("ratio_loop"),
            cell("uncounted_mpps"),
            cell("uncounted_ratio"),
            cell("shipped_over_uncounted"),
        );
    }
    let Some((median, lo, hi)) = median_range(&mut ratios) else {
        missing.push("pipeline paired rounds: no result".into());
        return Vec::new();
    };
    let n = ratios.len();
    let _ = writeln!(
        r,
        "\nMedian ratio of {n} rounds: {median:.3} (lowest {lo:.3}, highest {hi:.3}); goal ≥ 1.0."
    );
    let mut key = vec![format!(
        "- veth pipeline{sender}, random sources, nodegate 100k CIDRs / xdp-filter 10,000 addresses, median of {n} paired rounds: {median:.3}× (lowest {lo:.3}×, highest {hi:.3}×; goal ≥ 1.0×).",
        sender = sender_note(&rounds)
    )];
    if let (Some((u, ulo, uhi)), Some((e, elo, ehi))) =
        (median_range(&mut uncounted), median_range(&mut epilogue))
    {
        let m = uncounted.len();
        let _ = writeln!(
            r,
            "Without counting and drop samples: {u:.3} of xdp-filter (lowest {ulo:.3}, highest {uhi:.3}); the shipped program / the knock-out: {e:.3} (lowest {elo:.3}, highest {ehi:.3}), medians of {m} rounds."
        );
        key.push(format!(
            "- veth pipeline{sender}, random sources, nodegate without counting and drop samples (the `verdict` knock-out) / xdp-filter: {u:.3}×; the shipped program / the knock-out: {e:.3}× (medians of {m} rounds): what the epilogue costs on this path.",
            sender = sender_note(&rounds)
        ));
    } else {
        missing
            .push("pipeline paired rounds: the knock-out without counting was not measured".into());
    }
    key
}

/// Median, lowest and highest of `values` (sorted in place); `None` when empty.
fn median_range(values: &mut [f64]) -> Option<(f64, f64, f64)> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = match n {
        0 => return None,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    };
    Some((median, values[0], values[n - 1]))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{generator_of, median_range, paired_rounds, sender_note, stage_goal_line};

    #[test]
    fn pipeline_figures_name_the_af_packet_sender() {
        let live = serde_json::json!({"kind": "pipeline", "generator": "xdp-live-frames"});
        let socket = serde_json::json!({"kind": "pipeline", "generator": "af-packet"});
        assert_eq!(sender_note(&[&live]), "");
        assert!(sender_note(&[&live, &socket]).contains("AF_PACKET"));
        assert_eq!(generator_of(&[&live]), "XDP live-frames generator");
        assert!(generator_of(&[&socket]).starts_with("AF_PACKET sender"));
        assert!(generator_of(&[&live, &socket]).contains("mixed"));
    }

    #[test]
    fn stage_goals_are_the_per_round_medians_and_need_all_three() {
        let ratio = |name: &str, median: f64| {
            json!({"kind": "stage_ratio", "ratio": name, "median": median, "min": median - 0.1,
                   "max": median + 0.2, "rounds": 15})
        };
        let mut lines = vec![
            ratio("v4 full / empty", 3.1),
            ratio("v6 full / empty", 3.4),
            // A row median must not be mistaken for a ratio.
            json!({"kind": "stages", "build": "full", "family": "v4", "ns": 65.0}),
        ];
        assert_eq!(stage_goal_line(&lines), None);
        lines.push(ratio("full v6 / v4", 1.11));
        assert_eq!(
            stage_goal_line(&lines).unwrap(),
            "Shipped program / empty program, median of the per-round ratios: IPv4 3.10× (rounds 3.00–3.30), IPv6 3.40× (rounds 3.30–3.60) (goal ≤ 2.0×); IPv6 / IPv4 1.11 (rounds 1.01–1.31) (goal ≤ 1.2)."
        );
    }

    #[test]
    fn median_range_of_odd_even_and_empty() {
        assert_eq!(median_range(&mut [3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(
            median_range(&mut [4.0, 1.0, 3.0, 2.0]),
            Some((2.5, 1.0, 4.0))
        );
        assert_eq!(median_range(&mut []), None);
    }

    fn round(n: u32, ratio: f64, uncounted: Option<(f64, f64)>) -> serde_json::Value {
        let mut l = json!({"kind": "pipeline_pair", "round": n, "first": "nodegate",
            "nodegate_mpps": 2.0, "xdp_filter_mpps": 2.0 / ratio, "ratio": ratio, "ratio_loop": ratio});
        if let Some((u, e)) = uncounted {
            l["uncounted_mpps"] = json!(2.0 * e);
            l["uncounted_ratio"] = json!(u);
            l["shipped_over_uncounted"] = json!(e);
        }
        l
    }

    #[test]
    fn paired_rounds_report_both_medians() {
        let lines = [
            round(1, 0.90, Some((0.95, 0.96))),
            round(2, 0.94, Some((0.97, 0.98))),
            round(3, 0.92, Some((0.99, 0.94))),
        ];
        let (mut r, mut missing) = (String::new(), Vec::new());
        let key = paired_rounds(&lines, &mut r, &mut missing);
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(key.len(), 2);
        assert!(
            key[0].contains("median of 3 paired rounds: 0.920×"),
            "{}",
            key[0]
        );
        assert!(key[1].contains("/ xdp-filter: 0.970×"), "{}", key[1]);
        assert!(key[1].contains("the knock-out: 0.960×"), "{}", key[1]);
        let rows = r
            .lines()
            .filter(|l| {
                l.strip_prefix("| ")
                    .is_some_and(|l| l.starts_with(char::is_numeric))
            })
            .count();
        assert_eq!(rows, 3, "one table row per round:\n{r}");
    }

    #[test]
    fn a_missing_knock_out_is_reported_not_invented() {
        let lines = [
            json!({"kind": "pipeline_pair", "name": "nodegate without counting", "error": "NODEGATE_KNOCKOUT_DIR unset"}),
            round(1, 0.9, None),
        ];
        let (mut r, mut missing) = (String::new(), Vec::new());
        let key = paired_rounds(&lines, &mut r, &mut missing);
        assert_eq!(key.len(), 1);
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing
            .iter()
            .any(|m| m.contains("NODEGATE_KNOCKOUT_DIR unset")));
        assert!(
            r.contains("| 1 | nodegate | 2.000 | 2.222 | 0.900 | 0.900 | — | — | — |"),
            "{r}"
        );
    }
}
