//! First run: a new identity (the 24 words shown once, three of them asked back before
//! anything is created), or "I have my words" (the repository recreated from them, the
//! snapshots pulled back from the hosts, then offered for restore). And the folder picker.

use super::html::{csrf_field, esc, page, q};
use super::settings::Settings;
use super::{auth::Session, field, see_other, App, Form, Job, Page, Query};
use crate::output::bytes;
use axum::extract::{Extension, State};
use axum::response::IntoResponse;
use pluto_repo::keys::Entropy;
use pluto_repo::Repository;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A first run between "create" and "confirmed": nothing is on disk yet.
pub struct Pending {
    entropy: Entropy,
    folder: PathBuf,
    coordinator: Option<String>,
    offer: u64,
    /// Word positions (0-based) asked back.
    ask: [usize; 3],
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Bytes free on the disk holding `p` (or its nearest existing parent).
fn free_near(p: &Path) -> Option<u64> {
    let mut at = Some(p);
    while let Some(d) = at {
        if d.exists() {
            return pluto_netsync::node::offer::free_bytes(d);
        }
        at = d.parent();
    }
    None
}

/// The folder, offer and coordinator a first-run form gave, checked.
fn first_run_fields(
    app: &App,
    f: &std::collections::HashMap<String, String>,
) -> Result<(PathBuf, Option<String>, u64), String> {
    let folder = field(f, "folder").ok_or("choose the folder to protect")?;
    let folder = PathBuf::from(folder);
    if !folder.is_absolute() {
        return Err(format!(
            "{}: give the full path of the folder",
            folder.display()
        ));
    }
    let folder =
        std::fs::canonicalize(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    if !folder.is_dir() {
        return Err(format!("{}: not a folder", folder.display()));
    }
    let coordinator = field(f, "coordinator");
    if let Some(c) = &coordinator {
        if !c.starts_with("mqtt://") {
            return Err(format!(
                "{c}: the coordinator's address starts with mqtt://"
            ));
        }
    }
    let offer = match field(f, "offer") {
        Some(o) => crate::output::parse_size(&o).map_err(|e| format!("disk to offer: {e}"))?,
        None => Settings::default().offer,
    };
    check_offer_fits(&app.root, offer)?;
    Ok((folder, coordinator, offer))
}

/// An offer larger than the free disk is refused (the node could not keep its word).
pub fn check_offer_fits(root: &Path, offer: u64) -> Result<(), String> {
    if offer < pluto_netsync::node::offer::MIN_OFFER {
        return Err(format!(
            "disk to offer: {} is too little to host anything (at least {})",
            bytes(offer),
            bytes(pluto_netsync::node::offer::MIN_OFFER)
        ));
    }
    if let Some(free) = free_near(root) {
        let hosted: u64 = crate::commands::status::hosted_owners(root)
            .iter()
            .map(|h| h.bytes)
            .sum();
        if offer > free.saturating_add(hosted) {
            return Err(format!(
                "disk to offer: {} is more than the {} free on this disk",
                bytes(offer),
                bytes(free)
            ));
        }
    }
    Ok(())
}

fn form_page(
    app: &App,
    s: &Session,
    qs: &std::collections::HashMap<String, String>,
    error: Option<&str>,
) -> Page {
    let free = free_near(&app.root)
        .map(|f| format!("{} free on this disk", bytes(f)))
        .unwrap_or_default();
    let folder = qs.get("folder").cloned().unwrap_or_default();
    let coordinator = qs.get("coordinator").cloned().unwrap_or_default();
    let err = error
        .map(|e| format!(r#"<p class="msg error" id="error">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Welcome to pluto</h1>
<p>pluto keeps encrypted copies of a folder on other people's computers, in exchange for some of your free disk. Only you hold the key.</p>
{err}
<div class="choice">
<form method="post" action="/welcome/create" class="card" id="create">
{csrf}
<h2>Start fresh</h2>
<label for="folder">Folder to protect</label>
<input type="text" id="folder" name="folder" value="{folder}" placeholder="/home/you/Documents" required>
<p class="hint"><a href="/pick?for=welcome">Choose a folder…</a></p>
<label for="coordinator">Coordinator <span class="hint">(it matches you with hosts)</span></label>
<input type="text" id="coordinator" name="coordinator" value="{coordinator}" placeholder="mqtt://coordinator.example:1883">
<label for="offer">Disk to offer others <span class="hint">({free})</span></label>
<input type="text" id="offer" name="offer" value="{offer}">
<div class="row"><button type="submit" id="create-go">Create my key</button></div>
</form>
<form method="post" action="/welcome/recover" class="card" id="recover">
{csrf}
<h2>I have my words</h2>
<p class="hint">On a new computer: your 24 recovery words bring your backups back from your hosts.</p>
<label for="words">The 24 words</label>
<textarea id="words" name="words" autocomplete="off" spellcheck="false" required></textarea>
<label for="rfolder">Restore into this folder</label>
<input type="text" id="rfolder" name="folder" value="{folder}" placeholder="/home/you/Documents" required>
<label for="rcoordinator">Coordinator</label>
<input type="text" id="rcoordinator" name="coordinator" value="{coordinator}" placeholder="mqtt://coordinator.example:1883" required>
<div class="row"><button type="submit" id="recover-go">Bring my backups back</button></div>
</form>
</div>"#,
        csrf = csrf_field(&s.csrf),
        folder = esc(&folder),
        coordinator = esc(&coordinator),
        offer = esc(qs.get("offer").map(String::as_str).unwrap_or("10G")),
    );
    Ok(page("Welcome", "", &body).into_response())
}

pub async fn welcome(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    qs: Query,
) -> Page {
    if app.repo_exists() {
        return Ok(see_other("/"));
    }
    form_page(&app, &s, &qs.0, None)
}

pub async fn create(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    f: Form,
) -> Page {
    if app.repo_exists() {
        return Ok(see_other("/"));
    }
    let (folder, coordinator, offer) = match first_run_fields(&app, &f.0) {
        Ok(v) => v,
        Err(e) => return form_page(&app, &s, &f.0, Some(&e)),
    };
    let ask = {
        use rand::seq::index::sample;
        let mut v = sample(&mut rand::rngs::OsRng, 24, 3).into_vec();
        v.sort_unstable();
        [v[0], v[1], v[2]]
    };
    app.shared.lock().unwrap().pending.insert(
        s.key.clone(),
        Pending {
            entropy: Entropy::generate(),
            folder,
            coordinator,
            offer,
            ask,
        },
    );
    Ok(see_other("/welcome/words"))
}

pub async fn words(State(app): State<Arc<App>>, Extension(s): Extension<Session>) -> Page {
    let words = {
        let sh = app.shared.lock().unwrap();
        match sh.pending.get(&s.key) {
            Some(p) => p.entropy.words(),
            None => return Ok(see_other("/welcome")),
        }
    };
    let list: String = words
        .split(' ')
        .map(|w| format!("<li>{}</li>", esc(w)))
        .collect();
    let body = format!(
        r#"<h1>Your 24 recovery words</h1>
<p><strong>Write them down, on paper, and keep them somewhere safe.</strong> They are the only way to get your backups back if this computer is lost. pluto shows them only now, and nobody — not the hosts, not the coordinator — can recover them for you.</p>
<ol class="words" id="words">{list}</ol>
<div class="row"><a class="button" href="/welcome/confirm" id="written">I have written them down</a></div>"#
    );
    Ok(page("Your recovery words", "", &body).into_response())
}

fn confirm_page(app: &App, s: &Session, error: Option<&str>) -> Page {
    let ask = {
        let sh = app.shared.lock().unwrap();
        match sh.pending.get(&s.key) {
            Some(p) => p.ask,
            None => return Ok(see_other("/welcome")),
        }
    };
    let err = error
        .map(|e| format!(r#"<p class="msg error" id="error">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let fields: String = ask
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                r#"<label for="w{i}">Word {}</label><input type="text" id="w{i}" name="w{i}" autocomplete="off" spellcheck="false" required>"#,
                n + 1
            )
        })
        .collect();
    let body = format!(
        r#"<h1>Check your words</h1>
<p>To be sure they are written down right, type three of them.</p>
{err}
<form method="post" action="/welcome/confirm" id="confirm">{}{fields}
<div class="row"><button type="submit" id="confirm-go">Confirm and start</button> <a href="/welcome/words">Show the words again</a></div>
</form>"#,
        csrf_field(&s.csrf)
    );
    Ok(page("Check your words", "", &body).into_response())
}

pub async fn confirm_form(State(app): State<Arc<App>>, Extension(s): Extension<Session>) -> Page {
    confirm_page(&app, &s, None)
}

pub async fn confirm(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    f: Form,
) -> Page {
    let pending = {
        let mut sh = app.shared.lock().unwrap();
        let Some(p) = sh.pending.get(&s.key) else {
            return Ok(see_other("/welcome"));
        };
        let words = p.entropy.words();
        let list: Vec<&str> = words.split(' ').collect();
        let right = p.ask.iter().enumerate().all(|(i, &n)| {
            f.0.get(&format!("w{i}"))
                .is_some_and(|g| g.trim().eq_ignore_ascii_case(list[n]))
        });
        if !right {
            drop(sh);
            return confirm_page(
                &app,
                &s,
                Some("Those are not the words at those places. Look at what you wrote, or show the words again."),
            );
        }
        sh.pending.remove(&s.key).expect("checked above")
    };
    let _first = app.first_run.lock().await;
    if app.repo_exists() {
        return Ok(see_other("/"));
    }
    let root = app.root.clone();
    let folder = pending.folder.clone();
    tokio::task::spawn_blocking(move || {
        Repository::init(&root, &pending.entropy, Some(&folder)).map(|_| ())
    })
    .await??;
    let settings = Settings {
        coordinator: pending.coordinator.clone(),
        offer: pending.offer,
        ..Settings::default()
    };
    app.set_settings(settings).await?;
    Ok(see_other("/"))
}

pub async fn recover(
    State(app): State<Arc<App>>,
    Extension(s): Extension<Session>,
    f: Form,
) -> Page {
    let _first = app.first_run.lock().await;
    if app.repo_exists() {
        return Ok(see_other("/"));
    }
    // New words asked for in this session are not needed any more.
    app.shared.lock().unwrap().pending.remove(&s.key);
    let words = zeroize::Zeroizing::new(f.0.get("words").cloned().unwrap_or_default());
    let entropy = match Entropy::from_words(&words) {
        Ok(e) => e,
        Err(e) => return form_page(&app, &s, &f.0, Some(&format!("recovery words: {e}"))),
    };
    let mut fields = f.0.clone();
    fields.remove("words");
    // The form has no offer: the default, or what the disk can spare (settings change it).
    let offer = free_near(&app.root)
        .map(|free| (free / 2).min(Settings::default().offer))
        .unwrap_or(Settings::default().offer)
        .max(pluto_netsync::node::offer::MIN_OFFER);
    fields.insert("offer".into(), format!("{offer}B"));
    // The folder to restore into may be new on this computer.
    if let Some(d) = field(&f.0, "folder").map(PathBuf::from) {
        if d.is_absolute() && !d.exists() {
            if let Err(e) = std::fs::create_dir_all(&d) {
                return form_page(&app, &s, &f.0, Some(&format!("{}: {e}", d.display())));
            }
        }
    }
    let (folder, coordinator, offer) = match first_run_fields(&app, &fields) {
        Ok(v) => v,
        Err(e) => return form_page(&app, &s, &f.0, Some(&e)),
    };
    let Some(coordinator) = coordinator else {
        return form_page(
            &app,
            &s,
            &f.0,
            Some("the coordinator is needed to find your hosts"),
        );
    };
    let root = app.root.clone();
    let dir = folder.clone();
    tokio::task::spawn_blocking(move || Repository::init(&root, &entropy, Some(&dir)).map(|_| ()))
        .await??;
    let settings = Settings {
        coordinator: Some(coordinator.clone()),
        offer,
        ..Settings::default()
    };
    {
        let root = app.root.clone();
        let s2 = settings.clone();
        tokio::task::spawn_blocking(move || s2.save(&root)).await??;
    }
    // The settings in memory too, without starting the node: it would snapshot the empty
    // folder before the backups are restored into it.
    *app.settings.lock().await = settings;
    let progress = Arc::new(pluto_repo::progress::Progress::default());
    app.shared.lock().unwrap().job = Job::Running {
        what: "Bringing your backups back from your hosts".into(),
        progress: progress.clone(),
    };
    let app2 = app.clone();
    tokio::spawn(async move {
        let root = app2.root.clone();
        let r = crate::commands::pull::pull_everything(
            &root,
            &crate::commands::push::PeerArgs {
                coordinator: Some(coordinator),
                hosts: Vec::new(),
                coordinator_wait: 20,
            },
            false,
            4,
            progress,
        )
        .await;
        let job = match r {
            Ok(rep) => {
                let mut lines = vec![format!(
                    "Fetched {} file(s), {}, from {} host(s).",
                    rep.fetched,
                    bytes(rep.bytes),
                    rep.hosts
                )];
                if rep.complete() && !rep.errors.is_empty() {
                    lines.push(format!(
                        "{} host(s) did not answer; the others were enough.",
                        rep.errors.len()
                    ));
                } else {
                    lines.extend(rep.problems());
                }
                Job::Done {
                    what: "Recovery".into(),
                    ok: rep.complete(),
                    lines,
                }
            }
            Err(e) => Job::Done {
                what: "Recovery".into(),
                ok: false,
                lines: vec![crate::error_chain(&e)],
            },
        };
        app2.shared.lock().unwrap().job = job;
    });
    Ok(see_other("/welcome/recovering"))
}

pub async fn recovering(State(app): State<Arc<App>>, Extension(s): Extension<Session>) -> Page {
    let job = app.shared.lock().unwrap().job.clone();
    let body = match job {
        Job::None => return Ok(see_other("/")),
        Job::Running { what, progress } => {
            let (_, done, _, total) = progress.get();
            format!(
                r#"<h1 data-reload>{}</h1><p id="job">Working… {} of {} so far.</p><progress value="{done}" max="{}"></progress>"#,
                esc(&what),
                bytes(done),
                bytes(total),
                total.max(1)
            )
        }
        Job::Done { what, ok, lines } => {
            let list: String = lines
                .iter()
                .map(|l| format!("<li>{}</li>", esc(l)))
                .collect();
            let latest = app
                .open_repo()
                .ok()
                .and_then(|r| r.snapshots().ok())
                .and_then(|v| v.last().cloned());
            let folder = app
                .open_repo()
                .ok()
                .and_then(|r| r.worktree())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let offer = match latest {
                Some(e) => format!(
                    r#"<p>Your newest backup is from {} ({} files, {}).</p>
<form method="post" action="/snapshots/{}/restore" id="restore-all">{}
<input type="hidden" name="path" value=""><input type="hidden" name="start" value="1">
<label for="target">Restore everything into</label><input type="text" id="target" name="target" value="{}">
<div class="row"><button type="submit" id="restore-go">Restore and start backing up</button></div></form>"#,
                    super::html::when(e.snapshot.time_ns / 1_000_000_000),
                    e.snapshot.stats.files,
                    bytes(e.snapshot.stats.bytes),
                    e.id,
                    csrf_field(&s.csrf),
                    esc(&folder)
                ),
                None => r#"<p class="msg error">No backup came back. Check the coordinator's address and that your hosts are online, then try again later.</p>"#.into(),
            };
            format!(
                r#"<h1>{} {}</h1><ul id="job">{list}</ul>{offer}"#,
                esc(&what),
                if ok {
                    "finished"
                } else {
                    "finished with problems"
                }
            )
        }
    };
    Ok(page("Recovery", "", &body).into_response())
}

/// The folder picker: subfolders of `dir` (hidden ones left out), and "use this folder",
/// which goes back to the form named by `for` with the folder filled in.
pub async fn pick(qs: Query) -> Page {
    let back = match qs.0.get("for").map(String::as_str) {
        Some("settings") => "/settings",
        _ => "/welcome",
    };
    let dir =
        qs.0.get("dir")
            .map(PathBuf::from)
            .filter(|d| d.is_absolute())
            .unwrap_or_else(home);
    let for_ = if back == "/settings" {
        "settings"
    } else {
        "welcome"
    };
    let mut subs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    subs.sort();
    let mut list = String::new();
    if let Some(p) = dir.parent() {
        list.push_str(&format!(
            r#"<li><a href="/pick?for={for_}&amp;dir={}">⬆ up to {}</a></li>"#,
            q(&p.display().to_string()),
            esc(&p.display().to_string())
        ));
    }
    for s in &subs {
        let name = s
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        list.push_str(&format!(
            r#"<li><a href="/pick?for={for_}&amp;dir={}">{}/</a></li>"#,
            q(&s.display().to_string()),
            esc(&name)
        ));
    }
    let body = format!(
        r#"<h1>Choose a folder</h1><p class="mono" id="current">{}</p>
<div class="row"><a class="button" id="use-folder" href="{back}?folder={}">Use this folder</a> <a href="{back}">Cancel</a></div>
<ul class="events" id="folders">{list}</ul>"#,
        esc(&dir.display().to_string()),
        q(&dir.display().to_string())
    );
    Ok(page("Choose a folder", "", &body).into_response())
}
