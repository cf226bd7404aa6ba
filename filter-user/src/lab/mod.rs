//! A throw-away network lab: two network namespaces joined by a veth pair. The *node* side
//! is where nodegate attaches; the *peer* side sends traffic. Both ends live in namespaces
//! the lab created, so no address or route ever appears in the caller's namespace, and
//! dropping the [`Lab`] deletes both namespaces (which deletes the veth pair), also when a
//! test panics.

mod netns;
mod rawsock;

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

pub use netns::in_netns;
pub use rawsock::RawSender;

impl crate::hint::Hint for LabError {
    fn hint(&self) -> Option<&str> {
        matches!(self, LabError::Ip { .. }).then_some("the lab needs root and iproute2")
    }
}

/// Errors from setting up or using a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {stderr}")]
    Ip {
        /// The arguments.
        args: String,
        /// What it printed.
        stderr: String,
    },
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Sys {
        /// Which call.
        call: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Run `ip` with arguments; error with its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| LabError::Sys {
            call: "exec ip",
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Addresses of a lab: node and peer, IPv4 and IPv6.
#[derive(Clone, Debug)]
pub struct LabAddrs {
    /// Node side IPv4 address with prefix, e.g. "10.0.0.1/24".
    pub node_v4: String,
    /// Peer side IPv4 address with prefix.
    pub peer_v4: String,
    /// Node side IPv6 address with prefix; `None` (with `peer_v6` `None`) disables IPv6 on
    /// both veth ends, which keeps the lab silent: an IPv6 stack sends MLD reports and
    /// neighbour solicitations on its own, which would show up in the filter's counters.
    pub node_v6: Option<String>,
    /// Peer side IPv6 address with prefix.
    pub peer_v6: Option<String>,
}

impl Default for LabAddrs {
    fn default() -> Self {
        // RFC 5737 / RFC 3849 documentation ranges: they can never collide with a real
        // network, and they only ever exist inside the lab's own namespaces.
        LabAddrs {
            node_v4: "192.0.2.1/24".into(),
            peer_v4: "192.0.2.9/24".into(),
            node_v6: None,
            peer_v6: None,
        }
    }
}

/// Give one veth end its addresses (IPv6 off unless `v6`) and bring it and the namespace's
/// loopback up.
fn configure_end(ns: &str, ifname: &str, v4: &str, v6: &Option<String>) -> Result<(), LabError> {
    ip(&["-n", ns, "addr", "add", v4, "dev", ifname])?;
    match v6 {
        Some(v6) => {
            ip(&["-n", ns, "addr", "add", v6, "dev", ifname, "nodad"])?;
        }
        None => {
            // Before the link comes up, so not a single MLD report leaves.
            let sysctl = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
            in_netns(ns, || std::fs::write(&sysctl, "1"))?.map_err(|source| LabError::Sys {
                call: "disable IPv6 on a lab interface",
                source,
            })?;
        }
    }
    ip(&["-n", ns, "link", "set", ifname, "up"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Two namespaces and a veth pair between them.
pub struct Lab {
    /// Namespace of the node (where the filter attaches).
    pub node_ns: String,
    /// Namespace of the peer (traffic source).
    pub peer_ns: String,
    /// veth end in the node namespace.
    pub node_if: String,
    /// veth end in the peer namespace.
    pub peer_if: String,
    /// The addresses configured.
    pub addrs: LabAddrs,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Create a lab with fresh, process-unique names and the given addresses.
    pub fn new(tag: &str, addrs: LabAddrs) -> Result<Self, LabError> {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(3)
            .collect();
        let lab = Lab {
            node_ns: format!("ng-{tag}-{id}-node"),
            peer_ns: format!("ng-{tag}-{id}-peer"),
            // Interface names are limited to 15 bytes.
            node_if: format!("ng{tag}{id}n").chars().take(15).collect(),
            peer_if: format!("ng{tag}{id}p").chars().take(15).collect(),
            addrs,
        };
        // From here on, Drop cleans up whatever got created.
        ip(&["netns", "add", &lab.node_ns])?;
        ip(&["netns", "add", &lab.peer_ns])?;
        lab.create_pair()?;
        Ok(lab)
    }

    fn create_pair(&self) -> Result<(), LabError> {
        ip(&[
            "link",
            "add",
            &self.node_if,
            "netns",
            &self.node_ns,
            "type",
            "veth",
            "peer",
            "name",
            &self.peer_if,
            "netns",
            &self.peer_ns,
        ])?;
        configure_end(
            &self.node_ns,
            &self.node_if,
            &self.addrs.node_v4,
            &self.addrs.node_v6,
        )?;
        configure_end(
            &self.peer_ns,
            &self.peer_if,
            &self.addrs.peer_v4,
            &self.addrs.peer_v6,
        )
    }

    /// Delete the veth pair and create it again with the same names and addresses, as a
    /// CNI or a driver reset does: the node interface comes back with a new index and
    /// without any XDP program. Open a new [`Lab::peer_sender`] afterwards.
    pub fn recreate_pair(&self) -> Result<(), LabError> {
        ip(&["-n", &self.node_ns, "link", "del", &self.node_if])?;
        self.create_pair()
    }

    /// A second veth pair between the same two namespaces, IPv4 only (IPv6 off, as in
    /// [`LabAddrs`]), for tests of a node with several interfaces; the node end gets
    /// `node_ifindex` when given (indexes are per namespace, and the lab's are fresh).
    /// Returns the (node, peer) interface names; the pair goes with the namespaces.
    pub fn add_link(
        &self,
        node_v4: &str,
        peer_v4: &str,
        node_ifindex: Option<u32>,
    ) -> Result<(String, String), LabError> {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // At most 15 bytes: "ngl" + 5 + a few digits + 1.
        let (node_if, peer_if) = (format!("ngl{id}n"), format!("ngl{id}p"));
        let index = node_ifindex.map(|i| i.to_string());
        let mut args = vec!["link", "add", &node_if, "netns", &self.node_ns];
        if let Some(index) = &index {
            args.extend(["index", index]);
        }
        args.extend([
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
            "netns",
            &self.peer_ns,
        ]);
        ip(&args)?;
        configure_end(&self.node_ns, &node_if, node_v4, &None)?;
        configure_end(&self.peer_ns, &peer_if, peer_v4, &None)?;
        Ok((node_if, peer_if))
    }

    /// Run a shell command inside the peer namespace (e.g. ping, a client).
    pub fn peer_cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.peer_ns, program]).args(args);
        c
    }

    /// Run a shell command inside the node namespace.
    pub fn node_cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node_ns, program]).args(args);
        c
    }

    /// The node interface's index, as seen inside the node namespace.
    pub fn node_ifindex(&self) -> Result<u32, LabError> {
        in_netns(&self.node_ns, || netns::ifindex(&self.node_if))?
    }

    /// A raw Ethernet sender on the peer's veth end: frames arrive at the node's XDP hook.
    pub fn peer_sender(&self) -> Result<RawSender, LabError> {
        in_netns(&self.peer_ns, || RawSender::open(&self.peer_if))?
    }

    /// MAC address of an interface in a namespace.
    pub fn mac(&self, ns: &str, ifname: &str) -> Result<[u8; 6], LabError> {
        let out = ip(&["-n", ns, "-o", "link", "show", ifname])?;
        let mac = out
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .ok_or_else(|| LabError::Ip {
                args: format!("-n {ns} link show {ifname}"),
                stderr: "no link/ether".into(),
            })?;
        let mut bytes = [0u8; 6];
        for (b, part) in bytes.iter_mut().zip(mac.split(':')) {
            *b = u8::from_str_radix(part, 16).unwrap_or(0);
        }
        Ok(bytes)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end inside it, and with it the pair.
        for ns in [&self.node_ns, &self.peer_ns] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
