//! The importers on fixtures shaped like the CLIs' documented JSON (tests/fixtures/import):
//! what they write, that it loads, and every refusal naming what it could not import.

use super::{
    aws::{self, JsonFile, Resolution},
    azure, ImportError, Imported,
};
use crate::policy::{Mode, Protocol, RuleKind};

macro_rules! fixture {
    ($name:literal) => {
        JsonFile {
            name: $name.into(),
            text: include_str!(concat!("../../tests/fixtures/import/", $name)).into(),
        }
    };
}

fn refusal(result: Result<Imported, ImportError>) -> Vec<String> {
    match result {
        Err(ImportError::Refused { problems, .. }) => problems,
        Err(other) => panic!("refused for the wrong reason: {other}"),
        Ok(imported) => panic!("imported:\n{}", imported.to_yaml()),
    }
}

/// The file loads, and loading it twice from the same input gives the same bytes.
fn loads(imported: &Imported) -> crate::config::Loaded {
    let yaml = imported.to_yaml();
    crate::config::parse_str("imported.yaml", &yaml)
        .unwrap_or_else(|e| panic!("the imported file does not load: {e}\n{yaml}"))
}

fn security_groups(resolution: Resolution) -> Result<Imported, ImportError> {
    aws::security_groups(
        &fixture!("aws-security-groups.json"),
        &aws::SecurityGroupOptions {
            mode: Mode::Monitor,
            groups: Vec::new(),
            resolution,
        },
    )
}

fn resolved() -> Resolution {
    Resolution {
        group_cidrs: vec![("pl-0b1a4c0000000001".into(), vec!["10.0.128.0/20".into()])],
        enis: Some(fixture!("aws-network-interfaces.json")),
        subnets: None,
    }
}

#[test]
fn security_group_permissions_become_allow_rules_with_their_meaning() {
    let imported = security_groups(resolved()).unwrap();
    let shape: Vec<(Protocol, String, usize)> = imported
        .rules
        .iter()
        .map(|r| {
            let keys: Vec<String> = r
                .keys
                .iter()
                .map(|k| format!("{}-{}", k.start(), k.end()))
                .collect();
            let set = imported.sets.iter().find(|s| s.name == r.from).unwrap();
            (r.protocol, keys.join(","), set.sources.len())
        })
        .collect();
    assert_eq!(
        shape,
        [
            (Protocol::Tcp, "443-443".into(), 3),
            (Protocol::Tcp, "10250-10250".into(), 3), // the cluster group's ENI addresses
            (Protocol::Any, String::new(), 4),        // -1, the group itself: its ENIs
            (Protocol::Tcp, "30000-32767".into(), 1), // the prefix list, as mapped
            (Protocol::Icmp, "8-8".into(), 1),        // type 8, any code
            (Protocol::Icmpv6, String::new(), 1),     // -1/-1: every type
            (Protocol::Udp, "53-53".into(), 1),       // "17"
            (Protocol::Tcp, String::new(), 1),        // "6", 0-65535: every port
            (Protocol::Tcp, "22-22".into(), 1),
            (Protocol::Tcp, "2200-2299".into(), 3),
        ]
    );
    assert!(imported.rules.iter().all(|r| r.action == RuleKind::Allow));
    assert!(!imported.default_pass);
    let loaded = loads(&imported);
    assert_eq!(loaded.policy.mode, Mode::Monitor);
    assert_eq!(
        imported.to_yaml(),
        security_groups(resolved()).unwrap().to_yaml(),
        "deterministic"
    );
    // One group of the file only.
    let admin = aws::security_groups(
        &fixture!("aws-security-groups.json"),
        &aws::SecurityGroupOptions {
            mode: Mode::Enforce,
            groups: vec!["sg-0adm1n00000000001".into()],
            resolution: Resolution::default(),
        },
    )
    .unwrap();
    assert_eq!(admin.rules.len(), 2);
    assert_eq!(loads(&admin).policy.mode, Mode::Enforce);
}

#[test]
fn every_source_left_unresolved_is_named() {
    let problems = refusal(security_groups(Resolution::default()));
    let text = problems.join("\n");
    for needle in [
        "allows security group sg-0c1u5t3r000000001: give its addresses with --group-cidrs",
        "allows security group sg-0n0de000000000001",
        "allows prefix list pl-0b1a4c0000000001",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    // An explicit mapping may name subnets, which need the subnets file.
    let problems = refusal(security_groups(Resolution {
        group_cidrs: vec![
            (
                "pl-0b1a4c0000000001".into(),
                vec!["subnet-0e1b00000000000a1".into()],
            ),
            ("sg-0c1u5t3r000000001".into(), vec!["10.0.0.0/27".into()]),
            ("sg-0n0de000000000001".into(), vec!["10.0.32.0/19".into()]),
        ],
        ..Resolution::default()
    }));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("subnet subnet-0e1b00000000000a1: give the subnets with --subnets"),
        "{problems:?}"
    );
}

