//! What the deployment tests share: the kit's paths and its rendering by kubectl.
#![allow(
    dead_code,
    reason = "each test crate includes this module and uses a different part of it"
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Value};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn kit() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// `kubectl kustomize DIR`, as YAML documents turned into JSON values.
pub fn render(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl (with kustomize) on PATH");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&String::from_utf8(out.stdout).unwrap())
}

/// YAML (the JSON-compatible subset kubectl prints) to JSON values, one per document.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut stack: Vec<(Value, Option<String>)> = Vec::new();
    for event in Parser::new_from_str(text) {
        let (event, _) = event.expect("kubectl printed valid YAML");
        let value = match event {
            Event::MappingStart(..) => {
                stack.push((Value::Object(Map::new()), None));
                continue;
            }
            Event::SequenceStart(..) => {
                stack.push((Value::Array(Vec::new()), None));
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => stack.pop().unwrap().0,
            Event::Scalar(text, style, ..) => scalar(&text, style),
            _ => continue,
        };
        match stack.last_mut() {
            None => docs.push(value),
            Some((Value::Array(items), _)) => items.push(value),
            Some((Value::Object(map), key)) => match key.take() {
                None => *key = Some(value.as_str().expect("string keys").to_string()),
                Some(k) => {
                    map.insert(k, value);
                }
            },
            Some(_) => unreachable!(),
        }
    }
    docs
}

/// A plain scalar's YAML 1.2 core-schema type; quoted and block scalars are strings.
pub fn scalar(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::String(text.to_string());
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" | "~" | "" => Value::Null,
        _ => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.to_string())),
    }
}
