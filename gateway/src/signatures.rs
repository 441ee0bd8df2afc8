//! Ed25519 signature checks, batched per thread: the checks that a thread's
//! tasks ask for while it is busy are verified together.
//!
//! A fresh access token's signature check was a third of a connection's
//! server CPU in a connection storm (~48 µs here with ring, ~41 µs alone
//! with ed25519-dalek, ~23 µs each verified 64 at a time; see
//! docs/benchmarks.md). Each HTTP worker and actor thread runs its tasks
//! one at a time, so there is no lock and no other thread involved: the
//! first check on an empty batch leads it, yields once so that the tasks
//! ready behind it can add theirs, and then verifies the whole batch. A
//! quiet thread yields to nobody and verifies a batch of one at once.
//!
//! A batch with a bad signature in it fails as a whole; its signatures
//! are then checked one by one, so a bad one never refuses a good one,
//! and a client that sends bad signatures costs the others one batch
//! check more.

use std::cell::RefCell;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use tokio::sync::oneshot;

/// Most signatures verified together: a larger batch saves little more
/// per signature and holds its first signature's caller longer (64 take
/// about 1.5 ms here).
const MAX_BATCH: usize = 64;

/// A check waiting for its batch.
struct Waiting {
    key: VerifyingKey,
    message: Box<[u8]>,
    signature: Signature,
    answer: oneshot::Sender<bool>,
}

thread_local! {
    /// This thread's open batch.
    static OPEN: RefCell<Vec<Waiting>> = const { RefCell::new(Vec::new()) };
}

/// Whether `signature` is `key`'s signature of `message`.
pub async fn verify(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    let (answer, verdict) = oneshot::channel();
    let waiting = Waiting { key: *key, message: message.into(), signature: *signature, answer };
    let size = OPEN.with_borrow_mut(|open| {
        open.push(waiting);
        open.len()
    });
    if size == MAX_BATCH {
        check_open();
    } else if size == 1 {
        // This check leads the batch. The guard verifies it after the
        // yield, or when this future is dropped during it: the checks that
        // joined are answered either way.
        let _lead = CheckOnDrop;
        tokio::task::yield_now().await;
    }
    verdict.await.unwrap_or(false)
}

/// Checks the open batch when dropped.
struct CheckOnDrop;

impl Drop for CheckOnDrop {
    fn drop(&mut self) {
        check_open();
    }
}

/// Verifies this thread's open batch and answers every check in it.
fn check_open() {
    let batch = OPEN.with_borrow_mut(std::mem::take);
    // A batch of one is checked on its own below, once.
    let all_good = batch.len() > 1 && {
        let messages: Vec<&[u8]> = batch.iter().map(|w| &*w.message).collect();
        let signatures: Vec<Signature> = batch.iter().map(|w| w.signature).collect();
        let keys: Vec<VerifyingKey> = batch.iter().map(|w| w.key).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    };
    for waiting in batch {
        let good = all_good || waiting.key.verify(&waiting.message, &waiting.signature).is_ok();
        // Its caller may have gone away; nothing to answer then.
        let _ = waiting.answer.send(good);
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};
    use futures_util::future::join_all;

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[actix_rt::test]
    async fn a_lone_check_answers_good_and_bad_signatures() {
        let signer = key(1);
        let signature = signer.sign(b"hello");
        assert!(verify(&signer.verifying_key(), b"hello", &signature).await);
        assert!(!verify(&signer.verifying_key(), b"hullo", &signature).await);
        assert!(!verify(&key(2).verifying_key(), b"hello", &signature).await);
    }

    #[actix_rt::test]
    async fn checks_of_one_thread_are_batched_and_a_bad_one_refuses_only_itself() {
        let signer = key(3);
        let messages: Vec<Vec<u8>> = (0..150).map(|i| format!("token {i}").into_bytes()).collect();
        let mut signatures: Vec<Signature> = messages.iter().map(|m| signer.sign(m)).collect();
        // Every tenth signature is another message's.
        for i in (5..150).step_by(10) {
            signatures[i] = signer.sign(b"something else");
        }
        let key = signer.verifying_key();
        let checks = messages.iter().zip(&signatures).map(|(m, s)| verify(&key, m, s));
        let verdicts = join_all(checks).await;
        let expected: Vec<bool> = (0..150).map(|i| i % 10 != 5).collect();
        assert_eq!(verdicts, expected);
        assert!(OPEN.with_borrow(Vec::is_empty), "a check was left in the open batch");
    }

    #[actix_rt::test]
    async fn a_leader_dropped_while_it_waits_still_answers_the_checks_that_joined_it() {
        let signer = key(4);
        let key = signer.verifying_key();
        let signature = signer.sign(b"first");
        let mut lead = Box::pin(verify(&key, b"first", &signature));
        // Polled once: it has opened the batch and yields.
        assert!(futures_util::poll!(lead.as_mut()).is_pending());
        let second = signer.sign(b"second");
        let mut joined = Box::pin(verify(&key, b"second", &second));
        assert!(futures_util::poll!(joined.as_mut()).is_pending());
        assert_eq!(OPEN.with_borrow(Vec::len), 2, "the second check did not join the first one's batch");
        drop(lead);
        assert!(joined.await);
    }
}
