//! The budget every buffered request body draws from (`[proxy] max_buffered_total`).
//!
//! `max_buffered_body` bounds one request; this bounds all of them together, so a client
//! that opens a hundred h2 streams and stalls each just under the per-request limit cannot
//! pin a hundred times that. When the budget is spent, new buffering gets 503 `overloaded`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes currently held by buffered request bodies, process-wide.
#[derive(Debug, Default)]
pub struct BufferBudget {
    used: AtomicU64,
}

impl BufferBudget {
    pub fn new() -> Arc<BufferBudget> {
        Arc::new(BufferBudget::default())
    }

    /// An empty reservation that grows as a body is read and is returned when dropped.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation { budget: Arc::clone(self), bytes: 0 }
    }

    /// Bytes held right now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// A share of the budget, released when dropped (after the bytes were sent or discarded).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BufferBudget>,
    bytes: u64,
}

impl Reservation {
    /// Takes `more` bytes from the budget if that keeps the total within `limit`.
    pub fn grow(&mut self, more: u64, limit: u64) -> bool {
        let grown = self.budget.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            let total = used.checked_add(more)?;
            (total <= limit).then_some(total)
        });
        if grown.is_ok() {
            self.bytes += more;
        }
        grown.is_ok()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_one_limit_and_return_on_drop() {
        let budget = BufferBudget::new();
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert!(a.grow(60, 100));
        assert!(!b.grow(41, 100));
        assert!(b.grow(40, 100));
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.grow(60, 100));
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