#[test]
fn what_nodegate_cannot_state_exactly_is_refused() {
    let problems = refusal(aws::security_groups(
        &fixture!("aws-security-groups-inexact.json"),
        &aws::SecurityGroupOptions {
            mode: Mode::Monitor,
            groups: Vec::new(),
            resolution: Resolution::default(),
        },
    ));
    let text = problems.join("\n");
    for needle in [
        "IpPermissions[0]: it allows ICMP type 3 code 4 only",
        "IpPermissions[1]: it allows IP protocol 47",
        "IpPermissions[2]: ports 0-1023 include port 0",
        "IpPermissions[3] allows prefix list pl-0unknown00000001",
        "IpPermissions[3] allows security group sg-0e15ewhere000001",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert_eq!(problems.len(), 5, "{text}");
}

#[test]
fn the_eks_control_plane_comes_from_its_subnets_or_its_enis() {
    let eks = |resolution, high_ports| {
        aws::eks_cluster(
            &fixture!("eks-cluster.json"),
            &aws::EksOptions {
                mode: Mode::Monitor,
                high_ports,
                resolution,
            },
        )
    };
    let by_subnets = eks(
        Resolution {
            subnets: Some(fixture!("aws-subnets.json")),
            ..Resolution::default()
        },
        true,
    )
    .unwrap();
    let nets: Vec<String> = by_subnets.sets[0]
        .sources
        .iter()
        .map(|s| s.net.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.0/28", "2001:db8:100::/64", "10.0.0.16/28"]);
    let names: Vec<&str> = by_subnets.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "control-plane-https",
            "control-plane-kubelet",
            "control-plane-tcp-high",
            "control-plane-udp-high"
        ]
    );
    loads(&by_subnets);
    let by_enis = eks(
        Resolution {
            enis: Some(fixture!("aws-network-interfaces.json")),
            ..Resolution::default()
        },
        false,
    )
    .unwrap();
    let nets: Vec<String> = by_enis.sets[0]
        .sources
        .iter()
        .map(|s| s.net.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.5/32", "2001:db8:100::a/128", "10.0.0.20/32"]);
    assert_eq!(by_enis.rules.len(), 2);
    let problems = refusal(eks(Resolution::default(), false));
    assert!(
        problems.iter().any(|p| p
            .contains("names subnet subnet-0a0000000000000a1: give the subnets with --subnets")),
        "{problems:?}"
    );
}

fn aks(file: JsonFile, outbound_ips: &[&str], subnets: bool) -> Result<Imported, ImportError> {
    azure::aks_cluster(
        &file,
        &azure::AksOptions {
            mode: Mode::Monitor,
            outbound_ips: outbound_ips.iter().map(|s| (*s).to_owned()).collect(),
            subnets: subnets.then(|| fixture!("azure-subnets.json")),
        },
    )
}

#[test]
fn aks_authorized_ranges_reach_https_and_0_0_0_0_32_means_the_outbound_ip() {
    let imported = aks(fixture!("aks-cluster.json"), &[], true).unwrap();
    let authorized: Vec<String> = imported.sets[0]
        .sources
        .iter()
        .map(|s| s.net.to_string())
        .collect();
    assert_eq!(
        authorized,
        [
            "203.0.113.0/24",
            "198.51.100.32/27",
            "192.0.2.10/32",
            "2001:db8:a::/48"
        ]
    );
    let control_plane: Vec<String> = imported.sets[1]
        .sources
        .iter()
        .map(|s| s.net.to_string())
        .collect();
    assert_eq!(
        control_plane,
        ["10.225.0.0/28"],
        "the API server subnet (VNet integration)"
    );
    assert_eq!(imported.rules.len(), 3);
    loads(&imported);
    // VNet integration without the subnets file: named.
    let problems = refusal(aks(fixture!("aks-cluster.json"), &[], false));
    assert!(
        problems[0].contains("/subnets/apiserver needs its prefixes"),
        "{problems:?}"
    );
    // 0.0.0.0/32: only the outbound IP, which must be given; never the address 0.0.0.0.
    let problems = refusal(aks(fixture!("aks-cluster-outbound-only.json"), &[], false));
    assert!(problems[0].contains("hold 0.0.0.0/32"), "{problems:?}");
    let locked = aks(
        fixture!("aks-cluster-outbound-only.json"),
        &["20.50.60.70"],
        false,
    )
    .unwrap();
    let authorized: Vec<String> = locked.sets[0]
        .sources
        .iter()
        .map(|s| s.net.to_string())
        .collect();
    assert_eq!(authorized, ["20.50.60.70/32"]);
    assert!(
        !locked.to_yaml().contains("\"0.0.0.0"),
        "{}",
        locked.to_yaml()
    );
    // Open and private clusters have nothing to import.
    let open = JsonFile {
        name: "open.json".into(),
        text: r#"{"name": "open", "apiServerAccessProfile": {"authorizedIpRanges": null}}"#.into(),
    };
    assert!(refusal(aks(open, &[], false))[0].contains("open to every address"));
    let private = JsonFile {
        name: "private.json".into(),
        text: r#"{"name": "p", "apiServerAccessProfile": {"enablePrivateCluster": true}}"#.into(),
    };
    assert!(refusal(aks(private, &[], false))[0].contains("private cluster"));
}

fn nsg(file: JsonFile, tags: &[(&str, &str)], node: &[&str]) -> Result<Imported, ImportError> {
    azure::network_security_group(
        &file,
        &azure::NsgOptions {
            mode: Mode::Monitor,
            tags: tags
                .iter()
                .map(|(t, v)| ((*t).to_owned(), v.split(',').map(str::to_owned).collect()))
                .collect(),
            node_addresses: node.iter().map(|a| a.parse().unwrap()).collect(),
        },
    )
}

#[test]
fn an_nsg_imports_when_deny_first_keeps_its_first_match_order() {
    let imported = nsg(
        fixture!("azure-nsg.json"),
        &[("VirtualNetwork", "10.224.0.0/12")],
        &["10.224.0.4"],
    )
    .unwrap();
    let rules: Vec<(&str, RuleKind, Protocol)> = imported
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.action, r.protocol))
        .collect();
    assert_eq!(
        rules,
        [
            ("nsg-100-DenyScanners", RuleKind::Deny, Protocol::Any),
            ("nsg-200-AllowHttps", RuleKind::Allow, Protocol::Tcp),
            (
                "nsg-300-AllowKubeletFromVnet",
                RuleKind::Allow,
                Protocol::Tcp
            ),
            ("nsg-400-AllowPing-icmp", RuleKind::Allow, Protocol::Icmp),
            (
                "nsg-400-AllowPing-icmpv6",
                RuleKind::Allow,
                Protocol::Icmpv6
            ),
            ("nsg-500-AllowNodePorts", RuleKind::Allow, Protocol::Tcp),
            ("nsg-700-AllowDnsUdp", RuleKind::Allow, Protocol::Udp),
            ("nsg-900-DenyOldApp", RuleKind::Deny, Protocol::Tcp),
            ("nsg-65000-AllowVnetInBound", RuleKind::Allow, Protocol::Any),
            (
                "nsg-65001-AllowAzureLoadBalancerInBound",
                RuleKind::Allow,
                Protocol::Any
            ),
        ],
        "AllowSshToJumpSubnet's destination is not this node; DenyAllInBound is the default"
    );
    assert!(!imported.default_pass);
    loads(&imported);
    // The node outside the jump subnet's destination must be known.
    let problems = refusal(nsg(
        fixture!("azure-nsg.json"),
        &[("VirtualNetwork", "10.224.0.0/12")],
        &[],
    ));
    assert!(
        problems[0].contains("AllowSshToJumpSubnet") && problems[0].contains("--node-address"),
        "{problems:?}"
    );
}

