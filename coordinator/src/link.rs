//! The coordinator's own MQTT connection: receives node messages, runs [`Core`], publishes replies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use pluto_netsync::wire::{self, topics, NodeId};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};

use crate::core::{Core, Out};

/// How the coordinator logs in to its broker.
#[derive(Clone)]
pub enum LinkAuth {
    /// Embedded broker: a signed token with the coordinator's key (superuser).
    Token,
    /// External broker: username/password of a user allowed on `pluto/v1/#` and the dynsec control topic.
    Password { username: String, password: String },
}

/// The shared-subscription group of coordinator instances (`$share/pluto-coordinator/…`).
pub const SHARE_GROUP: &str = "pluto-coordinator";
pub const DYNSEC_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const DYNSEC_RESPONSE: &str = "$CONTROL/dynamic-security/v1/response";

fn options(
    key: &SigningKey,
    host: &str,
    port: u16,
    auth: &LinkAuth,
    last_secs: &mut u64,
    instance: Option<&str>,
) -> MqttOptions {
    // Instances sharing a broker each need their own session.
    let id = match instance {
        Some(i) => format!("{}-{i}", NodeId::of(key).to_hex()),
        None => NodeId::of(key).to_hex(),
    };
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    o.set_max_packet_size(wire::MAX_FRAME_BYTES + 4096, wire::MAX_FRAME_BYTES + 4096);
    o.set_inflight(1000);
    o.set_request_channel_capacity(10_000);
    match auth {
        LinkAuth::Token => {
            let secs = (wire::now_ms() / 1000).max(*last_secs + 1);
            *last_secs = secs;
            let t = wire::connect_token(key, secs);
            o.set_credentials(t.username, t.password);
        }
        LinkAuth::Password { username, password } => {
            o.set_credentials(username.clone(), password.clone());
        }
    }
    o
}

/// How the coordinator dials nodes back ([`Out::Probe`]).
#[derive(Clone)]
pub struct ProbeConfig {
    pub key: SigningKey,
    pub timeout: Duration,
}

/// Dial-backs running at once: a burst of announces (a restart of the coordinator) must not
/// open thousands of sockets together.
const PROBES_AT_ONCE: usize = 64;

/// Dial `node` at each of `addrs`: a peer-protocol handshake in which the node proves its
/// identity. The addresses where it did are returned.
pub async fn dial_back(probe: &ProbeConfig, node: NodeId, addrs: &[String]) -> Vec<String> {
    let mut reached = Vec::new();
    for url in addrs {
        let host = pluto_netsync::peer::client::HostAddr {
            node,
            url: url.clone(),
        };
        match pluto_netsync::peer::client::PeerClient::connect(&probe.key, &host, probe.timeout)
            .await
        {
            Ok(c) => {
                c.close().await;
                reached.push(url.clone());
            }
            Err(e) => tracing::info!(%node, %url, error = %e, "dial-back did not reach the node"),
        }
    }
    reached
}

