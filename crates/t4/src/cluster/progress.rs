//! The leader's view of one follower (docs/clustering.md "Replication"): where to send
//! from, what it holds durably, and how many bytes are on their way to it (bounded).
//!
//! After a refusal or a lost connection the leader probes: one append at a time, from where
//! the follower said its log stops matching, until one is taken; then it streams again.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct Progress {
    /// The next index to send.
    next: u64,
    /// The highest index the follower holds durably and matching (0: not known).
    matched: u64,
    /// Appends sent and not answered: (first index, last index, bytes).
    in_flight: VecDeque<(u64, u64, usize)>,
    in_flight_bytes: usize,
    bytes_max: usize,
    probing: bool,
}

impl Progress {
    /// A follower not heard from yet, to a leader whose log ends at `last`; at most
    /// `bytes_max` bytes on their way to it at once (one append always may go).
    pub fn new(last: u64, bytes_max: usize) -> Self {
        Self { next: last + 1, matched: 0, in_flight: VecDeque::new(), in_flight_bytes: 0, bytes_max, probing: true }
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn matched(&self) -> u64 {
        self.matched
    }

    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }

    /// Whether an append of `bytes` may go now.
    pub fn may_send(&self, bytes: usize) -> bool {
        if self.in_flight.is_empty() {
            return true;
        }
        !self.probing && self.in_flight_bytes + bytes <= self.bytes_max
    }

    /// An append of records through `last`, `bytes` long, was sent.
    pub fn sent(&mut self, last: u64, bytes: usize) {
        self.in_flight.push_back((self.next, last, bytes));
        self.next = last + 1;
        self.in_flight_bytes += bytes;
    }

    /// The follower took an append and holds through `durable`.
    pub fn taken(&mut self, durable: u64) {
        self.matched = self.matched.max(durable);
        while self.in_flight.front().is_some_and(|(_, last, _)| *last <= durable) {
            let (_, _, bytes) = self.in_flight.pop_front().expect("just seen");
            self.in_flight_bytes -= bytes;
        }
        self.probing = false;
        self.next = self.next.max(self.matched + 1);
    }

    /// The follower refused: its log stops matching at `from`. Below what it was seen to
    /// hold, it lost its log (a member whose disk was replaced comes back empty, and rejoins
    /// as a learner): it holds only what it says now. Answers come one call at a time, so
    /// no older answer can say so.
    pub fn refused(&mut self, from: u64) {
        if from <= self.matched {
            self.matched = from.saturating_sub(1);
        }
        self.restart(from.max(self.matched + 1));
    }

    /// The connection broke or an answer was lost: resend what was not answered (never
    /// below past what it holds). A follower not heard from yet is probed where the leader
    /// was probing, not from the start of the log (which the leader may no longer hold).
    pub fn lost(&mut self) {
        let from = self.in_flight.front().map_or(self.next, |(first, _, _)| *first);
        self.restart(from.max(self.matched + 1));
    }

    fn restart(&mut self, next: u64) {
        self.next = next.max(1);
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.probing = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_on_their_way_are_bounded_and_a_probe_goes_alone() {
        let mut progress = Progress::new(10, 1_000);
        assert!(progress.may_send(5_000), "one append always may go");
        progress.sent(12, 5_000);
        assert!(!progress.may_send(1), "probing: one at a time");
        progress.taken(12);
        assert_eq!((progress.matched(), progress.next(), progress.in_flight_bytes()), (12, 13, 0));
        progress.sent(13, 600);
        assert!(progress.may_send(400) && !progress.may_send(401), "streaming within the bound");
        progress.sent(14, 400);
        assert_eq!(progress.in_flight_bytes(), 1_000);
        progress.taken(13);
        assert_eq!(progress.in_flight_bytes(), 400);
    }

    #[test]
    fn refusals_and_losses_back_up_but_never_below_what_is_held() {
        let mut progress = Progress::new(20, 1 << 20);
        progress.sent(21, 10);
        progress.refused(8);
        assert_eq!(progress.next(), 8);
        progress.sent(21, 100);
        progress.taken(21);
        progress.sent(25, 10);
        progress.lost();
        assert_eq!((progress.next(), progress.in_flight_bytes()), (22, 0), "the follower was seen to hold 21");
        progress.taken(19);
        assert_eq!(progress.matched(), 21, "an old answer never lowers what is held");
        // A refusal below what it was seen to hold: it lost its log, and holds what it says.
        progress.sent(25, 10);
        progress.refused(3);
        assert_eq!((progress.matched(), progress.next()), (2, 3));
        // Never heard from: a lost probe is sent again from where it started.
        let mut fresh = Progress::new(500, 1 << 20);
        fresh.sent(500, 10);
        fresh.lost();
        assert_eq!(fresh.next(), 501);
        fresh.lost();
        assert_eq!(fresh.next(), 501);
    }
}
