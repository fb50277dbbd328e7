//! NAT-PMP (RFC 6886): the port-mapping protocol of routers that do not speak UPnP-IGD
//! (Apple's, and many running miniupnpd with UPnP off). A client sends small UDP requests to
//! its default gateway's port 5351 and retransmits them (250 ms, doubling) until the
//! gateway answers. pluto asks for the gateway's external address and a TCP mapping of its
//! peer port; the layouts are those of the RFC, big-endian:
//!
//! | message | bytes |
//! |---|---|
//! | external address request | `0` (version), `0` (opcode) |
//! | external address reply | `0`, `128`, result `u16`, epoch `u32`, IPv4 address (4 bytes) |
//! | TCP mapping request | `0`, `2`, `0 0`, internal port `u16`, suggested external port `u16`, lifetime `u32` |
//! | TCP mapping reply | `0`, `130`, result `u16`, epoch `u32`, internal port `u16`, external port `u16`, lifetime `u32` |
//!
//! A lifetime of 0 (with suggested port 0) removes the mapping. Replies that are not the
//! answer to the request in flight (another opcode, another internal port, too short, from
//! another address) are ignored, as the RFC asks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

/// The gateway's NAT-PMP port.
pub const PORT: u16 = 5351;
/// The first retransmission interval (RFC 6886 §3.1), doubled after each try.
pub const FIRST_WAIT: Duration = Duration::from_millis(250);
/// Tries when looking for a gateway (250 + 500 + 1000 ms: under the UPnP search's 3 s, which
/// runs beside it).
pub const PROBE_TRIES: u32 = 3;
/// Tries for a mapping, once the gateway is known to answer.
pub const MAP_TRIES: u32 = 4;

const OP_EXTERNAL: u8 = 0;
const OP_MAP_TCP: u8 = 2;
const REPLY: u8 = 128;

#[derive(Debug, thiserror::Error)]
pub enum NatPmpError {
    /// Nothing (or only nonsense) came back: no NAT-PMP gateway there.
    #[error("no NAT-PMP answer from {gateway} within {tries} tries")]
    NoAnswer { gateway: SocketAddr, tries: u32 },
    /// The gateway answered with a result code other than success.
    #[error("the NAT-PMP gateway at {gateway} refused {what}: {}", result_text(*code))]
    Refused {
        gateway: SocketAddr,
        what: &'static str,
        code: u16,
    },
    #[error("the NAT-PMP gateway at {gateway} granted a forward without an external port")]
    NoPort { gateway: SocketAddr },
    #[error("NAT-PMP to {gateway}: {source}")]
    Io {
        gateway: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl NatPmpError {
    /// Whether it says only that no NAT-PMP gateway is there (no answer, or the gateway's
    /// port closed).
    pub fn no_gateway(&self) -> bool {
        match self {
            NatPmpError::NoAnswer { .. } => true,
            NatPmpError::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::ConnectionRefused
                    || super::portmap::no_route(source)
            }
            NatPmpError::Refused { .. } | NatPmpError::NoPort { .. } => false,
        }
    }
}

/// What RFC 6886 §3.5 calls each result code.
pub fn result_text(code: u16) -> String {
    match code {
        1 => "unsupported version (1)".into(),
        2 => "not authorized (2)".into(),
        3 => "network failure (3)".into(),
        4 => "out of resources (4)".into(),
        5 => "unsupported opcode (5)".into(),
        c => format!("result code {c}"),
    }
}

pub fn external_request() -> [u8; 2] {
    [0, OP_EXTERNAL]
}

pub fn map_request(internal: u16, suggested: u16, lifetime: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[1] = OP_MAP_TCP;
    b[4..6].copy_from_slice(&internal.to_be_bytes());
    b[6..8].copy_from_slice(&suggested.to_be_bytes());
    b[8..12].copy_from_slice(&lifetime.to_be_bytes());
    b
}

/// The answer to an external address request: `Some(Ok(ip))`, `Some(Err(code))` for a
/// refusal, `None` when `b` is no such answer (ignored).
pub fn parse_external_reply(b: &[u8]) -> Option<Result<Ipv4Addr, u16>> {
    if b.len() < 8 || b[0] != 0 || b[1] != REPLY + OP_EXTERNAL {
        return None;
    }
    let code = u16::from_be_bytes([b[2], b[3]]);
    if code != 0 {
        return Some(Err(code));
    }
    let ip: [u8; 4] = b.get(8..12)?.try_into().ok()?;
    Some(Ok(Ipv4Addr::from(ip)))
}

/// The answer to a TCP mapping request for `internal`: `Some(Ok((external port, lifetime)))`,
/// `Some(Err(code))`, or `None` when `b` is no such answer.
pub fn parse_map_reply(b: &[u8], internal: u16) -> Option<Result<(u16, u32), u16>> {
    if b.len() < 8 || b[0] != 0 || b[1] != REPLY + OP_MAP_TCP {
        return None;
    }
    let code = u16::from_be_bytes([b[2], b[3]]);
    if code != 0 {
        // a refusal names the internal port too; one for another port is not ours
        return match b.get(8..10) {
            Some(p) if u16::from_be_bytes([p[0], p[1]]) != internal => None,
            _ => Some(Err(code)),
        };
    }
    if b.len() < 16 || u16::from_be_bytes([b[8], b[9]]) != internal {
        return None;
    }
    let external = u16::from_be_bytes([b[10], b[11]]);
    let lifetime = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
    Some(Ok((external, lifetime)))
}

/// The IPv4 default gateway in the text of Linux's `/proc/net/route` (the first default
/// route with the gateway flag; addresses are written as little-endian hex).
pub fn gateway_in_route_table(text: &str) -> Option<Ipv4Addr> {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (dest, gw, flags, mask) = (f[1], f[2], f[3], f[7]);
        let Ok(flags) = u16::from_str_radix(flags, 16) else {
            continue;
        };
        const RTF_UP: u16 = 0x1;
        const RTF_GATEWAY: u16 = 0x2;
        if dest == "00000000" && mask == "00000000" && flags & (RTF_UP | RTF_GATEWAY) == 3 {
            if let Ok(g) = u32::from_str_radix(gw, 16) {
                return Some(Ipv4Addr::from(g.swap_bytes()));
            }
        }
    }
    None
}

