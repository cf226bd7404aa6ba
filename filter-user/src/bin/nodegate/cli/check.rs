//! `nodegate check FILE`: validate and show what the kernel would get.

use std::{path::PathBuf, process::ExitCode};

use filter_common::{ServiceKind, MAX_CLASSES, MAX_PROFILES, MAX_RULES, MAX_SEGMENTS};
use filter_user::{
    compiler::kind_name,
    config::{self, ConfigError, Diagnostic},
    diff::{lockout_risks, needed_on_this_node},
};

use super::output::Output;

/// Validate a rule file.
#[derive(clap::Args)]
pub struct Args {
    /// The rule file; `-` reads it from stdin (`nodegate import … | nodegate check -`).
    file: PathBuf,
    /// The resolver configuration whose nameservers' DNS replies must keep passing.
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Where the routing tables are read (`route`, `ipv6_route`): the default gateways'
    /// echo replies must keep passing.
    #[arg(long, value_name = "DIR", default_value = "/proc/net")]
    proc_net: PathBuf,
    /// Refuse (exit 1) a file that would cut off the SSH session this runs in
    /// (`SSH_CONNECTION`), the resolvers' DNS replies, the default gateways' echo replies or
    /// the control plane (a `control-plane` set) on tcp 443/10250; without it a warning.
    #[arg(long)]
    strict: bool,
}

/// How the file is named in messages: `stdin` for `-`.
fn shown(file: &std::path::Path) -> std::borrow::Cow<'_, str> {
    if file == std::path::Path::new("-") {
        "stdin".into()
    } else {
        file.to_string_lossy()
    }
}

/// The rule file at `file`, or on stdin for `-`.
fn load(file: &std::path::Path) -> Result<config::Loaded, ConfigError> {
    if file != std::path::Path::new("-") {
        return config::load_file(file);
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
        ConfigError::Read {
            path: file.to_path_buf(),
            source,
        }
    })?;
    config::parse_str("stdin", &text)
}

fn diag_json(d: &Diagnostic) -> serde_json::Value {
    serde_json::json!({"file": d.file, "line": d.line, "column": d.column, "severity": d.severity.to_string(), "message": d.message, "hint": d.hint})
}

