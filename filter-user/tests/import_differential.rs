//! Each importer against an independent evaluator of the cloud's own semantics: a security
//! group's union of permissions, an NSG's first match by priority (with Azure's default
//! rules), AKS's authorized ranges, EKS's control-plane minimums. The evaluators read the
//! fixtures' JSON themselves (serde_json values, nothing of `filter_user::import`), and the
//! reference model judges the same generated packets against the imported rule file. Every
//! packet must get the same verdict: the import is exact, or it would have been refused.
//!
//! Packets: every source block the fixtures name (its first and last address, one inside,
//! the neighbours just outside) and random addresses, times TCP/UDP ports at every range
//! boundary, ICMP types, and a protocol nodegate has no name for (GRE). ICMP errors and
//! neighbour discovery are left out: nodegate passes them as essentials before any rule,
//! which the import's header states.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filter_user::{
    import::{
        aws::{self, JsonFile, Resolution},
        azure, Imported,
    },
    model::{Model, ProbeProtocol},
    policy::Mode,
};
use ipnet::IpNet;
use rand::{rngs::ChaCha8Rng, RngExt as _, SeedableRng};
use serde_json::Value;

fn fixture(name: &str) -> JsonFile {
    let path = format!(
        "{}/tests/fixtures/import/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    JsonFile {
        name: name.into(),
        text: std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
    }
}

fn json(name: &str) -> Value {
    serde_json::from_str(&fixture(name).text).unwrap()
}

#[derive(Clone, Copy, Debug)]
struct Packet {
    src: IpAddr,
    proto: ProbeProtocol,
    port: u16,
}

fn is_tcp(p: &Packet) -> bool {
    matches!(p.proto, ProbeProtocol::Tcp)
}

fn net(text: &str) -> IpNet {
    text.parse()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .unwrap_or_else(|_| panic!("{text} is not a CIDR"))
}

fn within(nets: &[IpNet], addr: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&addr))
}

/// Addresses a node can receive from: not 0/8, loopback, multicast or the probe's own
/// destination (the model drops those before any rule, as the kernel does).
fn usable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] != 0 && o[0] != 127 && o[0] < 224 && a != filter_user::model::PROBE_DST_V4
        }
        IpAddr::V6(a) => {
            !a.is_multicast()
                && !a.is_unspecified()
                && !a.is_loopback()
                && a != filter_user::model::PROBE_DST_V6
        }
    }
}

fn step(addr: IpAddr, by: i128) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) => {
            let n = i128::from(u32::from(a)) + by;
            u32::try_from(n).ok().map(|n| IpAddr::V4(Ipv4Addr::from(n)))
        }
        IpAddr::V6(a) => {
            let n = u128::from(a).checked_add_signed(by)?;
            Some(IpAddr::V6(Ipv6Addr::from(n)))
        }
    }
}

/// The packets to judge: sources around every block in `nets`, random sources, and every
/// port in `ports` (with its neighbours) for TCP and UDP, ICMP types, and GRE.
fn generate(nets: &[IpNet], ports: &[u16], rng: &mut ChaCha8Rng) -> Vec<Packet> {
    let mut sources = Vec::new();
    for n in nets {
        let (first, last) = (n.network(), n.broadcast());
        sources.extend([first, last]);
        sources.extend(step(first, -1));
        sources.extend(step(last, 1));
        let size = 1u128 << (u32::from(n.max_prefix_len() - n.prefix_len())).min(100);
        sources.extend(step(first, (rng.random::<u64>() as i128) % size as i128));
    }
    for _ in 0..40 {
        sources.push(IpAddr::V4(Ipv4Addr::from(rng.random::<u32>())));
        sources.push(IpAddr::V6(Ipv6Addr::from(rng.random::<u128>())));
    }
    sources.retain(|a| usable(*a));
    sources.sort();
    sources.dedup();
    let mut port_list: Vec<u16> = vec![1, 22, 53, 80, 443, 1024, 1025, 8080, 10250, 65535];
    for p in ports {
        port_list.extend([p.saturating_sub(1).max(1), *p, p.saturating_add(1)]);
    }
    port_list.extend((0..8).map(|_| rng.random_range(1..=65535u16)));
    port_list.sort_unstable();
    port_list.dedup();
    let mut out = Vec::new();
    for &src in &sources {
        for &port in &port_list {
            out.push(Packet {
                src,
                proto: ProbeProtocol::Tcp,
                port,
            });
            out.push(Packet {
                src,
                proto: ProbeProtocol::Udp,
                port,
            });
        }
        // Types other than errors and neighbour discovery (essentials pass them).
        let (proto, types): (ProbeProtocol, &[u16]) = match src {
            IpAddr::V4(_) => (ProbeProtocol::Icmp, &[0, 8, 9, 13, 14, 42, 200]),
            IpAddr::V6(_) => (ProbeProtocol::Icmpv6, &[128, 129, 130, 140, 200]),
        };
        for &port in types {
            out.push(Packet { src, proto, port });
        }
        out.push(Packet {
            src,
            proto: ProbeProtocol::Ip(47),
            port: 0,
        });
    }
    out
}

