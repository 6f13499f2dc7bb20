//! Keeping a provider inside its limits, whatever it is reached through (HTTP, SQL, LDAP): a
//! cap on calls in flight, an even pace at the configured rate that slows down when the provider
//! throttles without saying by how much, and the budget a provider announces for a bucket of
//! calls, spread over what is left of its window. An adapter asks a `Throttle` to `admit` each call
//! and tells it, with the `Admission`, what the answer said.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Request budget of one backend.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub requests_per_second: u32,
    pub max_concurrency: u32,
    /// The IdentityBackend's `logDelay`, in place of the provider's documented one.
    pub log_delay: Option<Duration>,
    /// The longest answer read from the provider, in bytes.
    pub max_response_bytes: usize,
    /// The percentage of an announced budget's limit this operator uses; the rest is left to the
    /// organisation's other clients of the same quota.
    pub budget_share: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Self::from(&crate::api::BackendLimits::default())
    }
}

impl From<&crate::api::BackendLimits> for Limits {
    fn from(l: &crate::api::BackendLimits) -> Self {
        Self {
            requests_per_second: l.requests_per_second.max(1) as u32,
            max_concurrency: l.max_concurrency.max(1) as u32,
            log_delay: None,
            max_response_bytes: usize::try_from(l.max_response_bytes.max(1)).unwrap_or(usize::MAX),
            budget_share: u8::try_from(l.budget_share.clamp(1, 100)).unwrap_or(100),
        }
    }
}

/// The limits of one backend, shared by every recall that uses it.
#[derive(Clone)]
pub struct Throttle {
    pacer: Arc<Pacer>,
    in_flight: Arc<Semaphore>,
    /// By bucket; a provider has a handful, so a list is searched faster than a map is hashed.
    budgets: Arc<std::sync::Mutex<Vec<(&'static str, AnnouncedBudget)>>>,
    budget_share: u8,
}

/// What an answer said of its bucket's budget: `remaining` calls until `reset`, of `limit` per
/// window when it says (`X-Rate-Limit-Limit`).
#[derive(Clone, Copy, Debug)]
pub struct Announced {
    pub remaining: u64,
    pub limit: Option<u64>,
    pub reset: Instant,
}

/// One call let through: it holds a place among the calls in flight until it is dropped, and
/// `settle` records the budget its answer announced. Dropped without `settle` (a call given up),
/// it only frees its place.
pub struct Admission {
    throttle: Throttle,
    bucket: &'static str,
    /// When the call was let through: answers to calls sent before a slow-down are that signal.
    pub sent: Instant,
    _place: OwnedSemaphorePermit,
}

impl Throttle {
    pub fn new(limits: &Limits) -> Self {
        Self {
            pacer: Arc::new(Pacer::new(limits.requests_per_second)),
            in_flight: Arc::new(Semaphore::new(limits.max_concurrency.max(1) as usize)),
            budgets: Arc::default(),
            budget_share: limits.budget_share.clamp(1, 100),
        }
    }

    /// Waits for a place among the calls in flight, the call's turn at the configured pace, and
    /// its share of what the provider last announced for `bucket`.
    pub async fn admit(&self, bucket: &'static str) -> Admission {
        let place = self.in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
        self.pacer.wait_turn().await;
        // Counted in flight for the bucket from here; `Admission`'s drop uncounts it.
        let admission = Admission { throttle: self.clone(), bucket, sent: Instant::now(), _place: place };
        self.wait_for_budget(bucket).await;
        admission
    }

    /// Throttled by a provider that says neither how long to wait nor what budget is left (a
    /// quota shared with other tools): half the rate, once for the calls sent before `sent`.
    pub fn slow_down(&self, sent: Instant) {
        self.pacer.slow_down(sent);
    }

    /// An answer that was not throttled: the rate comes back in small steps.
    pub fn recover(&self) {
        self.pacer.recover();
    }

    /// The provider said `bucket` is spent until its window resets.
    pub fn spent(&self, bucket: &'static str) {
        if let Some(budget) = budget_of(&mut self.budgets.lock().unwrap(), bucket) {
            budget.remaining = 0;
        }
    }

