//! The correctness check: every acked message reaches every device that
//! should have it (each device of every member but the one that sent it,
//! so the sender's other devices too) exactly once after de-duplication by
//! message ID, and each device's copies, put in the order of its user's
//! update log (`seq`), are in message-ID order, so every device of every
//! member sees a chat in the same order.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// A device: its user's ID and its index among that user's devices.
pub type Device = (i64, usize);

/// Collects chat members, acks and deliveries; IDs are plain integers.
#[derive(Debug, Default)]
pub struct Checker {
    /// Members of each chat, with how many devices each has.
    members: HashMap<i64, Vec<(i64, usize)>>,
    /// Acked messages per chat: (message ID, sending device).
    acked: HashMap<i64, Vec<(i64, Device)>>,
    /// Deliveries per (chat, receiving device): (seq, message ID), in arrival order.
    delivered: HashMap<(i64, Device), Vec<(u64, i64)>>,
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub acked: u64,
    /// (Message, receiving device) pairs that arrived; a group message counts
    /// once per device of each recipient, and once per other device of its sender.
    pub delivered: u64,
    /// Acked but never delivered to a device that should have it.
    pub missing: u64,
    /// Deliveries of a message already delivered to the device (removed by de-duplication).
    pub duplicates: u64,
    /// Deliveries whose message ID is below that of an earlier entry of the device's log in the same chat.
    pub reordered: u64,
    /// Delivered messages that were never acked to their sender.
    pub unexpected: u64,
    /// Devices left out of the check because their connection was lost for good (counted as errors).
    pub excluded_recipients: u64,
}

impl CheckReport {
    /// Failures (duplicates are tolerated: delivery is at-least-once).
    pub fn failures(&self) -> u64 {
        self.missing + self.reordered + self.unexpected
    }
}

impl Checker {
    /// Chat `chat` has `members`: (user ID, devices of that user).
    pub fn chat(&mut self, chat: i64, members: Vec<(i64, usize)>) {
        self.members.insert(chat, members);
    }

    pub fn acked(&mut self, chat: i64, sender: Device, message: i64) {
        self.acked.entry(chat).or_default().push((message, sender));
    }

    pub fn delivered(&mut self, chat: i64, recipient: Device, seq: u64, message: i64) {
        self.delivered.entry((chat, recipient)).or_default().push((seq, message));
    }

    /// Checks every device of every member of every chat but those in `lost`.
    pub fn report(&self, lost: &HashSet<Device>) -> CheckReport {
        let mut report = CheckReport { excluded_recipients: lost.len() as u64, ..CheckReport::default() };
        let empty = Vec::new();
        let mut keys: HashSet<(i64, Device)> = self.delivered.keys().copied().collect();
        for (&chat, members) in &self.members {
            keys.extend(members.iter().flat_map(|&(user, devices)| (0..devices).map(move |d| (chat, (user, d)))));
        }
        for (chat, recipient) in keys {
            // The sending device has the ack; every other device, its user's included, gets an update.
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
        checker.chat(1, vec![(6, 1), (7, 1)]);
        for &id in acked {
            checker.acked(1, (6, 0), id);
        }
        for (seq, &id) in delivered.iter().enumerate() {
            checker.delivered(1, (7, 0), seq as u64, id);
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
        checker.chat(1, vec![(6, 1), (7, 1)]);
        for id in [10, 11, 12] {
            checker.acked(1, (6, 0), id);
        }
        checker.delivered(1, (7, 0), 3, 12);
        checker.delivered(1, (7, 0), 1, 10);
        checker.delivered(1, (7, 0), 2, 11);
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
        checker.chat(1, vec![(6, 1), (7, 1)]);
        checker.chat(2, vec![(8, 1), (9, 1)]);
        checker.acked(1, (6, 0), 20);
        checker.acked(2, (9, 0), 10);
        checker.delivered(1, (7, 0), 1, 20);
        checker.delivered(2, (8, 0), 1, 10);
        assert_eq!(checker.report(&HashSet::new()).failures(), 0, "ids of different chats are not ordered together");
    }

    #[test]
    fn group_messages_reach_every_other_member_and_lost_members_are_excluded() {
        let mut checker = Checker::default();
        checker.chat(3, vec![(1, 1), (2, 1), (3, 1), (4, 1)]);
        checker.acked(3, (1, 0), 100);
        checker.acked(3, (2, 0), 101);
        for member in [1, 3] {
            checker.delivered(3, (member, 0), 5, 101);
        }
        for member in [2, 3] {
            checker.delivered(3, (member, 0), 4, 100);
        }
        let report = checker.report(&HashSet::new());
        assert_eq!((report.acked, report.delivered), (2, 4));
        assert_eq!(report.missing, 2, "member 4 has neither message");
        let report = checker.report(&HashSet::from([(4, 0)]));
        assert_eq!((report.missing, report.excluded_recipients, report.failures()), (0, 1, 0));
    }

    /// Chat 1 between user 6 (sending from device 0) and user 7, two devices
    /// each; message 10 reaches every device that should have it but `skip`.
    fn two_devices_each(skip: Option<Device>) -> CheckReport {
        let mut checker = Checker::default();
        checker.chat(1, vec![(6, 2), (7, 2)]);
        checker.acked(1, (6, 0), 10);
        for device in [(6, 1), (7, 0), (7, 1)] {
            if Some(device) != skip {
                checker.delivered(1, device, 1, 10);
            }
        }
        checker.report(&HashSet::new())
    }

    #[test]
    fn every_device_of_every_member_and_the_senders_other_devices_get_the_message() {
        let report = two_devices_each(None);
        assert_eq!(
            (report.acked, report.delivered, report.failures()),
            (1, 3, 0),
            "the sending device is not owed a copy"
        );
    }

    #[test]
    fn a_device_that_misses_a_message_fails_the_check() {
        for device in [(7, 1), (7, 0), (6, 1)] {
            let report = two_devices_each(Some(device));
            assert_eq!((report.missing, report.delivered, report.failures()), (1, 2, 1), "{device:?} missed it");
        }
    }

    #[test]
    fn duplicates_and_order_are_judged_per_device() {
        let mut checker = Checker::default();
        checker.chat(1, vec![(6, 1), (7, 2)]);
        checker.acked(1, (6, 0), 10);
        checker.acked(1, (6, 0), 11);
        // The same message on both devices of 7 is no duplicate; twice on one device is.
        for (seq, id) in [(1, 10), (2, 11)] {
            checker.delivered(1, (7, 0), seq, id);
            checker.delivered(1, (7, 1), seq, id);
        }
        checker.delivered(1, (7, 1), 2, 11);
        let report = checker.report(&HashSet::new());
        assert_eq!((report.delivered, report.duplicates, report.failures()), (4, 1, 0));
        // Device 1's log puts 11 before 10: reordered there only.
        let mut checker = Checker::default();
        checker.chat(1, vec![(6, 1), (7, 2)]);
        checker.acked(1, (6, 0), 10);
        checker.acked(1, (6, 0), 11);
        checker.delivered(1, (7, 0), 1, 10);
        checker.delivered(1, (7, 0), 2, 11);
        checker.delivered(1, (7, 1), 1, 11);
        checker.delivered(1, (7, 1), 2, 10);
        assert_eq!(checker.report(&HashSet::new()).reordered, 1);
    }
}
