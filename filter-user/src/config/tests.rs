//! Every rejection and warning of the config front end, each asserting the message and the
//! line:column it points at.

use std::net::IpAddr;

use filter_common::{CellAction, ServiceKind, MAX_V4_PREFIXES, MAX_V6_PREFIXES};

use super::*;
use crate::compiler::{Lookup, Tables};
use crate::policy::{DefaultAction, Fragments, Mode, Protocol, ReturnTraffic, RuleKind};

fn opts() -> LoadOptions {
    LoadOptions::fixed_ephemeral(32768..=60999)
}

fn load(text: &str) -> Result<Loaded, ConfigError> {
    parse_str_with("t.yaml", text, &opts())
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match load(text) {
        Ok(l) => panic!("accepted, expected errors; warnings: {:?}", l.warnings),
        Err(ConfigError::Invalid { errors, .. }) => errors,
        Err(e) => panic!("{e}"),
    }
}

/// Where in a line: a column number, or the first occurrence of a text in that line.
enum At {
    Col(usize),
    Find(&'static str),
}

impl From<usize> for At {
    fn from(c: usize) -> At {
        At::Col(c)
    }
}

impl From<&'static str> for At {
    fn from(s: &'static str) -> At {
        At::Find(s)
    }
}

/// The 1-based column of `needle` in line `line` of `text`.
#[track_caller]
fn col(text: &str, line: usize, needle: &str) -> usize {
    let l = text.lines().nth(line - 1).expect("line exists");
    let byte = l
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in line {line}: {l:?}"));
    l[..byte].chars().count() + 1
}

/// Exactly one error, at `line:at`, whose message and hint contain the given text.
#[track_caller]
fn expect_error(text: &str, line: usize, at: impl Into<At>, message: &str, hint: &str) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got:\n{}", render(&errs));
    let c = match at.into() {
        At::Col(c) => c,
        At::Find(n) => col(text, line, n),
    };
    expect_diag(&errs[0], line, c, message, hint);
}

#[track_caller]
fn expect_diag(d: &Diagnostic, line: usize, col: usize, message: &str, hint: &str) {
    assert_eq!((d.line, d.column), (line, col), "position of: {d}");
    assert!(
        d.message.contains(message),
        "message {:?} lacks {message:?}",
        d.message
    );
    let h = d.hint.as_deref().unwrap_or("");
    assert!(h.contains(hint), "hint {h:?} lacks {hint:?}");
}

fn warnings(text: &str) -> Vec<Diagnostic> {
    match load(text) {
        Ok(l) => l.warnings,
        Err(e) => panic!("rejected:\n{e}"),
    }
}

/// A valid head: line 1 version, lines 2-3 failsafe (no lockout warning).
const HEAD: &str = "version: 1
failsafe: [{ name: ssh, from: [203.0.113.0/24], protocol: tcp, ports: [22] }]
";

/// HEAD + one rule on line 4 written as `  - { <body> }` after `rules:` on line 3.
fn with_rule(body: &str) -> String {
    format!("{HEAD}rules:\n  - {{ {body} }}\n")
}

// ----------------------------------------------------------------------------- syntax

#[test]
fn yaml_syntax_error() {
    let errs = errors("version: 1\nrules: [ { name: a\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].message.starts_with("YAML syntax error"),
        "{}",
        errs[0]
    );
    assert_eq!(errs[0].line, 3);
    // NB: saphyr reports a tab in indentation at the end of the previous scalar.
    let errs = errors("version: 1\n\tmode: enforce\n");
    assert_eq!((errs[0].line, errs[0].column), (1, 10), "{}", errs[0]);
    assert!(
        errs[0].hint.as_deref().unwrap().contains("tabs"),
        "{}",
        errs[0]
    );
}

#[test]
fn empty_file_and_non_mapping() {
    expect_error("", 1, 1, "the config file is empty", "version: 1");
    expect_error(
        "# only a comment\n",
        1,
        1,
        "the config file is empty",
        "version: 1",
    );
    expect_error("- a\n", 1, 1, "must be a mapping", "version: 1");
    let errs = errors("version: 1\n---\nversion: 1\n");
    expect_diag(&errs[0], 2, 1, "more than one YAML document", "---");
}

#[test]
fn unknown_keys() {
    expect_error(
        &format!(
            "{HEAD}mdoe: monitor\nrules: [{{ name: a, from: [10.0.0.0/8], protocol: any }}]\n"
        ),
        3,
        1,
        "unknown key `mdoe` in the config file",
        "did you mean `mode`?",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, port: [443]"),
        4,
        "port:",
        "unknown key `port` in a rule",
        "did you mean `ports`?",
    );
    expect_error(
        &format!("{HEAD}essentials: {{ arp: true, mdns: false }}\nrules: [{{ name: a, from: [10.0.0.0/8], protocol: any }}]\n"),
        3,
        "mdns",
        "unknown key `mdns` in `essentials`",
        "expected one of: arp, neighbor_discovery, icmp_errors",
    );
}

#[test]
fn duplicate_keys() {
    expect_error(
        &format!("{HEAD}mode: enforce\nmode: monitor\nrules: [{{ name: a, from: [10.0.0.0/8], protocol: any }}]\n"),
        4,
        1,
        "duplicate key `mode` in the config file",
        "already set at line 3:1",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, protocol: udp"),
        4,
        "protocol: udp",
        "duplicate key `protocol` in a rule",
        "already set at line 4:36",
    );
    expect_error(
        &format!("{HEAD}sets:\n  a: [10.0.0.0/8]\n  a: [10.1.0.0/16]\nrules: [{{ name: r, from: [a], protocol: any }}]\n"),
        5,
        3,
        "duplicate key `a` in `sets`",
        "already set at line 4:3",
    );
}

#[test]
fn version_missing_or_wrong() {
    expect_error(
        "mode: enforce\nrules: [{ name: a, from: [10.0.0.0/8], protocol: any }]\nfailsafe: [{ name: s, from: [10.0.0.0/8], protocol: tcp }]\n",
        1,
        1,
        "missing `version`",
        "add `version: 1`",
    );
    expect_error(
        "version: 2\nrules: [{ name: a, from: [10.0.0.0/8], protocol: any }]\nfailsafe: [{ name: s, from: [10.0.0.0/8], protocol: tcp }]\n",
        1,
        10,
        "unsupported config version 2",
        "version: 1",
    );
    expect_error(
        "version: \"1\"\nrules: [{ name: a, from: [10.0.0.0/8], protocol: any }]\nfailsafe: [{ name: s, from: [10.0.0.0/8], protocol: tcp }]\n",
        1,
        10,
        "expected a number for `version`",
        "plain decimal number",
    );
}

// ----------------------------------------------------------------------------- CIDRs

#[test]
fn host_bits_set() {
    expect_error(
        &with_rule("name: a, from: [10.0.0.1/24], protocol: any"),
        4,
        "10.0.0.1/24",
        "10.0.0.1/24 has host bits set",
        "did you mean 10.0.0.0/24?",
    );
    expect_error(
        &format!("{HEAD}sets:\n  s: [\"2001:db8::1/64\"]\nrules: [{{ name: a, from: [s], protocol: any }}]\n"),
        4,
        7,
        "2001:db8::1/64 has host bits set",
        "did you mean 2001:db8::/64?",
    );
}

#[test]
fn prefix_length_too_long() {
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/33], protocol: any"),
        4,
        "10.0.0.0/33",
        "prefix length /33 is too long for IPv4",
        "IPv4 prefix lengths are 0-32",
    );
    expect_error(
        &with_rule("name: a, from: [\"2001:db8::/129\"], protocol: any"),
        4,
        "\"2001",
        "prefix length /129 is too long for IPv6",
        "IPv6 prefix lengths are 0-128",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/x], protocol: any"),
        4,
        "10.0.0.0/x",
        "`/x` is not a prefix length",
        "0-32",
    );
}

