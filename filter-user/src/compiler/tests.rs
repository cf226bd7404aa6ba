use std::net::IpAddr;

use filter_common::{
    flags, return_mode, Cell, CellAction, ServiceKind, MAX_CLASSES, SERVICE_CHUNKS,
    SERVICE_INDEX_SPACE,
};
use ipnet::IpNet;
use proptest::prelude::*;

use super::*;
use crate::policy::{Essentials, Protocol, Rule, RuleKind};

fn rule(
    name: &str,
    kind: RuleKind,
    sources: &[&str],
    protocol: Protocol,
    keys: &[(u16, u16)],
) -> Rule {
    Rule {
        name: name.into(),
        kind,
        sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
        protocol,
        keys: keys.iter().map(|&(a, b)| a..=b).collect(),
        interfaces: Vec::new(),
    }
}

/// TESTCASES.md fixture, built by hand (the config front end has its own copy in YAML).
fn fixture() -> Policy {
    use Protocol::*;
    use RuleKind::*;
    let cp = ["10.0.0.0/24", "2001:db8:cf::/64"];
    let clients = ["192.0.2.0/24", "2001:db8:c1::/64"];
    Policy {
        rules: vec![
            rule(
                "admin",
                Failsafe,
                &["10.0.0.0/24"],
                Tcp,
                &[(22, 22), (6443, 6443)],
            ),
            rule("cp-https", Allow, &cp, Tcp, &[(443, 443), (10250, 10250)]),
            rule("cp-tcp-high", Allow, &cp, Tcp, &[(1025, 65535)]),
            rule("cp-udp-high", Allow, &cp, Udp, &[(1025, 65535)]),
            rule("clients-https", Allow, &clients, Tcp, &[(443, 443)]),
        ],
        ..Policy::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The deciding rule's name and action, `None` for an empty cell; panics on no source.
fn decide(t: &Tables, src: &str, kind: ServiceKind, key: u16) -> Option<(String, CellAction)> {
    match t.lookup(ip(src), kind, key) {
        Lookup::NoSource => panic!("{src}: no source"),
        Lookup::Cell(c) if c == Cell::EMPTY => None,
        Lookup::Cell(c) => Some((t.rule_name(c.slot()).unwrap().to_string(), c.action())),
    }
}

fn allowed_by(t: &Tables, src: &str, kind: ServiceKind, key: u16) -> Option<String> {
    decide(t, src, kind, key).and_then(|(n, a)| (a != CellAction::Deny).then_some(n))
}

#[test]
fn fixture_case_1_to_5_and_20() {
    let t = Tables::try_from(&fixture()).unwrap();
    use ServiceKind::*;
    // 1
    assert_eq!(
        allowed_by(&t, "10.0.0.5", Tcp, 10250).as_deref(),
        Some("cp-https")
    );
    assert_eq!(allowed_by(&t, "192.0.2.9", Tcp, 10250), None);
    // 2
    assert_eq!(
        allowed_by(&t, "192.0.2.9", Tcp, 443).as_deref(),
        Some("clients-https")
    );
    assert_eq!(t.lookup(ip("198.51.100.7"), Tcp, 443), Lookup::NoSource);
    // 3
    assert_eq!(
        allowed_by(&t, "10.0.0.5", Tcp, 8080).as_deref(),
        Some("cp-tcp-high")
    );
    assert_eq!(allowed_by(&t, "10.0.0.5", Udp, 443), None);
    assert_eq!(allowed_by(&t, "192.0.2.9", Tcp, 8080), None);
    // 4
    assert_eq!(
        decide(&t, "10.0.0.5", Tcp, 22),
        Some(("admin".into(), CellAction::Failsafe))
    );
    assert_eq!(
        decide(&t, "10.0.0.5", Tcp, 6443),
        Some(("admin".into(), CellAction::Failsafe))
    );
    assert_eq!(decide(&t, "2001:db8:cf::5", Tcp, 22), None);
    // 5
    assert!(allowed_by(&t, "10.0.0.255", Tcp, 443).is_some());
    assert_eq!(t.lookup(ip("10.0.1.0"), Tcp, 443), Lookup::NoSource);
    assert_eq!(t.lookup(ip("9.255.255.255"), Tcp, 443), Lookup::NoSource);
    assert_eq!(allowed_by(&t, "10.0.0.5", Tcp, 1024), None);
    assert!(allowed_by(&t, "10.0.0.5", Tcp, 1025).is_some());
    assert!(allowed_by(&t, "10.0.0.5", Tcp, 65535).is_some());
    assert_eq!(allowed_by(&t, "10.0.0.5", Tcp, 0), None);
    assert!(allowed_by(&t, "10.0.0.5", Udp, 1025).is_some());
    assert_eq!(allowed_by(&t, "10.0.0.5", Udp, 1024), None);
    // 20
    assert_eq!(
        allowed_by(&t, "2001:db8:cf::5", Tcp, 10250).as_deref(),
        Some("cp-https")
    );
    assert_eq!(
        t.lookup(ip("2001:db8:dead::1"), Tcp, 10250),
        Lookup::NoSource
    );
    // 14: protocols without a rule, icmp without a rule
    assert_eq!(allowed_by(&t, "10.0.0.5", Other, 132), None);
    assert_eq!(allowed_by(&t, "10.0.0.5", Icmp, 8), None);
    // IPv4-mapped IPv6 never matches an IPv4 prefix.
    assert_eq!(t.lookup(ip("::ffff:10.0.0.5"), Tcp, 443), Lookup::NoSource);
}

#[test]
fn fixture_table_shape() {
    let t = Tables::try_from(&fixture()).unwrap();
    assert_eq!(t.stats.rules, 5);
    assert_eq!(t.stats.v4_prefixes, 2);
    assert_eq!(t.stats.v6_prefixes, 2);
    // {admin, cp...} for 10.0.0.0/24, {cp...} for the v6 control plane, {clients} for both.
    assert_eq!(t.stats.classes, 3);
    // tcp: 22, 443, 6443, 1025-6442, 6444-10249 ... distinct rule sets:
    // {admin}, {cp-https, clients}, {cp-tcp-high}, {admin, cp-tcp-high}, {cp-https, cp-tcp-high}
    assert_eq!(t.stats.segments[ServiceKind::Tcp as usize], 5);
    assert_eq!(t.stats.segments[ServiceKind::Udp as usize], 1);
    assert_eq!(t.stats.segments[ServiceKind::Icmp as usize], 0);
    assert_eq!(t.segments.len(), SERVICE_INDEX_SPACE as usize);
    assert_eq!(t.class_cells.len(), 3);
    assert_eq!(
        t.rule_names,
        vec![
            (1, "admin".to_string()),
            (2, "cp-https".into()),
            (3, "cp-tcp-high".into()),
            (4, "cp-udp-high".into()),
            (5, "clients-https".into())
        ]
    );
    assert_eq!(t.fresh_slots, vec![1, 2, 3, 4, 5]);
}

#[test]
fn overlap_union_case_6() {
    let mut p = fixture();
    p.rules.push(rule(
        "wide-8443",
        RuleKind::Allow,
        &["10.0.0.0/16"],
        Protocol::Tcp,
        &[(8443, 8443)],
    ));
    let t = Tables::try_from(&p).unwrap();
    use ServiceKind::Tcp;
    // 8443 is inside cp-tcp-high (1025-65535), which comes first in file order.
    assert_eq!(
        allowed_by(&t, "10.0.0.5", Tcp, 8443).as_deref(),
        Some("cp-tcp-high")
    );
    assert_eq!(
        allowed_by(&t, "10.0.0.5", Tcp, 10250).as_deref(),
        Some("cp-https")
    );
    assert_eq!(
        allowed_by(&t, "10.0.7.1", Tcp, 8443).as_deref(),
        Some("wide-8443")
    );
    assert_eq!(allowed_by(&t, "10.0.7.1", Tcp, 10250), None);
    assert_eq!(allowed_by(&t, "10.0.7.1", Tcp, 22), None);

    // Without the high-port rule, the /16 rule decides 8443 for the /24 too: the union.
    p.rules.retain(|r| r.name != "cp-tcp-high");
    let t = Tables::try_from(&p).unwrap();
    assert_eq!(
        allowed_by(&t, "10.0.0.5", Tcp, 8443).as_deref(),
        Some("wide-8443")
    );
    assert_eq!(
        allowed_by(&t, "10.0.0.5", Tcp, 10250).as_deref(),
        Some("cp-https")
    );
}

#[test]
fn deny_and_failsafe_precedence_case_7() {
    let mut p = fixture();
    // Written last: precedence, not file order, puts deny before allow.
    p.rules.push(rule(
        "deny-upper",
        RuleKind::Deny,
        &["10.0.0.128/25"],
        Protocol::Any,
        &[],
    ));
    let t = Tables::try_from(&p).unwrap();
    use ServiceKind::*;
    assert_eq!(
        decide(&t, "10.0.0.200", Tcp, 443),
        Some(("deny-upper".into(), CellAction::Deny))
    );
    assert_eq!(
        decide(&t, "10.0.0.200", Other, 47),
        Some(("deny-upper".into(), CellAction::Deny))
    );
    assert_eq!(
        decide(&t, "10.0.0.200", Tcp, 22),
        Some(("admin".into(), CellAction::Failsafe))
    );
    assert_eq!(
        decide(&t, "10.0.0.5", Tcp, 443),
        Some(("cp-https".into(), CellAction::Allow))
    );
}

#[test]
fn first_rule_in_file_order_within_kind() {
    use Protocol::*;
    let p = Policy {
        rules: vec![
            rule("a", RuleKind::Allow, &["10.0.0.0/8"], Tcp, &[(100, 200)]),
            rule("b", RuleKind::Allow, &["10.1.0.0/16"], Tcp, &[(150, 300)]),
            rule("c", RuleKind::Deny, &["10.1.2.0/24"], Tcp, &[(180, 180)]),
        ],
        ..Policy::default()
    };
    let t = Tables::try_from(&p).unwrap();
    use ServiceKind::Tcp as K;
    assert_eq!(decide(&t, "10.1.2.3", K, 160).unwrap().0, "a");
    assert_eq!(
        decide(&t, "10.1.2.3", K, 180),
        Some(("c".into(), CellAction::Deny))
    );
    assert_eq!(decide(&t, "10.1.2.3", K, 250).unwrap().0, "b");
    assert_eq!(decide(&t, "10.2.0.1", K, 250), None);
    assert_eq!(decide(&t, "10.2.0.1", K, 200).unwrap().0, "a");
    assert_eq!(decide(&t, "10.2.0.1", K, 201), None);
}

#[test]
fn any_covers_every_kind_and_icmp_only_its_family_kind() {
    let p = Policy {
        rules: vec![
            rule(
                "ping",
                RuleKind::Allow,
                &["10.0.0.0/8"],
                Protocol::Icmp,
                &[(8, 8)],
            ),
            rule(
                "ping6",
                RuleKind::Allow,
                &["2001:db8::/32"],
                Protocol::Icmpv6,
                &[(128, 128)],
            ),
            rule(
                "all",
                RuleKind::Allow,
                &["192.0.2.0/24"],
                Protocol::Any,
                &[],
            ),
        ],
        ..Policy::default()
    };
    let t = Tables::try_from(&p).unwrap();
    use ServiceKind::*;
    assert_eq!(decide(&t, "10.0.0.1", Icmp, 8).unwrap().0, "ping");
    assert_eq!(decide(&t, "10.0.0.1", Icmp, 0), None);
    assert_eq!(decide(&t, "10.0.0.1", Icmpv6, 8), None);
    assert_eq!(decide(&t, "2001:db8::1", Icmpv6, 128).unwrap().0, "ping6");
    for (kind, key) in [
        (Tcp, 0),
        (Tcp, 65535),
        (Udp, 53),
        (Icmp, 255),
        (Icmpv6, 0),
        (Other, 47),
        (Other, 255),
    ] {
        assert_eq!(decide(&t, "192.0.2.1", kind, key).unwrap().0, "all");
    }
    // A key outside the kind's space finds nothing.
    assert_eq!(
        t.lookup(ip("192.0.2.1"), Icmp, 256),
        Lookup::Cell(Cell::EMPTY)
    );
}

#[test]
fn gen_config_from_policy() {
    let mut p = Policy {
        essentials: Essentials {
            arp: true,
            neighbor_discovery: false,
            icmp_errors: true,
        },
        ipv4_options_allow: true,
        default: DefaultAction::Pass,
        mode: Mode::Monitor,
        samples_per_sec: 7,
        return_traffic: ReturnTraffic::Ephemeral { ports: 1000..=2000 },
        ..Policy::default()
    };
    let g = Tables::try_from(&p).unwrap().gen_config;
    assert_eq!(g.mode, mode::MONITOR);
    assert_eq!(
        g.flags,
        flags::V4_ROOT_18
            | flags::ESSENTIAL_ARP
            | flags::ESSENTIAL_ICMP_ERRORS
            | flags::IPV4_OPTIONS_ALLOW
            | flags::FRAGMENT_TRACK
            | flags::DEFAULT_PASS
    );
    assert_eq!(
        (g.return_mode, g.ephemeral_lo, g.ephemeral_hi),
        (return_mode::EPHEMERAL, 1000, 2000)
    );
    assert_eq!((g.samples_per_sec, g.epoch, g.src_v4_base), (7, 0, 0));
    p.return_traffic = ReturnTraffic::Stateful;
    p.fragments = Fragments::Drop;
    p.unknown_ethertypes_pass = true;
    let g = Tables::try_from(&p).unwrap().gen_config;
    assert_eq!(
        (g.return_mode, g.ephemeral_lo, g.ephemeral_hi),
        (return_mode::STATEFUL, 0, 0)
    );
    assert_eq!(g.flags & flags::FRAGMENT_TRACK, 0);
    assert_ne!(g.flags & flags::UNKNOWN_ETHERTYPE_PASS, 0);
}

#[test]
fn map_entries_layout() {
    let t = Tables::try_from(&fixture()).unwrap();
    // Source tables: 10.0.0.0/24 lies in the root slot of 10.0.0.0/18 as an inline prefix
    // (the only one below it): its 6 bits past the root, all zero, in the slot's word.
    use filter_common::lookup::{entry, inline, V4_ROOT_BITS, V6};
    assert_eq!(t.v4.len(), 2);
    let slot = t.v4_table[(0x0a00_0000u32 >> (32 - V4_ROOT_BITS)) as usize];
    assert_eq!(entry::tag(slot), entry::LEAF);
    assert_ne!(slot & inline::FLAG, 0);
    let rest = |addr: u32| addr << V4_ROOT_BITS;
    assert_eq!(
        entry::class(inline::resolve(slot, rest(0x0a00_00ff))),
        Some(t.v4[0].1)
    );
    assert_eq!(entry::class(inline::resolve(slot, rest(0x0a00_0100))), None);
    // Both prefixes inline: the table is its root.
    assert_eq!(t.v4_table.len(), 1 << V4_ROOT_BITS);
    assert_eq!(t.stats.v4_table_words, t.v4_table.len());
    assert!(t.v6_table.len() > V6.root_words(0) as usize);

    let segs: Vec<_> = t.segment_entries(1).collect();
    assert_eq!(segs.len(), SERVICE_CHUNKS as usize);
    assert_eq!(segs[0].0, SERVICE_CHUNKS);
    // Port 443 lives in chunk 1 of generation 1 at offset 443 - 256.
    assert_eq!(segs[1].1.seg[443 - 256], t.segments[443]);
    assert_ne!(t.segments[443], 0);

    let cells: Vec<_> = t.cell_entries(1).collect();
    assert_eq!(cells.len(), t.class_cells.len() * 5);
    assert_eq!(cells[0].0, MAX_CLASSES * 5);
    assert_eq!(cells[7].0, (MAX_CLASSES + 1) * 5 + 2);

    let names: Vec<_> = t.rule_name_entries().collect();
    assert_eq!(names[0].0, 1);
    assert_eq!(&names[0].1.name[..6], b"admin\0");
}

#[test]
fn rule_slots_are_stable_and_reserved_until_commit() {
    use Protocol::*;
    let mk = |names: &[&str]| Policy {
        rules: names
            .iter()
            .map(|n| rule(n, RuleKind::Allow, &["10.0.0.0/8"], Tcp, &[(1, 1)]))
            .collect(),
        ..Policy::default()
    };
    let mut slots = RuleSlots::new();
    let t = compile(&mk(&["a", "b", "c"]), &slots).unwrap();
    assert!(
        slots.is_empty(),
        "compile does not mutate the committed slots"
    );
    slots.commit(&t);
    assert_eq!(
        (slots.get("a"), slots.get("b"), slots.get("c")),
        (Some(1), Some(2), Some(3))
    );

    // b removed, d added: d must not take b's slot while b's generation is still active.
    let t = compile(&mk(&["c", "d", "a"]), &slots).unwrap();
    assert_eq!(
        t.rule_names,
        vec![(1, "a".into()), (3, "c".into()), (4, "d".into())]
    );
    assert_eq!(t.fresh_slots, vec![4]);
    assert_eq!(slots.get("b"), Some(2));
    slots.commit(&t);
    assert_eq!(slots.get("b"), None);

    // Now slot 2 is free and the lowest.
    let t = compile(&mk(&["a", "c", "d", "e"]), &slots).unwrap();
    assert_eq!(t.rule_names[1], (2, "e".into()));
    assert_eq!(t.fresh_slots, vec![2]);
    // The slot is what the cells carry.
    match t.lookup(ip("10.1.1.1"), ServiceKind::Tcp, 1) {
        Lookup::Cell(c) => assert_eq!(c.slot(), 1),
        other => panic!("{other:?}"),
    }

    // Adoption from pinned names.
    let adopted = RuleSlots::from_pairs(vec![("x".into(), 5), ("y".into(), 0), ("z".into(), 9)]);
    assert_eq!(adopted.iter().collect::<Vec<_>>(), vec![("x", 5), ("z", 9)]);
}

#[test]
fn rule_slots_exhausted_while_reserved() {
    let names: Vec<String> = (0..MAX_POLICY_RULES).map(|i| format!("r{i}")).collect();
    let mk = |prefix: &str| Policy {
        rules: names
            .iter()
            .map(|n| {
                rule(
                    &format!("{prefix}{n}"),
                    RuleKind::Allow,
                    &["10.0.0.0/8"],
                    Protocol::Tcp,
                    &[(1, 1)],
                )
            })
            .collect(),
        ..Policy::default()
    };
    let mut slots = RuleSlots::new();
    let t = compile(&mk("a"), &slots).unwrap();
    assert_eq!(t.rule_names.last().unwrap().0 as usize, MAX_POLICY_RULES);
    slots.commit(&t);
    let err = compile(&mk("b"), &slots).unwrap_err();
    assert!(
        matches!(
            err,
            CompileError::SlotsExhausted {
                reserved: MAX_POLICY_RULES,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn guards_for_hand_built_policies() {
    let r = |n: &str| rule(n, RuleKind::Allow, &["10.0.0.0/8"], Protocol::Tcp, &[]);
    let p = Policy {
        rules: vec![r("a"), r("a")],
        ..Policy::default()
    };
    assert!(matches!(
        Tables::try_from(&p),
        Err(CompileError::DuplicateRuleName { .. })
    ));
    let p = Policy {
        rules: vec![r("")],
        ..Policy::default()
    };
    assert!(matches!(
        Tables::try_from(&p),
        Err(CompileError::BadRuleName { .. })
    ));
    let p = Policy {
        rules: (0..=MAX_POLICY_RULES)
            .map(|i| r(&format!("r{i}")))
            .collect(),
        ..Policy::default()
    };
    assert!(matches!(
        Tables::try_from(&p),
        Err(CompileError::TooManyRules {
            count: 1024,
            max: 1023
        })
    ));
}

#[test]
fn too_many_segments() {
    // 128 single-port rules from one source: 128 distinct segments > 127.
    let rules: Vec<Rule> = (0..128u16)
        .map(|i| {
            rule(
                &format!("p{i}"),
                RuleKind::Allow,
                &["10.0.0.0/8"],
                Protocol::Udp,
                &[(1000 + 2 * i, 1000 + 2 * i)],
            )
        })
        .collect();
    let mut p = Policy {
        rules,
        ..Policy::default()
    };
    assert_eq!(
        Tables::try_from(&p).unwrap_err(),
        CompileError::TooManySegments {
            kind: "udp",
            count: 128,
            max: 127
        }
    );
    p.rules.pop();
    assert_eq!(Tables::try_from(&p).unwrap().stats.segments[1], 127);
}

#[test]
fn too_many_classes() {
    // 10 rules, each from a distinct combination of 10 disjoint /24s → up to 2^10 rule sets;
    // give prefix j the rules whose bit is set in j.
    let mut rules: Vec<Rule> = (0..10)
        .map(|i| {
            rule(
                &format!("r{i}"),
                RuleKind::Allow,
                &[],
                Protocol::Tcp,
                &[(443, 443)],
            )
        })
        .collect();
    for j in 1..=(MAX_CLASSES as usize + 1) {
        let net: IpNet = format!("10.{}.{}.0/24", j / 256, j % 256).parse().unwrap();
        for (i, r) in rules.iter_mut().enumerate() {
            if j & (1 << i) != 0 {
                r.sources.push(net);
            }
        }
    }
    let p = Policy {
        rules,
        ..Policy::default()
    };
    assert_eq!(
        Tables::try_from(&p).unwrap_err(),
        CompileError::TooManyClasses {
            count: 513,
            max: 512
        }
    );
}

#[test]
fn too_many_prefixes() {
    let sources: Vec<IpNet> = (0..=MAX_V6_PREFIXES)
        .map(|i| format!("2001:db8:{:x}::/48", i).parse().unwrap())
        .collect();
    let p = Policy {
        rules: vec![Rule {
            name: "big".into(),
            kind: RuleKind::Allow,
            sources,
            protocol: Protocol::Any,
            keys: vec![],
            interfaces: Vec::new(),
        }],
        ..Policy::default()
    };
    assert!(matches!(
        Tables::try_from(&p),
        Err(CompileError::TooManyV6Prefixes {
            count: 32769,
            max: 32768
        })
    ));
}

#[test]
fn a_table_larger_than_its_capacity_reserves_is_rejected_with_the_numbers() {
    // Three /32s in one /30 and the next need a node at every level below the 18-bit root
    // (3 × 16 words, then a record of two in one /30 slot: 4; the third /32 is an inline
    // prefix in the next slot), more than the 8 words a prefix of capacity reserves.
    let mut p = Policy {
        rules: vec![rule(
            "hosts",
            RuleKind::Allow,
            &["10.1.2.2/32", "10.1.2.3/32", "10.1.2.4/32"],
            Protocol::Any,
            &[],
        )],
        ..Policy::default()
    };
    p.capacity.ipv4 = 3;
    match Tables::try_from(&p) {
        Err(e @ CompileError::TableTooLarge { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("3 IPv4 prefixes need a 1048784-byte lookup table")
                    && text.contains("reserves 1048672 bytes")
                    && text.contains("capacity.ipv4_prefixes"),
                "{text}"
            );
        }
        other => panic!("expected TableTooLarge, got {other:?}"),
    }
    p.capacity.ipv4 = 8;
    assert!(Tables::try_from(&p).is_ok(), "fits with room for 8");
}

#[test]
fn nested_prefix_chain_classes() {
    // /8 ⊃ /16 ⊃ /24 plus a sibling /16 after the /24, and equal prefixes in two rules.
    use Protocol::*;
    let p = Policy {
        rules: vec![
            rule("r8", RuleKind::Allow, &["10.0.0.0/8"], Tcp, &[(1, 1)]),
            rule(
                "r16",
                RuleKind::Allow,
                &["10.1.0.0/16", "10.2.0.0/16"],
                Tcp,
                &[(2, 2)],
            ),
            rule("r24", RuleKind::Allow, &["10.1.1.0/24"], Tcp, &[(3, 3)]),
            rule(
                "r24b",
                RuleKind::Allow,
                &["10.1.1.0/24", "10.3.0.0/16"],
                Tcp,
                &[(4, 4)],
            ),
        ],
        ..Policy::default()
    };
    let t = Tables::try_from(&p).unwrap();
    use ServiceKind::Tcp as K;
    let ok = |src: &str, port: u16| decide(&t, src, K, port).map(|d| d.0);
    assert_eq!(ok("10.1.1.1", 1).as_deref(), Some("r8"));
    assert_eq!(ok("10.1.1.1", 2).as_deref(), Some("r16"));
    assert_eq!(ok("10.1.1.1", 3).as_deref(), Some("r24"));
    assert_eq!(ok("10.1.1.1", 4).as_deref(), Some("r24b"));
    assert_eq!(ok("10.1.2.1", 3), None);
    assert_eq!(ok("10.2.2.1", 2).as_deref(), Some("r16"));
    assert_eq!(ok("10.3.2.1", 4).as_deref(), Some("r24b"));
    assert_eq!(ok("10.3.2.1", 2), None);
    assert_eq!(ok("10.4.0.0", 1).as_deref(), Some("r8"));
    // 10.0.0.0/8 {r8}, 10.1.0.0/16 & 10.2.0.0/16 {r8,r16}, 10.1.1.0/24 {all four},
    // 10.3.0.0/16 {r8, r24b}.
    assert_eq!(t.stats.classes, 4);
    assert_eq!(t.stats.v4_prefixes, 5);
}

/// Naive evaluation over the Policy, written independently of the compiler.
fn naive(p: &Policy, t: &Tables, src: IpAddr, kind: ServiceKind, key: u16) -> Lookup {
    let contains = |r: &Rule| r.sources.iter().any(|n| n.contains(&src));
    if !p.rules.iter().any(contains) {
        return Lookup::NoSource;
    }
    let covers = |r: &Rule| {
        let kind_matches = matches!(
            (r.protocol, kind),
            (Protocol::Any, _)
                | (Protocol::Tcp, ServiceKind::Tcp)
                | (Protocol::Udp, ServiceKind::Udp)
                | (Protocol::Icmp, ServiceKind::Icmp)
                | (Protocol::Icmpv6, ServiceKind::Icmpv6)
        );
        kind_matches
            && (r.protocol == Protocol::Any
                || r.keys.is_empty()
                || r.keys.iter().any(|k| k.contains(&key)))
    };
    for r in p.rules_in_precedence() {
        if contains(r) && covers(r) {
            let slot = t.rule_names.iter().find(|(_, n)| *n == r.name).unwrap().0;
            let action = match r.kind {
                RuleKind::Failsafe => CellAction::Failsafe,
                RuleKind::Deny => CellAction::Deny,
                RuleKind::Allow => CellAction::Allow,
            };
            return Lookup::Cell(Cell::new(action, slot));
        }
    }
    Lookup::Cell(Cell::EMPTY)
}

fn arb_v4_net() -> impl Strategy<Value = IpNet> {
    // A small address neighbourhood so prefixes nest and collide often.
    (0u32..16, 0u32..4, 0u8..=32).prop_map(|(a, b, len)| {
        let addr = std::net::Ipv4Addr::from(0x0a00_0000 | (a << 20) | (b << 8) | (a & 3));
        IpNet::V4(ipnet::Ipv4Net::new(addr, len.max(4)).unwrap().trunc())
    })
}

fn arb_v6_net() -> impl Strategy<Value = IpNet> {
    (0u128..16, 0u128..4, 0u8..=128).prop_map(|(a, b, len)| {
        let addr =
            std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | (a << 80) | (b << 8) | (a & 3));
        IpNet::V6(ipnet::Ipv6Net::new(addr, len.max(16)).unwrap().trunc())
    })
}

fn arb_key() -> impl Strategy<Value = u16> {
    prop_oneof![0u16..12, 250u16..260, 65530u16..=65535]
}

fn arb_rule() -> impl Strategy<Value = (RuleKind, Vec<IpNet>, Protocol, Vec<(u16, u16)>)> {
    let kind = prop_oneof![
        Just(RuleKind::Failsafe),
        Just(RuleKind::Deny),
        Just(RuleKind::Allow),
        Just(RuleKind::Allow)
    ];
    let proto = prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Icmp),
        Just(Protocol::Icmpv6),
        Just(Protocol::Any)
    ];
    let nets = prop::collection::vec(prop_oneof![arb_v4_net(), arb_v6_net()], 0..4);
    let keys = prop::collection::vec((arb_key(), arb_key()), 0..3);
    (kind, nets, proto, keys)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn lookup_matches_naive_first_covering_rule(
        raw in prop::collection::vec(arb_rule(), 0..7),
        probes in prop::collection::vec(
            (prop_oneof![arb_v4_net(), arb_v6_net()], any::<u32>(), 0usize..5, arb_key()), 40),
    ) {
        let rules: Vec<Rule> = raw.into_iter().enumerate().map(|(i, (kind, sources, protocol, keys))| {
            let max = match protocol { Protocol::Tcp | Protocol::Udp => 65535, _ => 255 };
            let keys = if protocol == Protocol::Any { vec![] } else {
                keys.into_iter()
                    .map(|(a, b)| (a.min(b).min(max), a.max(b).min(max)))
                    .map(|(a, b)| a..=b)
                    .collect()
            };
            let mut sources = sources;
            sources.sort();
            sources.dedup();
            Rule { name: format!("r{i}"), kind, sources, protocol, keys, interfaces: vec![] }
        }).collect();
        let policy = Policy { rules, ..Policy::default() };
        let tables = Tables::try_from(&policy).unwrap();
        for (net, noise, k, key) in probes {
            // An address inside (or near) a random prefix.
            let src = match net {
                IpNet::V4(n) => IpAddr::V4((u32::from(n.addr()) | (noise & !u32::from(n.netmask()) & 0x0000_0fff)).into()),
                IpNet::V6(n) => IpAddr::V6((u128::from(n.addr()) | (u128::from(noise) & !u128::from(n.netmask()) & 0xfff)).into()),
            };
            let kind = ServiceKind::ALL[k];
            let key = if kind.key_space() == 256 { key & 0xff } else { key };
            prop_assert_eq!(tables.lookup(src, kind, key), naive(&policy, &tables, src, kind, key),
                "src {} kind {:?} key {}", src, kind, key);
        }
    }
}

#[test]
fn without_scoped_rules_the_rows_are_the_classes() {
    let t = Tables::try_from(&fixture()).unwrap();
    assert_eq!((t.stats.profiles, t.stats.rows), (1, t.stats.classes));
    let identity: Vec<u32> = (0..t.stats.classes as u32).collect();
    assert_eq!(t.class_rows, vec![identity]);
    assert!(t.interfaces.is_empty());
    assert_eq!(t.row_entries(1).count(), t.stats.classes);
}

#[test]
fn scoped_rules_get_profiles_and_rows() {
    let mut policy = fixture();
    let mut pods = rule(
        "pods",
        RuleKind::Allow,
        &["10.1.0.0/16"],
        Protocol::Any,
        &[],
    );
    pods.interfaces = vec!["eth1".into(), "eth2".into()];
    let mut no_https = rule(
        "no-https",
        RuleKind::Deny,
        &["192.0.2.0/24"],
        Protocol::Tcp,
        &[(443, 443)],
    );
    no_https.interfaces = vec!["eth2".into()];
    policy.rules.extend([pods, no_https]);
    let t = Tables::try_from(&policy).unwrap();
    // Profiles: no rule names it (0), eth1 (+pods), eth2 (+pods, +no-https).
    assert_eq!(t.stats.profiles, 3);
    let profile = |name: &str| iface_override::profile(t.interfaces[name]);
    assert_eq!((profile("eth1"), profile("eth2")), (1, 2));
    let on = |p: u32, src: &str, kind, key| match t.lookup_in_profile(p, ip(src), kind, key) {
        Lookup::NoSource => None,
        Lookup::Cell(c) => Some((t.rule_name(c.slot()).map(str::to_owned), c.action())),
    };
    // The pods' source exists only where their rule applies.
    assert_eq!(on(0, "10.1.2.3", ServiceKind::Udp, 53), None);
    assert_eq!(
        on(1, "10.1.2.3", ServiceKind::Udp, 53),
        Some((Some("pods".into()), CellAction::Allow))
    );
    // The deny exists only on eth2; elsewhere the allow decides.
    for p in [0, 1] {
        assert_eq!(
            on(p, "192.0.2.9", ServiceKind::Tcp, 443),
            Some((Some("clients-https".into()), CellAction::Allow))
        );
    }
    assert_eq!(
        on(2, "192.0.2.9", ServiceKind::Tcp, 443),
        Some((Some("no-https".into()), CellAction::Deny))
    );
    // Rows: one per distinct (class ∩ profile) rule set, NO_ROW where none apply.
    assert!(t.class_rows[0].contains(&NO_ROW));
    assert_eq!(t.class_cells.len(), t.stats.rows);
    // The clients' IPv4 class is {clients-https, no-https}: on eth2 a row of its own, on
    // the other interfaces the row it shares with their IPv6 class ({clients-https}).
    let class_of = |src: &str| {
        match ip(src) {
            IpAddr::V4(a) => lpm_v4(&t.v4, a),
            IpAddr::V6(a) => lpm_v6(&t.v6, a),
        }
        .unwrap() as usize
    };
    let (v4, v6) = (class_of("192.0.2.9"), class_of("2001:db8:c1::9"));
    assert_ne!(v4, v6);
    assert_eq!(t.class_rows[0][v4], t.class_rows[0][v6]);
    assert_ne!(t.class_rows[2][v4], t.class_rows[2][v6]);
    assert_eq!(t.row_entries(0).count(), 3 * t.stats.classes);
}

/// The rules whose prefixes hold `src` in `t`'s flat source table (what the program reads),
/// as precedence positions; `None` when no prefix holds it.
fn table_rules(t: &Tables, src: IpAddr) -> Option<Bits> {
    let (family, root_bits, words, addr) = match src {
        IpAddr::V4(a) => (
            lookup::Family::V4,
            filter_common::lookup::v4_root_bits(t.gen_config.flags),
            &t.v4_table,
            u128::from(u32::from(a)) << 96,
        ),
        IpAddr::V6(a) => (
            lookup::Family::V6,
            filter_common::lookup::V6_ROOT_BITS,
            &t.v6_table,
            u128::from(a),
        ),
    };
    let leaf = lookup::lookup(family, root_bits, words, addr);
    filter_common::lookup::entry::class(leaf).map(|c| t.class_rules[c as usize])
}

/// Addresses worth probing around `net`: both ends and their neighbours, and a middle one.
fn around(net: &IpNet) -> Vec<IpAddr> {
    match net {
        IpNet::V4(n) => {
            let (a, b) = (u32::from(n.network()), u32::from(n.broadcast()));
            [a.wrapping_sub(1), a, a / 2 + b / 2, b, b.wrapping_add(1)]
                .map(|x| IpAddr::V4(x.into()))
                .to_vec()
        }
        IpNet::V6(n) => {
            let (a, b) = (u128::from(n.network()), u128::from(n.broadcast()));
            [a.wrapping_sub(1), a, a / 2 + b / 2, b, b.wrapping_add(1)]
                .map(|x| IpAddr::V6(x.into()))
                .to_vec()
        }
    }
}

/// One edit of a rule's sources: (rule, position, replacement or insertion or removal).
fn arb_edit() -> impl Strategy<Value = (usize, usize, u8, IpNet)> {
    (
        0usize..6,
        0usize..8,
        0u8..3,
        prop_oneof![arb_v4_net(), arb_v6_net()],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A chain of reloads, each a few source edits compiled with `compile_after` from the
    /// previous one: every lookup, in the flat tables and in the classes, equals a fresh
    /// compile's; the updates apply (no silent fallback) while they are small.
    #[test]
    fn incremental_compiles_answer_like_full_ones(
        raw in prop::collection::vec(arb_rule(), 1..6),
        steps in prop::collection::vec(prop::collection::vec(arb_edit(), 1..4), 1..5),
    ) {
        let rules: Vec<Rule> = raw.into_iter().enumerate().map(|(i, (kind, mut sources, protocol, _))| {
            sources.sort();
            sources.dedup();
            Rule { name: format!("r{i}"), kind, sources, protocol, keys: vec![], interfaces: vec![] }
        }).collect();
        let mut policy = Policy { rules, ..Policy::default() };
        let mut slots = RuleSlots::new();
        let mut tables = compile(&policy, &slots).unwrap();
        slots.commit(&tables);
        for edits in steps {
            let mut next = policy.clone();
            for (rule, at, op, net) in edits {
                let count = next.rules.len();
                let sources = &mut next.rules[rule % count].sources;
                let at = at.min(sources.len());
                match op {
                    0 if at < sources.len() => { sources.remove(at); }
                    1 if at < sources.len() => sources[at] = net,
                    _ => sources.insert(at, net),
                }
                let mut seen = std::collections::HashSet::new();
                sources.retain(|n| seen.insert(*n));
            }
            let full = compile(&next, &slots).unwrap();
            let updated = compile_after(&next, &slots, Previous { policy: &policy, tables: &tables }).unwrap();
            prop_assert!(updated.incremental, "a few edits take the incremental path");
            let mut probes: Vec<IpAddr> = Vec::new();
            for r in next.rules.iter().chain(&policy.rules) {
                for net in &r.sources {
                    probes.extend(around(net));
                }
            }
            probes.extend(["0.0.0.0", "255.255.255.255", "::", "10.0.0.1"].map(ip));
            for src in probes {
                prop_assert_eq!(table_rules(&updated, src), table_rules(&full, src), "table, src {}", src);
                for kind in ServiceKind::ALL {
                    for key in [0, 8, 22, 443, 65535] {
                        prop_assert_eq!(updated.lookup(src, kind, key), full.lookup(src, kind, key),
                            "src {} kind {:?} key {}", src, kind, key);
                    }
                }
            }
            let rules_of = |t: &Tables| -> (Vec<_>, Vec<_>) {
                (t.v4.iter().map(|(n, c)| (*n, t.class_rules[*c as usize])).collect(),
                 t.v6.iter().map(|(n, c)| (*n, t.class_rules[*c as usize])).collect())
            };
            prop_assert_eq!(rules_of(&updated), rules_of(&full));
            slots.commit(&updated);
            policy = next;
            tables = updated;
        }
    }
}

/// From `V4_LARGE_FROM` prefixes of capacity the IPv4 root has 20 bits, announced by the
/// generation's flag; the tables answer as with the 18-bit root, also after an incremental
/// update (which keeps the root: a capacity change compiles from scratch).
#[test]
fn a_large_ipv4_capacity_gets_the_20_bit_root() {
    use filter_common::lookup::{v4_root_bits, V4_LARGE_FROM};
    let policy = fixture();
    let mut large = policy.clone();
    large.capacity.ipv4 = V4_LARGE_FROM;
    let slots = RuleSlots::new();
    let (small_t, large_t) = (
        compile(&policy, &slots).unwrap(),
        compile(&large, &slots).unwrap(),
    );
    assert_eq!(v4_root_bits(small_t.gen_config.flags), 18);
    assert_eq!(v4_root_bits(large_t.gen_config.flags), 20);
    assert_eq!(large_t.gen_config.flags & flags::V4_ROOT_18, 0);
    assert!(large_t.v4_table.len() >= 1 << 20 && small_t.v4_table.len() < 1 << 19);
    let mut changed = large.clone();
    changed.rules[4]
        .sources
        .push("198.51.100.0/24".parse().unwrap());
    let updated = compile_after(
        &changed,
        &slots,
        Previous {
            policy: &large,
            tables: &large_t,
        },
    )
    .unwrap();
    assert!(updated.incremental);
    let full = compile(&changed, &slots).unwrap();
    for r in &changed.rules {
        for net in &r.sources {
            for addr in around(net) {
                assert_eq!(
                    table_rules(&updated, addr),
                    table_rules(&full, addr),
                    "{addr}"
                );
                assert_eq!(
                    table_rules(&large_t, addr),
                    table_rules(&small_t, addr),
                    "{addr}"
                );
            }
        }
    }
}

#[test]
fn a_reload_that_changes_rules_or_many_prefixes_compiles_from_scratch() {
    let policy = fixture();
    let slots = RuleSlots::new();
    let tables = compile(&policy, &slots).unwrap();
    let previous = Previous {
        policy: &policy,
        tables: &tables,
    };
    // One prefix more: updated.
    let mut one = policy.clone();
    one.rules[4]
        .sources
        .push("198.51.100.0/24".parse().unwrap());
    assert!(compile_after(&one, &slots, previous).unwrap().incremental);
    // Edits far apart in a long list: replacements in place, and an insertion at one end
    // with a removal at the other.
    let mut long = policy.clone();
    long.rules[4].sources.extend(
        (0..500u32)
            .map(|i| IpNet::V4(ipnet::Ipv4Net::new((0xc612_0000 + (i << 8)).into(), 24).unwrap())),
    );
    let long_tables = compile(&long, &slots).unwrap();
    let long_previous = Previous {
        policy: &long,
        tables: &long_tables,
    };
    let mut replaced = long.clone();
    replaced.rules[4].sources[10] = "198.51.100.0/24".parse().unwrap();
    replaced.rules[4].sources[400] = "198.51.101.0/24".parse().unwrap();
    assert!(
        compile_after(&replaced, &slots, long_previous)
            .unwrap()
            .incremental
    );
    let mut shifted = long.clone();
    shifted.rules[4].sources.remove(3);
    shifted.rules[4]
        .sources
        .push("198.51.100.0/24".parse().unwrap());
    let t = compile_after(&shifted, &slots, long_previous).unwrap();
    assert!(t.incremental);
    assert_eq!(
        t.lookup(ip("198.51.100.7"), ServiceKind::Tcp, 443),
        compile(&shifted, &slots)
            .unwrap()
            .lookup(ip("198.51.100.7"), ServiceKind::Tcp, 443)
    );
    // A rule more: the classes' bit positions move.
    let mut more = policy.clone();
    more.rules.push(rule(
        "extra",
        RuleKind::Deny,
        &["203.0.113.0/24"],
        Protocol::Any,
        &[],
    ));
    assert!(!compile_after(&more, &slots, previous).unwrap().incremental);
    // Hundreds of prefixes: a full compile is as cheap.
    let mut many = policy.clone();
    many.rules[4].sources.extend(
        (0..200u32)
            .map(|i| IpNet::V4(ipnet::Ipv4Net::new((0xc633_6400 + (i << 8)).into(), 24).unwrap())),
    );
    assert!(!compile_after(&many, &slots, previous).unwrap().incremental);
    // A short prefix covering many root slots.
    let mut wide = policy.clone();
    wide.rules[4].sources.push("10.0.0.0/2".parse().unwrap());
    assert!(!compile_after(&wide, &slots, previous).unwrap().incremental);
}
