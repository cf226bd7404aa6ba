//! The file's values: port and ICMP type lists, CIDRs and set names, each decoded from its
//! node with the same error reporting as the rest of the front end.

use std::{net::IpAddr, ops::RangeInclusive};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::node::{list, Cx};
use super::yaml::{Node, NodeKind};

/// Characters that print as nothing or reorder what follows (Unicode format characters and
/// line/paragraph separators): `web` and `web` + U+200B would be two rules that look alike.
pub(super) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Most entries a `ports` or `types` list may have: one per port.
pub(super) const MAX_KEY_ITEMS: usize = 65536;

// Ports, types and CIDRs

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    Port,
    IcmpType,
}

impl KeyKind {
    pub(super) fn min(self) -> u32 {
        match self {
            KeyKind::Port => 1,
            KeyKind::IcmpType => 0,
        }
    }

    pub(super) fn max(self) -> u32 {
        match self {
            KeyKind::Port => 65535,
            KeyKind::IcmpType => 255,
        }
    }

    pub(super) fn noun(self) -> &'static str {
        match self {
            KeyKind::Port => "port",
            KeyKind::IcmpType => "ICMP type",
        }
    }

    pub(super) fn range_hint(self) -> &'static str {
        match self {
            KeyKind::Port => "ports are 1-65535",
            KeyKind::IcmpType => "ICMP types are 0-255",
        }
    }
}

/// A number `443` or a range `"1025-65535"` (a quoted number is fine too).
pub(super) fn key_item(cx: &mut Cx, node: &Node, kind: KeyKind) -> Option<RangeInclusive<u16>> {
    let noun = kind.noun();
    let example = match kind {
        KeyKind::Port => "write a port as 443 or a range as \"1025-65535\"",
        KeyKind::IcmpType => "write a type as 8 or a range as \"0-8\"",
    };
    let NodeKind::Scalar { value: text, .. } = &node.kind else {
        cx.error(
            node.pos,
            format!("expected a {noun} or range, found {}", node.describe()),
            example,
        );
        return None;
    };
    let text = text.as_str();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((a, b)) = text.split_once(':') {
        // YAML 1.1 reads an unquoted 10:30 as the base-60 number 630; we never do.
        let hint = if digits(a.trim()) && digits(b.trim()) {
            format!("write a range as \"{}-{}\"", a.trim(), b.trim())
        } else {
            "write a range as \"10-30\"".to_string()
        };
        cx.error(
            node.pos,
            format!("`{text}` is not a {noun} or {noun} range"),
            hint,
        );
        return None;
    }
    let (lo, hi, is_range) = match text.split_once('-') {
        Some((a, b)) if digits(a.trim()) && digits(b.trim()) => (a.trim(), b.trim(), true),
        None if digits(text) => (text, text, false),
        _ => {
            cx.error(
                node.pos,
                format!("`{text}` is not a {noun} number or range"),
                example,
            );
            return None;
        }
    };
    // YAML 1.1 readers take an unquoted `022` as octal 18: never guess which was meant.
    if let Some(zeroed) = [lo, hi]
        .into_iter()
        .find(|s| s.len() > 1 && s.starts_with('0'))
    {
        cx.error(
            node.pos,
            format!("{noun} `{zeroed}` has a leading zero"),
            format!(
                "write {} (some YAML readers take `{zeroed}` as an octal number)",
                match zeroed.trim_start_matches('0') {
                    "" => "0",
                    digits => digits,
                }
            ),
        );
        return None;
    }
    let parse = |s: &str| s.parse::<u32>().unwrap_or(u32::MAX);
    let (a, b) = (parse(lo), parse(hi));
    let shown = |v: u32| {
        if v == u32::MAX {
            "a huge number".to_string()
        } else {
            v.to_string()
        }
    };
    for v in [a, b] {
        if v > kind.max() {
            cx.error(
                node.pos,
                format!("{noun} {} is out of range", shown(v)),
                kind.range_hint(),
            );
            return None;
        }
    }
    if is_range && a > b {
        cx.error(
            node.pos,
            format!("{noun} range {a}-{b} is inverted"),
            format!("write the lower {noun} first: \"{b}-{a}\""),
        );
        return None;
    }
    if a < kind.min() {
        if is_range {
            cx.error(
                node.pos,
                format!("{noun} range {a}-{b} includes port 0"),
                format!("start the range at 1: \"1-{b}\"; port 0 is not a valid destination port"),
            );
        } else {
            cx.error(
                node.pos,
                "port 0 is not a valid destination port",
                kind.range_hint(),
            );
        }
        return None;
    }
    Some(a as u16..=b as u16)
}

