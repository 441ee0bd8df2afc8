//! The binary, versioned encoding of a [`Delivery`] as a Kafka record value.
//!
//! # Byte layout, version 1
//!
//! All integers are big-endian; nothing is padded; the record ends exactly
//! after the payload (trailing bytes are an error).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | format version, `1` |
//! | 1 | 4 | shard number (`u32`) |
//! | 5 | 1 | payload kind: `1` update, `2` ephemeral, `3` presence, `4` presence control, `5` ended sessions |
//! | 6 | 4 | recipient count `n` (`u32`) |
//! | 10 | 16 × `n` | recipients: user ID (`i64`), then `seq` (`u64`; 0 for ephemeral and presence) |
//! | 10 + 16n | 4 | payload length `m` (`u32`) |
//! | 14 + 16n | `m` | payload: UTF-8 text for update (the `update` object) and ephemeral (a whole frame); for presence a JSON array of `protocol::ws::PresenceView`; for presence control a JSON `engine::presence::PresenceControl` (no recipients); for ended sessions a JSON array of session (token family) IDs |
//!
//! A reader refuses any other version ([`EnvelopeError::UnknownVersion`]):
//! a new layout gets a new version byte, and nodes are upgraded to read it
//! before any node writes it. Decoding never panics and never allocates
//! more than the record's own size, whatever the bytes.
//!
//! Kind `5` came after the first release of version 1: a node that does
//! not know it sends such a record to the dead-letter topic, so every node
//! is upgraded before any node ends sessions across the cluster.

use std::sync::Arc;

use protocol::ws::PresenceView;

use crate::bus::{Delivery, Payload};
use crate::shard::ShardId;

/// The format version this code writes (and the only one it reads).
pub const ENVELOPE_VERSION: u8 = 1;

