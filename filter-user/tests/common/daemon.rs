//! Running the real `nodegate` binary against a lab: the daemon and CLI commands run in the
//! lab's node network namespace via `nsenter --net` (not `ip netns exec`, which remounts
//! /sys and would hide bpffs), with a private pin directory that is removed afterwards.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use filter_user::{
    lab::{Lab, LabAddrs},
    loader::{counters::Snapshot, pins::PinLayout, FilterMaps},
};

/// The binary under test.
pub const NODEGATE: &str = env!("CARGO_BIN_EXE_nodegate");

static NEXT: AtomicU32 = AtomicU32::new(0);

/// What `run` logs once every interface is attached.
const READY_LINE: &str = "running; reloads";

/// A lab plus a private pin directory and scratch directory; everything is removed on drop,
/// also when the test panics.
pub struct Env {
    pub lab: Lab,
    pub pins: PinLayout,
    pub dir: PathBuf,
}

impl Env {
    pub fn new(tag: &str) -> Env {
        super::require_root();
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab::new(tag, LabAddrs::default()).expect("create lab");
        let pins = PinLayout::new(format!("/sys/fs/bpf/ngtest-{tag}-{id}"));
        let dir = std::env::temp_dir().join(format!("ngtest-{tag}-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        Env { lab, pins, dir }
    }

    /// `nodegate ARGS` in the node namespace (pin dir added for commands that take it).
    pub fn nodegate(&self, args: &[&str]) -> Command {
        self.nodegate_as(None, args)
    }

    /// `nodegate ARGS` in the node namespace, as root holding exactly `caps` (names as
    /// setpriv spells them, e.g. `bpf`, `net_admin`) when given: bounding, inheritable and
    /// ambient sets, as a container runtime grants a DaemonSet's `capabilities.add`.
    pub fn nodegate_as(&self, caps: Option<&[&str]>, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.lab.node_ns));
        if let Some(caps) = caps {
            let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
            c.arg("setpriv")
                .arg(format!("--bounding-set=-all{set}"))
                .arg(format!("--inh-caps=-all{set}"))
                .arg(format!("--ambient-caps=-all{set}"))
                .arg("--");
        }
        c.arg(NODEGATE).args(args);
        c.env("NODEGATE_PIN_DIR", self.pins.root());
        c
    }

