//! `pluto ui`: a page on 127.0.0.1 for people who do not live in a terminal. It is one more
//! front end of the node library, like `pluto serve`: the page starts a [`NodeHandle`],
//! shows its events and status, asks it to snapshot or push, and reads the repository with
//! the same library calls as `ls`, `dump`, `diff` and `checkout`. It has no logic of its own
//! beyond the page and its settings file (`settings.rs`).
//!
//! State has one owner each: the settings and the node handle sit behind async mutexes in
//! [`App`] (only a settings change or a start replaces the node); what the page shows of the
//! node's past (recent events, push progress) is fed by one task per node that reads its
//! event stream.

pub mod auth;
pub mod html;
mod overview;
mod settings;
mod settings_page;
mod snapshots;
mod welcome;

use anyhow::Result;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pluto_netsync::node::{Event, Node, NodeHandle};
use pluto_repo::repository::LockMode;
use pluto_repo::Repository;
use settings::Settings;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Events the page keeps to show (the newest).
const EVENTS_KEPT: usize = 200;

pub struct App {
    /// The repository (it may not exist yet: the first run creates it).
    pub root: PathBuf,
    pub auth: auth::Auth,
    port_mapping: bool,
    /// `--peer-listen`, over the settings' peer port.
    peer_listen: Option<String>,
    settings: tokio::sync::Mutex<Settings>,
    node: tokio::sync::Mutex<Option<NodeHandle>>,
    pub shared: std::sync::Mutex<Shared>,
    /// Held across a first run's "no repository yet? create it": two tabs (or two clicks)
    /// never both create one.
    pub first_run: tokio::sync::Mutex<()>,
}

/// What the page remembers between requests.
#[derive(Default)]
pub struct Shared {
    /// (unix time received, event), oldest first.
    pub events: VecDeque<(u64, Event)>,
    /// Bytes done and total of the push under way.
    pub push_progress: Option<(u64, u64)>,
    /// Why the node is not running, when it could not start.
    pub node_error: Option<String>,
    /// First runs under way, by session: the new words until confirmed.
    pub pending: HashMap<String, welcome::Pending>,
    /// A long job started from the page (recovery from the hosts).
    pub job: Job,
}

#[derive(Default, Clone)]
pub enum Job {
    #[default]
    None,
    Running {
        what: String,
        progress: Arc<pluto_repo::progress::Progress>,
    },
    Done {
        what: String,
        ok: bool,
        lines: Vec<String>,
    },
}

pub struct Options {
    pub root: PathBuf,
    pub listen: std::net::SocketAddr,
    pub allow_remote: bool,
    pub port_mapping: bool,
    pub peer_listen: Option<String>,
}

/// A page that failed: the error, said plainly, on the page.
pub struct WebError(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for WebError {
    fn from(e: E) -> Self {
        WebError(e.into())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let msg = crate::error_chain(&self.0);
        let body = format!(
            r#"<h1>Something went wrong</h1><p class="msg error" id="error">{}</p><p><a href="/">Back to the overview</a></p>"#,
            html::esc(&msg)
        );
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            html::page("Error", "overview", &body),
        )
            .into_response()
    }
}

pub type Page = std::result::Result<Response, WebError>;

impl App {
    pub fn repo_exists(&self) -> bool {
        self.root.join("config").exists()
    }

    /// A recovery is under way or waits for its restore: the node must not start yet (it
    /// would snapshot the still-empty folder, and that snapshot would be the newest).
    pub fn recovering(&self) -> bool {
        !matches!(self.shared.lock().unwrap().job, Job::None)
    }

    pub async fn settings(&self) -> Settings {
        self.settings.lock().await.clone()
    }

    /// Replace the settings (file first, then memory) and restart the node with them.
    pub async fn set_settings(self: &Arc<Self>, s: Settings) -> Result<()> {
        {
            let mut cur = self.settings.lock().await;
            let root = self.root.clone();
            let to_save = s.clone();
            tokio::task::spawn_blocking(move || to_save.save(&root)).await??;
            *cur = s;
        }
        self.start_node().await;
        Ok(())
    }

    pub async fn node(&self) -> Option<NodeHandle> {
        self.node.lock().await.clone()
    }

    /// (Re)start the node with the current settings; a failure to start is kept for the page.
    /// Not while a recovery waits for its restore ([`Self::recovering`]).
    pub async fn start_node(self: &Arc<Self>) {
        if self.recovering() {
            return;
        }
        let mut slot = self.node.lock().await;
        if let Some(n) = slot.take() {
            n.stop().await;
        }
        let mut cfg = self.settings.lock().await.node_config(self.port_mapping);
        if let Some(l) = &self.peer_listen {
            cfg.listen = l.clone();
        }
        match Node::builder(&self.root, cfg).spawn().await {
            Ok(h) => {
                let events = h.subscribe();
                tokio::spawn(keep_events(Arc::downgrade(self), events));
                self.shared.lock().unwrap().node_error = None;
                *slot = Some(h);
            }
            Err(e) => {
                self.shared.lock().unwrap().node_error = Some(e.to_string());
            }
        }
    }

