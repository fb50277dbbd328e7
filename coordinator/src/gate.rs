//! The embedded broker's front door: every connection from the network must deliver its
//! MQTT CONNECT — whole, within a deadline and a size limit — before it reaches the broker.
//!
//! rmqtt waits without a time limit for a plain TCP client's first packet, so a stranger
//! who opens connections and says nothing (or claims a 256 MiB CONNECT and sends none of
//! it) could hold them forever and use up the coordinator's sockets. The gate bounds that:
//! at most `max_handshaking` connections may be on their way in at once (more are closed
//! at once), each gets `first_packet_timeout` to deliver its CONNECT, and a CONNECT longer
//! than `max_packet` is refused from its length alone. What passes is handed, socket and
//! the bytes already read, to the broker in the same process (see `vendor/README.md`): one
//! file descriptor per node. Authentication stays the broker's (signed tokens).
//!
//! Admission is fair between addresses: one address (an IPv6 /64 counts as one) may have at
//! most `max_per_address` connections on their way in, so a single flooding client holds a
//! small share of the slots and everyone else still gets in. A quarter of the slots is kept
//! for addresses a node has already come in from (authenticated, in the last day), so even
//! a flood from many addresses does not keep the nodes already known out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Limits of the gate.
#[derive(Debug, Clone)]
pub struct GateLimits {
    /// Connections on their way in (accepted, CONNECT not yet delivered), in all.
    pub max_handshaking: usize,
    /// ... and from one address (an IPv6 /64 is one address).
    pub max_per_address: usize,
    pub first_packet_timeout: Duration,
    pub max_packet: usize,
}

impl Default for GateLimits {
    fn default() -> Self {
        GateLimits {
            max_handshaking: 1024,
            max_per_address: 16,
            // A CONNECT is one small packet sent right after the TCP handshake; 5 s leaves a
            // slow link room while a silent socket is let go quickly.
            first_packet_timeout: Duration::from_secs(5),
            max_packet: pluto_netsync::wire::MAX_FRAME_BYTES + 1024,
        }
    }
}

/// What one address is, for fairness: IPv4 addresses one by one, IPv6 by /64 (what one
/// subscriber usually gets).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Addresses a node came in from are remembered this long...
const KNOWN_FOR: Duration = Duration::from_secs(24 * 3600);
/// ... and at most this many (the oldest are forgotten first when the map is full).
const MAX_KNOWN: usize = 100_000;

/// Who is on their way in, and from where; which addresses nodes came in from.
#[derive(Default)]
pub struct Admission {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    known: HashMap<IpAddr, Instant>,
}

/// Why a connection was not let in.
#[derive(Debug, PartialEq, Eq)]
enum Turned {
    Full,
    AddressFull,
}

impl Admission {
    fn is_known(&self, key: &IpAddr, now: Instant) -> bool {
        self.known
            .get(key)
            .is_some_and(|t| now.duration_since(*t) < KNOWN_FOR)
    }

    fn admit(&mut self, key: IpAddr, limits: &GateLimits, now: Instant) -> Result<(), Turned> {
        let mine = self.per_address.get(&key).copied().unwrap_or(0);
        if mine >= limits.max_per_address {
            return Err(Turned::AddressFull);
        }
        // A quarter of the slots only for known addresses.
        let open_to_all = limits.max_handshaking - limits.max_handshaking / 4;
        let cap = if self.is_known(&key, now) {
            limits.max_handshaking
        } else {
            open_to_all
        };
        if self.total >= cap {
            return Err(Turned::Full);
        }
        self.total += 1;
        *self.per_address.entry(key).or_insert(0) += 1;
        Ok(())
    }

    fn release(&mut self, key: &IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_address.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(key);
            }
        }
    }

    /// A node authenticated from `ip`: its address is known from now on.
    pub fn node_came_in(&mut self, ip: IpAddr) {
        self.came_in(address_key(ip), Instant::now());
    }

    fn came_in(&mut self, key: IpAddr, now: Instant) {
        if self.known.len() >= MAX_KNOWN && !self.known.contains_key(&key) {
            self.known.retain(|_, t| now.duration_since(*t) < KNOWN_FOR);
            if self.known.len() >= MAX_KNOWN {
                // Still full of recent ones: forget the oldest half.
                let mut ages: Vec<Instant> = self.known.values().copied().collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                self.known.retain(|_, t| *t > cut);
            }
        }
        self.known.insert(key, now);
    }
}

