//! A malicious coordinator, scripted on loopback: the real embedded broker, and in place
//! of pluto's coordinator logic a script holding the coordinator's key that answers the
//! nodes as it likes — it matches a node with itself, drops every request, answers out of
//! order or with the wrong kind of reply, replays and forges its messages, grants more
//! than a host offers, and floods a node with orders. The nodes are the real `pluto`
//! binary (and, for the message-level cases, the real coordinator client).
//!
//! What must hold: a copy is never counted on the node itself, nothing waits on a silent
//! coordinator for long, a replayed or forged message is never acted on, a host never
//! stores more than it offered, and a flood leaves `pluto serve` serving, bounded in
//! memory, and stopping on SIGTERM. No stored data is lost or leaked: what the scripted
//! coordinator sees is what any coordinator sees (signed control messages, no keys).

use ed25519_dalek::SigningKey;
use pluto_e2e::*;
use pluto_netsync::coord_client::{ClientConfig, ClientError, CoordClient, CoordEvent};
use pluto_netsync::wire::{
    self, topics, CoordMsg, NodeId, NodeMsg, RelationState, Relationship, RepairSource, Reply,
};
use rand_core::OsRng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request a node sent.
#[derive(Clone, Debug)]
struct Request {
    node: NodeId,
    id: u64,
    body: NodeMsg,
}

/// How the script talks back: every frame it sends is signed by the coordinator's key
/// (unless it forges one) and kept, so that it can be replayed.
struct Out {
    key: SigningKey,
    mqtt: AsyncClient,
    next_id: u64,
    sent: Vec<(NodeId, Vec<u8>)>,
}

impl Out {
    fn frame(&mut self, key: &SigningKey, topic: &str, ts: u64, msg: &CoordMsg) -> Vec<u8> {
        self.next_id += 1;
        wire::seal(key, topic, self.next_id, ts, msg).expect("seal")
    }
    fn send(&mut self, node: NodeId, msg: CoordMsg) {
        let key = self.key.clone();
        let f = self.frame(&key, &topics::node(&node), wire::now_ms(), &msg);
        self.raw(node, f);
    }
    fn raw(&mut self, node: NodeId, frame: Vec<u8>) {
        self.sent.push((node, frame.clone()));
        self.mqtt
            .try_publish(topics::node(&node), QoS::AtLeastOnce, false, frame)
            .expect("publish");
    }
    fn reply(&mut self, req: &Request, reply: Reply) {
        self.send(
            req.node,
            CoordMsg::Reply {
                in_reply_to: req.id,
                result: Ok(reply),
            },
        );
    }
    /// What an honest coordinator with nothing to offer would say.
    fn plain_answer(&mut self, req: &Request) {
        let r = match &req.body {
            NodeMsg::Announce(_) => Reply::Announced {
                vetted: true,
                score_milli: 500,
            },
            NodeMsg::ListRelationships => Reply::Relationships {
                as_owner: vec![],
                as_host: vec![],
            },
            NodeMsg::RequestMatches => Reply::Matches {
                hosts: vec![],
                missing: 1,
            },
            NodeMsg::Pong { .. } => return,
            _ => Reply::Ok,
        };
        self.reply(req, r);
    }
}

type Script = Box<dyn FnMut(&mut Out, &Request) + Send>;

/// The scripted coordinator: the real embedded broker on a free loopback port, and a
/// client with the coordinator's key that runs `script` on every node request.
struct Rogue {
    rt: tokio::runtime::Runtime,
    url: String,
    key: SigningKey,
    requests: Arc<Mutex<Vec<Request>>>,
    /// Every byte that reached the coordinator's side of the broker.
    received: Arc<Mutex<Vec<u8>>>,
    out: Arc<Mutex<Option<Out>>>,
    _broker: pluto_coordinator::broker::EmbeddedBroker,
}