    /// Waits for this call's share of the budget the provider last announced for `bucket`: what
    /// is left is spread evenly until the window resets, counting calls in flight.
    async fn wait_for_budget(&self, bucket: &'static str) {
        let (slot, now, seen) = {
            let mut budgets = self.budgets.lock().unwrap();
            let Some(budget) = budget_of(&mut budgets, bucket) else { return };
            let now = Instant::now();
            budget.in_flight += 1;
            if now >= budget.reset {
                // A new window whose budget we have not seen yet: the next answer tells.
                return;
            }
            let usable = budget.usable().saturating_sub(budget.in_flight - 1);
            let slot = budget.next_slot.max(now);
            // The provider's figure is untrusted: a count past u32 spreads as finely as u32 can.
            budget.next_slot = if usable == 0 { budget.reset } else { slot + (budget.reset - slot) / u32::try_from(usable).unwrap_or(u32::MAX) };
            (if usable == 0 { budget.reset } else { slot }, now, budget.answers)
        };
        wait_for_slot(slot, now).await;
        // Checked again before the call goes: while it waited, answers may have shown the budget
        // spent (another client of the same quota, the organisation's SSO or provisioning).
        let reset = {
            let mut budgets = self.budgets.lock().unwrap();
            let Some(budget) = budget_of(&mut budgets, bucket) else { return };
            let now = Instant::now();
            if budget.answers == seen || now >= budget.reset || budget.usable() >= budget.in_flight {
                return;
            }
            budget.next_slot = budget.reset;
            budget.reset
        };
        wait_for_slot(reset, Instant::now()).await;
    }

    /// Records the budget an answer announced for `bucket`.
    fn record(&self, bucket: &'static str, announced: Announced) {
        let Announced { remaining, limit, reset } = announced;
        let mut budgets = self.budgets.lock().unwrap();
        let now = Instant::now();
        let i = budgets.iter().position(|(b, _)| *b == bucket).unwrap_or_else(|| {
            budgets.push((bucket, AnnouncedBudget { remaining, reset, reserve: 0, next_slot: now, in_flight: 0, answers: 0 }));
            budgets.len() - 1
        });
        let budget = &mut budgets[i].1;
        budget.answers = budget.answers.wrapping_add(1);
        if let Some(limit) = limit {
            budget.reserve = limit / 100 * u64::from(100 - self.budget_share) + limit % 100 * u64::from(100 - self.budget_share) / 100;
        }
        // Answers overtake each other: within one window the lowest remaining is the truth.
        if reset > budget.reset + Duration::from_millis(500) || now >= budget.reset {
            budget.reset = reset;
            budget.remaining = remaining;
        } else {
            budget.remaining = budget.remaining.min(remaining);
        }
    }
}

impl Admission {
    /// What the answer announced of this bucket's budget, if anything.
    pub fn settle(self, announced: Option<Announced>) {
        if let Some(announced) = announced {
            self.throttle.record(self.bucket, announced);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // Never a second panic while a first one unwinds: the count is plain data either way.
        let mut budgets = self.throttle.budgets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(budget) = budget_of(&mut budgets, self.bucket) {
            budget.in_flight = budget.in_flight.saturating_sub(1);
        }
    }
}

/// How far ahead of its slot a request may go. Tokio's timers fire on whole milliseconds, so a
/// shorter wait would only be rounded up to the next tick; going early by less than that keeps
/// the rate (the next slot is still counted from this one) and saves a timer for each request
/// that comes a few microseconds before its slot (a quarter of them at a ceiling of 100,000 a
/// second, in a 30 k-user run). In any period, at most a millisecond's worth more goes.
const EARLY_BY_AT_MOST: Duration = Duration::from_millis(1);

/// Waits for `slot`, going up to `EARLY_BY_AT_MOST` before it; `now` is when the slot was taken.
async fn wait_for_slot(slot: Instant, now: Instant) {
    let go = slot.checked_sub(EARLY_BY_AT_MOST).unwrap_or(slot);
    if go > now {
        tokio::time::sleep_until(go).await;
    }
}

/// Spaces requests evenly so the provider never sees more than its budget.
struct Pacer {
    /// The interval at the configured rate: the shortest there is.
    floor: u64,
    /// The interval now, in nanoseconds: longer than `floor` after a provider that announces no
    /// budget throttled us, until it recovers.
    interval: AtomicU64,
    /// When the next request may go. A plain lock: held for a comparison, never across an await.
    next: std::sync::Mutex<Instant>,
    /// When the rate was last halved: the answers to requests sent before that are the same
    /// signal, not another one.
    slowed: std::sync::Mutex<Option<Instant>>,
}

/// The longest interval the pacer slows down to (one request a minute).
const SLOWEST_INTERVAL: u64 = 60_000_000_000;
/// Answers it takes, at most, to win back the configured rate after being throttled once.
const RECOVERY_ANSWERS: u64 = 100;

impl Pacer {
    fn new(requests_per_second: u32) -> Self {
        let floor = 1_000_000_000 / u64::from(requests_per_second.max(1));
        Self { floor, interval: AtomicU64::new(floor), next: std::sync::Mutex::new(Instant::now()), slowed: std::sync::Mutex::new(None) }
    }

