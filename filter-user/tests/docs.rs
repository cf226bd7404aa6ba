//! docs/CONFIG.md and the decoder agree: every key the reference documents exists, and
//! every key the decoder accepts is documented (its tables list keys as `| `path` | ...`).

use std::collections::BTreeSet;

fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CONFIG.md"))
        .expect("docs/CONFIG.md");
    text.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_string())
        .collect()
}

#[test]
fn every_decoder_key_is_documented_and_every_documented_key_exists() {
    let known: BTreeSet<String> = filter_user::config::key_paths().into_iter().collect();
    let documented = documented();
    let undocumented: Vec<&String> = known.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&known).collect();
    assert!(
        undocumented.is_empty(),
        "keys missing from docs/CONFIG.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/CONFIG.md documents keys the decoder refuses: {unknown:?}"
    );
}

/// The check above catches a key the decoder would refuse.
#[test]
fn a_documented_key_the_decoder_refuses_would_be_caught() {
    let known: BTreeSet<String> = filter_user::config::key_paths().into_iter().collect();
    assert!(!known.contains("return_traffic.timeout"));
    assert!(known.contains("return_traffic.timeouts.tcp"));
    assert!(documented().contains("return_traffic.timeouts.tcp"));
}
