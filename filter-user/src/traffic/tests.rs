use super::*;
use crate::{config, model::Model};

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let p = Profile::default();
    let a = generate(&p, 300, 1);
    assert_eq!(a, generate(&p, 300, 1));
    assert_ne!(a, generate(&p, 300, 2));
}

#[test]
fn the_mix_covers_every_category_and_both_families() {
    let frames = generate(&Profile::default(), 3000, 42);
    let counts = category_counts(&frames);
    for (c, _) in Category::MIX {
        assert!(
            counts.get(c.name()).copied().unwrap_or(0) > 0,
            "{} missing",
            c.name()
        );
    }
    let v6 = frames
        .iter()
        .filter(|f| f.data.len() >= 14 && f.data[12..14] == [0x86, 0xdd])
        .count();
    let v4 = frames
        .iter()
        .filter(|f| f.data.len() >= 14 && f.data[12..14] == [0x08, 0x00])
        .count();
    assert!(v6 > 300 && v4 > 1000, "v4 {v4} v6 {v6}");
}

#[test]
fn against_the_eks_example_every_rule_and_many_reasons_occur() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/eks-node.yaml");
    let Ok(loaded) =
        config::load_file_with(path, &config::LoadOptions::fixed_ephemeral(32768..=60999))
    else {
        // The example belongs to another module; without it there is nothing to check here.
        return;
    };
    let model = Model::new(&loaded.policy);
    let mut state = crate::model::ModelState::new();
    let mut reasons = std::collections::BTreeSet::new();
    let mut rules = std::collections::BTreeSet::new();
    for f in generate(&Profile::default(), 5000, 3) {
        let j = model.judge_tracked(&f.data, &mut state);
        reasons.insert(j.reason.name());
        if let Some(r) = j.rule {
            rules.insert(r);
        }
    }
    for rule in &loaded.policy.rules {
        assert!(
            rules.contains(&rule.name),
            "rule {} never decided; decided: {rules:?}",
            rule.name
        );
    }
    for reason in [
        "allow-rule",
        "failsafe",
        "essential-arp",
        "essential-nd",
        "essential-pmtu",
        "essential-icmp-error",
        "no-source-match",
        "no-rule-match",
        "eth-truncated",
        "vlan-depth",
        "unknown-ethertype",
        "ipv4-header",
        "ipv4-options",
        "ipv4-truncated",
        "ipv6-exthdr",
        "fragment-tracked",
        "fragment-untracked",
        "fragment-tiny",
        "tcp-header",
        "udp-header",
        "l4-truncated",
        "nd-invalid",
    ] {
        assert!(
            reasons.contains(reason),
            "reason {reason} never occurred; got {reasons:?}"
        );
    }
}
