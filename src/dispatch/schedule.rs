//! The in-memory plan of what to send when.
//!
//! Per eSIM a FIFO of queued ids (SPEC §8: one eSIM's notices go in queue
//! order, so only the head of a FIFO may be sent), and one min-heap of
//! (next attempt, id) over those heads. A head that waits (backoff, quota,
//! quiet hours) waits alone: other eSIMs' heads pass it in the heap. The
//! heap is lazily cleaned: an entry counts only while it still matches its
//! notice (still a head, not in flight, same time), so cancelling or
//! rescheduling never searches it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::engine::{EsimId, QueuedNotice};

/// Waits that a newcomer behind the head may make moot: the head is looked
/// at again at once, so that, say, a 10 % notice held by quiet hours does
/// not keep a bypassing USED_UP (which overtakes it) waiting all night.
const RECHECK_ON_ARRIVAL: [&str; 2] = [super::QUIET_HOURS, super::RECIPIENT_QUOTA];

/// What the plan keeps of a queued notice: enough to order it. The notice
/// itself (recipient, variables) stays in the store and is read when its
/// turn comes, so a long queue (a mail server down for a day) costs the
/// dispatcher tens of bytes per notice, not kilobytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: u64,
    pub esim: EsimId,
    pub next_attempt: DateTime<Utc>,
    pub waiting_for: Option<String>,
    /// The lease token when a shared store's claim handed it out (SPEC §10).
    pub token: Option<i64>,
}

impl From<&QueuedNotice> for Plan {
    fn from(q: &QueuedNotice) -> Plan {
        Plan {
            id: q.id,
            esim: q.esim,
            next_attempt: q.next_attempt,
            waiting_for: q.waiting_for.clone(),
            token: None,
        }
    }
}

impl From<QueuedNotice> for Plan {
    fn from(q: QueuedNotice) -> Plan {
        Plan::from(&q)
    }
}

struct Slot {
    q: Plan,
    in_flight: bool,
    /// Cancelled while in flight: forgotten once the send comes back.
    cancelled: bool,
    /// Put back in the queue (a retried dead letter) while the previous
    /// attempt was still in flight: scheduled again once it comes back.
    again: Option<Plan>,
}

#[derive(Default)]
pub struct Schedule {
    slots: HashMap<u64, Slot>,
    fifos: HashMap<EsimId, VecDeque<u64>>,
    heap: BinaryHeap<Reverse<(DateTime<Utc>, u64)>>,
}

impl Schedule {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Adds a newly queued notice at the back of its eSIM's FIFO.
    pub fn insert(&mut self, q: impl Into<Plan>, now: DateTime<Utc>) {
        let q: Plan = q.into();
        if let Some(slot) = self.slots.get_mut(&q.id) {
            if slot.in_flight {
                slot.again = Some(q);
            }
            // Otherwise already scheduled (loaded at start and enqueued too).
            return;
        }
        let (id, esim, at) = (q.id, q.esim, q.next_attempt);
        self.slots.insert(
            id,
            Slot {
                q,
                in_flight: false,
                cancelled: false,
                again: None,
            },
        );
        let fifo = self.fifos.entry(esim).or_default();
        fifo.push_back(id);
        if fifo.len() == 1 {
            self.heap.push(Reverse((at, id)));
            return;
        }
        let head = fifo[0];
        if let Some(h) = self.slots.get_mut(&head) {
            let moot =
                h.q.waiting_for
                    .as_deref()
                    .is_some_and(|w| RECHECK_ON_ARRIVAL.contains(&w));
            if !h.in_flight && moot && h.q.next_attempt > now {
                h.q.next_attempt = now;
                self.heap.push(Reverse((now, head)));
            }
        }
    }

    /// Forgets a notice the store no longer holds.
    pub fn cancel(&mut self, id: u64) {
        match self.slots.get_mut(&id) {
            Some(slot) if slot.in_flight => {
                slot.cancelled = true;
                slot.again = None;
            }
            Some(_) => self.remove(id),
            None => {}
        }
    }

    /// When the earliest head is due, if any.
    pub fn next_due(&mut self) -> Option<DateTime<Utc>> {
        self.clean_top();
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the earliest head due by `now` and marks it in flight.
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Option<Plan> {
        self.clean_top();
        let Reverse((at, id)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        let slot = self.slots.get_mut(&id)?;
        slot.in_flight = true;
        Some(slot.q.clone())
    }

    /// The notice left the queue (sent, dead, superseded, suppressed, gone).
    pub fn finished(&mut self, id: u64, now: DateTime<Utc>) {
        let again = self.slots.get_mut(&id).and_then(|s| s.again.take());
        self.remove(id);
        if let Some(q) = again {
            self.insert(q, now);
        }
    }

    /// The notice stays queued and is tried again at `at`.
    pub fn again(&mut self, id: u64, at: DateTime<Utc>, why: Option<String>) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.in_flight = false;
        if slot.cancelled {
            self.remove(id);
            return;
        }
        // A dead letter put back while this attempt ran is the same notice,
        // now due at once with its attempts reset.
        let (at, why) = match slot.again.take() {
            Some(fresh) => (fresh.next_attempt.min(at), fresh.waiting_for.clone()),
            None => (at, why),
        };
        slot.q.next_attempt = at;
        slot.q.waiting_for = why;
        self.heap.push(Reverse((at, id)));
    }

    fn remove(&mut self, id: u64) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        let esim = slot.q.esim;
        let Some(fifo) = self.fifos.get_mut(&esim) else {
            return;
        };
        let was_head = fifo.front() == Some(&id);
        fifo.retain(|x| *x != id);
        match fifo.front().copied() {
            None => {
                self.fifos.remove(&esim);
            }
            Some(next) if was_head => {
                if let Some(s) = self.slots.get(&next) {
                    if !s.in_flight {
                        self.heap.push(Reverse((s.q.next_attempt, next)));
                    }
                }
            }
            Some(_) => {}
        }
    }

