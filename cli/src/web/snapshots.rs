//! Snapshots: the list, a snapshot's tree, one file or a folder as a download, a restore to a
//! chosen place (with the same per-entry report as `pluto checkout`), and the changes
//! between two snapshots. Every read goes through the repository library, as the CLI's do.

use super::html::{csrf_field, esc, page, q, when};
use super::{auth::Session, field, see_other, App, Form, Page, Query};
use crate::output::bytes;
use axum::body::Body;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use pluto_repo::crypto::ObjType;
use pluto_repo::snapshot::SnapshotEntry;
use pluto_repo::tree::Kind;
use pluto_repo::Repository;
use std::path::PathBuf;
use std::sync::Arc;

/// Run a repository read off the async threads.
async fn with_repo<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&Repository) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app.open_repo()?)).await?
}

fn find(repo: &Repository, id: &str) -> anyhow::Result<SnapshotEntry> {
    Ok(repo.find_snapshot(id)?)
}

pub async fn list(State(app): State<Arc<App>>, Extension(_s): Extension<Session>) -> Page {
    if !app.repo_exists() {
        return Ok(see_other("/welcome"));
    }
    let snaps = with_repo(&app, |r| Ok(r.snapshots()?)).await?;
    let mut rows = String::new();
    let mut opts = String::new();
    for (i, e) in snaps.iter().enumerate().rev() {
        let s = &e.snapshot;
        rows.push_str(&format!(
            r#"<tr><td><a class="mono" href="/snapshots/{id}">{short}</a></td><td>{}</td><td class="opt">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(&when(s.time_ns / 1_000_000_000)),
            esc(&s.paths.join(", ")),
            s.stats.files,
            bytes(s.stats.bytes),
            id = esc(&e.id),
            short = esc(e.short_id()),
        ));
        opts.push_str(&format!(
            r#"<option value="{}"{}>{} — {}</option>"#,
            esc(&e.id),
            if i + 1 == snaps.len() {
                " selected"
            } else {
                ""
            },
            esc(e.short_id()),
            esc(&when(s.time_ns / 1_000_000_000))
        ));
    }
    if snaps.is_empty() {
        rows.push_str(r#"<tr><td colspan="5">No backups yet.</td></tr>"#);
    }
    let older: String = snaps
        .len()
        .checked_sub(2)
        .map(|i| snaps[i].id.clone())
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Snapshots</h1>
<div class="table"><table id="snapshots"><thead><tr><th>Snapshot</th><th>Taken</th><th class="opt">Folder</th><th class="num">Files</th><th class="num">Size</th></tr></thead><tbody>{rows}</tbody></table></div>
<h2>Compare two snapshots</h2>
<form method="get" action="/diff" id="diff-form" class="row">
<select name="a" aria-label="older snapshot">{}</select>
<select name="b" aria-label="newer snapshot">{opts}</select>
<button type="submit">Show changes</button></form>"#,
        opts.replace(" selected", "").replace(
            &format!(r#"value="{}">"#, esc(&older)),
            &format!(r#"value="{}" selected>"#, esc(&older))
        )
    );
    Ok(page("Snapshots", "snapshots", &body).into_response())
}

/// `docs/a` → [("", "root"), ("docs", "docs"), ("docs/a", "a")], for the breadcrumbs.
fn crumbs(path: &str) -> Vec<(String, String)> {
    let mut v = vec![(String::new(), "top".to_string())];
    let mut at = String::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(c);
        v.push((at.clone(), c.to_string()));
    }
    v
}

pub async fn browse(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    UrlPath(id): UrlPath<String>,
    qs: Query,
) -> Page {
    let path = qs.0.get("path").cloned().unwrap_or_default();
    let p2 = path.clone();
    let (snap, entries) = with_repo(&app, move |r| {
        let snap = find(r, &id)?;
        let list = pluto_repo::ls::list(r, &snap.snapshot.tree, &snap.id, &p2, false)?;
        Ok((snap, list))
    })
    .await?;
    let mut rows = String::new();
    for l in &entries {
        let name = l.path.rsplit('/').next().unwrap_or(&l.path);
        let link = match l.node.kind {
            Kind::Dir => format!(
                r#"<a href="/snapshots/{}?path={}">{}/</a>"#,
                esc(&snap.id),
                q(&l.path),
                esc(name)
            ),
            Kind::File => format!(
                r#"<a href="/snapshots/{}/file?path={}" download>{}</a>"#,
                esc(&snap.id),
                q(&l.path),
                esc(name)
            ),
            _ => esc(name),
        };
        rows.push_str(&format!(
            r#"<tr><td>{link}</td><td class="opt mono">{}</td><td class="num">{}</td><td class="opt">{}</td></tr>"#,
            esc(&pluto_repo::ls::mode_string(l.node.kind, l.node.mode)),
            if l.node.kind == Kind::File { bytes(l.node.size) } else { String::new() },
            esc(&when(l.node.mtime_ns / 1_000_000_000)),
        ));
    }
    if entries.is_empty() {
        rows.push_str(r#"<tr><td colspan="4">empty folder</td></tr>"#);
    }
    let trail: Vec<String> = crumbs(&path)
        .into_iter()
        .map(|(p, n)| {
            format!(
                r#"<a href="/snapshots/{}?path={}">{}</a>"#,
                esc(&snap.id),
                q(&p),
                esc(&n)
            )
        })
        .collect();
    let default_target = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(format!("pluto-restore-{}", snap.short_id()));
    let what = if path.is_empty() {
        "everything".to_string()
    } else {
        path.clone()
    };
    let body = format!(
        r#"<h1>Snapshot <span class="mono">{short}</span></h1>
<p>Taken {} of {}: {} files, {}.</p>
<p id="crumbs">{}</p>
<div class="table"><table id="entries"><thead><tr><th>Name</th><th class="opt">Mode</th><th class="num">Size</th><th class="opt">Modified</th></tr></thead><tbody>{rows}</tbody></table></div>
<h2>Get {what_e} back</h2>
<div class="row"><a class="button secondary" id="tar" href="/snapshots/{id}/tar?path={qp}">Download as .tar</a></div>
<form method="post" action="/snapshots/{id}/restore" id="restore">{csrf}
<input type="hidden" name="path" value="{path_e}">
<label for="target">Restore into this folder <span class="hint">(it must be empty or new)</span></label>
<input type="text" id="target" name="target" value="{target}">
<div class="row"><button type="submit" id="restore-go">Restore</button></div>
</form>"#,
        esc(&when(snap.snapshot.time_ns / 1_000_000_000)),
        esc(&snap.snapshot.paths.join(", ")),
        snap.snapshot.stats.files,
        bytes(snap.snapshot.stats.bytes),
        trail.join(" / "),
        short = esc(snap.short_id()),
        id = esc(&snap.id),
        qp = q(&path),
        what_e = esc(&what),
        path_e = esc(&path),
        csrf = csrf_field(&s.csrf),
        target = esc(&default_target.display().to_string()),
    );
    Ok(page("Snapshot", "snapshots", &body).into_response())
}

/// A body fed by a blocking writer (the repository's readers write; the page streams).
struct ChanWriter(tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>);

impl std::io::Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "download cancelled")
            })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn streamed(
    name: &str,
    content_type: &'static str,
    len: Option<u64>,
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The name as RFC 6266 wants it: ASCII fallback, and the real name percent-encoded.
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let enc: String = form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{enc}"
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(n) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    r
}

