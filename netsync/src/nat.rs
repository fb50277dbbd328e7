//! Reaching nodes behind NAT: which announced addresses the network may use, given the
//! address the coordinator sees a node come from (spec: `book/src/wire-coordinator.md`,
//! "Addresses and reachability"; measured in `book/src/netlab.md`).

pub mod natpmp;
pub mod portmap;

use std::net::IpAddr;

/// How far an IP address reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `0.0.0.0`, `::`: "every interface", nowhere to dial.
    Unspecified,
    /// `127.0.0.0/8`, `::1`: this machine only.
    Loopback,
    /// RFC 1918, CGNAT `100.64.0.0/10`, link-local, IPv6 ULA `fc00::/7` and link-local
    /// `fe80::/10`: one site only.
    Private,
    /// Everything else (an address the internet routes).
    Public,
}

pub fn scope(ip: IpAddr) -> Scope {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_unspecified() {
                Scope::Unspecified
            } else if v4.is_loopback() {
                Scope::Loopback
            } else if v4.is_private() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
            {
                Scope::Private
            } else {
                Scope::Public
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return scope(IpAddr::V4(v4));
            }
            let s0 = v6.segments()[0];
            if v6.is_unspecified() {
                Scope::Unspecified
            } else if v6.is_loopback() {
                Scope::Loopback
            } else if (s0 & 0xfe00) == 0xfc00 || (s0 & 0xffc0) == 0xfe80 {
                Scope::Private
            } else {
                Scope::Public
            }
        }
    }
}

/// `ws://HOST:PORT[/path]` split into (host as written, port, path); `None` if not of that shape.
pub fn split_ws(url: &str) -> Option<(&str, u16, &str)> {
    let rest = url.strip_prefix("ws://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h.split_once("]:")?;
        (h, p)
    } else {
        hostport.rsplit_once(':')?
    };
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?, path))
}

/// `ws://IP:PORT` (IPv6 in brackets).
pub fn ws_url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ws://{v4}:{port}"),
        IpAddr::V6(v6) => format!("ws://[{v6}]:{port}"),
    }
}

/// The addresses the coordinator records and hands out for a node that announced
/// `announced` and whose connection it sees come from `observed` (`None`: not known, as
/// behind an external broker). The rule, per announced `ws://HOST:PORT`:
///
/// - a host name (not an IP literal) or a public IP is kept as written (the operator's
///   `--public-addr`);
/// - an unspecified IP (`0.0.0.0`, `::`) becomes `ws://<observed IP>:PORT`;
/// - a loopback IP is kept only when the node is seen from a loopback address (a test on
///   one machine), a private IP only when the node is seen from a loopback or private
///   address (the coordinator is on that network too: a LAN-only deployment); otherwise
///   it is replaced by `ws://<observed IP>:PORT` (the port as announced: what a port
///   forward or mapping on the node's router would keep);
/// - anything that is not a `ws://HOST:PORT` URL is dropped.
///
/// Duplicates are dropped, order is kept, at most 8 remain. With no observed address,
/// only host names and public IPs are kept, and loopback/private ones if nothing else
/// would remain (a coordinator that cannot see where nodes come from cannot judge).
pub fn effective_addrs(announced: &[String], observed: Option<IpAddr>) -> Vec<String> {
    let seen = observed.map(scope);
    let mut out: Vec<String> = Vec::new();
    fn push(out: &mut Vec<String>, s: String) {
        if out.len() < 8 && !out.contains(&s) {
            out.push(s);
        }
    }
    let mut local_only = Vec::new();
    for a in announced {
        let Some((host, port, _)) = split_ws(a) else {
            continue;
        };
        let Ok(ip) = host.parse::<IpAddr>() else {
            push(&mut out, a.clone()); // a name: the operator's word
            continue;
        };
        let keep = match (scope(ip), seen) {
            (Scope::Public, _) => true,
            (Scope::Unspecified, _) => false,
            (Scope::Loopback, Some(Scope::Loopback)) => true,
            (Scope::Private, Some(Scope::Loopback | Scope::Private)) => true,
            (Scope::Loopback | Scope::Private, None) => {
                local_only.push(a.clone());
                continue;
            }
            _ => false,
        };
        if keep {
            push(&mut out, a.clone());
        } else if let Some(o) = observed {
            push(&mut out, ws_url(o, port));
        }
    }
    if out.is_empty() {
        for a in local_only {
            push(&mut out, a);
        }
    }
    out
}

