//! A fixed number of slots for work a client can start but must not pile up
//! (refused bodies read away by the API and the proxy, log streams followed):
//! take one or be refused. Only atomics: no I/O here.
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Slots {
    taken: AtomicUsize,
    max: usize,
}

/// A taken slot; given back when dropped (a panic included).
pub struct Slot(&'static Slots);

impl Slots {
    pub const fn new(max: usize) -> Slots {
        Slots {
            taken: AtomicUsize::new(0),
            max,
        }
    }

    /// A slot, or `None` when all `max` are taken.
    pub fn take(&'static self) -> Option<Slot> {
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self))
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_and_come_back() {
        static SLOTS: Slots = Slots::new(2);
        let first = SLOTS.take();
        let second = SLOTS.take();
        assert!(first.is_some() && second.is_some());
        assert!(SLOTS.take().is_none());
        drop(first);
        assert!(SLOTS.take().is_some());
    }
}
