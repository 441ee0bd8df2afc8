//! Presence: what each shard knows of its users' statuses and of who
//! watches them.
//!
//! A user's shown status follows from their [`PresenceChoice`] and their
//! connections: offline without one (after a grace period, so a reload
//! does not flap), away when every device reports idle, otherwise their
//! choice. It is pushed only to *watchers*: users entitled to it (friends,
//! members of a shared group, no block either way) who are online. A user
//! who comes online registers as a watcher of everyone they are entitled
//! to see and gets a snapshot; when they go offline they unregister. So a
//! change costs one frame per interested online user, never a scan of
//! everyone entitled, and changes of one user inside the coalescing window
//! leave as one frame.
//!
//! [`PresenceBook`] holds one shard's entries; the shard actor drives it
//! and owns the timers.
//!
//! A shard's book lives only on the node that owns the shard. When a shard
//! moves (cluster mode), its new owner starts with an empty book: it asks
//! every shard to [`PresenceControl::Rewatch`], and each re-registers its
//! users' interest in the moved shard's users, so the new owner learns its
//! users' watchers again and sends each watcher a fresh view (offline for
//! a user whose node died, until they reconnect).

use std::collections::{HashMap, HashSet};

use protocol::UserId;
use protocol::ws::{PresenceStatus, PresenceView};
use storage::{PresenceChoice, PresencePeer};

/// Presence bookkeeping between shards. It travels on the bus like
/// deliveries ([`crate::Payload::Control`]), so in a cluster it reaches the
/// node that owns the receiving shard.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "control", rename_all = "snake_case")]
pub enum PresenceControl {
    /// For users of the receiving shard: each watcher (of this shard)
    /// should watch the peer, if the watcher is online. With `snapshot`
    /// (a new connection) the peer's presence is sent even if it was
    /// watched already.
    AddInterest { links: Vec<(i64, PresencePeer)>, snapshot: bool },
    /// For users of the receiving shard: each stops watching the other.
    RemoveInterest { links: Vec<(i64, i64)> },
    /// `watcher` watches these users of the receiving shard from now on
    /// and is sent their current presence.
    Watch { watcher: i64, peers: Vec<PresencePeer> },
    /// `watcher` stops watching these users of the receiving shard.
    Unwatch { watcher: i64, targets: Vec<i64> },
    /// `shards` have a new owner whose books start empty: every user of
    /// the receiving shard who watches users of those shards registers
    /// with them again ([`Self::Watch`]).
    Rewatch { shards: Vec<crate::shard::ShardId> },
}

/// The status others see, from the user's choice and their connections'
/// idle flags.
pub fn effective(choice: PresenceChoice, idle: impl IntoIterator<Item = bool>) -> PresenceStatus {
    let mut idle = idle.into_iter().peekable();
    if idle.peek().is_none() || choice == PresenceChoice::Invisible {
        return PresenceStatus::Offline;
    }
    match choice {
        PresenceChoice::Busy => PresenceStatus::Busy,
        PresenceChoice::Away => PresenceStatus::Away,
        _ if idle.all(|idle| idle) => PresenceStatus::Away,
        _ => PresenceStatus::Online,
    }
}

/// One user of this shard, online or watched.
#[derive(Debug, Default)]
struct Entry {
    choice: PresenceChoice,
    text: String,
    /// Live connections and whether each reports idle.
    connections: HashMap<u64, bool>,
    /// What watchers were last told (or would be told on watching).
    shown: PresenceStatus,
    shown_text: String,
    last_seen_ms: Option<i64>,
    /// Online users entitled to this user's presence.
    watchers: HashSet<i64>,
    /// Whose presence this user watches, while online, as they were
    /// described when the watching began (to register with their shard
    /// again after it moved).
    interest: HashMap<i64, PresencePeer>,
}

impl Entry {
    fn view(&self, user_id: i64) -> PresenceView {
        PresenceView {
            user_id: UserId(user_id),
            status: self.shown,
            status_text: self.shown_text.clone(),
            last_seen: self.last_seen_ms,
        }
    }

    fn is_unused(&self) -> bool {
        self.connections.is_empty() && self.watchers.is_empty() && self.interest.is_empty()
    }
}

/// A change to publish: the new view and who to send it to.
#[derive(Debug, PartialEq)]
pub struct Publish {
    pub view: PresenceView,
    pub watchers: Vec<i64>,
}

/// What the shard must do once a user's grace period ends offline.
#[derive(Debug, PartialEq)]
pub struct WentOffline {
    pub publish: Option<Publish>,
    /// Persist this as the user's last-seen time.
    pub last_seen_ms: Option<i64>,
    /// Stop watching these users (grouped by their shard by the caller).
    pub unwatch: Vec<i64>,
}