impl Rogue {
    fn start(mut script: Script) -> Rogue {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let key = SigningKey::generate(&mut OsRng);
        let me = NodeId::of(&key);
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let received: Arc<Mutex<Vec<u8>>> = Arc::default();
        let out: Arc<Mutex<Option<Out>>> = Arc::default();
        let (broker, url) = rt.block_on(async {
            let now = wire::now_ms() / 1000;
            let broker = pluto_coordinator::broker::start(
                "127.0.0.1:0".parse().unwrap(),
                me,
                now.saturating_sub(5),
            )
            .await
            .expect("start the embedded broker");
            let port = broker.addr.port();
            let mut o = MqttOptions::new(me.to_hex(), "127.0.0.1", port);
            let t = wire::connect_token(&key, now);
            o.set_credentials(t.username, t.password);
            o.set_max_packet_size(wire::MAX_FRAME_BYTES + 4096, wire::MAX_FRAME_BYTES + 4096);
            o.set_inflight(1000);
            o.set_request_channel_capacity(50_000);
            let (mqtt, mut el) = AsyncClient::new(o, 50_000);
            let subscribed = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match el.poll().await.expect("rogue connection") {
                        Event::Incoming(Packet::ConnAck(_)) => {
                            mqtt.try_subscribe(topics::ALL_COORD, QoS::AtLeastOnce)
                                .unwrap();
                        }
                        Event::Incoming(Packet::SubAck(_)) => break,
                        _ => {}
                    }
                }
            })
            .await;
            subscribed.expect("the rogue coordinator did not get its subscription");
            *out.lock().unwrap() = Some(Out {
                key: key.clone(),
                mqtt: mqtt.clone(),
                next_id: 0,
                sent: Vec::new(),
            });
            let (requests, received, out) = (requests.clone(), received.clone(), out.clone());
            tokio::spawn(async move {
                while let Ok(ev) = el.poll().await {
                    let Event::Incoming(Packet::Publish(p)) = ev else {
                        continue;
                    };
                    {
                        let mut r = received.lock().unwrap();
                        r.extend_from_slice(p.topic.as_bytes());
                        r.extend_from_slice(&p.payload);
                    }
                    let Some((node, topics::CoordTopic::Request)) = topics::parse_coord(&p.topic)
                    else {
                        continue;
                    };
                    let Ok(env) = wire::open::<NodeMsg>(&p.payload, &p.topic) else {
                        continue;
                    };
                    if env.sender != node {
                        continue;
                    }
                    let req = Request {
                        node,
                        id: env.request_id,
                        body: env.body,
                    };
                    requests.lock().unwrap().push(req.clone());
                    if let Some(o) = out.lock().unwrap().as_mut() {
                        script(o, &req);
                    }
                }
            });
            (broker, format!("mqtt://127.0.0.1:{port}"))
        });
        Rogue {
            rt,
            url,
            key,
            requests,
            received,
            out,
            _broker: broker,
        }
    }

    /// Run `f` with the script's sender (to push messages the nodes did not ask for).
    fn with_out<T>(&self, f: impl FnOnce(&mut Out) -> T) -> T {
        f(self.out.lock().unwrap().as_mut().expect("started"))
    }

    fn requests_of(&self, node: &NodeId) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| &r.node == node)
            .cloned()
            .collect()
    }
}

fn node_of(dir: &Path) -> NodeId {
    node_id(dir).parse().expect("node id")
}

fn relationship(owner: NodeId, host: NodeId, addr: &str, quota: u64) -> Relationship {
    Relationship {
        owner,
        host,
        peer_addrs: vec![addr.to_string()],
        quota_bytes: quota,
        used_bytes: 0,
        since_unix: 0,
        friend: false,
        state: RelationState::Active,
    }
}

/// A repository with one snapshot of `mib` MiB of incompressible data.
fn owner_with_snapshot(dir: &Path, mib: usize, seed: u64) {
    write(&dir.join("photo.jpg"), &pseudo_random(mib << 20, seed));
    write(&dir.join("notes.txt"), b"the only copy\n");
    ok(dir, &["init"]);
    ok(dir, &["snapshot", "-q"]);
}

