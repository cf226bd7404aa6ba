//! `nodegate import … | nodegate check -`: every importer's output is a valid rule file, the
//! same input gives the same bytes, and a refusal writes nothing and exits 1.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use super::{nodegate, NODEGATE};

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/import/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `nodegate check -` with `text` on stdin: (exit code, stdout).
fn check_stdin(text: &str) -> (i32, String) {
    let mut child = Command::new(NODEGATE)
        .args(["check", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn every_importer_round_trips_through_check() {
    let cases: [Vec<String>; 4] = [
        vec![
            "aws-security-groups".into(),
            fixture("aws-security-groups.json"),
            "--enis".into(),
            fixture("aws-network-interfaces.json"),
            "--group-cidrs".into(),
            "pl-0b1a4c0000000001=10.0.128.0/20".into(),
        ],
        vec![
            "eks-cluster".into(),
            fixture("eks-cluster.json"),
            "--subnets".into(),
            fixture("aws-subnets.json"),
            "--high-ports".into(),
        ],
        vec![
            "aks-cluster".into(),
            fixture("aks-cluster.json"),
            "--subnets".into(),
            fixture("azure-subnets.json"),
        ],
        vec![
            "azure-nsg".into(),
            fixture("azure-nsg.json"),
            "--tag".into(),
            "VirtualNetwork=10.224.0.0/12".into(),
            "--node-address".into(),
            "10.224.0.4".into(),
            "--mode".into(),
            "enforce".into(),
        ],
    ];
    for case in &cases {
        let args: Vec<&str> = std::iter::once("import")
            .chain(case.iter().map(String::as_str))
            .collect();
        let (code, yaml, err) = nodegate(&args);
        assert_eq!(code, 0, "{case:?}: {err}");
        let (again, same, _) = nodegate(&args);
        assert_eq!(
            (again, &same),
            (0, &yaml),
            "{case:?}: the same input writes the same bytes"
        );
        let (code, checked) = check_stdin(&yaml);
        assert_eq!(code, 0, "{case:?}: check - says:\n{checked}\n{yaml}");
        assert!(checked.starts_with("stdin: valid"), "{checked}");
        let mode = if case.contains(&"enforce".to_string()) {
            "enforce"
        } else {
            "monitor"
        };
        assert!(
            checked.contains(&format!("mode {mode}, default drop")),
            "{checked}"
        );
    }
}

#[test]
fn a_refused_import_writes_nothing_and_names_why() {
    let (code, out, err) = nodegate(&[
        "import",
        "azure-nsg",
        &fixture("azure-nsg-rules-conflict.json"),
    ]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("cannot import exactly")
            && err.contains("AllowVnetHttps")
            && err.contains("DenyLegacySubnet"),
        "{err}"
    );
    assert!(err.contains("  hint: "), "{err}");
    // Not the CLI's JSON: named as such.
    let (code, _, err) = nodegate(&["import", "aks-cluster", &fixture("aws-subnets.json")]);
    assert_eq!(code, 1);
    assert!(err.contains("is not what `az aks show` prints"), "{err}");
    // A rule file is text: -o json is refused.
    let (code, _, err) = nodegate(&[
        "import",
        "eks-cluster",
        &fixture("eks-cluster.json"),
        "-o",
        "json",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no JSON output"), "{err}");
}