pub async fn file(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>, qs: Query) -> Page {
    let path = field(&qs.0, "path").ok_or_else(|| anyhow::anyhow!("which file? (no path)"))?;
    let p2 = path.clone();
    // Found first, so a wrong path is a page that says so, not a broken download.
    let (node, short) = with_repo(&app, move |r| {
        let snap = find(r, &id)?;
        let node = pluto_repo::restore::lookup(r, &snap.snapshot.tree, &p2)?
            .ok_or_else(|| anyhow::anyhow!("{p2} is not in snapshot {}", snap.short_id()))?;
        if node.kind != Kind::File {
            anyhow::bail!("{p2} is not a file in snapshot {}", snap.short_id());
        }
        Ok((node, snap.short_id().to_string()))
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let size = node.size;
    let name = path.rsplit('/').next().unwrap_or(&path).to_string();
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || {
        let repo = match app2.open_repo() {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        for c in &node.chunks {
            let item = repo
                .read_object(c, ObjType::Chunk)
                .map(bytes::Bytes::from)
                .map_err(|e| std::io::Error::other(format!("{path} in snapshot {short}: {e}")));
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    Ok(streamed(&name, "application/octet-stream", Some(size), rx))
}

pub async fn tar(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>, qs: Query) -> Page {
    let path = qs.0.get("path").cloned().unwrap_or_default();
    let (id2, p2) = (id.clone(), path.clone());
    // Found first, so a wrong path is a page that says so, not a broken download.
    let snap = with_repo(&app, move |r| {
        let snap = find(r, &id2)?;
        if !p2.is_empty() && pluto_repo::restore::lookup(r, &snap.snapshot.tree, &p2)?.is_none() {
            anyhow::bail!("{p2} is not in snapshot {}", snap.short_id());
        }
        Ok(snap)
    })
    .await?;
    let base = if path.is_empty() {
        format!("snapshot-{}", snap.short_id())
    } else {
        path.rsplit('/').next().unwrap_or(&path).to_string()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || {
        let err = tx.clone();
        let r = (|| -> anyhow::Result<()> {
            let repo = app2.open_repo()?;
            let opts = pluto_repo::tar::TarOptions {
                paths: if path.is_empty() {
                    Vec::new()
                } else {
                    vec![path.clone()]
                },
                progress: None,
                // Damaged entries: the download ends cut, never as a whole-looking archive.
                unended_if_partial: true,
            };
            pluto_repo::tar::write_tar(
                &repo,
                &snap.snapshot,
                &snap.id,
                std::io::BufWriter::with_capacity(1 << 20, ChanWriter(tx)),
                std::path::Path::new("the download"),
                &opts,
            )?;
            Ok(())
        })();
        if let Err(e) = r {
            let _ = err.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Ok(streamed(
        &format!("{base}.tar"),
        "application/x-tar",
        None,
        rx,
    ))
}

pub async fn restore(
    State(app): State<Arc<App>>,
    Extension(_s): Extension<Session>,
    UrlPath(id): UrlPath<String>,
    f: Form,
) -> Page {
    let path = f.0.get("path").cloned().unwrap_or_default();
    let target =
        field(&f.0, "target").ok_or_else(|| anyhow::anyhow!("restore into which folder?"))?;
    let target = PathBuf::from(target);
    if !target.is_absolute() {
        return Err(
            anyhow::anyhow!("{}: give the full path of the folder", target.display()).into(),
        );
    }
    let start_after = f.0.get("start").is_some_and(|v| v == "1");
    let (p2, t2) = (path.clone(), target.clone());
    let result = with_repo(&app, move |r| {
        let snap = find(r, &id)?;
        let opts = pluto_repo::restore::RestoreOptions {
            force: false,
            paths: if p2.is_empty() { Vec::new() } else { vec![p2] },
            progress: None,
        };
        let stats = pluto_repo::restore::restore(r, &snap.snapshot, &snap.id, &t2, &opts)?;
        Ok((snap.short_id().to_string(), stats))
    })
    .await;
    let (short, stats) = result?;
    // After a recovery's restore (and only once it succeeded) the node starts: before it, a
    // scheduled snapshot of the still-empty folder would have become the newest.
    if start_after && app.node().await.is_none() {
        app.shared.lock().unwrap().job = super::Job::None;
        app.start_node().await;
    }
    let mut lost = String::new();
    for n in &stats.not_restored {
        lost.push_str(&format!(
            "<tr><td class=\"mono\">{}</td><td>{}</td></tr>",
            esc(&n.path),
            esc(&n.reason)
        ));
    }
    let body = format!(
        r#"<h1>Restored</h1>
<p class="msg {}" id="restored">{} of snapshot <span class="mono">{}</span> restored into <span class="mono">{}</span>: {} files, {} folders, {}.{}</p>
{}
<p><a href="/">Back to the overview</a></p>"#,
        if stats.not_restored.is_empty() {
            "ok"
        } else {
            "error"
        },
        esc(if path.is_empty() { "Everything" } else { &path }),
        esc(&short),
        esc(&target.display().to_string()),
        stats.files,
        stats.dirs,
        bytes(stats.bytes),
        if stats.not_restored.is_empty() {
            String::new()
        } else {
            format!(
                " {} entries could not be restored (their data is damaged or missing):",
                stats.not_restored.len()
            )
        },
        if lost.is_empty() {
            String::new()
        } else {
            format!(
                r#"<table id="not-restored"><thead><tr><th>Path</th><th>Why</th></tr></thead><tbody>{lost}</tbody></table>"#
            )
        }
    );
    Ok(page("Restored", "snapshots", &body).into_response())
}

pub async fn diff(State(app): State<Arc<App>>, qs: Query) -> Page {
    let a = field(&qs.0, "a").ok_or_else(|| anyhow::anyhow!("compare which snapshots? (no a)"))?;
    let b = field(&qs.0, "b").ok_or_else(|| anyhow::anyhow!("compare which snapshots? (no b)"))?;
    let (sa, sb, d) = with_repo(&app, move |r| {
        let (sa, sb) = (find(r, &a)?, find(r, &b)?);
        let d = pluto_repo::diff::diff_trees(r, &sa.snapshot.tree, &sb.snapshot.tree)?;
        Ok((sa, sb, d))
    })
    .await?;
    let mut rows = String::new();
    for c in &d.changes {
        let what = match c.change {
            pluto_repo::diff::ChangeKind::Added => "added".to_string(),
            pluto_repo::diff::ChangeKind::Removed => "removed".into(),
            pluto_repo::diff::ChangeKind::Modified => "changed".into(),
            pluto_repo::diff::ChangeKind::Metadata => format!("{} changed", c.fields.join(", ")),
        };
        let size = match (c.old_size, c.new_size) {
            (Some(o), Some(n)) if o != n => format!("{} → {}", bytes(o), bytes(n)),
            (_, Some(n)) => bytes(n),
            (Some(o), None) => bytes(o),
            _ => String::new(),
        };
        rows.push_str(&format!(
            r#"<tr><td class="mono">{}</td><td>{}</td><td class="num">{}</td></tr>"#,
            esc(&c.path),
            esc(&what),
            esc(&size)
        ));
    }
    if d.changes.is_empty() {
        rows.push_str(r#"<tr><td colspan="3">No changes.</td></tr>"#);
    }
    let t = &d.totals;
    let body = format!(
        r#"<h1>Changes from <span class="mono">{}</span> to <span class="mono">{}</span></h1>
<p id="diff-totals">{} added, {} removed, {} changed, {} with other changes.</p>
<div class="table"><table id="changes"><thead><tr><th>Path</th><th>Change</th><th class="num">Size</th></tr></thead><tbody>{rows}</tbody></table></div>"#,
        esc(sa.short_id()),
        esc(sb.short_id()),
        t.added,
        t.removed,
        t.modified,
        t.metadata
    );
    Ok(page("Changes", "snapshots", &body).into_response())
}
