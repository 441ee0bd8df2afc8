//! Plain records passed in and out of the stores; IDs are raw `i64`s here.

/// A user to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUser {
    pub id: i64,
    /// As the user typed it (display form).
    pub username: String,
    /// Case-folded; unique.
    pub username_key: String,
    pub display_name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Version of the server-side pepper used in `password_hash`.
    pub pepper_version: u32,
    pub created_at_ms: i64,
}

impl NewUser {
    /// The user as stored on creation: no bio, avatar, contacts or status
    /// yet, presence [`PresenceChoice::Auto`].
    pub fn into_record(self) -> UserRecord {
        UserRecord {
            id: self.id,
            username: self.username,
            display_name: self.display_name,
            password_hash: self.password_hash,
            pepper_version: self.pepper_version,
            created_at_ms: self.created_at_ms,
            bio: String::new(),
            avatar: None,
            email: None,
            phone: None,
            presence: PresenceChoice::default(),
            status_text: String::new(),
            last_seen_ms: None,
        }
    }
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub pepper_version: u32,
    pub created_at_ms: i64,
    /// Short self-description; empty if unset.
    pub bio: String,
    /// Media key of the avatar image set, if any.
    pub avatar: Option<String>,
    /// Confirmed email address (private to the user).
    pub email: Option<String>,
    /// Confirmed phone number in E.164 form (private to the user).
    pub phone: Option<String>,
    /// The presence the user chose.
    pub presence: PresenceChoice,
    /// A short status text shown with their presence; empty if unset.
    pub status_text: String,
    /// When they were last seen online (their last visible connection closed).
    pub last_seen_ms: Option<i64>,
}

/// The presence a user chose; the shown status follows from it and from
/// their connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PresenceChoice {
    /// Online while connected, away while every device is idle.
    #[default]
    Auto,
    Away,
    Busy,
    /// Shown offline to everyone; last-seen is not updated.
    Invisible,
}

/// Someone entitled to see a user's presence, with what storage knows of
/// their own presence.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PresencePeer {
    pub user_id: i64,
    pub last_seen_ms: Option<i64>,
    pub status_text: String,
}

/// Changes to a profile; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileUpdate {
    pub display_name: Option<String>,
    pub bio: Option<String>,
}

/// A user search: `key` is [`crate::search_key`] of what was typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSearch {
    pub key: String,
    /// Who searches: excluded from the results, and so is everyone who blocked them.
    pub searcher: i64,
    pub limit: u32,
    pub offset: u32,
}

/// How a user stands with another, seen from the first user's side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Relation {
    #[default]
    None,
    Friends,
    /// This user asked the other to be friends.
    RequestSent,
    /// The other user asked this one.
    RequestReceived,
}

/// The full state of a pair, from one side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelationView {
    pub relation: Relation,
    /// This user blocks the other.
    pub blocking: bool,
    /// The other user blocks this one.
    pub blocked_by: bool,
}

/// What a user does to a relation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelationAction {
    Request,
    Cancel,
    Accept,
    Decline,
    Remove,
    Block,
    Unblock,
}

/// Result of [`crate::RelationStore::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationChange {
    /// The actor's view after the change.
    pub view: RelationView,
    /// For each side whose relation changed: user, new update-log seq, and
    /// the relation as that user now sees it.
    pub updates: Vec<(i64, u64, Relation)>,
}

/// One entry of a relation list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelationEntry {
    pub other: i64,
    pub since_ms: i64,
}

/// Contact channels that need confirming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContactChannel {
    Email,
    Phone,
}

/// SHA-256 of a refresh token; the token itself is never stored.
pub type TokenHash = [u8; 32];

/// A login's token family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTokenFamily {
    pub id: i64,
    pub user_id: i64,
    pub created_at_ms: i64,
}

/// The login session (token family) a logout ended, and whose it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndedFamily {
    pub user_id: i64,
    pub family_id: i64,
}

/// A refresh token to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRefreshToken {
    pub hash: TokenHash,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
}

/// A revoked token family and when it was first revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevokedFamily {
    pub family_id: i64,
    pub revoked_at_ms: i64,
}

/// Result of [`crate::TokenStore::rotate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The presented token was consumed and the next one stored.
    Rotated {
        user_id: i64,
        family_id: i64,
    },
    /// The presented token had been used before; its family is now revoked.
    Reused {
        user_id: i64,
        family_id: i64,
    },
    /// The family was revoked earlier (logout or reuse).
    Revoked,
    Expired,
    Unknown,
}

/// Kind of chat, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChatKind {
    Direct,
    Group,
}

/// A chat and its members.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatRecord {
    pub id: i64,
    pub kind: ChatKind,
    /// Member user IDs, ascending. In a [`ChatOverview`] of a group, only
    /// the viewer (see [`GroupRecord::member_count`]).
    pub members: Vec<i64>,
    pub created_at_ms: i64,
    /// Name, avatar and roles of a group; `None` for 1:1 chats.
    pub group: Option<GroupRecord>,
}

impl ChatRecord {
    /// `user_id`'s role, or `None` if they are not a member.
    pub fn role_of(&self, user_id: i64) -> Option<Role> {
        if !self.members.contains(&user_id) {
            return None;
        }
        Some(match &self.group {
            Some(group) if group.owner == user_id => Role::Owner,
            Some(group) if group.admins.contains(&user_id) => Role::Admin,
            _ => Role::Member,
        })
    }
}

