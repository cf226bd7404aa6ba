//! The output contract (docs/OUTPUT.md) of the commands that need no privileges: each
//! command's `-o json` against its schema under docs/schemas, errors as JSON on stderr,
//! monitor mode reported as `would_drop` everywhere, and the older flag spellings.

use std::path::Path;

use super::{example, nodegate, schema, TempFile, DIFF_BASE, SCOPED};

/// Every schema file is one the contract names, and compiles.
#[test]
fn every_schema_is_documented_and_compiles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas");
    let contract = std::fs::read_to_string(dir.join("../OUTPUT.md")).expect("docs/OUTPUT.md");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 13, "{names:?}");
    for name in &names {
        let stem = name.strip_suffix(".schema.json").expect("only schemas");
        assert!(
            contract.contains(&format!("schemas/{name}")),
            "docs/OUTPUT.md does not name schemas/{name}"
        );
        if stem != "common" {
            // Compiles (with the shared definitions) and rejects what is plainly not it.
            let not_it = serde_json::json!({"surely": "not this"});
            let checked = std::panic::catch_unwind(|| schema::assert_valid(stem, &not_it));
            assert!(checked.is_err(), "{name} accepts anything");
        }
    }
}

#[test]
fn check_prints_its_schema_valid_or_not_and_errors_as_json() {
    let (code, out, err) = nodegate(&[
        "check",
        example("eks-node.yaml").to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = schema::document("check", out.as_bytes());
    assert_eq!(
        v["rules"][0]["kind"], "failsafe",
        "YAML words, not Rust names"
    );
    assert!(err.is_empty(), "{err}");

    let bad =
        TempFile::new("version: 1\nrules:\n  - {name: a, from: [10.0.0.1/8], protocol: any}\n");
    let (code, out, _) = nodegate(&["check", bad.path(), "-o", "json"]);
    assert_eq!(code, 1);
    let v = schema::document("check", out.as_bytes());
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"][0]["severity"], "error", "{v:#}");

    let (code, out, err) = nodegate(&["check", "/nonexistent/rules.yaml", "-o", "json"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    let e = schema::error(err.as_bytes());
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/rules.yaml"),
        "{e}"
    );
}

#[test]
fn explain_prints_its_schema_and_monitor_mode_as_would_drop() {
    let file = TempFile::new(SCOPED);
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            file.path(),
            "--from",
            "198.51.100.7",
            "--proto",
            "tcp",
            "--port",
            "8080",
            "-o",
            "jsonl",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = nodegate(&args);
        assert_eq!(out.lines().count(), 1, "jsonl is one line: {out}");
        (code, schema::document("explain", out.as_bytes()), err)
    };
    let (code, v, _) = explain(&[]);
    assert_eq!(
        (code, &v["verdict"], &v["would_drop"]),
        (1, &"drop".into(), &false.into())
    );
    // eth2 monitors: the packet passes, exit 0, and says it would be dropped.
    let (code, v, _) = explain(&["--on-iface", "eth2"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["would_drop"], true);
    assert_eq!(v["reason"], "no-source-match");
    assert_eq!(v["interface"], "eth2");
    // Text says the same, once, in the same word.
    let (_, text, _) = nodegate(&[
        "explain",
        file.path(),
        "--from",
        "198.51.100.7",
        "--port",
        "8080",
        "--on-iface",
        "eth2",
    ]);
    assert!(text.contains("pass (no-source-match) would_drop"), "{text}");
    // Not judged: exit 2 and the JSON error.
    let (code, out, err) = nodegate(&[
        "explain",
        file.path(),
        "--from",
        "198.51.100.7",
        "-o",
        "json",
    ]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    let e = schema::error(err.as_bytes());
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--port is missing"),
        "{e}"
    );
}

#[test]
fn diff_prints_its_schema_with_verdicts_in_the_common_fields() {
    let old = TempFile::new(DIFF_BASE);
    let new = TempFile::new(&DIFF_BASE.replace(" 10.0.1.0/24,", ""));
    let (code, out, err) = nodegate(&[
        "diff",
        new.path(),
        "--against",
        old.path(),
        "--probe",
        "tcp:10.0.0.9:443",
        "-o",
        "json",
    ]);
    assert_eq!(code, 1, "{err}");
    let v = schema::document("diff", out.as_bytes());
    assert_eq!(v["rules_changed"][0]["rule"], "api");
    let flip = &v["verdicts"][0];
    assert_eq!(flip["before"]["rule"], "api", "{v:#}");
    assert_eq!(flip["after"]["verdict"], "drop", "{v:#}");
    assert_eq!(v["unchanged_probes"][0]["rule"], "api", "{v:#}");
    // Trouble (a rejected file) is exit 2 and a JSON error.
    let broken = TempFile::new("version: 1\nrules: [oops\n");
    let (code, _, err) = nodegate(&["diff", broken.path(), "--against", old.path(), "-o", "json"]);
    assert_eq!(code, 2);
    schema::error(err.as_bytes());
}

/// `gen-traffic` and `replay --model-only` in JSON; the frames of a monitor-mode file pass
/// with `would_drop`, and the summary counts them apart.
#[test]
fn replay_lines_match_their_schema_and_flag_would_drops() {
    let dir = TempFile::new("");
    let pcap = Path::new(dir.path()).with_file_name("node.pcap");
    let (code, out, err) = nodegate(&[
        "gen-traffic",
        pcap.to_str().unwrap(),
        "--count",
        "300",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = schema::document("gen-traffic", out.as_bytes());
    assert_eq!(v["frames"], 300);

    let rules = example("eks-node.yaml");
    let monitor_text = std::fs::read_to_string(&rules)
        .unwrap()
        .replace("mode: enforce", "mode: monitor");
    assert!(
        monitor_text.contains("mode: monitor"),
        "the example sets its mode"
    );
    let monitor = TempFile::new(&monitor_text);
    for (file, monitoring) in [(rules.to_str().unwrap(), false), (monitor.path(), true)] {
        let (code, out, err) = nodegate(&[
            "replay",
            pcap.to_str().unwrap(),
            "--config",
            file,
            "--model-only",
            "-o",
            "json",
        ]);
        assert_eq!(code, 0, "{err}");
        let lines = schema::lines("replay", out.as_bytes());
        assert_eq!(lines.len(), 301, "a line per frame and the summary");
        let frames = &lines[..300];
        let would = frames.iter().filter(|f| f["would_drop"] == true).count();
        let dropped = frames.iter().filter(|f| f["verdict"] == "drop").count();
        let summary = &lines[300]["summary"];
        let counted: u64 = summary["would_drop_reasons"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        if monitoring {
            assert!(
                would > 0 && dropped == 0,
                "monitor: {would} would_drop, {dropped} dropped"
            );
            assert!(frames
                .iter()
                .all(|f| f["would_drop"] == false || f["verdict"] == "pass"));
        } else {
            assert!(
                would == 0 && dropped > 0,
                "enforce: {would} would_drop, {dropped} dropped"
            );
        }
        assert_eq!(counted, would as u64, "{summary}");
    }
}

#[test]
fn usage_errors_and_text_only_commands_answer_in_json_mode() {
    let (code, out, err) = nodegate(&["-o", "json", "no-such-command"]);
    assert_eq!(code, 2, "{out}{err}");
    let e = schema::error(err.as_bytes());
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-command"),
        "{e}"
    );
    let (code, _, err) = nodegate(&["completions", "bash", "-o", "json"]);
    assert_eq!(code, 1);
    let e = schema::error(err.as_bytes());
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no JSON output"),
        "{e}"
    );
    // Text mode keeps clap's own usage message.
    let (code, _, err) = nodegate(&["no-such-command"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: unrecognized subcommand"), "{err}");
}

/// Scripts written for the older spellings keep working: they mean `-o`.
#[test]
fn older_output_spellings_mean_the_output_flag() {
    let rules = example("eks-node.yaml");
    let rules = rules.to_str().unwrap();
    let (code, out, _) = nodegate(&["check", rules, "--format", "json"]);
    assert_eq!(code, 0);
    schema::document("check", out.as_bytes());
    let (code, out, _) = nodegate(&[
        "explain",
        rules,
        "--from",
        "10.0.0.5",
        "--port",
        "443",
        "--format=json",
    ]);
    assert_eq!(code, 0);
    schema::document("explain", out.as_bytes());
}