#[test]
fn a_coordinator_that_matches_a_node_with_itself_gets_no_copy_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    owner_with_snapshot(&a, 2, 1);
    let me = node_of(&a);
    // The node's own peer port: a copy "there" would be a copy on its own disk.
    let (_own, own_addr) = start_serve(
        "a",
        &a,
        &[
            "--push-every",
            "0",
            "--snapshot-every",
            "0",
            "--challenge-every",
            "0",
        ],
    );
    let own_url = own_addr.split_once('@').unwrap().1.to_string();
    let rogue = Rogue::start(Box::new(move |out, req| match &req.body {
        NodeMsg::ListRelationships => out.reply(
            req,
            Reply::Relationships {
                as_owner: vec![relationship(req.node, req.node, &own_url, 1 << 30)],
                as_host: vec![relationship(req.node, req.node, &own_url, 1 << 30)],
            },
        ),
        NodeMsg::RequestMatches => out.reply(
            req,
            Reply::Matches {
                hosts: vec![relationship(req.node, req.node, &own_url, 1 << 30)],
                missing: 0,
            },
        ),
        _ => out.plain_answer(req),
    }));
    let o = pluto(&a, &["push", "-k", "1", "--coordinator", &rogue.url]);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "a push with only itself as host succeeded"
    );
    assert!(err.contains("no hosts"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !rogue.requests_of(&me).is_empty(),
        "the push never asked the rogue coordinator"
    );
    // Nothing of its own went to its own hosted store, and no host is on record.
    assert_eq!(stored_bytes(&a.join(".pluto/hosted").join(me.to_hex())), 0);
    let st = status_json(&a);
    assert_eq!(st["min_copies"], 0, "{st}");
    eprintln!("matched with itself: {}", err.trim());
}

#[test]
fn a_coordinator_that_drops_every_request_does_not_stop_a_push_to_known_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    owner_with_snapshot(&a, 3, 2);
    let owner = node_id(&a);
    let (_host, addr) = start_friend_host("host", &tmp.path().join("host"), &owner, "1G");
    // It takes the connection and the requests, and never says a word.
    let rogue = Rogue::start(Box::new(|_, _| {}));
    let t0 = Instant::now();
    let o = pluto(
        &a,
        &[
            "push",
            "-k",
            "1",
            "--host",
            &addr,
            "--coordinator",
            &rogue.url,
        ],
    );
    let took = t0.elapsed();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("to 1 host(s)"), "{out}");
    assert!(err.contains("no answer from the coordinator"), "{err}");
    // One request timeout (10 s), not one per request the push would make.
    assert!(took < Duration::from_secs(40), "push took {took:?}");
    assert_eq!(status_json(&a)["min_copies"], 1);
    eprintln!("silent coordinator: push done in {took:?}; {}", err.trim());
}

/// The node's coordinator client, pinned to the rogue's key, with short timeouts.
fn client_of(
    rogue: &Rogue,
    key: &SigningKey,
) -> (CoordClient, tokio::sync::mpsc::Receiver<CoordEvent>) {
    let mut cfg = ClientConfig::new(&rogue.url, key.clone());
    cfg.coordinator_key = Some(rogue.key.verifying_key());
    cfg.request_timeout = Duration::from_secs(2);
    rogue
        .rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(20), CoordClient::connect(cfg)).await
        })
        .expect("connect timed out")
        .expect("connect")
}

#[test]
fn replies_out_of_order_are_matched_and_replies_of_the_wrong_kind_are_refused() {
    // Holds every reply until a second request is in, then answers the newest first.
    let held: Arc<Mutex<Vec<Request>>> = Arc::default();
    let h = held.clone();
    let rogue = Rogue::start(Box::new(move |out, req| {
        let mut held = h.lock().unwrap();
        match &req.body {
            NodeMsg::ListRelationships | NodeMsg::RequestMatches => {
                held.push(req.clone());
                if held.len() == 2 {
                    for r in held.drain(..).rev() {
                        match r.body {
                            NodeMsg::ListRelationships => out.reply(
                                &r,
                                Reply::Relationships {
                                    as_owner: vec![],
                                    as_host: vec![],
                                },
                            ),
                            _ => out.reply(
                                &r,
                                Reply::Matches {
                                    hosts: vec![],
                                    missing: 3,
                                },
                            ),
                        }
                    }
                }
            }
            // the wrong kind: a friend code is answered with "matches", leave with an invite
            NodeMsg::FriendInvite => out.reply(
                req,
                Reply::Matches {
                    hosts: vec![],
                    missing: 0,
                },
            ),
            NodeMsg::Leave => out.reply(
                req,
                Reply::InviteCode {
                    code: "x".into(),
                    expires_unix: 0,
                },
            ),
            // a reply to a request never made, then none
            NodeMsg::ReportUsage { .. } => out.send(
                req.node,
                CoordMsg::Reply {
                    in_reply_to: req.id.wrapping_add(1000),
                    result: Ok(Reply::Ok),
                },
            ),
            _ => out.plain_answer(req),
        }
    }));
    let key = SigningKey::generate(&mut OsRng);
    let (c, _events) = client_of(&rogue, &key);
    rogue.rt.block_on(async {
        let (rels, matches) = tokio::join!(c.relationships(), c.request_matches());
        assert_eq!(rels.expect("relationships"), (vec![], vec![]));
        assert_eq!(matches.expect("matches"), (vec![], 3));
        let e = c.friend_invite().await.unwrap_err();
        assert!(matches!(e, ClientError::UnexpectedReply(_)), "{e}");
        let e = c.leave().await.unwrap_err();
        assert!(matches!(e, ClientError::UnexpectedReply(_)), "{e}");
        let e = c.report_usage(NodeId([1; 32]), 5).await.unwrap_err();
        assert!(matches!(e, ClientError::Timeout(_)), "{e}");
        // and the session still works
        assert!(c.announce(common_announce()).await.is_ok());
    });
}