    /// Each request has a slot `interval` after the one before (or now, if the schedule is
    /// behind) and goes at most `EARLY_BY_AT_MOST` before it. A wait that ends late (on the
    /// timer's tick) does not push the slots after it back.
    async fn wait_turn(&self) {
        let now = Instant::now();
        let interval = Duration::from_nanos(self.interval.load(Ordering::Relaxed));
        let slot = {
            let mut next = self.next.lock().unwrap();
            let slot = (*next).max(now);
            *next = slot + interval;
            slot
        };
        wait_for_slot(slot, now).await;
    }

    /// Throttled by a provider that says neither how long to wait nor what budget is left (a
    /// quota shared with other tools): half the rate, so the requests of all who share it fit.
    fn slow_down(&self, sent: Instant) {
        {
            let mut slowed = self.slowed.lock().unwrap();
            if slowed.is_some_and(|at| sent <= at) {
                return;
            }
            *slowed = Some(Instant::now());
        }
        let _ = self.interval.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| Some(i.saturating_mul(2).clamp(self.floor, SLOWEST_INTERVAL)));
    }

    /// An answer that was not throttled: the rate comes back in small steps (the rate rises by
    /// a hundredth of the configured rate each time), so it settles just under the quota.
    fn recover(&self) {
        let interval = self.interval.load(Ordering::Relaxed);
        if interval > self.floor {
            // Rate r = 1/i; r + floor_rate/RECOVERY_ANSWERS, as an interval.
            let faster = 1.0 / (1.0 / interval as f64 + 1.0 / (self.floor as f64 * RECOVERY_ANSWERS as f64));
            let _ = self.interval.compare_exchange(interval, (faster as u64).max(self.floor), Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// The budget a provider announced for one bucket in its `X-Rate-Limit-*` headers. Requests are
/// spread evenly over what is left of the window, so the recall uses the budget without hitting
/// the limit.
#[derive(Debug)]
struct AnnouncedBudget {
    remaining: u64,
    reset: Instant,
    /// Calls of each window left to the quota's other clients (the part of the announced limit
    /// past `budget_share`).
    reserve: u64,
    next_slot: Instant,
    in_flight: u64,
    /// Answers recorded so far: a call that waited for its slot checks the budget again if any came.
    answers: u64,
}

impl AnnouncedBudget {
    /// What this operator may still spend of the window.
    fn usable(&self) -> u64 {
        self.remaining.saturating_sub(self.reserve)
    }
}

fn budget_of<'a>(budgets: &'a mut [(&'static str, AnnouncedBudget)], bucket: &str) -> Option<&'a mut AnnouncedBudget> {
    budgets.iter_mut().find(|(b, _)| *b == bucket).map(|(_, budget)| budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_without_a_budget_the_pacer_halves_its_rate_once_per_signal_and_wins_it_back_slowly() {
        let pacer = Pacer::new(100);
        let interval = || pacer.interval.load(Ordering::Relaxed);
        let sent = Instant::now();
        pacer.slow_down(sent);
        // Answers to requests sent before the first slow-down are the same signal.
        pacer.slow_down(sent);
        assert_eq!(interval(), 20_000_000, "half of 100 a second");
        pacer.slow_down(Instant::now());
        assert_eq!(interval(), 40_000_000);
        for _ in 0..10 {
            pacer.recover();
        }
        assert!(interval() > 25_000_000 && interval() < 40_000_000, "ten answers win back a little: {}", interval());
        for _ in 0..200 {
            pacer.recover();
        }
        assert_eq!(interval(), 10_000_000, "and never more than the configured rate");
        for _ in 0..40 {
            pacer.slow_down(Instant::now());
        }
        assert_eq!(interval(), SLOWEST_INTERVAL);
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_requests_to_the_budget() {
        let pacer = Pacer::new(10);
        let start = Instant::now();
        for _ in 0..11 {
            pacer.wait_turn().await;
        }
        // 11 turns at 10 per second: the last one starts one second after the first, less the
        // millisecond a turn may go early.
        assert_eq!(start.elapsed(), Duration::from_millis(999));
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_lets_a_turn_go_up_to_a_millisecond_early_and_keeps_the_rate() {
        let pacer = Pacer::new(100_000);
        let start = Instant::now();
        // Slots 10 µs apart: the first 101 are within a millisecond of now, so none waits.
        for _ in 0..101 {
            pacer.wait_turn().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The last of 10,000 more has its slot at 101 ms: it goes no more than a millisecond early
        // (and a wait ends on a whole millisecond).
        for _ in 0..10_000 {
            pacer.wait_turn().await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(100) && elapsed <= Duration::from_millis(102), "{elapsed:?}");
    }

    /// What a backend that is not HTTP gets: at most `maxConcurrency` calls at once, at the
    /// configured pace, and an announced budget spread over its window.
    #[tokio::test(start_paused = true)]
    async fn any_backend_is_capped_paced_and_kept_to_an_announced_budget() {
        let throttle = Throttle::new(&Limits { requests_per_second: 1000, max_concurrency: 2, log_delay: None, ..Default::default() });
        let (now, peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let (throttle, now, peak) = (throttle.clone(), now.clone(), peak.clone());
                tokio::spawn(async move {
                    let admission = throttle.admit("query").await;
                    peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    admission.settle(None);
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "two calls in flight at most");

        // The provider says 4 calls are left in the next 2 seconds, and each answer one fewer:
        // they are spread over the window, and the call after them waits for it to reset.
        let start = Instant::now();
        let reset = start + Duration::from_secs(2);
        throttle.admit("query").await.settle(Some(Announced { remaining: 4, limit: None, reset }));
        for left in (0..4).rev() {
            throttle.admit("query").await.settle(Some(Announced { remaining: left, limit: None, reset }));
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(2), "4 calls spread over 2 s: {elapsed:?}");
        throttle.admit("query").await.settle(None);
        assert!(start.elapsed() >= Duration::from_millis(1999), "the budget is spent until the reset: {:?}", start.elapsed());
        // Another bucket is not held back by this one's budget.
        let other = Instant::now();
        throttle.admit("other").await.settle(None);
        assert!(other.elapsed() <= Duration::from_millis(1));
    }

    /// A provider's figures are untrusted: a budget of 2^32 calls or more neither panics nor stalls.
    #[tokio::test(start_paused = true)]
    async fn a_budget_past_u32_is_spread_as_finely_as_it_can_be() {
        let throttle = Throttle::new(&Limits { requests_per_second: 1000, max_concurrency: 4, log_delay: None, ..Default::default() });
        let start = Instant::now();
        throttle.admit("users").await.settle(Some(Announced { remaining: 1 << 32, limit: None, reset: start + Duration::from_secs(60) }));
        for _ in 0..3 {
            throttle.admit("users").await.settle(Some(Announced { remaining: u64::MAX, limit: None, reset: start + Duration::from_secs(60) }));
        }
        assert!(start.elapsed() < Duration::from_millis(10), "{:?}", start.elapsed());
    }

    /// A call waiting for its share goes only if the budget is still there when its turn comes:
    /// an answer that shows it spent meanwhile (another client drew on the same quota) holds it
    /// until the window resets.
    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_checks_the_budget_again_before_it_goes() {
        let throttle = Throttle::new(&Limits { requests_per_second: 1000, max_concurrency: 4, ..Limits::default() });
        let start = Instant::now();
        let reset = start + Duration::from_secs(10);
        throttle.admit("users").await.settle(Some(Announced { remaining: 2, limit: None, reset }));
        let first = throttle.admit("users").await;
        let waiting = tokio::spawn({
            let throttle = throttle.clone();
            async move {
                let second = throttle.admit("users").await;
                let at = start.elapsed();
                second.settle(None);
                at
            }
        });
        // A second into the wait, the first call's answer says nothing is left.
        tokio::time::sleep(Duration::from_secs(1)).await;
        first.settle(Some(Announced { remaining: 0, limit: None, reset }));
        let at = waiting.await.unwrap();
        assert!(at >= Duration::from_millis(9_999), "the second call waited for the reset, not its slot at 5 s: {at:?}");
    }

    /// Of a window of 100 calls with 40 left, a 75 % share leaves the last 25 to the quota's
    /// other clients: 15 calls go, spread over the window, and the next waits for the reset.
    #[tokio::test(start_paused = true)]
    async fn a_recall_uses_only_its_share_of_an_announced_limit() {
        let throttle = Throttle::new(&Limits { requests_per_second: 1000, max_concurrency: 1, budget_share: 75, ..Limits::default() });
        let start = Instant::now();
        let reset = start + Duration::from_secs(60);
        throttle.admit("users").await.settle(Some(Announced { remaining: 40, limit: Some(100), reset }));
        for left in (25..40).rev() {
            throttle.admit("users").await.settle(Some(Announced { remaining: left, limit: Some(100), reset }));
        }
        assert!(start.elapsed() < Duration::from_secs(60), "15 calls within the window: {:?}", start.elapsed());
        assert!(start.elapsed() >= Duration::from_secs(50), "spread over it: {:?}", start.elapsed());
        throttle.admit("users").await.settle(None);
        assert!(start.elapsed() >= Duration::from_millis(59_999), "the 16th waits for the reset: {:?}", start.elapsed());

        // All of it at 100 %; an announcement without a limit reserves nothing.
        for (share, limit) in [(100, Some(100)), (75, None)] {
            let throttle = Throttle::new(&Limits { requests_per_second: 1000, max_concurrency: 1, budget_share: share, ..Limits::default() });
            let start = Instant::now();
            let reset = start + Duration::from_secs(60);
            throttle.admit("users").await.settle(Some(Announced { remaining: 40, limit, reset }));
            for left in (0..39).rev() {
                throttle.admit("users").await.settle(Some(Announced { remaining: left, limit, reset }));
            }
            assert!(start.elapsed() < Duration::from_secs(60), "share {share}, limit {limit:?}: 40 calls in the window: {:?}", start.elapsed());
        }
    }

    /// A call given up while it waits or runs frees its place and its share of the budget.
    #[tokio::test(start_paused = true)]
    async fn a_call_given_up_frees_its_place() {
        let throttle = Throttle::new(&Limits { requests_per_second: 1000, max_concurrency: 1, log_delay: None, ..Default::default() });
        throttle.admit("query").await.settle(Some(Announced { remaining: 100, limit: None, reset: Instant::now() + Duration::from_secs(60) }));
        let held = throttle.admit("query").await;
        let waiting = tokio::time::timeout(Duration::from_millis(10), throttle.admit("query")).await;
        assert!(waiting.is_err(), "the only place is taken");
        drop(held);
        let next = tokio::time::timeout(Duration::from_secs(1), throttle.admit("query")).await;
        assert!(next.is_ok(), "a dropped admission frees its place");
        assert_eq!(budget_of(&mut throttle.budgets.lock().unwrap(), "query").unwrap().in_flight, 1, "only the call admitted now counts");
    }
}
