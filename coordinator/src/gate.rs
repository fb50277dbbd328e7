//! The embedded broker's front door: every connection from the network must deliver its
//! MQTT CONNECT — whole, within a deadline and a size limit — before it reaches the broker.
//!
//! rmqtt waits without a time limit for a plain TCP client's first packet, so a stranger
//! who opens connections and says nothing (or claims a 256 MiB CONNECT and sends none of
//! it) could hold them forever and use up the coordinator's sockets. The gate bounds that:
//! at most `max_handshaking` connections may be on their way in at once (more are closed
//! at once), each gets `first_packet_timeout` to deliver its CONNECT, and a CONNECT longer
//! than `max_packet` is refused from its length alone. What passes is spliced to the
//! broker on loopback, unchanged; authentication stays the broker's (signed tokens).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Limits of the gate.
#[derive(Debug, Clone)]
pub struct GateLimits {
    pub max_handshaking: usize,
    pub first_packet_timeout: Duration,
    pub max_packet: usize,
}

impl Default for GateLimits {
    fn default() -> Self {
        GateLimits {
            max_handshaking: 1024,
            first_packet_timeout: Duration::from_secs(10),
            max_packet: pluto_netsync::wire::MAX_FRAME_BYTES + 1024,
        }
    }
}

/// What the gate turned away.
#[derive(Debug, Default)]
pub struct GateStats {
    pub passed: AtomicU64,
    /// Closed on arrival: too many connections were on their way in.
    pub over_limit: AtomicU64,
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
                "nodes are being refused: the coordinator is out of file descriptors (every \
                 connected node holds some); raise LimitNOFILE= in its systemd unit, or `ulimit -n` in the shell that \
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

/// Accept on `listener` and splice every connection that delivers a CONNECT to `broker`.
pub async fn serve(
    listener: TcpListener,
    broker: SocketAddr,
    limits: GateLimits,
    stats: Arc<GateStats>,
) {
    let handshaking = Arc::new(Semaphore::new(limits.max_handshaking));
    let mut failures = AcceptFailures::default();
    loop {
        let mut tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                stats.accept_failed.fetch_add(1, Ordering::Relaxed);
                failures.record(&e);
                // e.g. out of file descriptors: wait for some to be freed, do not spin
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = handshaking.clone().try_acquire_owned() else {
            stats.over_limit.fetch_add(1, Ordering::Relaxed);
            drop(tcp);
            continue;
        };
        let (limits, stats) = (limits.clone(), stats.clone());
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
            let Ok(mut up) = TcpStream::connect(broker).await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let _ = up.set_nodelay(true);
            if up.write_all(&connect).await.is_err() {
                return;
            }
            stats.passed.fetch_add(1, Ordering::Relaxed);
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
