//! The Kubernetes kit (deploy/kubernetes), validated offline: `kubectl kustomize` renders
//! every overlay, every rendered object survives a round trip through the Kubernetes API's
//! own types (k8s-openapi; a field that does not survive is misspelt or misplaced, and the
//! test names it), and the DaemonSet grants what docs/OPERATIONS.md and the image test rely
//! on: the capabilities, mounts, probes and update strategy. The rule file's ConfigMap is
//! the example file, byte for byte.

use std::path::Path;

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Namespace, ServiceAccount},
    },
    serde::{de::DeserializeOwned, Serialize},
};
use serde_json::Value;
use support::{kit, render, root};

mod support;

/// Every leaf of `original` must come back from the typed round trip unchanged.
fn assert_round_trip<T: DeserializeOwned + Serialize>(original: &Value) {
    let typed: T =
        serde_json::from_value(original.clone()).unwrap_or_else(|e| panic!("{e} in {original:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    let name = original["metadata"]["name"].as_str().unwrap_or("?");
    if let Some(path) = first_lost(original, &back, String::new()) {
        panic!(
            "{} {name}: field `{path}` does not survive the Kubernetes API types: a typo or a misplaced field",
            original["kind"]
        );
    }
}

fn first_lost(original: &Value, back: &Value, path: String) -> Option<String> {
    match original {
        Value::Object(map) => map.iter().find_map(|(k, v)| match back.get(k) {
            Some(b) => first_lost(v, b, format!("{path}.{k}")),
            None => Some(format!("{path}.{k}")),
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| match back.get(i) {
                Some(b) => first_lost(v, b, format!("{path}[{i}]")),
                None => Some(format!("{path}[{i}]")),
            }),
        leaf => (leaf != back).then_some(path),
    }
}

/// Render, round-trip every object, and return them by kind.
fn checked(dir: &Path) -> Vec<Value> {
    let docs = render(dir);
    for doc in &docs {
        match doc["kind"].as_str().unwrap() {
            "Namespace" => assert_round_trip::<Namespace>(doc),
            "ServiceAccount" => assert_round_trip::<ServiceAccount>(doc),
            "ConfigMap" => assert_round_trip::<ConfigMap>(doc),
            "DaemonSet" => assert_round_trip::<DaemonSet>(doc),
            "PodMonitor" => check_pod_monitor(doc),
            other => panic!("the kit renders an object of kind {other} nobody checks"),
        }
    }
    docs
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

/// The DaemonSet promises of docs/OPERATIONS.md.
fn check_daemonset(docs: &[Value]) {
    let ds: DaemonSet = serde_json::from_value(one(docs, "DaemonSet").clone()).unwrap();
    let spec = ds.spec;
    let strategy = spec.update_strategy.unwrap();
    let rolling = strategy.rolling_update.unwrap();
    assert_eq!(
        serde_json::to_value(rolling.max_surge).unwrap(),
        0,
        "no surge: a second pod cannot own the node"
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(pod
        .tolerations
        .unwrap()
        .iter()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let main = pod
        .containers
        .iter()
        .find(|c| c.name == "nodegate")
        .unwrap();
    let sc = main.security_context.as_ref().unwrap();
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(
        caps.add.as_deref(),
        Some(&["BPF".to_string(), "NET_ADMIN".into(), "PERFMON".into()][..]),
        "the capabilities the image test runs with"
    );
    assert_eq!(sc.privileged, None, "the daemon is not privileged");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let mounts: Vec<(&str, Option<&str>)> = main
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.as_str(), m.sub_path.as_deref()))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/sys/fs/bpf", None),
            ("/run/nodegate", None),
            ("/etc/nodegate", None)
        ],
        "bpffs, the run directory shared by a rollout's pods, the ConfigMap as a directory"
    );
    let volumes = pod.volumes.unwrap();
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone())
    };
    assert_eq!(host_path("bpffs").as_deref(), Some("/sys/fs/bpf"));
    assert_eq!(host_path("run").as_deref(), Some("/run/nodegate"));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe_path(&main.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(&main.readiness_probe).as_deref(),
        Some("/readyz")
    );
    let args = main.args.as_ref().unwrap();
    for flag in ["--config=/etc/nodegate/rules.yaml", "--owner-wait=60"] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    assert!(
        args.iter().any(|a| a == "--metrics=$(NODE_IP):9864"),
        "metrics on the node's address, not on every address: {args:?}"
    );
    let init = pod.init_containers.unwrap();
    assert_eq!(init[0].args.as_deref().unwrap()[0], "mount-bpffs");
    assert_eq!(
        init[0].volume_mounts.as_ref().unwrap()[0]
            .mount_propagation
            .as_deref(),
        Some("Bidirectional")
    );
}

fn check_pod_monitor(doc: &Value) {
    assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "nodegate"
    );
    assert_eq!(doc["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    let known = ["apiVersion", "kind", "metadata", "spec"];
    for key in doc.as_object().unwrap().keys() {
        assert!(
            known.contains(&key.as_str()),
            "unknown PodMonitor field {key}"
        );
    }
}

fn check_overlay(overlay: &str, example: &str) {
    let docs = checked(&kit().join("overlays").join(overlay));
    check_daemonset(&docs);
    let rules = one(&docs, "ConfigMap")["data"]["rules.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let source = std::fs::read_to_string(root().join("examples").join(example)).unwrap();
    assert_eq!(
        rules, source,
        "deploy/kubernetes/overlays/{overlay}/{example} must stay a copy of examples/{example}"
    );
    assert_eq!(
        one(&docs, "ConfigMap")["metadata"]["name"],
        "nodegate-rules"
    );
    for doc in &docs {
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], "nodegate-system", "{doc:#}");
        }
    }
}

#[test]
fn the_eks_overlay_renders_valid_objects() {
    check_overlay("eks", "eks-node.yaml");
}

#[test]
fn the_aks_overlay_renders_valid_objects() {
    check_overlay("aks", "aks-authorized-ranges.yaml");
}

/// The optional PodMonitor component on top of an overlay.
#[test]
fn the_podmonitor_component_adds_a_pod_monitor() {
    // kustomize takes relative paths only: a scratch kustomization two levels below the
    // workspace root.
    let dir = root()
        .join("target")
        .join(format!("kustomize-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../deploy/kubernetes/overlays/eks\ncomponents:\n  - ../../deploy/kubernetes/components/podmonitor\n",
    )
    .unwrap();
    let docs = checked(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    one(&docs, "PodMonitor");
    check_daemonset(&docs);
}

#[test]
fn a_misspelt_field_is_named() {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "x"},
        "automountServiceAcountToken": false,
    });
    let err = std::panic::catch_unwind(|| assert_round_trip::<ServiceAccount>(&doc))
        .expect_err("a misspelt field fails");
    let text = err.downcast_ref::<String>().unwrap();
    assert!(text.contains(".automountServiceAcountToken"), "{text}");
}
