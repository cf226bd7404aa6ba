//! `nodegate replay`: the traffic replay harness.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use filter_user::{
    config,
    loader::FilterMaps,
    replay::{
        frame_json,
        live::{self, LiveOptions, LiveReport},
        read_capture,
        snap::as_on_the_wire,
        summary_json, LoadedPolicy, Replayer, Summary,
    },
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{output::Output, PinArgs};

/// Replay a capture through the real XDP program and the reference model.
///
/// Every frame of the pcap/pcapng file runs through nodegate's XDP program with
/// BPF_PROG_TEST_RUN (private maps: nothing attached, no pinned state touched) and through
/// the reference model, in capture order. Prints verdict/reason/rule counts, every frame
/// where the two disagree, and ns/frame next to an empty XDP program measured in the same
/// run. Exit status 1 when any frame disagrees. Needs root (or CAP_BPF + CAP_NET_ADMIN)
/// unless --model-only.
///
/// With `-o json` (or `jsonl`), one object per frame in capture order
/// (`{"index":N,"verdict":"pass"|"drop","reason":"…","rule":"…"|null,"would_drop":bool}`),
/// then one `{"summary":{…}}` object; with --live, one `{"live":{…}}` object.
///
/// With --live, the capture is sent at full rate onto a veth pair by an XDP live-frames
/// generator instead (through an AF_PACKET socket, at a lower rate, where the kernel
/// refuses live-frames mode), and the filter's counters report what happened.
#[derive(clap::Args)]
pub struct Args {
    /// Capture file (pcap or pcapng, Ethernet link type; the format is detected).
    pcap: PathBuf,
    /// The rule file to judge with.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Judge with the reference model only (no kernel, no privileges).
    #[arg(long, conflicts_with = "live")]
    model_only: bool,
    /// Repetitions per frame in the timing pass (kernel-measured ns/frame of nodegate and of
    /// an empty XDP program, each frame in turn); 0 skips the timing pass. Values above 1
    /// cost ~26 ms of kernel dispatcher switching per frame and call.
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: u32,
    /// Send the capture onto a veth pair at full rate with an XDP live-frames generator
    /// (an AF_PACKET socket where the kernel refuses live-frames mode) instead. Without --iface, a private lab (two fresh network namespaces joined by a
    /// veth pair, deleted afterwards) gets the rule file attached in driver mode.
    #[arg(long)]
    live: bool,
    /// With --live: send out of this existing interface (one end of a veth pair whose
    /// other end has an XDP program attached, e.g. `nodegate run`); per-reason counts come
    /// from the pinned maps in --pin-dir when they exist.
    #[arg(long, value_name = "IF", requires = "live")]
    iface: Option<String>,
    /// Judge the frames as arriving on this interface: the mode and default the file's
    /// `interfaces:` section gives it apply, in the kernel (the test runs' loopback stands in
    /// for it) and in the model.
    #[arg(long, value_name = "IF", conflicts_with = "live")]
    on_iface: Option<String>,
    /// With --iface: the network namespace (`ip netns` name) the interface is in.
    #[arg(long, value_name = "NS", requires = "iface")]
    netns: Option<String>,
    /// With --live: send the whole capture N times. From 1000 on, each frame goes out in
    /// bursts of back-to-back copies (full rate within a burst, ~26 ms of set-up per
    /// burst); below, one frame per generator call in exact capture order (tens of
    /// thousands of frames per second).
    #[arg(
        long = "loop",
        value_name = "N",
        default_value_t = 1,
        requires = "live"
    )]
    loops: u64,
    /// With --live: target rate in frames per second (default: as fast as possible).
    #[arg(long, value_name = "PPS", requires = "live")]
    rate: Option<u64>,
    #[command(flatten)]
    pins: PinArgs,
}

fn progress_bar(total: u64, enabled: bool) -> ProgressBar {
    // Progress goes to stderr and only to a terminal; stdout stays clean for the report.
    if !enabled || total < 1000 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    bar
}

