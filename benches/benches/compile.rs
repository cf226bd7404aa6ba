//! Compiler benchmarks: a large policy (100k IPv4 + 10k IPv6 prefixes in a few sets) from
//! `Policy` to generation tables, and the same rule file from YAML text to `Policy`.
//!
//! Prefixes are generated deterministically (a fixed LCG), so every run measures the same
//! input: mostly disjoint /24../32 prefixes with some nesting, like a real blocklist or an
//! authorized-ranges export.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use filter_common::lookup as lookup_shape;
use filter_user::compiler::lookup::{self, Family, TablePrefix};
use filter_user::compiler::{compile, compile_after, Compiled, RuleSlots, Tables};
use filter_user::config::{parse_str_with, LoadOptions};
use filter_user::policy::{Policy, Protocol, Rule, RuleKind};
use rand::{Rng as _, SeedableRng as _};

/// `n` distinct IPv4 CIDRs in 10.0.0.0/8 (lengths 20..=32, host bits clear).
fn v4_cidrs(n: usize, seed: u64) -> Vec<String> {
    let mut rng = benches::Rng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = 20 + (rng.next_u64() % 13) as u32;
        let addr = 0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff);
        let net = addr & (u32::MAX << (32 - len));
        if seen.insert((net, len)) {
            let o = net.to_be_bytes();
            out.push(format!("{}.{}.{}.{}/{len}", o[0], o[1], o[2], o[3]));
        }
    }
    out
}

/// `n` distinct IPv6 CIDRs in 2001:db8::/32 (lengths 48..=64).
fn v6_cidrs(n: usize, seed: u64) -> Vec<String> {
    let mut rng = benches::Rng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = 48 + (rng.next_u64() % 17) as u32;
        let bits = (rng.next_u64() as u32) & (u32::MAX << (64 - len));
        if seen.insert((bits, len)) {
            out.push(format!(
                "2001:db8:{:x}:{:x}::/{len}",
                bits >> 16,
                bits & 0xffff
            ));
        }
    }
    out
}

/// Sets: `blocklist` (60k v4 + 6k v6), `partners` (40k v4 + 4k v6), `admin` (a few).
fn big_sets() -> Vec<(&'static str, Vec<String>)> {
    let v4 = v4_cidrs(100_000, 1);
    let v6 = v6_cidrs(10_000, 2);
    let mut blocklist: Vec<String> = v4[..60_000].to_vec();
    blocklist.extend_from_slice(&v6[..6_000]);
    let mut partners: Vec<String> = v4[60_000..].to_vec();
    partners.extend_from_slice(&v6[6_000..]);
    vec![
        ("blocklist", blocklist),
        ("partners", partners),
        ("admin", vec!["192.0.2.0/28".to_string()]),
    ]
}

fn rule(
    name: &str,
    kind: RuleKind,
    from: &[String],
    protocol: Protocol,
    keys: &[(u16, u16)],
) -> Rule {
    Rule {
        name: name.into(),
        kind,
        sources: from
            .iter()
            .map(|s| s.parse().expect("valid CIDR"))
            .collect(),
        protocol,
        keys: keys.iter().map(|&(a, b)| a..=b).collect(),
        interfaces: Vec::new(),
    }
}

fn big_policy() -> Policy {
    let sets = big_sets();
    let get = |n: &str| &sets.iter().find(|s| s.0 == n).expect("set").1;
    Policy {
        rules: vec![
            rule(
                "admin-ssh",
                RuleKind::Failsafe,
                get("admin"),
                Protocol::Tcp,
                &[(22, 22)],
            ),
            rule(
                "blocklist",
                RuleKind::Deny,
                get("blocklist"),
                Protocol::Any,
                &[],
            ),
            rule(
                "partners-https",
                RuleKind::Allow,
                get("partners"),
                Protocol::Tcp,
                &[(443, 443)],
            ),
            rule(
                "partners-high",
                RuleKind::Allow,
                get("partners"),
                Protocol::Udp,
                &[(1025, 65535)],
            ),
            rule(
                "partners-ping",
                RuleKind::Allow,
                get("partners"),
                Protocol::Icmp,
                &[(8, 8)],
            ),
        ],
        ..Policy::default()
    }
}

