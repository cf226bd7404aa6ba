//! The image and the DaemonSet's security context suffice: the root filesystem unpacked from
//! `cargo xtask image`'s OCI archive runs `nodegate run` as the rendered DaemonSet says —
//! its arguments, uid 0 holding only the capabilities it adds, no new privileges, a
//! read-only root, and its mounts (bpffs, the run directory, the ConfigMap as a directory)
//! — inside a lab network namespace. It attaches, judges traffic, reloads on a
//! ConfigMap-style `..data` swap, and exits leaving the filter enforcing.
//!
//! Root and the archive are needed: `cargo xtask test` builds the image and runs this with
//! `--ignored`.

use std::{
    ffi::CString,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use filter_user::lab::{Lab, LabAddrs};
use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Container};
use serde_json::Value;

mod support;

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Everything the test creates, removed on drop (also when it fails).
struct Scene {
    lab: Lab,
    dir: PathBuf,
    /// A directory on the host's bpffs standing in for the node's /sys/fs/bpf.
    bpffs: PathBuf,
    daemon: Option<Child>,
}

impl Scene {
    fn new() -> Scene {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let scene = Scene {
            lab: Lab::new("img", LabAddrs::default()).expect("create the lab"),
            dir: std::env::temp_dir().join(format!("ngimage-{id}")),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/ngtest-image-{id}")),
            daemon: None,
        };
        std::fs::create_dir_all(&scene.dir).unwrap();
        std::fs::create_dir_all(&scene.bpffs).unwrap();
        scene
    }

    fn node_ip(&self) -> &str {
        self.lab.addrs.node_v4.split('/').next().unwrap()
    }

    fn peer_ip(&self) -> &str {
        self.lab.addrs.peer_v4.split('/').next().unwrap()
    }