fn common_announce() -> wire::Announce {
    wire::Announce {
        addrs: vec!["ws://127.0.0.1:9".into()],
        offer_bytes: 1 << 30,
        want_bytes: 1 << 28,
        copies: 2,
        mode: wire::PeerMode::Mixed,
    }
}

#[test]
fn replayed_forged_misaddressed_and_stale_coordinator_messages_are_never_acted_on() {
    let rogue = Rogue::start(Box::new(|out, req| out.plain_answer(req)));
    let key = SigningKey::generate(&mut OsRng);
    let node = NodeId::of(&key);
    let other = NodeId([3; 32]);
    let (c, mut events) = client_of(&rogue, &key);
    let new_owner = |n: u8| CoordMsg::NewOwner {
        owner: NodeId([n; 32]),
        quota_bytes: 1 << 40,
        owner_addrs: vec![],
    };
    rogue.with_out(|out| {
        let impostor = SigningKey::generate(&mut OsRng);
        // 1: signed by a key that is not the pinned coordinator's
        let f = out.frame(
            &impostor,
            &topics::node(&node),
            wire::now_ms(),
            &new_owner(1),
        );
        out.raw(node, f);
        // 2: the coordinator's signature, but made for another node's topic
        let key = out.key.clone();
        let f = out.frame(&key, &topics::node(&other), wire::now_ms(), &new_owner(2));
        out.raw(node, f);
        // 3: genuine
        out.send(node, new_owner(3));
        // 4: the same frame again, byte for byte
        let again = out.sent.last().unwrap().1.clone();
        out.raw(node, again);
        // 5: genuine but ten minutes old
        let f = out.frame(
            &key,
            &topics::node(&node),
            wire::now_ms() - 600_000,
            &new_owner(5),
        );
        out.raw(node, f);
        // 6: genuine
        out.send(node, new_owner(6));
        // 7: genuine, then one bit flipped in its body on the way
        let mut f = out.frame(&key, &topics::node(&node), wire::now_ms(), &new_owner(7));
        let at = f.len() - 20;
        f[at] ^= 0x40;
        out.raw(node, f);
        // 8: genuine, last
        out.send(node, new_owner(8));
    });
    let got: Vec<u8> = rogue.rt.block_on(async {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !got.contains(&8) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(CoordEvent::Message(CoordMsg::NewOwner { owner, .. }))) => {
                    got.push(owner.0[0])
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        // anything late would show here
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(500), events.recv()).await
        {
            if let CoordEvent::Message(CoordMsg::NewOwner { owner, .. }) = ev {
                got.push(owner.0[0]);
            }
        }
        got
    });
    assert_eq!(
        got,
        vec![3, 6, 8],
        "only genuine, fresh, first-seen messages reach the node"
    );
    drop(c);
}

