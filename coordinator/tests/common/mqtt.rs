//! A Mosquitto 2 of the test's own (Debian package `mosquitto`, dynamic-security plugin) on a
//! free loopback port, configured as the book's coordinator pages describe. Killed when
//! dropped. A test that cannot start it fails, saying why.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "pluto-coordinator";

pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(name: &str, dirs: &[&str]) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

const ACL: &str = "user pluto-coordinator\ntopic readwrite pluto/v1/#\n\nuser pluto-enroll\ntopic write pluto/v1/enroll\n\n\
pattern read pluto/v1/node/%u/#\npattern write pluto/v1/coord/%u/#\n";

impl Mosquitto {
    pub fn start(admin_password: &str) -> Mosquitto {
        let bin = find("mosquitto", &["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"])
            .expect("mosquitto is not installed; these tests need it: run scripts/test-deps (or apt-get install mosquitto)");
        let ctrl = find("mosquitto_ctrl", &["/usr/bin", "/usr/local/bin"])
            .expect("mosquitto_ctrl missing");
        let plugin = find(
            "mosquitto_dynamic_security.so",
            &[
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib/aarch64-linux-gnu",
                "/usr/lib",
                "/usr/local/lib",
            ],
        )
        .expect("mosquitto_dynamic_security.so missing");
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new(ctrl)
            .args([
                "dynsec",
                "init",
                dir.path().join("dynsec.json").to_str().unwrap(),
                ADMIN,
                admin_password,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mosquitto_ctrl dynsec init failed");
        std::fs::write(dir.path().join("acl"), ACL).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous false\npersistence false\nlistener {port} 127.0.0.1\n\
                 plugin {}\nplugin_opt_config_file {}\nacl_file {}\nlog_dest stderr\nlog_type error\n",
                plugin.display(),
                dir.path().join("dynsec.json").display(),
                dir.path().join("acl").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .args(["-c", conf.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let m = Mosquitto {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }
}
