//! A small YAML node tree built from `saphyr-parser` events.
//!
//! Why not a generic YAML value type: we need what those throw away. Mapping entries keep
//! their order and their duplicates (so a duplicate key is an error with both positions),
//! scalars keep their style (plain or quoted, so `10:30` can be told apart from a number and
//! `"true"` from a boolean) and every node keeps the position where it starts.
//!
//! Anchors, aliases and tags are rejected: a firewall config has no use for them, and an
//! alias that silently repeats a CIDR list elsewhere is a confusion vector. Named `sets:` are
//! the supported way to reuse a list.

use saphyr_parser::{Event, Marker, Parser, ScalarStyle};

use super::{yaml_lists, Issue};

/// A position in the source: 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One node of the document.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub kind: NodeKind,
}

/// The three YAML node kinds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum NodeKind {
    /// A scalar with its text and whether it was written plain (unquoted, not a block).
    Scalar { value: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, entries in source order, duplicates kept.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The kind of node in words, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { plain: true, value } if is_null(value) => "nothing (null)",
            NodeKind::Scalar { plain: true, .. } => "a plain scalar",
            NodeKind::Scalar { plain: false, .. } => "a quoted string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// Whether this is a plain `~`, `null` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true } if is_null(value))
    }
}

fn is_null(v: &str) -> bool {
    matches!(v, "" | "~" | "null" | "Null" | "NULL")
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

/// Deepest nesting of sequences and mappings accepted. A rule file needs five levels (the
/// file, `rules`, a rule, its `from`); a deeper one is not a rule file, and a node tree
/// 100,000 levels deep (262 KB of `- - - …`) would overflow the stack when dropped.
pub(crate) const MAX_NESTING: usize = 32;

/// Parse one YAML document into a node tree. `Ok(None)` for an empty document (no content).
/// A syntax error ends parsing (the parser cannot resynchronise), so at most one issue comes
/// back for it; anchors, aliases and tags are reported and parsing goes on.
pub(crate) fn parse(text: &str, issues: &mut Vec<Issue>) -> Option<Node> {
    yaml_lists::parse(text, yaml_lists::MIN_RUN, parse_clean).or_else(|| parse_events(text, issues))
}

/// The tree of `text` if the parser reports no issue at all (else the caller parses again
/// to report them).
pub(super) fn parse_clean(text: &str) -> Option<Node> {
    let mut issues = Vec::new();
    parse_events(text, &mut issues).filter(|_| issues.is_empty())
}

/// Parse `text` with the YAML parser, event by event.
pub(super) fn parse_events(text: &str, issues: &mut Vec<Issue>) -> Option<Node> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(err)) => {
                let pos = Pos::from_marker(err.marker());
                issues.push(Issue::error(
                    pos,
                    format!("YAML syntax error: {}", err.info()),
                    Some(syntax_hint(err.info())),
                ));
                return None;
            }
        };
        let pos = Pos::from_marker(&span.start);
        let node = match event {
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => continue,
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    issues.push(Issue::error(
                        pos,
                        "more than one YAML document in the file",
                        Some("a config file holds exactly one document; remove the extra `---`"),
                    ));
                    return None;
                }
                continue;
            }
            Event::Alias(_) => {
                issues.push(Issue::error(
                    pos,
                    "YAML aliases (`*name`) are not supported",
                    Some(ALIAS_HINT),
                ));
                Node {
                    pos,
                    kind: NodeKind::Scalar {
                        value: String::new(),
                        plain: true,
                    },
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                check_anchor_tag(pos, anchor, tag.is_some(), issues);
                Node {
                    pos,
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() == MAX_NESTING => {
                issues.push(Issue::error(
                    pos,
                    format!("lists and mappings nested more than {MAX_NESTING} levels deep"),
                    Some("a rule file nests at most five levels (file, `rules`, a rule, its `from`); check the indentation and the `-` markers"),
                ));
                return None;
            }
            Event::SequenceStart(anchor, tag) => {
                check_anchor_tag(pos, anchor, tag.is_some(), issues);
                stack.push(Frame::Seq(pos, Vec::new()));
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                check_anchor_tag(pos, anchor, tag.is_some(), issues);
                stack.push(Frame::Map(pos, Vec::new(), None));
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(p, items)) => Node {
                    pos: p,
                    kind: NodeKind::Seq(items),
                },
                _ => unreachable!("the parser balances sequence events"),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(p, entries, _)) => Node {
                    pos: p,
                    kind: NodeKind::Map(entries),
                },
                _ => unreachable!("the parser balances mapping events"),
            },
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
    root
}

const ALIAS_HINT: &str =
    "write the values out, or put shared CIDRs in a named set under `sets:` and refer to it by name";

fn check_anchor_tag(pos: Pos, anchor: usize, tagged: bool, issues: &mut Vec<Issue>) {
    if anchor != 0 {
        issues.push(Issue::error(
            pos,
            "YAML anchors (`&name`) are not supported",
            Some(ALIAS_HINT),
        ));
    }
    if tagged {
        issues.push(Issue::error(
            pos,
            "YAML tags (`!tag`) are not supported",
            Some("remove the tag; every value's type follows from its key"),
        ));
    }
}

fn syntax_hint(info: &str) -> &'static str {
    if info.contains("tab") {
        "YAML indentation must use spaces, not tabs"
    } else if info.contains("mapping values are not allowed") {
        "a `:` followed by a space starts a mapping value; quote the scalar if it contains `: `"
    } else if info.contains("did not find expected") || info.contains("end of") {
        "check that brackets and quotes are closed and that indentation is consistent"
    } else {
        "fix the YAML syntax at this position; quote values that contain `:`, `#`, `[` or `{`"
    }
}
