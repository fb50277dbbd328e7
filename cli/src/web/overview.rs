//! The overview: the verdict first, then what the node is doing, give and take per host,
//! and the recent events.

use super::html::{ago, button, esc, page, unix_now};
use super::{auth::Session, see_other, App, Page};
use crate::output::bytes;
use axum::extract::{Extension, State};
use axum::response::{Html, IntoResponse};
use pluto_netsync::node::{Event, NodeStatus};
use pluto_netsync::verdict::{HostStanding, Level, Protection};
use std::sync::Arc;
use std::time::Duration;

pub async fn overview(State(app): State<Arc<App>>, Extension(s): Extension<Session>) -> Page {
    if !app.repo_exists() {
        return Ok(see_other("/welcome"));
    }
    if app.recovering() {
        return Ok(see_other("/welcome/recovering"));
    }
    let live = live_html(&app).await;
    let running = app.node().await.is_some();
    let actions = if running {
        format!(
            r#"<div class="row">{}{}</div>"#,
            button("/snapshot-now", "Back up now", &s.csrf, "snapshot-now"),
            button("/push-now", "Send to hosts now", &s.csrf, "push-now"),
        )
    } else {
        format!(
            r#"<div class="row">{}</div>"#,
            button("/node/start", "Start backing up", &s.csrf, "start-node")
        )
    };
    let body = format!(
        r#"<h1>Overview</h1>
<section id="live" data-live="/live">{live}</section>
{actions}
"#
    );
    Ok(page("Overview", "overview", &body).into_response())
}

/// The part of the overview that changes: refreshed by the page's script every 2 s.
pub async fn live(State(app): State<Arc<App>>) -> Page {
    Ok(Html(live_html(&app).await).into_response())
}

pub async fn snapshot_now(State(app): State<Arc<App>>) -> Page {
    if let Some(n) = app.node().await {
        n.snapshot_now().await?;
    }
    Ok(see_other("/"))
}

pub async fn push_now(State(app): State<Arc<App>>) -> Page {
    if let Some(n) = app.node().await {
        n.push_now().await?;
    }
    Ok(see_other("/"))
}

pub async fn start(State(app): State<Arc<App>>) -> Page {
    if app.recovering() {
        return Ok(see_other("/welcome/recovering"));
    }
    if app.repo_exists() {
        app.start_node().await;
    }
    Ok(see_other("/"))
}

fn level_class(l: Level) -> &'static str {
    match l {
        Level::Protected => "protected",
        Level::AtRisk => "at_risk",
        Level::NotProtected => "not_protected",
    }
}

