//! Settings: what to protect (the folder, what to leave out), when (the schedule, how long to
//! keep old backups), with whom (the coordinator, the disk offered) and who to tell (alerts).
//! Saving writes `app.json` and restarts the node with it.

use super::html::{csrf_field, esc, page};
use super::settings::{Keep, Settings};
use super::{auth::Session, field, see_other, App, Form, Page, Query};
use crate::output::bytes;
use axum::extract::{Extension, State};
use axum::response::IntoResponse;
use pluto_netsync::node::schedule::parse_every;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

fn secs(s: u64) -> String {
    match s {
        0 => "0".into(),
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A size as `parse_size` reads it back to the same bytes (never rounded).
fn exact_size(b: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if b != 0 && b.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", b >> shift);
        }
    }
    format!("{b}B")
}

fn num(n: Option<u32>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

async fn render(
    app: &Arc<App>,
    s: &Session,
    overrides: &HashMap<String, String>,
    msg: Option<(bool, String)>,
) -> Page {
    let st = app.settings().await;
    let app2 = app.clone();
    let (folder, excludes) = tokio::task::spawn_blocking(move || {
        let folder = app2.open_repo().ok().and_then(|r| r.worktree());
        let ex = folder
            .as_ref()
            .and_then(|f| {
                std::fs::read_to_string(f.join(pluto_repo::archive::ignore::IGNORE_FILE)).ok()
            })
            .unwrap_or_default();
        (folder, ex)
    })
    .await?;
    let v = |k: &str, d: String| overrides.get(k).cloned().unwrap_or(d);
    let free = pluto_netsync::node::offer::free_bytes(&app.root)
        .map(|f| format!("{} free on this disk", bytes(f)))
        .unwrap_or_default();
    let msg = msg
        .map(|(ok, m)| {
            format!(
                r#"<p class="msg {}" id="{}">{}</p>"#,
                if ok { "ok" } else { "error" },
                if ok { "saved" } else { "error" },
                esc(&m)
            )
        })
        .unwrap_or_default();
    let k = &st.keep;
    let body = format!(
        r#"<h1>Settings</h1>
{msg}
<form method="post" action="/settings" id="settings">{csrf}
<fieldset><legend>What to protect</legend>
<label for="folder">Folder</label>
<input type="text" id="folder" name="folder" value="{folder}">
<p class="hint"><a href="/pick?for=settings">Choose a folder…</a></p>
<label for="excludes">Leave out <span class="hint">(one pattern a line, as in .gitignore: <code>*.tmp</code>, <code>node_modules/</code>; kept in the folder's .plutoignore)</span></label>
<textarea id="excludes" name="excludes">{excludes}</textarea>
</fieldset>
<fieldset><legend>When</legend>
<label for="snapshot_every">Back up every <span class="hint">(30m, 1h, 1d; 0 = only when asked)</span></label>
<input type="text" id="snapshot_every" name="snapshot_every" value="{every}">
<p class="hint">Keep old backups: the newest …, and the newest of each of the last …</p>
<div class="row">
<label>backups <input type="number" min="0" name="keep_last" value="{kl}"></label>
<label>hours <input type="number" min="0" name="keep_hourly" value="{kh}"></label>
<label>days <input type="number" min="0" name="keep_daily" value="{kd}"></label>
<label>weeks <input type="number" min="0" name="keep_weekly" value="{kw}"></label>
<label>months <input type="number" min="0" name="keep_monthly" value="{km}"></label>
<label>years <input type="number" min="0" name="keep_yearly" value="{ky}"></label>
</div>
<p class="hint">All fields empty: keep every backup.</p>
</fieldset>
<fieldset><legend>With whom</legend>
<label for="coordinator">Coordinator</label>
<input type="text" id="coordinator" name="coordinator" value="{coord}" placeholder="mqtt://coordinator.example:1883">
<label for="offer">Disk offered to others <span class="hint">({free})</span></label>
<input type="text" id="offer" name="offer" value="{offer}">
</fieldset>
<fieldset><legend>Alerts</legend>
<label for="notify_cmd">Run this command on an alert <span class="hint">(the event's JSON on its input and in $PLUTO_EVENT)</span></label>
<input type="text" id="notify_cmd" name="notify_cmd" value="{ncmd}" placeholder="notify-send pluto &quot;$PLUTO_EVENT&quot;">
<label for="notify_url">Post alerts to this web address <span class="hint">(http://)</span></label>
<input type="text" id="notify_url" name="notify_url" value="{nurl}">
</fieldset>
<fieldset><legend>Checks on hosts</legend>
<label for="challenge_every">Check that hosts keep your data every</label>
<input type="text" id="challenge_every" name="challenge_every" value="{chal}">
<label for="host_grace">Move data off a host that has not answered for</label>
<input type="text" id="host_grace" name="host_grace" value="{grace}">
</fieldset>
<div class="row"><button type="submit" id="save">Save</button></div>
</form>"#,
        csrf = csrf_field(&s.csrf),
        folder = esc(&v(
            "folder",
            folder.map(|f| f.display().to_string()).unwrap_or_default()
        )),
        excludes = esc(&v("excludes", excludes)),
        every = esc(&v("snapshot_every", secs(st.snapshot_every_secs))),
        kl = esc(&v("keep_last", num(k.last))),
        kh = esc(&v("keep_hourly", num(k.hourly))),
        kd = esc(&v("keep_daily", num(k.daily))),
        kw = esc(&v("keep_weekly", num(k.weekly))),
        km = esc(&v("keep_monthly", num(k.monthly))),
        ky = esc(&v("keep_yearly", num(k.yearly))),
        coord = esc(&v(
            "coordinator",
            st.coordinator.clone().unwrap_or_default()
        )),
        offer = esc(&v("offer", exact_size(st.offer))),
        ncmd = esc(&v("notify_cmd", st.notify_cmd.clone().unwrap_or_default())),
        nurl = esc(&v("notify_url", st.notify_url.clone().unwrap_or_default())),
        chal = esc(&v("challenge_every", secs(st.challenge_every_secs))),
        grace = esc(&v("host_grace", secs(st.host_grace_secs))),
    );
    Ok(page("Settings", "settings", &body).into_response())
}

pub async fn show(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    qs: Query,
) -> Page {
    if !app.repo_exists() {
        return Ok(see_other("/welcome"));
    }
    let saved = qs.0.contains_key("saved").then(|| {
        (
            true,
            "Saved; the node restarted with these settings.".to_string(),
        )
    });
    // From the folder picker: the chosen folder, not yet saved.
    let mut over = HashMap::new();
    if let Some(f) = qs.0.get("folder") {
        over.insert("folder".to_string(), f.clone());
    }
    render(&app, &s, &over, saved).await
}

/// The form's fields as settings, or what is wrong with them.
fn parse(
    f: &HashMap<String, String>,
    old: &Settings,
    root: &std::path::Path,
) -> Result<Settings, String> {
    // Ten years is no schedule anyone means, and keeps the node's clock arithmetic sane.
    const MAX: u64 = 10 * 366 * 86400;
    let dur = |k: &str, label: &str| -> Result<u64, String> {
        match field(f, k) {
            Some(v) => match parse_every(&v).map(|d| d.as_secs()) {
                Ok(s) if s > MAX => Err(format!("{label}: {v} is longer than ten years")),
                Ok(s) => Ok(s),
                Err(e) => Err(format!("{label}: {e}")),
            },
            None => Err(format!("{label}: give a duration (30m, 1h, 1d)")),
        }
    };
    let keep_n = |k: &str| -> Result<Option<u32>, String> {
        match field(f, k) {
            None => Ok(None),
            Some(v) => v
                .parse::<u32>()
                .map(Some)
                .map_err(|_| format!("keep {}: {v:?} is not a whole number", &k[5..])),
        }
    };
    let coordinator = field(f, "coordinator");
    if let Some(c) = &coordinator {
        if !c.starts_with("mqtt://") {
            return Err(format!("coordinator: {c} does not start with mqtt://"));
        }
    }
    let offer = match field(f, "offer") {
        Some(o) => crate::output::parse_size(&o).map_err(|e| format!("disk offered: {e}"))?,
        None => old.offer,
    };
    super::welcome::check_offer_fits(root, offer)?;
    let notify_url = field(f, "notify_url");
    if let Some(u) = &notify_url {
        if !u.starts_with("http://") {
            return Err(format!("alerts: {u} is not an http:// address"));
        }
    }
    let every = dur("snapshot_every", "back up every")?;
    Ok(Settings {
        coordinator,
        offer,
        snapshot_every_secs: every,
        challenge_every_secs: dur("challenge_every", "check hosts every")?,
        host_grace_secs: dur("host_grace", "move data off a host after")?.max(1),
        keep: Keep {
            last: keep_n("keep_last")?,
            hourly: keep_n("keep_hourly")?,
            daily: keep_n("keep_daily")?,
            weekly: keep_n("keep_weekly")?,
            monthly: keep_n("keep_monthly")?,
            yearly: keep_n("keep_yearly")?,
        },
        notify_cmd: field(f, "notify_cmd"),
        notify_url,
        ..old.clone()
    })
}

pub async fn save(State(app): State<Arc<App>>, Extension(s): Extension<Session>, f: Form) -> Page {
    if app.recovering() {
        return Ok(see_other("/welcome/recovering"));
    }
    let old = app.settings().await;
    let new = match parse(&f.0, &old, &app.root) {
        Ok(n) => n,
        Err(e) => return render(&app, &s, &f.0, Some((false, e))).await,
    };
    // The folder and its .plutoignore: the repository's record and the folder's own file.
    let folder = field(&f.0, "folder").map(PathBuf::from);
    let excludes = f.0.get("excludes").cloned().unwrap_or_default();
    let app2 = app.clone();
    let r = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let repo = app2.open_repo()?;
        let mut dir = repo.worktree();
        if let Some(want) = folder {
            let want = std::fs::canonicalize(&want)
                .map_err(|e| anyhow::anyhow!("folder {}: {e}", want.display()))?;
            if !want.is_dir() {
                anyhow::bail!("folder {}: not a folder", want.display());
            }
            if dir.as_ref() != Some(&want) {
                repo.set_worktree(&want)?;
            }
            dir = Some(want);
        }
        if let Some(d) = dir {
            let file = d.join(pluto_repo::archive::ignore::IGNORE_FILE);
            let now = std::fs::read_to_string(&file).unwrap_or_default();
            let wanted = if excludes.trim().is_empty() {
                String::new()
            } else {
                format!("{}\n", excludes.trim_end().replace("\r\n", "\n"))
            };
            if now != wanted {
                if wanted.is_empty() {
                    std::fs::remove_file(&file).ok();
                } else {
                    let tmp = d.join(format!("{}.tmp", pluto_repo::archive::ignore::IGNORE_FILE));
                    std::fs::write(&tmp, &wanted)
                        .and_then(|_| std::fs::rename(&tmp, &file))
                        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                }
            }
        }
        Ok(())
    })
    .await?;
    if let Err(e) = r {
        return render(&app, &s, &f.0, Some((false, crate::error_chain(&e)))).await;
    }
    app.set_settings(new).await?;
    Ok(see_other("/settings?saved=1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_shown_read_back_exactly_and_absurd_schedules_are_refused() {
        for b in [1u64 << 30, 1536 << 20, 10 << 30, 12345, 3 << 40] {
            assert_eq!(crate::output::parse_size(&exact_size(b)), Ok(b), "{b}");
        }
        let mut f: HashMap<String, String> = [
            ("snapshot_every", "9223372036854775807"),
            ("challenge_every", "10m"),
            ("host_grace", "3d"),
            ("offer", "16M"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let d = tempfile::tempdir().unwrap();
        let e = parse(&f, &Settings::default(), d.path()).unwrap_err();
        assert!(e.contains("ten years"), "{e}");
        f.insert("snapshot_every".into(), "1h".into());
        let s = parse(&f, &Settings::default(), d.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.snapshot_every_secs, 3600);
        assert_eq!(s.offer, 16 << 20);
    }
}
