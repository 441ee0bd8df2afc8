//! The correctness check: every acked message reaches every other member of
//! its chat exactly once (after de-duplication by message ID), and each
//! member's copies, put in the order of their update log (`seq`), are in
//! message-ID order, so every member sees a chat in the same order.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// Collects chat members, acks and deliveries; IDs are plain integers.
#[derive(Debug, Default)]
pub struct Checker {
    /// Members of each chat.
    members: HashMap<i64, Vec<i64>>,
    /// Acked messages per chat: (message ID, sender).
    acked: HashMap<i64, Vec<(i64, i64)>>,
    /// Deliveries per (chat, recipient): (seq, message ID), in arrival order.
    delivered: HashMap<(i64, i64), Vec<(u64, i64)>>,
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub acked: u64,
    /// (Message, recipient) pairs that arrived; a group message counts once per recipient.
    pub delivered: u64,
    /// Acked but never delivered to a recipient that should have it.
    pub missing: u64,
    /// Deliveries of a message already delivered (removed by de-duplication).
    pub duplicates: u64,
    /// Deliveries whose message ID is below that of an earlier entry of the recipient's log in the same chat.
    pub reordered: u64,
    /// Delivered messages that were never acked to their sender.
    pub unexpected: u64,
    /// Recipients left out of the check because their connection was lost for good (counted as errors).
    pub excluded_recipients: u64,
}

impl CheckReport {
    /// Failures (duplicates are tolerated: delivery is at-least-once).
    pub fn failures(&self) -> u64 {
        self.missing + self.reordered + self.unexpected
    }
}

impl Checker {
    pub fn chat(&mut self, chat: i64, members: Vec<i64>) {
        self.members.insert(chat, members);
    }

    pub fn acked(&mut self, chat: i64, sender: i64, message: i64) {
        self.acked.entry(chat).or_default().push((message, sender));
    }

    pub fn delivered(&mut self, chat: i64, recipient: i64, seq: u64, message: i64) {
        self.delivered.entry((chat, recipient)).or_default().push((seq, message));
    }

    /// Checks every member of every chat but those in `lost`.
    pub fn report(&self, lost: &HashSet<i64>) -> CheckReport {
        let mut report = CheckReport { excluded_recipients: lost.len() as u64, ..CheckReport::default() };
        let empty = Vec::new();
        let mut keys: HashSet<(i64, i64)> = self.delivered.keys().copied().collect();
        for (&chat, members) in &self.members {
            keys.extend(members.iter().map(|&m| (chat, m)));
        }
        for (chat, recipient) in keys {
            let acked: HashSet<i64> = self
                .acked
                .get(&chat)
                .unwrap_or(&empty)
                .iter()
                .filter(|&&(_, sender)| sender != recipient)
                .map(|&(id, _)| id)
                .collect();
            let mut copies = self.delivered.get(&(chat, recipient)).cloned().unwrap_or_default();
            copies.sort_by_key(|&(seq, _)| seq);
            let mut seen = HashSet::new();
            let mut highest = i64::MIN;
            for (_, id) in copies {
                if !seen.insert(id) {
                    report.duplicates += 1;
                    continue;
                }
                if !acked.contains(&id) {
                    report.unexpected += 1;
                    continue;
                }
                report.delivered += 1;
                if id < highest {
                    report.reordered += 1;
                } else {
                    highest = id;
                }
            }
            if !lost.contains(&recipient) {
                report.missing += acked.iter().filter(|id| !seen.contains(id)).count() as u64;
            }
        }
        report.acked = self.acked.values().map(|v| v.len() as u64).sum();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chat 1 between users 6 (the sender) and 7.
    fn checker(acked: &[i64], delivered: &[i64]) -> CheckReport {
        let mut checker = Checker::default();
        checker.chat(1, vec![6, 7]);
        for &id in acked {
            checker.acked(1, 6, id);
        }
        for (seq, &id) in delivered.iter().enumerate() {
            checker.delivered(1, 7, seq as u64, id);
        }
        checker.report(&HashSet::new())
    }

    #[test]
    fn all_delivered_in_order_passes() {
        let report = checker(&[10, 11, 12], &[10, 11, 12]);
        assert_eq!(report, CheckReport { acked: 3, delivered: 3, ..Default::default() });
        assert_eq!(report.failures(), 0);
    }

    #[test]
    fn acks_in_any_order_compare_by_message_id() {
        assert_eq!(checker(&[12, 10, 11], &[10, 11, 12]).failures(), 0);
    }

    #[test]
    fn missing_is_a_failure() {
        let report = checker(&[10, 11, 12], &[10, 12]);
        assert_eq!(report.missing, 1);
        assert_eq!(report.failures(), 1);
    }

    #[test]
    fn duplicates_are_removed_and_counted() {
        let report = checker(&[10, 11], &[10, 10, 11, 11, 11]);
        assert_eq!(report.duplicates, 3);
        assert_eq!(report.delivered, 2);
        assert_eq!(report.failures(), 0);
    }

    #[test]
    fn reordered_is_a_failure() {
        let report = checker(&[10, 11, 12], &[10, 12, 11]);
        assert_eq!(report.reordered, 1);
        assert_eq!(report.missing, 0);
        assert_eq!(report.failures(), 1);
    }

    #[test]
    fn order_follows_the_update_log_not_arrival() {
        // A replay after a reconnect arrives after newer live updates; their seqs tell the log order.
        let mut checker = Checker::default();
        checker.chat(1, vec![6, 7]);
        for id in [10, 11, 12] {
            checker.acked(1, 6, id);
        }
        checker.delivered(1, 7, 3, 12);
        checker.delivered(1, 7, 1, 10);
        checker.delivered(1, 7, 2, 11);
        assert_eq!(checker.report(&HashSet::new()).failures(), 0);
    }

    #[test]
    fn unacked_delivery_is_unexpected() {
        let report = checker(&[10], &[10, 99]);
        assert_eq!(report.unexpected, 1);
        assert_eq!(report.failures(), 1);
    }

    #[test]
    fn chats_are_checked_separately() {
        let mut checker = Checker::default();
        checker.chat(1, vec![6, 7]);
        checker.chat(2, vec![8, 9]);
        checker.acked(1, 6, 20);
        checker.acked(2, 9, 10);
        checker.delivered(1, 7, 1, 20);
        checker.delivered(2, 8, 1, 10);
        assert_eq!(checker.report(&HashSet::new()).failures(), 0, "ids of different chats are not ordered together");
    }

    #[test]
    fn group_messages_reach_every_other_member_and_lost_members_are_excluded() {
        let mut checker = Checker::default();
        checker.chat(3, vec![1, 2, 3, 4]);
        checker.acked(3, 1, 100);
        checker.acked(3, 2, 101);
        for member in [1, 3] {
            checker.delivered(3, member, 5, 101);
        }
        for member in [2, 3] {
            checker.delivered(3, member, 4, 100);
        }
        let report = checker.report(&HashSet::new());
        assert_eq!((report.acked, report.delivered), (2, 4));
        assert_eq!(report.missing, 2, "member 4 has neither message");
        let report = checker.report(&HashSet::from([4]));
        assert_eq!((report.missing, report.excluded_recipients, report.failures()), (0, 1, 0));
    }
}