#[test]
fn an_allow_before_an_overlapping_deny_is_refused_naming_both() {
    let file = fixture!("azure-nsg-rules-conflict.json");
    let problems = refusal(nsg(file, &[], &[]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("AllowVnetHttps (priority 100, Allow) comes before NSG rule DenyLegacySubnet (priority 200, Deny)"),
        "{problems:?}"
    );
    let problems = refusal(nsg(
        fixture!("azure-nsg-rules-esp.json"),
        &[("VirtualNetwork", "10.0.0.0/8")],
        &[],
    ));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("AllowGre (priority 130, Allow): protocol esp"),
        "{problems:?}"
    );
}

#[test]
fn rules_after_a_catch_all_are_left_out_and_need_nothing() {
    // The operator's own catch-all at 4096 comes before Azure's defaults: their
    // VirtualNetwork tag is never needed, and the default is the catch-all's.
    let file = JsonFile {
        name: "rules.json".into(),
        text: r#"[
            {"name": "AllowWeb", "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
             "sourceAddressPrefix": "203.0.113.0/24", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "443"},
            {"name": "AllowAll", "priority": 4096, "direction": "Inbound", "access": "Allow", "protocol": "*",
             "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "*"},
            {"name": "SourcePorts", "priority": 300, "direction": "Inbound", "access": "Deny", "protocol": "Udp",
             "sourceAddressPrefix": "10.0.0.0/8", "sourcePortRange": "53", "destinationAddressPrefix": "*", "destinationPortRange": "*"}
        ]"#
        .into(),
    };
    let problems = refusal(nsg(file.clone(), &[], &[]));
    assert!(
        problems[0].contains("SourcePorts") && problems[0].contains("source ports"),
        "{problems:?}"
    );
    let file = JsonFile {
        text: file
            .text
            .replace(r#""sourcePortRange": "53""#, r#""sourcePortRange": "*""#),
        ..file
    };
    let imported = nsg(file, &[], &[]).unwrap();
    assert!(imported.default_pass, "AllowAll is the default");
    let names: Vec<&str> = imported.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["nsg-100-AllowWeb", "nsg-300-SourcePorts"]);
    let yaml = imported.to_yaml();
    assert!(
        yaml.contains("and the 3 rule(s) after it, which no packet reaches, were left out"),
        "{yaml}"
    );
    loads(&imported);
}
