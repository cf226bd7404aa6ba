//! Azure: an AKS cluster's authorized IP ranges (`az aks show`) and a network security
//! group's inbound rules (`az network nsg show`, or `az network nsg rule list`).
//!
//! An NSG judges an inbound packet by its first matching rule in priority order (lowest
//! number first); nodegate judges deny rules before allow rules, whatever their order. So
//! an NSG imports exactly when no allow rule comes before a deny rule it overlaps with: then
//! first-match and deny-first give every packet the same verdict. When one does, the import
//! is refused naming the pair. The rule that matches everything (DenyAllInBound, or an
//! operator's own catch-all) becomes `default:`, and the rules after it, which no packet
//! reaches, are left out.

use std::{net::IpAddr, ops::RangeInclusive};

use ipnet::IpNet;
use serde::Deserialize;

use super::{
    add_parsed, json, name_of, nets_overlap, ImportError, Imported, Problems, Rule, Set, Source,
};
use crate::{
    import::aws::JsonFile,
    policy::{Mode, Protocol, RuleKind},
};

const AKS_SHOW: &str = "az aks show";
const NSG_SHOW: &str = "az network nsg show";
const SUBNET_LIST: &str = "az network vnet subnet list";

/// The address Azure's health probes and the `AzureLoadBalancer` service tag come from.
pub const AZURE_LOAD_BALANCER: &str = "168.63.129.16/32";

/// `nodegate import aks-cluster` options.
#[derive(Clone, Debug)]
pub struct AksOptions {
    /// `monitor` unless asked for `enforce`.
    pub mode: Mode,
    /// The cluster's outbound public IPs (its Standard load balancer's): authorized when
    /// the ranges hold AKS's special `0.0.0.0/32`, or added on request.
    pub outbound_ips: Vec<String>,
    /// `az network vnet subnet list`: the API server subnet's prefixes (VNet integration).
    pub subnets: Option<JsonFile>,
}