/// A slot taken by one connection on its way in; given back when dropped.
struct Slot {
    admission: Arc<Mutex<Admission>>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut a) = self.admission.lock() {
            a.release(&self.key);
        }
    }
}

/// What the gate turned away.
#[derive(Debug, Default)]
pub struct GateStats {
    pub passed: AtomicU64,
    /// Closed on arrival: too many connections were on their way in (in all, or from that
    /// address: see `address_over_limit`).
    pub over_limit: AtomicU64,
    /// Of `over_limit`: because that address already had its share on their way in.
    pub address_over_limit: AtomicU64,
    /// Did not deliver a CONNECT in time.
    pub timed_out: AtomicU64,
    /// First packet not a CONNECT, longer than allowed, or malformed.
    pub refused: AtomicU64,
    /// accept() failed (most often: out of file descriptors).
    pub accept_failed: AtomicU64,
}

/// Failed accepts, reported at most every 10 s so a full descriptor table does not also
/// flood the log.
#[derive(Default)]
struct AcceptFailures {
    last_report: Option<std::time::Instant>,
    since_report: u64,
}

impl AcceptFailures {
    fn record(&mut self, e: &std::io::Error) {
        self.since_report += 1;
        let now = std::time::Instant::now();
        if self
            .last_report
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            return;
        }
        self.last_report = Some(now);
        let failed = std::mem::take(&mut self.since_report);
        if crate::fdlimit::is_out_of_descriptors(e) {
            let limit = crate::fdlimit::open_files_limit()
                .map(|(soft, _)| soft.to_string())
                .unwrap_or_else(|_| "unknown".into());
            tracing::error!(
                error = %e,
                open_files_limit = %limit,
                failed,
                "nodes are being refused: the coordinator is out of file descriptors (each \
                 node holds one); raise LimitNOFILE= in its systemd unit, or `ulimit -n` in the shell that \
                 starts it"
            );
        } else {
            tracing::warn!(error = %e, failed, "broker gate: accept failed");
        }
    }
}

/// Why a first packet was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstPacketError {
    NotConnect(u8),
    TooLong(usize),
    BadLength,
    Closed,
}

/// The fixed header of an MQTT packet: (type byte, remaining length, header length), if
/// `buf` holds all of it. The remaining length is a 1–4 byte varint (MQTT 3.1.1 §2.2.3).
pub fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, FirstPacketError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((kind, len, 2 + i)));
        }
    }
    Err(FirstPacketError::BadLength)
}

/// Read the first packet, which must be a CONNECT of at most `max` bytes after its header.
async fn read_connect(tcp: &mut TcpStream, max: usize) -> Result<Vec<u8>, FirstPacketError> {
    let mut buf = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    let (kind, len, header) = loop {
        if let Some(h) = fixed_header(&buf)? {
            break h;
        }
        match tcp.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return Err(FirstPacketError::Closed),
        }
    };
    if kind >> 4 != 1 {
        return Err(FirstPacketError::NotConnect(kind));
    }
    if len > max {
        return Err(FirstPacketError::TooLong(len));
    }
    buf.resize(header + len, 0);
    tcp.read_exact(&mut buf[header..])
        .await
        .map_err(|_| FirstPacketError::Closed)?;
    Ok(buf)
}

