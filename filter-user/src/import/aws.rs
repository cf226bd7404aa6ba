//! AWS: security groups (`aws ec2 describe-security-groups`) and an EKS cluster's control
//! plane (`aws eks describe-cluster`).
//!
//! A security group is allow-only, and the groups on an ENI are a union: a packet passes
//! when any rule of any group allows it. That is exactly nodegate's allow rules with
//! `default: drop`, so every ingress permission becomes one allow rule over its own set.
//! Egress permissions are not imported (nodegate filters what arrives). Security groups are
//! stateful, so the file says `return_traffic: stateful`.

use std::{collections::BTreeMap, ops::RangeInclusive};

use serde::Deserialize;

use super::{
    add_parsed, add_source, json, name_of, ImportError, Imported, Problems, Rule, Set, Source,
};
use crate::policy::{Mode, Protocol, RuleKind};

/// The JSON of one CLI command, with the name it goes by in messages.
#[derive(Clone, Debug)]
pub struct JsonFile {
    /// File name, for messages.
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// What resolves sources that are not CIDRs: other security groups and prefix lists.
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    /// `--group-cidrs ID=VALUE,…`: a security group or prefix list id and its addresses, each
    /// a CIDR, an address, or a subnet id (resolved with `subnets`).
    pub group_cidrs: Vec<(String, Vec<String>)>,
    /// `aws ec2 describe-network-interfaces`: a security group source is the addresses of
    /// the ENIs that carry the group.
    pub enis: Option<JsonFile>,
    /// `aws ec2 describe-subnets`: subnet ids to their CIDR blocks.
    pub subnets: Option<JsonFile>,
}

/// `nodegate import aws-security-groups` options.
#[derive(Clone, Debug)]
pub struct SecurityGroupOptions {
    /// `monitor` unless asked for `enforce`.
    pub mode: Mode,
    /// Only these groups of the file (all when empty).
    pub groups: Vec<String>,
    /// How non-CIDR sources resolve.
    pub resolution: Resolution,
}

/// `nodegate import eks-cluster` options.
#[derive(Clone, Debug)]
pub struct EksOptions {
    /// `monitor` unless asked for `enforce`.
    pub mode: Mode,
    /// Also allow TCP and UDP 1025-65535 from the control plane (EKS recommends it for
    /// webhooks and extension API servers on high ports).
    pub high_ports: bool,
    /// How the control plane's addresses resolve (its subnets, or its ENIs).
    pub resolution: Resolution,
}

