//! Repair tickets: the coordinator's signed leave for one node (the repairer) to read named
//! shares of one owner from the hosts that hold them. Hosts otherwise serve an owner's
//! files to that owner only; a ticket widens that to exactly these shares, for this reader,
//! until it expires. The reader is the Noise-authenticated peer, so a ticket is worthless
//! to anyone else.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::NodeId;

/// Domain separation of the signed bytes.
pub const TICKET_CONTEXT: &[u8] = b"pluto v1 repair ticket\0";
/// Names per ticket: a group has at most 255 shares.
pub const MAX_TICKET_NAMES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairTicket {
    pub reader: NodeId,
    pub owner: NodeId,
    pub expires_unix: u64,
    pub names: Vec<[u8; 32]>,
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("malformed repair ticket: {0}")]
    Malformed(String),
    #[error("repair ticket is not signed by the coordinator")]
    BadSignature,
    #[error("repair ticket was issued to another node")]
    WrongReader,
    #[error("repair ticket is for another owner")]
    WrongOwner,
    #[error("repair ticket expired")]
    Expired,
    #[error("repair ticket does not name this share")]
    NotNamed,
}

fn signed_bytes(reader: &NodeId, owner: &NodeId, expires: u64, names: &[[u8; 32]]) -> Vec<u8> {
    let mut m = Vec::with_capacity(TICKET_CONTEXT.len() + 74 + 32 * names.len());
    m.extend_from_slice(TICKET_CONTEXT);
    m.extend_from_slice(&reader.0);
    m.extend_from_slice(&owner.0);
    m.extend_from_slice(&expires.to_le_bytes());
    m.extend_from_slice(&(names.len() as u16).to_le_bytes());
    for n in names {
        m.extend_from_slice(n);
    }
    m
}

/// Issue a ticket (coordinator side); the bytes go in [`super::CoordMsg::RepairShare`].
pub fn issue(
    coordinator: &SigningKey,
    reader: NodeId,
    owner: NodeId,
    expires_unix: u64,
    names: Vec<[u8; 32]>,
) -> Vec<u8> {
    let sig = coordinator.sign(&signed_bytes(&reader, &owner, expires_unix, &names));
    let t = RepairTicket {
        reader,
        owner,
        expires_unix,
        names,
        signature: sig.to_bytes().to_vec(),
    };
    postcard::to_stdvec(&t).expect("a ticket serializes")
}

/// Check a ticket presented by `reader` for share `name` of `owner` (host side).
pub fn verify(
    coordinator: &VerifyingKey,
    bytes: &[u8],
    reader: &NodeId,
    owner: &NodeId,
    name: &[u8; 32],
    now_unix: u64,
) -> Result<RepairTicket, TicketError> {
    let t: RepairTicket =
        postcard::from_bytes(bytes).map_err(|e| TicketError::Malformed(e.to_string()))?;
    if t.names.len() > MAX_TICKET_NAMES {
        return Err(TicketError::Malformed(format!("{} names", t.names.len())));
    }
    let sig: [u8; 64] = t
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| TicketError::Malformed("signature is not 64 bytes".into()))?;
    coordinator
        .verify(
            &signed_bytes(&t.reader, &t.owner, t.expires_unix, &t.names),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| TicketError::BadSignature)?;
    if &t.reader != reader {
        return Err(TicketError::WrongReader);
    }
    if &t.owner != owner {
        return Err(TicketError::WrongOwner);
    }
    if now_unix > t.expires_unix {
        return Err(TicketError::Expired);
    }
    if !t.names.contains(name) {
        return Err(TicketError::NotNamed);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_exactly_its_shares_for_its_reader_until_it_expires() {
        let coord = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let (reader, owner) = (NodeId([3; 32]), NodeId([4; 32]));
        let names = vec![[5u8; 32], [6u8; 32]];
        let t = issue(&coord, reader, owner, 1000, names);
        let vk = coord.verifying_key();
        assert!(verify(&vk, &t, &reader, &owner, &[6; 32], 999).is_ok());
        assert_eq!(
            verify(&vk, &t, &reader, &owner, &[7; 32], 999),
            Err(TicketError::NotNamed)
        );
        assert_eq!(
            verify(&vk, &t, &reader, &owner, &[5; 32], 1001),
            Err(TicketError::Expired)
        );
        assert_eq!(
            verify(&vk, &t, &NodeId([9; 32]), &owner, &[5; 32], 1),
            Err(TicketError::WrongReader)
        );
        assert_eq!(
            verify(&vk, &t, &reader, &NodeId([9; 32]), &[5; 32], 1),
            Err(TicketError::WrongOwner)
        );
        assert_eq!(
            verify(&other.verifying_key(), &t, &reader, &owner, &[5; 32], 1),
            Err(TicketError::BadSignature)
        );
        // a ticket whose names were widened after signing is refused
        let mut forged: RepairTicket = postcard::from_bytes(&t).unwrap();
        forged.names.push([7; 32]);
        let forged = postcard::to_stdvec(&forged).unwrap();
        assert_eq!(
            verify(&vk, &forged, &reader, &owner, &[7; 32], 1),
            Err(TicketError::BadSignature)
        );
        assert!(matches!(
            verify(&vk, b"garbage", &reader, &owner, &[5; 32], 1),
            Err(TicketError::Malformed(_))
        ));
    }
}
