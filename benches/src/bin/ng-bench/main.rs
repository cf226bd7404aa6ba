//! `ng-bench`: the privileged half of `cargo xtask bench`. Prints one JSON object per line:
//!
//! - `pipeline`: a live-frames generator → veth → receiver pipeline in a private lab (two
//!   fresh network namespaces), 64-byte frames, the same traffic for every receiver: bare
//!   `XDP_DROP` (the ceiling, measured first and last), nodegate with 1 and 100k CIDRs,
//!   xdp-filter, nftables netdev ingress + interval set, iptables raw + ipset hash:net;
//!   then random sources (`traffic: random`), and `pipeline_pair`: nodegate against
//!   xdp-filter on that traffic in paired rounds;
//! - `reload`: compile + publish + flip of 100k IPv4 + 10k IPv6 prefixes, next to `nft -f`
//!   and `ipset restore` of the same lists, when every prefix changes and when one does.
//!
//!   Also: the operator's wait from a changed 2.7 MB YAML file of 110k prefixes to the flip
//!   (read, validate, compile, publish), and all-new reloads of 1M IPv4 prefixes;
//! - `tables`: kernel memory of the source lookup tables (per generation, and the map as
//!   allocated for a capacity) beside a kernel LPM trie holding the same prefixes
//!   (`memlock` of its fdinfo), for random mixed-length sets, the bench lists and the
//!   shipped examples.
//!
//! - `stages`: the cost of each stage of the XDP program: the knock-out builds
//!   (`NODEGATE_KNOCKOUT`, built by `cargo xtask bench` into `NODEGATE_KNOCKOUT_DIR`), the
//!   shipped program loaded as root and loaded with CAP_BPF + CAP_NET_ADMIN only (the
//!   kernel's Spectre hardening on), xdp-filter's program (the C peer) and the empty program,
//!   measured in interleaved rounds;
//! - `lookup`: the source lookup with 1 → 1M random mixed-length prefixes and random
//!   sources, beside a plain XDP program on a kernel LPM trie, in interleaved rounds.
//!
//! Usage: `ng-bench [--quick] [pipeline|reload|tables|stages|lookup]...` (default all). Needs root.

mod candidates;
mod lookup;
mod pipeline;
mod reload;
mod rounds;
mod stages;
mod tables;

use anyhow::bail;
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let parts: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = parts.is_empty();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("ng-bench needs root (XDP attach, network namespaces, nft, ipset)");
    }
    // Ctrl-C stops the generator instead of the process, so every guard cleans up.
    filter_user::replay::live::stop_on_signal();
    let mut failed = 0;
    if all || parts.contains(&"pipeline") {
        failed += pipeline::pipeline(quick)?;
    }
    if all || parts.contains(&"reload") {
        failed += reload::reload(quick)?;
    }
    if all || parts.contains(&"tables") {
        failed += tables::tables(quick)?;
    }
    if all || parts.contains(&"stages") {
        failed += stages::stages(quick)?;
    }
    if all || parts.contains(&"lookup") {
        failed += lookup::lookup(quick)?;
    }
    if failed > 0 {
        bail!("{failed} measurement(s) failed");
    }
    Ok(())
}

/// Run one measurement; a failure is printed as a JSON line and counted, and the next
/// measurement still runs (each one's guards have cleaned up by then).
fn variant(kind: &str, name: &str, failed: &mut usize, f: impl FnOnce() -> anyhow::Result<()>) {
    if let Err(e) = f() {
        *failed += 1;
        println!(
            "{}",
            json!({"kind": kind, "name": name, "error": format!("{e:#}")})
        );
    }
}
