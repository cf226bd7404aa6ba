//! The YAML front end: a rule file → a validated [`Policy`], or every error in the file with
//! `file:line:column` and a hint.
//!
//! The file is parsed with `saphyr-parser` into a small node tree that keeps positions,
//! duplicate keys and scalar styles (`config::yaml`), then decoded by hand: every unknown key,
//! duplicate key, wrong type and semantic error points at the node it is about.
//!
//! The stages, one module each, form a chain (`config::pipeline` runs them): decoding
//! primitives (`node`, a leaf) → values: ports, CIDRs, set names (`values`) → rule entries
//! (`rules`, with `interfaces` and `rollout` for their sections) → the document (`document`)
//! → cross-entry resolution (`resolve`) → compile → warnings (`warnings`).
//! Capacity limits that only the compiler can see (source classes, port segments) are checked
//! by compiling once; the warnings (overlapping CIDRs, shadowed rules, lockout risk) come from
//! the same pass. Nothing here touches the kernel.
//!
//! ```
//! use filter_user::config::{parse_str_with, LoadOptions};
//!
//! let text = "
//! version: 1
//! sets:
//!   control-plane: [10.0.0.0/24, 2001:db8:cf::/64]
//! failsafe:
//!   - { name: admin-ssh, from: [10.0.0.0/24], protocol: tcp, ports: [22] }
//! rules:
//!   - { name: kubelet, from: [control-plane], protocol: tcp, ports: [10250] }
//! ";
//! let loaded = parse_str_with("node.yaml", text, &LoadOptions::fixed_ephemeral(32768..=60999))
//!     .expect("valid");
//! assert_eq!(loaded.policy.rules.len(), 2);
//!
//! let err = parse_str_with("bad.yaml", "version: 1\nrules: [{ name: x, from: [10.0.0.1/24], protocol: tcp }]\n",
//!     &LoadOptions::default()).unwrap_err();
//! assert!(err.to_string().contains("bad.yaml:2:27: error: 10.0.0.1/24 has host bits set"));
//! ```
//!
//! # Schema (version 1)
//!
//! | key | values | default |
//! | --- | --- | --- |
//! | `version` | `1` (required) | — |
//! | `mode` | `enforce` \| `monitor` | `enforce` |
//! | `default` | `drop` \| `pass` | `drop` |
//! | `allow_empty` | `true` acknowledges an empty allow-list (no allow/failsafe rule, an empty set or `from`) with default drop | `false` |
//! | `allow_any_source` | `true` acknowledges `0.0.0.0/0` or `::/0` | `false` |
//! | `acknowledge_failsafe_change` | `true` lets this reload remove or change failsafe rules (the running daemon refuses that otherwise) | `false` |
//! | `essentials` | `{ arp, neighbor_discovery, icmp_errors }` booleans | all `true` |
//! | `return_traffic` | `stateful` \| `ephemeral` \| `off`, or `{ mode: ..., ports: "lo-hi" }` (ports: ephemeral only; default read from `ip_local_port_range`) | `stateful` |
//! | `fragments` | `track` \| `drop` | `track` |
//! | `ipv4_options` | `drop` \| `allow` | `drop` |
//! | `unknown_ethertypes` | `drop` \| `pass` | `drop` |
//! | `drop_samples_per_sec` | 0..=1000000 | `10` |
//! | `interfaces` | mapping of interface name → `{ mode?, default? }`: that interface's own mode and default (a rule's own `interfaces` scopes the rule) | none |
//! | `sets` | mapping of set name → list of CIDRs | none |
//! | `failsafe` | list of rules (no `action`; always allow) | none |
//! | `rules` | list of rules | none |
//!
//! A rule is `{ name, from, protocol, ports?, types?, action?, interfaces?, description? }`:
//! `from` lists set names and CIDRs (a bare address is a /32 or /128); `protocol` is `tcp`,
//! `udp`, `icmp`, `icmpv6` or `any`; `ports` (tcp/udp) and `types` (icmp/icmpv6) list numbers
//! and `"lo-hi"` ranges, and leaving them out means every port/type; `action` is `allow`
//! (default) or `deny`; `interfaces` lists the interfaces the rule applies on (default:
//! every interface; elsewhere the rule does not exist). A single value may stand for a one-element list
//! (`ports: 443`, `from: control-plane`).
//!
//! Strictness beyond the schema: YAML anchors, aliases and tags are rejected (reuse CIDRs
//! through named `sets:` instead); booleans are exactly `true`/`false`; numbers are plain
//! decimals; a port range is the string `"lo-hi"` and anything with a `:` (YAML 1.1 base-60,
//! `10:30` = 630) is an error, quoted or not. Set names start with a letter and use letters,
//! digits, `-` and `_`, which is how a `from` entry is told apart from a CIDR.