/// This machine's default gateway (Linux); `None` elsewhere or without one.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    gateway_in_route_table(&text)
}

/// A gateway that answered NAT-PMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    pub addr: SocketAddr,
}

impl Gateway {
    /// Ask `addr` for its external address: the gateway if it answers.
    pub async fn probe(addr: SocketAddr) -> Result<(Gateway, Ipv4Addr), NatPmpError> {
        let g = Gateway { addr };
        let ip = g.external_ip_tries(PROBE_TRIES).await?;
        Ok((g, ip))
    }

    pub async fn external_ip(&self) -> Result<Ipv4Addr, NatPmpError> {
        self.external_ip_tries(MAP_TRIES).await
    }

    async fn external_ip_tries(&self, tries: u32) -> Result<Ipv4Addr, NatPmpError> {
        self.ask(&external_request(), tries, parse_external_reply)
            .await?
            .map_err(|code| NatPmpError::Refused {
                gateway: self.addr,
                what: "to tell its external address",
                code,
            })
    }

    /// Map TCP `internal` (this machine's port), asking for `suggested` outside, for
    /// `lifetime` seconds: (the external port granted, the lifetime granted).
    pub async fn map_tcp(
        &self,
        internal: u16,
        suggested: u16,
        lifetime: u32,
    ) -> Result<(u16, u32), NatPmpError> {
        let (port, granted) = self
            .ask(
                &map_request(internal, suggested, lifetime),
                MAP_TRIES,
                |b| parse_map_reply(b, internal),
            )
            .await?
            .map_err(|code| NatPmpError::Refused {
                gateway: self.addr,
                what: "the port forward",
                code,
            })?;
        if lifetime > 0 && port == 0 {
            // "success" with no port to announce: as good as a refusal
            return Err(NatPmpError::NoPort { gateway: self.addr });
        }
        Ok((port, granted))
    }

    /// Remove the mapping of TCP `internal`.
    pub async fn unmap_tcp(&self, internal: u16) -> Result<(), NatPmpError> {
        self.map_tcp(internal, 0, 0).await.map(|_| ())
    }