#[test]
fn unparsable_addresses() {
    expect_error(
        &with_rule("name: a, from: [10.0.0.256/32], protocol: any"),
        4,
        "10.0.0.256",
        "`10.0.0.256/32` is not a valid IP address or CIDR",
        "IPv4 CIDR like 10.0.0.0/24",
    );
    expect_error(
        &with_rule("name: a, from: [010.0.0.0/8], protocol: any"),
        4,
        "010.",
        "`010.0.0.0/8` is not a valid IP address or CIDR",
        "leading zeros",
    );
    expect_error(
        &with_rule("name: a, from: [\"fe80::1%eth0\"], protocol: any"),
        4,
        "\"fe80",
        "is not a valid IP address or CIDR",
        "zone indices",
    );
}

#[test]
fn bare_address_is_a_host_prefix() {
    let l = load(&with_rule(
        "name: a, from: [10.0.0.1, \"2001:db8::1\"], protocol: any",
    ))
    .unwrap();
    let r = l.policy.rules.iter().find(|r| r.name == "a").unwrap();
    assert_eq!(
        r.sources,
        vec![
            "10.0.0.1/32".parse().unwrap(),
            "2001:db8::1/128".parse().unwrap()
        ]
    );
}

#[test]
fn any_source_needs_acknowledgement() {
    expect_error(
        &with_rule("name: a, from: [0.0.0.0/0], protocol: tcp, ports: [443]"),
        4,
        "0.0.0.0/0",
        "0.0.0.0/0 matches every IPv4 source",
        "allow_any_source: true",
    );
    expect_error(
        &with_rule("name: a, from: [\"::/0\"], protocol: tcp, ports: [443]"),
        4,
        "\"::/0",
        "::/0 matches every IPv6 source",
        "allow_any_source: true",
    );
    let ok = format!(
        "allow_any_source: true\n{}",
        with_rule("name: a, from: [0.0.0.0/0, \"::/0\"], protocol: tcp, ports: [443]")
    );
    let l = load(&ok).unwrap();
    assert_eq!(l.policy.rules[1].sources.len(), 2);
}

#[test]
fn ipv4_mapped_ipv6_rejected() {
    expect_error(
        &with_rule("name: a, from: [\"::ffff:0:0/96\"], protocol: any"),
        4,
        "\"::ffff",
        "::ffff:0:0/96 is an IPv4-mapped IPv6 prefix",
        "write the IPv4 CIDR 0.0.0.0/0 instead",
    );
    expect_error(
        &with_rule("name: a, from: [\"::ffff:10.0.0.0/120\"], protocol: any"),
        4,
        "\"::ffff",
        "::ffff:10.0.0.0/120 is an IPv4-mapped IPv6 prefix",
        "write the IPv4 CIDR 10.0.0.0/24 instead",
    );
    expect_error(
        &with_rule("name: a, from: [\"::ffff:10.0.0.1\"], protocol: any"),
        4,
        "\"::ffff",
        "IPv4-mapped",
        "10.0.0.1/32",
    );
    // A wider prefix that merely contains the mapped block is a plain IPv6 prefix.
    assert!(load(&with_rule("name: a, from: [\"::/8\"], protocol: any")).is_ok());
}

// ----------------------------------------------------------------------------- ports

#[test]
fn inverted_range() {
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, ports: [\"65535-1025\"]"),
        4,
        "\"65535",
        "port range 65535-1025 is inverted",
        "write the lower port first: \"1025-65535\"",
    );
}

#[test]
fn port_zero_and_out_of_range() {
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, ports: [0]"),
        4,
        "0]",
        "port 0 is not a valid destination port",
        "ports are 1-65535",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: udp, ports: [443, 70000]"),
        4,
        "70000",
        "port 70000 is out of range",
        "ports are 1-65535",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, ports: [\"0-100\"]"),
        4,
        "\"0-100",
        "port range 0-100 includes port 0",
        "start the range at 1: \"1-100\"",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, ports: [99999999999999999999]"),
        4,
        "9999",
        "port a huge number is out of range",
        "ports are 1-65535",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: icmp, types: [300]"),
        4,
        "300",
        "ICMP type 300 is out of range",
        "ICMP types are 0-255",
    );
}

#[test]
fn base_60_trap() {
    // Unquoted: YAML 1.1 would read 630.
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, ports: [10:30]"),
        4,
        "10:30",
        "`10:30` is not a port or port range",
        "write a range as \"10-30\"",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, ports: [\"10:30\"]"),
        4,
        "\"10:30",
        "`10:30` is not a port or port range",
        "write a range as \"10-30\"",
    );
    // Block style, single value.
    expect_error(
        &format!("{HEAD}rules:\n  - name: a\n    from: [10.0.0.0/8]\n    protocol: tcp\n    ports: 1:2:3\n"),
        7,
        "1:2:3",
        "`1:2:3` is not a port or port range",
        "\"10-30\"",
    );
}

#[test]
fn garbage_ports() {
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, ports: [0x1bb]"),
        4,
        "0x1bb",
        "`0x1bb` is not a port number or range",
        "write a port as 443",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, ports: []"),
        4,
        "[]",
        "empty `ports` list",
        "leave `ports` out",
    );
}

#[test]
fn ports_and_types_must_fit_the_protocol() {
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: icmp, ports: [8]"),
        4,
        "ports",
        "`ports` does not apply to protocol `icmp`",
        "use `types`",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: any, ports: [443]"),
        4,
        "ports",
        "`ports` does not apply to protocol `any`",
        "covers every port",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, types: [8]"),
        4,
        "types",
        "`types` does not apply to protocol `tcp`",
        "use `ports`",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: udp, types: [8]"),
        4,
        "types",
        "`types` does not apply to protocol `udp`",
        "use `ports`",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: sctp"),
        4,
        "sctp",
        "invalid `protocol` `sctp`",
        "`tcp` or `udp` or `icmp` or `icmpv6` or `any`",
    );
}

#[test]
fn ports_are_merged_and_types_accept_zero() {
    let l = load(&with_rule(
        "name: a, from: [10.0.0.0/8], protocol: tcp, ports: [\"1025-2000\", 443, 1500, \"2001-3000\", \"444\"]",
    ))
    .unwrap();
    assert_eq!(l.policy.rules[1].keys, vec![443..=444, 1025..=3000]);
    let l = load(&with_rule(
        "name: a, from: [10.0.0.0/8], protocol: icmp, types: [0, 8]",
    ))
    .unwrap();
    assert_eq!(l.policy.rules[1].keys, vec![0..=0, 8..=8]);
    let l = load(&with_rule(
        "name: a, from: 10.0.0.0/8, protocol: udp, ports: 53",
    ))
    .unwrap();
    assert_eq!(l.policy.rules[1].keys, vec![53..=53]);
}

// ----------------------------------------------------------------------------- sets, names

#[test]
fn unknown_set_name() {
    expect_error(
        &format!("{HEAD}sets:\n  control-plane: [10.0.0.0/24]\nrules: [{{ name: a, from: [control-plan], protocol: any }}]\n"),
        5,
        "control-plan]",
        "unknown set `control-plan`",
        "did you mean `control-plane`?",
    );
}

#[test]
fn bad_set_definitions() {
    let errs = errors(&format!(
        "{HEAD}sets:\n  9x: [10.0.0.0/24]\n  a: [b]\n  b: [10.1.0.0/16]\nrules: [{{ name: r, from: [a, b], protocol: any }}]\n"
    ));
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    expect_diag(
        &errs[0],
        4,
        3,
        "`9x` is not a valid set name",
        "start with a letter",
    );
    expect_diag(
        &errs[1],
        5,
        7,
        "sets cannot contain other sets",
        "list the CIDRs",
    );
}

#[test]
fn duplicate_rule_names_across_lists() {
    expect_error(
        &format!("{HEAD}rules:\n  - {{ name: ssh, from: [10.0.0.0/8], protocol: any }}\n"),
        4,
        "ssh",
        "duplicate rule name `ssh`",
        "first used at line 2:20",
    );
}

