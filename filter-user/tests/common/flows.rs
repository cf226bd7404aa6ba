//! Flow-table helpers for the return-traffic tests: keys as the TC egress program writes them.

use std::net::IpAddr;

use filter_common::FlowKey;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An address in the 16-byte form the maps use (IPv4 in the first 4 bytes).
pub fn addr16(a: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// The key a reply from `remote:rport` to `local:lport` looks up (inbound orientation).
pub fn key(proto: u8, remote: &str, rport: u16, local: &str, lport: u16) -> FlowKey {
    let r = ip(remote);
    FlowKey {
        family: if r.is_ipv4() { 4 } else { 6 },
        proto,
        _pad: [0; 2],
        remote_port: rport,
        local_port: lport,
        remote: addr16(r),
        local: addr16(ip(local)),
    }
}
