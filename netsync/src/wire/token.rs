//! MQTT CONNECT credentials for the embedded broker, and the derived password for an external one.

use ed25519_dalek::{Signature, Signer, SigningKey};

use super::{NodeId, WireError};

/// Domain separation for connect tokens.
pub const CONNECT_CONTEXT: &[u8] = b"pluto v1 mqtt connect\0";

/// client id = hex public key, username = unix seconds, password = hex signature over
/// `CONNECT_CONTEXT || client id || 0x00 || username`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectToken {
    pub client_id: String,
    pub username: String,
    pub password: String,
}

pub fn connect_token(key: &SigningKey, unix_secs: u64) -> ConnectToken {
    connect_token_for(key, &NodeId::of(key).to_hex(), unix_secs)
}

/// Like [`connect_token`] for a client id with a suffix (`<hex id>-<suffix>`).
pub fn connect_token_for(key: &SigningKey, client_id: &str, unix_secs: u64) -> ConnectToken {
    let client_id = client_id.to_string();
    let username = unix_secs.to_string();
    let sig = key.sign(&token_message(&client_id, &username));
    ConnectToken {
        client_id,
        username,
        password: hex::encode(sig.to_bytes()),
    }
}

fn token_message(client_id: &str, username: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONNECT_CONTEXT.len() + client_id.len() + 1 + username.len());
    m.extend_from_slice(CONNECT_CONTEXT);
    m.extend_from_slice(client_id.as_bytes());
    m.push(0);
    m.extend_from_slice(username.as_bytes());
    m
}

/// Check a token's signature; returns the node and the token's time. The caller checks the
/// time against its clock and that it is later than the node's previous token.
pub fn verify_connect_token(
    client_id: &str,
    username: &str,
    password: &[u8],
) -> Result<(NodeId, u64), WireError> {
    let node = node_of_client_id(client_id)?;
    if username.is_empty() || username.len() > 20 || !username.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WireError::BadToken("username must be unix seconds".into()));
    }
    let secs: u64 = username
        .parse()
        .map_err(|_| WireError::BadToken("username must be unix seconds".into()))?;
    if password.len() != 128 {
        return Err(WireError::BadToken(
            "password must be a 128-hex-digit signature".into(),
        ));
    }
    let mut sig = [0u8; 64];
    hex::decode_to_slice(password, &mut sig)
        .map_err(|_| WireError::BadToken("password is not hex".into()))?;
    let key = node
        .verifying_key()
        .map_err(|_| WireError::BadToken("client id is not a valid public key".into()))?;
    key.verify_strict(
        &token_message(client_id, username),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| WireError::BadToken("signature does not verify".into()))?;
    Ok((node, secs))
}

/// Password this node uses with an external broker after enrolling (derived from its key, so
/// the same words give the same password on a new machine).
pub fn broker_password(key: &SigningKey) -> String {
    hex::encode(blake3::derive_key(
        "pluto v1 external broker password",
        &key.to_bytes(),
    ))
}

/// The node id in an MQTT client id: `<64 hex>` or `<64 hex>-<1..=16 ASCII alphanumerics>`.
pub fn node_of_client_id(client_id: &str) -> Result<NodeId, WireError> {
    let (hex, suffix) = match client_id.split_once('-') {
        Some((h, s)) => (h, Some(s)),
        None => (client_id, None),
    };
    if let Some(s) = suffix {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(WireError::BadToken(
                "client id suffix must be 1..=16 ASCII alphanumerics".into(),
            ));
        }
    }
    hex.parse()
        .map_err(|_| WireError::BadToken("client id is not a hex public key".into()))
}
