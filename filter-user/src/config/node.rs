//! Decoding primitives over the YAML node tree: the issue sink every check reports to, and
//! typed readers (mappings with known keys, scalars, words, booleans, integers, lists) that
//! record an [`Issue`] at the node they are about and return `None`, so one run reports
//! every error of the file. A leaf: it knows nothing of rules or sets.

use foldhash::{HashMap, HashMapExt};

use super::yaml::{Node, NodeKind, Pos};
use super::{Issue, Severity};
use crate::policy::{DefaultAction, Mode};

/// Issue sink.
pub(super) struct Cx<'a> {
    pub(super) issues: &'a mut Vec<Issue>,
}

impl Cx<'_> {
    pub(super) fn error(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.issues.push(Issue::error(pos, message, Some(hint)));
    }

    pub(super) fn warn(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.issues.push(Issue::warning(pos, message, Some(hint)));
    }

    pub(super) fn has_errors(&self) -> bool {
        self.issues.iter().any(|i| i.severity == Severity::Error)
    }
}

/// The entries of a mapping whose keys are checked against `allowed`.
pub(super) struct Fields<'n> {
    pub(super) entries: Vec<(&'n str, Pos, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub(super) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|e| e.0 == key).map(|e| e.2)
    }

    pub(super) fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries.iter().find(|e| e.0 == key).map(|e| e.1)
    }
}

/// Keys of a mapping: scalar, unique. Returns (key, key position, value) in order.
pub(super) fn map_entries<'n>(
    cx: &mut Cx,
    node: &'n Node,
    what: &str,
) -> Option<Vec<(&'n str, Pos, &'n Node)>> {
    let NodeKind::Map(entries) = &node.kind else {
        cx.error(
            node.pos,
            format!("expected a mapping for {what}, found {}", node.describe()),
            "write `key: value` pairs, one per line, or `{ key: value, ... }`",
        );
        return None;
    };
    let mut out: Vec<(&'n str, Pos, &'n Node)> = Vec::with_capacity(entries.len());
    // Where each key was first set: a hash lookup, since a mapping may have 100k keys.
    let mut first_at: HashMap<&'n str, Pos> = HashMap::with_capacity(entries.len());
    for (k, v) in entries {
        let NodeKind::Scalar { value: key, .. } = &k.kind else {
            cx.error(
                k.pos,
                format!("keys in {what} must be plain words, found {}", k.describe()),
                "remove the nested structure in front of the `:`",
            );
            continue;
        };
        if let Some(first) = first_at.get(key.as_str()) {
            cx.error(
                k.pos,
                format!("duplicate key `{key}` in {what}"),
                format!("`{key}` is already set at line {first}; remove one of them"),
            );
            continue;
        }
        first_at.insert(key.as_str(), k.pos);
        out.push((key.as_str(), k.pos, v));
    }
    Some(out)
}

pub(super) fn fields<'n>(
    cx: &mut Cx,
    node: &'n Node,
    what: &str,
    allowed: &[&str],
) -> Option<Fields<'n>> {
    let entries = map_entries(cx, node, what)?;
    let mut kept = Vec::new();
    for (key, pos, value) in entries {
        if allowed.contains(&key) {
            kept.push((key, pos, value));
        } else {
            let hint = match suggest(key, allowed.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected one of: {}", allowed.join(", ")),
            };
            cx.error(pos, format!("unknown key `{key}` in {what}"), hint);
        }
    }
    Some(Fields { entries: kept })
}

