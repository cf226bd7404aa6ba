//! The embeddable face of nodegate: a [`RuleSet`] (from YAML, or built in code) and a
//! [`Firewall`] that compiles and publishes it, attaches to interfaces, and reads counters,
//! each in one call.
//!
//! Everything here lives as long as the [`Firewall`] value: its maps are private and its
//! attachments are dropped with it. A filter that must keep enforcing when its loader
//! exits, survive restarts with its counters, and reload on file changes is `nodegate run`,
//! built from the same modules ([`crate::daemon`]).
//!
//! ```
//! use filter_user::firewall::RuleSet;
//! use filter_user::policy::{DefaultAction, Protocol, RuleKind};
//!
//! // From YAML, with every error at file:line:column.
//! let from_yaml = RuleSet::from_yaml(
//!     "rules.yaml",
//!     "version: 1\nrules:\n  - { name: api, from: [10.0.0.0/24], protocol: tcp, ports: [443] }\n",
//! )?;
//! // The same rules built in code.
//! let in_code = RuleSet::new()
//!     .allow("api", ["10.0.0.0/24".parse()?], Protocol::Tcp, [443..=443])
//!     .default_action(DefaultAction::Drop);
//! assert_eq!(from_yaml.policy().rules, in_code.policy().rules);
//! // Other kinds: failsafe beats deny beats allow.
//! let guarded = in_code.rule(RuleKind::Failsafe, "ssh", ["10.0.0.0/24".parse()?], Protocol::Tcp, [22..=22]);
//! assert_eq!(guarded.policy().rules.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Enforcing them (root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON):
//!
//! ```no_run
//! use filter_user::firewall::{Firewall, RuleSet};
//!
//! let rules = RuleSet::from_file("rules.yaml")?;
//! let mut firewall = Firewall::load()?;
//! firewall.publish(&rules)?; // compile, write the inactive generation, flip
//! firewall.attach("eth0")?; // XDP on ingress, the flow recorder on egress
//! for r in firewall.counters()?.reasons {
//!     println!("{} {} packets", r.reason, r.packets);
//! }
//! firewall.publish(&RuleSet::from_file("rules.yaml")?)?; // a reload is another publish
//! firewall.detach("eth0")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;

use aya::programs::{
    tc::{self, SchedClassifierLinkId},
    xdp::XdpLinkId,
    TcAttachType,
};
use ipnet::IpNet;

use crate::compiler::{compile, CompileError, RuleSlots};
use crate::config::{self, ConfigError, Diagnostic};
use crate::loader::attach::{self, AttachError, XdpModeChoice};
use crate::loader::counters::Snapshot;
use crate::loader::publish::PublishReport;
use crate::loader::{Filter, LoadOptions, LoaderError};
use crate::policy::{DefaultAction, Mode, Policy, Protocol, Rule, RuleKind};

/// A validated rule set, ready to publish.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    policy: Policy,
    warnings: Vec<Diagnostic>,
}

impl RuleSet {
    /// No rules, the defaults of an empty rule file: enforce, default drop, essentials on.
    pub fn new() -> RuleSet {
        RuleSet::default()
    }

    /// Rules from YAML text; `name` names it in diagnostics. Reads the node's ephemeral port
    /// range when `return_traffic: ephemeral` needs it.
    pub fn from_yaml(name: &str, text: &str) -> Result<RuleSet, ConfigError> {
        Ok(RuleSet::from_loaded(config::parse_str(name, text)?))
    }

    /// Rules from a YAML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<RuleSet, ConfigError> {
        Ok(RuleSet::from_loaded(config::load_file(path)?))
    }

    /// A policy built by other means (it is checked when published: what does not fit the
    /// kernel tables is refused then).
    pub fn from_policy(policy: Policy) -> RuleSet {
        RuleSet {
            policy,
            warnings: Vec::new(),
        }
    }

    fn from_loaded(loaded: config::Loaded) -> RuleSet {
        RuleSet {
            policy: loaded.policy,
            warnings: loaded.warnings,
        }
    }

    /// Add a rule: `protocol` traffic from `sources` to `ports` (ICMP types for ICMP; empty
    /// for every port). `kind` orders it as in a rule file: failsafe beats deny beats allow.
    pub fn rule(
        mut self,
        kind: RuleKind,
        name: &str,
        sources: impl IntoIterator<Item = IpNet>,
        protocol: Protocol,
        ports: impl IntoIterator<Item = RangeInclusive<u16>>,
    ) -> RuleSet {
        self.policy.rules.push(Rule {
            name: name.into(),
            kind,
            sources: sources.into_iter().map(|n| n.trunc()).collect(),
            protocol,
            keys: ports.into_iter().collect(),
            interfaces: Vec::new(),
        });
        self
    }

    /// Add an allow rule, the common kind: [`RuleSet::rule`] with [`RuleKind::Allow`].
    pub fn allow(
        self,
        name: &str,
        sources: impl IntoIterator<Item = IpNet>,
        protocol: Protocol,
        ports: impl IntoIterator<Item = RangeInclusive<u16>>,
    ) -> RuleSet {
        self.rule(RuleKind::Allow, name, sources, protocol, ports)
    }

    /// The verdict for packets no rule matches.
    pub fn default_action(mut self, default: DefaultAction) -> RuleSet {
        self.policy.default = default;
        self
    }

    /// Enforce, or only count what would be dropped.
    pub fn mode(mut self, mode: Mode) -> RuleSet {
        self.policy.mode = mode;
        self
    }

    /// The rules as the compiler and the reference model take them.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// What the checks of a YAML rule set warned about (overlaps, shadowed rules, lockout).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }
}