/// What a group has beyond its members.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupRecord {
    pub name: String,
    /// Media key of the group's avatar, if any.
    pub avatar: Option<String>,
    pub owner: i64,
    /// Members with the admin role, ascending (the owner is not among them).
    pub admins: Vec<i64>,
    pub member_count: u32,
}

/// A member's role in a group. In a 1:1 chat both members are [`Role::Member`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Member,
    Admin,
    Owner,
}

/// One member of a chat, as listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    pub user_id: i64,
    pub role: Role,
    pub joined_at_ms: i64,
}

/// A group to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewGroup {
    pub id: i64,
    pub name: String,
    /// The creator; a member.
    pub owner: i64,
    /// Every member, the owner included.
    pub members: Vec<i64>,
    pub created_at_ms: i64,
    /// Refused with [`GroupRefusal::TooManyGroups`] for any member who
    /// would be in more groups than this.
    pub max_groups_per_user: u32,
}

/// A change to a group. Who may make it is the caller's check; the store
/// applies it atomically with the event message that records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupChange {
    Rename(String),
    /// A new avatar's media key, or `None` to remove it.
    SetAvatar(Option<String>),
    /// Adds users (who are not members) with the member role; they see the
    /// chat's history from this change on. Refused with
    /// [`GroupRefusal::TooManyGroups`] if one would exceed `max_groups_per_user`.
    AddMembers {
        users: Vec<i64>,
        max_groups_per_user: u32,
    },
    /// Removes a member (who left or was removed).
    RemoveMember(i64),
    /// Makes a member an admin or a plain member.
    SetRole {
        user_id: i64,
        role: Role,
    },
    /// Makes a member the owner; the previous owner becomes an admin.
    TransferOwnership(i64),
}

/// Why a group change or creation was refused; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupRefusal {
    #[error("user {user_id} is in too many groups")]
    TooManyGroups { user_id: i64 },
}

/// Result of a group creation or change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupChanged {
    /// The chat as it is now.
    pub chat: ChatRecord,
    /// The event message recording the change.
    pub message: MessageRecord,
    /// The new update-log seq of everyone who was a member before or after.
    pub seqs: Vec<(i64, u64)>,
    /// With [`GroupChange::SetAvatar`]: the key it replaced.
    pub previous_avatar: Option<String>,
}

/// A chat as listed for one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatOverview {
    pub chat: ChatRecord,
    pub last_message: Option<MessageRecord>,
    /// Messages from others after the user's seen watermark (not deleted,
    /// not hidden by the user, not events).
    pub unread: u32,
    /// Every member's watermarks, by user ID ascending; in a group only the
    /// viewer's (ask [`crate::ChatStore::receipts`] for everyone's).
    pub receipts: Vec<ReceiptRecord>,
}

/// A member's receipt watermarks in a chat (0 for none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiptRecord {
    pub user_id: i64,
    pub delivered_up_to: i64,
    pub seen_up_to: i64,
}

/// Result of [`crate::ChatStore::mark_read`] when a watermark moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptChange {
    /// The reader's watermarks now.
    pub receipt: ReceiptRecord,
    /// The new update-log seq of every member.
    pub seqs: Vec<(i64, u64)>,
}

/// A message to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    pub id: i64,
    pub chat_id: i64,
    pub sender_id: i64,
    pub client_msg_id: String,
    pub body: String,
    pub sent_at_ms: i64,
    /// For an event message (a group change), its description as JSON
    /// (the engine's format; the store does not look inside). `body` is empty then.
    pub event: Option<String>,
}

impl NewMessage {
    /// The message as stored when it is written: never edited or deleted.
    pub fn into_record(self) -> MessageRecord {
        MessageRecord {
            id: self.id,
            chat_id: self.chat_id,
            sender_id: self.sender_id,
            client_msg_id: self.client_msg_id,
            body: self.body,
            sent_at_ms: self.sent_at_ms,
            edited_at_ms: None,
            edit_count: 0,
            deleted_at_ms: None,
            event: self.event,
        }
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageRecord {
    pub id: i64,
    pub chat_id: i64,
    pub sender_id: i64,
    pub client_msg_id: String,
    /// The current text; empty once deleted for everyone.
    pub body: String,
    pub sent_at_ms: i64,
    /// When the text was last edited.
    pub edited_at_ms: Option<i64>,
    /// How many times the text was edited.
    pub edit_count: u32,
    /// When it was deleted for everyone (a tombstone from then on).
    pub deleted_at_ms: Option<i64>,
    /// See [`NewMessage::event`].
    pub event: Option<String>,
}

/// Result of [`crate::ChatStore::append_message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored; `seqs` holds the new update-log `seq` of each audience member.
    Appended { message: MessageRecord, seqs: Vec<(i64, u64)> },
    /// `(sender_id, client_msg_id)` was stored before; nothing was written.
    Duplicate { message: MessageRecord },
}

/// One entry of a user's update log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateRecord {
    pub seq: u64,
    pub kind: UpdateKind,
}

/// What an update-log entry names, resolved to its current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    Message(MessageRecord),
    /// A message was edited; its current state.
    Edited(MessageRecord),
    /// A message was deleted for everyone, or hidden for this user only.
    Deleted {
        chat_id: i64,
        message_id: i64,
        for_everyone: bool,
    },
    /// A member's watermarks in a chat moved; their current values.
    Receipt {
        chat_id: i64,
        receipt: ReceiptRecord,
    },
    /// The user's relation with `other` became `relation`.
    Relation {
        other: i64,
        relation: Relation,
    },
}