mod document;
mod file;
mod interfaces;
mod node;
mod pipeline;
mod resolve;
mod rollout;
mod rules;
mod values;
mod warnings;
mod yaml;
mod yaml_lists;

pub use document::key_paths;
pub use file::{content_hash, read_rule_file, MAX_RULE_FILE_BYTES};
pub use pipeline::Sets;
pub use rollout::parse_window;

#[cfg(test)]
mod tests;

use std::{
    fmt,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::compiler::{Compiled, RuleSlots, TableStats, Tables};
use crate::policy::Policy;

/// How bad a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The file is rejected.
    Error,
    /// The file is accepted; something deserves a look.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One message about a config file, anchored to a source position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name as given to the loader.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, lowercase, without the position.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.severity, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Why a config file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is invalid; every error found, sorted by position.
    #[error("{}", render(errors))]
    Invalid {
        /// Errors, sorted by position (never empty).
        errors: Vec<Diagnostic>,
        /// Warnings found along the way, sorted by position.
        warnings: Vec<Diagnostic>,
    },
}

fn render(diags: &[Diagnostic]) -> String {
    let mut s = String::new();
    for (i, d) in diags.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&d.to_string());
    }
    s
}

impl ConfigError {
    /// The errors (empty for [`ConfigError::Read`]).
    pub fn errors(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { errors, .. } => errors,
        }
    }
}

/// A successfully loaded config file.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The validated rule set.
    pub policy: Policy,
    /// Warnings (overlaps, shadowed rules, lockout risk, …), sorted by position.
    pub warnings: Vec<Diagnostic>,
    /// Size of the compiled tables.
    pub stats: TableStats,
    /// The tables, compiled against [`LoadOptions::slots`]: the daemon publishes these
    /// rather than compiling the file a second time.
    pub tables: Tables,
    /// [`content_hash`] of the file's bytes (`None` for text given as a string).
    pub file_hash: Option<u64>,
    /// The file's text as read (`None` for text given as a string): what the daemon
    /// records as the active rules, for `nodegate diff`.
    pub text: Option<std::sync::Arc<str>>,
    /// Its named sets, as listed (the policy's rules hold them resolved).
    pub sets: Sets,
}

/// Reads the node's ephemeral port range; see [`LoadOptions`].
pub type EphemeralSource = dyn Fn() -> Result<RangeInclusive<u16>, String> + Send + Sync;

/// Environment the loader consults. The only input from outside the file is the node's
/// ephemeral port range (for `return_traffic: ephemeral` without `ports`), injectable so
/// tests never read `/proc`.
pub struct LoadOptions {
    /// Where the ephemeral port range comes from when the file does not give one.
    pub ephemeral_range: Box<EphemeralSource>,
    /// Prefix capacity that replaces the file's `capacity:` (`nodegate run
    /// --ipv4-capacity/--ipv6-capacity`): each family that is `Some` wins.
    pub capacity: CapacityOverride,
    /// The rule slots the checks compile against: the daemon's committed ones, so that the
    /// compiled [`Loaded::tables`] are ready to publish; fresh slots by default.
    pub slots: RuleSlots,
    /// The active generation, when there is one: a file that changes a few prefixes is
    /// compiled as an update of it ([`crate::compiler::compile_after`]).
    pub previous: Option<Arc<Compiled>>,
}

/// Per-family overrides of the file's `capacity:`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapacityOverride {
    /// IPv4 prefixes.
    pub ipv4: Option<u32>,
    /// IPv6 prefixes.
    pub ipv6: Option<u32>,
}

impl LoadOptions {
    /// Read `/proc/sys/net/ipv4/ip_local_port_range` (the default).
    pub fn system() -> LoadOptions {
        LoadOptions {
            ephemeral_range: Box::new(read_ip_local_port_range),
            capacity: CapacityOverride::default(),
            slots: RuleSlots::new(),
            previous: None,
        }
    }

    /// Use a fixed range instead of reading the system (tests, `check` on another machine).
    pub fn fixed_ephemeral(range: RangeInclusive<u16>) -> LoadOptions {
        LoadOptions {
            ephemeral_range: Box::new(move || Ok(range.clone())),
            capacity: CapacityOverride::default(),
            slots: RuleSlots::new(),
            previous: None,
        }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions::system()
    }
}

impl fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadOptions").finish_non_exhaustive()
    }
}

