//! Who may use the page: the person who started `pluto ui`, and only from pluto's own page.
//!
//! - A one-time link: `pluto ui` prints `http://127.0.0.1:PORT/?token=T` (T: 32 random bytes).
//!   The first request carrying T gets a session cookie (HttpOnly, SameSite=Strict) and T is
//!   spent; a second use of the link, or a request with neither, is refused (401).
//! - DNS rebinding: on a loopback listener only `Host: 127.0.0.1:PORT`, `localhost:PORT` and
//!   `[::1]:PORT` are served; a page on another name that resolves to 127.0.0.1 gets 403.
//! - Cross-site requests: every change (any method but GET/HEAD) needs the session's CSRF
//!   token (form field `csrf` or header `X-Pluto-CSRF`), and is refused when the browser says
//!   it came from another origin (`Origin`, `Sec-Fetch-Site`).
//! - Every answer forbids framing, caching, referrers and scripts from anywhere else.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;

/// What a handler knows of the session that sent the request.
#[derive(Clone, Debug)]
pub struct Session {
    /// The session's key in the page's own tables (not the cookie: a hash of it).
    pub key: String,
    pub csrf: String,
}

pub struct Auth {
    /// The link's token, until it is used.
    token: Mutex<Option<String>>,
    /// blake3(cookie value) → session.
    sessions: Mutex<HashMap<String, Session>>,
    /// `Host` values served (empty: any, for `--allow-remote`).
    hosts: Vec<String>,
    cookie: String,
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn hash(s: &str) -> String {
    blake3::hash(s.as_bytes()).to_hex().to_string()
}

/// A refusal: a short page saying why.
pub fn refuse(status: StatusCode, why: &str) -> Response<Body> {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>pluto</title><h1>{}</h1><p>{}</p>",
        status.canonical_reason().unwrap_or("refused"),
        super::html::esc(why)
    );
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

pub enum Verdict {
    /// Serve it, as this session.
    Pass(Session),
    /// Static files: no session needed.
    Public,
    /// Answer this instead (a refusal, or the redirect that sets the cookie).
    Answer(Response<Body>),
}

impl Auth {
    /// `addr` is the page's; `loopback` whether it listens on a loopback address only.
    pub fn new(addr: std::net::SocketAddr, loopback: bool) -> Auth {
        let port = addr.port();
        let mut hosts = vec![
            addr.to_string(),
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        if port == 80 {
            // Browsers leave the default port out of `Host`.
            hosts.extend(
                hosts
                    .clone()
                    .iter()
                    .map(|h| h.trim_end_matches(":80").to_string()),
            );
        }
        Auth {
            token: Mutex::new(Some(random_hex())),
            sessions: Mutex::new(HashMap::new()),
            hosts: if loopback { hosts } else { Vec::new() },
            cookie: format!("pluto_session_{port}"),
        }
    }

    /// The token of the one-time link (none once used).
    pub fn link_token(&self) -> Option<String> {
        self.token.lock().unwrap().clone()
    }

    /// Judge a request's head. `form_csrf` is the `csrf` field of a form body, if any.
    pub fn judge(
        &self,
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        form_csrf: Option<&str>,
    ) -> Verdict {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Verdict::Answer(refuse(
                StatusCode::FORBIDDEN,
                &format!(
                    "this page answers only to {} (asked for {host:?})",
                    self.hosts[0]
                ),
            ));
        }
        if matches!(uri.path(), "/app.css" | "/app.js") && method == Method::GET {
            return Verdict::Public;
        }
        if let Some(t) = query_param(uri, "token") {
            return Verdict::Answer(self.exchange(uri, &t));
        }
        let session = {
            let sessions = self.sessions.lock().unwrap();
            cookies(headers, &self.cookie)
                .into_iter()
                .find_map(|c| sessions.get(&hash(&c)).cloned())
        };
        let Some(session) = session else {
            return Verdict::Answer(refuse(
                StatusCode::UNAUTHORIZED,
                "Open the link that `pluto ui` printed when it started (it works once; restart \
                 `pluto ui` for a new one).",
            ));
        };
        if method != Method::GET && method != Method::HEAD {
            if let Some(why) = cross_site(headers, host) {
                return Verdict::Answer(refuse(StatusCode::FORBIDDEN, &why));
            }
            let given = headers
                .get("x-pluto-csrf")
                .and_then(|h| h.to_str().ok())
                .or(form_csrf);
            if given.map(hash) != Some(hash(&session.csrf)) {
                return Verdict::Answer(refuse(
                    StatusCode::FORBIDDEN,
                    "refused: this change did not come from pluto's own page (its CSRF token is \
                     missing or wrong); reload the page and try again",
                ));
            }
        }
        Verdict::Pass(session)
    }

    /// The link's token for a session cookie, once.
    fn exchange(&self, uri: &axum::http::Uri, given: &str) -> Response<Body> {
        let mut token = self.token.lock().unwrap();
        // Compared as hashes: the time taken says nothing of how much of it matched.
        if token.as_deref().map(hash) != Some(hash(given)) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this link is not valid (or was already used): restart `pluto ui` for a new one",
            );
        }
        *token = None;
        let id = random_hex();
        let key = hash(&id);
        self.sessions.lock().unwrap().insert(
            key.clone(),
            Session {
                key,
                csrf: random_hex(),
            },
        );
        let rest: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                    .filter(|(k, _)| k != "token"),
            )
            .finish();
        // Only a path of this page ("//host/…" would leave it).
        let path = match uri.path() {
            p if p.starts_with('/') && !p.starts_with("//") => p,
            _ => "/",
        };
        let to = if rest.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{rest}")
        };
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::SEE_OTHER;
        r.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&to).unwrap_or(HeaderValue::from_static("/")),
        );
        r.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&format!(
                "{}={id}; HttpOnly; SameSite=Strict; Path=/",
                self.cookie
            ))
            .expect("cookie is ascii"),
        );
        r
    }
}