/// Bytes of the files a host keeps under `dir` (what its quotas count: not the outboards,
/// which it computes itself); 0 when there is no such folder.
fn stored_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => stored_bytes(&e.path()),
            _ if e.file_name().to_string_lossy().ends_with(".obao") => 0,
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[test]
fn a_host_granted_more_than_it_offers_and_flooded_with_orders_keeps_serving_within_its_offer() {
    let tmp = tempfile::tempdir().unwrap();
    let (owner_dir, host_dir) = (tmp.path().join("owner"), tmp.path().join("host"));
    owner_with_snapshot(&owner_dir, 1, 3);
    let owner = node_of(&owner_dir);
    std::fs::create_dir_all(&host_dir).unwrap();
    ok(&host_dir, &["init"]);
    // The rogue grants this owner a terabyte on a host that offers 8 MiB.
    let rogue = Rogue::start(Box::new(move |out, req| match &req.body {
        NodeMsg::ListRelationships => out.reply(
            req,
            Reply::Relationships {
                as_owner: vec![],
                as_host: vec![relationship(owner, req.node, "ws://127.0.0.1:9", 1 << 40)],
            },
        ),
        // relayed answers, reports and repairs are taken and never answered
        NodeMsg::ChallengeAnswer { .. } | NodeMsg::RepairDone { .. } => {}
        _ => out.plain_answer(req),
    }));
    let (mut host, addr) = start_serve(
        "host",
        &host_dir,
        &[
            "--coordinator",
            &rogue.url,
            "--offer",
            "8M",
            "--push-every",
            "0",
            "--snapshot-every",
            "0",
            "--challenge-every",
            "0",
        ],
    );
    host.wait_containing(
        "only 8.0 MiB fit in this node's offer",
        Duration::from_secs(20),
    );
    let host_node = node_of(&host_dir);
    let rss_before = rss(host.child.id());

    // The flood: 3000 each of repair orders (their sources a closed port), relayed
    // challenges, relay offers to nowhere, and move orders.
    let t0 = Instant::now();
    rogue.with_out(|out| {
        for i in 0..3000u64 {
            out.send(
                host_node,
                CoordMsg::RepairShare {
                    owner,
                    k: 4,
                    n: 8,
                    lost_index: 0,
                    lost_name: [i as u8; 32],
                    lost_len: 1 << 30,
                    sources: (1..5)
                        .map(|j| RepairSource {
                            index: j,
                            name: [j; 32],
                            len: 1 << 30,
                            host: NodeId([j; 32]),
                            addrs: vec!["ws://127.0.0.1:9".into()],
                        })
                        .collect(),
                    ticket: vec![0; 200],
                },
            );
            out.send(
                host_node,
                CoordMsg::Challenge {
                    challenge_id: i,
                    owner,
                    payload: vec![7; 100],
                    deadline_unix: 0,
                },
            );
            out.send(
                host_node,
                CoordMsg::RelayOffer {
                    peer: owner,
                    url: "ws://127.0.0.1:9".into(),
                    token: "t".into(),
                },
            );
            out.send(
                host_node,
                CoordMsg::MoveCopies {
                    host: NodeId([i as u8; 32]),
                    reason: "flood".into(),
                },
            );
        }
    });
    // The flood reaches the node: orders are tried, and those beyond what it takes on at
    // once are dropped.
    host.wait_containing("repair for", Duration::from_secs(30));
    host.wait_containing("too much work at once", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        host.alive(),
        "serve died under the flood:\n{}",
        host.drain()
    );
    let rss_after = rss(host.child.id());
    assert!(
        rss_after < rss_before + (64 << 20),
        "serve grew from {rss_before} to {rss_after} bytes under the flood"
    );
    // It still serves its owner: a push fits, a bigger one is refused at the offer.
    let o = pluto(&owner_dir, &["push", "-k", "1", "--host", &addr]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), host.drain());
    write(&owner_dir.join("big.bin"), &pseudo_random(12 << 20, 4));
    ok(&owner_dir, &["snapshot", "-q"]);
    let o = pluto(&owner_dir, &["push", "-k", "1", "--host", &addr]);
    let err = stderr(&o);
    assert!(!o.status.success(), "12 MiB more fit in an 8 MiB offer");
    assert!(err.contains("quota"), "{err}");
    let hosted = stored_bytes(&host_dir.join(".pluto/hosted"));
    assert!(
        hosted <= 8 << 20,
        "the host stores {hosted} bytes, more than its 8 MiB offer"
    );
    // And it stops when told to, flood or not.
    let t = Instant::now();
    assert!(host.terminate(Duration::from_secs(15)).success());
    eprintln!(
        "flood of 12000 orders: rss {} -> {} MiB, stopped in {:?}, {} s in all; hosted {hosted} bytes",
        rss_before >> 20,
        rss_after >> 20,
        t.elapsed(),
        t0.elapsed().as_secs()
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, concatenated.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.extend(b);
        }
    }
    out
}