async fn live_html(app: &Arc<App>) -> String {
    let node = app.node().await;
    let status: Option<NodeStatus> = match &node {
        Some(n) => tokio::time::timeout(Duration::from_secs(3), n.status())
            .await
            .ok()
            .and_then(|r| r.ok()),
        None => None,
    };
    let root = app.root.clone();
    // The node judges after each job; the page judges again now, so an hour-old verdict
    // never stands (the same function as `pluto status`).
    let (protection, newest) = tokio::task::spawn_blocking(move || {
        (
            pluto_netsync::node::ops::protection(&root).ok(),
            pluto_netsync::node::ops::latest_snapshot_unix(&root)
                .ok()
                .flatten(),
        )
    })
    .await
    .unwrap_or_default();
    let protection: Option<Protection> =
        protection.or_else(|| status.as_ref().and_then(|s| s.protection.clone()));
    let settings = app.settings().await;
    let now = unix_now();
    let (events, progress, node_error) = {
        let sh = app.shared.lock().unwrap();
        (
            sh.events.iter().rev().take(15).cloned().collect::<Vec<_>>(),
            sh.push_progress,
            sh.node_error.clone(),
        )
    };
    let mut o = String::new();
    match &protection {
        Some(p) => {
            o.push_str(&format!(
                r#"<div class="verdict {}" id="verdict" role="status">{}"#,
                level_class(p.level),
                esc(&p.summary)
            ));
            if !p.reasons.is_empty() && p.level != Level::Protected {
                o.push_str(r#"<ul class="reasons" id="reasons">"#);
                for r in &p.reasons {
                    o.push_str(&format!("<li>{}</li>", esc(r)));
                }
                o.push_str("</ul>");
            }
            o.push_str("</div>");
        }
        None => o.push_str(
            r#"<div class="verdict not_protected" id="verdict">Not known yet: the records could not be read</div>"#,
        ),
    }
    if let Some(e) = &node_error {
        o.push_str(&format!(
            r#"<p class="msg error" id="node-error">The node is not running: {}</p>"#,
            esc(e)
        ));
    } else if node.is_none() {
        o.push_str(r#"<p class="msg error" id="node-error">The node is not running.</p>"#);
    }
    // Facts: last snapshot, next one, the coordinator, what is under way.
    o.push_str(r#"<div class="facts">"#);
    // From the repository: snapshots taken by an earlier run of the node, or in a terminal,
    // count as much as this run's.
    let last = newest.or_else(|| status.as_ref().and_then(|s| s.last_snapshot_unix));
    o.push_str(&format!(
        "<div><b>Last backup</b>{}</div>",
        last.map(|t| ago(now, t))
            .unwrap_or_else(|| "none yet".into())
    ));
    let next = if settings.snapshot_every_secs == 0 || node.is_none() {
        "not scheduled".to_string()
    } else {
        match last {
            Some(t) if t.saturating_add(settings.snapshot_every_secs) > now => format!(
                "in {}",
                pluto_netsync::verdict::human_duration(
                    t.saturating_add(settings.snapshot_every_secs) - now
                )
            ),
            _ => "now".into(),
        }
    };
    o.push_str(&format!("<div><b>Next backup</b>{next}</div>"));
    if let Some(s) = &status {
        o.push_str(&format!(
            "<div><b>Coordinator</b>{}</div>",
            if s.coordinator_connected {
                "connected"
            } else {
                "not connected"
            }
        ));
        o.push_str(&format!(
            r#"<div><b>Now</b><span id="working">{}</span></div>"#,
            esc(s.working.as_deref().unwrap_or("idle"))
        ));
    }
    o.push_str("</div>");
    if let Some((done, total)) = progress {
        o.push_str(&format!(
            r#"<p>Sending to hosts: {} of {} <progress value="{done}" max="{}"></progress></p>"#,
            bytes(done),
            bytes(total),
            total.max(1)
        ));
    }
    o.push_str(&give_and_take(app, protection.as_ref(), settings.offer));
    o.push_str(r#"<h2>Recent events</h2><ul class="events" id="events">"#);
    if events.is_empty() {
        o.push_str("<li>nothing yet</li>");
    }
    for (t, e) in &events {
        o.push_str(&format!(
            "<li><time>{}</time>{}</li>",
            esc(&super::html::when(*t as i64)),
            esc(&describe(e))
        ));
    }
    o.push_str("</ul>");
    o
}

/// What others keep for this node, per host, against what this node keeps for others.
fn give_and_take(app: &App, p: Option<&Protection>, offer: u64) -> String {
    let mut o = String::from(
        r#"<h2>Give and take</h2><h3 class="hint">Hosts keeping your data</h3><div class="table"><table id="hosts"><thead><tr><th>Host</th><th>State</th><th class="num">Files</th><th>Reached</th><th class="opt">Last check</th></tr></thead><tbody>"#,
    );
    let now = unix_now();
    let hosts = p.map(|p| p.hosts.as_slice()).unwrap_or_default();
    if hosts.is_empty() {
        o.push_str(r#"<tr><td colspan="5">none yet</td></tr>"#);
    }
    for h in hosts {
        let state = match h.standing {
            HostStanding::Verified => "verified".to_string(),
            HostStanding::Unverified => "holding, not checked lately".into(),
            HostStanding::Unreachable => format!(
                "unreachable{}",
                h.unreachable_since
                    .map(|t| format!(
                        " for {}",
                        pluto_netsync::verdict::human_duration(now.saturating_sub(t))
                    ))
                    .unwrap_or_default()
            ),
            HostStanding::Failed => {
                format!("failed: {}", h.failure.as_deref().unwrap_or("a challenge"))
            }
        };
        let path = match h.path {
            Some(pluto_netsync::peer::state::PathKind::Direct) => "direct",
            Some(pluto_netsync::peer::state::PathKind::Relayed) => "relayed",
            Some(pluto_netsync::peer::state::PathKind::Punched) => "direct (punched)",
            None => "—",
        };
        let check = match (h.last_challenge_unix, h.last_challenge_passed) {
            (Some(t), Some(true)) => format!("passed {}", super::html::ago(now, t)),
            (Some(t), _) => format!("failed {}", super::html::ago(now, t)),
            _ => "never".into(),
        };
        o.push_str(&format!(
            r#"<tr><td class="mono" title="{}">{}</td><td>{}</td><td class="num">{}</td><td>{path}</td><td class="opt">{check}</td></tr>"#,
            esc(&h.node),
            esc(h.node.get(..12).unwrap_or(&h.node)),
            esc(&state),
            h.files
        ));
    }
    o.push_str("</tbody></table></div>");
    let hosted = crate::commands::status::hosted_owners(&app.root);
    let total: u64 = hosted.iter().map(|h| h.bytes).sum();
    o.push_str(&format!(
        r#"<h3 class="hint">What you keep for others: {} for {} owner(s), of the {} you offer</h3>"#,
        bytes(total),
        hosted.len(),
        bytes(offer)
    ));
    if !hosted.is_empty() {
        o.push_str(r#"<div class="table"><table id="hosting"><thead><tr><th>Owner</th><th class="num">Files</th><th class="num">Size</th></tr></thead><tbody>"#);
        for h in &hosted {
            o.push_str(&format!(
                r#"<tr><td class="mono">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                esc(h.owner.get(..12).unwrap_or(&h.owner)),
                h.files,
                bytes(h.bytes)
            ));
        }
        o.push_str("</tbody></table></div>");
    }
    o
}

/// One event in a sentence.
pub fn describe(e: &Event) -> String {
    let short = |h: &str| h.get(..12).unwrap_or(h).to_string();
    match e {
        Event::Serving { url, offer, .. } => {
            format!("Node started on {url}, offering {}", bytes(*offer))
        }
        Event::CoordinatorConnected { url } => format!("Connected to the coordinator {url}"),
        Event::CoordinatorUnreachable { error, retry_secs } => {
            format!("Coordinator unreachable ({error}); retrying in {retry_secs} s")
        }
        Event::CoordinatorLost => "Lost the coordinator; reconnecting".into(),
        Event::HostsMatched { count } => format!("{count} host(s) matched for your data"),
        Event::SnapshotTaken {
            id,
            files,
            bytes: b,
            bytes_added,
            partial,
        } => format!(
            "Backup {} saved: {files} files, {} ({} new){}",
            id.get(..8).unwrap_or(id),
            bytes(*b),
            bytes(*bytes_added),
            if *partial > 0 {
                format!("; {partial} path(s) could not be read")
            } else {
                String::new()
            }
        ),
        Event::SnapshotMissed { error } => format!("Scheduled backup missed: {error}"),
        Event::Forgotten { removed, kept } => {
            format!("Old backups thinned: {removed} forgotten, {kept} kept")
        }
        Event::PushProgress { .. } => "Sending…".into(),
        Event::PushDone {
            uploaded,
            bytes: b,
            not_placed,
            errors,
            ..
        } => {
            let mut s = format!("Sent {uploaded} file(s), {} to hosts", bytes(*b));
            if let Some(n) = not_placed {
                s.push_str(&format!("; {n}"));
            }
            if !errors.is_empty() {
                s.push_str(&format!("; {} host(s) failed", errors.len()));
            }
            s
        }
        Event::ChallengePassed { host } => {
            format!("Host {} proved it keeps your data", short(host))
        }
        Event::ChallengeFailed { host, reason } => {
            format!("Host {} failed a check: {reason}", short(host))
        }
        Event::HostUnreachable { host, .. } => format!("Host {} does not answer", short(host)),
        Event::HostLost { host, reason } => {
            format!("Host {} no longer counts: {reason}", short(host))
        }
        Event::HostReplaced { lost, by } => format!(
            "Data of {} lost host(s) placed on {} other(s)",
            lost.len(),
            by.len()
        ),
        Event::ProtectionChanged { verdict, .. } => verdict.clone(),
        Event::Reachability {
            observed,
            reachable,
            ..
        } => format!(
            "The coordinator sees this node at {observed}: {}",
            if *reachable {
                "reachable directly"
            } else {
                "not reachable directly (others reach it through the relay)"
            }
        ),
        Event::PortMapped { external, .. } => format!("Router forwards the port: {external}"),
        Event::RepairDone { owner, .. } => {
            format!("Rebuilt a lost piece of {}'s data", short(owner))
        }
        Event::PacksFetchedBack {
            missing,
            fetched,
            still_missing,
        } => format!(
            "Fetched back {fetched} of {missing} missing piece(s) of data from the hosts{}",
            if *still_missing > 0 {
                format!("; {still_missing} not yet")
            } else {
                String::new()
            }
        ),
        Event::Warning { message } => format!("Warning: {message}"),
        Event::Excluded { reason } => format!("Excluded by the coordinator: {reason}"),
        Event::Error { during, message } => format!("Error during {during}: {message}"),
        Event::Stopping => "Node stopping".into(),
    }
}