/// What the gate does with a connection that delivered its CONNECT: the socket, the peer's
/// address and the CONNECT's bytes (already read from the socket). It runs for as long as
/// the connection lives.
pub type Handoff = Arc<
    dyn Fn(
            TcpStream,
            SocketAddr,
            Vec<u8>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Accept on `listener` and hand every connection that delivers a CONNECT to `handoff`.
pub async fn serve(
    listener: TcpListener,
    limits: GateLimits,
    stats: Arc<GateStats>,
    admission: Arc<Mutex<Admission>>,
    handoff: Handoff,
) {
    let mut failures = AcceptFailures::default();
    loop {
        let (mut tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                stats.accept_failed.fetch_add(1, Ordering::Relaxed);
                failures.record(&e);
                // e.g. out of file descriptors: wait for some to be freed, do not spin
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let key = address_key(peer.ip());
        let admitted = match admission.lock() {
            Ok(mut a) => a.admit(key, &limits, Instant::now()),
            Err(_) => Err(Turned::Full),
        };
        if let Err(why) = admitted {
            stats.over_limit.fetch_add(1, Ordering::Relaxed);
            if why == Turned::AddressFull {
                stats.address_over_limit.fetch_add(1, Ordering::Relaxed);
            }
            drop(tcp);
            continue;
        }
        let permit = Slot {
            admission: admission.clone(),
            key,
        };
        let (limits, stats, handoff) = (limits.clone(), stats.clone(), handoff.clone());
        tokio::spawn(async move {
            let first = tokio::time::timeout(
                limits.first_packet_timeout,
                read_connect(&mut tcp, limits.max_packet),
            )
            .await;
            drop(permit);
            let connect = match first {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(?e, "broker gate: first packet refused");
                    return;
                }
                Err(_) => {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let _ = tcp.set_nodelay(true);
            stats.passed.fetch_add(1, Ordering::Relaxed);
            handoff(tcp, peer, connect).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        address_key(s.parse().unwrap())
    }

    #[test]
    fn one_address_gets_a_small_share_and_known_addresses_a_reserve() {
        let limits = GateLimits {
            max_handshaking: 40,
            max_per_address: 4,
            ..GateLimits::default()
        };
        let now = Instant::now();
        let mut a = Admission::default();
        for _ in 0..4 {
            assert_eq!(a.admit(ip("10.0.0.1"), &limits, now), Ok(()));
        }
        assert_eq!(
            a.admit(ip("10.0.0.1"), &limits, now),
            Err(Turned::AddressFull)
        );
        // an IPv6 /64 is one address
        for i in 0..4 {
            let v6 = format!("2001:db8:1:2::{i}");
            assert_eq!(a.admit(ip(&v6), &limits, now), Ok(()));
        }
        assert_eq!(
            a.admit(ip("2001:db8:1:2:ffff::9"), &limits, now),
            Err(Turned::AddressFull)
        );
        assert_eq!(a.admit(ip("2001:db8:1:3::1"), &limits, now), Ok(()));
        a.came_in(ip("192.0.2.7"), now);
        // unknown addresses fill the three quarters open to all...
        for i in 0..21 {
            assert_eq!(a.admit(ip(&format!("10.1.0.{i}")), &limits, now), Ok(()));
        }
        assert_eq!(a.total, 30);
        assert_eq!(a.admit(ip("10.2.0.1"), &limits, now), Err(Turned::Full));
        // ...and a known one still gets in
        assert_eq!(a.admit(ip("192.0.2.7"), &limits, now), Ok(()));
        // slots are given back
        for _ in 0..4 {
            a.release(&ip("10.0.0.1"));
        }
        assert!(!a.per_address.contains_key(&ip("10.0.0.1")));
        assert_eq!(a.admit(ip("10.0.0.1"), &limits, now), Ok(()));
    }

    #[test]
    fn fixed_headers_are_read_as_mqtt_defines_them() {
        assert_eq!(fixed_header(&[]), Ok(None));
        assert_eq!(fixed_header(&[0x10]), Ok(None));
        assert_eq!(fixed_header(&[0x10, 0x00]), Ok(Some((0x10, 0, 2))));
        assert_eq!(fixed_header(&[0x10, 0x7f]), Ok(Some((0x10, 127, 2))));
        assert_eq!(fixed_header(&[0x10, 0x80, 0x01]), Ok(Some((0x10, 128, 3))));
        assert_eq!(
            fixed_header(&[0x10, 0xff, 0xff, 0xff, 0x7f]),
            Ok(Some((0x10, 268_435_455, 5)))
        );
        assert_eq!(fixed_header(&[0x10, 0xff, 0xff, 0xff]), Ok(None));
        assert_eq!(
            fixed_header(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(FirstPacketError::BadLength)
        );
    }
}