const SECURITY_GROUPS: &str = "aws ec2 describe-security-groups";
const DESCRIBE_CLUSTER: &str = "aws eks describe-cluster";
const DESCRIBE_ENIS: &str = "aws ec2 describe-network-interfaces";
const DESCRIBE_SUBNETS: &str = "aws ec2 describe-subnets";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecurityGroups {
    security_groups: Vec<SecurityGroup>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecurityGroup {
    group_id: String,
    group_name: Option<String>,
    #[serde(default)]
    ip_permissions: Vec<IpPermission>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpPermission {
    ip_protocol: String,
    from_port: Option<i32>,
    to_port: Option<i32>,
    #[serde(default)]
    ip_ranges: Vec<IpRange>,
    #[serde(default)]
    ipv6_ranges: Vec<Ipv6Range>,
    #[serde(default)]
    prefix_list_ids: Vec<PrefixListId>,
    #[serde(default)]
    user_id_group_pairs: Vec<GroupPair>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpRange {
    cidr_ip: String,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ipv6Range {
    cidr_ipv6: String,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PrefixListId {
    prefix_list_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GroupPair {
    group_id: Option<String>,
    user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkInterfaces {
    network_interfaces: Vec<NetworkInterface>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkInterface {
    network_interface_id: String,
    #[serde(default)]
    groups: Vec<GroupRef>,
    #[serde(default)]
    private_ip_addresses: Vec<PrivateIp>,
    #[serde(default)]
    ipv6_addresses: Vec<Ipv6Address>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GroupRef {
    group_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PrivateIp {
    private_ip_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ipv6Address {
    ipv6_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Subnets {
    subnets: Vec<Subnet>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Subnet {
    subnet_id: String,
    cidr_block: Option<String>,
    #[serde(default)]
    ipv6_cidr_block_association_set: Vec<Ipv6Block>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ipv6Block {
    ipv6_cidr_block: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeCluster {
    cluster: Cluster,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cluster {
    name: String,
    resources_vpc_config: VpcConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VpcConfig {
    #[serde(default)]
    subnet_ids: Vec<String>,
    cluster_security_group_id: Option<String>,
}

/// Addresses of security groups, prefix lists and subnets, from what the operator gave.
struct Resolver {
    explicit: BTreeMap<String, Vec<String>>,
    enis: Option<Vec<NetworkInterface>>,
    subnets: Option<Vec<Subnet>>,
}

impl Resolver {
    fn new(r: &Resolution) -> Result<Resolver, ImportError> {
        let enis = r
            .enis
            .as_ref()
            .map(|f| json::parse::<NetworkInterfaces>(&f.text, &f.name, DESCRIBE_ENIS))
            .transpose()?
            .map(|e| e.network_interfaces);
        let subnets = r
            .subnets
            .as_ref()
            .map(|f| json::parse::<Subnets>(&f.text, &f.name, DESCRIBE_SUBNETS))
            .transpose()?
            .map(|s| s.subnets);
        let mut explicit: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, values) in &r.group_cidrs {
            explicit
                .entry(id.clone())
                .or_default()
                .extend(values.iter().cloned());
        }
        Ok(Resolver {
            explicit,
            enis,
            subnets,
        })
    }

    /// The blocks of subnet `id`, or a problem.
    fn subnet(&self, id: &str, wanted_by: &str, out: &mut Vec<Source>, problems: &mut Problems) {
        let Some(subnets) = &self.subnets else {
            problems.push(format!(
                "{wanted_by} names subnet {id}: give the subnets with --subnets FILE ({DESCRIBE_SUBNETS})"
            ));
            return;
        };
        let Some(subnet) = subnets.iter().find(|s| s.subnet_id == id) else {
            problems.push(format!(
                "{wanted_by} names subnet {id}, which the --subnets file does not list"
            ));
            return;
        };
        let blocks = subnet.cidr_block.iter().chain(
            subnet
                .ipv6_cidr_block_association_set
                .iter()
                .map(|b| &b.ipv6_cidr_block),
        );
        for block in blocks {
            add_parsed(
                out,
                block,
                &format!("subnet {id}"),
                &format!("subnet {id}"),
                problems,
            );
        }
    }

    /// The addresses of security group or prefix list `id`, or a problem naming it.
    fn group(&self, id: &str, wanted_by: &str, problems: &mut Problems) -> Vec<Source> {
        let mut out = Vec::new();
        if let Some(values) = self.explicit.get(id) {
            for value in values {
                if value.starts_with("subnet-") {
                    self.subnet(value, &format!("--group-cidrs {id}"), &mut out, problems);
                    continue;
                }
                add_parsed(
                    &mut out,
                    value,
                    &format!("{id} (--group-cidrs)"),
                    &format!("--group-cidrs {id}"),
                    problems,
                );
            }
            return out;
        }
        let is_group = id.starts_with("sg-");
        if let (true, Some(enis)) = (is_group, &self.enis) {
            for eni in enis
                .iter()
                .filter(|e| e.groups.iter().any(|g| g.group_id == id))
            {
                let addresses = eni
                    .private_ip_addresses
                    .iter()
                    .map(|a| &a.private_ip_address)
                    .chain(eni.ipv6_addresses.iter().map(|a| &a.ipv6_address));
                for address in addresses {
                    add_parsed(
                        &mut out,
                        address,
                        &format!("{} ({id})", eni.network_interface_id),
                        &eni.network_interface_id,
                        problems,
                    );
                }
            }
            if out.is_empty() {
                problems.push(format!(
                    "{wanted_by} allows security group {id}, but no ENI in the --enis file carries it; give its addresses with --group-cidrs {id}=CIDR,…"
                ));
            }
            return out;
        }
        problems.push(if is_group {
            format!(
                "{wanted_by} allows security group {id}: give its addresses with --group-cidrs {id}=CIDR,… or its ENIs with --enis FILE ({DESCRIBE_ENIS})"
            )
        } else {
            format!(
                "{wanted_by} allows prefix list {id}: give its entries with --group-cidrs {id}=CIDR,… (aws ec2 get-managed-prefix-list-entries --prefix-list-id {id})"
            )
        });
        out
    }
}

/// A permission's protocol and ports (or ICMP types): nodegate's, or why it has none.
fn protocol_of(p: &IpPermission) -> Result<(Protocol, Vec<RangeInclusive<u16>>), String> {
    let ports = || -> Result<Vec<RangeInclusive<u16>>, String> {
        let (from, to) = (p.from_port.unwrap_or(-1), p.to_port.unwrap_or(-1));
        match (from, to) {
            (-1, -1) | (0, 65535) => Ok(Vec::new()),
            (0, _) => Err(format!(
                "ports 0-{to} include port 0, which a nodegate rule cannot name; start the range at 1 (port 0 is not a valid destination port)"
            )),
            (1..=65535, 1..=65535) if from <= to => Ok(vec![from as u16..=to as u16]),
            _ => Err(format!("ports {from}-{to} are not a port range")),
        }
    };
    let icmp = |protocol| -> Result<(Protocol, Vec<RangeInclusive<u16>>), String> {
        // FromPort is the ICMP type, ToPort the code; -1 is "all".
        match (p.from_port.unwrap_or(-1), p.to_port.unwrap_or(-1)) {
            (-1, _) => Ok((protocol, Vec::new())),
            (t @ 0..=255, -1) => Ok((protocol, vec![t as u16..=t as u16])),
            (t, code) => Err(format!(
                "it allows ICMP type {t} code {code} only; nodegate matches whole ICMP types, so importing it would widen it"
            )),
        }
    };
    match p.ip_protocol.to_ascii_lowercase().as_str() {
        "-1" => Ok((Protocol::Any, Vec::new())),
        "tcp" | "6" => Ok((Protocol::Tcp, ports()?)),
        "udp" | "17" => Ok((Protocol::Udp, ports()?)),
        "icmp" | "1" => icmp(Protocol::Icmp),
        "icmpv6" | "58" => icmp(Protocol::Icmpv6),
        other => Err(format!(
            "it allows IP protocol {other}; nodegate rules cover tcp, udp, icmp, icmpv6 or every protocol (-1)"
        )),
    }
}

/// What a permission allows, for its description.
fn describe(protocol: Protocol, keys: &[RangeInclusive<u16>]) -> String {
    match protocol {
        Protocol::Any => "all traffic".into(),
        p => format!("{} {}", p.name(), crate::policy::keys_text(keys)),
    }
}

/// Import the ingress permissions of the security groups in `file`.
pub fn security_groups(
    file: &JsonFile,
    opts: &SecurityGroupOptions,
) -> Result<Imported, ImportError> {
    let parsed: SecurityGroups = json::parse(&file.text, &file.name, SECURITY_GROUPS)?;
    let resolver = Resolver::new(&opts.resolution)?;
    let mut problems = Problems::default();
    for wanted in &opts.groups {
        if !parsed.security_groups.iter().any(|g| &g.group_id == wanted) {
            problems.push(format!("--group {wanted} is not in {}", file.name));
        }
    }
    let groups: Vec<&SecurityGroup> = parsed
        .security_groups
        .iter()
        .filter(|g| opts.groups.is_empty() || opts.groups.contains(&g.group_id))
        .collect();
    let (mut sets, mut rules) = (Vec::new(), Vec::new());
    for group in &groups {
        let label = match &group.group_name {
            Some(name) => format!("{} ({name})", group.group_id),
            None => group.group_id.clone(),
        };
        for (i, p) in group.ip_permissions.iter().enumerate() {
            let at = format!("{label} IpPermissions[{i}]");
            let (protocol, keys) = match protocol_of(p) {
                Ok(pk) => pk,
                Err(why) => {
                    problems.push(format!("{at}: {why}"));
                    continue;
                }
            };
            let mut sources = Vec::new();
            let ranges = p
                .ip_ranges
                .iter()
                .map(|r| ("IpRanges", &r.cidr_ip, &r.description))
                .chain(
                    p.ipv6_ranges
                        .iter()
                        .map(|r| ("Ipv6Ranges", &r.cidr_ipv6, &r.description)),
                );
            for (field, cidr, description) in ranges {
                let note = format!("{field} {}", description.as_deref().unwrap_or(""));
                add_parsed(&mut sources, cidr, note.trim(), &at, &mut problems);
            }
            for pl in &p.prefix_list_ids {
                for s in resolver.group(&pl.prefix_list_id, &at, &mut problems) {
                    add_source(&mut sources, s);
                }
            }
            for pair in &p.user_id_group_pairs {
                match &pair.group_id {
                    Some(id) => {
                        for s in resolver.group(id, &at, &mut problems) {
                            add_source(&mut sources, s);
                        }
                    }
                    None => problems.push(format!(
                        "{at}: a group source without a GroupId (account {}); give the group id",
                        pair.user_id.as_deref().unwrap_or("?")
                    )),
                }
            }
            let declared = p.ip_ranges.len()
                + p.ipv6_ranges.len()
                + p.prefix_list_ids.len()
                + p.user_id_group_pairs.len();
            if declared == 0 {
                problems.push(format!("{at}: no source at all"));
            }
            if sources.is_empty() {
                continue;
            }
            let name = name_of(&[&group.group_id, "in", &i.to_string()]);
            let rule = Rule {
                from: name.clone(),
                name,
                action: RuleKind::Allow,
                protocol,
                keys: keys.clone(),
                origin: format!("{at}: {}", describe(protocol, &keys)),
            };
            Imported::push_with_own_set(&mut sets, &mut rules, rule, sources);
        }
    }
    if rules.is_empty() && problems.0.is_empty() {
        problems.push(format!(
            "no ingress permission in {}: the security groups allow nothing in, and an empty allow-list is refused",
            file.name
        ));
    }
    let ids: Vec<&str> = groups.iter().map(|g| g.group_id.as_str()).collect();
    problems.finish(
        Imported {
            source: format!(
                "Imported by `nodegate import aws-security-groups` from {} ({SECURITY_GROUPS}): {}",
                file.name,
                ids.join(", ")
            ),
            mode: opts.mode,
            default_pass: false,
            return_traffic: ("stateful", "security groups are stateful: replies to the node's own connections pass"),
            notes: vec![
                "Security groups are allow-only and a union: one allow rule per ingress permission, over a set of its sources; what none allows is dropped.".into(),
                "Egress permissions are not imported: nodegate filters what arrives.".into(),
            ],
            sets,
            rules,
        },
        "resolve each source named above (--group-cidrs ID=CIDR,…, --enis, --subnets) or change the permission, then import again",
    )
}

/// The EKS minimums (tcp 443 and 10250, high ports on request) from the control plane of
/// the cluster in `file`: its subnets (with --subnets) or its ENIs (with --enis: those that
/// carry the cluster security group).
pub fn eks_cluster(file: &JsonFile, opts: &EksOptions) -> Result<Imported, ImportError> {
    let parsed: DescribeCluster = json::parse(&file.text, &file.name, DESCRIBE_CLUSTER)?;
    let cluster = parsed.cluster;
    let vpc = &cluster.resources_vpc_config;
    let resolver = Resolver::new(&opts.resolution)?;
    let mut problems = Problems::default();
    let mut sources = Vec::new();
    let what = format!("cluster {}", cluster.name);
    match (&opts.resolution.enis, &vpc.cluster_security_group_id) {
        (Some(_), Some(sg)) => sources = resolver.group(sg, &format!("{what}'s control plane"), &mut problems),
        (Some(_), None) => problems.push(format!(
            "{what} has no clusterSecurityGroupId, so its control-plane ENIs cannot be found; give --subnets instead of --enis"
        )),
        (None, _) if vpc.subnet_ids.is_empty() => {
            problems.push(format!("{what} lists no subnetIds"));
        }
        (None, _) => {
            for id in &vpc.subnet_ids {
                resolver.subnet(id, &format!("{what}'s resourcesVpcConfig.subnetIds"), &mut sources, &mut problems);
            }
        }
    }
    let rule = |name: &str, protocol: Protocol, keys: Vec<RangeInclusive<u16>>, why: &str| Rule {
        name: name.to_owned(),
        action: RuleKind::Allow,
        protocol,
        keys,
        from: "control-plane".to_owned(),
        origin: format!("{what}: {why}"),
    };
    let mut rules = vec![
        rule(
            "control-plane-https",
            Protocol::Tcp,
            vec![443..=443],
            "the API server calls webhooks and aggregated APIs (EKS minimum inbound)",
        ),
        rule(
            "control-plane-kubelet",
            Protocol::Tcp,
            vec![10250..=10250],
            "logs, exec and metrics go to the kubelet (EKS minimum inbound)",
        ),
    ];
    if opts.high_ports {
        rules.push(rule(
            "control-plane-tcp-high",
            Protocol::Tcp,
            vec![1025..=65535],
            "recommended inbound: extension servers on high ports",
        ));
        rules.push(rule(
            "control-plane-udp-high",
            Protocol::Udp,
            vec![1025..=65535],
            "recommended inbound: the same for UDP",
        ));
    }
    problems.finish(
        Imported {
            source: format!(
                "Imported by `nodegate import eks-cluster` from {} ({DESCRIBE_CLUSTER}): {what}, control plane from {}",
                file.name,
                if opts.resolution.enis.is_some() { "the ENIs of its cluster security group" } else { "its subnets" }
            ),
            mode: opts.mode,
            default_pass: false,
            return_traffic: ("stateful", "the node's own connections (image pulls, AWS APIs, DNS) get their replies"),
            notes: vec![
                "These are the EKS control-plane minimums only; add node-to-node, load balancer and admin rules (or import the node security groups) before enforcing.".into(),
                if opts.high_ports {
                    "TCP and UDP 1025-65535 from the control plane are allowed (--high-ports), as EKS recommends.".into()
                } else {
                    "TCP/UDP 1025-65535 from the control plane (EKS's recommendation for webhooks on high ports) is not allowed; import with --high-ports to add it.".into()
                },
            ],
            sets: vec![Set {
                name: "control-plane".into(),
                sources,
            }],
            rules,
        },
        "give the control plane's addresses: --subnets FILE (aws ec2 describe-subnets --subnet-ids …) or --enis FILE (aws ec2 describe-network-interfaces)",
    )
}
