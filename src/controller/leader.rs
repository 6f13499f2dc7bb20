//! Leader election on a coordination.k8s.io Lease, so that of several replicas exactly one works
//! on recalls. The holder renews the lease every `RETRY`; a standby takes it over once it has not
//! seen the lease change for its whole duration. A holder that cannot renew within `RENEW_DEADLINE`
//! (less than the duration) gives up first, so two replicas never act at once. Writes use the
//! lease's resourceVersion: of two replicas racing for it, the apiserver lets exactly one win.
//!
//! Expiry is timed on this replica's own monotonic clock, from when it saw the holder or renewTime
//! change, as client-go does: the renewTime another machine wrote is compared only for equality,
//! so clocks that disagree between machines (or a wall clock that jumps) cannot end a lease early.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// How often the holder renews and a standby retries.
const RETRY: Duration = Duration::from_secs(2);

/// One lease and who we are.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The lease as this replica last saw it change.
    observed: Mutex<Option<Observed>>,
}

/// What of a lease tells whether its holder is still renewing it.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: String,
    renew_time: Option<jiff::Timestamp>,
    duration: Duration,
}

/// A record and when, on this replica's monotonic clock, it was first seen as it is.
#[derive(Clone, Debug)]
struct Observed {
    record: Record,
    at: Instant,
}

/// `last` after reading `record` at `now`: the same record keeps the time it was first seen.
fn observe(last: Option<Observed>, record: Record, now: Instant) -> Observed {
    match last {
        Some(last) if last.record == record => last,
        _ => Observed { record, at: now },
    }
}

/// Whether the lease may be taken at `now`: nobody holds it, or its record has not changed for
/// its whole duration as seen here.
fn free(observed: &Observed, now: Instant) -> bool {
    observed.record.holder.is_empty() || now.saturating_duration_since(observed.at) >= observed.record.duration
}

impl LeaseLock {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.into(), identity: identity.into(), duration, observed: Mutex::new(None) }
    }

    /// Renewals may fail for this long before the holder stops: two thirds of the lease, so it
    /// has stopped before anyone else may take over.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// One attempt to take the lease or renew it. Ok(false): someone else holds it.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = jiff::Timestamp::now();
        let seconds = self.duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = Record {
            holder: holder.clone(),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(seconds).max(1) as u64),
        };
        let observed = {
            let mut last = self.observed.lock().unwrap();
            let observed = observe(last.take(), record, Instant::now());
            *last = Some(observed.clone());
            observed
        };
        if holder != self.identity && !free(&observed, Instant::now()) {
            return Ok(false);
        }
        if holder != self.identity {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        // The resourceVersion read above makes this a compare-and-swap.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this instance holds the lease, or `cancel` resolves (then None).
    pub async fn acquire(&self, mut cancel: watch::Receiver<bool>) -> Option<()> {
        let mut announced = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return Some(());
                }
                Ok(false) if !announced => {
                    tracing::info!(lease = %self.name, "standing by: another replica holds the lease");
                    announced = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "leader election: apiserver error; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = cancel.wait_for(|c| *c) => return None,
            }
        }
    }

    /// Renews until `stop` flips; sends on `lost` when renewal failed past the deadline or
    /// another replica took the lease. Then the caller must stop working at once.
    pub async fn keep(&self, mut stop: watch::Receiver<bool>, lost: watch::Sender<bool>) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "another replica holds the lease now; stopping work");
                    let _ = lost.send(true);
                    return;
                }
                Err(e) if last_renewed.elapsed() >= self.renew_deadline() => {
                    tracing::error!(lease = %self.name, error = %e, "could not renew the lease in time; stopping work");
                    let _ = lost.send(true);
                    return;
                }
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "lease renewal failed; retrying"),
            }
        }
    }

    /// Hands the lease back on a clean shutdown, so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.name, "released the lease"),
            Err(e) => tracing::warn!(lease = %self.name, error = %e, "could not release the lease; a standby takes over when it expires"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str, renewed_ms: i64) -> Record {
        Record { holder: holder.into(), renew_time: Some(jiff::Timestamp::from_millisecond(renewed_ms).unwrap()), duration: Duration::from_secs(6) }
    }

    #[test]
    fn a_lease_expires_a_full_duration_after_this_replica_saw_it_change() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        // Renewed long ago by another machine's clock: still timed from when it was first seen.
        let seen = observe(None, record("a", 0), at(0));
        assert!(!free(&seen, at(5)));
        assert!(free(&seen, at(6)));
        // Read again unchanged: the first sighting counts, not the latest read.
        let seen = observe(Some(seen), record("a", 0), at(4));
        assert_eq!(seen.at, at(0));
        assert!(free(&seen, at(6)));
        // Renewed (renewTime changed, whatever its value, even one behind ours): timed afresh.
        let seen = observe(Some(seen), record("a", -60_000), at(5));
        assert!(!free(&seen, at(10)));
        assert!(free(&seen, at(11)));
        // Another holder: timed afresh too.
        let seen = observe(Some(seen), record("b", -60_000), at(7));
        assert!(!free(&seen, at(12)));
        assert!(free(&seen, at(13)));
    }

    #[test]
    fn a_lease_renewed_far_in_the_future_by_anothers_clock_still_expires_and_a_released_one_is_free_at_once() {
        let start = Instant::now();
        let far_future = jiff::Timestamp::now().as_millisecond() + 365 * 24 * 3600 * 1000;
        let seen = observe(None, record("a", far_future), start);
        assert!(free(&seen, start + Duration::from_secs(6)), "a clock ahead of ours cannot keep the lease");
        let released = observe(Some(seen), Record { holder: String::new(), renew_time: None, duration: Duration::from_secs(6) }, start);
        assert!(free(&released, start));
    }
}
