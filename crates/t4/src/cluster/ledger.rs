//! The leader's memory of forwarded writes (docs/clustering.md "forward-once"): a follower
//! forwards each client write with an id (its node id and a counter); a forward retried
//! after its answer was lost gets the first answer instead of being applied again. Bounded
//! in entries and bytes: the oldest finished answers go first.
//!
//! Invariant **forward-once**: an id admitted once is never admitted as new again while the
//! ledger remembers it — while it runs, a retry waits for it; once done, a retry gets its
//! answer.

use std::collections::{BTreeMap, VecDeque};

/// What to do with a forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Never seen: apply it (then [`Ledger::finish`] or [`Ledger::abandon`]).
    New,
    /// The same id is being applied: wait for its answer.
    Running,
    /// Applied before: answer with this.
    Done(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Running,
    Done(Vec<u8>),
}

#[derive(Debug)]
pub struct Ledger {
    entries: BTreeMap<String, Entry>,
    /// Finished ids, oldest first (what is forgotten first).
    finished: VecDeque<String>,
    bytes: usize,
    entries_max: usize,
    bytes_max: usize,
}

impl Ledger {
    pub fn new(entries_max: usize, bytes_max: usize) -> Self {
        Self { entries: BTreeMap::new(), finished: VecDeque::new(), bytes: 0, entries_max: entries_max.max(1), bytes_max }
    }

    /// A forward with `id` arrived.
    pub fn admit(&mut self, id: &str) -> Admit {
        match self.entries.get(id) {
            Some(Entry::Running) => Admit::Running,
            Some(Entry::Done(answer)) => Admit::Done(answer.clone()),
            None => {
                self.entries.insert(id.to_string(), Entry::Running);
                Admit::New
            }
        }
    }

    /// `id` was applied (committed) and answered with `answer`.
    pub fn finish(&mut self, id: &str, answer: Vec<u8>) {
        if !matches!(self.entries.get(id), Some(Entry::Running)) {
            return;
        }
        self.bytes += id.len() + answer.len();
        self.entries.insert(id.to_string(), Entry::Done(answer));
        self.finished.push_back(id.to_string());
        while self.finished.len() > self.entries_max || (self.bytes > self.bytes_max && self.finished.len() > 1) {
            let oldest = self.finished.pop_front().expect("not empty");
            if let Some(Entry::Done(answer)) = self.entries.remove(&oldest) {
                self.bytes -= oldest.len() + answer.len();
            }
        }
    }

    /// `id` failed before anything of it was logged (refused, or this node stopped leading
    /// before its batch was written): a retry may apply it.
    pub fn abandon(&mut self, id: &str) {
        if matches!(self.entries.get(id), Some(Entry::Running)) {
            self.entries.remove(id);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_forward_waits_for_or_gets_the_first_answer() {
        let mut ledger = Ledger::new(100, 1 << 20);
        assert_eq!(ledger.admit("b:1"), Admit::New);
        assert_eq!(ledger.admit("b:1"), Admit::Running, "retried while the first runs");
        ledger.finish("b:1", b"rev 7".to_vec());
        assert_eq!(ledger.admit("b:1"), Admit::Done(b"rev 7".to_vec()));
        assert_eq!(ledger.admit("c:1"), Admit::New, "another node's counter is another id");
        ledger.abandon("c:1");
        assert_eq!(ledger.admit("c:1"), Admit::New, "abandoned before it was logged: a retry applies it");
        ledger.abandon("b:1");
        assert_eq!(ledger.admit("b:1"), Admit::Done(b"rev 7".to_vec()), "a finished one is never abandoned");
    }

    #[test]
    fn the_oldest_answers_are_forgotten_first_within_the_bounds() {
        let mut ledger = Ledger::new(3, 1 << 20);
        for n in 0..5 {
            let id = format!("b:{n}");
            ledger.admit(&id);
            ledger.finish(&id, vec![n as u8]);
        }
        assert_eq!(ledger.len(), 3);
        assert_eq!(ledger.admit("b:4"), Admit::Done(vec![4]));
        assert_eq!(ledger.admit("b:0"), Admit::New, "forgotten");
        let mut small = Ledger::new(100, 40);
        for n in 0..10 {
            let id = format!("x:{n}");
            small.admit(&id);
            small.finish(&id, vec![0; 10]);
        }
        assert!(small.len() <= 3, "{} entries kept within 40 bytes", small.len());
        assert_eq!(small.admit("x:9"), Admit::Done(vec![0; 10]), "the newest is kept");
        // A running forward is never forgotten, whatever the bounds.
        let mut busy = Ledger::new(1, 0);
        busy.admit("r");
        busy.admit("s");
        busy.finish("s", vec![1; 100]);
        assert_eq!(busy.admit("r"), Admit::Running);
    }
}
