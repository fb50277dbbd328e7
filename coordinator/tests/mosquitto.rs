//! External-broker mode against a real Mosquitto (Debian package `mosquitto`, 2.0 with the
//! dynamic-security plugin), started here on a free loopback port with a generated config.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use pluto_coordinator::{Config, ExternalBroker, Running};
use pluto_netsync::coord_client::{BrokerAuth, ClientError, CoordClient};
use pluto_netsync::wire::{self, topics, NodeId, NodeMsg, PeerMode, RefusalCode};
use rumqttc::{Event, LastWill, Packet, QoS};

const ADMIN: &str = "pluto-coordinator";

struct Mosquitto {
    child: Child,
    port: u16,
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

/// The broker configuration the book's "running a coordinator" page describes.
pub fn mosquitto_conf(dir: &Path, port: u16, plugin: &Path) -> String {
    format!(
        "per_listener_settings false\nallow_anonymous false\npersistence false\nlistener {port} 127.0.0.1\n\
         plugin {}\nplugin_opt_config_file {}\nacl_file {}\nlog_dest stderr\nlog_type error\nlog_type warning\n",
        plugin.display(),
        dir.join("dynsec.json").display(),
        dir.join("acl").display()
    )
}

pub const ACL: &str = "user pluto-coordinator\ntopic readwrite pluto/v1/#\n\nuser pluto-enroll\ntopic write pluto/v1/enroll\n\n\
pattern read pluto/v1/node/%u/#\npattern write pluto/v1/coord/%u/#\n";

async fn start_mosquitto(admin_password: &str) -> Mosquitto {
    let bin = find(
        "mosquitto",
        &["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"],
    )
    .expect("mosquitto is not installed; these tests need it: run scripts/test-deps (or apt-get install mosquitto)");
    let ctrl =
        find("mosquitto_ctrl", &["/usr/bin", "/usr/local/bin"]).expect("mosquitto_ctrl missing");
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
    std::fs::write(&conf, mosquitto_conf(dir.path(), port, &plugin)).unwrap();
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
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto did not start listening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    m
}

async fn start_external(
    params: pluto_coordinator::Params,
) -> (Mosquitto, Running, tempfile::TempDir) {
    let m = start_mosquitto("admin-secret-for-tests").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(dir.path());
    cfg.broker = Some(ExternalBroker {
        url: format!("mqtt://127.0.0.1:{}", m.port),
        username: ADMIN.into(),
        password: "admin-secret-for-tests".into(),
    });
    cfg.params = params;
    cfg.tick = Duration::from_millis(100);
    let r = tokio::time::timeout(Duration::from_secs(20), pluto_coordinator::start(cfg))
        .await
        .unwrap()
        .unwrap();
    (m, r, dir)
}

fn raw_enrolled(
    port: u16,
    key: &ed25519_dalek::SigningKey,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let id = NodeId::of(key);
    let mut o = rumqttc::MqttOptions::new(format!("{}-raw", id.to_hex()), "127.0.0.1", port);
    o.set_credentials(id.to_hex(), wire::broker_password(key));
    o.set_keep_alive(Duration::from_secs(10));
    rumqttc::AsyncClient::new(o, 100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_enroll_match_k2_among_5_and_list_after_reconnect() {
    let (_m, coord, _dir) = start_external(test_params()).await;
    let url = coord.broker_url();
    let keys: Vec<_> = (0..5).map(|_| new_key()).collect();
    let mut clients = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let (c, _) = connect(&url, k, &coord).await; // token refused → enroll → enrolled credentials
        c.announce(announce(7000 + i as u16, 10 * GIB, GIB, 2, PeerMode::Mixed))
            .await
            .unwrap();
        clients.push(c);
    }
    for (i, c) in clients.iter().enumerate() {
        let (hosts, missing) = c.request_matches().await.unwrap();
        assert_eq!((hosts.len(), missing), (2, 0));
        let distinct: HashSet<_> = hosts.iter().map(|r| r.host).collect();
        assert_eq!(distinct.len(), 2);
        assert!(!distinct.contains(&NodeId::of(&keys[i])));
    }
    let before = clients[2].relationships().await.unwrap();
    clients.remove(2).close().await.unwrap();
    // reconnect with the same key: already enrolled, straight in
    let mut cfg = client_config(&url, &keys[2], Some(&coord));
    cfg.auth = BrokerAuth::Enrolled;
    let (c, _) = CoordClient::connect(cfg).await.unwrap();
    assert_eq!(c.relationships().await.unwrap(), before);
    // bad input through the external broker too
    let (u, _) = connect(&url, &new_key(), &coord).await;
    assert!(
        matches!(u.relationships().await, Err(ClientError::Refused(r)) if r.code == RefusalCode::UnknownNode)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_a_node_can_neither_read_nor_inject_another_nodes_traffic() {
    let (m, coord, _dir) = start_external(test_params()).await;
    let url = coord.broker_url();
    let vkey = new_key();
    let vid = NodeId::of(&vkey);
    let (victim, _) = connect(&url, &vkey, &coord).await;
    victim
        .announce(announce(1, GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    // a raw view of the victim's inbox (its own credentials), to see anything injected
    let (vraw, mut vel) = raw_enrolled(m.port, &vkey);
    poll_until(&mut vel, 10, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await
    .unwrap();
    vraw.subscribe(topics::node_filter(&vid), QoS::AtLeastOnce)
        .await
        .unwrap();
    poll_until(&mut vel, 10, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    })
    .await
    .unwrap();

    let akey = new_key();
    let (attacker, _) = connect(&url, &akey, &coord).await; // enrolls
    attacker
        .announce(announce(2, GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let (a, mut ael) = raw_enrolled(m.port, &akey);
    poll_until(&mut ael, 10, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await
    .unwrap();
    for filter in [
        "#",
        "pluto/v1/#",
        "pluto/v1/node/+/msg",
        &topics::node_filter(&vid),
        "$CONTROL/#",
    ] {
        a.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        poll_until(&mut ael, 10, |e| {
            matches!(e, Event::Incoming(Packet::SubAck(_)))
        })
        .await
        .unwrap();
    }
    let handled = coord.stats().handled;
    let forged = wire::seal(
        &akey,
        &topics::request(&vid),
        1,
        wire::now_ms(),
        &NodeMsg::Goodbye,
    )
    .unwrap();
    a.publish(
        topics::request(&vid),
        QoS::AtLeastOnce,
        false,
        forged.clone(),
    )
    .await
    .unwrap();
    a.publish(topics::node(&vid), QoS::AtLeastOnce, false, forged)
        .await
        .unwrap();
    a.publish(
        "$CONTROL/dynamic-security/v1",
        QoS::AtLeastOnce,
        false,
        r#"{"commands":[{"command":"deleteClient","username":"pluto-coordinator"}]}"#,
    )
    .await
    .unwrap();
    // the victim's traffic flows...
    victim.relationships().await.unwrap();
    victim
        .announce(announce(1, GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    // ...and reaches the victim's inbox (its replies), but never the attacker
    let seen = poll_until(&mut vel, 3, |e| {
        matches!(e, Event::Incoming(Packet::Publish(_)))
    })
    .await
    .unwrap();
    let Event::Incoming(Packet::Publish(p)) = seen else {
        unreachable!()
    };
    let env: wire::Envelope<wire::CoordMsg> =
        wire::open_from(&p.payload, &p.topic, &NodeId::from_key(&coord.public_key))
            .expect("only the coordinator's signed messages reach the victim's inbox");
    assert_eq!(env.sender, NodeId::from_key(&coord.public_key));
    let saw = poll_until(&mut ael, 1, |e| {
        matches!(e, Event::Incoming(Packet::Publish(_)))
    })
    .await;
    assert!(
        matches!(saw, Err(ref e) if e == "timeout"),
        "attacker received {saw:?}"
    );
    assert_eq!(
        coord.stats().handled,
        handled + 2,
        "forged request reached the coordinator"
    );
    assert!(coord.node(&vid).unwrap().unwrap().online);
    // the victim's raw inbox saw nothing from the attacker: drain it and check every message's signer
    while let Ok(Event::Incoming(Packet::Publish(p))) = poll_until(&mut vel, 1, |e| {
        matches!(e, Event::Incoming(Packet::Publish(_)))
    })
    .await
    {
        assert!(wire::open_from::<wire::CoordMsg>(
            &p.payload,
            &p.topic,
            &NodeId::from_key(&coord.public_key)
        )
        .is_ok());
    }
    // the coordinator still administers the broker (the forged deleteClient was refused)
    let (n, _) = connect(&url, &new_key(), &coord).await;
    n.announce(announce(3, GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();

    // a will on the victim's topic does not mark it offline
    let mut o = rumqttc::MqttOptions::new(
        format!("{}-will", NodeId::of(&akey).to_hex()),
        "127.0.0.1",
        m.port,
    );
    o.set_credentials(NodeId::of(&akey).to_hex(), wire::broker_password(&akey));
    let will = wire::seal(
        &akey,
        &topics::will(&vid),
        0,
        wire::now_ms(),
        &NodeMsg::Will,
    )
    .unwrap();
    o.set_last_will(LastWill::new(
        topics::will(&vid),
        will,
        QoS::AtLeastOnce,
        false,
    ));
    let (_wc, mut wel) = rumqttc::AsyncClient::new(o, 10);
    let _ = poll_until(&mut wel, 5, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await;
    drop(wel); // vanish without DISCONNECT
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        coord.node(&vid).unwrap().unwrap().online,
        "a foreign will marked the victim offline"
    );
}