    /// Does a ping from the peer get an answer?
    fn ping_answered(&self) -> bool {
        self.lab
            .peer_cmd("ping", &["-c", "2", "-i", "0.2", "-W", "1", self.node_ip()])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    fn xdp_attached(&self) -> bool {
        sh(
            "ip",
            &[
                "-n",
                &self.lab.node_ns,
                "-d",
                "link",
                "show",
                &self.lab.node_if,
            ],
        )
        .contains("prog/xdp")
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The lab's namespaces go with `lab`.
        let _ = Command::new("rm").arg("-rf").arg(&self.bpffs).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Unpack the image's layers (OCI archive: index → manifest → layers, in order).
fn unpack(archive: &Path, into: &Path) {
    let oci = into.with_extension("oci");
    std::fs::create_dir_all(&oci).unwrap();
    sh(
        "tar",
        &[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            oci.to_str().unwrap(),
        ],
    );
    let blob = |digest: &str| {
        oci.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let json =
        |path: PathBuf| -> Value { serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap() };
    let index = json(oci.join("index.json"));
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    std::fs::create_dir_all(into).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let path = blob(layer["digest"].as_str().unwrap());
        let gzip = layer["mediaType"].as_str().unwrap().ends_with("gzip");
        let flags = if gzip { "-xzf" } else { "-xf" };
        sh(
            "tar",
            &[flags, path.to_str().unwrap(), "-C", into.to_str().unwrap()],
        );
    }
}

/// The rendered EKS overlay's nodegate container and the host paths of its volumes.
fn daemonset_container() -> (Container, Vec<(String, Option<String>)>) {
    let docs = support::render(&support::kit().join("overlays/eks"));
    let ds = docs.into_iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let ds: DaemonSet = serde_json::from_value(ds).unwrap();
    let pod = ds.spec.template.spec.unwrap();
    let container = pod
        .containers
        .into_iter()
        .find(|c| c.name == "nodegate")
        .unwrap();
    let volumes = pod
        .volumes
        .unwrap()
        .into_iter()
        .map(|v| (v.name, v.host_path.map(|h| h.path)))
        .collect();
    (container, volumes)
}

fn cap_number(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other} not known to this test"),
    }
}

fn c(s: impl AsRef<std::ffi::OsStr>) -> CString {
    CString::new(s.as_ref().as_encoded_bytes()).unwrap()
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How the container runs: what the rendered DaemonSet grants, or less of it.
#[derive(Clone)]
struct Grant {
    args: Vec<String>,
    /// Capability numbers the bounding set keeps.
    caps: Vec<u32>,
    read_only: bool,
    no_new_privs: bool,
    /// (host side, mount path in the container, read-only).
    mounts: Vec<(PathBuf, String, bool)>,
}

/// A scene with the image unpacked, the ConfigMap directory (rule files `..v1`, `..v2`)
/// and the run directory, and the grant the rendered DaemonSet gives its container.
struct Stage {
    scene: Scene,
    rootfs: PathBuf,
    config: PathBuf,
    grant: Grant,
}

impl Stage {
    fn new() -> Stage {
        let archive = support::root().join("target/image/nodegate.oci.tar");
        assert!(
            archive.exists(),
            "{} missing: run `cargo xtask image` first",
            archive.display()
        );
        let scene = Scene::new();
        let rootfs = scene.dir.join("rootfs");
        unpack(&archive, &rootfs);

        // The ConfigMap as kubelet writes it: files in a timestamped directory behind
        // `..data`.
        let config = scene.dir.join("configmap");
        let rules = |v: &str, extra: &str| {
            let d = config.join(v);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("rules.yaml"),
                format!(
                    "version: 1\nmode: enforce\ndefault: drop\nreturn_traffic: off\n\
                     failsafe:\n  - {{name: admin, from: [192.0.2.0/28], protocol: tcp, ports: [22]}}\n\
                     rules:\n  - {{name: api, from: [198.51.100.0/24], protocol: tcp, ports: [443]}}\n{extra}"
                ),
            )
            .unwrap();
        };
        rules("..v1", "");
        rules(
            "..v2",
            &format!(
                "  - {{name: peer-ping, from: [{}/32], protocol: icmp, types: [8]}}\n",
                scene.peer_ip()
            ),
        );
        std::os::unix::fs::symlink("..v1", config.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/rules.yaml", config.join("rules.yaml")).unwrap();
        let run_dir = scene.dir.join("run");
        std::fs::create_dir_all(&run_dir).unwrap();

        let (container, volumes) = daemonset_container();
        let sc = container.security_context.clone().unwrap();
        assert_eq!(sc.run_as_user, Some(0));
        // Host side of every mount the DaemonSet declares.
        let host_side = |mount_path: &str| -> PathBuf {
            match mount_path {
                "/sys/fs/bpf" => scene.bpffs.clone(),
                "/run/nodegate" => run_dir.clone(),
                "/etc/nodegate" => config.clone(),
                other => panic!("the DaemonSet mounts {other}; teach this test its host side"),
            }
        };
        let grant = Grant {
            args: container
                .args
                .clone()
                .unwrap()
                .into_iter()
                .map(|a| {
                    a.replace("$(NODE_IP)", scene.node_ip())
                        .replace("--iface=eth0", &format!("--iface={}", scene.lab.node_if))
                })
                .collect(),
            caps: sc
                .capabilities
                .unwrap()
                .add
                .unwrap()
                .iter()
                .map(|c| cap_number(c))
                .collect(),
            read_only: sc.read_only_root_filesystem == Some(true),
            no_new_privs: sc.allow_privilege_escalation == Some(false),
            mounts: container
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| {
                    let volume = volumes.iter().find(|(n, _)| *n == m.name).unwrap();
                    if let Some(host) = &volume.1 {
                        assert_eq!(
                            host, &m.mount_path,
                            "hostPath volumes appear at their host path"
                        );
                    }
                    (
                        host_side(&m.mount_path),
                        m.mount_path.clone(),
                        m.read_only == Some(true),
                    )
                })
                .collect(),
        };
        Stage {
            scene,
            rootfs,
            config,
            grant,
        }
    }

    /// Point `..data` at `version`, as kubelet does on a ConfigMap update.
    fn swap_config(&self, version: &str) {
        std::os::unix::fs::symlink(version, self.config.join("..data_tmp")).unwrap();
        std::fs::rename(self.config.join("..data_tmp"), self.config.join("..data")).unwrap();
    }

    /// Start the image's nodegate as a container runtime would with `grant`, logging to
    /// `log_path`.
    fn spawn(&self, grant: &Grant, log_path: &Path) -> Child {
        let netns = std::fs::File::open(format!("/run/netns/{}", self.scene.lab.node_ns)).unwrap();
        let log = std::fs::File::create(log_path).unwrap();
        let rootfs = &self.rootfs;
        let (root_c, proc_c, sys_c, dev_c) = (
            c(rootfs),
            c(rootfs.join("proc")),
            c(rootfs.join("sys")),
            c(rootfs.join("dev")),
        );
        let binds: Vec<(CString, CString, bool)> = grant
            .mounts
            .iter()
            .map(|(from, to, ro)| (c(from), c(rootfs.join(to.trim_start_matches('/'))), *ro))
            .collect();
        let (caps, read_only, no_new_privs) =
            (grant.caps.clone(), grant.read_only, grant.no_new_privs);
        // Everything the child needs is allocated here: nothing may allocate after fork.
        let slash = c("/");
        let mut cmd = Command::new("/usr/bin/nodegate");
        cmd.args(&grant.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: only syscalls on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let none = std::ptr::null::<libc::c_char>();
                let mount = |from: *const libc::c_char,
                             to: &CString,
                             fstype: *const libc::c_char,
                             flags: libc::c_ulong| {
                    check(libc::mount(
                        from,
                        to.as_ptr(),
                        fstype,
                        flags,
                        std::ptr::null(),
                    ))
                };
                check(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
                check(libc::unshare(libc::CLONE_NEWNS))?;
                mount(none, &slash, none, libc::MS_REC | libc::MS_PRIVATE)?;
                // The root as the runtime gives it: the image, read-only if asked.
                mount(root_c.as_ptr(), &root_c, none, libc::MS_BIND)?;
                if read_only {
                    mount(
                        none,
                        &root_c,
                        none,
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    )?;
                }
                mount(c"proc".as_ptr(), &proc_c, c"proc".as_ptr(), 0)?;
                // sysfs of the node's network namespace, as in a hostNetwork pod.
                mount(
                    c"sysfs".as_ptr(),
                    &sys_c,
                    c"sysfs".as_ptr(),
                    libc::MS_RDONLY,
                )?;
                mount(c"/dev".as_ptr(), &dev_c, none, libc::MS_BIND | libc::MS_REC)?;
                for (from, to, ro) in &binds {
                    mount(from.as_ptr(), to, none, libc::MS_BIND)?;
                    if *ro {
                        mount(
                            none,
                            to,
                            none,
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        )?;
                    }
                }
                check(libc::chroot(root_c.as_ptr()))?;
                check(libc::chdir(slash.as_ptr()))?;
                // uid 0 with a bounding set of exactly the added capabilities: what exec
                // leaves root with, as in a container.
                for cap in 0..=63u32 {
                    if !caps.contains(&cap) {
                        let _ = libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
                    }
                }
                if no_new_privs {
                    check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
                }
                Ok(())
            });
        }
        cmd.spawn().expect("start the image's nodegate")
    }