    pub async fn stop_node(&self) {
        if let Some(n) = self.node.lock().await.take() {
            n.stop().await;
        }
    }

    /// Open the repository for reading, waiting (bounded) for a writer to finish.
    pub fn open_repo(&self) -> Result<Repository> {
        open_repo(&self.root, LockMode::Shared)
    }
}

pub fn open_repo(root: &Path, mode: LockMode) -> Result<Repository> {
    let mut on_wait = |_: &str| {};
    let wait = pluto_repo::repository::LockWait {
        timeout: crate::commands::lock_wait()?,
        holder: &format!("pluto ui (pid {})", std::process::id()),
        on_wait: &mut on_wait,
    };
    Ok(Repository::open_waiting(root, mode, Some(wait))?)
}

/// The node's events into the page's memory, until the node stops.
async fn keep_events(app: std::sync::Weak<App>, mut rx: tokio::sync::broadcast::Receiver<Event>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let e = match rx.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => break,
        };
        let Some(app) = app.upgrade() else { break };
        let mut s = app.shared.lock().unwrap();
        match &e {
            Event::PushProgress {
                bytes_done,
                bytes_total,
            } => {
                s.push_progress = Some((*bytes_done, *bytes_total));
                continue;
            }
            Event::PushDone { .. } => s.push_progress = None,
            // A passed check is the normal state, shown per host in the hosts table; as
            // events they would bury everything else (one per host per round).
            Event::ChallengePassed { .. } => continue,
            _ => {}
        }
        s.events.push_back((html::unix_now(), e));
        while s.events.len() > EVENTS_KEPT {
            s.events.pop_front();
        }
    }
}

async fn asset_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/app.css"),
    )
        .into_response()
}

async fn asset_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
        .into_response()
}

pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/app.css", get(asset_css))
        .route("/app.js", get(asset_js))
        .route("/", get(overview::overview))
        .route("/live", get(overview::live))
        .route("/snapshot-now", post(overview::snapshot_now))
        .route("/push-now", post(overview::push_now))
        .route("/node/start", post(overview::start))
        .route("/welcome", get(welcome::welcome))
        .route("/welcome/create", post(welcome::create))
        .route("/welcome/words", get(welcome::words))
        .route(
            "/welcome/confirm",
            get(welcome::confirm_form).post(welcome::confirm),
        )
        .route("/welcome/recover", post(welcome::recover))
        .route("/welcome/recovering", get(welcome::recovering))
        .route("/pick", get(welcome::pick))
        .route("/snapshots", get(snapshots::list))
        .route("/snapshots/{id}", get(snapshots::browse))
        .route("/snapshots/{id}/file", get(snapshots::file))
        .route("/snapshots/{id}/tar", get(snapshots::tar))
        .route("/snapshots/{id}/restore", post(snapshots::restore))
        .route("/diff", get(snapshots::diff))
        .route(
            "/settings",
            get(settings_page::show).post(settings_page::save),
        )
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::guard,
        ))
        .with_state(app)
}

/// Serve the page until `stop` resolves; prints the one-time link first (on stdout, for the
/// person, and for tests).
pub async fn serve(
    opts: Options,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", opts.listen))?;
    let addr = listener.local_addr()?;
    let loopback = addr.ip().is_loopback();
    if !loopback && !opts.allow_remote {
        anyhow::bail!(
            "{addr} is reachable from other machines: the page controls your backups and shows \
             your files; pass --allow-remote if that is what you want"
        );
    }
    let settings = if opts.root.join("config").exists() {
        Settings::load(&opts.root)?
    } else {
        Settings::default()
    };
    let app = Arc::new(App {
        root: opts.root.clone(),
        auth: auth::Auth::new(addr, loopback),
        port_mapping: opts.port_mapping,
        peer_listen: opts.peer_listen,
        settings: tokio::sync::Mutex::new(settings),
        node: tokio::sync::Mutex::new(None),
        shared: std::sync::Mutex::new(Shared::default()),
        first_run: tokio::sync::Mutex::new(()),
    });
    if app.repo_exists() {
        app.start_node().await;
    }
    let host = addr.to_string();
    outln!(
        "pluto is ready: open http://{host}/?token={} in your browser (the link works once)",
        app.auth.link_token().unwrap_or_default()
    );
    if !loopback {
        eprintln!("pluto: warning: the page is open to other machines on {addr} (--allow-remote)");
    }
    let server = axum::serve(listener, router(app.clone())).with_graceful_shutdown(stop);
    let r = server.await;
    // Stop the node whatever ended the page (a signal, or the server failing).
    tokio::time::timeout(Duration::from_secs(30), app.stop_node())
        .await
        .ok();
    r.map_err(|e| anyhow::anyhow!("the page's server failed: {e}"))
}

/// Query parameters as a map (`?path=docs&x=1`).
pub type Query = axum::extract::Query<HashMap<String, String>>;
/// A form's fields.
pub type Form = axum::extract::Form<HashMap<String, String>>;

/// A field, trimmed; none when absent or blank.
pub fn field(f: &HashMap<String, String>, k: &str) -> Option<String> {
    f.get(k)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}