/// `nodegate import azure-nsg` options.
#[derive(Clone, Debug)]
pub struct NsgOptions {
    /// `monitor` unless asked for `enforce`.
    pub mode: Mode,
    /// `--tag NAME=CIDR,…`: service tags' addresses (`AzureLoadBalancer` defaults to
    /// [`AZURE_LOAD_BALANCER`]).
    pub tags: Vec<(String, Vec<String>)>,
    /// The node's addresses, to decide whether rules with a destination prefix apply to it.
    pub node_addresses: Vec<IpAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManagedCluster {
    name: String,
    api_server_access_profile: Option<AccessProfile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessProfile {
    authorized_ip_ranges: Option<Vec<String>>,
    enable_private_cluster: Option<bool>,
    enable_vnet_integration: Option<bool>,
    subnet_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubnetEntry {
    id: String,
    address_prefix: Option<String>,
    #[serde(default)]
    address_prefixes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NsgInput {
    Group(Box<SecurityGroup>),
    Rules(Vec<SecurityRule>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecurityGroup {
    name: Option<String>,
    #[serde(default)]
    security_rules: Vec<SecurityRule>,
    #[serde(default)]
    default_security_rules: Vec<SecurityRule>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecurityRule {
    name: String,
    priority: u32,
    direction: String,
    access: String,
    protocol: String,
    source_address_prefix: Option<String>,
    #[serde(default)]
    source_address_prefixes: Vec<String>,
    source_port_range: Option<String>,
    #[serde(default)]
    source_port_ranges: Vec<String>,
    destination_address_prefix: Option<String>,
    #[serde(default)]
    destination_address_prefixes: Vec<String>,
    destination_port_range: Option<String>,
    #[serde(default)]
    destination_port_ranges: Vec<String>,
    #[serde(default)]
    source_application_security_groups: Vec<serde_json::Value>,
    #[serde(default)]
    destination_application_security_groups: Vec<serde_json::Value>,
}

/// Import the authorized IP ranges of the AKS cluster in `file` as the rules of
/// `examples/aks-authorized-ranges.yaml`: the ranges reach HTTPS (443), and with API server
/// VNet integration the API server subnet reaches the kubelet and webhooks.
pub fn aks_cluster(file: &JsonFile, opts: &AksOptions) -> Result<Imported, ImportError> {
    let cluster: ManagedCluster = json::parse(&file.text, &file.name, AKS_SHOW)?;
    let what = format!("cluster {}", cluster.name);
    let mut problems = Problems::default();
    let mut notes = vec![
        "authorizedIpRanges reach HTTPS (443) on this node, as in examples/aks-authorized-ranges.yaml; what no rule allows is dropped.".to_owned(),
    ];
    let profile = cluster.api_server_access_profile;
    let ranges = profile
        .as_ref()
        .and_then(|p| p.authorized_ip_ranges.clone())
        .unwrap_or_default();
    if profile.as_ref().and_then(|p| p.enable_private_cluster) == Some(true) {
        problems.push(format!(
            "{what} is a private cluster: its API server has no authorized IP ranges (it is reached over the VNet); write the rules for the VNet instead"
        ));
    } else if ranges.is_empty() {
        problems.push(format!(
            "{what} has no authorizedIpRanges: its API server is open to every address, which a node firewall would have to write as 0.0.0.0/0; nothing to import"
        ));
    }
    let mut authorized = Vec::new();
    let mut outbound_only = false;
    for (i, range) in ranges.iter().enumerate() {
        if range == "0.0.0.0/32" {
            outbound_only = true;
            continue;
        }
        add_parsed(
            &mut authorized,
            range,
            &format!("authorizedIpRanges[{i}]"),
            &format!("{what} authorizedIpRanges[{i}]"),
            &mut problems,
        );
    }
    for ip in &opts.outbound_ips {
        add_parsed(
            &mut authorized,
            ip,
            "the cluster's outbound IP (--outbound-ip)",
            "--outbound-ip",
            &mut problems,
        );
    }
    if outbound_only {
        if opts.outbound_ips.is_empty() {
            problems.push(format!(
                "{what}'s authorizedIpRanges hold 0.0.0.0/32: AKS then authorizes only the cluster's own outbound IP (its Standard load balancer's public IP); give it with --outbound-ip IP"
            ));
        }
        notes.push("0.0.0.0/32 in authorizedIpRanges means \"only the cluster's outbound IP\" to AKS; it is that IP here, never the address 0.0.0.0.".into());
    } else if opts.outbound_ips.is_empty() {
        notes.push("AKS also authorizes the cluster's outbound IP when the ranges were set at cluster creation; add it with --outbound-ip if yours was.".into());
    }
    let mut sets = vec![Set {
        name: "authorized".into(),
        sources: authorized,
    }];
    let mut rules = vec![Rule {
        name: "authorized-https".into(),
        action: RuleKind::Allow,
        protocol: Protocol::Tcp,
        keys: vec![443..=443],
        from: "authorized".into(),
        origin: format!("{what}: apiServerAccessProfile.authorizedIpRanges reach HTTPS"),
    }];
    let integrated = profile.as_ref().and_then(|p| p.enable_vnet_integration) == Some(true);
    match (integrated, profile.as_ref().and_then(|p| p.subnet_id.as_deref())) {
        (true, Some(subnet_id)) => {
            let control_plane = api_server_subnet(subnet_id, opts.subnets.as_ref(), &mut problems)?;
            sets.push(Set {
                name: "control-plane".into(),
                sources: control_plane,
            });
            for (name, port, why) in [
                ("control-plane-kubelet", 10250, "the API server subnet reaches the kubelet"),
                ("control-plane-https", 443, "the API server calls webhooks on the node"),
            ] {
                rules.push(Rule {
                    name: name.into(),
                    action: RuleKind::Allow,
                    protocol: Protocol::Tcp,
                    keys: vec![port..=port],
                    from: "control-plane".into(),
                    origin: format!("{what}: {why} (API server VNet integration)"),
                });
            }
        }
        (true, None) => problems.push(format!(
            "{what} has API server VNet integration but no subnetId; the control plane's addresses are unknown"
        )),
        (false, _) => notes.push(
            "Without API server VNet integration the control plane reaches the kubelet through a tunnel the node opens; its replies pass as return traffic, so no rule admits it.".into(),
        ),
    }
    problems.finish(
        Imported {
            source: format!(
                "Imported by `nodegate import aks-cluster` from {} ({AKS_SHOW}): {what}",
                file.name
            ),
            mode: opts.mode,
            default_pass: false,
            return_traffic: (
                "stateful",
                "the node's own connections (the API server tunnel, image pulls) get their replies",
            ),
            notes,
            sets,
            rules,
        },
        "fix what is named above (--outbound-ip, --subnets) and import again",
    )
}

/// The prefixes of the API server subnet `id`, from `az network vnet subnet list`.
fn api_server_subnet(
    id: &str,
    subnets: Option<&JsonFile>,
    problems: &mut Problems,
) -> Result<Vec<Source>, ImportError> {
    let Some(file) = subnets else {
        problems.push(format!(
            "the API server subnet {id} needs its prefixes: give --subnets FILE ({SUBNET_LIST})"
        ));
        return Ok(Vec::new());
    };
    let list: Vec<SubnetEntry> = json::parse(&file.text, &file.name, SUBNET_LIST)?;
    // Azure resource ids compare case-insensitively.
    let Some(subnet) = list.iter().find(|s| s.id.eq_ignore_ascii_case(id)) else {
        problems.push(format!(
            "the API server subnet {id} is not in {}",
            file.name
        ));
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for prefix in subnet.address_prefix.iter().chain(&subnet.address_prefixes) {
        add_parsed(
            &mut out,
            prefix,
            "API server subnet",
            &format!("subnet {id}"),
            problems,
        );
    }
    Ok(out)
}

/// The NSG's own default inbound rules, which every NSG has (`az network nsg rule list`
/// leaves them out unless `--include-default`).
fn default_rules() -> Vec<SecurityRule> {
    let rule = |name: &str, priority, access: &str, source: &str, destination: &str| SecurityRule {
        name: name.into(),
        priority,
        direction: "Inbound".into(),
        access: access.into(),
        protocol: "*".into(),
        source_address_prefix: Some(source.into()),
        source_address_prefixes: Vec::new(),
        source_port_range: Some("*".into()),
        source_port_ranges: Vec::new(),
        destination_address_prefix: Some(destination.into()),
        destination_address_prefixes: Vec::new(),
        destination_port_range: Some("*".into()),
        destination_port_ranges: Vec::new(),
        source_application_security_groups: Vec::new(),
        destination_application_security_groups: Vec::new(),
    };
    vec![
        rule(
            "AllowVnetInBound",
            65000,
            "Allow",
            "VirtualNetwork",
            "VirtualNetwork",
        ),
        rule(
            "AllowAzureLoadBalancerInBound",
            65001,
            "Allow",
            "AzureLoadBalancer",
            "*",
        ),
        rule("DenyAllInBound", 65500, "Deny", "*", "*"),
    ]
}

/// One inbound NSG rule as nodegate can state it.
struct Parsed {
    /// `NSG rule NAME (priority N, Access)`, for messages and the description.
    label: String,
    /// The rule's name and priority, for the nodegate rule's name.
    name: String,
    priority: u32,
    allow: bool,
    sources: Vec<Source>,
    /// `None`: every protocol.
    protocol: Option<Protocol>,
    /// Empty: every port (or type).
    ports: Vec<RangeInclusive<u16>>,
}

impl Parsed {
    fn matches_everything(&self) -> bool {
        self.protocol.is_none()
            && self.ports.is_empty()
            && [IpNet::V4(Default::default()), IpNet::V6(Default::default())]
                .iter()
                .all(|all| self.sources.iter().any(|s| s.net == *all))
    }

    /// Whether some packet matches both.
    fn overlaps(&self, other: &Parsed) -> bool {
        let protocols = match (self.protocol, other.protocol) {
            (None, _) | (_, None) => true,
            (Some(a), Some(b)) => a == b,
        };
        let ports = self.ports.is_empty()
            || other.ports.is_empty()
            || self.ports.iter().any(|a| {
                other
                    .ports
                    .iter()
                    .any(|b| a.start() <= b.end() && b.start() <= a.end())
            });
        let sources = self
            .sources
            .iter()
            .any(|a| other.sources.iter().any(|b| nets_overlap(&a.net, &b.net)));
        protocols && ports && sources
    }
}

/// The prefixes of a source or destination field: CIDRs, addresses, `*`, service tags.
fn prefixes(
    single: &Option<String>,
    many: &[String],
    tags: &[(String, Vec<String>)],
    at: &str,
    problems: &mut Problems,
) -> Vec<Source> {
    let mut out = Vec::new();
    for item in single.iter().chain(many).filter(|s| !s.is_empty()) {
        let (values, note): (Vec<String>, String) = match item.as_str() {
            "*" | "Any" | "any" => (
                vec!["0.0.0.0/0".into(), "::/0".into()],
                "* (any source)".into(),
            ),
            tag if tag.parse::<IpNet>().is_ok() || tag.parse::<IpAddr>().is_ok() => {
                (vec![tag.to_owned()], "address prefix".into())
            }
            tag => match tags.iter().find(|(name, _)| name.eq_ignore_ascii_case(tag)) {
                Some((_, values)) => (values.clone(), format!("service tag {tag} (--tag)")),
                None if tag.eq_ignore_ascii_case("AzureLoadBalancer") => (
                    vec![AZURE_LOAD_BALANCER.into()],
                    "service tag AzureLoadBalancer (Azure's health probe address)".into(),
                ),
                None => {
                    problems.push(format!(
                        "{at}: service tag {tag} has no addresses here; give them with --tag {tag}=CIDR,…"
                    ));
                    continue;
                }
            },
        };
        for value in values {
            add_parsed(&mut out, &value, &note, at, problems);
        }
    }
    out
}

/// Destination ports: `*`, `443`, `1000-2000`, or a list of them; empty means all.
fn ports(rule: &SecurityRule, at: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
    let mut out = Vec::new();
    for item in rule
        .destination_port_range
        .iter()
        .chain(&rule.destination_port_ranges)
    {
        if item == "*" {
            return Ok(Vec::new());
        }
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let (lo, hi) = match (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) {
            (Ok(lo), Ok(hi)) if lo <= hi => (lo, hi),
            _ => {
                return Err(format!(
                    "{at}: destination port {item:?} is not a port or range"
                ))
            }
        };
        if lo == 0 {
            return Err(format!(
                "{at}: destination ports {item} include port 0, which a nodegate rule cannot name"
            ));
        }
        out.push(lo..=hi);
    }
    if out.is_empty() {
        return Err(format!("{at}: no destination port range"));
    }
    Ok(out)
}

/// Whether an inbound rule's destination covers this node: `Some(true)` applies,
/// `Some(false)` does not, `None` with a problem pushed when it cannot be told.
fn applies_here(
    rule: &SecurityRule,
    opts: &NsgOptions,
    at: &str,
    problems: &mut Problems,
) -> Option<bool> {
    if !rule.destination_application_security_groups.is_empty() {
        problems.push(format!("{at}: its destination is an application security group, whose members nodegate cannot know"));
        return None;
    }
    let items: Vec<&String> = rule
        .destination_address_prefix
        .iter()
        .chain(&rule.destination_address_prefixes)
        .collect();
    if items
        .iter()
        .any(|d| matches!(d.as_str(), "*" | "Any" | "VirtualNetwork"))
    {
        // The node is in the VNet the NSG protects.
        return Some(true);
    }
    let nets = prefixes(
        &None,
        &items.iter().map(|s| (*s).clone()).collect::<Vec<_>>(),
        &opts.tags,
        at,
        problems,
    );
    if opts.node_addresses.is_empty() {
        problems.push(format!(
            "{at}: it applies to destination {} only; give the node's addresses with --node-address to decide whether it applies here",
            items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
        ));
        return None;
    }
    let inside = opts
        .node_addresses
        .iter()
        .filter(|a| nets.iter().any(|n| n.net.contains(*a)))
        .count();
    match inside {
        0 => Some(false),
        n if n == opts.node_addresses.len() => Some(true),
        _ => {
            problems.push(format!(
                "{at}: its destination covers some of the node's addresses only; nodegate rules have no destination, so it cannot apply to part of the node"
            ));
            None
        }
    }
}

fn parse_rule(
    rule: &SecurityRule,
    nsg: &str,
    opts: &NsgOptions,
    problems: &mut Problems,
) -> Option<Parsed> {
    let at = format!(
        "{nsg} rule {} (priority {}, {})",
        rule.name, rule.priority, rule.access
    );
    let allow = match rule.access.to_ascii_lowercase().as_str() {
        "allow" => true,
        "deny" => false,
        other => {
            problems.push(format!("{at}: access {other:?} is neither Allow nor Deny"));
            return None;
        }
    };
    if !applies_here(rule, opts, &at, problems)? {
        return Some(Parsed {
            label: at,
            name: rule.name.clone(),
            priority: rule.priority,
            allow,
            sources: Vec::new(),
            protocol: None,
            ports: Vec::new(),
        });
    }
    let any_source_port = rule
        .source_port_range
        .iter()
        .chain(&rule.source_port_ranges)
        .all(|p| p == "*");
    if !any_source_port {
        problems.push(format!(
            "{at}: it matches source ports; nodegate rules match destination ports only"
        ));
        return None;
    }
    if !rule.source_application_security_groups.is_empty() {
        problems.push(format!(
            "{at}: its source is an application security group, whose members nodegate cannot know"
        ));
        return None;
    }
    let protocol = match rule.protocol.to_ascii_lowercase().as_str() {
        "*" | "any" => None,
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "icmp" => Some(Protocol::Icmp),
        other => {
            problems.push(format!(
                "{at}: protocol {other} alone cannot be a nodegate rule (tcp, udp, icmp or every protocol)"
            ));
            return None;
        }
    };
    let ports = match ports(rule, &at) {
        Ok(p) => p,
        Err(e) => {
            problems.push(e);
            return None;
        }
    };
    if !ports.is_empty() && !matches!(protocol, Some(Protocol::Tcp | Protocol::Udp)) {
        problems.push(format!(
            "{at}: destination ports on protocol {} (what they mean for protocols without ports is Azure's); split it into Tcp and Udp rules",
            rule.protocol
        ));
        return None;
    }
    let sources = prefixes(
        &rule.source_address_prefix,
        &rule.source_address_prefixes,
        &opts.tags,
        &at,
        problems,
    );
    if sources.is_empty() {
        // Unresolved prefixes were named already.
        let declared = rule
            .source_address_prefix
            .iter()
            .chain(&rule.source_address_prefixes)
            .any(|s| !s.is_empty());
        if !declared {
            problems.push(format!("{at}: no source"));
        }
        return None;
    }
    Some(Parsed {
        label: at,
        name: rule.name.clone(),
        priority: rule.priority,
        allow,
        sources,
        protocol,
        ports,
    })
}

/// Import the inbound rules of the network security group in `file`.
pub fn network_security_group(file: &JsonFile, opts: &NsgOptions) -> Result<Imported, ImportError> {
    let input: NsgInput = json::parse(&file.text, &file.name, NSG_SHOW)?;
    let (nsg, mut all) = match input {
        NsgInput::Group(g) => {
            let name = g.name.clone().unwrap_or_else(|| "NSG".into());
            (
                name,
                g.security_rules
                    .into_iter()
                    .chain(g.default_security_rules)
                    .collect::<Vec<_>>(),
            )
        }
        NsgInput::Rules(rules) => ("NSG".to_owned(), rules),
    };
    let mut notes = vec![
        "An NSG judges a packet by its first matching rule in priority order; nodegate judges deny rules before allow rules. This import was checked to give every packet the verdict the NSG gives.".to_owned(),
        "Protocol Icmp is taken to cover ICMP and ICMPv6 (one rule each here).".to_owned(),
    ];
    if !all.iter().any(|r| r.name == "DenyAllInBound") {
        notes.push("The NSG's default rules (AllowVnetInBound, AllowAzureLoadBalancerInBound, DenyAllInBound) were not in the file and were added, as Azure always applies them.".into());
        all.extend(default_rules());
    }
    all.retain(|r| r.direction.eq_ignore_ascii_case("inbound"));
    all.sort_by_key(|r| r.priority);
    let mut problems = Problems::default();
    let mut parsed: Vec<Parsed> = Vec::new();
    let mut default_pass = None;
    for (i, rule) in all.iter().enumerate() {
        let Some(p) = parse_rule(rule, &nsg, opts, &mut problems) else {
            continue;
        };
        if p.sources.is_empty() {
            notes.push(format!(
                "{} does not apply to this node (--node-address) and was left out.",
                p.label
            ));
            continue;
        }
        if p.matches_everything() {
            default_pass = Some(p.allow);
            let rest = all.len() - i - 1;
            notes.push(format!(
                "{} matches every packet: it is `default: {}`{}.",
                p.label,
                if p.allow { "pass" } else { "drop" },
                if rest > 0 {
                    format!(
                        ", and the {rest} rule(s) after it, which no packet reaches, were left out"
                    )
                } else {
                    String::new()
                }
            ));
            break;
        }
        parsed.push(p);
    }
    for (i, allow) in parsed.iter().enumerate().filter(|(_, p)| p.allow) {
        for deny in parsed[i + 1..].iter().filter(|p| !p.allow) {
            if allow.overlaps(deny) {
                problems.push(format!(
                    "{} comes before {}, and some packets match both: the NSG allows them by the first, nodegate judges deny rules first and would drop them; nodegate cannot express this order",
                    allow.label, deny.label
                ));
            }
        }
    }
    let (mut sets, mut rules) = (Vec::new(), Vec::new());
    for p in &parsed {
        let base = name_of(&["nsg", &p.priority.to_string(), &p.name]);
        let mut emit = |name: String, protocol: Protocol, sources: Vec<Source>| {
            if sources.is_empty() {
                return;
            }
            let rule = Rule {
                from: name.clone(),
                name,
                action: if p.allow {
                    RuleKind::Allow
                } else {
                    RuleKind::Deny
                },
                protocol,
                keys: p.ports.clone(),
                origin: p.label.clone(),
            };
            Imported::push_with_own_set(&mut sets, &mut rules, rule, sources);
        };
        match p.protocol {
            Some(Protocol::Icmp) => {
                let (v4, v6): (Vec<Source>, Vec<Source>) = p
                    .sources
                    .iter()
                    .cloned()
                    .partition(|s| matches!(s.net, IpNet::V4(_)));
                emit(format!("{base}-icmp"), Protocol::Icmp, v4);
                emit(format!("{base}-icmpv6"), Protocol::Icmpv6, v6);
            }
            Some(protocol) => emit(base, protocol, p.sources.clone()),
            None => emit(base, Protocol::Any, p.sources.clone()),
        }
    }
    let Some(default_pass) = default_pass else {
        problems.push(format!(
            "{nsg}: no inbound rule matches every packet, not even DenyAllInBound (did a rule fail above?), so what no rule decides is unknown"
        ));
        return Err(ImportError::Refused {
            problems: problems.into_list(),
            hint: "pass the NSG's JSON as `az network nsg show` prints it".into(),
        });
    };
    problems.finish(
        Imported {
            source: format!("Imported by `nodegate import azure-nsg` from {} ({NSG_SHOW}): {nsg}, inbound rules", file.name),
            mode: opts.mode,
            default_pass,
            return_traffic: ("stateful", "NSGs are stateful: replies to the node's own connections pass"),
            notes,
            sets,
            rules,
        },
        "give what is missing (--tag NAME=CIDR,…, --node-address IP), or reorder or split the named NSG rules, then import again",
    )
}
