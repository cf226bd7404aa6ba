//! Captures as tcpdump writes them, read back by the replay harness: the same traffic
//! recorded at once in full, with `-s 96` and `-s 68`, with nanosecond timestamps, and as
//! Linux cooked captures (`-i any`, SLL2 and SLL). Frames the snap length cut after their
//! headers must be judged exactly as the full frames are; the cooked ones must become the
//! same Ethernet packets.
#![cfg(feature = "privileged-tests")]

mod common;

use std::{
    io::Write,
    net::{IpAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::daemon::Env;
use filter_user::{
    config,
    lab::in_netns,
    model::Model,
    replay::{read_capture, snap::as_on_the_wire, CapturedFrame},
};

const FIXTURE: &str = "tests/fixtures/testcases.yaml";

/// A tcpdump recording in the node namespace; stopped (and flushed) by [`Recording::stop`].
struct Recording {
    child: Child,
    file: PathBuf,
}

fn record(env: &Env, name: &str, args: &[&str]) -> Recording {
    let file = env.dir.join(name);
    let log = env.dir.join(format!("{name}.log"));
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", env.lab.node_ns))
        .args(["tcpdump", "--immediate-mode", "-U", "-n", "-Z", "root"])
        .args(args)
        .arg("-w")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("tcpdump (cargo xtask setup installs it)");
    let deadline = Instant::now() + common::patience(Duration::from_secs(10));
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listening on")
    {
        assert!(
            Instant::now() < deadline,
            "tcpdump {args:?} did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Recording { child, file }
}

impl Recording {
    fn stop(mut self) -> Vec<CapturedFrame> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().unwrap();
        read_capture(&self.file)
            .unwrap_or_else(|e| panic!("{}: {e}", self.file.display()))
            .frames
    }
}

/// Traffic between the peer and the node: a TCP session carrying full-size segments, and
/// pings.
fn traffic(env: &Env) {
    let listener = in_netns(&env.lab.node_ns, || TcpListener::bind("192.0.2.1:8443"))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut sink).unwrap();
        sink.len()
    });
    let mut client = in_netns(&env.lab.peer_ns, || {
        TcpStream::connect_timeout(&"192.0.2.1:8443".parse().unwrap(), Duration::from_secs(5))
    })
    .unwrap()
    .unwrap();
    client.write_all(&[0x5a; 6000]).unwrap();
    drop(client);
    assert_eq!(server.join().unwrap(), 6000);
    let ping = env
        .lab
        .peer_cmd("ping", &["-c", "3", "-i", "0.2", "-s", "1200", "192.0.2.1"])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    std::thread::sleep(Duration::from_millis(300));
}

fn model() -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    Model::new(&config::load_file(path).unwrap().policy)
}

fn verdict(model: &Model, frame: &[u8]) -> (bool, &'static str, Option<String>) {
    let j = model.judge(frame);
    (j.pass, j.reason.name(), j.rule)
}

fn src_of(frame: &[u8]) -> Option<IpAddr> {
    (frame.get(12..14) == Some(&[0x08, 0x00]))
        .then(|| IpAddr::from(<[u8; 4]>::try_from(&frame[26..30]).unwrap()))
}

#[test]
fn snap_length_cuts_nanosecond_stamps_and_cooked_captures_read_as_the_wire_was() {
    let env = Env::new("captures");
    let full = record(&env, "full.pcap", &["-i", &env.lab.node_if, "-s", "0"]);
    let s96 = record(&env, "s96.pcap", &["-i", &env.lab.node_if, "-s", "96"]);
    let s68 = record(&env, "s68.pcap", &["-i", &env.lab.node_if, "-s", "68"]);
    let nano = record(
        &env,
        "nano.pcap",
        &["-i", &env.lab.node_if, "--time-stamp-precision=nano"],
    );
    let sll2 = record(&env, "sll2.pcap", &["-i", "any"]);
    let sll = record(&env, "sll.pcap", &["-i", "any", "-y", "LINUX_SLL"]);
    traffic(&env);
    let (full, s96, s68, nano, sll2, sll) = (
        full.stop(),
        s96.stop(),
        s68.stop(),
        nano.stop(),
        sll2.stop(),
        sll.stop(),
    );
    assert!(full.len() >= 12, "{} frames", full.len());
    assert!(full.iter().all(|f| !f.is_cut()));
    let model = model();

    for (name, cut) in [("-s 96", &s96), ("-s 68", &s68)] {
        assert_eq!(cut.len(), full.len(), "{name}: the same packets");
        let mut was_cut = 0;
        for (i, (c, f)) in cut.iter().zip(&full).enumerate() {
            assert_eq!(
                c.original_len,
                f.data.len(),
                "{name} frame {i}: its wire length"
            );
            was_cut += usize::from(c.is_cut());
            let padded = as_on_the_wire(&c.data, c.original_len).unwrap_or_else(|| {
                panic!("{name} frame {i}: IPv4/TCP headers fit in the snap length")
            });
            assert_eq!(
                verdict(&model, &padded),
                verdict(&model, &f.data),
                "{name} frame {i} is judged as the full frame"
            );
        }
        assert!(was_cut >= 5, "{name}: {was_cut} frames cut");
        eprintln!(
            "{name}: {} frames, {was_cut} cut by the snap length, every one judged as on the wire",
            cut.len()
        );
    }

    assert_eq!(nano.len(), full.len());
    assert!(
        nano.iter().any(|f| f.timestamp.subsec_nanos() % 1000 != 0),
        "nanosecond stamps keep their nanoseconds"
    );
    let first = full[0].timestamp.as_secs_f64();
    assert!(
        (nano[0].timestamp.as_secs_f64() - first).abs() < 5.0,
        "the same clock: {:?} vs {:?}",
        nano[0].timestamp,
        full[0].timestamp
    );

    // Cooked captures: the peer's packets, as the same Ethernet payloads.
    let from_peer = |frames: &[CapturedFrame]| -> Vec<(bool, &'static str, Option<String>)> {
        frames
            .iter()
            .filter(|f| src_of(&f.data) == Some("192.0.2.9".parse().unwrap()))
            .map(|f| verdict(&model, &f.data))
            .collect()
    };
    let expected = from_peer(&full);
    assert!(expected.len() >= 6);
    for (name, cooked) in [("SLL2", &sll2), ("SLL", &sll)] {
        assert_eq!(
            from_peer(cooked),
            expected,
            "{name}: same packets, same verdicts"
        );
    }

    // And the CLI says what it did with the cut frames.
    let out = Command::new(env!("CARGO_BIN_EXE_nodegate"))
        .args(["replay", "--model-only", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE))
        .arg(env.dir.join("s68.pcap"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("cut by the snap length: ")
            && text.contains(" judged as on the wire")
            && text.contains(", 0 not judged"),
        "{text}"
    );
}
