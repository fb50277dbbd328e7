//! Alerts: on events a person should hear of (see [`Event::alerts`]), run a hook command
//! (the JSON event on its stdin and in `PLUTO_EVENT`) and/or POST the JSON to a webhook.
//! At most one alert per kind per `min_interval`; events of a kind arriving meanwhile are
//! folded into the next one (the latest is sent, with `"coalesced": N`). Deliveries run in
//! a task of their own behind a small queue: a slow hook or a dead webhook never holds the
//! node up — what does not fit is dropped, and failures are logged.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::event::Event;
use super::{NodeError, Result};

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Run with `sh -c`, the event's JSON on stdin and in `PLUTO_EVENT`.
    pub cmd: Option<String>,
    /// `http://HOST[:PORT]/PATH`: POSTed the event's JSON.
    pub url: Option<String>,
    /// At most one alert of a kind this often.
    pub min_interval: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            cmd: None,
            url: None,
            min_interval: Duration::from_secs(60),
        }
    }
}

/// How long a hook or a webhook may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Alerts waiting for delivery at most.
const QUEUE: usize = 16;

/// A webhook address: host, port, path. Only `http://` (an https client would pull a TLS
/// stack into every node; put a local relay in front for https).
pub fn parse_webhook(url: &str) -> Result<(String, u16, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        NodeError::Invalid(format!(
            "--notify-url {url:?}: only http:// URLs are supported (https: relay through a local proxy)"
        ))
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| NodeError::Invalid(format!("--notify-url {url:?}: bad port {p:?}")))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(NodeError::Invalid(format!("--notify-url {url:?}: no host")));
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// Start the alert tasks over the node's events; `warn` hears of failed deliveries.
pub fn spawn(
    cfg: NotifyConfig,
    mut events: broadcast::Receiver<Event>,
    warn: impl Fn(String) + Send + Sync + 'static,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    if cfg.cmd.is_none() && cfg.url.is_none() {
        return Ok(None);
    }
    let hook = cfg.url.as_deref().map(parse_webhook).transpose()?;
    let warn = std::sync::Arc::new(warn);
    let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
    let (cmd, w) = (cfg.cmd.clone(), warn.clone());
    tokio::spawn(async move {
        while let Some(json) = rx.recv().await {
            if let Some(c) = &cmd {
                if let Err(e) = run_hook(c, &json).await {
                    w(format!("--notify-cmd: {e}"));
                }
            }
            if let Some((h, p, path)) = &hook {
                if let Err(e) = post(h, *p, path, &json).await {
                    w(format!("--notify-url: {e}"));
                }
            }
        }
    });
    let min = cfg.min_interval;
    Ok(Some(tokio::spawn(async move {
        let mut limiter = Limiter::new(min);
        let send = |e: &Event, folded: u32| {
            let mut v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap_or_default();
            if folded > 0 {
                v["coalesced"] = folded.into();
            }
            if tx.try_send(v.to_string()).is_err() {
                warn(format!(
                    "alert {} dropped: {QUEUE} alerts are waiting",
                    e.kind()
                ));
            }
        };
        loop {
            let due = limiter.next_due();
            tokio::select! {
                r = events.recv() => match r {
                    Ok(e) if e.alerts() => {
                        if let Some((e, n)) = limiter.offer(e, Instant::now()) {
                            send(&e, n);
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn(format!("alerts fell behind: {n} event(s) not looked at"));
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = async { match due { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    for (e, n) in limiter.due(Instant::now()) {
                        send(&e, n);
                    }
                }
            }
        }
        // what waits is sent before the node goes
        for (e, n) in limiter.flush() {
            send(&e, n);
        }
    })))
}

/// Per kind: when its last alert went, and the one waiting (with how many it folds in).
type Slot = (Option<Instant>, Option<(Event, u32)>);

/// One alert per kind per interval; the rest folded into the next.
struct Limiter {
    min: Duration,
    slots: HashMap<&'static str, Slot>,
}

impl Limiter {
    fn new(min: Duration) -> Self {
        Limiter {
            min,
            slots: HashMap::new(),
        }
    }

    /// The event to send now (with how many were folded into it), or none: it waits.
    fn offer(&mut self, e: Event, now: Instant) -> Option<(Event, u32)> {
        let slot = self.slots.entry(e.kind()).or_default();
        match slot.0 {
            Some(t) if now < t + self.min => {
                let folded = slot.1.as_ref().map_or(0, |(_, n)| n + 1);
                slot.1 = Some((e, folded));
                None
            }
            _ => {
                slot.0 = Some(now);
                Some((e, 0))
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|(_, p)| p.is_some())
            .filter_map(|(t, _)| t.map(|t| t + self.min))
            .min()
    }

    fn due(&mut self, now: Instant) -> Vec<(Event, u32)> {
        let min = self.min;
        let mut out = Vec::new();
        for slot in self.slots.values_mut() {
            if slot.1.is_some() && slot.0.is_none_or(|t| now >= t + min) {
                out.extend(slot.1.take());
                slot.0 = Some(now);
            }
        }
        out
    }

    fn flush(&mut self) -> Vec<(Event, u32)> {
        self.slots.values_mut().filter_map(|s| s.1.take()).collect()
    }
}

async fn run_hook(cmd: &str, json: &str) -> std::io::Result<()> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PLUTO_EVENT", json)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // a hook that does not read its stdin is fine
        let _ = stdin.write_all(json.as_bytes()).await;
        let _ = stdin.write_all(b"\n").await;
    }
    match tokio::time::timeout(DELIVERY_TIMEOUT, child.wait()).await {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(std::io::Error::other(format!("{cmd:?} exited with {st}"))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other(format!(
            "{cmd:?} did not finish within {DELIVERY_TIMEOUT:?}; killed"
        ))),
    }
}

/// A minimal HTTP/1.1 POST: the JSON body, `Connection: close`, a 2xx status expected.
async fn post(host: &str, port: u16, path: &str, json: &str) -> std::io::Result<()> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: pluto\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = s.read(&mut head).await?;
        let line = String::from_utf8_lossy(&head[..n]);
        let code = line.split_whitespace().nth(1).unwrap_or("");
        if line.starts_with("HTTP/1.") && code.starts_with('2') {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "http://{host}:{port}{path} answered {:?}",
                line.lines().next().unwrap_or("")
            )))
        }
    };
    tokio::time::timeout(DELIVERY_TIMEOUT, work)
        .await
        .map_err(|_| std::io::Error::other("no answer within 30 s"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(h: &str) -> Event {
        Event::HostLost {
            host: h.into(),
            reason: "r".into(),
        }
    }

    #[test]
    fn one_alert_per_kind_per_interval_the_rest_folded_into_the_next() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(60));
        assert_eq!(l.offer(lost("a"), t0), Some((lost("a"), 0)));
        assert_eq!(l.offer(lost("b"), t0 + Duration::from_secs(1)), None);
        assert_eq!(l.offer(lost("c"), t0 + Duration::from_secs(2)), None);
        // another kind is not held back
        let m = Event::SnapshotMissed { error: "x".into() };
        assert_eq!(
            l.offer(m.clone(), t0 + Duration::from_secs(3)),
            Some((m, 0))
        );
        assert_eq!(l.next_due(), Some(t0 + Duration::from_secs(60)));
        assert!(l.due(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(l.due(t0 + Duration::from_secs(60)), vec![(lost("c"), 1)]);
        assert_eq!(l.next_due(), None);
    }

    #[test]
    fn webhooks_are_plain_http() {
        assert_eq!(
            parse_webhook("http://127.0.0.1:8080/hook").unwrap(),
            ("127.0.0.1".into(), 8080, "/hook".into())
        );
        assert_eq!(
            parse_webhook("http://example.org").unwrap(),
            ("example.org".into(), 80, "/".into())
        );
        assert!(parse_webhook("https://example.org/x")
            .unwrap_err()
            .to_string()
            .contains("only http://"));
    }

    #[tokio::test]
    async fn the_hook_gets_the_event_on_stdin_and_in_its_environment() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("seen");
        let cmd = format!(
            "cat > {0}.stdin; printf '%s' \"$PLUTO_EVENT\" > {0}.env",
            out.display()
        );
        let (tx, rx) = broadcast::channel(16);
        let cfg = NotifyConfig {
            cmd: Some(cmd),
            url: None,
            min_interval: Duration::from_secs(60),
        };
        let task = spawn(cfg, rx, |w| panic!("{w}")).unwrap().unwrap();
        tx.send(Event::Stopping).unwrap(); // not an alert
        tx.send(lost("ab")).unwrap();
        drop(tx);
        task.await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let env_file = d.path().join("seen.env");
        while !env_file.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let env: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&env_file).unwrap()).unwrap();
        assert_eq!(env["event"], "host_lost");
        assert_eq!(env["host"], "ab");
        let stdin = std::fs::read_to_string(d.path().join("seen.stdin")).unwrap();
        assert!(stdin.contains("\"host_lost\""), "{stdin}");
    }
}