    fn valid(&self, at: DateTime<Utc>, id: u64) -> bool {
        let Some(slot) = self.slots.get(&id) else {
            return false;
        };
        !slot.in_flight
            && !slot.cancelled
            && slot.q.next_attempt == at
            && self
                .fifos
                .get(&slot.q.esim)
                .and_then(|f| f.front())
                .is_some_and(|h| *h == id)
    }

    fn clean_top(&mut self) {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if self.valid(at, id) {
                return;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + secs, 0).unwrap()
    }

    fn q(id: u64, esim: EsimId, at: i64) -> QueuedNotice {
        let mut q = QueuedNotice::example(id, esim, t(at));
        q.identity = format!("n{id}");
        q.queued_at = t(0);
        q
    }

    #[test]
    fn one_esim_in_order_others_pass_a_waiting_head() {
        let mut s = Schedule::default();
        s.insert(q(1, 7, 0), t(0));
        s.insert(q(2, 7, 0), t(0));
        s.insert(q(3, 8, 0), t(0));
        let first = s.pop_due(t(0)).unwrap();
        assert_eq!(first.id, 1);
        let second = s.pop_due(t(0)).unwrap();
        assert_eq!(second.id, 3, "2 waits behind 1, which is in flight");
        assert!(s.pop_due(t(0)).is_none());
        // 1 has to wait an hour: 2 stays behind it; 3 is done.
        s.again(1, t(3600), Some("retry".into()));
        s.finished(3, t(0));
        assert!(s.pop_due(t(10)).is_none());
        assert_eq!(s.next_due(), Some(t(3600)));
        assert_eq!(s.pop_due(t(3600)).unwrap().id, 1);
        s.finished(1, t(3600));
        assert_eq!(s.pop_due(t(3600)).unwrap().id, 2);
        s.finished(2, t(3600));
        assert_eq!(s.len(), 0);
        assert!(s.next_due().is_none());
    }

    #[test]
    fn earliest_head_first() {
        let mut s = Schedule::default();
        s.insert(q(1, 1, 50), t(0));
        s.insert(q(2, 2, 10), t(0));
        s.insert(q(3, 3, 30), t(0));
        let order: Vec<u64> = (0..3).map(|_| s.pop_due(t(100)).unwrap().id).collect();
        assert_eq!(order, vec![2, 3, 1]);
    }

    #[test]
    fn cancel_head_promotes_the_next_and_cancel_in_flight_waits() {
        let mut s = Schedule::default();
        s.insert(q(1, 7, 0), t(0));
        s.insert(q(2, 7, 0), t(0));
        s.insert(q(3, 7, 0), t(0));
        s.cancel(1);
        assert_eq!(s.pop_due(t(0)).unwrap().id, 2);
        s.cancel(2); // in flight
        assert!(s.pop_due(t(0)).is_none(), "3 waits until 2 comes back");
        s.again(2, t(0), None);
        assert_eq!(s.pop_due(t(0)).unwrap().id, 3);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_newcomer_rechecks_a_head_held_by_quiet_hours_but_not_by_backoff() {
        let mut s = Schedule::default();
        s.insert(q(1, 7, 0), t(0));
        s.pop_due(t(0)).unwrap();
        s.again(
            1,
            t(0) + Duration::hours(9),
            Some(super::super::QUIET_HOURS.into()),
        );
        s.insert(q(2, 7, 60), t(60));
        assert_eq!(s.pop_due(t(60)).unwrap().id, 1);
        s.again(1, t(600), Some("retry".into()));
        s.insert(q(3, 7, 70), t(70));
        assert!(s.pop_due(t(70)).is_none());
    }

    #[test]
    fn a_dead_letter_put_back_while_in_flight_is_scheduled_again() {
        let mut s = Schedule::default();
        s.insert(q(1, 7, 0), t(0));
        s.pop_due(t(0)).unwrap();
        s.insert(q(1, 7, 5), t(5));
        s.finished(1, t(5));
        assert_eq!(s.pop_due(t(5)).unwrap().id, 1);
    }
}
