//! Long lists of addresses without the YAML scanner.
//!
//! A rule file of 110k prefixes is almost all lines like `    - "10.1.2.0/24"`, and
//! `saphyr-parser` spends ~40 ms on them: half of the time from the file's change to the
//! flip. Such a line is a sequence item whatever surrounds it, as long as the line before it
//! is one of the same list: it holds one scalar of address characters, which can be neither
//! a key, nor a continuation, nor the start of anything that spans lines. So the parser
//! sees the file with every long run of such lines cut down to its first and last line, and
//! the lines in between are read here and spliced back between those two items.
//!
//! Nothing here decides what the YAML means: the run's first and last lines must come back
//! from the parser as adjacent scalar items of one list, with the values and positions read
//! here, or this path gives up and the whole file goes through the parser (which also
//! reports every syntax error with its true position). The middle lines then sit in the
//! same parser state as the last line did, one after the other. A proptest
//! (`config::yaml_lists::tests::long_lists_parse_like_the_yaml_parser`) compares both paths on
//! generated files full of the YAML that could break the argument: block scalars, multi-line
//! quoted and flow values, plain scalars ending in `:`, comments, indentless lists.

use std::ops::Range;

use super::yaml::{Node, NodeKind, Pos};

/// Runs shorter than this are left to the parser: cutting them saves nothing.
pub(super) const MIN_RUN: usize = 64;

/// One line of the shape `<indent>- <scalar>[ #comment]`, the scalar made of address
/// characters only.
#[derive(Clone, Debug)]
struct Item {
    /// Leading spaces.
    indent: usize,
    /// Byte range of the scalar's text, quotes excluded.
    value: Range<usize>,
    /// 1-based column where the parser reports the scalar (its opening quote if quoted).
    column: usize,
    plain: bool,
}

/// A run of consecutive item lines with one indent; lines are 1-based.
struct Run {
    /// First line in the original text.
    first: usize,
    /// The item lines, first to last.
    items: Vec<Item>,
    /// The first line's number in the cut text.
    cut_first: usize,
    /// Lines removed by this run and every run before it.
    removed_through: usize,
}

impl Run {
    /// Lines left out of the cut text (all but the first and the last).
    fn removed(&self) -> usize {
        self.items.len() - 2
    }
}

/// The node tree of `text` with its long lists read here, or `None` when this path does
/// not apply or cannot prove its answer (the caller then parses the whole text).
/// `parse_cut` parses the cut text and returns `None` if it reported any issue.
pub(super) fn parse(
    text: &str,
    min_run: usize,
    parse_cut: impl FnOnce(&str) -> Option<Node>,
) -> Option<Node> {
    // CR line ends: let the parser handle them rather than a second line splitter here.
    if text.contains('\r') {
        return None;
    }
    let runs = find_runs(text, min_run.max(3));
    if runs.is_empty() {
        return None;
    }
    let (cut, runs) = cut_text(text, runs);
    let mut root = parse_cut(&cut)?;
    let mut spliced = 0;
    splice(&mut root, text, &runs, &mut spliced);
    // Every run must have been found as two adjacent items of one list, else some line of
    // it meant something else to the parser.
    (spliced == runs.len()).then_some(root)
}

/// The item on this line, if it has the shape.
fn item(line: &str, start: usize) -> Option<Item> {
    let bytes = line.as_bytes();
    let indent = bytes.iter().take_while(|&&b| b == b' ').count();
    let rest = &bytes[indent..];
    if rest.len() < 3 || rest[0] != b'-' || rest[1] != b' ' {
        return None;
    }
    let after_dash = indent + 1 + rest[1..].iter().take_while(|&&b| b == b' ').count();
    let (value, plain, end) = match bytes.get(after_dash)? {
        &q @ (b'"' | b'\'') => {
            let len = bytes[after_dash + 1..]
                .iter()
                .take_while(|&&b| is_address_char(b))
                .count();
            let close = after_dash + 1 + len;
            if len == 0 || bytes.get(close) != Some(&q) {
                return None;
            }
            (after_dash + 1..close, false, close + 1)
        }
        // A plain scalar starting with `:` or `.` or `/` is left to the parser, and one
        // ending in `:` would be a mapping key.
        b if b.is_ascii_hexdigit() => {
            let len = bytes[after_dash..]
                .iter()
                .take_while(|&&b| is_address_char(b))
                .count();
            let end = after_dash + len;
            if bytes[end - 1] == b':' {
                return None;
            }
            (after_dash..end, true, end)
        }
        _ => return None,
    };
    // After the scalar: spaces, then nothing or a comment (which needs a space before `#`).
    let tail = &bytes[end..];
    let spaces = tail.iter().take_while(|&&b| b == b' ').count();
    match tail.get(spaces) {
        None => {}
        Some(b'#') if spaces > 0 => {}
        Some(_) => return None,
    }
    Some(Item {
        indent,
        value: start + value.start..start + value.end,
        column: after_dash + 1,
        plain,
    })
}

