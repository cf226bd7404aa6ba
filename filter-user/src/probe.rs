//! Reachability probes for confirmed changes (`nodegate apply --probe`, `rollout.probes`):
//! does the node still reach what it needs — the API server, the gateway, a peer — under
//! the rules just published?
//!
//! A probe answers one question, "do packets pass both ways", so each is the cheapest
//! exchange that proves a round trip: a TCP handshake, an ICMP echo, an HTTP status line over
//! TLS. The `https://` probe verifies no certificate on purpose: an API server's certificate
//! is signed by the cluster's own CA, which the node may not hold, and a forged answer could
//! only make a reachable-looking path, never hide a working one. Any HTTP status counts as an
//! answer (a 401 from an API server that refuses anonymous `/readyz` still proves the path).

use std::{
    fmt,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs},
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// How long one probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One reachability probe, spelled `tcp:ADDR:PORT`, `icmp:ADDR` or
/// `https://HOST[:PORT]/PATH`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ReachProbe {
    /// A TCP handshake with `host:port`.
    Tcp {
        /// Address or name.
        host: String,
        /// Port.
        port: u16,
    },
    /// An ICMP (ICMPv6) echo to `addr`.
    Icmp {
        /// Address.
        addr: IpAddr,
    },
    /// `GET path` over TLS to `host:port`; any HTTP status line is an answer.
    Https {
        /// Address or name (also the TLS server name and `Host` header).
        host: String,
        /// Port.
        port: u16,
        /// Request path, starting with `/`.
        path: String,
    },
}

/// A probe that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid probe {text:?}: {why}; write tcp:ADDR:PORT, icmp:ADDR or https://HOST[:PORT]/PATH"
)]
pub struct ProbeSyntax {
    text: String,
    why: String,
}

/// `host:port`, with an IPv6 address in brackets; `default_port` when the port is left out.
fn host_port(text: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address goes in brackets, e.g. [2001:db8::1]:443")?;
        (host, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("an IPv6 address goes in brackets, e.g. [2001:db8::1]:443".into())
            }
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("the address is missing".into());
    }
    let port = match (port, default_port) {
        (Some(p), _) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("{p:?} is not a port (1-65535)")),
            Ok(p) => p,
        },
        (None, Some(p)) => p,
        (None, None) => return Err("the port is missing".into()),
    };
    Ok((host.to_string(), port))
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

impl FromStr for ReachProbe {
    type Err = ProbeSyntax;

    fn from_str(text: &str) -> Result<Self, ProbeSyntax> {
        let fail = |why: String| ProbeSyntax {
            text: text.to_string(),
            why,
        };
        if let Some(rest) = text.strip_prefix("tcp:") {
            let (host, port) = host_port(rest, None).map_err(fail)?;
            Ok(ReachProbe::Tcp { host, port })
        } else if let Some(rest) = text.strip_prefix("icmp:") {
            let bare = rest.trim_start_matches('[').trim_end_matches(']');
            let addr = bare
                .parse()
                .map_err(|_| fail(format!("{rest:?} is not an IP address")))?;
            Ok(ReachProbe::Icmp { addr })
        } else if let Some(rest) = text.strip_prefix("https://") {
            let (authority, path) = match rest.find('/') {
                Some(at) => rest.split_at(at),
                None => (rest, "/"),
            };
            let (host, port) = host_port(authority, Some(443)).map_err(fail)?;
            if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(fail("the path has spaces or control characters".into()));
            }
            Ok(ReachProbe::Https {
                host,
                port,
                path: path.to_string(),
            })
        } else {
            Err(fail("unknown kind".into()))
        }
    }
}

impl fmt::Display for ReachProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReachProbe::Tcp { host, port } => write!(f, "tcp:{}:{port}", bracketed(host)),
            ReachProbe::Icmp { addr } => write!(f, "icmp:{addr}"),
            ReachProbe::Https { host, port, path } => {
                write!(f, "https://{}:{port}{path}", bracketed(host))
            }
        }
    }
}

impl TryFrom<String> for ReachProbe {
    type Error = ProbeSyntax;
    fn try_from(text: String) -> Result<Self, ProbeSyntax> {
        text.parse()
    }
}

impl From<ReachProbe> for String {
    fn from(probe: ReachProbe) -> String {
        probe.to_string()
    }
}