#[test]
fn rule_name_length_and_emptiness() {
    let long = "x".repeat(64);
    expect_error(
        &with_rule(&format!("name: {long}, from: [10.0.0.0/8], protocol: any")),
        4,
        "xxx",
        "rule name is 64 bytes long; the limit is 63",
        "shorten",
    );
    assert!(load(&with_rule(&format!(
        "name: {}, from: [10.0.0.0/8], protocol: any",
        "x".repeat(63)
    )))
    .is_ok());
    expect_error(
        &with_rule("name: \"\", from: [10.0.0.0/8], protocol: any"),
        4,
        "\"\"",
        "rule name is empty",
        "unique, non-empty",
    );
    expect_error(
        &with_rule("from: [10.0.0.0/8], protocol: any"),
        4,
        "{",
        "rule has no `name`",
        "counters are keyed by it",
    );
}

#[test]
fn failsafe_rules_take_no_action() {
    expect_error(
        "version: 1\nfailsafe: [{ name: s, from: [10.0.0.0/8], protocol: tcp, ports: [22], action: deny }]\n",
        2,
        "action",
        "failsafe rules always allow",
        "move the rule to `rules:`",
    );
}

#[test]
fn missing_from_and_protocol() {
    let errs = errors(&with_rule("name: a"));
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    expect_diag(
        &errs[0],
        4,
        5,
        "rule `a` has no `from`",
        "from: [control-plane]",
    );
    expect_diag(&errs[1], 4, 5, "rule `a` has no `protocol`", "`icmpv6`");
}

// ----------------------------------------------------------------------------- empty allow-list

#[test]
fn empty_allow_list_with_default_drop() {
    // No rules at all.
    expect_error(
        "version: 1\nmode: enforce\n",
        1,
        1,
        "no allow or failsafe rule, and the default is drop",
        "allow_empty: true",
    );
    // Only deny rules: points at `rules`.
    expect_error(
        "version: 1\nrules:\n  - { name: d, from: [10.0.0.0/8], protocol: any, action: deny }\n",
        2,
        1,
        "no allow or failsafe rule",
        "allow_empty: true",
    );
    // Empty set.
    expect_error(
        &format!("{HEAD}sets:\n  cp: []\nrules: [{{ name: a, from: [cp], protocol: any }}]\n"),
        4,
        7,
        "set `cp` is empty",
        "allow_empty: true",
    );
    // Empty `from`.
    expect_error(
        &with_rule("name: a, from: [], protocol: any"),
        4,
        "[]",
        "rule `a` has an empty `from`: it matches no source",
        "allow_empty: true",
    );
    // Acknowledged, or default pass: accepted.
    assert!(load("version: 1\nallow_empty: true\n").is_ok());
    assert!(load("version: 1\ndefault: pass\n").is_ok());
    let l = load(&format!(
        "allow_empty: true\n{HEAD}sets:\n  cp: []\nrules: [{{ name: a, from: [cp], protocol: any }}, {{ name: b, from: [], protocol: any }}]\n"
    ))
    .unwrap();
    assert!(l.policy.rules[1].sources.is_empty() && l.policy.rules[2].sources.is_empty());
}

// ----------------------------------------------------------------------------- capacity

