//! The due-time heap: which account is due next. A plain data structure (no tokio, no
//! clock): accounts are indices, times are given by the caller. O(log n) per event; moving
//! or removing a due time leaves the old entry in the heap, marked stale by a generation
//! number, and it is dropped when it reaches the top.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use time::OffsetDateTime;

/// Due times of accounts `0..n`, at most one live per account.
#[derive(Default)]
pub(crate) struct DueHeap {
    /// `(due, account, generation)`, earliest first; stale entries included.
    heap: BinaryHeap<Reverse<(OffsetDateTime, usize, u64)>>,
    /// Each account's current generation: an entry carrying another one is stale.
    generations: Vec<u64>,
}

impl DueHeap {
    /// Forgets every due time (the accounts were replaced: their indices mean others now).
    pub(crate) fn clear(&mut self) {
        self.heap.clear();
        self.generations.clear();
    }

    /// Sets or moves `idx`'s due time; an earlier one no longer counts.
    pub(crate) fn schedule(&mut self, idx: usize, due: OffsetDateTime) {
        let generation = self.bump(idx);
        self.heap.push(Reverse((due, idx, generation)));
    }

    /// Removes `idx`'s due time, if it has one.
    pub(crate) fn remove(&mut self, idx: usize) {
        self.bump(idx);
    }

    /// The earliest due time, if any account has one.
    pub(crate) fn next(&mut self) -> Option<OffsetDateTime> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Takes the account due earliest, if its due time is at or before `now`; it has no due
    /// time afterwards. Call it until it returns `None` to take all that are due.
    pub(crate) fn pop_due(&mut self, now: OffsetDateTime) -> Option<usize> {
        self.drop_stale();
        match self.heap.peek() {
            Some(Reverse((due, idx, _))) if *due <= now => {
                let idx = *idx;
                self.heap.pop();
                self.bump(idx);
                Some(idx)
            }
            _ => None,
        }
    }

    /// Number of live due times (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap
            .iter()
            .filter(|Reverse((_, idx, g))| self.is_live(*idx, *g))
            .count()
    }

    fn bump(&mut self, idx: usize) -> u64 {
        if self.generations.len() <= idx {
            self.generations.resize(idx + 1, 0);
        }
        self.generations[idx] += 1;
        self.generations[idx]
    }

    fn is_live(&self, idx: usize, generation: u64) -> bool {
        self.generations.get(idx) == Some(&generation)
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, idx, generation))) = self.heap.peek() {
            if self.is_live(*idx, *generation) {
                break;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DueHeap;
    use time::OffsetDateTime;

    fn at(minute: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(minute)
    }

    #[test]
    fn the_earliest_due_account_comes_first() {
        let mut h = DueHeap::default();
        assert_eq!(h.next(), None);
        h.schedule(0, at(30));
        h.schedule(1, at(10));
        h.schedule(2, at(20));
        assert_eq!(h.next(), Some(at(10)));
        assert_eq!(h.pop_due(at(5)), None, "nothing is due yet");
        assert_eq!(h.pop_due(at(25)), Some(1));
        assert_eq!(h.pop_due(at(25)), Some(2));
        assert_eq!(h.pop_due(at(25)), None, "account 0 is due at :30");
        assert_eq!(h.next(), Some(at(30)));
        assert_eq!(h.pop_due(at(30)), Some(0), "due exactly now is due");
        assert_eq!(h.next(), None);
    }

    #[test]
    fn rescheduling_replaces_the_earlier_due_time() {
        let mut h = DueHeap::default();
        h.schedule(0, at(10));
        h.schedule(1, at(20));
        h.schedule(0, at(40)); // later: the :10 entry is stale
        assert_eq!(h.len(), 2);
        assert_eq!(h.next(), Some(at(20)));
        assert_eq!(h.pop_due(at(30)), Some(1));
        assert_eq!(
            h.pop_due(at(30)),
            None,
            "the moved due time does not fire early"
        );
        h.schedule(1, at(5)); // earlier than account 0's
        assert_eq!(h.pop_due(at(50)), Some(1));
        assert_eq!(h.pop_due(at(50)), Some(0));
        assert_eq!(h.pop_due(at(50)), None, "each account fires once");
    }

    #[test]
    fn a_removed_or_cleared_account_is_never_due() {
        let mut h = DueHeap::default();
        h.schedule(0, at(10));
        h.schedule(1, at(20));
        h.remove(0);
        h.remove(7); // never scheduled: nothing to do
        assert_eq!(h.next(), Some(at(20)));
        assert_eq!(h.pop_due(at(59)), Some(1));
        assert_eq!(h.pop_due(at(59)), None);
        h.schedule(0, at(15)); // scheduled again after removal
        assert_eq!(h.pop_due(at(59)), Some(0));

        h.schedule(0, at(1));
        h.schedule(3, at(2));
        h.clear();
        assert_eq!(h.next(), None);
        assert_eq!(h.pop_due(at(59)), None);
        h.schedule(3, at(2)); // indices are reused after a clear
        assert_eq!(h.pop_due(at(59)), Some(3));
    }
}
