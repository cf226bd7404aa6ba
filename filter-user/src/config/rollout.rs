//! `rollout:`: changes to this file are confirmed changes (see `nodegate apply`).
//!
//! ```yaml
//! rollout:
//!   confirm_within: 2m                              # the probation window
//!   probes: [tcp:10.0.0.10:443, https://10.0.0.10/readyz, icmp:10.0.0.1]
//!   watch_established: true                         # the default
//! ```
//!
//! A Kubernetes ConfigMap edit reaches every node's daemon as a file change; with this
//! section each node publishes it on probation and flips back on its own when a probe fails
//! (or, without probes, when nobody runs `nodegate confirm` in time).

use std::time::Duration;

use super::node::{boolean, fields, list, scalar, Cx};
use super::yaml::Node;
use crate::{policy::Rollout, probe::ReachProbe};

/// Keys of `rollout:`.
pub(super) const ROLLOUT_KEYS: &[&str] = &["confirm_within", "probes", "watch_established"];

/// The shortest window: a probe run must fit in it.
pub const MIN_WINDOW: Duration = Duration::from_secs(5);
/// The longest window: a day (a change left unconfirmed longer is forgotten, not confirmed).
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Probes per change, at most (each may take [`crate::probe::PROBE_TIMEOUT`] per round).
pub const MAX_PROBES: usize = 16;

/// A window: `90s`, `2m`, `1h`, or a plain number of seconds, from [`MIN_WINDOW`] to
/// [`MAX_WINDOW`].
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "{text:?} is not a duration: write e.g. 90s, 2m or 1h"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 90s, 2m or 1h"))?;
    let window = Duration::from_secs(n.saturating_mul(scale));
    if window < MIN_WINDOW || window > MAX_WINDOW {
        return Err(format!(
            "{text} is out of range: a confirmation window is {}s to {}h",
            MIN_WINDOW.as_secs(),
            MAX_WINDOW.as_secs() / 3600
        ));
    }
    Ok(window)
}

/// Decode `rollout:`; `None` on any error (recorded).
pub(super) fn decode_rollout(cx: &mut Cx, node: &Node) -> Option<Rollout> {
    let f = fields(cx, node, "`rollout`", ROLLOUT_KEYS)?;
    let Some(window_node) = f.get("confirm_within") else {
        cx.error(
            node.pos,
            "`rollout` needs `confirm_within`",
            "add e.g. `confirm_within: 2m`: how long a change stays on probation",
        );
        return None;
    };
    let (text, _) = scalar(cx, window_node, "`rollout.confirm_within`", "a duration")?;
    let confirm_within = match parse_window(text) {
        Ok(d) => d,
        Err(why) => {
            cx.error(
                window_node.pos,
                format!("invalid `rollout.confirm_within`: {why}"),
                "write e.g. 90s, 2m or 1h",
            );
            return None;
        }
    };
    let mut probes = Vec::new();
    let mut ok = true;
    if let Some(n) = f.get("probes") {
        for item in list(cx, n, "`rollout.probes`").unwrap_or_default() {
            let Some((text, _)) = scalar(cx, item, "a probe", "a probe") else {
                ok = false;
                continue;
            };
            match text.parse::<ReachProbe>() {
                Ok(p) if probes.contains(&p) => cx.warn(
                    item.pos,
                    format!("probe {p} is listed twice"),
                    "remove the second one",
                ),
                Ok(p) => probes.push(p),
                Err(e) => {
                    ok = false;
                    cx.error(item.pos, e.to_string(), "fix or remove the probe");
                }
            }
        }
        if probes.len() > MAX_PROBES {
            ok = false;
            cx.error(
                n.pos,
                format!("{} probes; at most {MAX_PROBES}", probes.len()),
                "probe what the node needs: the API server, the gateway, DNS",
            );
        }
    }
    let watch_established = match f.get("watch_established") {
        Some(n) => boolean(cx, n, "`rollout.watch_established`")?,
        None => true,
    };
    ok.then_some(Rollout {
        confirm_within,
        probes,
        watch_established,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str_with, LoadOptions};

    const RULES: &str =
        "version: 1\nrules:\n  - {name: web, from: [192.0.2.0/24], protocol: tcp, ports: [443]}\n";

    fn load(rollout: &str) -> Result<Option<Rollout>, String> {
        parse_str_with(
            "r.yaml",
            &format!("{RULES}rollout:\n{rollout}"),
            &LoadOptions::fixed_ephemeral(32768..=60999),
        )
        .map(|l| l.policy.rollout)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn windows_parse_with_units_and_bounds() {
        assert_eq!(parse_window("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_window("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_window("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_window("30"), Ok(Duration::from_secs(30)));
        for bad in ["2", "25h", "2 m", "m", "-5s", "1d", "99999999999999999999h"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rollout_decodes_and_rejects_with_positions() {
        let r = load("  confirm_within: 2m\n  probes: [tcp:10.0.0.10:443, icmp:10.0.0.1]\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.confirm_within, Duration::from_secs(120));
        assert_eq!(r.probes.len(), 2);
        assert!(r.watch_established, "on by default");
        let off = load("  confirm_within: 5m\n  watch_established: false\n")
            .unwrap()
            .unwrap();
        assert!(!off.watch_established && off.probes.is_empty());
        assert_eq!(
            parse_str_with(
                "r.yaml",
                RULES,
                &LoadOptions::fixed_ephemeral(32768..=60999)
            )
            .unwrap()
            .policy
            .rollout,
            None
        );
        for (bad, says) in [
            ("  probes: [tcp:10.0.0.10:443]\n", "needs `confirm_within`"),
            ("  confirm_within: 1s\n", "out of range"),
            (
                "  confirm_within: 2m\n  probes: [udp:10.0.0.1:53]\n",
                "r.yaml:6:12",
            ),
            (
                "  confirm_within: 2m\n  probe: []\n",
                "did you mean `probes`",
            ),
            (
                "  confirm_within: 2m\n  watch_established: yes\n",
                "YAML 1.1",
            ),
        ] {
            let err = load(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