/// Why a [`Firewall`] call failed. Nothing was half-done: a refused publish leaves the active
/// rules as they were, a refused attach leaves the interface as it was.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// Loading the programs or a map operation failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// The rules do not fit the kernel tables.
    #[error("the rules do not compile: {0}")]
    Compile(#[from] CompileError),
    /// Attaching to an interface failed.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// The egress flow recorder could not be attached.
    #[error("attaching the flow recorder to {iface}'s egress: {source}")]
    Egress {
        /// The interface.
        iface: String,
        /// aya's error.
        source: aya::programs::ProgramError,
    },
    /// Detaching failed.
    #[error("detaching from {iface}: {source}")]
    Detach {
        /// The interface.
        iface: String,
        /// aya's error.
        source: aya::programs::ProgramError,
    },
}

impl crate::hint::Hint for FirewallError {
    fn hint(&self) -> Option<&str> {
        match self {
            FirewallError::Loader(e) => e.hint(),
            FirewallError::Attach(e) => e.hint(),
            _ => None,
        }
    }
}

/// Where the programs run on one interface.
struct Attachment {
    ifindex: u32,
    xdp: XdpLinkId,
    egress: SchedClassifierLinkId,
}

/// The XDP filter and its egress flow recorder, loaded with private maps.
pub struct Firewall {
    filter: Filter,
    slots: RuleSlots,
    attached: BTreeMap<String, Attachment>,
}

impl Firewall {
    /// Load both programs into the kernel (attached nowhere yet). Until the first
    /// [`Firewall::publish`] the program passes every packet.
    pub fn load() -> Result<Firewall, FirewallError> {
        Ok(Firewall {
            filter: Filter::load(&LoadOptions::default())?,
            slots: RuleSlots::new(),
            attached: BTreeMap::new(),
        })
    }

    /// Compile `rules`, write them into the inactive generation and flip to it: each packet
    /// is judged wholly by the old rules or wholly by the new ones. Rule counters keep their
    /// slots across publishes of rule sets that keep a rule's name.
    pub fn publish(&mut self, rules: &RuleSet) -> Result<PublishReport, FirewallError> {
        let tables = compile(&rules.policy, &self.slots)?;
        let report = self.filter.maps_mut().publish(&tables)?;
        self.slots.commit(&tables);
        Ok(report)
    }

    /// Attach to `iface`: XDP in driver mode (generic mode where the driver has none) on
    /// ingress, the flow recorder on egress (what `return_traffic: stateful` learns from).
    /// Returns the XDP mode, `"driver"` or `"generic"`.
    pub fn attach(&mut self, iface: &str) -> Result<&'static str, FirewallError> {
        if self.attached.contains_key(iface) {
            return Ok("already attached");
        }
        let ifindex = attach::ifindex(iface).ok_or_else(|| AttachError::UnknownInterface {
            ifname: iface.into(),
        })?;
        let (xdp, how, _fallback) = self
            .filter
            .attach_new(iface, ifindex, XdpModeChoice::Auto)?;
        // Where the kernel has no TCX, aya attaches through the clsact qdisc; an existing
        // one is fine.
        let _ = tc::qdisc_add_clsact(iface);
        let egress = match self
            .filter
            .egress_program()
            .attach(iface, TcAttachType::Egress)
        {
            Ok(id) => id,
            Err(source) => {
                // Nothing stays half-attached.
                let _ = self.filter.program().detach(xdp);
                return Err(FirewallError::Egress {
                    iface: iface.into(),
                    source,
                });
            }
        };
        self.filter.maps_mut().register_iface(ifindex, iface)?;
        self.attached.insert(
            iface.into(),
            Attachment {
                ifindex,
                xdp,
                egress,
            },
        );
        Ok(how)
    }

    /// Detach from `iface`; `false` when this firewall was not attached there.
    pub fn detach(&mut self, iface: &str) -> Result<bool, FirewallError> {
        let Some(a) = self.attached.remove(iface) else {
            return Ok(false);
        };
        let xdp = self.filter.program().detach(a.xdp);
        let egress = self.filter.egress_program().detach(a.egress);
        self.filter.maps_mut().forget_iface(a.ifindex);
        for result in [xdp, egress] {
            result.map_err(|source| FirewallError::Detach {
                iface: iface.into(),
                source,
            })?;
        }
        Ok(true)
    }

    /// The counters now: packets and bytes by reason and interface, and by rule.
    pub fn counters(&self) -> Result<Snapshot, FirewallError> {
        Ok(self.filter.maps().snapshot()?)
    }

    /// The loaded programs and maps, for what this face does not cover.
    pub fn filter(&mut self) -> &mut Filter {
        &mut self.filter
    }
}