    /// Send `req` and wait for an answer `parse` accepts, retransmitting `tries` times
    /// (250 ms, doubling).
    async fn ask<T>(
        &self,
        req: &[u8],
        tries: u32,
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<T, NatPmpError> {
        let io = |source| NatPmpError::Io {
            gateway: self.addr,
            source,
        };
        let bind: SocketAddr = match self.addr.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(bind).await.map_err(io)?;
        // connected: only the gateway's datagrams arrive, and a closed port is an error
        sock.connect(self.addr).await.map_err(io)?;
        let mut wait = FIRST_WAIT;
        let mut buf = [0u8; 64];
        for _ in 0..tries {
            sock.send(req).await.map_err(io)?;
            let until = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
                    Err(_) => break, // this try's time is up
                    Ok(Ok(n)) => {
                        if let Some(v) = parse(&buf[..n]) {
                            return Ok(v);
                        }
                    }
                    Ok(Err(e)) => return Err(io(e)),
                }
            }
            wait *= 2;
        }
        Err(NatPmpError::NoAnswer {
            gateway: self.addr,
            tries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_laid_out_as_rfc_6886_says() {
        assert_eq!(external_request(), [0, 0]);
        assert_eq!(
            map_request(7447, 7447, 3600),
            [0, 2, 0, 0, 0x1d, 0x17, 0x1d, 0x17, 0, 0, 0x0e, 0x10]
        );
        assert_eq!(map_request(7447, 0, 0)[6..], [0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn replies_are_read_and_strangers_ignored() {
        let ext = [0, 128, 0, 0, 0, 0, 0, 9, 198, 51, 101, 22];
        assert_eq!(
            parse_external_reply(&ext),
            Some(Ok(Ipv4Addr::new(198, 51, 101, 22)))
        );
        assert_eq!(
            parse_external_reply(&[0, 128, 0, 3, 0, 0, 0, 9]),
            Some(Err(3))
        );
        assert_eq!(parse_external_reply(&ext[..10]), None, "too short");
        assert_eq!(
            parse_external_reply(&[1, 128, 0, 0, 0, 0, 0, 9, 1, 2, 3, 4]),
            None
        );
        let map = [
            0, 130, 0, 0, 0, 0, 0, 9, 0x1d, 0x17, 0x9c, 0xbb, 0, 0, 0x0e, 0x10,
        ];
        assert_eq!(parse_map_reply(&map, 7447), Some(Ok((40123, 3600))));
        assert_eq!(parse_map_reply(&map, 7448), None, "another port's");
        assert_eq!(parse_map_reply(&map[..12], 7447), None);
        assert_eq!(parse_map_reply(&ext, 7447), None, "another opcode");
        let refused = [0, 130, 0, 2, 0, 0, 0, 9, 0x1d, 0x17, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_map_reply(&refused, 7447), Some(Err(2)));
        assert_eq!(parse_map_reply(&refused, 9), None);
    }

    #[test]
    fn the_default_gateway_is_read_from_the_route_table() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     lan\t0065A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     lan\t00000000\t0165A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            gateway_in_route_table(table),
            Some(Ipv4Addr::new(192, 168, 101, 1))
        );
        assert_eq!(gateway_in_route_table(&table[..140]), None);
        assert_eq!(gateway_in_route_table(""), None);
    }

    /// A gateway on 127.0.0.1 that first sends junk and a reply for another port, then the
    /// real answer to each request (external 198.51.101.22, port + 1000, half the lifetime).
    async fn gateway(refuse: bool) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let t = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let req = &buf[..n];
                let _ = sock.send_to(b"junk", from).await;
                let mut r = vec![0, 128 + req[1], 0, u8::from(refuse) * 2, 0, 0, 1, 0];
                if req[1] == 0 {
                    r.extend([198, 51, 101, 22]);
                } else {
                    let internal = u16::from_be_bytes([req[4], req[5]]);
                    let mut other = r.clone();
                    other.extend((internal + 1).to_be_bytes());
                    other.extend([0u8; 6]);
                    let _ = sock.send_to(&other, from).await;
                    let life = u32::from_be_bytes([req[8], req[9], req[10], req[11]]);
                    r.extend(internal.to_be_bytes());
                    r.extend((internal + 1000).to_be_bytes());
                    r.extend((life / 2).to_be_bytes());
                }
                let _ = sock.send_to(&r, from).await;
            }
        });
        (addr, t)
    }

    #[tokio::test]
    async fn a_gateway_maps_the_port_and_removes_it() {
        let (addr, g) = gateway(false).await;
        let (gw, ip) = Gateway::probe(addr).await.unwrap();
        assert_eq!(ip, Ipv4Addr::new(198, 51, 101, 22));
        assert_eq!(gw.map_tcp(7447, 7447, 3600).await.unwrap(), (8447, 1800));
        gw.unmap_tcp(7447).await.unwrap();
        g.abort();
    }

    #[tokio::test]
    async fn a_refusal_is_named_and_silence_is_no_gateway() {
        let (addr, g) = gateway(true).await;
        let e = Gateway::probe(addr).await.unwrap_err();
        assert!(!e.no_gateway());
        assert!(e.to_string().contains("not authorized (2)"), "{e}");
        g.abort();
        // a socket that never answers
        let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let t0 = std::time::Instant::now();
        let e = Gateway::probe(quiet.local_addr().unwrap())
            .await
            .unwrap_err();
        assert!(e.no_gateway(), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        // a closed port (ICMP port unreachable on loopback)
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let e = Gateway::probe(closed).await.unwrap_err();
        assert!(e.no_gateway(), "{e}");
    }
}