/// Characters of IPv4 and IPv6 addresses and prefixes: none of them is a YAML indicator
/// inside a scalar, nor needs escaping in quotes.
fn is_address_char(b: u8) -> bool {
    b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'/')
}

/// Maximal runs of at least `min_run` item lines with one indent.
fn find_runs(text: &str, min_run: usize) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut current: Option<Run> = None;
    let mut start = 0;
    for (index, line) in text.split('\n').enumerate() {
        let found = item(line, start);
        start += line.len() + 1;
        match (&mut current, found) {
            (Some(run), Some(it)) if run.items[0].indent == it.indent => run.items.push(it),
            (_, found) => {
                if let Some(run) = current.take() {
                    if run.items.len() >= min_run {
                        runs.push(run);
                    }
                }
                current = found.map(|it| Run {
                    first: index + 1,
                    items: vec![it],
                    cut_first: 0,
                    removed_through: 0,
                });
            }
        }
    }
    if let Some(run) = current.filter(|r| r.items.len() >= min_run) {
        runs.push(run);
    }
    runs
}

/// The text without each run's middle lines, and the runs with their line in it.
fn cut_text(text: &str, mut runs: Vec<Run>) -> (String, Vec<Run>) {
    let mut cut = String::with_capacity(text.len() / 4);
    let mut removed_before = 0;
    let mut lines = text.split_inclusive('\n').enumerate();
    for run in &mut runs {
        run.cut_first = run.first - removed_before;
        let last = run.first + run.items.len() - 1;
        for (index, line) in lines.by_ref() {
            let number = index + 1;
            if number <= run.first || number == last {
                cut.push_str(line);
            }
            if number == last {
                break;
            }
        }
        removed_before += run.removed();
        run.removed_through = removed_before;
    }
    for (_, line) in lines {
        cut.push_str(line);
    }
    (cut, runs)
}

/// Put every run's middle items back and give every node its line in the original text.
fn splice(node: &mut Node, text: &str, runs: &[Run], spliced: &mut usize) {
    node.pos.line = original_line(node.pos.line, runs);
    match &mut node.kind {
        NodeKind::Scalar { .. } => {}
        NodeKind::Map(entries) => {
            for (key, value) in entries {
                splice(key, text, runs, spliced);
                splice(value, text, runs, spliced);
            }
        }
        NodeKind::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut pending = std::mem::take(items).into_iter().peekable();
            while let Some(mut child) = pending.next() {
                let run = runs
                    .binary_search_by_key(&child.pos.line, |r| r.cut_first)
                    .ok()
                    .map(|i| &runs[i])
                    .filter(|run| {
                        pending.peek().is_some_and(|next| {
                            is_item(&child, run.cut_first, &run.items[0], text)
                                && is_item(
                                    next,
                                    run.cut_first + 1,
                                    &run.items[run.items.len() - 1],
                                    text,
                                )
                        })
                    });
                splice(&mut child, text, runs, spliced);
                out.push(child);
                if let Some(run) = run {
                    *spliced += 1;
                    let middle = &run.items[1..run.items.len() - 1];
                    out.extend(middle.iter().enumerate().map(|(i, it)| Node {
                        pos: Pos {
                            line: run.first + 1 + i,
                            column: it.column,
                        },
                        kind: NodeKind::Scalar {
                            value: text[it.value.clone()].to_string(),
                            plain: it.plain,
                        },
                    }));
                }
            }
            *items = out;
        }
    }
}

/// Whether `node` (positions still those of the cut text) is the scalar `item` read at
/// `line` of the cut text.
fn is_item(node: &Node, line: usize, item: &Item, text: &str) -> bool {
    node.pos
        == Pos {
            line,
            column: item.column,
        }
        && matches!(&node.kind, NodeKind::Scalar { value, plain }
            if *plain == item.plain && value == &text[item.value.clone()])
}