fn query_param(uri: &axum::http::Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Every value of cookie `name` (another program on localhost may set one of the same name).
fn cookies(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Why a change is refused as coming from another site, if it is.
fn cross_site(headers: &HeaderMap, host: &str) -> Option<String> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = h("sec-fetch-site") {
        if site != "same-origin" && site != "none" {
            return Some(format!(
                "refused: the browser says this request came from another site ({site})"
            ));
        }
    }
    if let Some(origin) = h("origin") {
        if origin != format!("http://{host}") {
            return Some(format!(
                "refused: a request from {origin} may not change anything here"
            ));
        }
    }
    None
}

/// Headers every answer carries.
pub fn harden(h: &mut HeaderMap) {
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        // `same-origin`, not `no-referrer`: with no-referrer a browser sends `Origin: null` on
        // the page's own form posts, which the origin check must refuse.
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
}

/// The `csrf` field of a urlencoded form body.
pub fn form_csrf(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
}

/// Requests of the page: the guard as an axum middleware.
pub async fn guard(
    axum::extract::State(app): axum::extract::State<std::sync::Arc<super::App>>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    // Forms are small (the longest: 24 words); a bigger body is no form of this page.
    let bytes = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(_) => {
            let mut r = refuse(StatusCode::PAYLOAD_TOO_LARGE, "request too large");
            harden(r.headers_mut());
            return r;
        }
    };
    let csrf = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("application/x-www-form-urlencoded"))
        .and_then(|_| form_csrf(&bytes));
    let mut resp = match app
        .auth
        .judge(&parts.method, &parts.uri, &parts.headers, csrf.as_deref())
    {
        Verdict::Answer(r) => r,
        v => {
            if let Verdict::Pass(s) = v {
                parts.extensions.insert(s);
            }
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };
    harden(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn cookie_of(r: &Response<Body>) -> String {
        let c = r.headers()[header::SET_COOKIE].to_str().unwrap();
        c.split(';').next().unwrap().to_string()
    }

    #[test]
    fn the_link_works_once_and_only_on_the_page_s_own_host() {
        let a = Auth::new("127.0.0.1:9747".parse().unwrap(), true);
        let t = a.link_token().unwrap();
        let get = Method::GET;
        let uri = |s: &str| s.parse::<axum::http::Uri>().unwrap();
        let ok_host = head(&[("host", "127.0.0.1:9747")]);
        // No token, no cookie: refused.
        let Verdict::Answer(r) = a.judge(&get, &uri("/"), &ok_host, None) else {
            panic!()
        };
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // Another name that resolves here (DNS rebinding): refused even with the token.
        let Verdict::Answer(r) = a.judge(
            &get,
            &uri(&format!("/?token={t}")),
            &head(&[("host", "evil.example:9747")]),
            None,
        ) else {
            panic!()
        };
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // A wrong token: refused.
        let Verdict::Answer(r) = a.judge(&get, &uri("/?token=00"), &ok_host, None) else {
            panic!()
        };
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // The token: a cookie and a redirect that drops it, keeping the rest.
        let Verdict::Answer(r) = a.judge(
            &get,
            &uri(&format!("/snapshots?token={t}&x=1")),
            &ok_host,
            None,
        ) else {
            panic!()
        };
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/snapshots?x=1");
        let c = cookie_of(&r);
        assert!(a.link_token().is_none(), "the link is spent");
        let Verdict::Answer(r) = a.judge(&get, &uri(&format!("/?token={t}")), &ok_host, None)
        else {
            panic!()
        };
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "a second use is refused"
        );
        let with_cookie = head(&[("host", "localhost:9747"), ("cookie", &c)]);
        let Verdict::Pass(s) = a.judge(&get, &uri("/"), &with_cookie, None) else {
            panic!("the cookie opens the page")
        };
        // Changes need the CSRF token, and not from another site.
        let post = Method::POST;
        assert!(matches!(
            a.judge(&post, &uri("/snapshot-now"), &with_cookie, None),
            Verdict::Answer(_)
        ));
        assert!(matches!(
            a.judge(&post, &uri("/snapshot-now"), &with_cookie, Some("nope")),
            Verdict::Answer(_)
        ));
        assert!(matches!(
            a.judge(&post, &uri("/snapshot-now"), &with_cookie, Some(&s.csrf)),
            Verdict::Pass(_)
        ));
        let from_evil = head(&[
            ("host", "localhost:9747"),
            ("cookie", &c),
            ("origin", "http://evil.example"),
        ]);
        assert!(matches!(
            a.judge(&post, &uri("/snapshot-now"), &from_evil, Some(&s.csrf)),
            Verdict::Answer(_)
        ));
        let cross = head(&[
            ("host", "localhost:9747"),
            ("cookie", &c),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(matches!(
            a.judge(&post, &uri("/snapshot-now"), &cross, Some(&s.csrf)),
            Verdict::Answer(_)
        ));
    }
}