/// The closest candidate: a prefix match, or within edit distance 2.
pub(super) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            // `enforcing` for `enforce`, `neighbor` for `neighbor_discovery`.
            let common = word
                .chars()
                .zip(c.chars())
                .take_while(|(a, b)| a == b)
                .count();
            let prefix = common >= 4 && common + 1 >= c.len().min(word.len());
            (
                if prefix {
                    0
                } else {
                    strsim::levenshtein(word, c)
                },
                c,
            )
        })
        .filter(|&(d, c)| d <= 2 && d < c.len().max(word.len()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// A non-null scalar: (text, plain).
pub(super) fn scalar<'n>(
    cx: &mut Cx,
    node: &'n Node,
    what: &str,
    expected: &str,
) -> Option<(&'n str, bool)> {
    match &node.kind {
        NodeKind::Scalar { value, plain } if !node.is_null() => Some((value.as_str(), *plain)),
        _ => {
            cx.error(
                node.pos,
                format!("expected {expected} for {what}, found {}", node.describe()),
                format!("write {what} as {expected}"),
            );
            None
        }
    }
}

/// One of a fixed set of words (plain or quoted).
pub(super) fn word<T: Copy>(
    cx: &mut Cx,
    node: &Node,
    what: &str,
    choices: &[(&str, T)],
) -> Option<T> {
    let names: Vec<String> = choices.iter().map(|c| format!("`{}`", c.0)).collect();
    let expected = names.join(" or ");
    let (text, _) = scalar(cx, node, what, &expected)?;
    if let Some((_, v)) = choices.iter().find(|c| c.0 == text) {
        return Some(*v);
    }
    let hint = match suggest(&text.to_ascii_lowercase(), choices.iter().map(|c| c.0)) {
        Some(s) => format!("did you mean `{s}`? expected {expected}"),
        None => format!("expected {expected}"),
    };
    cx.error(node.pos, format!("invalid {what} `{text}`"), hint);
    None
}

/// `enforce` or `monitor`.
pub(super) fn decode_mode(cx: &mut Cx, node: &Node, what: &str) -> Option<Mode> {
    word(
        cx,
        node,
        what,
        &[("enforce", Mode::Enforce), ("monitor", Mode::Monitor)],
    )
}

/// `drop` or `pass`.
pub(super) fn decode_default(cx: &mut Cx, node: &Node, what: &str) -> Option<DefaultAction> {
    word(
        cx,
        node,
        what,
        &[("drop", DefaultAction::Drop), ("pass", DefaultAction::Pass)],
    )
}

/// `true` or `false`, plain. YAML 1.1 spellings (yes/no/on/off) are rejected.
pub(super) fn boolean(cx: &mut Cx, node: &Node, what: &str) -> Option<bool> {
    let (text, plain) = scalar(cx, node, what, "`true` or `false`")?;
    match (text, plain) {
        ("true", true) => Some(true),
        ("false", true) => Some(false),
        (_, false) => {
            cx.error(
                node.pos,
                format!(
                    "expected `true` or `false` for {what}, found the quoted string \"{text}\""
                ),
                "remove the quotes",
            );
            None
        }
        _ => {
            cx.error(
                node.pos,
                format!("expected `true` or `false` for {what}, found `{text}`"),
                "write `true` or `false` (YAML 1.1 words like yes/no/on/off are not booleans here)",
            );
            None
        }
    }
}

/// A plain decimal integer in `0..=max`.
pub(super) fn integer(cx: &mut Cx, node: &Node, what: &str, max: u64) -> Option<u64> {
    let (text, plain) = scalar(cx, node, what, "a number")?;
    if plain && text.len() > 1 && text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit())
    {
        cx.error(
            node.pos,
            format!("{what} `{text}` has a leading zero"),
            "write the number without it (some YAML readers take it as octal)",
        );
        return None;
    }
    if !plain || text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        cx.error(
            node.pos,
            format!("expected a number for {what}, found `{text}`"),
            format!("write a plain decimal number from 0 to {max}"),
        );
        return None;
    }
    match text.parse::<u64>() {
        Ok(v) if v <= max => Some(v),
        _ => {
            cx.error(
                node.pos,
                format!("{what} {text} is out of range"),
                format!("{what} is a number from 0 to {max}"),
            );
            None
        }
    }
}

/// A list, or a single scalar standing for a one-element list.
pub(super) fn list<'n>(cx: &mut Cx, node: &'n Node, what: &str) -> Option<Vec<&'n Node>> {
    match &node.kind {
        NodeKind::Seq(items) => Some(items.iter().collect()),
        NodeKind::Scalar { .. } if !node.is_null() => Some(vec![node]),
        _ => {
            cx.error(
                node.pos,
                format!("expected a list for {what}, found {}", node.describe()),
                format!("write {what} as `[a, b]` or as `- ` lines"),
            );
            None
        }
    }
}