#[test]
fn too_many_ipv4_prefixes() {
    let mut text = format!("{HEAD}sets:\n  big:\n");
    for i in 0..=MAX_V4_PREFIXES {
        text.push_str(&format!(
            "    - 11.{}.{}.{}/32\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    text.push_str("rules: [{ name: a, from: [big], protocol: any }]\n");
    // The ssh failsafe's 10.9.0.0/24 is prefix 1, so the set's last-but-one entry is the
    // first past the limit: line 5 + MAX - 1.
    let line = 5 + MAX_V4_PREFIXES as usize - 1;
    expect_error(
        &text,
        line,
        7,
        "too many IPv4 prefixes: this is number 131073, the kernel table holds 131072",
        "aggregate",
    );
}

/// Several rules on one set count its prefixes once: within capacity however many rules
/// name it, and past it as soon as the set itself is.
#[test]
fn rules_sharing_a_set_count_its_prefixes_once() {
    let rules = "rules:\n  - { name: a, from: [s], protocol: tcp, ports: [443] }\n  - { name: b, from: [s], protocol: udp, ports: [53] }\n  - { name: c, from: [s], protocol: icmp }\n";
    let set = "sets:\n  s: [10.0.0.0/16, 10.1.0.0/16, 10.2.0.0/16, 10.3.0.0/16, 10.4.0.0/16]\n";
    // The failsafe's prefix and the set's five: 6, whatever the number of rules on the set.
    let fits = format!("{HEAD}capacity: {{ ipv4_prefixes: 8 }}\n{set}{rules}");
    assert!(load(&fits).is_ok(), "{}", render(&errors(&fits)));
    let over = format!("{HEAD}capacity: {{ ipv4_prefixes: 5 }}\n{set}{rules}");
    expect_error(
        &over,
        5,
        "10.4.0.0/16",
        "too many IPv4 prefixes: this is number 6, the kernel table holds 5",
        "capacity.ipv4_prefixes",
    );
}

#[test]
fn capacity_sets_the_prefix_limits() {
    let rule = "rules: [{ name: a, from: [10.0.0.0/24, 10.0.1.0/24], protocol: any }]\n";
    // The failsafe's 203.0.113.0/24 is prefix 1, so 10.0.1.0/24 is number 3.
    expect_error(
        &format!("{HEAD}capacity: {{ ipv4_prefixes: 2 }}\n{rule}"),
        4,
        "10.0.1.0/24",
        "too many IPv4 prefixes: this is number 3, the kernel table holds 2",
        "capacity.ipv4_prefixes",
    );
    let l = load(&format!(
        "{HEAD}capacity:\n  ipv4_prefixes: 1048576\n  ipv6_prefixes: 65536\n{rule}"
    ))
    .unwrap();
    assert_eq!(
        l.policy.capacity,
        crate::policy::PrefixCapacity {
            ipv4: 1_048_576,
            ipv6: 65_536
        }
    );
    assert_eq!(
        load(&format!("{HEAD}{rule}")).unwrap().policy.capacity,
        crate::policy::PrefixCapacity::default(),
        "absent: the defaults"
    );
    expect_error(
        &format!("{HEAD}capacity: {{ ipv6_prefixes: 0 }}\n{rule}"),
        3,
        "0",
        "`capacity.ipv6_prefixes` must be at least 1",
        "from 1 to 1048576",
    );
    let too_big = errors(&format!(
        "{HEAD}capacity: {{ ipv4_prefixes: 4194305 }}\n{rule}"
    ));
    assert!(
        too_big.len() == 1 && too_big[0].message.contains("capacity.ipv4_prefixes"),
        "{}",
        render(&too_big)
    );
    let unknown = errors(&format!("{HEAD}capacity: {{ ipv4: 5 }}\n{rule}"));
    assert!(
        unknown.len() == 1 && unknown[0].message.contains("ipv4"),
        "{}",
        render(&unknown)
    );
    // `run --ipv4-capacity` replaces the file's value before the checks.
    let opts = LoadOptions {
        capacity: crate::config::CapacityOverride {
            ipv4: Some(1),
            ipv6: None,
        },
        ..opts()
    };
    let err = parse_str_with("t.yaml", &format!("{HEAD}{rule}"), &opts).unwrap_err();
    assert!(
        err.to_string().contains("the kernel table holds 1"),
        "{err}"
    );
}

#[test]
fn too_many_ipv6_prefixes() {
    let mut text = format!("{HEAD}rules:\n  - name: a\n    protocol: any\n    from:\n");
    for i in 0..=MAX_V6_PREFIXES {
        text.push_str(&format!("      - \"2001:db8:{:x}::/48\"\n", i));
    }
    let line = 7 + MAX_V6_PREFIXES as usize;
    expect_error(
        &text,
        line,
        9,
        "too many IPv6 prefixes: this is number 32769, the kernel table holds 32768",
        "aggregate",
    );
}

#[test]
fn too_many_rules() {
    let mut text = format!("{HEAD}rules:\n");
    for i in 0..1023 {
        text.push_str(&format!(
            "  - {{ name: r{i}, from: [10.0.0.0/8], protocol: tcp, ports: [{}] }}\n",
            i % 100 + 1
        ));
    }
    // ssh + 1023 = 1024 rules; the 1024th (r1022) is on line 4 + 1022.
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    expect_diag(
        &errs[0],
        4 + 1022,
        13,
        "too many rules: 1024 in the file, the kernel tables hold 1023",
        "merge rules",
    );
}

#[test]
fn too_many_segments_is_a_config_error() {
    let mut text = format!("{HEAD}rules:\n");
    for i in 0..128u32 {
        text.push_str(&format!(
            "  - {{ name: u{i}, from: [10.0.0.0/8], protocol: udp, ports: [{}] }}\n",
            1000 + 2 * i
        ));
    }
    expect_error(
        &text,
        3,
        1,
        "rules cut the udp key space into 128 distinct segments, but the kernel table holds at most 127",
        "merge port lists",
    );
}

#[test]
fn too_many_classes_is_a_config_error() {
    // 10 rules; /24 number j belongs to the rules whose bit is set in j: 513 distinct sets.
    let mut text = format!("{HEAD}rules:\n");
    for i in 0..10 {
        let from: Vec<String> = (1..=513usize)
            .filter(|j| j & (1 << i) != 0)
            .map(|j| format!("10.{}.{}.0/24", j / 256, j % 256))
            .collect();
        text.push_str(&format!(
            "  - {{ name: r{i}, from: [{}], protocol: tcp, ports: [443] }}\n",
            from.join(", ")
        ));
    }
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    // 513 sets + the ssh failsafe's own class.
    expect_diag(
        &errs[0],
        3,
        1,
        "distinct rule combinations (classes), but the kernel table holds at most 512",
        "group CIDRs",
    );
}

// ----------------------------------------------------------------------------- misc types

#[test]
fn yaml_1_1_booleans_and_quoted_values() {
    expect_error(
        &format!(
            "allow_empty: yes\n{}",
            with_rule("name: a, from: [10.0.0.0/8], protocol: any")
        ),
        1,
        14,
        "expected `true` or `false` for `allow_empty`, found `yes`",
        "yes/no/on/off",
    );
    expect_error(
        &format!(
            "allow_empty: \"true\"\n{}",
            with_rule("name: a, from: [10.0.0.0/8], protocol: any")
        ),
        1,
        14,
        "found the quoted string \"true\"",
        "remove the quotes",
    );
    expect_error(
        &format!(
            "mode: enforcing\n{}",
            with_rule("name: a, from: [10.0.0.0/8], protocol: any")
        ),
        1,
        7,
        "invalid `mode` `enforcing`",
        "did you mean `enforce`?",
    );
    expect_error(
        &format!(
            "drop_samples_per_sec: -1\n{}",
            with_rule("name: a, from: [10.0.0.0/8], protocol: any")
        ),
        1,
        23,
        "expected a number for `drop_samples_per_sec`",
        "0 to 1000000",
    );
    expect_error(
        &format!("rules: {{ a: 1 }}\n{HEAD}"),
        1,
        8,
        "expected a list of rules for `rules`, found a mapping",
        "- name:",
    );
}

#[test]
fn anchors_aliases_and_tags_rejected() {
    let errs = errors(&format!(
        "{HEAD}sets:\n  a: &cp [10.0.0.0/24]\n  b: *cp\n  c: !!str 10.1.0.0/16\nrules: [{{ name: r, from: [a, b], protocol: any }}]\n"
    ));
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    expect_diag(
        &errs[0],
        4,
        6,
        "YAML anchors (`&name`) are not supported",
        "named set",
    );
    expect_diag(
        &errs[1],
        5,
        6,
        "YAML aliases (`*name`) are not supported",
        "named set",
    );
    expect_diag(
        &errs[2],
        6,
        6,
        "YAML tags (`!tag`) are not supported",
        "remove the tag",
    );
}

#[test]
fn return_traffic_forms() {
    let rule = with_rule("name: a, from: [10.0.0.0/8], protocol: any");
    // Default: stateful (SPEC §1).
    assert_eq!(
        load(&rule).unwrap().policy.return_traffic,
        ReturnTraffic::Stateful
    );
    assert_eq!(
        load(&format!("return_traffic: off\n{rule}"))
            .unwrap()
            .policy
            .return_traffic,
        ReturnTraffic::Off
    );
    // Ephemeral without ports: from the injected source, never /proc in tests.
    let custom = LoadOptions::fixed_ephemeral(40000..=50000);
    let l = parse_str_with(
        "t.yaml",
        &format!("return_traffic: ephemeral\n{rule}"),
        &custom,
    )
    .unwrap();
    assert_eq!(
        l.policy.return_traffic,
        ReturnTraffic::Ephemeral {
            ports: 40000..=50000
        }
    );
    let l = load(&format!(
        "return_traffic: {{ mode: ephemeral, ports: \"1024-2048\" }}\n{rule}"
    ))
    .unwrap();
    assert_eq!(
        l.policy.return_traffic,
        ReturnTraffic::Ephemeral { ports: 1024..=2048 }
    );
    expect_error(
        &format!("return_traffic: {{ mode: stateful, ports: \"1024-2048\" }}\n{rule}"),
        1,
        42,
        "`ports` only applies to `mode: ephemeral`",
        "remove `ports`",
    );
    expect_error(
        &format!("return_traffic: {{ mode: ephemeral, ports: \"2048-1024\" }}\n{rule}"),
        1,
        43,
        "port range 2048-1024 is inverted",
        "\"1024-2048\"",
    );
    expect_error(
        &format!("return_traffic: {{ ports: \"1024-2048\" }}\n{rule}"),
        1,
        17,
        "missing `mode` in `return_traffic`",
        "mode: ephemeral",
    );
    // A failing system read falls back to Linux's default with a warning.
    let failing = LoadOptions {
        ephemeral_range: Box::new(|| Err("no /proc here".into())),
        ..opts()
    };
    let l = parse_str_with(
        "t.yaml",
        &format!("return_traffic: ephemeral\n{rule}"),
        &failing,
    )
    .unwrap();
    assert_eq!(
        l.policy.return_traffic,
        ReturnTraffic::Ephemeral {
            ports: 32768..=60999
        }
    );
    assert_eq!(l.warnings.len(), 1);
    expect_diag(
        &l.warnings[0],
        1,
        17,
        "could not read the ephemeral port range (no /proc here)",
        "explicitly",
    );
}

#[test]
fn all_settings_decode() {
    let text = "version: 1
mode: monitor
default: pass
essentials: { arp: false, neighbor_discovery: true, icmp_errors: false }
return_traffic: { mode: ephemeral, ports: \"30000-40000\" }
fragments: drop
ipv4_options: allow
unknown_ethertypes: pass
drop_samples_per_sec: 0
acknowledge_failsafe_change: true
rules:
  - name: d
    from: 192.0.2.0/24
    protocol: any
    action: deny
    description: \"a deny\"
";
    let p = load(text).unwrap().policy;
    assert_eq!(p.mode, Mode::Monitor);
    assert_eq!(p.default, DefaultAction::Pass);
    assert!(!p.essentials.arp && p.essentials.neighbor_discovery && !p.essentials.icmp_errors);
    assert_eq!(
        p.return_traffic,
        ReturnTraffic::Ephemeral {
            ports: 30000..=40000
        }
    );
    assert_eq!(p.fragments, Fragments::Drop);
    assert!(p.ipv4_options_allow && p.unknown_ethertypes_pass);
    assert_eq!(p.samples_per_sec, 0);
    assert!(p.acknowledge_failsafe_change);
    assert_eq!(p.rules.len(), 1);
    assert_eq!(
        (p.rules[0].kind, p.rules[0].protocol),
        (RuleKind::Deny, Protocol::Any)
    );
}

#[test]
fn all_errors_reported_sorted_by_position() {
    let text = "version: 1
rules:
  - { name: a, from: [10.0.0.1/24], protocol: tcp, ports: [\"65535-1025\"] }
  - { name: a, from: [nope], protocol: udp, ports: [0] }
mdoe: x
";
    let errs = errors(text);
    let pos: Vec<(usize, usize)> = errs.iter().map(|d| (d.line, d.column)).collect();
    let expected = vec![
        (3, col(text, 3, "10.0.0.1")),
        (3, col(text, 3, "\"65535")),
        (4, col(text, 4, "a,")),
        (4, col(text, 4, "nope")),
        (4, col(text, 4, "0]")),
        (5, 1),
    ];
    assert_eq!(pos, expected, "{}", render(&errs));
    let err = load(text).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "t.yaml:3:23: error: 10.0.0.1/24 has host bits set\n  hint: did you mean 10.0.0.0/24?"
        ),
        "{err}"
    );
}

#[test]
fn diagnostic_display() {
    let d = Diagnostic {
        file: "f.yaml".into(),
        line: 3,
        column: 7,
        severity: Severity::Warning,
        message: "m".into(),
        hint: Some("h".into()),
    };
    assert_eq!(d.to_string(), "f.yaml:3:7: warning: m\n  hint: h");
}

// ----------------------------------------------------------------------------- warnings

#[test]
fn overlap_warnings() {
    let text = format!(
        "{HEAD}sets:\n  a: [10.0.0.0/16, 10.0.1.0/24, 10.0.1.0/24]\n  b: [10.0.0.0/16]\nrules:\n  - {{ name: r1, from: [a], protocol: tcp }}\n  - {{ name: r2, from: [b, 10.0.2.0/24], protocol: any }}\n"
    );
    let w = warnings(&text);
    // b's 10.0.0.0/16 equals a's: the same prefix in two lists is no news.
    assert_eq!(w.len(), 3, "{}", render(&w));
    expect_diag(
        &w[0],
        4,
        20,
        "10.0.1.0/24 (set `a`) overlaps 10.0.0.0/16 (set `a`, line 4:7)",
        "union",
    );
    expect_diag(
        &w[1],
        4,
        33,
        "10.0.1.0/24 is listed twice in set `a` (first at line 4:20)",
        "repetition",
    );
    let c = col(&text, 8, "10.0.2.0");
    expect_diag(
        &w[2],
        8,
        c,
        "10.0.2.0/24 (rule `r2`) overlaps 10.0.0.0/16 (set `a`, line 4:7)",
        "union",
    );
}

#[test]
fn shadowed_rule_warnings() {
    let w = warnings(&format!(
        "{HEAD}rules:
  - {{ name: wide, from: [10.0.0.0/8], protocol: tcp, ports: [\"1-1000\"] }}
  - {{ name: narrow, from: [10.1.0.0/16], protocol: tcp, ports: [443] }}
  - {{ name: other-proto, from: [10.1.0.0/16], protocol: udp, ports: [443] }}
  - {{ name: wider-ports, from: [10.1.0.0/16], protocol: tcp, ports: [\"900-1100\"] }}
  - {{ name: deny-all, from: [10.2.0.0/16], protocol: any, action: deny }}
"
    ));
    let shadow: Vec<&Diagnostic> = w
        .iter()
        .filter(|d| d.message.contains("shadowed"))
        .collect();
    assert_eq!(shadow.len(), 1, "{}", render(&w));
    expect_diag(
        shadow[0],
        5,
        13,
        "rule `narrow` is shadowed by `wide` (line 4:13): every packet it covers is decided by `wide` first",
        "remove `narrow`, or narrow `wide`",
    );
    // A deny shadows a later-written allow (deny is evaluated first); a failsafe shadows a deny.
    let w = warnings(&format!(
        "{HEAD}rules:
  - {{ name: allow-web, from: [10.2.3.0/24], protocol: tcp, ports: [443] }}
  - {{ name: deny-all, from: [10.2.0.0/16], protocol: any, action: deny }}
  - {{ name: deny-ssh, from: [203.0.113.0/24], protocol: tcp, ports: [22], action: deny }}
"
    ));
    let shadow: Vec<&Diagnostic> = w
        .iter()
        .filter(|d| d.message.contains("shadowed"))
        .collect();
    assert_eq!(shadow.len(), 2, "{}", render(&w));
    expect_diag(
        shadow[0],
        4,
        13,
        "rule `allow-web` is shadowed by `deny-all` (line 5:13)",
        "",
    );
    expect_diag(
        shadow[1],
        6,
        13,
        "rule `deny-ssh` is shadowed by `ssh` (line 2:20)",
        "",
    );
}

#[test]
fn lockout_warning() {
    let rule = "rules: [{ name: a, from: [192.0.2.0/24], protocol: tcp, ports: [443] }]\n";
    let w = warnings(&format!("version: 1\n{rule}"));
    assert_eq!(w.len(), 1, "{}", render(&w));
    expect_diag(
        &w[0],
        1,
        1,
        "lockout risk: no failsafe rule allows SSH (tcp 22)",
        "admin-ssh",
    );
    // A failsafe that does not cover 22: points at `failsafe`.
    let w = warnings(&format!(
        "version: 1\nfailsafe: [{{ name: api, from: [10.9.0.0/24], protocol: tcp, ports: [6443] }}]\n{rule}"
    ));
    expect_diag(&w[0], 2, 1, "lockout risk", "ports: [22]");
    // Not in monitor mode, not with default pass, not with an `any` failsafe.
    assert!(warnings(&format!("version: 1\nmode: monitor\n{rule}")).is_empty());
    assert!(warnings(&format!("version: 1\ndefault: pass\n{rule}")).is_empty());
    assert!(warnings(&format!(
        "version: 1\nfailsafe: [{{ name: all, from: [10.9.0.0/24], protocol: any }}]\n{rule}"
    ))
    .is_empty());
}

#[test]
fn unused_set_and_repeated_set_warnings() {
    let w = warnings(&format!(
        "{HEAD}sets:\n  a: [10.0.0.0/24]\n  unused: [10.5.0.0/24]\nrules: [{{ name: r, from: [a, a], protocol: any }}]\n"
    ));
    assert_eq!(w.len(), 2, "{}", render(&w));
    expect_diag(
        &w[0],
        5,
        3,
        "set `unused` is not used by any rule",
        "remove it",
    );
    expect_diag(
        &w[1],
        6,
        30,
        "set `a` is listed twice in `from` of rule `r`",
        "",
    );
}

// ----------------------------------------------------------------------------- fixture, examples

fn manifest_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn decide(t: &Tables, src: &str, kind: ServiceKind, key: u16) -> Option<(String, CellAction)> {
    let src: IpAddr = src.parse().unwrap();
    match t.lookup(src, kind, key) {
        Lookup::NoSource => None,
        Lookup::Cell(c) => t.rule_name(c.slot()).map(|n| (n.to_string(), c.action())),
    }
}

#[test]
fn testcases_fixture_loads_and_compiles() {
    let l = load_file_with(manifest_path("tests/fixtures/testcases.yaml"), &opts()).unwrap();
    assert!(l.warnings.is_empty(), "{}", render(&l.warnings));
    let p = &l.policy;
    assert_eq!(
        p.return_traffic,
        ReturnTraffic::Ephemeral {
            ports: 32768..=60999
        }
    );
    assert_eq!(p.rules.len(), 5);
    let t = Tables::try_from(p).unwrap();
    use ServiceKind::*;
    let d = |s: &str, k, key| decide(&t, s, k, key);
    let allow = |n: &str| Some((n.to_string(), CellAction::Allow));
    assert_eq!(d("10.0.0.5", Tcp, 10250), allow("control-plane-api"));
    assert_eq!(d("192.0.2.9", Tcp, 10250), None);
    assert_eq!(d("192.0.2.9", Tcp, 443), allow("clients-https"));
    assert_eq!(
        t.lookup("198.51.100.7".parse().unwrap(), Tcp, 443),
        Lookup::NoSource
    );
    assert_eq!(
        d("10.0.0.5", Tcp, 22),
        Some(("admin".into(), CellAction::Failsafe))
    );
    assert_eq!(d("10.0.0.5", Udp, 443), None);
    assert_eq!(d("10.0.0.5", Tcp, 1024), None);
    assert_eq!(d("10.0.0.5", Tcp, 1025), allow("control-plane-tcp-high"));
    assert_eq!(d("2001:db8:cf::5", Tcp, 10250), allow("control-plane-api"));
}

#[test]
fn testcases_overlap_union_and_precedence_through_yaml() {
    let base = std::fs::read_to_string(manifest_path("tests/fixtures/testcases.yaml")).unwrap();
    let text = format!(
        "{base}  - {{ name: wide-8443, from: [10.0.0.0/16], protocol: tcp, ports: [8443] }}\n  - {{ name: deny-upper, from: [10.0.0.128/25], protocol: any, action: deny }}\n"
    );
    let l = load(&text).unwrap();
    let t = Tables::try_from(&l.policy).unwrap();
    use ServiceKind::Tcp;
    let d = |s: &str, key| decide(&t, s, Tcp, key);
    // Case 6: 10.0.0.5 gets the union of the /24's and the /16's rules.
    assert!(matches!(d("10.0.0.5", 8443), Some((_, CellAction::Allow))));
    assert_eq!(
        d("10.0.0.5", 10250),
        Some(("control-plane-api".into(), CellAction::Allow))
    );
    assert_eq!(
        d("10.0.7.1", 8443),
        Some(("wide-8443".into(), CellAction::Allow))
    );
    assert_eq!(d("10.0.7.1", 10250), None);
    // Case 7: deny beats allow; failsafe beats deny.
    assert_eq!(
        d("10.0.0.200", 443),
        Some(("deny-upper".into(), CellAction::Deny))
    );
    assert_eq!(
        d("10.0.0.200", 22),
        Some(("admin".into(), CellAction::Failsafe))
    );
}

#[test]
fn examples_load_without_errors() {
    for (file, rules) in [("eks-node.yaml", 9), ("aks-authorized-ranges.yaml", 4)] {
        let path = manifest_path(&format!("../examples/{file}"));
        let l = load_file_with(&path, &opts()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.policy.rules.len(), rules, "{file}");
        for w in &l.warnings {
            // Only overlap notes (nested subnets of one VPC) are expected.
            assert!(w.message.contains("overlaps"), "{file}: {w}");
        }
    }
    let eks = load_file_with(manifest_path("../examples/eks-node.yaml"), &opts()).unwrap();
    assert_eq!(eks.policy.return_traffic, ReturnTraffic::Stateful);
    let t = Tables::try_from(&eks.policy).unwrap();
    assert_eq!(
        decide(&t, "10.0.0.5", ServiceKind::Tcp, 10250).unwrap().0,
        "control-plane-kubelet"
    );
    assert_eq!(
        decide(&t, "10.0.40.7", ServiceKind::Other, 47).unwrap().0,
        "node-to-node"
    );
    assert_eq!(
        decide(&t, "198.51.100.3", ServiceKind::Tcp, 22).unwrap().1,
        CellAction::Failsafe
    );
    let aks = load_file_with(
        manifest_path("../examples/aks-authorized-ranges.yaml"),
        &opts(),
    )
    .unwrap();
    assert_eq!(
        aks.policy.return_traffic,
        ReturnTraffic::Ephemeral {
            ports: 32768..=60999
        }
    );
    assert_eq!(aks.policy.mode, Mode::Monitor);
}

#[test]
fn load_file_read_error() {
    let err = load_file_with("/nonexistent/nodegate.yaml", &opts()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("failed to read /nonexistent/nodegate.yaml:"),
        "{err}"
    );
}

#[test]
fn return_traffic_flow_table() {
    use crate::policy::FlowTable;
    let rule = with_rule("name: a, from: [10.0.0.0/8], protocol: any");
    // Defaults when not written.
    assert_eq!(load(&rule).unwrap().policy.flows, FlowTable::default());
    let l = load(&format!(
        "return_traffic:\n  mode: stateful\n  timeouts: {{ tcp: 600, tcp_closing: 5, udp: 30, icmp: 10 }}\n  capacity: 4096\n{rule}"
    ))
    .unwrap();
    assert_eq!(l.policy.return_traffic, ReturnTraffic::Stateful);
    assert_eq!(
        l.policy.flows,
        FlowTable {
            tcp_secs: 600,
            tcp_closing_secs: 5,
            udp_secs: 30,
            icmp_secs: 10,
            capacity: 4096,
        }
    );
    // Partial timeouts keep the other defaults.
    let l = load(&format!(
        "return_traffic: {{ mode: stateful, timeouts: {{ udp: 2 }} }}\n{rule}"
    ))
    .unwrap();
    assert_eq!(l.policy.flows.udp_secs, 2);
    assert_eq!(l.policy.flows.tcp_secs, FlowTable::default().tcp_secs);

    let text = format!("return_traffic: {{ mode: stateful, timeouts: {{ udpp: 2 }} }}\n{rule}");
    expect_error(
        &text,
        1,
        "udpp",
        "unknown key `udpp` in `return_traffic.timeouts`",
        "did you mean `udp`?",
    );
    let text = format!("return_traffic: {{ mode: stateful, timeouts: {{ tcp: 0 }} }}\n{rule}");
    expect_error(
        &text,
        1,
        "0 }",
        "`return_traffic.timeouts.tcp` must be at least 1 second",
        "from 1 to 604800",
    );
    let text =
        format!("return_traffic: {{ mode: stateful, timeouts: {{ icmp: 1000000 }} }}\n{rule}");
    expect_error(
        &text,
        1,
        "1000000",
        "`return_traffic.timeouts.icmp` 1000000 is out of range",
        "from 0 to 604800",
    );
    let text = format!("return_traffic: {{ mode: stateful, timeouts: {{ udp: 2s }} }}\n{rule}");
    expect_error(
        &text,
        1,
        "2s",
        "expected a number for `return_traffic.timeouts.udp`, found `2s`",
        "plain decimal",
    );
    let text = format!("return_traffic: {{ mode: stateful, capacity: 10 }}\n{rule}");
    expect_error(
        &text,
        1,
        "10 }",
        "`return_traffic.capacity` 10 is too small",
        "64 to 1048576",
    );
    let text = format!("return_traffic: {{ mode: stateful, capacity: 99999999 }}\n{rule}");
    expect_error(
        &text,
        1,
        "99999999",
        "`return_traffic.capacity` 99999999 is out of range",
        "",
    );
    let text = format!("return_traffic: {{ mode: ephemeral, capacity: 4096 }}\n{rule}");
    expect_error(
        &text,
        1,
        "4096",
        "`capacity` only applies to `mode: stateful`",
        "remove `capacity`",
    );
    let text = format!("return_traffic: {{ mode: off, timeouts: {{ udp: 2 }} }}\n{rule}");
    expect_error(
        &text,
        1,
        "{ udp",
        "`timeouts` only applies to `mode: stateful`",
        "use `mode: stateful`",
    );
}

// ----------------------------------------------------------------------------- interfaces

/// HEAD plus one allow rule, then `interfaces:` from line 4 on.
fn with_interfaces(body: &str) -> String {
    format!(
        "{HEAD}rules: [{{ name: a, from: [192.0.2.0/24], protocol: tcp, ports: [443] }}]\ninterfaces:\n{body}"
    )
}

#[test]
fn interfaces_set_mode_and_default_per_interface() {
    let loaded = load(&with_interfaces(
        "  eth1: { mode: monitor }\n  ens6:\n    default: pass\n  bond0.100: { mode: enforce, default: drop }\n",
    ))
    .expect("valid");
    let p = &loaded.policy;
    assert!(loaded.warnings.is_empty(), "{}", render(&loaded.warnings));
    assert_eq!(p.interfaces.len(), 3);
    assert_eq!(
        (p.mode_on(Some("eth1")), p.default_on(Some("eth1"))),
        (Mode::Monitor, DefaultAction::Drop)
    );
    assert_eq!(
        (p.mode_on(Some("ens6")), p.default_on(Some("ens6"))),
        (Mode::Enforce, DefaultAction::Pass)
    );
    assert_eq!(
        (
            p.mode_on(Some("bond0.100")),
            p.default_on(Some("bond0.100"))
        ),
        (Mode::Enforce, DefaultAction::Drop)
    );
    // Not named, or no interface at all: the file's own.
    for ifname in [Some("eth0"), None] {
        assert_eq!(
            (p.mode_on(ifname), p.default_on(ifname)),
            (Mode::Enforce, DefaultAction::Drop)
        );
    }
    // The compiler carries them as override bits.
    let tables = Tables::try_from(p).expect("compiles");
    use filter_common::iface_override as o;
    assert_eq!(tables.interfaces["eth1"], o::MODE | o::MONITOR);
    assert_eq!(tables.interfaces["ens6"], o::DEFAULT | o::DEFAULT_PASS);
    assert_eq!(tables.interfaces["bond0.100"], o::MODE | o::DEFAULT);
}

#[test]
fn interface_errors_point_at_the_entry() {
    expect_error(
        &with_interfaces("  eth0:1: { mode: monitor }\n"),
        5,
        3,
        "`eth0:1` is not a valid interface name",
        "at most 15 characters",
    );
    expect_error(
        &with_interfaces("  averyveryverylongname0: { mode: monitor }\n"),
        5,
        3,
        "longer than 15 bytes",
        "`ip link`",
    );
    expect_error(
        &with_interfaces("  eth1: { mdoe: monitor }\n"),
        5,
        "mdoe",
        "unknown key `mdoe` in `interfaces.eth1`",
        "did you mean `mode`?",
    );
    expect_error(
        &with_interfaces("  eth1: { mode: monitr }\n"),
        5,
        "monitr",
        "invalid `interfaces.eth1.mode` `monitr`",
        "did you mean `monitor`?",
    );
    expect_error(
        &with_interfaces("  eth1: { default: allow }\n"),
        5,
        "allow",
        "invalid `interfaces.eth1.default` `allow`",
        "`drop` or `pass`",
    );
    expect_error(
        &with_interfaces("  eth1: monitor\n"),
        5,
        "monitor",
        "expected a mapping for `interfaces.eth1`",
        "key: value",
    );
    expect_error(
        &with_interfaces("  eth1: { mode: monitor }\n  eth1: { default: pass }\n"),
        6,
        3,
        "duplicate key `eth1` in `interfaces`",
        "line 5",
    );
    expect_error(
        &format!("{HEAD}interfaces: [eth1]\n"),
        3,
        13,
        "expected a mapping for `interfaces`",
        "",
    );
}

#[test]
fn interface_that_sets_nothing_is_a_warning() {
    let w = warnings(&with_interfaces("  eth1: {}\n"));
    assert_eq!(w.len(), 1, "{}", render(&w));
    expect_diag(
        &w[0],
        5,
        3,
        "interface `eth1` sets nothing",
        "add `mode:` or `default:`",
    );
}

#[test]
fn interface_default_drop_needs_allow_rules_too() {
    // The file passes by default, but eth1 drops: with no allow rule, only essentials and
    // return traffic would reach the node through eth1.
    let text = "version: 1\ndefault: pass\ninterfaces:\n  eth1: { default: drop }\n";
    expect_error(
        text,
        4,
        "default: drop",
        "the default is drop on interface `eth1`",
        "allow_empty: true",
    );
    // Acknowledged, or pass everywhere: accepted.
    load(&format!("allow_empty: true\n{text}")).expect("acknowledged");
    load("version: 1\ndefault: pass\ninterfaces:\n  eth1: { mode: monitor }\n")
        .expect("default pass on every interface");
    // And the other way round: the file drops, but an interface that passes does not
    // lift the check for the others.
    expect_error(
        "version: 1\ninterfaces:\n  eth1: { default: pass }\n",
        1,
        1,
        "the default is drop: only essentials",
        "allow_empty: true",
    );
}

#[test]
fn lockout_warning_names_the_enforcing_interface() {
    let rule = "rules: [{ name: a, from: [192.0.2.0/24], protocol: tcp, ports: [443] }]\n";
    // The file monitors, but eth1 enforces with default drop and no SSH failsafe.
    let w = warnings(&format!(
        "version: 1\nmode: monitor\n{rule}interfaces:\n  eth1: {{ mode: enforce }}\n"
    ));
    assert_eq!(w.len(), 1, "{}", render(&w));
    expect_diag(
        &w[0],
        1,
        1,
        "lockout risk: no failsafe rule allows SSH (tcp 22) while enforcing with default drop on interface `eth1`",
        "admin-ssh",
    );
    // Every interface that enforces passes by default: no warning.
    assert!(warnings(&format!(
        "version: 1\nmode: monitor\n{rule}interfaces:\n  eth1: {{ mode: enforce, default: pass }}\n"
    ))
    .is_empty());
}

#[test]
fn rules_can_name_the_interfaces_they_apply_on() {
    let text = format!(
        "{HEAD}rules:\n  - {{ name: pods, from: [10.0.0.0/16], protocol: any, interfaces: [eth2, eth1, eth1] }}\n  - {{ name: web, from: [192.0.2.0/24], protocol: tcp, ports: 443, interfaces: eth1 }}\n"
    );
    let loaded = load(&text).expect("valid");
    let rules = &loaded.policy.rules;
    assert_eq!(
        rules[1].interfaces,
        vec!["eth1", "eth2"],
        "sorted, deduplicated"
    );
    assert_eq!(
        rules[2].interfaces,
        vec!["eth1"],
        "a single name stands for a list"
    );
    assert!(
        rules[0].interfaces.is_empty(),
        "the failsafe applies everywhere"
    );
    assert!(rules[1].applies_on(Some("eth2")) && !rules[1].applies_on(Some("eth0")));
    assert!(!rules[1].applies_on(None) && rules[0].applies_on(None));
    let named: Vec<&str> = loaded.policy.named_interfaces().into_iter().collect();
    assert_eq!(named, vec!["eth1", "eth2"]);
}

#[test]
fn rule_interface_errors_point_at_the_entry() {
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: any, interfaces: []"),
        4,
        "[]",
        "rule `a` has an empty `interfaces` list: it would apply nowhere",
        "remove `interfaces`",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: any, interfaces: [eth0, \"a b\"]"),
        4,
        "\"a b\"",
        "`a b` is not a valid interface name",
        "`ip link`",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: any, interface: [eth0]"),
        4,
        "interface:",
        "unknown key `interface`",
        "did you mean `interfaces`?",
    );
}

#[test]
fn more_interface_profiles_than_the_kernel_holds_are_rejected() {
    // Four interfaces with four different rule sets, plus the interfaces no rule names.
    let rules: String = (1..=4)
        .map(|i| {
            format!("  - {{ name: r{i}, from: [10.{i}.0.0/16], protocol: any, interfaces: [eth{i}] }}\n")
        })
        .collect();
    let errs = errors(&format!("{HEAD}rules:\n{rules}"));
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    expect_diag(
        &errs[0],
        3,
        1,
        "5 distinct sets of rules per interface",
        "give interfaces that should behave alike the same lists",
    );
    // Three is fine, and so are interfaces that share one list.
    let shared: String = (1..=6)
        .map(|i| format!("  - {{ name: r{i}, from: [10.{i}.0.0/16], protocol: any, interfaces: [eth1, eth2] }}\n"))
        .collect();
    load(&format!("{HEAD}rules:\n{shared}")).expect("one profile besides the default");
}

#[test]
fn a_rule_on_fewer_interfaces_is_not_shadowed_by_one_on_more_and_vice_versa() {
    let rule = |name: &str, action: &str, on: &str| {
        format!("  - {{ name: {name}, from: [10.0.0.0/8], protocol: any, action: {action}{on} }}\n")
    };
    // `scoped` only exists where `everywhere` does too: shadowed.
    let w = warnings(&format!(
        "{HEAD}rules:\n{}{}",
        rule("everywhere", "deny", ""),
        rule("scoped", "allow", ", interfaces: [eth1]")
    ));
    assert!(
        w.iter().any(|d| d
            .message
            .contains("rule `scoped` is shadowed by `everywhere`")),
        "{}",
        render(&w)
    );
    // A deny on eth1 only leaves the allow deciding elsewhere: no shadow.
    let w = warnings(&format!(
        "{HEAD}rules:\n{}{}",
        rule("deny-eth1", "deny", ", interfaces: [eth1]"),
        rule("allow-all", "allow", "")
    ));
    assert!(
        !w.iter().any(|d| d.message.contains("shadowed")),
        "{}",
        render(&w)
    );
}

#[test]
fn lockout_warning_sees_failsafe_rules_scoped_to_other_interfaces() {
    let text = "version: 1\nfailsafe: [{ name: ssh, from: [203.0.113.0/24], protocol: tcp, ports: [22], interfaces: [eth0] }]\nrules: [{ name: a, from: [192.0.2.0/24], protocol: tcp, ports: [443] }]\n";
    let w = warnings(text);
    assert_eq!(w.len(), 1, "{}", render(&w));
    // Interfaces no rule names get no SSH failsafe.
    assert!(w[0].message.contains("lockout risk"), "{}", w[0]);
    assert!(!w[0].message.contains("on interface"), "{}", w[0]);
}

#[test]
fn the_checked_tables_use_the_callers_rule_slots() {
    // The daemon passes its committed slots and publishes the front end's tables as they are:
    // a rule keeps its slot (and so its counters) across the reload, a new one gets a free
    // slot, a fresh load starts at 1.
    let text = "version: 1\nfailsafe:\n  - { name: ssh, from: [192.0.2.0/24], protocol: tcp, ports: [22] }\n\
                rules:\n  - { name: web, from: [10.0.0.0/8], protocol: tcp, ports: [443] }\n";
    let fresh = load(text).unwrap();
    let committed = crate::compiler::RuleSlots::from_pairs([("web".to_string(), 7)]);
    let reload = parse_str_with(
        "t.yaml",
        text,
        &LoadOptions {
            slots: committed,
            ..opts()
        },
    )
    .unwrap();
    let slot_of = |l: &Loaded, name: &str| {
        l.tables
            .rule_names
            .iter()
            .find(|(_, n)| n == name)
            .map(|(s, _)| *s)
    };
    assert_eq!(slot_of(&reload, "web"), Some(7));
    assert_ne!(slot_of(&reload, "ssh"), Some(7));
    assert!(slot_of(&reload, "ssh").is_some());
    assert_eq!(
        reload.tables.fresh_slots,
        vec![slot_of(&reload, "ssh").unwrap()]
    );
    assert_eq!(fresh.tables.fresh_slots.len(), 2);
    assert_eq!(reload.stats, fresh.stats);
}

// ------------------------------------------------------- adversarial inputs (issue 17)

#[test]
fn deep_nesting_is_refused_instead_of_overflowing_the_stack() {
    // 131,000 levels of `- - - …` (262 KB) once aborted `check` and the daemon.
    let text = format!("version: 1\nrules:\n{}x\n", "- ".repeat(131_000));
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    assert!(
        errs[0].message.contains("nested more than 32 levels"),
        "{}",
        errs[0]
    );
    // Real files are far from the limit.
    let shallow = format!("version: 1\nrules:\n{}x\n", "- ".repeat(10));
    assert!(!errors(&shallow)[0].message.contains("nested"));
}

#[test]
fn numbers_with_a_leading_zero_are_refused_as_the_octal_trap() {
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, ports: [022]"),
        4,
        "022",
        "port `022` has a leading zero",
        "write 22",
    );
    expect_error(
        &with_rule("name: a, from: [10.0.0.0/8], protocol: tcp, ports: [\"1000-02000\"]"),
        4,
        "\"1000",
        "port `02000` has a leading zero",
        "write 2000",
    );
    let errs = errors(&format!("{HEAD}drop_samples_per_sec: 010\n"));
    assert!(
        errs[0].message.contains("`010` has a leading zero"),
        "{}",
        errs[0]
    );
}

#[test]
fn rule_names_with_invisible_characters_are_refused() {
    for name in ["web\u{200B}", "we\u{202E}b", "web\u{2028}x", "\u{FEFF}web"] {
        let errs = errors(&with_rule(&format!(
            "name: \"{name}\", from: [10.0.0.0/8], protocol: tcp, ports: [443]"
        )));
        assert!(
            errs.iter()
                .any(|e| e.message.contains("invisible characters")),
            "{name:?}: {}",
            render(&errs)
        );
    }
}

#[test]
fn sources_that_together_cover_a_family_need_allow_any_source() {
    for from in ["[0.0.0.0/1, 128.0.0.0/1]", "[\"::/1\", \"8000::/1\"]"] {
        let text = with_rule(&format!(
            "name: a, from: {from}, protocol: tcp, ports: [443]"
        ));
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{}", render(&errs));
        assert!(
            errs[0].message.contains("together cover every"),
            "{}",
            errs[0]
        );
        assert!(errs[0]
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("allow_any_source: true"));
        let allowed = text.replace("version: 1\n", "version: 1\nallow_any_source: true\n");
        assert!(load(&allowed).is_ok());
    }
    // Through a set, and three pieces that only together cover everything.
    let text = format!(
        "{HEAD}sets:\n  all: [0.0.0.0/2, 64.0.0.0/2, 128.0.0.0/1]\nrules:\n  - {{ name: a, from: [all], protocol: tcp, ports: [443] }}\n"
    );
    assert!(errors(&text)[0].message.contains("cover every IPv4"));
    // Almost everything is not everything.
    let text = with_rule("name: a, from: [0.0.0.0/1, 128.0.0.0/2], protocol: tcp, ports: [443]");
    assert!(load(&text).is_ok());
}

#[test]
fn many_unused_sets_are_summed_up_not_warned_one_by_one() {
    let sets: String = (0..500)
        .map(|i| format!("  s{i}: [10.{}.{}.0/24]\n", i / 256, i % 256))
        .collect();
    let text = format!(
        "{HEAD}sets:\n{sets}rules:\n  - {{ name: a, from: [192.0.2.0/24], protocol: tcp, ports: [443] }}\n"
    );
    let w: Vec<Diagnostic> = warnings(&text)
        .into_iter()
        .filter(|w| w.message.contains("not used"))
        .collect();
    assert_eq!(w.len(), 21, "20 named, then one sum");
    assert!(
        w[20].message.contains("480 more sets are not used"),
        "{}",
        w[20]
    );
}

#[test]
fn a_ports_list_longer_than_there_are_ports_is_refused() {
    let ports = vec!["80"; 70_000].join(", ");
    let errs = errors(&with_rule(&format!(
        "name: a, from: [10.0.0.0/8], protocol: tcp, ports: [{ports}]"
    )));
    assert!(
        errs[0]
            .message
            .contains("70000 entries, more than the 65536 ports"),
        "{}",
        errs[0]
    );
}
