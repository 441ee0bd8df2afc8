//! The correctness check: every acked message reaches its recipient exactly
//! once (after de-duplication by message ID), in message-ID (ack) order per chat.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

/// Collects acks and deliveries; keys are (chat, recipient) as plain integers.
#[derive(Debug, Default)]
pub struct Checker {
    /// Acked message IDs per (chat, recipient).
    acked: BTreeMap<(i64, i64), Vec<i64>>,
    /// Delivered message IDs per (chat, recipient), in arrival order.
    delivered: BTreeMap<(i64, i64), Vec<i64>>,
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub acked: u64,
    /// Distinct acked messages that reached their recipient.
    pub delivered: u64,
    /// Acked but never delivered.
    pub missing: u64,
    /// Deliveries of a message already delivered (removed by de-duplication).
    pub duplicates: u64,
    /// Deliveries that arrived before a message with a smaller ID of the same chat.
    pub reordered: u64,
    /// Delivered messages that were never acked to their sender.
    pub unexpected: u64,
}

impl CheckReport {
    /// Failures (duplicates are tolerated: delivery is at-least-once).
    pub fn failures(&self) -> u64 {
        self.missing + self.reordered + self.unexpected
    }
}

impl Checker {
    pub fn acked(&mut self, chat: i64, recipient: i64, message: i64) {
        self.acked.entry((chat, recipient)).or_default().push(message);
    }

    pub fn delivered(&mut self, chat: i64, recipient: i64, message: i64) {
        self.delivered.entry((chat, recipient)).or_default().push(message);
    }

    pub fn report(&self) -> CheckReport {
        let mut report = CheckReport::default();
        let empty = Vec::new();
        let keys: HashSet<_> = self.acked.keys().chain(self.delivered.keys()).collect();
        for key in keys {
            let acked: HashSet<i64> = self.acked.get(key).unwrap_or(&empty).iter().copied().collect();
            report.acked += acked.len() as u64;
            let mut seen = HashSet::new();
            let mut highest = i64::MIN;
            for &id in self.delivered.get(key).unwrap_or(&empty) {
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
            report.missing += acked.iter().filter(|id| !seen.contains(id)).count() as u64;
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(acked: &[i64], delivered: &[i64]) -> CheckReport {
        let mut checker = Checker::default();
        for &id in acked {
            checker.acked(1, 7, id);
        }
        for &id in delivered {
            checker.delivered(1, 7, id);
        }
        checker.report()
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
    fn unacked_delivery_is_unexpected() {
        let report = checker(&[10], &[10, 99]);
        assert_eq!(report.unexpected, 1);
        assert_eq!(report.failures(), 1);
    }

    #[test]
    fn chats_are_checked_separately() {
        let mut checker = Checker::default();
        checker.acked(1, 7, 20);
        checker.acked(2, 8, 10);
        checker.delivered(1, 7, 20);
        checker.delivered(2, 8, 10);
        assert_eq!(checker.report().failures(), 0, "ids of different chats are not ordered together");
    }
}