/// What a node says of a [`crate::wire::CoordMsg::Reachability`] (`None`: nothing to say
/// yet, a dial-back is under way).
pub fn reachability_line(observed: &str, addrs: &[String], reachable: u8) -> Option<String> {
    let seen = if observed.is_empty() {
        String::new()
    } else {
        format!(" (the coordinator sees this node at {observed})")
    };
    match reachable {
        1 => Some(format!("reachable at {}{seen}", addrs.join(", "))),
        2 => Some(format!(
            "not reachable from the network{seen}: peers reach this node through the relay \
             (turn UPnP on in your router, forward the peer port on it, or pass --public-addr)"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }
    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_default_listener_behind_nat_is_announced_at_the_address_the_coordinator_sees() {
        let got = effective_addrs(&v(&["ws://0.0.0.0:7447"]), ip("203.0.113.9"));
        assert_eq!(got, v(&["ws://203.0.113.9:7447"]));
        let got = effective_addrs(&v(&["ws://[::]:7447"]), ip("2001:db8::5"));
        assert_eq!(got, v(&["ws://[2001:db8::5]:7447"]));
    }

    #[test]
    fn lan_and_loopback_addresses_never_reach_the_internet() {
        let got = effective_addrs(
            &v(&[
                "ws://192.168.1.5:7447",
                "ws://127.0.0.1:7000",
                "ws://10.1.2.3:9",
            ]),
            ip("198.51.100.7"),
        );
        assert_eq!(
            got,
            v(&[
                "ws://198.51.100.7:7447",
                "ws://198.51.100.7:7000",
                "ws://198.51.100.7:9"
            ])
        );
        assert_eq!(
            effective_addrs(&v(&["ws://100.64.3.3:7447"]), ip("198.51.100.7")),
            v(&["ws://198.51.100.7:7447"]),
            "carrier-grade NAT space is not public"
        );
    }

    #[test]
    fn a_coordinator_on_the_same_lan_or_machine_keeps_local_addresses() {
        assert_eq!(
            effective_addrs(&v(&["ws://127.0.0.1:7000"]), ip("127.0.0.1")),
            v(&["ws://127.0.0.1:7000"])
        );
        assert_eq!(
            effective_addrs(&v(&["ws://192.168.1.5:7447"]), ip("192.168.1.9")),
            v(&["ws://192.168.1.5:7447"])
        );
        assert_eq!(
            effective_addrs(&v(&["ws://0.0.0.0:7447"]), ip("10.0.0.2")),
            v(&["ws://10.0.0.2:7447"])
        );
        // seen from the LAN, a loopback address still reaches nobody else
        assert_eq!(
            effective_addrs(&v(&["ws://127.0.0.1:7000"]), ip("192.168.1.9")),
            v(&["ws://192.168.1.9:7000"])
        );
    }

    #[test]
    fn public_addresses_and_names_are_the_operators_word() {
        let a = v(&["ws://node.example.org:7447", "ws://198.51.100.7:7447"]);
        assert_eq!(effective_addrs(&a, ip("203.0.113.9")), a);
        assert_eq!(effective_addrs(&a, None), a);
    }

    #[test]
    fn without_an_observed_address_local_ones_are_kept_only_as_a_last_resort() {
        assert_eq!(
            effective_addrs(&v(&["ws://127.0.0.1:7000"]), None),
            v(&["ws://127.0.0.1:7000"])
        );
        assert_eq!(
            effective_addrs(&v(&["ws://127.0.0.1:7000", "ws://a.example:1"]), None),
            v(&["ws://a.example:1"])
        );
        assert!(effective_addrs(&v(&["ws://0.0.0.0:7447"]), None).is_empty());
    }

    #[test]
    fn malformed_and_duplicate_addresses_are_dropped() {
        let got = effective_addrs(
            &v(&[
                "http://x:1",
                "ws://nohost",
                "ws://0.0.0.0:7447",
                "ws://0.0.0.0:7447",
            ]),
            ip("203.0.113.9"),
        );
        assert_eq!(got, v(&["ws://203.0.113.9:7447"]));
    }
}
