//! `pluto-coordinator`: the matchmaking server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pluto_coordinator::{Config, ExternalBroker};

/// pluto's coordinator: authenticates nodes, matches them, records who holds whose data,
/// relays storage challenges and keeps reputation.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Directory for the coordinator's key and database.
    #[arg(long, env = "PLUTO_COORDINATOR_DATA")]
    data: PathBuf,
    /// Address of the embedded MQTT broker.
    #[arg(long, default_value = "127.0.0.1:1883")]
    listen: SocketAddr,
    /// Use an existing broker (Mosquitto with dynamic security) instead: mqtt://HOST:PORT.
    #[arg(long)]
    broker: Option<String>,
    /// Username on the external broker (needs pluto/v1/# and the dynamic-security control topic).
    #[arg(long, default_value = "pluto-coordinator", env = "PLUTO_BROKER_USER")]
    broker_user: String,
    /// Password on the external broker.
    #[arg(long, env = "PLUTO_BROKER_PASSWORD", hide_env_values = true)]
    broker_password: Option<String>,
    /// Address of the WebSocket relay (off unless given).
    #[arg(long)]
    relay_listen: Option<SocketAddr>,
    /// Relay URL announced to nodes (default ws://<relay-listen>).
    #[arg(long)]
    relay_url: Option<String>,
    /// Do not dial announcing nodes back (by default each node's announced addresses are
    /// tested with a peer handshake, and only those that reached it are handed out).
    #[arg(long)]
    no_dial_back: bool,
    /// Seconds between liveness pings.
    #[arg(long, default_value_t = 60)]
    ping_interval: u64,
    /// Seconds between challenge rounds.
    #[arg(long, default_value_t = 6 * 3600)]
    challenge_interval: u64,
    /// Seconds a share's holder may be offline before the share is rebuilt on another node
    /// (an excluded holder's share at once). The model favours 3–7 days.
    #[arg(long, default_value_t = 3 * 24 * 3600)]
    repair_grace: u64,
    /// Seconds a repair order may take before it is ordered again from another node (a
    /// repairer that went offline mid-way). An operator and test knob: the soak compresses
    /// days into seconds and needs it shorter than the default 10 minutes.
    #[arg(long, default_value_t = 600)]
    repair_timeout: u64,
    /// Required ratio of offered to requested storage.
    #[arg(long, default_value_t = 1.0)]
    balance_ratio: f64,
    /// Start with an empty database although coordinator.key exists (the database was lost:
    /// every node must announce again). Without it such a start is refused.
    #[arg(long)]
    new_database: bool,
    /// Keep the state in PostgreSQL (postgres://USER:PASSWORD@HOST:PORT/DB) instead of
    /// coordinator.sqlite, so that several instances can share it (each with --key-file,
    /// --broker and its own --instance). Without it: SQLite in --data, one instance.
    #[arg(long, env = "PLUTO_COORDINATOR_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// The coordinator's signing key (64 hex digits, as coordinator.key), provided by the
    /// operator and the same for every instance; never created. Without it:
    /// coordinator.key in --data, created on first start.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// This instance's name among those sharing one database (default: host name and process
    /// id). Names its leases on periodic work and its broker session.
    #[arg(long)]
    instance: Option<String>,
    /// Seconds a lease on periodic work lasts unrenewed: the most it takes the others to take
    /// over the pings, challenge rounds and repairs of an instance that died.
    #[arg(long, default_value_t = 10)]
    lease_ttl: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLUTO_LOG")
                .unwrap_or_else(|_| "info,rmqtt=warn".into()),
        )
        .with_writer(std::io::stderr)
        // colour codes only on a terminal, not in journald or a log file
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let a = Args::parse();
    // Each node holds one descriptor; the usual soft limit (1,024) would cap the coordinator
    // far below what the machine allows, and raising it to the hard limit needs no privilege.
    match pluto_coordinator::fdlimit::raise_open_files_limit() {
        Ok((before, now)) => {
            tracing::info!(
                before,
                now,
                "open files limit: soft limit set to the hard limit"
            )
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    let mut cfg = Config::new(&a.data);
    cfg.listen = a.listen;
    cfg.relay_listen = a.relay_listen;
    cfg.new_database = a.new_database;
    cfg.database = a.database;
    cfg.key_file = a.key_file;
    cfg.instance = a.instance;
    cfg.lease_ttl = Duration::from_secs(a.lease_ttl.max(1));
    cfg.relay_url = a.relay_url;
    cfg.dial_back = !a.no_dial_back;
    cfg.params.ping_interval = Duration::from_secs(a.ping_interval.max(1));
    cfg.params.challenge_interval = Duration::from_secs(a.challenge_interval.max(1));
    cfg.params.pair_challenge_gap = cfg.params.challenge_interval / 2;
    cfg.params.balance_ratio = a.balance_ratio;
    cfg.params.repair_grace = Duration::from_secs(a.repair_grace);
    cfg.params.repair_timeout = Duration::from_secs(a.repair_timeout.max(1));
    if let Some(url) = a.broker {
        let password = a
            .broker_password
            .context("--broker needs --broker-password (or PLUTO_BROKER_PASSWORD)")?;
        cfg.broker = Some(ExternalBroker {
            url,
            username: a.broker_user,
            password,
        });
    }
    let running = pluto_coordinator::start(cfg)
        .await
        .context("cannot start the coordinator")?;
    println!("coordinator key {}", running.public_key_hex());
    println!("mqtt {}", running.broker_url());
    if let Some(r) = running.relay_addr {
        println!("relay ws://{r}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    running.shutdown();
    Ok(())
}