/// Judge every packet with the model of `imported` and with `cloud`; panics listing the
/// first disagreements. Returns (packets, passed by the cloud, dropped by the cloud).
fn differential(
    what: &str,
    imported: &Imported,
    packets: &[Packet],
    cloud: impl Fn(&Packet) -> bool,
) -> (usize, usize, usize) {
    let yaml = imported.to_yaml();
    let loaded = filter_user::config::parse_str(what, &yaml)
        .unwrap_or_else(|e| panic!("{what}: the import does not load: {e}\n{yaml}"));
    let model = Model::new(&loaded.policy);
    let mut disagreements = Vec::new();
    let mut passed = 0;
    for p in packets {
        let j = model.explain(p.src, p.proto, p.port);
        let ours = !j.outcome().stopped();
        let theirs = cloud(p);
        passed += usize::from(theirs);
        if ours != theirs {
            disagreements.push(format!("{p:?}: cloud {theirs}, nodegate {}", j.outcome()));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{what}: {} of {} packets disagree:\n{}\n{yaml}",
        disagreements.len(),
        packets.len(),
        disagreements
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{what}: {} packets, 0 disagreements ({passed} pass, {} drop)",
        packets.len(),
        packets.len() - passed
    );
    (packets.len(), passed, packets.len() - passed)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The addresses of the ENIs carrying security group `id`, read from the ENI fixture.
fn eni_addresses(enis: &Value, id: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for eni in enis["NetworkInterfaces"].as_array().unwrap() {
        if !eni["Groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["GroupId"] == id)
        {
            continue;
        }
        for a in eni["PrivateIpAddresses"].as_array().unwrap() {
            out.push(net(a["PrivateIpAddress"].as_str().unwrap()));
        }
        for a in eni["Ipv6Addresses"].as_array().unwrap() {
            out.push(net(a["Ipv6Address"].as_str().unwrap()));
        }
    }
    out
}

/// A security group's rule as AWS states it: any permission of any group admits it.
fn security_groups_admit(groups: &Value, resolve: &dyn Fn(&str) -> Vec<IpNet>, p: &Packet) -> bool {
    groups["SecurityGroups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| {
            g["IpPermissions"].as_array().unwrap().iter().any(|perm| {
                let from = perm["FromPort"].as_i64().unwrap_or(-1);
                let to = perm["ToPort"].as_i64().unwrap_or(-1);
                let port = i64::from(p.port);
                let in_range = (from == -1) || (from <= port && port <= to);
                let protocol = match perm["IpProtocol"].as_str().unwrap() {
                    "-1" => true,
                    "tcp" | "6" => is_tcp(p) && in_range,
                    "udp" | "17" => matches!(p.proto, ProbeProtocol::Udp) && in_range,
                    // FromPort is the type, ToPort the code (-1: any).
                    "icmp" | "1" => {
                        matches!(p.proto, ProbeProtocol::Icmp) && (from == -1 || from == port)
                    }
                    "icmpv6" | "58" => {
                        matches!(p.proto, ProbeProtocol::Icmpv6) && (from == -1 || from == port)
                    }
                    other => panic!("fixture protocol {other}"),
                };
                let mut sources: Vec<IpNet> = Vec::new();
                for r in perm["IpRanges"].as_array().unwrap() {
                    sources.push(net(r["CidrIp"].as_str().unwrap()));
                }
                for r in perm["Ipv6Ranges"].as_array().unwrap() {
                    sources.push(net(r["CidrIpv6"].as_str().unwrap()));
                }
                for pl in perm["PrefixListIds"].as_array().unwrap() {
                    sources.extend(resolve(pl["PrefixListId"].as_str().unwrap()));
                }
                for pair in perm["UserIdGroupPairs"].as_array().unwrap() {
                    sources.extend(resolve(pair["GroupId"].as_str().unwrap()));
                }
                protocol && within(&sources, p.src)
            })
        })
}

#[test]
fn security_groups_import_exactly() {
    let groups = json("aws-security-groups.json");
    let enis = json("aws-network-interfaces.json");
    let prefix_list = vec![net("10.0.128.0/20")];
    let imported = aws::security_groups(
        &fixture("aws-security-groups.json"),
        &aws::SecurityGroupOptions {
            mode: Mode::Monitor,
            groups: Vec::new(),
            resolution: Resolution {
                group_cidrs: vec![("pl-0b1a4c0000000001".into(), vec!["10.0.128.0/20".into()])],
                enis: Some(fixture("aws-network-interfaces.json")),
                subnets: None,
            },
        },
    )
    .unwrap();
    let resolve = |id: &str| {
        if id == "pl-0b1a4c0000000001" {
            prefix_list.clone()
        } else {
            eni_addresses(&enis, id)
        }
    };
    let mut nets = prefix_list.clone();
    for id in ["sg-0c1u5t3r000000001", "sg-0n0de000000000001"] {
        nets.extend(eni_addresses(&enis, id));
    }
    for text in [
        "10.0.0.0/28",
        "10.0.0.16/28",
        "2001:db8:100::/64",
        "10.0.0.0/16",
        "2001:db8:100::/56",
        "192.0.2.0/26",
        "198.51.100.0/28",
        "203.0.113.64/27",
        "2001:db8:ad::/48",
    ] {
        nets.push(net(text));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    let packets = generate(
        &nets,
        &[443, 10250, 30000, 32767, 53, 22, 2200, 2299],
        &mut rng,
    );
    let (n, pass, drop) = differential("aws-security-groups", &imported, &packets, |p| {
        security_groups_admit(&groups, &resolve, p)
    });
    assert!(
        n > 5000 && pass > 500 && drop > 1000,
        "{n} {pass} {drop}: the packets exercise both verdicts"
    );
}

#[test]
fn the_eks_control_plane_imports_exactly() {
    let cluster = json("eks-cluster.json");
    let subnets = json("aws-subnets.json");
    let mut control_plane = Vec::new();
    for id in strings(&cluster["cluster"]["resourcesVpcConfig"]["subnetIds"]) {
        let subnet = subnets["Subnets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["SubnetId"] == id.as_str())
            .unwrap();
        control_plane.push(net(subnet["CidrBlock"].as_str().unwrap()));
        for b in subnet["Ipv6CidrBlockAssociationSet"].as_array().unwrap() {
            control_plane.push(net(b["Ipv6CidrBlock"].as_str().unwrap()));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let packets = generate(&control_plane, &[443, 10250, 1025, 65535], &mut rng);
    for high_ports in [false, true] {
        let imported = aws::eks_cluster(
            &fixture("eks-cluster.json"),
            &aws::EksOptions {
                mode: Mode::Enforce,
                high_ports,
                resolution: Resolution {
                    subnets: Some(fixture("aws-subnets.json")),
                    ..Resolution::default()
                },
            },
        )
        .unwrap();
        // EKS: tcp 443 and 10250 from the control plane; with the recommendation, TCP and
        // UDP 1025-65535 too.
        differential("eks-cluster", &imported, &packets, |p| {
            let tcp_or_udp = matches!(p.proto, ProbeProtocol::Tcp | ProbeProtocol::Udp);
            within(&control_plane, p.src)
                && ((is_tcp(p) && (p.port == 443 || p.port == 10250))
                    || (high_ports && tcp_or_udp && p.port >= 1025))
        });
    }
}

#[test]
fn aks_authorized_ranges_import_exactly() {
    let cluster = json("aks-cluster.json");
    let subnets = json("azure-subnets.json");
    let profile = &cluster["apiServerAccessProfile"];
    let authorized: Vec<IpNet> = strings(&profile["authorizedIpRanges"])
        .iter()
        .filter(|r| *r != "0.0.0.0/32")
        .map(|r| net(r))
        .collect();
    let subnet_id = profile["subnetId"].as_str().unwrap();
    let api_subnet: Vec<IpNet> = subnets
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"].as_str().unwrap().eq_ignore_ascii_case(subnet_id))
        .map(|s| net(s["addressPrefix"].as_str().unwrap()))
        .collect();
    let imported = azure::aks_cluster(
        &fixture("aks-cluster.json"),
        &azure::AksOptions {
            mode: Mode::Monitor,
            outbound_ips: Vec::new(),
            subnets: Some(fixture("azure-subnets.json")),
        },
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let nets: Vec<IpNet> = authorized.iter().chain(&api_subnet).copied().collect();
    let packets = generate(&nets, &[443, 10250], &mut rng);
    differential("aks-cluster", &imported, &packets, |p| {
        is_tcp(p)
            && ((p.port == 443 && within(&authorized, p.src))
                || ((p.port == 443 || p.port == 10250) && within(&api_subnet, p.src)))
    });
    // 0.0.0.0/32: only the outbound IP.
    let locked = azure::aks_cluster(
        &fixture("aks-cluster-outbound-only.json"),
        &azure::AksOptions {
            mode: Mode::Monitor,
            outbound_ips: vec!["20.50.60.70".into()],
            subnets: None,
        },
    )
    .unwrap();
    let outbound = vec![net("20.50.60.70/32")];
    let packets = generate(&[outbound[0], net("0.0.0.0/32")], &[443], &mut rng);
    differential("aks-cluster 0.0.0.0/32", &locked, &packets, |p| {
        is_tcp(p) && p.port == 443 && within(&outbound, p.src)
    });
}

/// Azure's default inbound rules, as `az network nsg show` prints them.
fn azure_defaults() -> Vec<Value> {
    serde_json::from_str(
        r#"[
        {"name": "AllowVnetInBound", "priority": 65000, "direction": "Inbound", "access": "Allow", "protocol": "*",
         "sourceAddressPrefix": "VirtualNetwork", "sourcePortRange": "*", "destinationAddressPrefix": "VirtualNetwork", "destinationPortRange": "*"},
        {"name": "AllowAzureLoadBalancerInBound", "priority": 65001, "direction": "Inbound", "access": "Allow", "protocol": "*",
         "sourceAddressPrefix": "AzureLoadBalancer", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "*"},
        {"name": "DenyAllInBound", "priority": 65500, "direction": "Inbound", "access": "Deny", "protocol": "*",
         "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "*"}
    ]"#,
    )
    .unwrap()
}

/// An NSG's verdict: its inbound rules by priority, the first that matches decides.
struct Nsg {
    rules: Vec<Value>,
    tags: Vec<(String, Vec<IpNet>)>,
    node: Vec<IpAddr>,
}

impl Nsg {
    fn new(doc: &Value, tags: &[(&str, &str)], node: &[&str]) -> Nsg {
        let mut rules: Vec<Value> = match doc {
            Value::Array(rules) => rules.clone(),
            group => group["securityRules"]
                .as_array()
                .unwrap()
                .iter()
                .chain(group["defaultSecurityRules"].as_array().unwrap())
                .cloned()
                .collect(),
        };
        if !rules.iter().any(|r| r["name"] == "DenyAllInBound") {
            rules.extend(azure_defaults());
        }
        rules.retain(|r| r["direction"] == "Inbound");
        rules.sort_by_key(|r| r["priority"].as_u64().unwrap());
        Nsg {
            rules,
            tags: tags
                .iter()
                .map(|(t, v)| ((*t).to_owned(), v.split(',').map(net).collect()))
                .chain([(
                    "AzureLoadBalancer".to_owned(),
                    vec![net("168.63.129.16/32")],
                )])
                .collect(),
            node: node.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn prefixes(&self, rule: &Value, single: &str, many: &str) -> Option<Vec<IpNet>> {
        let mut items = strings(&rule[many]);
        items.extend(rule[single].as_str().map(str::to_owned));
        let mut out = Vec::new();
        for item in items.iter().filter(|i| !i.is_empty()) {
            match item.as_str() {
                "*" => return None,
                tag => match self.tags.iter().find(|(t, _)| t == tag) {
                    Some((_, nets)) => out.extend(nets),
                    None => out.push(net(tag)),
                },
            }
        }
        Some(out)
    }

    fn matches(&self, rule: &Value, p: &Packet) -> bool {
        let protocol = match rule["protocol"].as_str().unwrap() {
            "*" => true,
            "Tcp" => is_tcp(p),
            "Udp" => matches!(p.proto, ProbeProtocol::Udp),
            "Icmp" => matches!(p.proto, ProbeProtocol::Icmp | ProbeProtocol::Icmpv6),
            other => panic!("fixture protocol {other}"),
        };
        let mut ports = strings(&rule["destinationPortRanges"]);
        ports.extend(rule["destinationPortRange"].as_str().map(str::to_owned));
        let port_ok = ports.iter().any(|r| {
            r == "*" || {
                let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                (lo.parse::<u16>().unwrap()..=hi.parse::<u16>().unwrap()).contains(&p.port)
            }
        });
        let source_ok = self
            .prefixes(rule, "sourceAddressPrefix", "sourceAddressPrefixes")
            .is_none_or(|nets| within(&nets, p.src));
        let destination = rule["destinationAddressPrefix"].as_str().unwrap_or("");
        let destination_ok = destination == "*"
            || destination == "VirtualNetwork"
            || self
                .prefixes(
                    rule,
                    "destinationAddressPrefix",
                    "destinationAddressPrefixes",
                )
                .is_none_or(|nets| self.node.iter().all(|a| within(&nets, *a)));
        protocol && port_ok && source_ok && destination_ok
    }

    fn admits(&self, p: &Packet) -> bool {
        let first = self
            .rules
            .iter()
            .find(|r| self.matches(r, p))
            .expect("DenyAllInBound matches");
        first["access"] == "Allow"
    }
}

#[test]
fn network_security_groups_import_exactly() {
    let tags = [("VirtualNetwork", "10.224.0.0/12")];
    let node = ["10.224.0.4"];
    let doc = json("azure-nsg.json");
    let nsg = Nsg::new(&doc, &tags, &node);
    let imported = azure::network_security_group(
        &fixture("azure-nsg.json"),
        &azure::NsgOptions {
            mode: Mode::Monitor,
            tags: tags
                .iter()
                .map(|(t, v)| ((*t).into(), vec![(*v).into()]))
                .collect(),
            node_addresses: node.iter().map(|a| a.parse().unwrap()).collect(),
        },
    )
    .unwrap();
    let nets: Vec<IpNet> = [
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8:a::/48",
        "10.224.0.0/12",
        "10.0.0.0/8",
        "2001:db8:100::/56",
        "168.63.129.16/32",
        "10.224.0.0/16",
        "10.99.0.0/24",
    ]
    .iter()
    .map(|n| net(n))
    .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let packets = generate(
        &nets,
        &[443, 10250, 30000, 32767, 8080, 22, 53, 8000, 8099],
        &mut rng,
    );
    let (n, pass, drop) = differential("azure-nsg", &imported, &packets, |p| nsg.admits(p));
    assert!(n > 5000 && pass > 500 && drop > 1000, "{n} {pass} {drop}");

    // The operator's own rules without the defaults (`nsg rule list`), a catch-all allow.
    let own: Value = serde_json::from_str(
        &fixture("azure-nsg-rules-esp.json")
            .text
            .replace("\"Esp\"", "\"Udp\""),
    )
    .unwrap();
    let file = JsonFile {
        name: "own.json".into(),
        text: own.to_string(),
    };
    let tags = [("VirtualNetwork", "10.0.0.0/8")];
    let imported = azure::network_security_group(
        &file,
        &azure::NsgOptions {
            mode: Mode::Enforce,
            tags: tags
                .iter()
                .map(|(t, v)| ((*t).into(), vec![(*v).into()]))
                .collect(),
            node_addresses: Vec::new(),
        },
    )
    .unwrap();
    let nsg = Nsg::new(&own, &tags, &[]);
    let packets = generate(
        &["198.51.100.0/28", "203.0.113.0/24", "10.0.0.0/8"].map(net),
        &[22, 80, 443, 1024],
        &mut rng,
    );
    differential("azure-nsg (rule list)", &imported, &packets, |p| {
        nsg.admits(p)
    });
}

/// The comparison catches an import that is off by one rule: a permission's protocol
/// changed after the import.
#[test]
fn a_wrong_import_is_caught() {
    let groups = json("aws-security-groups.json");
    let mut imported = aws::security_groups(
        &fixture("aws-security-groups.json"),
        &aws::SecurityGroupOptions {
            mode: Mode::Monitor,
            groups: vec!["sg-0adm1n00000000001".into()],
            resolution: Resolution::default(),
        },
    )
    .unwrap();
    imported.rules[0].protocol = filter_user::policy::Protocol::Udp;
    let admin = serde_json::json!({"SecurityGroups": [groups["SecurityGroups"][1].clone()]});
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let packets = generate(&[net("198.51.100.0/28")], &[22], &mut rng);
    let caught = std::panic::catch_unwind(|| {
        differential("wrong", &imported, &packets, |p| {
            security_groups_admit(&admin, &|_| Vec::new(), p)
        })
    });
    assert!(caught.is_err(), "tcp 22 imported as udp 22 went unnoticed");
}