/// One shard's presence entries.
#[derive(Debug, Default)]
pub struct PresenceBook {
    entries: HashMap<i64, Entry>,
}

impl PresenceBook {
    /// A connection of `user_id` opened; `choice` and `text` are the user's
    /// stored settings. Returns true if this is the user's first connection.
    pub fn connect(&mut self, user_id: i64, conn_id: u64, choice: PresenceChoice, text: String) -> bool {
        let entry = self.entries.entry(user_id).or_default();
        let first = entry.connections.is_empty();
        entry.choice = choice;
        entry.text = text;
        entry.connections.insert(conn_id, false);
        first
    }

    /// A connection closed. Returns true if it was the user's last one
    /// (start the grace period).
    pub fn disconnect(&mut self, user_id: i64, conn_id: u64) -> bool {
        let Some(entry) = self.entries.get_mut(&user_id) else { return false };
        entry.connections.remove(&conn_id).is_some() && entry.connections.is_empty()
    }

    /// A connection reports its user idle (or active again).
    pub fn set_idle(&mut self, user_id: i64, conn_id: u64, idle: bool) {
        if let Some(flag) = self.entries.get_mut(&user_id).and_then(|entry| entry.connections.get_mut(&conn_id)) {
            *flag = idle;
        }
    }

    /// The user chose a presence and status text.
    pub fn set_choice(&mut self, user_id: i64, choice: PresenceChoice, text: String) {
        if let Some(entry) = self.entries.get_mut(&user_id) {
            entry.choice = choice;
            entry.text = text;
        }
    }

    /// Whether the book has an entry for the user (online, in grace, or watched).
    pub fn knows(&self, user_id: i64) -> bool {
        self.entries.contains_key(&user_id)
    }

    /// Takes over a user who was shown as `status` (not offline) by the
    /// previous owner of this shard, which has just moved here: shown so
    /// without a connection here, as in a grace period. Returns true if it
    /// did (start the grace); false if the user is online or shown here
    /// already.
    pub fn take_over(&mut self, user_id: i64, status: PresenceStatus, text: String) -> bool {
        let shown_here = |entry: &Entry| !entry.connections.is_empty() || entry.shown != PresenceStatus::Offline;
        if status == PresenceStatus::Offline || self.entries.get(&user_id).is_some_and(shown_here) {
            return false;
        }
        let entry = self.entries.entry(user_id).or_default();
        entry.text = text.clone();
        entry.shown = status;
        entry.shown_text = text;
        true
    }

    /// Users with a connection here and what they are shown as, unless
    /// offline (invisible): what this node republishes on every heartbeat.
    pub fn shown_online(&self) -> Vec<(i64, PresenceStatus, String)> {
        let online = self
            .entries
            .iter()
            .filter(|(_, entry)| !entry.connections.is_empty() && entry.shown != PresenceStatus::Offline);
        online.map(|(user_id, entry)| (*user_id, entry.shown, entry.shown_text.clone())).collect()
    }

    /// Whether the user has a live connection here.
    pub fn is_online(&self, user_id: i64) -> bool {
        self.entries.get(&user_id).is_some_and(|entry| !entry.connections.is_empty())
    }

    /// Brings what watchers see up to date; `None` if nothing changed. A
    /// user without connections is left as shown until [`Self::grace_expired`].
    pub fn flush(&mut self, user_id: i64, now_ms: i64) -> Option<Publish> {
        let entry = self.entries.get_mut(&user_id)?;
        if entry.connections.is_empty() {
            return None;
        }
        let status = effective(entry.choice, entry.connections.values().copied());
        self.show(user_id, status, now_ms)
    }

    /// The grace period after the user's last connection ended: if they
    /// did not come back, they are offline now.
    pub fn grace_expired(&mut self, user_id: i64, now_ms: i64) -> Option<WentOffline> {
        let entry = self.entries.get_mut(&user_id)?;
        if !entry.connections.is_empty() {
            return None;
        }
        let unwatch: Vec<i64> = entry.interest.drain().map(|(target, _)| target).collect();
        let was_visible = entry.shown != PresenceStatus::Offline;
        let publish = self.show(user_id, PresenceStatus::Offline, now_ms);
        let last_seen_ms =
            if was_visible { self.entries.get(&user_id).and_then(|entry| entry.last_seen_ms) } else { None };
        self.forget_if_unused(user_id);
        Some(WentOffline { publish, last_seen_ms, unwatch })
    }

    fn show(&mut self, user_id: i64, status: PresenceStatus, now_ms: i64) -> Option<Publish> {
        let entry = self.entries.get_mut(&user_id)?;
        if entry.shown == status && entry.shown_text == entry.text {
            return None;
        }
        if status == PresenceStatus::Offline && entry.shown != PresenceStatus::Offline {
            entry.last_seen_ms = Some(now_ms);
        }
        entry.shown = status;
        entry.shown_text = entry.text.clone();
        let mut watchers: Vec<i64> = entry.watchers.iter().copied().collect();
        watchers.sort_unstable();
        Some(Publish { view: entry.view(user_id), watchers })
    }

