//! Port mapping: a node behind a home router asks the router, through UPnP-IGD or NAT-PMP
//! (RFC 6886, [`super::natpmp`]; tried beside the UPnP search, used when no UPnP router
//! answers), to forward its peer port, and announces the mapped address (`ws://<router's external IP>:<external
//! port>`) to the coordinator, whose dial-back then confirms it (spec:
//! `book/src/wire-coordinator.md`, "Addresses and reachability").
//!
//! The node owns one small task ([`spawn`]): it searches for the router in the background
//! (a router that does not answer costs the node's first announce at most
//! [`FIRST_ANNOUNCE_WAIT`]), maps the peer port (the same external port if the router
//! allows, else any), renews the lease at half its length, says what it has on a `watch`
//! channel (the node re-announces when a mapping appears, changes or goes), and removes the
//! mapping when the node stops (best effort, within [`REMOVE_WITHIN`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use igd_next::aio::tokio::Tokio;
use igd_next::aio::Gateway;
use igd_next::{
    AddAnyPortError, AddPortError, GetExternalIpError, PortMappingProtocol, SearchError,
    SearchOptions,
};
use tokio::sync::watch;

use super::natpmp::{self, NatPmpError};
use super::{scope, ws_url, Scope};

/// The lease asked of the router, in seconds (renewed at half of it).
pub const LEASE_SECS: u32 = 3600;
/// How long the search for a router (SSDP) may take.
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the node's first announce waits for the first mapping attempt to end.
pub const FIRST_ANNOUNCE_WAIT: Duration = Duration::from_secs(2);
/// How long removing the mapping may take when the node stops.
pub const REMOVE_WITHIN: Duration = Duration::from_secs(2);
/// What the mapping is called in the router's table.
pub const DESCRIPTION: &str = "pluto peer port";
/// The protocols named in [`crate::node::Event::PortMapped`].
pub const PROTOCOL: &str = "upnp-igd";
pub const PROTOCOL_NATPMP: &str = "nat-pmp";

/// A port forward the router granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The router's external IP and the external port.
    pub external: SocketAddr,
    /// Where the router forwards to: this node's LAN address and peer port.
    pub internal: SocketAddr,
    /// Seconds the router keeps it without renewal (0: until removed or rebooted).
    pub lease_secs: u32,
    /// How it was asked for: [`PROTOCOL`] or [`PROTOCOL_NATPMP`].
    pub protocol: &'static str,
}

impl Mapping {
    /// The address announced for it.
    pub fn url(&self) -> String {
        ws_url(self.external.ip(), self.external.port())
    }
}

/// What the port-mapping task has, as the node's main loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMapState {
    /// The first attempt has not ended yet.
    Searching,
    /// The router forwards the peer port.
    Mapped(Mapping),
    /// No mapping (no router, refused, lost); the task tries again later.
    Unmapped,
}

