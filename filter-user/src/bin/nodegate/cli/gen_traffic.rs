//! `nodegate gen-traffic`: write a realistic, reproducible capture.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::ValueEnum;
use filter_user::{
    replay::{write_capture, CaptureFormat},
    traffic::{category_counts, generate, Profile},
};

/// Capture format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    /// Classic pcap.
    Pcap,
    /// pcapng.
    Pcapng,
}

/// Write a capture of Kubernetes-node traffic: control plane → 443/10250/high ports, node to
/// node, load balancers, SSH from admins, return traffic, scans from outside, ARP/ND/ICMP
/// errors, and malformed and evasive frames; IPv4 and IPv6. The address plan is that of
/// examples/eks-node.yaml. The same seed writes the same bytes.
#[derive(clap::Args)]
pub struct Args {
    /// The capture file to write.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Number of frames.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Seed of the generator (ChaCha8): the same seed gives the same capture.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of IPv6 frames, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=100))]
    ipv6: u32,
    /// Capture format (default: pcapng for a .pcapng file name, else pcap).
    #[arg(long, value_enum)]
    format: Option<OutFormat>,
}

pub fn run(args: Args, out: super::output::Output) -> anyhow::Result<ExitCode> {
    let profile = Profile {
        ipv6_per_mille: args.ipv6 * 10,
        ..Profile::default()
    };
    let frames = generate(&profile, args.count, args.seed);
    let format = match args.format {
        Some(OutFormat::Pcap) => CaptureFormat::Pcap,
        Some(OutFormat::Pcapng) => CaptureFormat::PcapNg,
        None => CaptureFormat::from_path(&args.file),
    };
    let data: Vec<Vec<u8>> = frames.iter().map(|f| f.data.clone()).collect();
    // A fixed start time keeps the file byte-identical for a seed.
    write_capture(
        &args.file,
        format,
        &data,
        Duration::from_secs(1_700_000_000),
        Duration::from_micros(10),
    )
    .context("failed to write the capture")?;
    let categories = category_counts(&frames);
    if out.is_json() {
        out.document(&serde_json::json!({
            "file": args.file,
            "format": format.name(),
            "frames": frames.len(),
            "seed": args.seed,
            "categories": categories,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let counts: Vec<String> = categories.iter().map(|(c, n)| format!("{c} {n}")).collect();
    eprintln!(
        "wrote {} frames to {} (seed {}): {}",
        frames.len(),
        args.file.display(),
        args.seed,
        counts.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
