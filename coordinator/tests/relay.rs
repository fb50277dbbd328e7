//! The WebSocket relay pipes bytes between two matched nodes, and only them.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use pluto_netsync::coord_client::ClientError;
use pluto_netsync::wire::{CoordMsg, PeerMode, RefusalCode};
use tokio_tungstenite::tungstenite::Message;

async fn open(
    url: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .unwrap()
    .unwrap();
    ws.send(Message::Text(token.to_string().into()))
        .await
        .unwrap();
    ws
}

async fn next(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("relay silent")
        .expect("closed")
        .expect("ws error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_pipes_between_matched_nodes_only() {
    let (coord, _dir) = start_coordinator(test_params()).await;
    let url = coord.broker_url();
    let (a, _) = connect(&url, &new_key(), &coord).await;
    let (b, mut brx) = connect(&url, &new_key(), &coord).await;
    let (s, _) = connect(&url, &new_key(), &coord).await;
    a.announce(announce(1, 10 * GIB, GIB, 1, PeerMode::Mixed))
        .await
        .unwrap();
    b.announce(announce(2, 10 * GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    s.announce(announce(3, 0, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let (hosts, _) = a.request_matches().await.unwrap();
    assert_eq!(hosts[0].host, b.node_id());
    // a stranger cannot open a session to a
    assert!(
        matches!(s.relay_ticket(a.node_id()).await, Err(ClientError::Refused(r)) if r.code == RefusalCode::NotMatched)
    );

    let (relay_url, token_a) = a.relay_ticket(b.node_id()).await.unwrap();
    let m = wait_msg(&mut brx, 5, |m| matches!(m, CoordMsg::RelayOffer { .. })).await;
    let CoordMsg::RelayOffer {
        peer,
        url: url_b,
        token: token_b,
    } = m
    else {
        unreachable!()
    };
    assert_eq!((peer, &url_b), (a.node_id(), &relay_url));
    assert_ne!(token_a, token_b);

    // a wrong token is refused
    let mut bad = open(&relay_url, "00112233445566778899aabbccddeeff").await;
    assert!(matches!(next(&mut bad).await, Message::Text(t) if t.starts_with("refused")));

    let mut wa = open(&relay_url, &token_a).await;
    let mut wb = open(&url_b, &token_b).await;
    assert_eq!(next(&mut wa).await, Message::Text("paired".into()));
    assert_eq!(next(&mut wb).await, Message::Text("paired".into()));
    let big: Vec<u8> = (0..(3 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    wa.send(Message::Binary(big.clone().into())).await.unwrap();
    assert_eq!(next(&mut wb).await, Message::Binary(big.into()));
    wb.send(Message::Binary(b"ack".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(next(&mut wa).await, Message::Binary(b"ack".to_vec().into()));
    // tokens are single-use
    let mut again = open(&relay_url, &token_a).await;
    assert!(matches!(next(&mut again).await, Message::Text(t) if t.starts_with("refused")));
    // closing one side closes the other
    wa.close(None).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match wb.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                _ => {}
            }
        }
    })
    .await;
    assert!(end.is_ok());
    assert!(
        coord
            .relay_stats
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3 << 20
    );
}