const KIND_UPDATE: u8 = 1;
const KIND_EPHEMERAL: u8 = 2;
const KIND_PRESENCE: u8 = 3;
const KIND_CONTROL: u8 = 4;
const KIND_END_SESSIONS: u8 = 5;
/// Bytes of one recipient: user ID and `seq`.
const RECIPIENT_LEN: usize = 16;

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("empty record")]
    Empty,
    #[error("unknown envelope version {0} (this node reads version {ENVELOPE_VERSION})")]
    UnknownVersion(u8),
    #[error("record truncated in {0}")]
    Truncated(&'static str),
    #[error("unknown payload kind {0}")]
    UnknownKind(u8),
    #[error("{0} bytes after the payload")]
    TrailingBytes(usize),
    #[error("payload text is not UTF-8: {0}")]
    BadText(#[from] std::str::Utf8Error),
    #[error("presence payload: {0}")]
    BadPresence(#[from] serde_json::Error),
    #[error("{0} does not fit in 32 bits")]
    TooLarge(&'static str),
}

/// Encodes a delivery as one record value (version [`ENVELOPE_VERSION`]).
pub fn encode(delivery: &Delivery) -> Result<Vec<u8>, EnvelopeError> {
    let json;
    let (kind, payload): (u8, &[u8]) = match &delivery.payload {
        Payload::Update(text) => (KIND_UPDATE, text.as_bytes()),
        Payload::Ephemeral(text) => (KIND_EPHEMERAL, text.as_bytes()),
        Payload::Presence(views) => {
            json = serde_json::to_vec(&**views)?;
            (KIND_PRESENCE, &json)
        }
        Payload::Control(control) => {
            json = serde_json::to_vec(&**control)?;
            (KIND_CONTROL, &json)
        }
        Payload::EndSessions(sessions) => {
            json = serde_json::to_vec(&**sessions)?;
            (KIND_END_SESSIONS, &json)
        }
    };
    let count = u32::try_from(delivery.recipients.len()).map_err(|_| EnvelopeError::TooLarge("recipient count"))?;
    let length = u32::try_from(payload.len()).map_err(|_| EnvelopeError::TooLarge("payload length"))?;
    let mut out = Vec::with_capacity(14 + RECIPIENT_LEN * delivery.recipients.len() + payload.len());
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&delivery.shard.0.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&count.to_be_bytes());
    for &(user_id, seq) in &delivery.recipients {
        out.extend_from_slice(&user_id.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
    }
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decodes a record value written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Delivery, EnvelopeError> {
    let (&version, rest) = bytes.split_first().ok_or(EnvelopeError::Empty)?;
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnknownVersion(version));
    }
    let mut reader = Reader(rest);
    let shard = ShardId(u32::from_be_bytes(reader.array("shard")?));
    let [kind] = reader.array("payload kind")?;
    let count = u32::from_be_bytes(reader.array("recipient count")?) as usize;
    // Checked before allocating: a garbled count must not reserve gigabytes.
    let recipient_bytes = count.checked_mul(RECIPIENT_LEN).ok_or(EnvelopeError::Truncated("recipients"))?;
    let mut recipients_reader = Reader(reader.take(recipient_bytes, "recipients")?);
    let mut recipients = Vec::with_capacity(count);
    for _ in 0..count {
        let user_id = i64::from_be_bytes(recipients_reader.array("recipients")?);
        let seq = u64::from_be_bytes(recipients_reader.array("recipients")?);
        recipients.push((user_id, seq));
    }
    let length = u32::from_be_bytes(reader.array("payload length")?) as usize;
    let payload = reader.take(length, "payload")?;
    if !reader.0.is_empty() {
        return Err(EnvelopeError::TrailingBytes(reader.0.len()));
    }
    let payload = match kind {
        KIND_UPDATE => Payload::Update(Arc::from(std::str::from_utf8(payload)?)),
        KIND_EPHEMERAL => Payload::Ephemeral(Arc::from(std::str::from_utf8(payload)?)),
        KIND_PRESENCE => Payload::Presence(Arc::from(serde_json::from_slice::<Vec<PresenceView>>(payload)?)),
        KIND_CONTROL => Payload::Control(Arc::new(serde_json::from_slice(payload)?)),
        KIND_END_SESSIONS => Payload::EndSessions(Arc::from(serde_json::from_slice::<Vec<i64>>(payload)?)),
        other => return Err(EnvelopeError::UnknownKind(other)),
    };
    Ok(Delivery { shard, recipients, payload })
}

/// The unread rest of a record.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], EnvelopeError> {
        if self.0.len() < len {
            return Err(EnvelopeError::Truncated(field));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], EnvelopeError> {
        let head = self.take(N, field)?;
        let mut out = [0; N];
        out.copy_from_slice(head);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use protocol::ws::PresenceStatus;

    use super::*;

    fn update() -> Delivery {
        Delivery {
            shard: ShardId(17),
            recipients: vec![(42, 7), (-1, u64::MAX), (i64::MAX, 0)],
            payload: Payload::Update(Arc::from(r#"{"type":"message","text":"héllo"}"#)),
        }
    }

    fn presence() -> Delivery {
        let view = |user: i64, status| PresenceView {
            user_id: protocol::UserId(user),
            status,
            status_text: "in a meeting".into(),
            last_seen: Some(1_700_000_000_000),
        };
        let views = vec![view(5, PresenceStatus::Busy), view(6, PresenceStatus::Offline)];
        Delivery { shard: ShardId(0), recipients: vec![(9, 0)], payload: Payload::Presence(Arc::from(views)) }
    }

    fn control() -> Delivery {
        let peer = storage::PresencePeer { user_id: 8, last_seen_ms: Some(1_700_000_000_000), status_text: "x".into() };
        let control = crate::presence::PresenceControl::AddInterest { links: vec![(7, peer)], snapshot: true };
        Delivery { shard: ShardId(3), recipients: Vec::new(), payload: Payload::Control(Arc::new(control)) }
    }

    fn end_sessions() -> Delivery {
        let sessions: Arc<[i64]> = Arc::from(vec![11, i64::MAX]);
        Delivery { shard: ShardId(4), recipients: vec![(7, 0)], payload: Payload::EndSessions(sessions) }
    }

    /// Compares field by field (`Delivery` has no `PartialEq`).
    fn assert_same(a: &Delivery, b: &Delivery) {
        assert_eq!(a.shard, b.shard);
        assert_eq!(a.recipients, b.recipients);
        match (&a.payload, &b.payload) {
            (Payload::Update(x), Payload::Update(y)) | (Payload::Ephemeral(x), Payload::Ephemeral(y)) => {
                assert_eq!(x, y)
            }
            (Payload::Presence(x), Payload::Presence(y)) => assert_eq!(x, y),
            (Payload::Control(x), Payload::Control(y)) => assert_eq!(x, y),
            (Payload::EndSessions(x), Payload::EndSessions(y)) => assert_eq!(x, y),
            (x, y) => panic!("payload kinds differ: {x:?} vs {y:?}"),
        }
    }

    #[test]
    fn every_payload_kind_round_trips() {
        let ephemeral =
            Delivery { shard: ShardId(u32::MAX), recipients: Vec::new(), payload: Payload::Ephemeral(Arc::from("")) };
        for delivery in [update(), ephemeral, presence(), control(), end_sessions()] {
            let bytes = encode(&delivery).expect("encodes");
            assert_same(&decode(&bytes).expect("decodes"), &delivery);
        }
    }

    #[test]
    fn the_layout_is_frozen() {
        let delivery =
            Delivery { shard: ShardId(2), recipients: vec![(3, 4)], payload: Payload::Ephemeral(Arc::from("hi")) };
        let expected = [
            [1].as_slice(),
            &[0, 0, 0, 2],
            &[2],
            &[0, 0, 0, 1],
            &[0, 0, 0, 0, 0, 0, 0, 3],
            &[0, 0, 0, 0, 0, 0, 0, 4],
            &[0, 0, 0, 2],
            b"hi",
        ]
        .concat();
        assert_eq!(encode(&delivery).expect("encodes"), expected);
    }

    #[test]
    fn every_truncation_of_a_valid_record_is_an_error() {
        for delivery in [update(), presence(), control(), end_sessions()] {
            let bytes = encode(&delivery).expect("encodes");
            for len in 0..bytes.len() {
                assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes decoded");
            }
        }
    }

    #[test]
    fn unknown_versions_kinds_and_trailing_bytes_are_refused() {
        let mut bytes = encode(&update()).expect("encodes");
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(EnvelopeError::TrailingBytes(1))));
        bytes.pop();
        bytes[5] = 9;
        assert!(matches!(decode(&bytes), Err(EnvelopeError::UnknownKind(9))));
        for version in [0, 2, 255] {
            bytes[0] = version;
            let error = decode(&bytes).expect_err("unknown version");
            assert!(matches!(error, EnvelopeError::UnknownVersion(v) if v == version), "{error}");
        }
    }

    #[test]
    fn bad_text_and_bad_presence_json_are_errors() {
        let mut bytes = encode(&update()).expect("encodes");
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        assert!(matches!(decode(&bytes), Err(EnvelopeError::BadText(_))));
        let mut bytes = encode(&presence()).expect("encodes");
        let last = bytes.len() - 1;
        bytes[last] = b'{';
        assert!(matches!(decode(&bytes), Err(EnvelopeError::BadPresence(_))));
    }

    #[test]
    fn a_huge_recipient_count_is_refused_without_allocating() {
        let mut bytes = encode(&update()).expect("encodes");
        bytes[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&bytes), Err(EnvelopeError::Truncated("recipients"))));
    }

    /// xorshift64: deterministic pseudo-random bytes without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn decoding_random_and_mutated_bytes_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let valid = [encode(&update()).expect("encodes"), encode(&presence()).expect("encodes")];
        let mut decoded = 0;
        for round in 0..20_000 {
            let bytes = if round % 2 == 0 {
                // Pure noise, mostly starting with the right version byte.
                let len = (rng.next() % 64) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if let Some(first) = bytes.first_mut().filter(|_| round % 4 == 0) {
                    *first = ENVELOPE_VERSION;
                }
                bytes
            } else {
                // A valid record with a few bytes flipped.
                let mut bytes = valid[round % 4 / 2].clone();
                for _ in 0..1 + rng.next() % 3 {
                    let at = (rng.next() % bytes.len() as u64) as usize;
                    bytes[at] ^= (rng.next() as u8) | 1;
                }
                bytes
            };
            if let Ok(delivery) = decode(&bytes) {
                // Text re-encodes to the same bytes (JSON may not: a
                // flipped field name is an unknown field, ignored).
                if !matches!(delivery.payload, Payload::Presence(_) | Payload::EndSessions(_)) {
                    assert_eq!(encode(&delivery).expect("encodes"), bytes);
                }
                decoded += 1;
            }
        }
        // Flips inside user IDs, seqs or text still decode: the loop reached
        // past the header, not just the version check.
        assert!(decoded > 100, "only {decoded} inputs decoded");
    }
}