    /// `watcher` (online) is entitled to see each of `peers` (users of this
    /// shard): registers it and returns their current views.
    pub fn watch(&mut self, watcher: i64, peers: &[PresencePeer]) -> Vec<PresenceView> {
        peers
            .iter()
            .map(|peer| {
                let entry = self.entries.entry(peer.user_id).or_insert_with(|| Entry {
                    text: peer.status_text.clone(),
                    shown_text: peer.status_text.clone(),
                    last_seen_ms: peer.last_seen_ms,
                    ..Entry::default()
                });
                entry.watchers.insert(watcher);
                entry.view(peer.user_id)
            })
            .collect()
    }

    /// `watcher` no longer watches `targets` (went offline, or lost the right).
    pub fn unwatch(&mut self, watcher: i64, targets: &[i64]) {
        for target in targets {
            if let Some(entry) = self.entries.get_mut(target) {
                entry.watchers.remove(&watcher);
            }
            self.forget_if_unused(*target);
        }
    }

    /// Records that the online `user_id` watches `targets`; returns the
    /// IDs of those that are new (to register with their shards). Nothing
    /// for a user who is not online.
    pub fn add_interest(&mut self, user_id: i64, targets: &[PresencePeer]) -> Vec<i64> {
        let Some(entry) = self.entries.get_mut(&user_id).filter(|entry| !entry.connections.is_empty()) else {
            return Vec::new();
        };
        targets
            .iter()
            .filter(|target| entry.interest.insert(target.user_id, (*target).clone()).is_none())
            .map(|target| target.user_id)
            .collect()
    }

    /// Forgets that `user_id` watches `targets`; returns those it did watch.
    pub fn remove_interest(&mut self, user_id: i64, targets: &[i64]) -> Vec<i64> {
        let Some(entry) = self.entries.get_mut(&user_id) else { return Vec::new() };
        targets.iter().copied().filter(|target| entry.interest.remove(target).is_some()).collect()
    }

    /// Who here watches users that `moved` selects, and whom: each watcher
    /// with those targets, ordered by watcher (to register with the
    /// targets' shards again after those shards moved).
    pub fn interest_in(&self, moved: impl Fn(i64) -> bool) -> Vec<(i64, Vec<PresencePeer>)> {
        let mut found: Vec<(i64, Vec<PresencePeer>)> = self
            .entries
            .iter()
            .filter_map(|(watcher, entry)| {
                let mut targets: Vec<PresencePeer> =
                    entry.interest.values().filter(|peer| moved(peer.user_id)).cloned().collect();
                targets.sort_unstable_by_key(|peer| peer.user_id);
                (!targets.is_empty()).then_some((*watcher, targets))
            })
            .collect();
        found.sort_unstable_by_key(|(watcher, _)| *watcher);
        found
    }

    fn forget_if_unused(&mut self, user_id: i64) {
        if self.entries.get(&user_id).is_some_and(Entry::is_unused) {
            self.entries.remove(&user_id);
        }
    }