/// What a coordinator and a host get to see of an owner's backup: neither the content,
/// nor the names of its files, nor its recovery words, nor its keys.
#[test]
fn a_coordinator_and_a_host_that_keep_everything_learn_no_content_names_or_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let (owner_dir, host_dir) = (tmp.path().join("owner"), tmp.path().join("host"));
    let canary = b"PLUTO-CANARY the text of a private letter, 0123456789\n".repeat(2000);
    write(&owner_dir.join("private-letter-to-my-bank.txt"), &canary);
    let photo = pseudo_random(1 << 20, 9);
    write(&owner_dir.join("holiday-photo-of-the-kids.jpg"), &photo);
    let words = words_from_init(&ok(&owner_dir, &["init"]));
    ok(&owner_dir, &["snapshot", "-q", "-m", "my-secret-message"]);
    let owner = node_of(&owner_dir);
    std::fs::create_dir_all(&host_dir).unwrap();
    ok(&host_dir, &["init"]);
    let host = node_of(&host_dir);
    // The host's address, once it serves, is what the coordinator hands the owner.
    let host_url: Arc<Mutex<String>> = Arc::default();
    let hu = host_url.clone();
    let rogue = Rogue::start(Box::new(move |out, req| {
        let url = hu.lock().unwrap().clone();
        match &req.body {
            NodeMsg::ListRelationships if req.node == host => out.reply(
                req,
                Reply::Relationships {
                    as_owner: vec![],
                    as_host: vec![relationship(owner, host, "ws://127.0.0.1:9", 1 << 30)],
                },
            ),
            NodeMsg::ListRelationships | NodeMsg::RequestMatches if req.node == owner => {
                let r = vec![relationship(owner, host, &url, 1 << 30)];
                out.reply(
                    req,
                    match req.body {
                        NodeMsg::RequestMatches => Reply::Matches {
                            hosts: r,
                            missing: 0,
                        },
                        _ => Reply::Relationships {
                            as_owner: r,
                            as_host: vec![],
                        },
                    },
                )
            }
            _ => out.plain_answer(req),
        }
    }));
    let (mut serve, addr) = start_serve(
        "host",
        &host_dir,
        &[
            "--coordinator",
            &rogue.url,
            "--push-every",
            "0",
            "--snapshot-every",
            "0",
            "--challenge-every",
            "0",
        ],
    );
    serve.wait_containing("connected to the coordinator", Duration::from_secs(20));
    *host_url.lock().unwrap() = addr.split_once('@').unwrap().1.to_string();
    let out = ok(
        &owner_dir,
        &["push", "-k", "1", "--coordinator", &rogue.url],
    );
    assert!(out.contains("to 1 host(s)"), "{out}");
    assert!(!rogue.requests_of(&owner).is_empty());

    let seen = rogue.received.lock().unwrap().clone();
    let disk = all_bytes(&host_dir.join(".pluto/hosted"));
    assert!(
        disk.len() > photo.len(),
        "the host holds {} bytes",
        disk.len()
    );
    let secret = std::fs::read(owner_dir.join(".pluto/secret")).unwrap();
    for (what, bytes) in [("the coordinator", &seen), ("the host's disk", &disk)] {
        assert!(
            !contains(bytes, b"PLUTO-CANARY"),
            "{what} holds the letter's text"
        );
        assert!(
            !contains(bytes, &photo[1000..1032]),
            "{what} holds the photo's bytes"
        );
        for name in ["private-letter", "holiday-photo", "my-secret-message"] {
            assert!(
                !contains(bytes, name.as_bytes()),
                "{what} holds the name {name:?}"
            );
        }
        for w in words.split_whitespace().collect::<Vec<_>>().windows(3) {
            assert!(
                !contains(bytes, w.join(" ").as_bytes()),
                "{what} holds recovery words"
            );
        }
        for w in secret.windows(16).step_by(7) {
            assert!(
                !contains(bytes, w),
                "{what} holds bytes of the owner's secret file"
            );
        }
    }
    eprintln!(
        "the coordinator saw {} bytes, the host stores {} bytes: no content, names, words or keys",
        seen.len(),
        disk.len()
    );
}