/// Where Linux keeps the ephemeral port range.
pub const IP_LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Read and parse [`IP_LOCAL_PORT_RANGE`] (`"32768\t60999\n"`).
pub fn read_ip_local_port_range() -> Result<RangeInclusive<u16>, String> {
    let text = std::fs::read_to_string(IP_LOCAL_PORT_RANGE)
        .map_err(|e| format!("failed to read {IP_LOCAL_PORT_RANGE}: {e}"))?;
    parse_port_range_pair(&text)
        .ok_or_else(|| format!("unexpected content in {IP_LOCAL_PORT_RANGE}: {text:?}"))
}

fn parse_port_range_pair(text: &str) -> Option<RangeInclusive<u16>> {
    let mut it = text.split_whitespace().map(|s| s.parse::<u16>());
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    (it.next().is_none() && lo >= 1 && lo <= hi).then_some(lo..=hi)
}

/// Load and validate a config file, reading the ephemeral range from the system.
pub fn load_file(path: impl AsRef<Path>) -> Result<Loaded, ConfigError> {
    load_file_with(path, &LoadOptions::system())
}

/// Load and validate a config file with explicit [`LoadOptions`].
pub fn load_file_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let path = path.as_ref();
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = read_rule_file(path).map_err(read_error)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is not UTF-8 text (invalid byte at offset {}); save the rule file as UTF-8",
                e.utf8_error().valid_up_to()
            ),
        ))
    })?;
    // The hash (~3 ms at 2.7 MB) runs on the second core while the first parses.
    let (hash, loaded) = std::thread::scope(|scope| {
        let hash = scope.spawn(|| content_hash(text.as_bytes()));
        let loaded = parse_str_with(&path.display().to_string(), &text, opts);
        let hash = hash
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (hash, loaded)
    });
    let mut loaded = loaded?;
    loaded.file_hash = Some(hash);
    loaded.text = Some(text.into());
    Ok(loaded)
}

/// Validate config text; `name` is the file name used in diagnostics. Reads the ephemeral
/// range from the system when needed.
pub fn parse_str(name: &str, text: &str) -> Result<Loaded, ConfigError> {
    parse_str_with(name, text, &LoadOptions::system())
}

/// Validate config text with explicit [`LoadOptions`].
pub fn parse_str_with(name: &str, text: &str, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let mut issues = Vec::new();
    let outcome = pipeline::load(text, opts, &mut issues);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    issues.sort_by_key(|i| i.pos);
    for issue in issues {
        let diag = Diagnostic {
            file: name.to_string(),
            line: issue.pos.line,
            column: issue.pos.column,
            severity: issue.severity,
            message: issue.message,
            hint: issue.hint,
        };
        match issue.severity {
            Severity::Error => errors.push(diag),
            Severity::Warning => warnings.push(diag),
        }
    }
    match outcome {
        Some((policy, tables, sets)) if errors.is_empty() => Ok(Loaded {
            policy,
            warnings,
            stats: tables.stats,
            tables,
            file_hash: None,
            text: None,
            sets,
        }),
        _ => {
            if errors.is_empty() {
                // Defensive: decoding gave up without saying why.
                errors.push(Diagnostic {
                    file: name.to_string(),
                    line: 1,
                    column: 1,
                    severity: Severity::Error,
                    message: "invalid config".into(),
                    hint: None,
                });
            }
            Err(ConfigError::Invalid { errors, warnings })
        }
    }
}

/// A diagnostic before it is given its file name.
#[derive(Clone, Debug)]
pub(crate) struct Issue {
    pub pos: yaml::Pos,
    pub severity: Severity,
    pub message: String,
    pub hint: Option<String>,
}

impl Issue {
    pub fn error(
        pos: yaml::Pos,
        message: impl Into<String>,
        hint: Option<impl Into<String>>,
    ) -> Issue {
        Issue {
            pos,
            severity: Severity::Error,
            message: message.into(),
            hint: hint.map(Into::into),
        }
    }

    pub fn warning(
        pos: yaml::Pos,
        message: impl Into<String>,
        hint: Option<impl Into<String>>,
    ) -> Issue {
        Issue {
            pos,
            severity: Severity::Warning,
            message: message.into(),
            hint: hint.map(Into::into),
        }
    }
}

#[cfg(test)]
mod unit {
    use super::parse_port_range_pair;

    #[test]
    fn ip_local_port_range_format() {
        assert_eq!(parse_port_range_pair("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range_pair("1024 65535"), Some(1024..=65535));
        assert_eq!(parse_port_range_pair("60999 32768"), None);
        assert_eq!(parse_port_range_pair("0 100"), None);
        assert_eq!(parse_port_range_pair("garbage"), None);
    }
}