/// Start the link; returns once the first subscription is acknowledged.
// (each argument is one setting of the link, all from `start`'s config; a struct would
// only rename them)
#[allow(clippy::too_many_arguments)]
pub async fn start(
    key: SigningKey,
    host: String,
    port: u16,
    auth: LinkAuth,
    core: Arc<Mutex<Core>>,
    external: bool,
    tick: Duration,
    instance: Option<String>,
    probe: ProbeConfig,
) -> Result<Vec<tokio::task::JoinHandle<()>>, crate::Error> {
    let mut last_secs = 0;
    let (client, mut eventloop) = AsyncClient::new(
        options(
            &key,
            &host,
            port,
            &auth,
            &mut last_secs,
            instance.as_deref(),
        ),
        10_000,
    );
    let (in_tx, mut in_rx) = mpsc::channel::<(String, Vec<u8>)>(100_000);
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let sub_client = client.clone();
    // Several instances: each node message goes to one of them (an MQTT shared subscription).
    let shared = |t: &str| match instance {
        Some(_) => format!("$share/{SHARE_GROUP}/{t}"),
        None => t.to_string(),
    };
    let (coord_topic, enroll_topic) = (shared(topics::ALL_COORD), shared(topics::ENROLL));
    let subscribe = move || {
        let _ = sub_client.try_subscribe(coord_topic.clone(), QoS::AtLeastOnce);
        if external {
            let _ = sub_client.try_subscribe(enroll_topic.clone(), QoS::AtLeastOnce);
            let _ = sub_client.try_subscribe(DYNSEC_RESPONSE, QoS::AtLeastOnce);
        }
    };
    let key2 = key.clone();
    let reader = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut dropped = 0u64;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    subscribe();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(true);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic == DYNSEC_RESPONSE {
                        let text = String::from_utf8_lossy(&p.payload);
                        if text.contains("\"error\"") && !text.contains("already exists") {
                            tracing::warn!(response = %text, "broker dynamic-security error");
                        }
                        continue;
                    }
                    if in_tx.try_send((p.topic, p.payload.to_vec())).is_err() {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!(
                                dropped,
                                "coordinator overloaded: dropping incoming messages"
                            );
                        }
                    }
                }
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => return,
                Err(e) => {
                    let _ = ready_tx.send(false);
                    tracing::warn!(error = %e, "broker connection lost; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    eventloop.mqtt_options = options(
                        &key2,
                        &host,
                        port,
                        &auth,
                        &mut last_secs,
                        instance.as_deref(),
                    );
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(15), ready_rx.wait_for(|r| *r))
        .await
        .map_err(|_| {
            crate::Error::Broker(
                "coordinator could not log in and subscribe to its broker within 15 s".into(),
            )
        })?
        .map_err(|_| crate::Error::Broker("broker link stopped".into()))?;

    if external {
        let setup = serde_json::json!({"commands": [
            {"command": "setDefaultACLAccess", "acls": [
                {"acltype": "publishClientSend", "allow": false},
                {"acltype": "publishClientReceive", "allow": false},
                {"acltype": "subscribe", "allow": false},
                {"acltype": "unsubscribe", "allow": true}]},
            {"command": "createRole", "rolename": "pluto-node"},
            {"command": "createClient", "username": "pluto-enroll", "password": "pluto-enroll"}
        ]});
        client
            .publish(DYNSEC_TOPIC, QoS::AtLeastOnce, false, setup.to_string())
            .await
            .map_err(|e| crate::Error::Broker(e.to_string()))?;
    }

    let mut next_id: u64 = rand::random::<u64>() >> 1;
    let (probe_tx, mut probe_rx) = mpsc::channel::<(NodeId, Vec<String>, Vec<String>)>(1024);
    let probes = Arc::new(tokio::sync::Semaphore::new(PROBES_AT_ONCE));
    let worker = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(tick);
        loop {
            let outs = tokio::select! {
                Some((node, tried, reached)) = probe_rx.recv() => match core.lock() {
                    Ok(mut c) => c.probe_done(node, tried, reached, wire::now_ms()),
                    Err(_) => return,
                },
                m = in_rx.recv() => match m {
                    Some((topic, payload)) => match core.lock() {
                        Ok(mut c) => c.handle(&topic, &payload, wire::now_ms()),
                        Err(_) => return,
                    },
                    None => return,
                },
                _ = ticker.tick() => match core.lock() {
                    Ok(mut c) => c.tick(wire::now_ms()),
                    Err(_) => return,
                },
            };
            for out in outs {
                match out {
                    Out::Send(node, msg) => {
                        let topic = topics::node(&node);
                        next_id += 1;
                        match wire::seal(&key, &topic, next_id, wire::now_ms(), &msg) {
                            Ok(frame) => {
                                if client
                                    .publish(topic, QoS::AtLeastOnce, false, frame)
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            Err(e) => tracing::error!(error = %e, "cannot seal a reply"),
                        }
                    }
                    Out::Probe { node, addrs } => {
                        let Ok(permit) = probes.clone().try_acquire_owned() else {
                            tracing::warn!(%node, "too many dial-backs at once; not testing this one");
                            continue;
                        };
                        let (probe, tx) = (probe.clone(), probe_tx.clone());
                        tokio::spawn(async move {
                            let reached = dial_back(&probe, node, &addrs).await;
                            drop(permit);
                            let _ = tx.send((node, addrs, reached)).await;
                        });
                    }
                    Out::Enroll(node, password) => {
                        let cmd = serde_json::json!({"commands": [
                            {"command": "createClient", "username": node.to_hex(), "password": password,
                             "roles": [{"rolename": "pluto-node"}]},
                            {"command": "setClientPassword", "username": node.to_hex(), "password": password}
                        ]});
                        tracing::info!(%node, "enrolling node with the external broker");
                        if client
                            .publish(DYNSEC_TOPIC, QoS::AtLeastOnce, false, cmd.to_string())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(vec![reader, worker])
}