fn big_yaml() -> String {
    let mut y = String::from(
        "version: 1\nallow_empty: false\nreturn_traffic: { mode: ephemeral, ports: \"32768-60999\" }\nsets:\n",
    );
    for (name, cidrs) in big_sets() {
        y.push_str(&format!("  {name}:\n"));
        for c in cidrs {
            y.push_str(&format!("    - \"{c}\"\n"));
        }
    }
    y.push_str(
        "failsafe:
  - { name: admin-ssh, from: [admin], protocol: tcp, ports: [22] }
rules:
  - { name: blocklist, from: [blocklist], protocol: any, action: deny }
  - { name: partners-https, from: [partners], protocol: tcp, ports: [443] }
  - { name: partners-high, from: [partners], protocol: udp, ports: [\"1025-65535\"] }
  - { name: partners-ping, from: [partners], protocol: icmp, types: [8] }
",
    );
    y
}

fn bench_compile(c: &mut Criterion) {
    let policy = big_policy();
    let tables = Tables::try_from(&policy).expect("fits");
    assert_eq!(tables.stats.v4_prefixes, 100_001);
    assert_eq!(tables.stats.v6_prefixes, 10_000);
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("100k_v4_10k_v6", |b| {
        let slots = RuleSlots::new();
        b.iter(|| compile(&policy, &slots).expect("fits"))
    });
    // A reload that swaps one prefix of the blocklist: an update of the previous tables.
    let mut slots = RuleSlots::new();
    slots.commit(&tables);
    let previous = Compiled {
        policy: policy.clone(),
        tables: tables.clone(),
    };
    let mut next = policy.clone();
    next.rules[1].sources[0] = "198.18.0.0/24".parse().expect("valid CIDR");
    assert!(
        compile_after(&next, &slots, previous.previous())
            .expect("fits")
            .incremental
    );
    g.bench_function("100k_v4_10k_v6_one_prefix_changed", |b| {
        b.iter(|| compile_after(&next, &slots, previous.previous()).expect("fits"))
    });
    g.finish();

    // The flat source tables alone (`compiler::lookup::build`), on random mixed-length sets,
    // with the root a capacity of that many prefixes gets.
    let mut g = c.benchmark_group("source_table");
    g.sample_size(10);
    for n in [100_000usize, 1_000_000] {
        let prefixes: Vec<TablePrefix> = benches::v4_mixed_prefixes(n, 31)
            .iter()
            .map(|net| TablePrefix {
                addr: u128::from(u32::from(net.network())) << 96,
                len: net.prefix_len(),
                leaf: 1,
            })
            .collect();
        g.bench_function(BenchmarkId::new("v4_mixed", n), |b| {
            b.iter_batched(
                || prefixes.clone(),
                |mut p| lookup::build(Family::V4, &mut p, lookup_shape::V4.root_bits_for(n as u32)),
                BatchSize::LargeInput,
            )
        });
    }
    let prefixes: Vec<TablePrefix> = benches::v6_mixed_prefixes(100_000, 32)
        .iter()
        .map(|net| TablePrefix {
            addr: u128::from(net.network()),
            len: net.prefix_len(),
            leaf: 1,
        })
        .collect();
    g.bench_function(BenchmarkId::new("v6_mixed", 100_000), |b| {
        b.iter_batched(
            || prefixes.clone(),
            |mut p| lookup::build(Family::V6, &mut p, lookup_shape::V6_ROOT_BITS),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let yaml = big_yaml();
    let opts = LoadOptions::fixed_ephemeral(32768..=60999);
    let loaded = parse_str_with("big.yaml", &yaml, &opts).expect("valid");
    assert_eq!(loaded.stats.v4_prefixes, 100_001);
    let mut g = c.benchmark_group("config");
    g.sample_size(10);
    g.bench_function("parse_check_compile_100k_v4_10k_v6", |b| {
        b.iter(|| parse_str_with("big.yaml", &yaml, &opts).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, bench_compile);
criterion_main!(benches);