    /// Run a CLI command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.nodegate(args).output().expect("run nodegate")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("nodegate.pid")
    }

    /// Write a config file into the scratch dir.
    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `nodegate run` on the node interface, expected to exit (a start-up refusal): its output.
    pub fn run_to_exit(&self, config: &Path, extra: &[&str]) -> Output {
        self.run_to_exit_as(None, config, extra)
    }

    /// [`Env::run_to_exit`] holding exactly `caps` (see [`Env::nodegate_as`]).
    pub fn run_to_exit_as(&self, caps: Option<&[&str]>, config: &Path, extra: &[&str]) -> Output {
        let config = config.to_str().unwrap();
        let pid_file = self.pid_file();
        let mut args = vec![
            "run",
            "--config",
            config,
            "--iface",
            &self.lab.node_if,
            "--no-metrics",
            "--pid-file",
            pid_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.nodegate_as(caps, &args)
            .output()
            .expect("run nodegate")
    }

    /// Start `nodegate run` on the node interface and wait until it is enforcing.
    pub fn start_daemon(&self, config: &Path, extra: &[&str]) -> Daemon {
        self.start_daemon_as(None, config, extra)
    }

    /// [`Env::start_daemon`] with extra environment variables.
    pub fn start_daemon_env(
        &self,
        config: &Path,
        extra: &[&str],
        vars: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        self.start_daemon_full(None, config, extra, vars, None)
    }

    /// [`Env::start_daemon`] appending its log to `log`, which other daemons may share:
    /// the lines of several daemons then stand in the order they were written.
    pub fn start_daemon_logging_to(&self, config: &Path, extra: &[&str], log: &Path) -> Daemon {
        self.start_daemon_full(None, config, extra, &[], Some(log))
    }

    /// [`Env::start_daemon`] holding exactly `caps` (see [`Env::nodegate_as`]).
    pub fn start_daemon_as(&self, caps: Option<&[&str]>, config: &Path, extra: &[&str]) -> Daemon {
        self.start_daemon_full(caps, config, extra, &[], None)
    }

    fn start_daemon_full(
        &self,
        caps: Option<&[&str]>,
        config: &Path,
        extra: &[&str],
        vars: &[(&str, &std::ffi::OsStr)],
        shared_log: Option<&Path>,
    ) -> Daemon {
        let _ = std::fs::remove_file(self.pid_file());
        let config = config.to_str().unwrap().to_string();
        let pid_file = self.pid_file().to_str().unwrap().to_string();
        let mut args = vec![
            "run",
            "--config",
            &config,
            "--iface",
            &self.lab.node_if,
            "--pid-file",
            &pid_file,
        ];
        args.extend_from_slice(extra);
        if !extra.iter().any(|a| a.starts_with("--metrics")) {
            args.push("--no-metrics");
        }
        let log = match shared_log {
            Some(log) => log.to_path_buf(),
            None => self.dir.join(format!(
                "daemon-{}.log",
                NEXT.fetch_add(1, Ordering::Relaxed)
            )),
        };
        let stderr = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut daemon = Daemon { child: None, log };
        // A shared log already holds earlier daemons' lines: wait for one more.
        let ready_before = daemon.log_text().matches(READY_LINE).count();
        let child = self
            .nodegate_as(caps, &args)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn nodegate run");
        daemon.child = Some(child);
        let deadline = Instant::now() + super::patience(Duration::from_secs(30));
        // The PID file is written as soon as the daemon owns the pin directory; READY_LINE
        // is what it logs once every interface is attached.
        while daemon.log_text().matches(READY_LINE).count() == ready_before {
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "nodegate run exited early ({status}):\n{}",
                    daemon.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nodegate run not ready after 30 s:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    /// Counters read straight from the pinned maps (as `nodegate stats` does).
    pub fn snapshot(&self) -> Snapshot {
        FilterMaps::open_pinned(&self.pins.maps_dir())
            .expect("open pinned maps")
            .snapshot()
            .unwrap()
    }

    /// Wait (up to 5 s) until at least `at_least` packets were judged for `reason`.
    pub fn wait_counted(&self, reason: &str, at_least: u64) {
        let deadline = Instant::now() + super::patience(Duration::from_secs(5));
        while reason_total(&self.snapshot(), reason).0 < at_least {
            assert!(
                Instant::now() < deadline,
                "{reason} never reached {at_least}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The whole HTTP response to `GET path` from a daemon's metrics listener on
    /// 127.0.0.1:`port` in the node namespace.
    pub fn get(&self, port: u16, path: &str) -> String {
        use std::io::Write;
        filter_user::lab::in_netns(&self.lab.node_ns, || {
            let mut s =
                std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body
        })
        .unwrap()
    }

    /// One scrape of `/metrics`.
    pub fn scrape(&self, port: u16) -> String {
        self.get(port, "/metrics")
    }

    /// The XDP program id on the node interface, if any.
    pub fn xdp_prog_id(&self) -> Option<u64> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.lab.node_ns,
                "-d",
                "-j",
                "link",
                "show",
                "dev",
                &self.lab.node_if,
            ])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        json.get(0)?.get("xdp")?.get("prog")?.get("id")?.as_u64()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.run(&["uninstall"]);
        let _ = self.pins.remove_foreign();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The owner lock and control socket `run` left in the run directory (a daemon
        // killed by a failing test cannot remove its socket).
        let run_dir = std::path::Path::new(filter_user::daemon::owner::RUN_DIR);
        let _ = std::fs::remove_file(filter_user::daemon::owner::OwnerLock::path_for(
            run_dir, &self.pins,
        ));
        let _ = std::fs::remove_file(filter_user::daemon::control::socket_path(
            run_dir, &self.pins,
        ));
        let _ = std::fs::remove_file(filter_user::daemon::run::active_rules_path(
            run_dir, &self.pins,
        ));
        let rollout = filter_user::daemon::rollout::state_path(run_dir, &self.pins);
        let _ = std::fs::remove_file(rollout.with_extension("json.bad"));
        let _ = std::fs::remove_file(rollout);
    }
}

/// A running `nodegate run`; SIGKILLed on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Wait for exit (with a deadline) and return the status.
    pub fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + super::patience(within);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "nodegate did not exit in time:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + super::patience(within);
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the daemon log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Assert that a command succeeded, showing its stderr when it did not.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sum of the samples of metric `name` carrying every label in `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Sum of packets and bytes for one reason name over all interfaces (decided verdicts).
pub fn reason_total(snap: &Snapshot, reason: &str) -> (u64, u64) {
    snap.reasons
        .iter()
        .filter(|r| r.reason == reason && !r.would_drop)
        .fold((0, 0), |(p, b), r| (p + r.packets, b + r.bytes))
}

/// Packets of one rule (decided verdicts).
pub fn rule_total(snap: &Snapshot, rule: &str) -> u64 {
    snap.rules
        .iter()
        .filter(|r| r.name == rule && !r.would_drop)
        .map(|r| r.packets)
        .sum()
}
