//! The output contract (docs/OUTPUT.md) as tests see it: a command's JSON checked against
//! its schema under docs/schemas, with an off-the-shelf validator (jsonschema), formats
//! (IP addresses) asserted too.
#![allow(
    dead_code,
    reason = "each test crate includes this module and uses a different part of it"
)]

use std::path::PathBuf;

use serde_json::Value;

/// Where the schemas are.
fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas")
}

fn read(name: &str) -> Value {
    let path = schema_dir().join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Assert `value` is what `schema` (e.g. `check`, `error`) describes; the message lists
/// every violation with its place in the document.
#[track_caller]
pub fn assert_valid(schema: &str, value: &Value) {
    let common = read("common");
    let id = common["$id"]
        .as_str()
        .expect("common has an $id")
        .to_owned();
    let registry = jsonschema::Registry::new()
        .add(id, common)
        .expect("common schema registers")
        .prepare()
        .expect("registry prepares");
    let validator = jsonschema::options()
        .with_registry(&registry)
        .should_validate_formats(true)
        .build(&read(schema))
        .unwrap_or_else(|e| panic!("docs/schemas/{schema}.schema.json does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "output does not match docs/schemas/{schema}.schema.json:\n{}\noutput: {value:#}",
        errors.join("\n")
    );
}

/// One JSON document (`-o json` of a one-shot command), checked against `schema`.
#[track_caller]
pub fn document(schema: &str, stdout: &[u8]) -> Value {
    let value: Value = serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    });
    assert_valid(schema, &value);
    value
}

/// A stream (`-o json` of `replay`, `observe`, `stats --watch`): every line one object,
/// each checked against `schema`.
#[track_caller]
pub fn lines(schema: &str, stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line is not one JSON object ({e}): {line}"));
            assert_valid(schema, &value);
            value
        })
        .collect()
}

/// The error a command printed on stderr in JSON mode: one line, the `error` schema.
#[track_caller]
pub fn error(stderr: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stderr);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_else(|| panic!("no error on stderr"));
    assert!(lines.next().is_none(), "one line on stderr, got: {text}");
    let value: Value = serde_json::from_str(first)
        .unwrap_or_else(|e| panic!("stderr is not a JSON error ({e}): {text}"));
    assert_valid("error", &value);
    value
}
