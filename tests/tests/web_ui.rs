//! The page, in a real browser: headless Chromium driven through chromedriver (WebDriver),
//! against `pluto ui`, a real coordinator and eight real hosts on 127.0.0.1.
//!
//! The story of a person who never opens a terminal: they open the link `pluto ui` printed,
//! create their key and prove they wrote the words down, pick the folder; the node backs it
//! up to the hosts by itself and the page says "Protected". They browse the backup, download
//! a file, restore a folder, see what changed; two hosts vanish and the page says "At risk".
//! Requests without the session, from another site, or to another host name are refused.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian's chromium and chromium-driver,
//! installed by scripts/test-deps): without them this test fails, it never passes silently.
//! PLUTO_BOOK_SCREENSHOTS=1 writes the screenshots into book/src/app/ (for the book page
//! "The pluto app"); otherwise into the test's temporary folder.

use fantoccini::{Client, ClientBuilder, Locator};
use pluto_e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One raw HTTP/1.1 request to the page; the status code and the whole answer.
fn raw(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

struct Browser {
    c: Client,
    shots: PathBuf,
}

impl Browser {
    /// The element, once the page has it (a click does not wait for the page it loads).
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.c.find(Locator::Css(css)).await {
                Ok(e) => return e,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => {
                    let url = self
                        .c
                        .current_url()
                        .await
                        .map(|u| u.to_string())
                        .unwrap_or_default();
                    let src = self.c.source().await.unwrap_or_default();
                    panic!("{css}: {e}\nat {url}:\n{src}")
                }
            }
        }
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_string()
    }

    /// Wait for the browser to be at `path` (after a click that navigates).
    async fn at(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.path().await != path {
            if Instant::now() > deadline {
                panic!("not at {path} but at {}", self.path().await);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Wait until the element's text satisfies `f` (the page refreshes its live part itself).
    async fn wait_text(
        &self,
        css: &str,
        what: &str,
        within: Duration,
        f: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let t = match self.c.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if f(&t) {
                return t;
            }
            if Instant::now() > deadline {
                panic!("{what}: not within {within:?}; {css} says {t:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Bytes of a link of the page, fetched by the browser with its session.
    async fn fetch(&self, href: &str) -> Vec<u8> {
        let v = self
            .c
            .execute_async(
                r#"const [url, done] = arguments;
                   fetch(url, {credentials: "same-origin"}).then(r => r.arrayBuffer()).then(b => {
                     const u = new Uint8Array(b); let s = "";
                     for (let i = 0; i < u.length; i += 8192) s += String.fromCharCode.apply(null, u.subarray(i, i + 8192));
                     done(btoa(s));
                   }).catch(e => done("ERR " + e));"#,
                vec![serde_json::json!(href)],
            )
            .await
            .unwrap();
        let s = v.as_str().unwrap().to_string();
        assert!(!s.starts_with("ERR "), "fetch {href}: {s}");
        b64(&s)
    }
}

fn b64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    } as u32;
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for ch in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in ch.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        for i in 0..ch.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[test]
fn a_person_protects_a_folder_and_gets_it_back_in_the_browser() {
    for p in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: the browser test needs Debian's chromium and chromium-driver \
             (scripts/test-deps installs them)"
        );
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (mut coord, url) =
        start_coordinator(&base.join("coordinator"), &["--ping-interval", "3600"]);
    let mut hosts = new_hosts(base, &url, 8);
    eprintln!("[{:?}] coordinator and 8 hosts up", t0.elapsed());

    // The person's folder.
    let home = base.join("home");
    let docs = home.join("Documents");
    std::fs::create_dir_all(docs.join("letters")).unwrap();
    write(&docs.join("notes.txt"), b"first draft\n");
    write(
        &docs.join("letters/to-grandma.txt"),
        "Liebe Oma, … 🌻\n".as_bytes(),
    );
    write(&docs.join("photo.raw"), &pseudo_random(2 << 20, 11));

    let repo = home.join(".local/share/pluto/repository");
    let mut c = Command::new(pluto_bin());
    c.current_dir(&home)
        .env("HOME", &home)
        .env_remove("PLUTO_REPO")
        .env_remove("XDG_DATA_HOME")
        .args([
            "ui",
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
            "--no-port-mapping",
        ]);
    let mut ui = Daemon::spawn("ui", c);
    let line = ui.wait_containing("open http://", Duration::from_secs(30));
    let link = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let port: u16 = link
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let page = format!("http://127.0.0.1:{port}");

    // Nothing without the link's session, and nothing for another host name.
    let (code, _) = raw(
        port,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 403, "a Host without the page's port");
    let (code, _) = raw(
        port,
        &format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(code, 401, "no session");

    let cd_port = free_port();
    let mut cd = Command::new(CHROMEDRIVER);
    cd.args([
        format!("--port={cd_port}"),
        "--allowed-ips=127.0.0.1".into(),
    ]);
    let _chromedriver = Daemon::spawn("chromedriver", cd);
    let shots = if std::env::var_os("PLUTO_BOOK_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/src/app")
    } else {
        base.join("screenshots")
    };
    std::fs::create_dir_all(&shots).unwrap();
    let profile = base.join("chromium-profile");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1100,900",
                         format!("--user-data-dir={}", profile.display())]
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{cd_port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("chromedriver not ready: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("cannot start a browser session through chromedriver: {e}"),
            }
        };
        let b = Browser { c: client, shots };

        // First run: the link opens the welcome page.
        b.c.goto(&link).await.unwrap();
        b.at("/welcome").await;
        b.shot("welcome").await;
        // A second use of the link is refused.
        let (code, _) = raw(
            port,
            &format!("GET /?token={} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n",
                link.split("token=").nth(1).unwrap()),
        );
        assert_eq!(code, 401, "the link works once");

        // An offer larger than the disk is refused, by name.
        b.fill("#folder", &docs.display().to_string()).await;
        b.fill("#coordinator", &url).await;
        b.fill("#offer", "900P").await;
        b.click("#create-go").await;
        let e = b.text("#error").await;
        assert!(e.contains("more than") && e.contains("free"), "{e}");
        // The folder picker fills the folder.
        b.c.goto(&format!("{page}/pick?for=welcome&dir={}", home.display())).await.unwrap();
        b.click("#folders li:nth-child(2) a").await; // Documents/ (after "up")
        assert_eq!(b.text("#current").await, docs.display().to_string());
        b.click("#use-folder").await;
        let v = b.c.find(Locator::Css("#folder")).await.unwrap().prop("value").await.unwrap();
        assert_eq!(v.as_deref(), Some(docs.display().to_string().as_str()));
        b.fill("#coordinator", &url).await;
        b.fill("#offer", "1G").await;
        b.click("#create-go").await;

        // The words, shown once; three asked back.
        b.at("/welcome/words").await;
        let mut words = Vec::new();
        for li in b.c.find_all(Locator::Css("#words li")).await.unwrap() {
            words.push(li.text().await.unwrap());
        }
        assert_eq!(words.len(), 24, "{words:?}");
        b.shot("words").await;
        b.click("#written").await;
        let mut positions = Vec::new();
        for i in 0..3 {
            let l = b.text(&format!("label[for=w{i}]")).await;
            positions.push(l.trim_start_matches("Word ").parse::<usize>().unwrap() - 1);
        }
        // A wrong word: nothing is created, the page says so.
        b.fill("#w0", "zebra").await;
        b.fill("#w1", &words[positions[1]]).await;
        b.fill("#w2", &words[positions[2]]).await;
        b.click("#confirm-go").await;
        assert!(b.text("#error").await.contains("not the words"));
        assert!(!repo.join("config").exists(), "nothing created before the words are confirmed");
        for i in 0..3 {
            b.fill(&format!("#w{i}"), &words[positions[i]]).await;
        }
        // From the keyboard: Enter in the last field submits, as in any form.
        b.find("#w2")
            .await
            .send_keys(&char::from(fantoccini::key::Key::Enter).to_string())
            .await
            .unwrap();
        b.at("/").await;
        assert!(repo.join("config").exists());
        eprintln!("[{:?}] identity created", t0.elapsed());

        // Checks on hosts every second, so a vanished host shows within the test's bounds.
        b.c.goto(&format!("{page}/settings")).await.unwrap();
        b.fill("#challenge_every", "1").await;
        b.fill("#excludes", "*.tmp").await;
        b.click("#save").await;
        assert!(b.text("#saved").await.contains("Saved"));
        assert_eq!(std::fs::read_to_string(docs.join(".plutoignore")).unwrap(), "*.tmp\n");
        b.shot("settings").await;
        write(&docs.join("scratch.tmp"), b"left out\n");

        // The node backs up by itself and the page says so.
        b.c.goto(&format!("{page}/")).await.unwrap();
        let v = b
            .wait_text("#verdict", "the page says Protected", Duration::from_secs(120), |t| {
                t.starts_with("Protected")
            })
            .await;
        assert!(v.contains("as 4/8"), "{v}");
        let hosts_shown = b.c.find_all(Locator::Css("#hosts tbody tr")).await.unwrap().len();
        assert!(hosts_shown >= 8, "hosts listed: {hosts_shown}");
        assert!(b.text("#hosts").await.contains("direct"));
        assert!(b.text("#events").await.contains("saved"));
        b.shot("overview-protected").await;
        // On a phone-sized window the verdict still comes first and nothing overflows sideways.
        b.c.set_window_size(390, 844).await.unwrap();
        let overflow = b
            .c
            .execute("return document.documentElement.scrollWidth - window.innerWidth;", vec![])
            .await
            .unwrap();
        assert!(overflow.as_i64().unwrap_or(0) <= 0, "the page is wider than a phone: {overflow}");
        b.shot("phone-overview").await;
        b.c.set_window_size(1100, 900).await.unwrap();
        eprintln!("[{:?}] Protected", t0.elapsed());

        // Browse the backup; download a file; its bytes are the file's.
        b.c.goto(&format!("{page}/snapshots")).await.unwrap();
        b.shot("snapshots").await;
        b.click("#snapshots tbody tr:first-child a").await;
        let listing = b.text("#entries").await;
        assert!(listing.contains("notes.txt") && listing.contains("letters/"), "{listing}");
        assert!(!listing.contains("scratch.tmp"), "the exclude held: {listing}");
        b.c.find(Locator::LinkText("letters/")).await.unwrap().click().await.unwrap();
        b.shot("browse").await;
        let href = b
            .c
            .find(Locator::LinkText("to-grandma.txt"))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.fetch(&href).await, std::fs::read(docs.join("letters/to-grandma.txt")).unwrap());
        let snap_path = b.path().await;
        let photo = format!("{snap_path}/file?path=photo.raw");
        assert_eq!(b.fetch(&photo).await, std::fs::read(docs.join("photo.raw")).unwrap());
        let tar = b.fetch(&format!("{snap_path}/tar?path=letters")).await;
        assert!(tar.len() >= 1024 && &tar[257..262] == b"ustar", "a tar archive");

        // Restore the letters folder to a new place: the same tree comes back.
        let target = base.join("restored");
        b.fill("#target", &target.display().to_string()).await;
        b.click("#restore-go").await;
        let r = b.text("#restored").await;
        assert!(r.contains("restored into"), "{r}");
        assert_same_tree(&docs.join("letters"), &target.join("letters"));
        // Restoring over files already there is refused, by name.
        b.c.back().await.unwrap();
        b.fill("#target", &target.display().to_string()).await;
        b.click("#restore-go").await;
        assert!(b.text("#error").await.contains(&target.display().to_string()));
        eprintln!("[{:?}] browsed, downloaded, restored", t0.elapsed());

        // An edit, "Back up now", and the changes between the two snapshots.
        write(&docs.join("notes.txt"), b"second draft, much better\n");
        b.c.goto(&format!("{page}/")).await.unwrap();
        let names = || -> std::collections::HashSet<String> {
            std::fs::read_dir(repo.join("snapshots"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 64)
                .collect()
        };
        let before = names();
        b.click("#snapshot-now").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while names().len() <= before.len() {
            if Instant::now() > deadline {
                let url = b.c.current_url().await.unwrap();
                b.c.goto(&format!("{page}/")).await.unwrap();
                panic!("no snapshot after Back up now (at {url}); events: {}", b.text("#events").await);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        b.c.goto(&format!("{page}/snapshots")).await.unwrap();
        b.click("#diff-form button").await;
        let changes = b.text("#changes").await;
        assert!(changes.contains("notes.txt") && changes.contains("changed"), "{changes}");
        b.shot("diff").await;

        // Changes from anywhere but the page are refused, even with the browser's cookie.
        let cookie = b
            .c
            .get_all_cookies()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name().starts_with("pluto_session"))
            .expect("the session cookie");
        let jar = format!("{}={}", cookie.name(), cookie.value());
        let post = |extra: &str| {
            format!(
                "POST /snapshot-now HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {jar}\r\n{extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        };
        assert_eq!(raw(port, &post("")).0, 403, "no CSRF token");
        assert_eq!(raw(port, &post("Origin: http://evil.example\r\n")).0, 403, "another origin");
        let (code, body) = raw(
            port,
            &format!("GET /settings HTTP/1.1\r\nHost: evil.example:{port}\r\nCookie: {jar}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(code, 403, "DNS rebinding: {body}");

        // Two hosts holding shares vanish: the page says At risk, with the reason.
        let owner = std::fs::read_dir(hosts[0].0.join(".pluto/hosted"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.len() == 64)
            .expect("host0 keeps something of the owner");
        let mut killed = 0;
        for (dir, d) in hosts.iter_mut() {
            if killed < 2 && dir.join(".pluto/hosted").join(&owner).join("shares").exists() {
                let _ = d.child.kill();
                let _ = d.child.wait();
                killed += 1;
            }
        }
        assert_eq!(killed, 2);
        b.c.goto(&format!("{page}/")).await.unwrap();
        let v = b
            .wait_text("#verdict", "the page says At risk", Duration::from_secs(60), |t| {
                t.starts_with("At risk")
            })
            .await;
        assert!(v.contains("unreachable"), "{v}");
        b.shot("overview-at-risk").await;
        eprintln!("[{:?}] At risk", t0.elapsed());

        // The computer is lost. On a new one, the words bring everything back.
        let _ = ui.child.kill();
        let _ = ui.child.wait();
        let home2 = base.join("new-computer");
        std::fs::create_dir_all(&home2).unwrap();
        let mut c = Command::new(pluto_bin());
        c.current_dir(&home2)
            .env("HOME", &home2)
            .env_remove("PLUTO_REPO")
            .env_remove("XDG_DATA_HOME")
            .args(["ui", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--no-port-mapping"]);
        let mut ui2 = Daemon::spawn("ui2", c);
        let line = ui2.wait_containing("open http://", Duration::from_secs(30));
        let link2 = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_string();
        b.c.goto(&link2).await.unwrap();
        b.at("/welcome").await;
        // A mistyped word is named, and nothing is created.
        let mut wrong = words.clone();
        wrong[5] = "zzzz".into();
        b.fill("#words", &wrong.join(" ")).await;
        let restored_home = home2.join("Documents");
        b.fill("#rfolder", &restored_home.display().to_string()).await;
        b.fill("#rcoordinator", &url).await;
        b.click("#recover-go").await;
        assert!(b.text("#error").await.contains("recovery words"), "a wrong word is refused");
        b.fill("#words", &words.join(" ")).await;
        b.fill("#rfolder", &restored_home.display().to_string()).await;
        b.fill("#rcoordinator", &url).await;
        b.click("#recover-go").await;
        // The pull runs; the page reloads itself until it is done, then offers the restore.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if b.c.find(Locator::Css("#restore-go")).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                panic!("recovery did not finish: {}\n{}", b.c.source().await.unwrap_or_default(), ui2.drain());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        b.shot("recovered").await;
        b.click("#restore-go").await;
        assert!(b.text("#restored").await.contains("restored into"));
        std::fs::remove_file(docs.join("scratch.tmp")).unwrap(); // left out of every backup
        assert_same_tree(&docs, &restored_home);
        // And the node goes on backing up from there.
        b.c.goto(&format!("{}/", link2.split("/?").next().unwrap())).await.unwrap();
        b.wait_text("#verdict", "a verdict after recovery", Duration::from_secs(30), |t| !t.is_empty())
            .await;
        assert!(b.c.find(Locator::Css("#node-error")).await.is_err(), "the node runs after the restore");
        eprintln!("[{:?}] recovered on a new computer", t0.elapsed());
        b.c.close().await.unwrap();
    });
    let _ = coord.child.kill();
}