    /// Users with an entry (online, in grace, or watched).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(user_id: i64) -> PresencePeer {
        PresencePeer { user_id, last_seen_ms: Some(5), status_text: String::new() }
    }

    #[test]
    fn a_user_taken_over_from_the_previous_owner_stays_shown_until_the_grace_ends() {
        let mut book = PresenceBook::default();
        assert!(book.take_over(1, PresenceStatus::Busy, "in a meeting".into()));
        assert!(!book.take_over(1, PresenceStatus::Online, String::new()), "shown here already");
        assert!(!book.take_over(2, PresenceStatus::Offline, String::new()), "nothing to show");
        assert!(!book.knows(2));
        let [view] = <[_; 1]>::try_from(book.watch(7, &[peer(1)])).unwrap_or_else(|v| panic!("{v:?}"));
        assert_eq!((view.status, view.status_text.as_str()), (PresenceStatus::Busy, "in a meeting"));
        assert_eq!(book.shown_online(), [], "no connection here: nothing to republish");

        // They did not reconnect within the grace: offline for the watcher.
        let offline = book.grace_expired(1, 50).unwrap_or_else(|| panic!("grace ran"));
        let publish = offline.publish.unwrap_or_else(|| panic!("a change"));
        assert_eq!((publish.view.status, publish.watchers), (PresenceStatus::Offline, vec![7]));
        assert_eq!(offline.last_seen_ms, Some(50));

        // One who reconnects in time is shown from then on by their connection.
        assert!(book.take_over(3, PresenceStatus::Online, String::new()));
        book.watch(7, &[peer(3)]);
        book.connect(3, 30, PresenceChoice::Auto, String::new());
        assert_eq!(book.grace_expired(3, 60), None);
        assert_eq!(book.flush(3, 60), None, "still online: watchers hear nothing");
        assert_eq!(book.shown_online(), [(3, PresenceStatus::Online, String::new())]);
        assert!(!book.take_over(3, PresenceStatus::Away, String::new()), "online here");
    }

    #[test]
    fn the_shown_status_follows_choice_and_idleness() {
        use PresenceChoice::*;
        assert_eq!(effective(Auto, []), PresenceStatus::Offline);
        assert_eq!(effective(Auto, [false, true]), PresenceStatus::Online, "one active device is enough");
        assert_eq!(effective(Auto, [true, true]), PresenceStatus::Away);
        assert_eq!(effective(Busy, [true]), PresenceStatus::Busy);
        assert_eq!(effective(Away, [false]), PresenceStatus::Away);
        assert_eq!(effective(Invisible, [false]), PresenceStatus::Offline);
        assert_eq!(effective(Busy, []), PresenceStatus::Offline);
    }

    #[test]
    fn changes_reach_watchers_once_and_a_reconnect_within_grace_shows_nothing() {
        let mut book = PresenceBook::default();
        assert_eq!(book.watch(9, &[peer(1)])[0].status, PresenceStatus::Offline);
        assert!(book.connect(1, 100, PresenceChoice::Auto, "hi".into()));
        let published = book.flush(1, 10).expect("a change");
        assert_eq!((published.view.status, published.watchers), (PresenceStatus::Online, vec![9]));
        assert_eq!(book.flush(1, 11), None, "nothing new, nothing sent");

        // A reload: the last connection closes, a new one opens before the grace ends.
        assert!(book.disconnect(1, 100));
        assert!(book.connect(1, 101, PresenceChoice::Auto, "hi".into()));
        assert_eq!(book.grace_expired(1, 20), None);
        assert_eq!(book.flush(1, 21), None, "no flap");

        book.set_idle(1, 101, true);
        assert_eq!(book.flush(1, 30).expect("a change").view.status, PresenceStatus::Away);
        assert!(book.disconnect(1, 101));
        let offline = book.grace_expired(1, 40).expect("offline");
        let view = offline.publish.expect("published").view;
        assert_eq!((view.status, view.last_seen), (PresenceStatus::Offline, Some(40)));
        assert_eq!(offline.last_seen_ms, Some(40));
        assert_eq!(book.len(), 1, "still watched by 9");
        book.unwatch(9, &[1]);
        assert_eq!(book.len(), 0, "nothing kept for nobody");
    }

    #[test]
    fn interest_is_kept_only_while_online_and_returned_on_going_offline() {
        let mut book = PresenceBook::default();
        assert!(book.add_interest(1, &[peer(2), peer(3)]).is_empty(), "an offline user watches nobody");
        book.connect(1, 100, PresenceChoice::Auto, String::new());
        assert_eq!(book.add_interest(1, &[peer(2), peer(3)]), [2, 3]);
        assert_eq!(book.add_interest(1, &[peer(3), peer(4)]), [4], "only new ones");
        assert_eq!(book.remove_interest(1, &[4, 5]), [4]);
        book.disconnect(1, 100);
        let mut unwatch = book.grace_expired(1, 50).expect("offline").unwatch;
        unwatch.sort_unstable();
        assert_eq!(unwatch, [2, 3]);
    }

    #[test]
    fn interest_in_moved_users_is_listed_per_watcher_for_registering_again() {
        let mut book = PresenceBook::default();
        book.connect(1, 100, PresenceChoice::Auto, String::new());
        book.connect(2, 200, PresenceChoice::Auto, String::new());
        book.add_interest(1, &[peer(10), peer(11), peer(20)]);
        book.add_interest(2, &[peer(21)]);
        book.watch(3, &[peer(1)]);
        let moved = |user: i64| user < 20;
        assert_eq!(book.interest_in(moved), [(1, vec![peer(10), peer(11)])], "only watchers of moved users");
        assert_eq!(book.interest_in(|_| true).len(), 2);
        book.disconnect(1, 100);
        book.grace_expired(1, 5);
        assert!(book.interest_in(moved).is_empty(), "an offline user watches nobody");
    }

    #[test]
    fn invisible_users_look_offline_and_keep_their_last_seen() {
        let mut book = PresenceBook::default();
        book.watch(9, &[peer(1)]);
        book.connect(1, 100, PresenceChoice::Invisible, String::new());
        assert_eq!(book.flush(1, 10), None, "offline before, offline now");
        book.disconnect(1, 100);
        let offline = book.grace_expired(1, 20).expect("offline");
        assert_eq!((offline.publish, offline.last_seen_ms), (None, None), "last seen stays at 5");
    }
}
