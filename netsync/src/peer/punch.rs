//! TCP hole punching: two nodes behind NATs that map a local port to the same external port
//! whatever the destination ("cone" NATs, most home routers) reach each other directly by
//! dialling each other at once, each from its own peer port, through the holes their own
//! outgoing SYNs open (a TCP simultaneous open). The coordinator tells both sides where the
//! other is and when to start (`NodeMsg::PunchRequest`, `CoordMsg::PunchOffer`); the Noise
//! handshake above authenticates the result exactly as on a direct dial, so a punch can
//! reach the wrong machine but never be fooled by it.
//!
//! Both sides dial from the port their listener is bound to, so the listener is bound with
//! `SO_REUSEPORT` — after a plain bind of the same address succeeded, so that a second
//! program on the port is still refused as before instead of silently sharing it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// How long each side keeps dialling: SYNs of the two sides must cross, and each side's
/// order to start arrives with the coordinator's delay.
pub const WINDOW: Duration = Duration::from_secs(6);

/// The delay the coordinator gives both sides before they start (their orders arrive at
/// different moments; the dials then overlap for most of the window).
pub const START_DELAY_MS: u32 = 300;

fn socket_for(addr: &SocketAddr) -> std::io::Result<TcpSocket> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    Ok(s)
}

/// Bind the peer listener: refused when another program holds the address (a plain bind
/// first), then bound again with `SO_REUSEPORT` so that [`dial`] can use its port.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let probe = std::net::TcpListener::bind(addr)?;
    let addr = probe.local_addr()?; // port 0: the free port it found
    drop(probe);
    let s = socket_for(&addr)?;
    s.bind(addr)?;
    s.listen(1024)
}

/// A node's peer port as hole punches use it: its number, and the punches waiting for a
/// connection. Either side's SYN may reach the other's *listener* first (when the other
/// is between tries): the listener then hands that connection to the punch waiting for
/// that address ([`PunchPort::claim`]) instead of serving it as a new peer.
#[derive(Clone, Debug)]
pub struct PunchPort {
    pub port: u16,
    waiting: Arc<Mutex<HashMap<SocketAddr, oneshot::Sender<TcpStream>>>>,
    /// The accept task of a port of its own ([`PunchPort::bind_own`]), ended with the last
    /// clone.
    _own: Option<Arc<AbortOnDrop>>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PunchPort {
    /// The punches of a listener the caller serves (its accept loop calls [`Self::claim`]).
    pub fn new(port: u16) -> PunchPort {
        PunchPort {
            port,
            waiting: Arc::default(),
            _own: None,
        }
    }

    /// A port of its own, for a process with no peer listener (a one-off `pluto push`):
    /// a free port, whose listener only hands connections to the punches waiting for them
    /// (anything else is closed). Must run inside a tokio runtime.
    pub fn bind_own() -> std::io::Result<PunchPort> {
        let l = bind_listener((std::net::Ipv4Addr::UNSPECIFIED, 0).into())?;
        let mut p = PunchPort::new(l.local_addr()?.port());
        let me = p.clone();
        p._own = Some(Arc::new(AbortOnDrop(tokio::spawn(async move {
            while let Ok((t, from)) = l.accept().await {
                drop(me.claim(from, t));
            }
        }))));
        Ok(p)
    }

    /// For the accept loop: the connection from `from` is a punch's (taken), or not (given
    /// back, to serve).
    pub fn claim(&self, from: SocketAddr, tcp: TcpStream) -> Option<TcpStream> {
        let tx = self.waiting.lock().ok()?.remove(&from);
        match tx {
            Some(tx) => tx.send(tcp).err(),
            None => Some(tcp),
        }
    }

    /// Reach `to`: dial it from this port again and again, and take what the listener got
    /// from it meanwhile, whichever comes first, until `window` has passed. A refused or
    /// unanswered SYN is what a punch looks like until the other side's SYN has opened its
    /// NAT; each try uses a new socket on the same port.
    pub async fn dial(&self, to: SocketAddr, window: Duration) -> std::io::Result<TcpStream> {
        let (tx, mut rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(to, tx);
        }
        let r = tokio::select! {
            r = dial_from(self.port, to, window) => match r {
                Ok(t) => Ok(t),
                // The listener may have taken it in the last moment.
                Err(e) => rx.try_recv().map_err(|_| e),
            },
            Ok(t) = &mut rx => Ok(t),
        };
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&to);
        }
        r
    }
}

/// Dial `to` from local port `from_port` until a connection stands or `window` has passed.
async fn dial_from(from_port: u16, to: SocketAddr, window: Duration) -> std::io::Result<TcpStream> {
    let deadline = Instant::now() + window;
    let local: SocketAddr = if to.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, from_port).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, from_port).into()
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::TimedOut, "no try was made");
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let s = socket_for(&to)?;
        s.bind(local)?;
        // One SYN and its first retransmission (Linux: after 1 s) per try.
        match tokio::time::timeout(left.min(Duration::from_millis(1500)), s.connect(to)).await {
            Ok(Ok(t)) => {
                let _ = t.set_nodelay(true);
                return Ok(t);
            }
            Ok(Err(e)) => {
                // "Address not available": the connection between the two ports stands
                // already — the listener took the other side's SYN; wait for it there.
                last = e;
                tokio::time::sleep(Duration::from_millis(100).min(left)).await;
            }
            Err(_) => {
                last = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
            }
        }
    }
    Err(std::io::Error::new(
        last.kind(),
        format!("no punched connection to {to} within {window:?} (last: {last})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_listeners_dialling_each_other_from_their_own_ports_meet() {
        let a = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let (pa, pb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // Both dial at once, each from its listener's port: the connection each gets is the
        // one between the two peer ports (a simultaneous open, or one side's listener
        // taking the other's SYN — either way a stream from port to port).
        let (ppa, ppb) = (PunchPort::new(pa.port()), PunchPort::new(pb.port()));
        // What the listeners get goes to the punches (as the node's accept loop does).
        for (l, pp) in [(a, ppa.clone()), (b, ppb.clone())] {
            tokio::spawn(async move {
                while let Ok((t, from)) = l.accept().await {
                    assert!(pp.claim(from, t).is_none(), "a punch's connection, taken");
                }
            });
        }
        let (x, y) = tokio::join!(
            ppa.dial(pb, Duration::from_secs(5)),
            ppb.dial(pa, Duration::from_secs(5))
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.local_addr().unwrap().port(), pa.port());
        assert_eq!(x.peer_addr().unwrap(), pb);
        assert_eq!(y.local_addr().unwrap().port(), pb.port());
        assert_eq!(y.peer_addr().unwrap(), pa);
        // A second program on a listener's address is still refused.
        assert!(bind_listener(pa).is_err());
        // A connection from an address no punch waits for is the listener's to serve.
        assert!(std::net::TcpListener::bind(pa).is_err());
    }

    #[tokio::test]
    async fn a_punch_to_nobody_ends_within_its_window() {
        let a = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let t = Instant::now();
        // 192.0.2.1 (TEST-NET-1) never answers; the window bounds the tries.
        let r = PunchPort::new(a.local_addr().unwrap().port())
            .dial("192.0.2.1:9".parse().unwrap(), Duration::from_millis(700))
            .await;
        assert!(r.is_err());
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
}