impl ReachProbe {
    /// Run the probe once: `Ok` says what answered, `Err` why nothing did in `timeout`.
    pub fn check(&self, timeout: Duration) -> Result<String, String> {
        let start = Instant::now();
        let answer = match self {
            ReachProbe::Tcp { host, port } => {
                let addr = resolve(host, *port)?;
                connect(addr, timeout).map(|_| format!("connected to {addr}"))
            }
            ReachProbe::Icmp { addr } => icmp_echo(*addr, timeout),
            ReachProbe::Https { host, port, path } => https_status(host, *port, path, timeout),
        }?;
        Ok(format!(
            "{answer} in {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        ))
    }
}

/// A probe and its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The probe.
    pub probe: ReachProbe,
    /// Whether it got its answer.
    pub passed: bool,
    /// What answered, or why nothing did.
    pub detail: String,
}

/// Run every probe once, in order, each with [`PROBE_TIMEOUT`].
pub fn check_all(probes: &[ReachProbe]) -> Vec<Outcome> {
    probes
        .iter()
        .map(|probe| {
            let result = probe.check(PROBE_TIMEOUT);
            Outcome {
                probe: probe.clone(),
                passed: result.is_ok(),
                detail: result.unwrap_or_else(|e| e),
            }
        })
        .collect()
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("no TCP handshake with {addr}: {e}"))?;
    for set in [TcpStream::set_read_timeout, TcpStream::set_write_timeout] {
        set(&stream, Some(timeout)).map_err(|e| format!("socket to {addr}: {e}"))?;
    }
    Ok(stream)
}

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// The Internet checksum (RFC 1071) of `bytes`.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One echo request, and its reply. A raw socket needs CAP_NET_RAW; without it the
/// unprivileged ping socket works where `net.ipv4.ping_group_range` admits our group.
fn icmp_echo(addr: IpAddr, timeout: Duration) -> Result<String, String> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let (domain, protocol, request, reply) = match addr {
        IpAddr::V4(_) => (
            Domain::IPV4,
            Protocol::ICMPV4,
            ICMP_ECHO_REQUEST,
            ICMP_ECHO_REPLY,
        ),
        IpAddr::V6(_) => (
            Domain::IPV6,
            Protocol::ICMPV6,
            ICMPV6_ECHO_REQUEST,
            ICMPV6_ECHO_REPLY,
        ),
    };
    let (socket, raw) = match Socket::new(domain, Type::RAW, Some(protocol)) {
        Ok(socket) => (socket, true),
        Err(raw_error) => match Socket::new(domain, Type::DGRAM, Some(protocol)) {
            Ok(socket) => (socket, false),
            Err(_) => {
                return Err(format!(
                    "cannot open an ICMP socket ({raw_error}): an icmp probe needs CAP_NET_RAW, \
                     or a group in net.ipv4.ping_group_range"
                ))
            }
        },
    };
    let io = |what: &'static str| move |e: std::io::Error| format!("ICMP to {addr}: {what}: {e}");
    // Connected: the kernel hands us only what `addr` sends.
    socket
        .connect(&SockAddr::from(SocketAddr::new(addr, 0)))
        .map_err(io("connect"))?;
    let ident = (std::process::id() as u16).to_be_bytes();
    static NEXT_SEQ: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let seq = NEXT_SEQ
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_be_bytes();
    let mut message = vec![request, 0, 0, 0, ident[0], ident[1], seq[0], seq[1]];
    message.extend_from_slice(b"nodegate reachability probe");
    if addr.is_ipv4() {
        // ICMPv6 checksums cover a pseudo-header: the kernel fills those in.
        let sum = internet_checksum(&message).to_be_bytes();
        message[2..4].copy_from_slice(&sum);
    }
    socket.send(&message).map_err(io("send"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no ICMP echo reply from {addr} within {} ms",
                timeout.as_millis()
            ));
        }
        socket.set_read_timeout(Some(left)).map_err(io("wait"))?;
        let len = match (&socket).read(&mut buf) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(io("receive")(e)),
        };
        // A raw IPv4 socket hands over the IP header too.
        let skip = if raw && addr.is_ipv4() {
            usize::from(buf[0] & 0x0f) * 4
        } else {
            0
        };
        let Some(icmp) = buf[..len].get(skip..skip + 8) else {
            continue;
        };
        // A ping socket rewrites the identifier (and filters on it itself).
        let ours = icmp[0] == reply && icmp[6..8] == seq && (!raw || icmp[4..6] == ident);
        if ours {
            return Ok(format!("echo reply from {addr}"));
        }
    }
}

/// `GET path` over TLS; the status code of the answer.
fn https_status(host: &str, port: u16, path: &str, timeout: Duration) -> Result<String, String> {
    let addr = resolve(host, port)?;
    let tcp = connect(addr, timeout)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
    let connection = rustls::ClientConnection::new(tls_config(), name)
        .map_err(|e| format!("TLS to {addr}: {e}"))?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let authority = if port == 443 {
        bracketed(host)
    } else {
        format!("{}:{port}", bracketed(host))
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: nodegate-probe\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("TLS with {addr}: {e}"))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("no HTTP answer from {addr}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("{addr} did not answer with an HTTP status line"))?;
    Ok(format!("HTTP {status} from {addr}"))
}

/// A TLS client that checks signatures but trusts any certificate (see the module docs).
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::LazyLock<Arc<rustls::ClientConfig>> =
        std::sync::LazyLock::new(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ReachabilityOnly(provider)))
                .with_no_client_auth();
            Arc::new(config)
        });
    CONFIG.clone()
}

