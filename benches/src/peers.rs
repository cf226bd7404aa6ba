//! What an operator would use instead of nodegate, set up and torn down inside the bench
//! lab's node namespace: `xdp-filter` (xdp-tools), an nftables netdev ingress chain with an
//! interval set, and iptables `raw` PREROUTING with an ipset `hash:net`. Every guard undoes
//! its set-up when dropped, also when a measurement fails; deleting the lab's namespaces
//! (the lab's own guard) removes whatever namespace-local state is left.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};
use filter_user::lab::in_netns;
use ipnet::{Ipv4Net, Ipv6Net};

/// Run `program args` inside network namespace `ns` (a child forked from a thread that
/// joined the namespace inherits it; no `ip netns exec` in the timed path).
pub fn run_in(
    ns: &str,
    program: &str,
    args: &[&str],
    stdin_file: Option<&Path>,
) -> anyhow::Result<String> {
    run_in_with(ns, program, args, stdin_file, &[])
}

/// [`run_in`] with extra environment variables.
fn run_in_with(
    ns: &str,
    program: &str,
    args: &[&str],
    stdin_file: Option<&Path>,
    env: &[(&str, &str)],
) -> anyhow::Result<String> {
    let out = in_netns(ns, || {
        let mut cmd = Command::new(program);
        cmd.args(args).envs(env.iter().copied());
        if let Some(f) = stdin_file {
            cmd.stdin(std::fs::File::open(f)?);
        }
        cmd.output()
    })?
    .with_context(|| format!("failed to start {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// xdp-filter loaded on an interface of the node namespace, default deny, IPv4 only.
pub struct XdpFilter {
    ns: String,
    iface: String,
}

impl XdpFilter {
    /// `xdp-filter load --mode native --policy deny --features ipv4 IFACE`, then allow each
    /// source address in `allow` (xdp-filter matches single addresses, not prefixes). Loaded
    /// as operators run it: behind libxdp's dispatcher program.
    pub fn load(ns: &str, iface: &str, allow: &[std::net::Ipv4Addr]) -> anyhow::Result<XdpFilter> {
        XdpFilter::load_with(ns, iface, "ipv4", allow, &[])
    }

    /// xdp-filter's own program on `iface`, without libxdp's dispatcher in front
    /// (`LIBXDP_SKIP_DISPATCHER`), IPv4 and IPv6, default deny, `allow` allowed: the program
    /// alone, as nodegate's attaches, to time with `BPF_PROG_TEST_RUN` ([`XdpFilter::program_id`]).
    pub fn load_alone(
        ns: &str,
        iface: &str,
        allow: &[std::net::IpAddr],
    ) -> anyhow::Result<XdpFilter> {
        XdpFilter::load_with(
            ns,
            iface,
            "ipv4,ipv6",
            allow,
            &[("LIBXDP_SKIP_DISPATCHER", "1")],
        )
    }

    fn load_with<A: std::fmt::Display>(
        ns: &str,
        iface: &str,
        features: &str,
        allow: &[A],
        env: &[(&str, &str)],
    ) -> anyhow::Result<XdpFilter> {
        run_in_with(
            ns,
            "xdp-filter",
            &[
                "load",
                "--mode",
                "native",
                "--policy",
                "deny",
                "--features",
                features,
                iface,
            ],
            None,
            env,
        )?;
        let guard = XdpFilter {
            ns: ns.into(),
            iface: iface.into(),
        };
        for addr in allow {
            run_in(
                ns,
                "xdp-filter",
                &["ip", "--mode", "src", &addr.to_string()],
                None,
            )?;
        }
        Ok(guard)
    }

    /// The id of the XDP program attached to the interface (`ip -j -d link`).
    pub fn program_id(&self) -> anyhow::Result<u32> {
        let out = run_in(
            &self.ns,
            "ip",
            &["-j", "-d", "link", "show", "dev", &self.iface],
            None,
        )?;
        let links: serde_json::Value =
            serde_json::from_str(&out).context("`ip -j link` printed no JSON")?;
        links[0]["xdp"]["prog"]["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .with_context(|| format!("no XDP program on {} after `xdp-filter load`", self.iface))
    }
}

impl XdpFilter {
    /// Allow many more source addresses at once: one `bpftool batch` writing xdp-filter's
    /// pinned `filter_ipv4` map the way `xdp-filter ip --mode src` does (flag 1 = source,
    /// on every CPU), instead of one process per address.
    pub fn allow_many(&self, addrs: &[std::net::Ipv4Addr]) -> anyhow::Result<()> {
        let mut batch = String::with_capacity(addrs.len() * 80);
        for a in addrs {
            let [b0, b1, b2, b3] = a.octets();
            batch.push_str(&format!(
                "map update pinned {XDP_FILTER_V4_MAP} key {b0} {b1} {b2} {b3} value 1 0 0 0 0 0 0 0\n"
            ));
        }
        let file = TempFile::new("xdp-filter.batch", &batch)?;
        let path = file.0.to_string_lossy().into_owned();
        run_in(&self.ns, "bpftool", &["batch", "file", &path], None)?;
        Ok(())
    }
}

/// Where xdp-filter pins its IPv4 address map.
const XDP_FILTER_V4_MAP: &str = "/sys/fs/bpf/xdp-filter/filter_ipv4";

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = run_in(&self.ns, "xdp-filter", &["unload", &self.iface], None);
        // libxdp's lock directory; removed only when nothing else uses it (empty).
        let _ = std::fs::remove_dir("/sys/fs/bpf/xdp");
    }
}

/// An nftables file that (re)creates table `netdev ngbench` atomically: interval sets of the
/// allowed prefixes and an ingress chain on `iface` that accepts them and drops the rest.
pub fn nft_ruleset(iface: &str, v4: &[Ipv4Net], v6: &[Ipv6Net]) -> String {
    let mut s = String::with_capacity(v4.len() * 20 + v6.len() * 30 + 512);
    // Declaring then deleting makes the file work whether or not the table exists; the
    // whole file is one transaction.
    s.push_str("table netdev ngbench\ndelete table netdev ngbench\ntable netdev ngbench {\n");
    for (name, ty, elems) in [
        (
            "allow4",
            "ipv4_addr",
            v4.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ),
        (
            "allow6",
            "ipv6_addr",
            v6.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ),
    ] {
        let _ = write!(
            s,
            "  set {name} {{\n    type {ty}\n    flags interval\n    auto-merge\n"
        );
        if !elems.is_empty() {
            let _ = writeln!(s, "    elements = {{ {} }}", elems.join(", "));
        }
        s.push_str("  }\n");
    }
    let _ = write!(
        s,
        "  chain ingress {{\n    type filter hook ingress device \"{iface}\" priority -500; policy accept;\n    ip saddr @allow4 accept\n    ip6 saddr @allow6 accept\n    counter drop\n  }}\n}}\n"
    );
    s
}

/// The nftables table in the node namespace.
pub struct Nft {
    ns: String,
}

impl Nft {
    /// Load `ruleset` (see [`nft_ruleset`]) with `nft -f`.
    pub fn load(ns: &str, file: &Path) -> anyhow::Result<Nft> {
        let guard = Nft { ns: ns.into() };
        run_in(ns, "nft", &["-f", &file.display().to_string()], None)?;
        Ok(guard)
    }

    /// Packets the chain's drop rule counted.
    pub fn dropped(&self) -> anyhow::Result<u64> {
        let out = run_in(
            &self.ns,
            "nft",
            &["list", "chain", "netdev", "ngbench", "ingress"],
            None,
        )?;
        Ok(out
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        let _ = run_in(
            &self.ns,
            "nft",
            &["delete", "table", "netdev", "ngbench"],
            None,
        );
    }
}

/// An `ipset restore` script that builds `ng4`/`ng6` (hash:net) from the lists: first load
/// creates them; later loads build `*new` sets and swap them in, as an operator's reload does.
pub fn ipset_script(v4: &[Ipv4Net], v6: &[Ipv6Net], swap: bool) -> String {
    let mut s = String::with_capacity(v4.len() * 30 + v6.len() * 45 + 256);
    let (n4, n6) = if swap {
        ("ng4new", "ng6new")
    } else {
        ("ng4", "ng6")
    };
    let _ = writeln!(
        s,
        "create {n4} hash:net family inet hashsize 65536 maxelem 262144"
    );
    let _ = writeln!(
        s,
        "create {n6} hash:net family inet6 hashsize 16384 maxelem 65536"
    );
    for n in v4 {
        let _ = writeln!(s, "add {n4} {n}");
    }
    for n in v6 {
        let _ = writeln!(s, "add {n6} {n}");
    }
    if swap {
        s.push_str("swap ng4new ng4\nswap ng6new ng6\ndestroy ng4new\ndestroy ng6new\n");
    }
    s
}

/// ipsets and iptables `raw` rules in the node namespace: accept sources in `ng4`, drop
/// the rest, before conntrack.
pub struct IptablesIpset {
    ns: String,
    rules: bool,
}

impl IptablesIpset {
    /// Restore the sets from `file` (see [`ipset_script`]) and add the two rules.
    pub fn load(ns: &str, file: &Path) -> anyhow::Result<IptablesIpset> {
        let mut guard = IptablesIpset {
            ns: ns.into(),
            rules: false,
        };
        run_in(
            ns,
            "ipset",
            &["restore", "-f", &file.display().to_string()],
            None,
        )?;
        run_in(
            ns,
            "iptables",
            &[
                "-t",
                "raw",
                "-A",
                "PREROUTING",
                "-m",
                "set",
                "--match-set",
                "ng4",
                "src",
                "-j",
                "ACCEPT",
            ],
            None,
        )?;
        guard.rules = true;
        run_in(
            ns,
            "iptables",
            &["-t", "raw", "-A", "PREROUTING", "-j", "DROP"],
            None,
        )?;
        Ok(guard)
    }

    /// Packets the DROP rule counted.
    pub fn dropped(&self) -> anyhow::Result<u64> {
        let out = run_in(
            &self.ns,
            "iptables",
            &["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"],
            None,
        )?;
        Ok(out
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("DROP"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }
}

impl Drop for IptablesIpset {
    fn drop(&mut self) {
        if self.rules {
            let _ = run_in(
                &self.ns,
                "iptables",
                &["-t", "raw", "-F", "PREROUTING"],
                None,
            );
        }
        for set in ["ng4", "ng6", "ng4new", "ng6new"] {
            let _ = run_in(&self.ns, "ipset", &["destroy", set], None);
        }
    }
}

/// Write `text` to a fresh file under the system temp dir; removed when the guard drops.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// Create.
    pub fn new(name: &str, text: &str) -> anyhow::Result<TempFile> {
        let path = std::env::temp_dir().join(format!("ng-bench-{}-{name}", std::process::id()));
        let mut f = std::fs::File::create(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        f.write_all(text.as_bytes())?;
        Ok(TempFile(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