/// A line of the cut text → its line in the original text.
fn original_line(cut_line: usize, runs: &[Run]) -> usize {
    // Lines after a run's first line (its last line included) moved up by its removed lines.
    match runs.partition_point(|r| r.cut_first < cut_line) {
        0 => cut_line,
        before => cut_line + runs[before - 1].removed_through,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::yaml::{parse_clean, parse_events};
    use super::*;

    /// The fast path with runs as short as `min_run`, or `None`.
    fn fast(text: &str, min_run: usize) -> Option<Node> {
        parse(text, min_run, parse_clean)
    }

    fn full(text: &str) -> (Option<Node>, usize) {
        let mut issues = Vec::new();
        let root = parse_events(text, &mut issues);
        (root, issues.len())
    }

    /// A rule file shaped like the bench's and the cloud imports': long lists, quoted and
    /// plain, comments, two sets and a rule after them.
    fn big_file() -> String {
        let mut y = String::from("version: 1\n# the office\nsets:\n  a:\n");
        for i in 0..300u32 {
            y.push_str(&format!("    - \"10.{}.{}.0/24\"\n", i / 256, i % 256));
        }
        y.push_str("  b:\n  - 192.0.2.1\n");
        for i in 0..200u32 {
            let comment = if i % 7 == 0 { "   # a host" } else { "" };
            y.push_str(&format!("  -   2001:db8::{i:x}/128{comment}\n"));
        }
        y.push_str("  - '198.51.100.0/24'\nrules:\n  - name: r\n    from: [a, b]\n    protocol: tcp\n    ports: [443]\n");
        y
    }

    #[test]
    fn long_lists_are_read_here_and_give_the_parsers_tree() {
        let text = big_file();
        let got = fast(&text, MIN_RUN).expect("the fast path applies to long address lists");
        let (want, issues) = full(&text);
        assert_eq!(issues, 0);
        assert_eq!(Some(got), want);
        // And through the front end's entry point, which takes this path.
        let mut issues = Vec::new();
        assert_eq!(super::super::yaml::parse(&text, &mut issues), want);
        assert!(issues.is_empty());
    }

    #[test]
    fn lines_that_only_look_like_items_send_the_file_to_the_parser() {
        let items: String = (0..100).map(|i| format!("  - 10.0.0.{i}\n")).collect();
        for text in [
            // Inside a block scalar, a multi-line quoted scalar, a flow list.
            format!("k: |\n{items}"),
            format!("k: \"x\n{items}  y\"\n"),
            format!("k: [\n{items}]\n"),
            // The list continues a plain scalar of the line before it.
            format!("k: a\n{items}"),
        ] {
            assert_eq!(fast(&text, MIN_RUN), None, "{text:.40}");
        }
        // A syntax error before the list keeps its true line through the fallback.
        let text = format!("a: [\nb: 1\n{items}");
        let mut issues = Vec::new();
        assert_eq!(super::super::yaml::parse(&text, &mut issues), None);
        assert_eq!(issues.len(), 1);
        let (_, full_issues) = full(&text);
        assert_eq!(full_issues, 1);
    }

    /// An item line at `indent`: an address or a value that only looks like one (a key
    /// ending in `:`, a mapping entry), plain or quoted, maybe with a comment; or a comment
    /// or blank line between items.
    fn item(indent: usize) -> impl Strategy<Value = String> {
        let value = prop::sample::select(vec![
            "10.0.0.0/8",
            "2001:db8::/32",
            "1.2",
            "ab:cd",
            "fe80::1:",
            "::1",
            "0a",
            "10.0.0.1: x",
        ]);
        let style = prop::sample::select(vec!["", "\"", "'"]);
        // A `#` right after a value is part of a plain scalar, not a comment.
        let comment = prop::sample::select(vec!["", "", "  # c", "#c"]);
        let line =
            (value, style, prop::bool::ANY, comment).prop_map(move |(v, q, wide, comment)| {
                let dash = if wide { "-   " } else { "- " };
                format!("{:indent$}{dash}{q}{v}{q}{comment}", "")
            });
        prop_oneof![
            12 => line,
            1 => Just(format!("{:indent$}# note", "")),
            1 => Just(String::new()),
        ]
    }

    fn items(indent: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(item(indent), 0..12).prop_map(|lines| lines.join("\n"))
    }

    /// One top-level entry `k<n>:` and its value: a list (indented or not, maybe nested in
    /// a mapping), or item-like lines inside a block scalar, a multi-line quoted scalar, a
    /// plain scalar's continuation or a flow list.
    fn section() -> impl Strategy<Value = String> {
        prop_oneof![
            items(2).prop_map(|l| format!("k:\n{l}")),
            items(0).prop_map(|l| format!("k:\n{l}")),
            items(4).prop_map(|l| format!("k:\n  m:\n{l}\n  n: v")),
            items(2).prop_map(|l| format!("k:\n  m:\n{l}")),
            items(2).prop_map(|l| format!("k: |\n{l}")),
            items(2).prop_map(|l| format!("k: \"open\n{l}\n  close\"")),
            items(2).prop_map(|l| format!("k: plain\n{l}")),
            items(2).prop_map(|l| format!("k: [ 10.0.0.1,\n{l}\n  10.0.0.2 ]")),
            items(4).prop_map(|l| format!("k:\n  - m: v\n{l}")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whenever the fast path answers, the parser gives the same tree for the whole
        /// text, positions included, and reports no issue.
        #[test]
        fn long_lists_parse_like_the_yaml_parser(
            sections in prop::collection::vec(section(), 1..5),
            end_with_newline in prop::bool::ANY,
        ) {
            let mut text = sections.join("\n");
            if end_with_newline {
                text.push('\n');
            }
            if let Some(got) = fast(&text, 3) {
                let (want, issues) = full(&text);
                prop_assert_eq!(issues, 0, "{}", text);
                prop_assert_eq!(Some(got), want, "{}", text);
            }
        }
    }
}