    /// `GET path` from the metrics listener, on the address and port the probes use.
    fn probe(&self, path: &str) -> String {
        let port = self
            .grant
            .args
            .iter()
            .find_map(|a| a.strip_prefix("--metrics="))
            .expect("--metrics in the DaemonSet")
            .to_string();
        filter_user::lab::in_netns(&self.scene.lab.node_ns, || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&port).expect("connect to the probe port");
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        })
        .unwrap()
    }
}

fn wait_for(log_path: &Path, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = || std::fs::read_to_string(log_path).unwrap_or_default();
    while text().matches(needle).count() < count {
        assert!(Instant::now() < deadline, "no {needle:?} in:\n{}", text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root and `cargo xtask image`; `cargo xtask test` runs it"]
fn the_image_runs_the_daemon_with_exactly_what_the_daemonset_grants() {
    let mut stage = Stage::new();
    let log_path = stage.scene.dir.join("daemon.log");
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    stage.scene.daemon = Some(stage.spawn(&stage.grant, &log_path));
    wait_for(&log_path, "running; reloads", 1);
    let scene = &stage.scene;
    assert!(scene.xdp_attached(), "attached");
    assert!(
        !scene.ping_answered(),
        "v1 drops the peer's ping:\n{}",
        log_text()
    );
    // The probes the DaemonSet declares answer on its metrics port.
    assert!(stage.probe("/healthz").starts_with("HTTP/1.1 200"));
    let ready = stage.probe("/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    // The ConfigMap changes: kubelet swaps `..data`; the daemon reloads by itself.
    stage.swap_config("..v2");
    wait_for(&log_path, "rule generation active", 2);
    assert!(stage.scene.ping_answered(), "v2 passes it:\n{}", log_text());

    // SIGTERM (a pod deleted): exit 0, the filter stays attached with v2.
    let mut daemon = stage.scene.daemon.take().unwrap();
    // SAFETY: signals our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success(), "{}", log_text());
    stage.swap_config("..v1");
    let scene = &stage.scene;
    assert!(scene.xdp_attached(), "still attached after exit");
    assert!(
        scene.ping_answered(),
        "still enforcing v2, nothing reloads without a daemon"
    );

    // Remove it with the image's own binary (run on the host: it needs nothing else).
    let pins = scene.bpffs.join("nodegate");
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", scene.lab.node_ns))
        .arg(stage.rootfs.join("usr/bin/nodegate"))
        .args(["uninstall", "--pin-dir", pins.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!scene.xdp_attached());
}

/// Each capability and mount the DaemonSet grants is needed: without any one of them the
/// start fails, before anything is attached, with a message that names what is missing.
/// (CAP_PERFMON is the exception on kernels from 6.18: they load a Spectre-hardened program
/// instead, slower, with a warning; older ones refuse.)
#[test]
#[ignore = "needs root and `cargo xtask image`; `cargo xtask test` runs it"]
fn every_capability_and_mount_the_daemonset_grants_is_needed() {
    let stage = Stage::new();
    let without_cap = |cap: u32| {
        let mut g = stage.grant.clone();
        g.caps.retain(|c| *c != cap);
        g
    };
    let without_mount = |path: &str| {
        let mut g = stage.grant.clone();
        g.mounts.retain(|(_, p, _)| p != path);
        g
    };
    let cases = [
        ("CAP_BPF", without_cap(cap_number("BPF")), "CAP_BPF"),
        (
            "CAP_NET_ADMIN",
            without_cap(cap_number("NET_ADMIN")),
            "CAP_NET_ADMIN",
        ),
        (
            "the bpffs mount",
            without_mount("/sys/fs/bpf"),
            "not on a BPF filesystem",
        ),
        (
            "the run directory",
            without_mount("/run/nodegate"),
            "/run/nodegate",
        ),
        (
            "the ConfigMap",
            without_mount("/etc/nodegate"),
            "/etc/nodegate/rules.yaml",
        ),
    ];
    for (i, (what, grant, says)) in cases.iter().enumerate() {
        let log_path = stage.scene.dir.join(format!("without-{i}.log"));
        let mut child = stage.spawn(grant, &log_path);
        let status = child.wait().unwrap();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            !status.success(),
            "a start without {what} must fail:\n{log}"
        );
        assert!(
            log.contains(says),
            "without {what}, the error names it ({says:?}):\n{log}"
        );
        assert!(
            !stage.scene.xdp_attached(),
            "without {what}, nothing is attached"
        );
    }
    // CAP_PERFMON: refused by 6.1 and 6.12, a hardened program (and a warning) from 6.18.
    let log_path = stage.scene.dir.join("without-perfmon.log");
    let mut child = stage.spawn(&without_cap(cap_number("PERFMON")), &log_path);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success());
            assert!(log.contains("CAP_PERFMON"), "{log}");
            break;
        }
        if log.contains("running; reloads") {
            assert!(
                log.contains("spectre-hardened") && log.contains("CAP_PERFMON"),
                "{log}"
            );
            // SAFETY: signals our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            assert!(child.wait().unwrap().success());
            let pins = stage.scene.bpffs.join("nodegate");
            let out = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", stage.scene.lab.node_ns))
                .arg(stage.rootfs.join("usr/bin/nodegate"))
                .args(["uninstall", "--pin-dir", pins.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(out.status.success());
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