pub fn run(args: Args, out: Output) -> anyhow::Result<ExitCode> {
    let loaded = match load(&args.file) {
        Ok(loaded) => loaded,
        Err(err) => {
            match &err {
                ConfigError::Invalid { errors, warnings } if out.is_json() => {
                    let all: Vec<_> = errors.iter().chain(warnings).map(diag_json).collect();
                    out.document(&serde_json::json!({"valid": false, "diagnostics": all}))?;
                }
                ConfigError::Invalid { errors, warnings } => {
                    for d in errors.iter().chain(warnings) {
                        eprintln!("{d}");
                    }
                    eprintln!("{}: {} error(s); rejected", shown(&args.file), errors.len());
                }
                ConfigError::Read { .. } => super::output::report(&err.into(), out),
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    // The load compiled the tables (capacity errors are config errors there): no second compile.
    let tables = &loaded.tables;
    let s = &tables.stats;
    let policy = &loaded.policy;
    let needed = needed_on_this_node(&args.resolv_conf, &args.proc_net, &[&loaded]);
    let lockout = lockout_risks(policy, &needed);
    let refused = args.strict && !lockout.is_empty();
    let cap = policy.capacity;
    let room = cap.table_words_per_gen();
    if out.is_json() {
        let rules: Vec<_> = policy
            .rules_in_precedence()
            .map(|r| serde_json::json!({"rule": r.name, "kind": r.kind.name(), "protocol": r.protocol.name(), "sources": r.sources.len(), "interfaces": r.interfaces, "keys": r.keys.iter().map(|k| format!("{}-{}", k.start(), k.end())).collect::<Vec<_>>()}))
            .collect();
        out.document(&serde_json::json!({
                "valid": true,
                "mode": policy.mode.name(),
                "default": policy.default.name(),
                "interfaces": policy.interfaces.keys().map(|name| (name.clone(), serde_json::json!({
                    "mode": policy.mode_on(Some(name)).name(),
                    "default": policy.default_on(Some(name)).name(),
                }))).collect::<serde_json::Map<_, _>>(),
                "rules": rules,
                "tables": {"ipv4_prefixes": s.v4_prefixes, "ipv6_prefixes": s.v6_prefixes, "classes": s.classes, "rows": s.rows, "profiles": s.profiles, "segments": s.segments, "rules": s.rules, "ipv4_table_bytes_per_generation": s.v4_table_words * 4, "ipv6_table_bytes_per_generation": s.v6_table_words * 4},
                "capacity": {"ipv4_prefixes": cap.ipv4, "ipv6_prefixes": cap.ipv6, "classes": MAX_CLASSES, "segments_per_kind": MAX_SEGMENTS, "rules": MAX_RULES - 1, "ipv4_table_bytes_per_generation": room.0 * 4, "ipv6_table_bytes_per_generation": room.1 * 4, "table_kernel_bytes": cap.table_bytes()},
                "diagnostics": loaded.warnings.iter().map(diag_json).collect::<Vec<_>>(),
                "lockout": lockout,
                "refused": refused,
        }))?;
        return Ok(if refused {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    println!("{}: valid", shown(&args.file));
    println!(
        "  mode {}, default {}, return traffic {}, fragments {}",
        policy.mode.name(),
        policy.default.name(),
        policy.return_traffic.describe(),
        policy.fragments.name()
    );
    for name in policy.interfaces.keys() {
        println!(
            "  on interface {name}: mode {}, default {}",
            policy.mode_on(Some(name)).name(),
            policy.default_on(Some(name)).name()
        );
    }
    println!(
        "\n  {:<3} {:<32} {:<9} {:<7} {:>8}  keys",
        "#", "rule (evaluation order)", "kind", "proto", "sources"
    );
    for (i, r) in policy.rules_in_precedence().enumerate() {
        let (kind, proto) = (r.kind.name(), r.protocol.name());
        let keys = r.keys_text();
        let on = if r.interfaces.is_empty() {
            String::new()
        } else {
            format!("  (only on {})", r.interfaces.join(", "))
        };
        println!(
            "  {:<3} {:<32} {:<9} {:<7} {:>8}  {}{on}",
            i + 1,
            r.name,
            kind,
            proto,
            r.sources.len(),
            keys
        );
    }
    print_capacity(s, &cap);
    if loaded.warnings.is_empty() {
        println!("\n  no warnings");
    } else {
        println!("\n  {} warning(s):", loaded.warnings.len());
        for w in &loaded.warnings {
            println!("  {w}");
        }
    }
    for risk in &lockout {
        println!("  WARNING {risk}");
    }
    if refused {
        eprintln!(
            "{}: refused (--strict): it would cut off what this node needs (see the lockout warnings)",
            shown(&args.file)
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The compiled tables against their capacity, one aligned row each.
fn print_capacity(
    s: &filter_user::compiler::TableStats,
    cap: &filter_user::policy::PrefixCapacity,
) {
    let row = |what: &str, used: String, room: String, note: String| {
        let line = format!("    {what:<18} {used:>9} / {room:<9} {note}");
        println!("{}", line.trim_end());
    };
    let share = |used: f64, room: f64| format!("({:.1}%)", 100.0 * used / room);
    println!("\n  compiled tables:");
    row("", "used".into(), "capacity".into(), String::new());
    for (what, used, room) in [
        ("IPv4 prefixes", s.v4_prefixes, cap.ipv4),
        ("IPv6 prefixes", s.v6_prefixes, cap.ipv6),
    ] {
        row(
            what,
            used.to_string(),
            room.to_string(),
            share(used as f64, f64::from(room)),
        );
    }
    let (room4, room6) = cap.table_words_per_gen();
    let kib = |words: usize| words as f64 * 4.0 / 1024.0;
    for (what, used, room) in [
        ("IPv4 table (KiB)", s.v4_table_words, room4),
        ("IPv6 table (KiB)", s.v6_table_words, room6),
    ] {
        row(
            what,
            format!("{:.0}", kib(used)),
            format!("{:.0}", kib(room)),
            format!("{} per generation", share(used as f64, room as f64)),
        );
    }
    row(
        "source classes",
        s.classes.to_string(),
        MAX_CLASSES.to_string(),
        String::new(),
    );
    if s.profiles > 1 {
        row(
            "cell rows",
            s.rows.to_string(),
            MAX_CLASSES.to_string(),
            String::new(),
        );
        row(
            "rule profiles",
            s.profiles.to_string(),
            MAX_PROFILES.to_string(),
            String::new(),
        );
    }
    row(
        "rules",
        s.rules.to_string(),
        (MAX_RULES - 1).to_string(),
        String::new(),
    );
    for kind in ServiceKind::ALL {
        row(
            &format!("segments {}", kind_name(kind)),
            s.segments[kind as usize].to_string(),
            MAX_SEGMENTS.to_string(),
            String::new(),
        );
    }
    println!(
        "    kernel memory of the lookup tables (both generations): {:.1} MiB",
        cap.table_bytes() as f64 / (1024.0 * 1024.0)
    );
}
