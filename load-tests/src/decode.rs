//! Decoding server frames cheaply enough for a fan-out run. `ServerFrame`
//! and `Update` are internally tagged enums, which serde decodes by first
//! copying the whole frame into a tree of its own and then decoding that
//! again; a message update (nearly every frame of a fan-out) is decoded
//! straight into its fields instead, and a presence frame not at all.

use std::borrow::Cow;

use protocol::ws::{Message, ServerFrame, Update};
use serde::Deserialize;

/// `{"type":"update","seq":…,"update":{"kind":…,"message":{…}}}`.
#[derive(Deserialize)]
struct MessageUpdate<'a> {
    seq: u64,
    #[serde(borrow)]
    update: Inner<'a>,
}

#[derive(Deserialize)]
struct Inner<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    message: Message,
}

/// Decodes a server frame as `serde_json::from_slice` does, except that a
/// presence frame, which a run never looks into, is `None` undecoded: once
/// the members of a 1,000-member group are connected, each has frames of
/// a thousand views to read, and decoding them held the first messages of
/// `group-fanout` back by over half a second.
pub fn server_frame(text: &[u8]) -> serde_json::Result<Option<ServerFrame>> {
    if text.starts_with(br#"{"type":"presence","#) {
        return Ok(None);
    }
    match message_update(text) {
        Some(frame) => Ok(Some(frame)),
        None => serde_json::from_slice(text).map(Some),
    }
}

/// A message update decoded straight into its fields; `None` for any
/// other frame.
fn message_update(text: &[u8]) -> Option<ServerFrame> {
    if !text.starts_with(br#"{"type":"update","#) {
        return None;
    }
    let frame = serde_json::from_slice::<MessageUpdate<'_>>(text).ok()?;
    (frame.update.kind == "message")
        .then_some(ServerFrame::Update { seq: frame.seq, update: Update::Message { message: frame.update.message } })
}

#[cfg(test)]
mod tests {
    use protocol::ids::{ChatId, MessageId, UserId};
    use protocol::ws::{PresenceStatus, PresenceView};

    use super::*;

    fn message() -> Message {
        Message {
            id: MessageId(7),
            chat_id: ChatId(3),
            sender_id: UserId(2),
            client_msg_id: "c-1".into(),
            body: "a \"quoted\" body".into(),
            sent_at: 1_700,
            edited_at: None,
            deleted: false,
            event: None,
        }
    }

    #[test]
    fn every_kind_of_frame_decodes_as_serde_decodes_it() {
        let frames = [
            ServerFrame::Update { seq: 9, update: Update::Message { message: message() } },
            ServerFrame::Update { seq: 10, update: Update::Edited { message: message() } },
            ServerFrame::Update {
                seq: 11,
                update: Update::Receipt {
                    chat_id: ChatId(3),
                    user_id: UserId(2),
                    delivered_up_to: MessageId(7),
                    seen_up_to: MessageId(0),
                },
            },
            ServerFrame::Synced { seq: 11, has_more: false },
        ];
        for (index, frame) in frames.into_iter().enumerate() {
            let text = serde_json::to_vec(&frame).expect("serializes");
            assert_eq!(message_update(&text).is_some(), index == 0, "only a message update takes the short way");
            assert_eq!(server_frame(&text).expect("decodes"), Some(frame));
        }
        assert!(server_frame(br#"{"type":"update","seq":1}"#).is_err());
        let presence = ServerFrame::Presence {
            users: vec![PresenceView {
                user_id: UserId(2),
                status: PresenceStatus::Online,
                status_text: String::new(),
                last_seen: None,
            }],
        };
        let text = serde_json::to_vec(&presence).expect("serializes");
        assert_eq!(server_frame(&text).expect("skipped"), None, "presence is not decoded");
    }
}
