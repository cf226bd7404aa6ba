//! Kernel memory of the source lookup tables beside a kernel LPM trie of the same prefixes.

use std::time::Instant;

use benches::{
    allow_policy, fit_capacity, v4_mixed_prefixes, v4_prefixes, v6_mixed_prefixes, v6_prefixes,
};
use filter_user::{
    compiler::{compile, RuleSlots},
    config::{load_file_with, LoadOptions},
    replay::rawlpm::LpmBaseline,
};
use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::json;

use crate::variant;

/// Kernel memory of the lookup tables beside an LPM trie of the same prefixes.
pub(crate) fn tables(quick: bool) -> anyhow::Result<usize> {
    let mut failed = 0;
    let mut sets: Vec<(String, Vec<Ipv4Net>, Vec<Ipv6Net>)> = Vec::new();
    let sizes: &[usize] = if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    for &n in sizes {
        sets.push((
            format!("{n} random mixed-length IPv4 /8-/32"),
            v4_mixed_prefixes(n, 60),
            Vec::new(),
        ));
    }
    for n in [10_000, 100_000] {
        sets.push((
            format!("{n} random mixed-length IPv6 /32-/128"),
            Vec::new(),
            v6_mixed_prefixes(n, 61),
        ));
    }
    sets.push((
        "bench lists: 100k IPv4 in 10/8 + 10k IPv6 in 2001:db8::/32".into(),
        v4_prefixes(100_000, 41),
        v6_prefixes(10_000, 42),
    ));
    sets.push((
        "100k random mixed IPv4 + 10k random mixed IPv6".into(),
        v4_mixed_prefixes(100_000, 62),
        v6_mixed_prefixes(10_000, 63),
    ));
    for (name, v4, v6) in sets {
        variant("tables", &name, &mut failed, || {
            let mut policy = allow_policy(&v4, &v6);
            fit_capacity(&mut policy);
            let t = Instant::now();
            let compiled = compile(&policy, &RuleSlots::new())?;
            let compile_ms = t.elapsed().as_secs_f64() * 1e3;
            let per_gen = 4 * (compiled.v4_table.len() + compiled.v6_table.len());
            // The kernel's accounting of a trie of one family (none for an empty list).
            let lpm = |empty: bool, build: &dyn Fn() -> std::io::Result<LpmBaseline>| {
                if empty {
                    Some(0)
                } else {
                    build().and_then(|t| t.kernel_bytes()).ok()
                }
            };
            let lpm_v4 = lpm(v4.is_empty(), &|| LpmBaseline::v4(&v4));
            let lpm_v6 = lpm(v6.is_empty(), &|| LpmBaseline::v6(&v6));
            println!(
                "{}",
                json!({"kind": "tables", "name": name, "v4": compiled.stats.v4_prefixes, "v6": compiled.stats.v6_prefixes,
                       "table_bytes_per_generation": per_gen, "table_bytes_both_generations": 2 * per_gen,
                       "capacity_kernel_bytes": policy.capacity.table_bytes(),
                       "lpm_bytes_one_copy": lpm_v4.zip(lpm_v6).map(|(a, b)| a + b), "compile_ms": compile_ms})
            );
            Ok(())
        });
    }
    // The shipped examples, as the daemon would allocate for them (default capacity).
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in std::fs::read_dir(&examples)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = format!(
            "example {}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        variant("tables", &name, &mut failed, || {
            let file = load_file_with(&path, &LoadOptions::fixed_ephemeral(32768..=60999))?;
            let compiled = compile(&file.policy, &RuleSlots::new())?;
            let per_gen = 4 * (compiled.v4_table.len() + compiled.v6_table.len());
            println!(
                "{}",
                json!({"kind": "tables", "name": name, "v4": compiled.stats.v4_prefixes, "v6": compiled.stats.v6_prefixes,
                       "table_bytes_per_generation": per_gen, "table_bytes_both_generations": 2 * per_gen,
                       "capacity_kernel_bytes": file.policy.capacity.table_bytes(),
                       "lpm_bytes_one_copy": null, "compile_ms": null})
            );
            Ok(())
        });
    }
    Ok(failed)
}