pub(super) fn key_list(
    cx: &mut Cx,
    node: &Node,
    kind: KeyKind,
    what: &str,
) -> Option<Vec<RangeInclusive<u16>>> {
    let items = list(cx, node, what)?;
    if items.is_empty() {
        cx.error(
            node.pos,
            format!("empty {what} list"),
            format!("leave {what} out to cover every {}", kind.noun()),
        );
        return None;
    }
    // There are only so many ports: a longer list repeats itself (a 52 MB one took 11 s
    // and 3.5 GB to accept).
    if items.len() > MAX_KEY_ITEMS {
        cx.error(
            node.pos,
            format!(
                "{what} lists {} entries, more than the {MAX_KEY_ITEMS} {}s there are",
                items.len(),
                kind.noun()
            ),
            format!(
                "write ranges (\"1025-65535\") instead of every {}",
                kind.noun()
            ),
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        match key_item(cx, item, kind) {
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    ok.then(|| merge_ranges(out))
}

/// Sort and merge overlapping or adjacent ranges.
pub(super) fn merge_ranges(mut v: Vec<RangeInclusive<u16>>) -> Vec<RangeInclusive<u16>> {
    v.sort_by_key(|r| (*r.start(), *r.end()));
    let mut out: Vec<RangeInclusive<u16>> = Vec::new();
    for r in v {
        if let Some(last) = out.last_mut() {
            if u32::from(*r.start()) <= u32::from(*last.end()) + 1 {
                if r.end() > last.end() {
                    *last = *last.start()..=*r.end();
                }
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// Whether a `from` item names a set: a letter, then letters, digits, `-`, `_`.
pub(super) fn is_set_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

/// Parse a CIDR or a bare address. Errors are (message, hint).
pub(super) fn parse_cidr(s: &str) -> Result<IpNet, (String, String)> {
    let (addr_s, len_s) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr_s.parse().map_err(|_| {
        let hint = if addr_s.contains('%') {
            "zone indices (`%eth0`) are not allowed in CIDRs".to_string()
        } else if addr_s.split('.').count() == 4
            && addr_s.split('.').any(|o| o.len() > 1 && o.starts_with('0'))
        {
            "remove the leading zeros: some tools read them as octal".to_string()
        } else {
            "write an IPv4 CIDR like 10.0.0.0/24, an IPv6 CIDR like 2001:db8::/64, a bare \
             address, or the name of a set"
                .to_string()
        };
        (format!("`{s}` is not a valid IP address or CIDR"), hint)
    })?;
    let (max, family) = if addr.is_ipv4() {
        (32, "IPv4")
    } else {
        (128, "IPv6")
    };
    let len = match len_s {
        None => max,
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            l.parse::<u32>().expect("1-3 digits")
        }
        Some(l) => {
            return Err((
                format!("`/{l}` is not a prefix length"),
                format!("{family} prefix lengths are 0-{max}"),
            ))
        }
    };
    if len > max {
        return Err((
            format!("prefix length /{len} is too long for {family}"),
            format!("{family} prefix lengths are 0-{max}"),
        ));
    }
    let net = IpNet::new(addr, len as u8).expect("length checked");
    if net.trunc() != net {
        return Err((
            format!("{s} has host bits set"),
            format!(
                "did you mean {}? (for the single host write {}/{})",
                net.trunc(),
                addr,
                max
            ),
        ));
    }
    Ok(net)
}

/// The `::ffff:0:0/96` block of IPv4-mapped IPv6 addresses.
pub(super) fn ipv4_mapped_block() -> Ipv6Net {
    Ipv6Net::new("::ffff:0.0.0.0".parse().expect("literal"), 96).expect("literal")
}

/// Parse a CIDR node and apply the checks every CIDR gets (mapped, any-source).
pub(super) fn cidr_node(
    cx: &mut Cx,
    node: &Node,
    text: &str,
    allow_any_source: bool,
) -> Option<IpNet> {
    let net = match parse_cidr(text) {
        Ok(n) => n,
        Err((msg, hint)) => {
            cx.error(node.pos, msg, hint);
            return None;
        }
    };
    if let IpNet::V6(n) = net {
        if ipv4_mapped_block().contains(&n) {
            let v4 = n.addr().to_ipv4_mapped().expect("inside ::ffff:0:0/96");
            let v4net = Ipv4Net::new(v4, n.prefix_len() - 96).expect("length ≤ 32");
            cx.error(
                node.pos,
                format!("{text} is an IPv4-mapped IPv6 prefix"),
                format!(
                    "write the IPv4 CIDR {v4net} instead; IPv4-mapped IPv6 sources never match \
                     IPv4 rules"
                ),
            );
            return None;
        }
    }
    if net.prefix_len() == 0 && !allow_any_source {
        let family = if net.addr().is_ipv4() { "IPv4" } else { "IPv6" };
        cx.error(
            node.pos,
            format!("{text} matches every {family} source"),
            "list the real source ranges, or set `allow_any_source: true` at the top level to \
             acknowledge",
        );
        return None;
    }
    Some(net)
}
