//! `max_conns`: a server takes at most N requests at once; more wait, without a thread, for a slot to free.
//!
//! A slot is the server's in-flight count ([`ServerState::active`], the least-connections input
//! too) below the limit, taken by compare-and-swap ([`ServerState::try_acquire`]) and given back
//! when the [`ActiveGuard`] drops. A request that finds every server full registers as a waiter
//! on each of them ([`SlotWait`]) and sleeps on their `Notify`s; a guard dropping while anyone
//! waits wakes them all and they race for the slot again. A waiter that gives up (timeout,
//! client gone) only unregisters: it never held a slot, so none can leak. The state lives in
//! the server's [`ServerState`], which outlives snapshots, so waiters and holders of an old
//! and a new snapshot share the same slots.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::{ActiveGuard, ServerState};

/// The "slot freed" signal of one server.
#[derive(Debug, Default)]
pub struct SlotSignal {
    /// Requests registered as waiting for this server (the release path looks only at this).
    waiting: AtomicUsize,
    notify: Notify,
}

impl SlotSignal {
    /// A slot was given back: wakes every waiter, if any.
    pub(super) fn freed(&self) {
        // Ordered after the caller's SeqCst decrement of `active`: a waiter that registered
        // before this load is woken; one that registers after it sees the freed slot when it
        // checks (see `SlotWait::new`).
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }
}

impl ServerState {
    /// Takes a slot when fewer than `max` requests are in flight here; `None` when full.
    pub fn try_acquire(self: &Arc<Self>, max: usize) -> Option<ActiveGuard> {
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ActiveGuard(self.clone()))
    }

    /// Whether a slot is free under `max` now.
    pub fn has_slot(&self, max: usize) -> bool {
        self.active.load(Ordering::SeqCst) < max
    }

    /// Requests waiting for a slot here.
    pub fn waiting(&self) -> usize {
        self.slots.waiting.load(Ordering::Relaxed)
    }
}

/// A request registered as waiting on some servers' slots: resolves once any of them frees one
/// (or might have: the caller tries again). Unregisters when dropped.
pub struct SlotWait<'a> {
    servers: Vec<&'a ServerState>,
    notified: Vec<Pin<Box<Notified<'a>>>>,
}

impl<'a> SlotWait<'a> {
    /// Registers on every server of `servers`, then reports whether one of them has a slot
    /// under `max` already (then do not wait: try again). Registering before that check is what
    /// makes a slot freed meanwhile wake this wait rather than be missed.
    pub fn new(servers: Vec<&'a ServerState>, max: usize) -> (SlotWait<'a>, bool) {
        let mut notified = Vec::with_capacity(servers.len());
        for s in &servers {
            s.slots.waiting.fetch_add(1, Ordering::SeqCst);
            let mut n = Box::pin(s.slots.notify.notified());
            // Registered now (not at first poll): `notify_waiters` reaches it from here on.
            n.as_mut().enable();
            notified.push(n);
        }
        let free = servers.iter().any(|s| s.has_slot(max));
        (SlotWait { servers, notified }, free)
    }
}

impl Future for SlotWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for n in &mut this.notified {
            if n.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

impl Drop for SlotWait<'_> {
    fn drop(&mut self) {
        for s in &self.servers {
            s.slots.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn slots_are_taken_up_to_the_limit_and_given_back() {
        let s = Arc::new(ServerState::default());
        let a = s.try_acquire(2).expect("first");
        let b = s.try_acquire(2).expect("second");
        assert!(s.try_acquire(2).is_none(), "full at 2");
        drop(a);
        let c = s.try_acquire(2).expect("a freed slot");
        drop((b, c));
        assert_eq!(s.active.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_wakes_when_a_slot_frees_and_unregisters_when_dropped() {
        let one = Arc::new(ServerState::default());
        let two = Arc::new(ServerState::default());
        let held_one = one.try_acquire(1).expect("slot");
        let held_two = two.try_acquire(1).expect("slot");
        let (wait, free) = SlotWait::new(vec![&one, &two], 1);
        assert!(!free);
        assert_eq!((one.waiting(), two.waiting()), (1, 1));
        // Freed before the wait is polled: registered already, so not missed.
        drop(held_two);
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("woken");
        assert_eq!((one.waiting(), two.waiting()), (0, 0));
        assert!(two.try_acquire(1).is_some());

        // A waiter that gives up leaves nothing behind.
        let (wait, free) = SlotWait::new(vec![&one], 1);
        assert!(!free);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), wait)
                .await
                .is_err(),
            "nothing freed"
        );
        assert_eq!(one.waiting(), 0);
        drop(held_one);
        assert!(one.try_acquire(1).is_some());
    }

    #[test]
    fn a_slot_free_at_registration_is_reported() {
        let s = Arc::new(ServerState::default());
        let (_wait, free) = SlotWait::new(vec![&s], 1);
        assert!(free);
    }
}