pub fn run(args: Args, out: Output) -> anyhow::Result<ExitCode> {
    let loaded = config::load_file(&args.config)
        .with_context(|| format!("failed to load {}", args.config.display()))?;
    let capture =
        read_capture(&args.pcap).with_context(|| "failed to read the capture".to_string())?;
    // What the filter saw on the wire: a frame the snap length cut after its headers,
    // padded back to its length; one cut inside them, `None` (not judged).
    let on_the_wire: Vec<Option<Vec<u8>>> = capture
        .frames
        .iter()
        .map(|f| as_on_the_wire(&f.data, f.original_len))
        .collect();
    let frames: Vec<&[u8]> = on_the_wire.iter().flatten().map(Vec::as_slice).collect();
    if args.live {
        return run_live(&args, out, &loaded.policy, &frames);
    }

    let jsonl = out.is_json();
    let bar = progress_bar(capture.frames.len() as u64, !jsonl);
    let mut kernel = if args.model_only {
        None
    } else {
        Some(LoadedPolicy::load_on(&loaded.policy, args.on_iface.as_deref()).context("failed to load the XDP program for BPF_PROG_TEST_RUN (use --model-only without privileges)")?)
    };
    let mut replayer = match kernel.as_mut() {
        Some(k) => Replayer::with_kernel(&loaded.policy, k, args.repeat)?,
        None => Replayer::model_only_on(&loaded.policy, args.on_iface.as_deref()),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (captured, frame) in capture.frames.iter().zip(&on_the_wire) {
        bar.inc(1);
        let Some(frame) = frame else {
            replayer.not_judged();
            continue;
        };
        if captured.is_cut() {
            replayer.judging_cut();
        }
        let result = replayer.frame(frame)?;
        if jsonl {
            writeln!(out, "{}", frame_json(&result))?;
        }
    }
    bar.finish_and_clear();
    let summary = replayer.finish(&frames)?;
    if jsonl {
        writeln!(out, "{}", summary_json(&summary))?;
    } else {
        print_text(&mut out, &args, &summary)?;
    }
    out.flush()?;
    Ok(if summary.disagreement_count == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_text(out: &mut impl Write, args: &Args, s: &Summary) -> std::io::Result<()> {
    writeln!(
        out,
        "replayed {} frames of {} against {}: {} through the XDP program (BPF_PROG_TEST_RUN), {} by the model only",
        s.frames,
        args.pcap.display(),
        args.config.display(),
        s.kernel_frames,
        s.model_only_frames
    )?;
    if s.cut_judged + s.cut_not_judged > 0 {
        writeln!(
            out,
            "cut by the snap length: {} judged as on the wire (headers captured, padded to their original length), {} not judged (headers cut)",
            s.cut_judged, s.cut_not_judged
        )?;
    }
    let verdicts: Vec<String> = s.verdicts.iter().map(|(v, n)| format!("{v} {n}")).collect();
    writeln!(out, "verdicts: {}", verdicts.join(", "))?;
    writeln!(out, "reasons:")?;
    let mut reasons: Vec<_> = s.reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (reason, n) in reasons {
        writeln!(out, "  {reason:<22} {n:>10}")?;
    }
    writeln!(out, "rules:")?;
    for (rule, n) in &s.rules {
        writeln!(out, "  {rule:<22} {n:>10}")?;
    }
    if s.kernel_frames > 0 {
        writeln!(
            out,
            "disagreements (kernel vs reference model): {}",
            s.disagreement_count
        )?;
        for d in &s.disagreements {
            let show = |a: &filter_user::model::Outcome| match &a.rule {
                Some(rule) => format!("{} ({}, rule {rule})", a.verdict, a.reason),
                None => format!("{} ({})", a.verdict, a.reason),
            };
            writeln!(
                out,
                "  frame {}: kernel {} / model {}",
                d.index,
                show(&d.kernel),
                show(&d.model)
            )?;
        }
    }
    if let Some(t) = &s.timing {
        writeln!(
            out,
            "ns/frame (kernel-measured, {} repetitions per frame): nodegate {:.1}, empty XDP program {:.1} (nodegate adds {:.1} ns, {:.2}x); reference model {:.1} (userspace)",
            t.repeat,
            t.nodegate_ns,
            t.empty_xdp_ns,
            t.nodegate_ns - t.empty_xdp_ns,
            t.nodegate_ns / t.empty_xdp_ns.max(0.001),
            t.model_ns
        )?;
    }
    Ok(())
}

fn run_live(
    args: &Args,
    out: Output,
    policy: &filter_user::policy::Policy,
    frames: &[&[u8]],
) -> anyhow::Result<ExitCode> {
    // Ctrl-C stops the generator; the guards then delete the lab and detach everything.
    live::stop_on_signal();
    let opts = LiveOptions {
        loops: args.loops,
        rate: args.rate,
        ..LiveOptions::default()
    };
    let total = frames
        .iter()
        .filter(|f| f.len() >= filter_user::replay::MIN_FRAME)
        .count() as u64
        * args.loops;
    let bar = progress_bar(total, !out.is_json());
    let mut progress = |sent: u64| bar.set_position(sent);
    let report = match &args.iface {
        None => live::replay_in_lab(policy, frames, &opts, &mut progress)
            .context("live replay in a private veth lab failed")?,
        Some(iface) => {
            let maps_dir = filter_user::loader::pins::PinLayout::new(&args.pins.pin_dir).maps_dir();
            let maps = FilterMaps::open_pinned(&maps_dir).ok();
            live::replay_on_iface(
                iface,
                args.netns.as_deref(),
                maps.as_ref(),
                frames,
                &opts,
                &mut progress,
            )
            .with_context(|| format!("live replay onto {iface} failed"))?
        }
    };
    bar.finish_and_clear();
    if out.is_json() {
        out.document(&serde_json::json!({ "live": report }))?;
    } else {
        print_live(&report, args.iface.is_some());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_live(r: &LiveReport, external: bool) {
    println!(
        "live replay: sent {} frames in {:.3} s with the {}",
        r.sent,
        r.elapsed.as_secs_f64(),
        match r.generator {
            live::PACKET_SOCKET =>
                "AF_PACKET sender (this kernel refuses BPF_PROG_TEST_RUN live-frames mode)",
            _ => "XDP live-frames generator",
        }
    );
    if external && r.delivered == 0 && r.reasons.is_empty() {
        println!(
            "  {:.3} Mpps sent (no pinned nodegate maps found: per-reason counts unavailable)",
            r.mpps
        );
        return;
    }
    println!(
        "delivered {} ({:.3} Mpps): passed {} (would_drop {}), dropped {}; {} not delivered (receiver ring full)",
        r.delivered,
        r.mpps,
        r.passed,
        r.would_drop,
        r.dropped,
        r.sent.saturating_sub(r.delivered)
    );
    println!("reasons:");
    let mut reasons: Vec<_> = r.reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (reason, n) in reasons {
        println!("  {reason:<30} {n:>12}");
    }
    if !r.would_drop_reasons.is_empty() {
        println!("would_drop (monitor mode: passed, enforcing would drop):");
        for (reason, n) in &r.would_drop_reasons {
            println!("  {reason:<30} {n:>12}");
        }
    }
    if !r.rules.is_empty() {
        println!("rules:");
        for (rule, n) in &r.rules {
            println!("  {rule:<30} {n:>12}");
        }
    }
}
