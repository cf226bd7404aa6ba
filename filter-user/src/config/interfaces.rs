//! Per-interface configuration: the `interfaces:` section (mode and default verdict by
//! interface name) and a rule's own `interfaces` list (the interfaces it applies on).
//!
//! ```yaml
//! interfaces:
//!   eth1: { mode: monitor }    # a NIC being rolled out: count, do not drop yet
//!   ens6: { default: pass }    # an internal NIC: drop only what deny rules name
//! rules:
//!   - { name: pods, from: [10.1.0.0/16], protocol: any, interfaces: [eth1] }
//! ```
//!
//! A rule without `interfaces` applies on every interface. Names are checked the way the
//! kernel checks them (`dev_valid_name`); whether such an interface exists is for
//! `nodegate run` to say, since one file may serve nodes with different NICs.

use std::collections::BTreeMap;

use super::node::{decode_default, decode_mode, fields, list, map_entries, scalar, Cx};
use super::yaml::{Node, Pos};
use crate::policy::InterfaceSettings;

/// Keys of one interface's entry.
pub(super) const INTERFACE_KEYS: &[&str] = &["mode", "default"];

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
const MAX_IFNAME_LEN: usize = 15;

/// One decoded entry: the settings and where the interface was named.
pub(super) struct InterfaceEntry {
    pub(super) pos: Pos,
    pub(super) settings: InterfaceSettings,
    /// Position of the `default` key, for diagnostics about the default.
    pub(super) default_pos: Option<Pos>,
}

/// Decode `interfaces:`; entries with errors are left out.
pub(super) fn decode_interfaces(cx: &mut Cx, node: &Node) -> BTreeMap<String, InterfaceEntry> {
    let mut out = BTreeMap::new();
    let Some(entries) = map_entries(cx, node, "`interfaces`") else {
        return out;
    };
    for (name, pos, value) in entries {
        if !ifname_ok(cx, pos, name) {
            continue;
        }
        let what = format!("`interfaces.{name}`");
        let Some(f) = fields(cx, value, &what, INTERFACE_KEYS) else {
            continue;
        };
        let settings = InterfaceSettings {
            mode: f
                .get("mode")
                .and_then(|n| decode_mode(cx, n, &format!("`interfaces.{name}.mode`"))),
            default: f
                .get("default")
                .and_then(|n| decode_default(cx, n, &format!("`interfaces.{name}.default`"))),
        };
        if f.entries.is_empty() {
            cx.warn(
                pos,
                format!(
                    "interface `{name}` sets nothing: it follows the file's `mode` and `default`"
                ),
                "add `mode:` or `default:` for it, or remove the entry",
            );
        }
        out.insert(
            name.to_owned(),
            InterfaceEntry {
                pos,
                settings,
                default_pos: f.key_pos("default"),
            },
        );
    }
    out
}

/// A rule's `interfaces`: the interfaces it applies on (sorted, deduplicated); `None` when
/// an entry was bad (each is reported).
pub(super) fn decode_rule_interfaces(cx: &mut Cx, node: &Node, rule: &str) -> Option<Vec<String>> {
    let what = format!("`interfaces` of rule `{rule}`");
    let items = list(cx, node, &what)?;
    if items.is_empty() {
        cx.error(
            node.pos,
            format!("rule `{rule}` has an empty `interfaces` list: it would apply nowhere"),
            "list the interfaces it applies on, or remove `interfaces` to apply it on every interface",
        );
        return None;
    }
    let mut names = Vec::new();
    let mut ok = true;
    for item in items {
        let Some((name, _)) = scalar(cx, item, &what, "an interface name") else {
            ok = false;
            continue;
        };
        if !ifname_ok(cx, item.pos, name) {
            ok = false;
            continue;
        }
        names.push(name.to_owned());
    }
    names.sort();
    names.dedup();
    ok.then_some(names)
}

/// Whether `name` is a valid interface name; reports it at `pos` when not.
fn ifname_ok(cx: &mut Cx, pos: Pos, name: &str) -> bool {
    let Err(why) = check_ifname(name) else {
        return true;
    };
    cx.error(
        pos,
        format!("`{name}` is not a valid interface name: {why}"),
        "use the name `ip link` shows (at most 15 characters, no `/`, `:` or spaces)",
    );
    false
}

/// The kernel's `dev_valid_name`: 1..=15 bytes, not `.` or `..`, no `/`, `:` or white space.
fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("it is empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Err("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Err("`.` and `..` are reserved")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        Err("it contains `/`, `:` or white space")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_ifname;

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        for ok in [
            "eth0",
            "ens5",
            "veth-ng0",
            "bond0.100",
            "a",
            "enp0s31f6abcdef",
        ] {
            assert_eq!(check_ifname(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "eth0:1",
            "a/b",
            "eth 0",
            "enp0s31f6abcdefg",
            "tab\t",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