#[derive(Debug)]
struct ReachabilityOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for ReachabilityOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn probes_parse_and_print_as_spelled() {
        for text in [
            "tcp:10.0.0.1:443",
            "tcp:[2001:db8::1]:10250",
            "tcp:api.example:6443",
            "icmp:10.0.0.1",
            "icmp:2001:db8::1",
            "https://10.0.0.1:6443/readyz",
            "https://[2001:db8::1]:443/healthz",
        ] {
            let probe: ReachProbe = text.parse().unwrap();
            assert_eq!(probe.to_string(), text);
            let json = serde_json::to_string(&probe).unwrap();
            assert_eq!(serde_json::from_str::<ReachProbe>(&json).unwrap(), probe);
        }
        let https: ReachProbe = "https://api.example".parse().unwrap();
        assert_eq!(https.to_string(), "https://api.example:443/");
        for (bad, why) in [
            ("tcp:10.0.0.1", "the port is missing"),
            ("tcp:2001:db8::1:443", "brackets"),
            ("tcp:10.0.0.1:0", "not a port"),
            ("icmp:gateway", "not an IP address"),
            ("udp:10.0.0.1:53", "unknown kind"),
            ("https://10.0.0.1/a b", "spaces"),
        ] {
            let err = bad.parse::<ReachProbe>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains("tcp:ADDR:PORT"), "{err}");
        }
    }

    #[test]
    fn the_checksum_is_rfc_1071() {
        // RFC 1071's example words sum to 0xddf2; the checksum is its complement.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&bytes), !0xddf2);
        let mut echo = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'x'];
        let sum = internet_checksum(&echo).to_be_bytes();
        echo[2..4].copy_from_slice(&sum);
        assert_eq!(
            internet_checksum(&echo),
            0,
            "a checksummed message sums to zero"
        );
    }

    #[test]
    fn a_tcp_probe_passes_on_a_listener_and_fails_without_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe: ReachProbe = format!("tcp:127.0.0.1:{port}").parse().unwrap();
        let ok = probe.check(PROBE_TIMEOUT).unwrap();
        assert!(ok.contains("connected to 127.0.0.1"), "{ok}");
        drop(listener);
        let err = probe.check(PROBE_TIMEOUT).unwrap_err();
        assert!(err.contains("no TCP handshake with 127.0.0.1"), "{err}");
    }

    #[test]
    fn an_icmp_probe_gets_loopbacks_echo_reply() {
        // Root (CI) opens a raw socket; elsewhere the ping socket may be allowed. Either
        // way the answer must be an echo reply, or the error must name the privilege.
        let loopback = ReachProbe::Icmp {
            addr: "127.0.0.1".parse().unwrap(),
        };
        match loopback.check(PROBE_TIMEOUT) {
            Ok(answer) => assert!(answer.contains("echo reply from 127.0.0.1"), "{answer}"),
            Err(err) => {
                assert!(
                    // SAFETY: geteuid has no preconditions.
                    unsafe { libc::geteuid() } != 0,
                    "root must get an echo reply: {err}"
                );
                assert!(err.contains("CAP_NET_RAW"), "{err}");
            }
        }
    }

    /// A one-connection TLS server on loopback answering `status`.
    fn tls_server(status: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let cert =
            CertificateDer::from_pem_slice(include_bytes!("../tests/fixtures/tls/probe-cert.pem"))
                .unwrap();
        let key =
            PrivateKeyDer::from_pem_slice(include_bytes!("../tests/fixtures/tls/probe-key.pem"))
                .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                tls.read_exact(&mut byte).unwrap();
                request.push(byte[0]);
            }
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok");
            tls.write_all(answer.as_bytes()).unwrap();
            tls.conn.send_close_notify();
            let _ = tls.flush();
            String::from_utf8(request).unwrap()
        });
        (port, server)
    }

    #[test]
    fn an_https_probe_reads_the_status_of_a_self_signed_server() {
        let (port, server) = tls_server("401 Unauthorized");
        let probe: ReachProbe = format!("https://127.0.0.1:{port}/readyz").parse().unwrap();
        let answer = probe.check(PROBE_TIMEOUT).unwrap();
        assert!(answer.contains("HTTP 401 from 127.0.0.1"), "{answer}");
        let request = server.join().unwrap();
        assert!(
            request.starts_with(&format!(
                "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            )),
            "{request}"
        );
        // Nothing listens any more: the probe fails and says where.
        let err = probe.check(PROBE_TIMEOUT).unwrap_err();
        assert!(err.contains("no TCP handshake"), "{err}");
    }

    #[test]
    fn an_https_probe_fails_on_a_server_that_is_not_tls() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let _ = tcp.write_all(b"SSH-2.0-OpenSSH\r\n");
        });
        let probe: ReachProbe = format!("https://127.0.0.1:{port}/").parse().unwrap();
        let err = probe.check(PROBE_TIMEOUT).unwrap_err();
        assert!(err.contains("127.0.0.1"), "{err}");
        server.join().unwrap();
    }
}