/// Why there is no mapping.
#[derive(Debug, thiserror::Error)]
pub enum PortMapError {
    #[error("no UPnP-IGD or NAT-PMP router answered within {0:?}")]
    NoRouter(Duration),
    #[error(transparent)]
    NatPmp(#[from] NatPmpError),
    #[error("searching for a UPnP-IGD router: {0}")]
    Search(#[source] SearchError),
    #[error("no local address towards the router at {router}: {source}")]
    LocalAddr {
        router: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the router at {router} did not tell its external address: {source}")]
    ExternalIp {
        router: SocketAddr,
        #[source]
        source: GetExternalIpError,
    },
    #[error("the router at {router} gave {ip} as its external address, which nobody can dial")]
    BadExternalIp { router: SocketAddr, ip: IpAddr },
    #[error("the router at {router} refused to forward port {port}: {same}; and any port: {any}")]
    Refused {
        router: SocketAddr,
        port: u16,
        same: Box<AddPortError>,
        #[source]
        any: Box<AddAnyPortError>,
    },
    #[error("the router at {router} did not renew the forward of port {port}: {source}")]
    Renew {
        router: SocketAddr,
        port: u16,
        #[source]
        source: AddPortError,
    },
}

impl PortMapError {
    /// Whether a person should hear of it: a router that refuses or fails, yes; no router
    /// at all (a public server, a network without UPnP), no — the reachability line says
    /// what follows from it.
    pub fn worth_a_warning(&self) -> bool {
        match self {
            PortMapError::NoRouter(_) => false,
            PortMapError::NatPmp(e) => !e.no_gateway(),
            _ => true,
        }
    }
}

/// Whether to ask for a mapping of a peer port bound at `listen`: not for a loopback
/// listener (nobody outside this machine could use it), nor for a specific IPv6 address
/// (UPnP-IGD maps IPv4).
pub fn should_map(listen: SocketAddr) -> bool {
    match listen.ip() {
        IpAddr::V4(v4) => !v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

/// The addresses a node announces: the mapped one first (what the internet can dial), then
/// its own (`--public-addr` or `ws://<listen>`), without duplicates.
pub fn announced_addrs(public: &str, mapped: Option<&Mapping>) -> Vec<String> {
    let mut out = Vec::with_capacity(2);
    if let Some(m) = mapped {
        out.push(m.url());
    }
    if !out.iter().any(|a| a == public) {
        out.push(public.to_string());
    }
    out
}

/// When to renew a lease of `lease_secs` (at half of it, at least 10 s after it was granted);
/// a permanent mapping (0) is checked every 20 minutes (a rebooted router forgets it).
pub fn renew_in(lease_secs: u32) -> Duration {
    if lease_secs == 0 {
        return Duration::from_secs(20 * 60);
    }
    Duration::from_secs(u64::from(lease_secs / 2).max(10))
}

/// When to try again after `failures` attempts in a row failed (1, 2, …): 30 s, doubling,
/// at most 30 minutes.
pub fn retry_in(failures: u32) -> Duration {
    let secs = 30u64.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_secs(secs.min(30 * 60))
}

/// Whether an external address a router reports is one to announce: not unspecified, not
/// loopback, not multicast or broadcast. (A private one is kept: behind two NATs the
/// coordinator replaces it with where it sees the node from, and its dial-back decides.)
pub fn usable_external(ip: IpAddr) -> bool {
    let odd = match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    };
    !odd && !matches!(scope(ip), Scope::Unspecified | Scope::Loopback)
}

/// Something the task tells the node: a new mapping (once, not at every renewal), or a
/// failure worth a warning (once per run of failures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Mapped(Mapping),
    Failed(String),
}

/// A router that answered, and the protocol it answered in.
#[derive(Debug, Clone)]
enum Router {
    Upnp(Gateway<Tokio>),
    NatPmp(natpmp::Gateway),
}

impl Router {
    fn addr(&self) -> SocketAddr {
        match self {
            Router::Upnp(g) => g.addr,
            Router::NatPmp(g) => g.addr,
        }
    }
    fn protocol(&self) -> &'static str {
        match self {
            Router::Upnp(_) => PROTOCOL,
            Router::NatPmp(_) => PROTOCOL_NATPMP,
        }
    }
}

/// Where the search for a router goes: from `bind` to `to` (SSDP's multicast group; a test
/// points it at a socket of its own), and the NAT-PMP gateway asked beside it (the default
/// gateway; none without one).
#[derive(Debug, Clone, Copy)]
struct Search {
    bind: SocketAddr,
    to: SocketAddr,
    natpmp: Option<SocketAddr>,
}

impl Default for Search {
    fn default() -> Self {
        let o = SearchOptions::default();
        Search {
            bind: o.bind_addr,
            to: o.broadcast_address,
            natpmp: natpmp::default_gateway().map(|g| SocketAddr::from((g, natpmp::PORT))),
        }
    }
}

/// UPnP-IGD first (the SSDP search), NAT-PMP asked at the same time and used when no UPnP
/// router answered; an error of UPnP's when neither is there.
async fn find_router(search: Search) -> Result<Router, PortMapError> {
    let pmp = search
        .natpmp
        .map(|a| tokio::spawn(natpmp::Gateway::probe(a)));
    let upnp = find_upnp(search).await;
    match (upnp, pmp) {
        (Ok(r), pmp) => {
            if let Some(t) = pmp {
                t.abort();
            }
            Ok(Router::Upnp(r))
        }
        (Err(e), None) => Err(e),
        (Err(e), Some(t)) => match t.await {
            Ok(Ok((g, _))) => Ok(Router::NatPmp(g)),
            Ok(Err(pe)) if !pe.no_gateway() => Err(pe.into()),
            _ => Err(e),
        },
    }
}

async fn find_upnp(search: Search) -> Result<Gateway<Tokio>, PortMapError> {
    let mut o = SearchOptions::default();
    o.bind_addr = search.bind;
    o.broadcast_address = search.to;
    o.timeout = Some(SEARCH_TIMEOUT);
    o.single_search_timeout = Some(SEARCH_TIMEOUT);
    match igd_next::aio::tokio::search_gateway(o).await {
        Ok(r) => Ok(r),
        Err(SearchError::NoResponseWithinTimeout) => Err(PortMapError::NoRouter(SEARCH_TIMEOUT)),
        // no route for the search's multicast: a host with no default route has no router
        Err(SearchError::IoError(e)) if no_route(&e) => Err(PortMapError::NoRouter(SEARCH_TIMEOUT)),
        Err(e) => Err(PortMapError::Search(e)),
    }
}

/// Whether an error says there is no route (to the search's multicast group, or at all).
pub fn no_route(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(e.kind(), K::NetworkUnreachable | K::HostUnreachable)
        || matches!(
            e.raw_os_error(),
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
        )
}

/// This machine's address on the way to the router (what the router forwards to).
fn local_ip_towards(router: SocketAddr) -> Result<IpAddr, PortMapError> {
    let io = |source| PortMapError::LocalAddr { router, source };
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(io)?;
    s.connect(router).map_err(io)?;
    Ok(s.local_addr().map_err(io)?.ip())
}

async fn external_ip(r: &Router) -> Result<IpAddr, PortMapError> {
    let ip = match r {
        Router::Upnp(g) => {
            g.get_external_ip()
                .await
                .map_err(|source| PortMapError::ExternalIp {
                    router: g.addr,
                    source,
                })?
        }
        Router::NatPmp(g) => IpAddr::V4(g.external_ip().await?),
    };
    if !usable_external(ip) {
        return Err(PortMapError::BadExternalIp {
            router: r.addr(),
            ip,
        });
    }
    Ok(ip)
}

/// Ask for `port` itself (so the announced port is the listen port), with a lease, or a
/// permanent mapping on routers that grant only those; else any external port.
async fn map_port(r: &Router, local: IpAddr, port: u16) -> Result<(u16, u32), PortMapError> {
    let r = match r {
        Router::Upnp(g) => g,
        // NAT-PMP maps for the asking address; the gateway grants the suggested port or another
        Router::NatPmp(g) => return Ok(g.map_tcp(port, port, LEASE_SECS).await?),
    };
    let internal = SocketAddr::new(local, port);
    let tcp = PortMappingProtocol::TCP;
    let same = match r
        .add_port(tcp, port, internal, LEASE_SECS, DESCRIPTION)
        .await
    {
        Ok(()) => return Ok((port, LEASE_SECS)),
        Err(AddPortError::OnlyPermanentLeasesSupported) => {
            match r.add_port(tcp, port, internal, 0, DESCRIPTION).await {
                Ok(()) => return Ok((port, 0)),
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    let any = match r.add_any_port(tcp, internal, LEASE_SECS, DESCRIPTION).await {
        Ok(p) => return Ok((p, LEASE_SECS)),
        Err(AddAnyPortError::OnlyPermanentLeasesSupported) => {
            match r.add_any_port(tcp, internal, 0, DESCRIPTION).await {
                Ok(p) => return Ok((p, 0)),
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    Err(PortMapError::Refused {
        router: r.addr,
        port,
        same: Box::new(same),
        any: Box::new(any),
    })
}

async fn map(listen: SocketAddr, search: Search) -> Result<(Router, Mapping), PortMapError> {
    let r = find_router(search).await?;
    let local = match listen.ip() {
        IpAddr::V4(v4) if !v4.is_unspecified() => IpAddr::V4(v4),
        _ => local_ip_towards(r.addr())?,
    };
    let ip = external_ip(&r).await?;
    let (port, lease_secs) = map_port(&r, local, listen.port()).await?;
    let m = Mapping {
        external: SocketAddr::new(ip, port),
        internal: SocketAddr::new(local, listen.port()),
        lease_secs,
        protocol: r.protocol(),
    };
    Ok((r, m))
}

/// Renew `m` with the router; the router's external address may have changed meanwhile.
async fn renew(r: &Router, m: &Mapping) -> Result<Mapping, PortMapError> {
    let ip = external_ip(r).await?;
    let r = match r {
        Router::Upnp(g) => g,
        Router::NatPmp(g) => {
            // the gateway may grant another port (after a reboot): announced anew then
            let (port, lease_secs) = g
                .map_tcp(m.internal.port(), m.external.port(), LEASE_SECS)
                .await?;
            return Ok(Mapping {
                external: SocketAddr::new(ip, port),
                lease_secs,
                ..*m
            });
        }
    };
    r.add_port(
        PortMappingProtocol::TCP,
        m.external.port(),
        m.internal,
        m.lease_secs,
        DESCRIPTION,
    )
    .await
    .map_err(|source| PortMapError::Renew {
        router: r.addr,
        port: m.external.port(),
        source,
    })?;
    Ok(Mapping {
        external: SocketAddr::new(ip, m.external.port()),
        ..*m
    })
}

/// Start the port-mapping task for a peer port bound at `listen`. It publishes its state on
/// the returned channel, tells `note` of new mappings and of failures (each once), and ends
/// — removing the mapping — when `stop` turns true.
pub fn spawn(
    listen: SocketAddr,
    note: impl Fn(Note) + Send + 'static,
    stop: watch::Receiver<bool>,
) -> (watch::Receiver<PortMapState>, tokio::task::JoinHandle<()>) {
    spawn_with(listen, note, stop, Search::default())
}

fn spawn_with(
    listen: SocketAddr,
    note: impl Fn(Note) + Send + 'static,
    mut stop: watch::Receiver<bool>,
    search: Search,
) -> (watch::Receiver<PortMapState>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(PortMapState::Searching);
    let task = tokio::spawn(async move {
        let mut held: Option<(Router, Mapping)> = None;
        let mut told: Option<SocketAddr> = None;
        let (mut failures, mut warned) = (0u32, false);
        loop {
            // a search or a router that is slow to answer never holds up the node's stop;
            // the mapping in hand stays in hand through its renewal, to be removed
            let attempt = async {
                match &held {
                    None => map(listen, search).await,
                    Some((r, m)) => renew(r, m).await.map(|m| (r.clone(), m)),
                }
            };
            let attempt = tokio::select! {
                a = attempt => a,
                _ = stop.wait_for(|s| *s) => break,
            };
            let wait = match attempt {
                Ok((r, m)) => {
                    if told != Some(m.external) {
                        told = Some(m.external);
                        note(Note::Mapped(m));
                    }
                    tx.send_replace(PortMapState::Mapped(m));
                    (failures, warned) = (0, false);
                    let wait = renew_in(m.lease_secs);
                    held = Some((r, m));
                    wait
                }
                Err(e) => {
                    tracing::info!("port mapping: {e}");
                    held = None;
                    tx.send_replace(PortMapState::Unmapped);
                    told = None;
                    failures += 1;
                    if e.worth_a_warning() && !warned {
                        warned = true;
                        note(Note::Failed(format!("port mapping: {e}")));
                    }
                    retry_in(failures)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if let Some((r, m)) = held {
            let gone = async {
                match &r {
                    Router::Upnp(g) => g
                        .remove_port(PortMappingProtocol::TCP, m.external.port())
                        .await
                        .map_err(|e| e.to_string()),
                    Router::NatPmp(g) => g
                        .unmap_tcp(m.internal.port())
                        .await
                        .map_err(|e| e.to_string()),
                }
            };
            match tokio::time::timeout(REMOVE_WITHIN, gone).await {
                Ok(Ok(())) => tracing::debug!("port mapping {} removed", m.url()),
                Ok(Err(e)) => tracing::info!("port mapping {}: not removed: {e}", m.url()),
                Err(_) => tracing::info!("port mapping {}: the router did not answer", m.url()),
            }
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ext: &str, lease: u32) -> Mapping {
        Mapping {
            external: ext.parse().unwrap(),
            internal: "192.168.1.5:7447".parse().unwrap(),
            lease_secs: lease,
            protocol: PROTOCOL,
        }
    }

    #[test]
    fn the_mapped_address_is_announced_first_and_the_own_one_kept() {
        let got = announced_addrs("ws://0.0.0.0:7447", Some(&m("203.0.113.9:7447", 3600)));
        assert_eq!(got, vec!["ws://203.0.113.9:7447", "ws://0.0.0.0:7447"]);
        assert_eq!(
            announced_addrs("ws://0.0.0.0:7447", None),
            vec!["ws://0.0.0.0:7447"]
        );
        // an operator's --public-addr that is the mapped address is not sent twice
        assert_eq!(
            announced_addrs("ws://203.0.113.9:7447", Some(&m("203.0.113.9:7447", 0))),
            vec!["ws://203.0.113.9:7447"]
        );
        // another external port than the listen port
        assert_eq!(
            announced_addrs("ws://0.0.0.0:7447", Some(&m("203.0.113.9:40123", 3600)))[0],
            "ws://203.0.113.9:40123"
        );
    }

    #[test]
    fn leases_are_renewed_at_half_and_permanent_ones_checked() {
        assert_eq!(renew_in(3600), Duration::from_secs(1800));
        assert_eq!(renew_in(7), Duration::from_secs(10), "never a busy loop");
        assert_eq!(renew_in(0), Duration::from_secs(1200));
        assert!(renew_in(LEASE_SECS) < Duration::from_secs(LEASE_SECS.into()));
    }

    #[test]
    fn failures_back_off_to_half_an_hour() {
        assert_eq!(retry_in(1), Duration::from_secs(30));
        assert_eq!(retry_in(2), Duration::from_secs(60));
        assert_eq!(retry_in(7), Duration::from_secs(1800));
        assert_eq!(retry_in(u32::MAX), Duration::from_secs(1800));
        assert_eq!(retry_in(0), Duration::from_secs(30));
    }

    #[test]
    fn loopback_listeners_are_not_mapped() {
        assert!(should_map("0.0.0.0:7447".parse().unwrap()));
        assert!(should_map("192.168.1.5:7447".parse().unwrap()));
        assert!(should_map("[::]:7447".parse().unwrap()));
        assert!(!should_map("127.0.0.1:7447".parse().unwrap()));
        assert!(!should_map("[::1]:7447".parse().unwrap()));
        assert!(!should_map("[2001:db8::1]:7447".parse().unwrap()));
    }

    #[test]
    fn only_dialable_external_addresses_are_announced() {
        for ok in ["198.51.100.21", "203.0.113.9", "100.64.1.1", "192.168.0.1"] {
            assert!(usable_external(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "239.255.255.250",
            "::",
        ] {
            assert!(!usable_external(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn no_router_is_not_worth_a_warning_but_a_refusal_is() {
        assert!(!PortMapError::NoRouter(SEARCH_TIMEOUT).worth_a_warning());
        let e = PortMapError::BadExternalIp {
            router: "192.168.1.1:5000".parse().unwrap(),
            ip: "0.0.0.0".parse().unwrap(),
        };
        assert!(e.worth_a_warning());
        assert!(e.to_string().contains("0.0.0.0"), "{e}");
        assert!(no_route(&std::io::Error::from_raw_os_error(
            libc::ENETUNREACH
        )));
        assert!(!no_route(&std::io::Error::from_raw_os_error(libc::EACCES)));
    }

    /// A search that stays on this machine: sent to a UDP socket the test holds, which
    /// answers with `reply` (nothing when empty), so no real router is ever asked.
    async fn fake_router(reply: &'static [u8]) -> (Search, tokio::task::JoinHandle<()>) {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = sock.local_addr().unwrap();
        let t = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((_, from)) = sock.recv_from(&mut buf).await {
                if !reply.is_empty() {
                    let _ = sock.send_to(reply, from).await;
                }
            }
        });
        let bind = "127.0.0.1:0".parse().unwrap();
        (
            Search {
                bind,
                to,
                natpmp: None,
            },
            t,
        )
    }

    #[tokio::test]
    async fn a_router_that_answers_nonsense_leaves_the_node_unmapped_and_unwarned() {
        let (search, router) = fake_router(
            b"HTTP/1.1 200 OK\r\nLOCATION: not a url\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n",
        )
        .await;
        let notes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let n2 = notes.clone();
        let (_stop_tx, stop) = watch::channel(false);
        let (mut rx, task) = spawn_with(
            "0.0.0.0:7447".parse().unwrap(),
            move |n| n2.lock().unwrap().push(n),
            stop,
            search,
        );
        let t0 = std::time::Instant::now();
        tokio::time::timeout(
            SEARCH_TIMEOUT + Duration::from_secs(3),
            rx.wait_for(|s| *s != PortMapState::Searching),
        )
        .await
        .expect("the first attempt ends with the search")
        .unwrap();
        assert_eq!(*rx.borrow(), PortMapState::Unmapped);
        assert!(t0.elapsed() < SEARCH_TIMEOUT + Duration::from_secs(2));
        assert!(notes.lock().unwrap().is_empty(), "no router: no warning");
        task.abort();
        router.abort();
    }

    /// A router without UPnP that speaks NAT-PMP (on 127.0.0.1, answering as RFC 6886 says):
    /// the node maps through it, says so, and removes the forward when it stops.
    #[tokio::test]
    async fn a_router_with_only_nat_pmp_forwards_the_port() {
        let (mut search, ssdp) = fake_router(b"").await;
        let gw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        search.natpmp = Some(gw.local_addr().unwrap());
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let g = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = gw.recv_from(&mut buf).await {
                let req = buf[..n].to_vec();
                let mut r = vec![0, 128 + req[1], 0, 0, 0, 0, 0, 5];
                if req[1] == 0 {
                    r.extend([198, 51, 101, 22]);
                } else {
                    r.extend(&req[4..6]);
                    let life = u32::from_be_bytes([req[8], req[9], req[10], req[11]]);
                    r.extend(if life == 0 {
                        [0, 0]
                    } else {
                        40123u16.to_be_bytes()
                    });
                    r.extend(life.min(600).to_be_bytes());
                }
                let _ = gw.send_to(&r, from).await;
                let _ = seen_tx.send(req);
            }
        });
        let notes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let n2 = notes.clone();
        let (stop_tx, stop) = watch::channel(false);
        let (mut rx, task) = spawn_with(
            "0.0.0.0:7447".parse().unwrap(),
            move |n| n2.lock().unwrap().push(n),
            stop,
            search,
        );
        tokio::time::timeout(
            SEARCH_TIMEOUT + Duration::from_secs(3),
            rx.wait_for(|s| *s != PortMapState::Searching),
        )
        .await
        .unwrap()
        .unwrap();
        let want = Mapping {
            external: "198.51.101.22:40123".parse().unwrap(),
            internal: "127.0.0.1:7447".parse().unwrap(),
            lease_secs: 600,
            protocol: PROTOCOL_NATPMP,
        };
        assert_eq!(*rx.borrow(), PortMapState::Mapped(want));
        assert_eq!(*notes.lock().unwrap(), vec![Note::Mapped(want)]);
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .unwrap()
            .unwrap();
        let mut asked = Vec::new();
        while let Ok(r) = seen.try_recv() {
            asked.push(r);
        }
        assert_eq!(
            asked.last().unwrap(),
            &natpmp::map_request(7447, 0, 0).to_vec(),
            "removed on stop"
        );
        assert!(asked.contains(&natpmp::map_request(7447, 7447, LEASE_SECS).to_vec()));
        g.abort();
        ssdp.abort();
    }

    #[tokio::test]
    async fn stopping_ends_a_search_under_way_at_once() {
        let (search, router) = fake_router(b"").await;
        let (stop_tx, stop) = watch::channel(false);
        let (rx, task) = spawn_with("0.0.0.0:7447".parse().unwrap(), |_| {}, stop, search);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = std::time::Instant::now();
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the task ends well before the search would")
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert_eq!(*rx.borrow(), PortMapState::Searching);
        router.abort();
    }
}
