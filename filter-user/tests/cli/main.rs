//! The `nodegate` commands that need no privileges, run as an operator would: `check` and
//! `explain`, on the shipped examples and on files with per-interface settings and rules;
//! their JSON against the output contract in [`output`].

mod import;
mod output;
#[path = "../schema/mod.rs"]
mod schema;

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

const NODEGATE: &str = env!("CARGO_BIN_EXE_nodegate");

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// Run `nodegate ARGS`; (exit code, stdout, stderr).
fn nodegate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(NODEGATE)
        .args(args)
        .output()
        .expect("run nodegate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A rule file in a fresh temporary directory (removed when the guard drops; tests run in
/// parallel, so each gets its own).
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(text: &str) -> TempFile {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ngcli-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.yaml");
        std::fs::write(&path, text).unwrap();
        TempFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const SCOPED: &str = "version: 1
return_traffic: off
failsafe:
  - {name: admin-ssh, from: [203.0.113.0/24], protocol: tcp, ports: [22]}
rules:
  - {name: web, from: [192.0.2.0/24], protocol: tcp, ports: [443]}
  - {name: pods, from: [10.0.0.0/16], protocol: any, interfaces: [eth1]}
interfaces:
  eth2: {mode: monitor}
";

#[test]
fn check_accepts_the_examples() {
    for name in ["eks-node.yaml", "aks-authorized-ranges.yaml"] {
        let path = example(name);
        let (code, out, err) = nodegate(&["check", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains("valid"), "{out}");
    }
}

#[test]
fn check_speaks_the_rule_file_s_words_in_aligned_columns() {
    let path = example("eks-node.yaml");
    let (code, out, err) = nodegate(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // YAML words, not Rust enum names.
    assert!(out.contains("fragments track"), "{out}");
    assert!(
        !out.contains("Track") && !out.contains("Stateful") && !out.contains("Ephemeral {"),
        "{out}"
    );
    // The capacity rows put their `/` in one column.
    let columns: std::collections::BTreeSet<usize> = out
        .lines()
        .skip_while(|l| !l.contains("compiled tables"))
        .skip(1)
        .take_while(|l| !l.contains("kernel memory"))
        .filter_map(|l| l.find(" / "))
        .collect();
    assert_eq!(columns.len(), 1, "misaligned capacity table:\n{out}");
}

#[test]
fn check_rejects_a_bad_file_with_its_position() {
    let file = TempFile::new(
        "version: 1\nrules:\n  - {name: a, from: [10.0.0.0/8], protocol: any, interfaces: [\"eth 0\"]}\n",
    );
    let (code, out, err) = nodegate(&["check", file.path()]);
    assert_eq!(code, 1, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains(":3:") && text.contains("is not a valid interface name"),
        "{text}"
    );
}

#[test]
fn check_lists_interface_settings_and_scoped_rules() {
    let file = TempFile::new(SCOPED);
    let (code, out, err) = nodegate(&["check", file.path()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("on interface eth2: mode monitor, default drop"),
        "{out}"
    );
    assert!(out.contains("(only on eth1)"), "{out}");
    assert!(out.contains("rule profiles"), "{out}");
    let (code, json, _) = nodegate(&["check", file.path(), "-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["interfaces"]["eth2"]["mode"], "monitor");
    assert_eq!(v["tables"]["profiles"], 2);
}

#[test]
fn explain_judges_as_the_interface_would() {
    let file = TempFile::new(SCOPED);
    let probe = [
        "explain",
        file.path(),
        "--from",
        "10.0.0.5",
        "--proto",
        "udp",
        "--port",
        "53",
    ];
    let explain = |extra: &[&str]| {
        let args: Vec<&str> = probe
            .iter()
            .chain(["-o", "json"].iter())
            .chain(extra)
            .copied()
            .collect();
        let (code, out, err) = nodegate(&args);
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        // Exit status 0 for a pass, 1 for a drop.
        let verdict = v["verdict"].as_str().unwrap().to_owned();
        assert_eq!(code, i32::from(verdict == "drop"), "{out}{err}");
        // The judged packet is echoed.
        assert_eq!(v["packet"]["src"], "10.0.0.5", "{out}");
        assert_eq!(v["packet"]["proto"], "udp", "{out}");
        assert_eq!(v["packet"]["port"], 53, "{out}");
        (verdict, v["reason"].as_str().unwrap().to_owned())
    };
    // `pods` exists only on eth1; eth2 monitors.
    assert_eq!(explain(&[]), ("drop".into(), "no-source-match".into()));
    assert_eq!(
        explain(&["--on-iface", "eth1"]),
        ("pass".into(), "allow-rule".into())
    );
    assert_eq!(
        explain(&["--on-iface", "eth2"]),
        ("pass".into(), "no-source-match".into())
    );
    // Text mode says which rules did not take part.
    let (_, text, _) = nodegate(&probe);
    assert!(
        text.contains("not applying on interfaces no rule names: rule(s) pods"),
        "{text}"
    );
    assert!(text.starts_with("packet: udp from 10.0.0.5 to "), "{text}");
    // What it needs is required (exit status 2, nothing judged) ...
    let (code, out, err) = nodegate(&probe[..6]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--port is missing"), "{err}");
    assert!(out.is_empty(), "{out}");
    // ... and what it assumes is said.
    let (_, text, _) = nodegate(&[
        "explain",
        file.path(),
        "--from",
        "10.0.0.5",
        "--proto",
        "icmp",
    ]);
    assert!(
        text.contains("assumed: ICMP type 8 (echo request)"),
        "{text}"
    );
    // An unreadable file cannot be judged either.
    let (code, _, err) = nodegate(&[
        "explain",
        "/nonexistent.yaml",
        "--from",
        "10.0.0.5",
        "--port",
        "1",
    ]);
    assert_eq!(code, 2, "{err}");
}

const DIFF_BASE: &str = "version: 1
return_traffic: off
sets:
  cp: [10.0.0.0/24, 10.0.1.0/24, \"2001:db8:cf::/64\"]
failsafe:
  - {name: ssh, from: [192.0.2.0/28], protocol: tcp, ports: [22]}
rules:
  - {name: api, from: [cp], protocol: tcp, ports: [443]}
";

/// `diff` against an identical file: "no change", exit 0, and the probes given keep their
/// verdict and are listed.
#[test]
fn diff_of_an_identical_file_says_no_change() {
    let (old, new) = (TempFile::new(DIFF_BASE), TempFile::new(DIFF_BASE));
    let (code, out, err) = nodegate(&[
        "diff",
        new.path(),
        "--against",
        old.path(),
        "--probe",
        "tcp:10.0.0.9:443",
        "--probe",
        "tcp:[2001:db8:cf::1]:443",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no change"), "{out}");
    assert!(
        out.contains("same      tcp from 10.0.0.9 to port/type 443: pass (api)"),
        "{out}"
    );
    assert!(out.contains("2001:db8:cf::1"), "{out}");
}

/// A set that loses a prefix: the rule, the prefix and a packet from it whose verdict flips,
/// exit 1; JSON says the same; a rejected file is trouble, exit 2.
#[test]
fn diff_names_the_rule_the_prefix_and_the_flipped_verdict() {
    let old = TempFile::new(DIFF_BASE);
    let new = TempFile::new(&DIFF_BASE.replace(" 10.0.1.0/24,", ""));
    let (code, out, err) = nodegate(&["diff", new.path(), "--against", old.path()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("set ~     cp"), "{out}");
    assert!(out.contains("            - 10.0.1.0/24"), "{out}");
    assert!(out.contains("rule ~    api"), "{out}");
    assert!(out.contains("- from 10.0.1.0/24"), "{out}");
    assert!(
        out.contains("verdict   tcp from 10.0.1.0 to port/type 443: pass (api) → drop"),
        "{out}"
    );
    let (code, json, _) = nodegate(&["diff", new.path(), "--against", old.path(), "-o", "json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["rules_changed"][0]["sources_removed"][0],
        "10.0.1.0/24"
    );
    assert_eq!(json["verdicts"][0]["probe"]["proto"], "tcp");

    let broken = TempFile::new("version: 1\nrules: [oops\n");
    let (code, _, err) = nodegate(&["diff", broken.path(), "--against", old.path()]);
    assert_eq!(code, 2);
    assert!(err.contains("rejected"), "{err}");
    let (code, _, err) = nodegate(&[
        "diff",
        new.path(),
        "--against",
        old.path(),
        "--probe",
        "tcp:nowhere:1",
    ]);
    assert_eq!(code, 2, "a bad probe is a usage error");
    assert!(err.contains("not an IP address"), "{err}");
}

/// A file that would drop the SSH session the command runs in (`SSH_CONNECTION`) is flagged
/// with what drops it; `--strict` refuses it (check: exit 1, diff: exit 2).
#[test]
fn check_and_diff_flag_a_file_that_cuts_off_the_ssh_session() {
    let file = TempFile::new(DIFF_BASE);
    let run = |args: &[&str], session: &str| {
        let out = Command::new(NODEGATE)
            .args(args)
            .env("SSH_CONNECTION", session)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let admin = "192.0.2.5 51000 10.1.1.1 22";
    let stranger = "198.51.100.7 51000 10.1.1.1 22";
    // The machine's own resolvers stay out of it: no resolv.conf.
    let run = |args: &[&str], session: &str| {
        let mut args = args.to_vec();
        args.insert(1, "--resolv-conf=/dev/null");
        args.insert(1, "--proc-net=/nonexistent");
        run(&args, session)
    };
    let (code, out) = run(&["check", file.path()], admin);
    assert_eq!(code, 0);
    assert!(!out.contains("lockout risk: your SSH session"), "{out}");
    let (code, out) = run(&["check", file.path()], stranger);
    assert_eq!(code, 0, "a warning without --strict");
    assert!(
        out.contains("your SSH session (tcp from 198.51.100.7 to port/type 22) would be dropped, by reason no-source-match"),
        "{out}"
    );
    let (code, _) = run(&["check", "--strict", file.path()], stranger);
    assert_eq!(code, 1);
    let (code, out) = run(
        &["diff", "--strict", file.path(), "--against", file.path()],
        stranger,
    );
    assert_eq!(code, 2, "{out}");
    let (code, _) = run(
        &["diff", "--strict", file.path(), "--against", file.path()],
        admin,
    );
    assert_eq!(code, 0);
}

/// The default gateway's echo replies and the control plane's connections to 443 and 10250
/// must keep passing: `check` names each that the file would drop, and `--strict` refuses.
#[test]
fn check_flags_a_file_that_drops_the_gateway_or_the_control_plane() {
    let dir = std::env::temp_dir().join(format!("ng-cli-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Default via 192.0.2.254 (the kernel's word printed on a little-endian host).
    let gateway = if cfg!(target_endian = "little") {
        "FE0200C0"
    } else {
        "C00002FE"
    };
    std::fs::write(
        dir.join("route"),
        format!("Iface\tDestination\tGateway\neth0\t00000000\t{gateway}\t0003\n"),
    )
    .unwrap();
    let with_cp = DIFF_BASE.replace("  cp: [", "  control-plane: [10.20.0.0/24]\n  cp: [");
    let file = TempFile::new(&with_cp);
    let proc_net = format!("--proc-net={}", dir.display());
    let (code, out, err) = nodegate(&["check", "--resolv-conf=/dev/null", &proc_net, file.path()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("lockout risk: echo replies from the default gateway 192.0.2.254"),
        "{out}"
    );
    assert!(
        out.contains("lockout risk: the control plane (10.20.0.0/24) on tcp 10250"),
        "{out}"
    );
    let (code, _, _) = nodegate(&[
        "check",
        "--strict",
        "--resolv-conf=/dev/null",
        &proc_net,
        file.path(),
    ]);
    assert_eq!(code, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The resolvers of the given resolv.conf must keep getting their replies: with return
/// traffic off and no rule for them, `check` warns, naming the resolver.
#[test]
fn check_flags_a_file_that_drops_dns_replies() {
    let file = TempFile::new(DIFF_BASE);
    let resolv = TempFile::new("nameserver 127.0.0.53\nnameserver 10.9.0.2\n");
    let (code, out, err) = nodegate(&["check", "--resolv-conf", resolv.path(), file.path()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("lockout risk: DNS replies from 10.9.0.2"),
        "{out}"
    );
    assert!(
        !out.contains("127.0.0.53"),
        "the local stub is not judged: {out}"
    );
    let stateful =
        TempFile::new(&DIFF_BASE.replace("return_traffic: off", "return_traffic: stateful"));
    let (_, out, _) = nodegate(&["check", "--resolv-conf", resolv.path(), stateful.path()]);
    assert!(!out.contains("lockout risk"), "{out}");
}

/// pcapng files whose option lists have no end marker (legal: the block length ends them)
/// and an empty capture are read as libpcap reads them.
#[test]
fn replay_reads_what_libpcap_reads_from_the_corpus() {
    let corpus =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/tcpdump");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/testcases.yaml");
    // (file, frames it holds; `None`: some)
    for (file, frames) in [
        ("ospf-sr.pcapng", None),
        ("ospf-sr2.pcapng", None),
        ("empty.pcap", Some(0)),
    ] {
        let path = corpus.join(file);
        let (code, out, err) = nodegate(&[
            "replay",
            "--model-only",
            path.to_str().unwrap(),
            "--config",
            fixture.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{file}: {err}");
        let said = out.lines().next().unwrap_or("");
        assert!(said.starts_with("replayed "), "{file}: {out}");
        let n: u64 = said["replayed ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        match frames {
            Some(frames) => assert_eq!(n, frames, "{file}: {said}"),
            None => assert!(n > 0, "{file}: {said}"),
        }
    }
}
