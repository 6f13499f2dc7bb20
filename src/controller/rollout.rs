//! A recall revoked in waves (`spec.rollout`): the plan recorded each user's place (privileged,
//! or an ordinal among the rest), so a wave is a set of places; each wave is one revocation pass
//! over the ledger that works only its users, judged when it ends (its share of failures) and
//! after the pause that follows (the anomalies flagged meanwhile, where asked). A wave past a
//! threshold pauses the rollout until the spec changes. Where the rollout stands is in status,
//! written before a wave's first user is touched, so a restart knows which users may have been.

use std::sync::Arc;

use kube::Api;
use tokio::sync::watch;

use super::Context;
use super::run::{BackendRun, Live, runner};
use crate::api::{MfaRecall, Rollout, RolloutStatus};
use crate::engine::{Exclusions, RolloutGate, RunEnd};
use crate::ledger::ResourceLedger;
use crate::{Error, Result};

/// How a rollout's run ended.
pub(super) enum Waves {
    /// Every wave revoked.
    Done,
    /// A wave passed a threshold: status.rollout says which and why.
    Paused,
    /// Asked to stop; resumable.
    Stopped,
}

/// Users per later wave on one backend: the count, or the share of the backend's planned users
/// who are not privileged (at least one).
fn wave_size(rollout: &Rollout, planned: i64) -> Result<u32> {
    let text = rollout.wave_size.trim();
    let size = match text.strip_suffix('%') {
        Some(share) => {
            let share: i64 = share.parse().map_err(|_| Error::Invalid(format!("rollout.waveSize {text:?} is not a share such as 10%")))?;
            (planned.max(0).saturating_mul(share.clamp(1, 100)) + 99) / 100
        }
        None => text.parse().map_err(|_| Error::Invalid(format!("rollout.waveSize {text:?} is not a count such as 500")))?,
    };
    Ok(u32::try_from(size.max(1)).unwrap_or(u32::MAX))
}

/// Why a finished wave pauses the rollout, if it does.
fn failed_too_many(rollout: &Rollout, wave: i32, done: i64, failed: i64) -> Option<String> {
    let allowed = i64::from(rollout.max_failed_percent);
    (done > 0 && failed * 100 > allowed * done && rollout.continue_after_wave.is_none_or(|w| w < wave))
        .then(|| format!("wave {wave}: {failed} of its {done} users failed, more than rollout.maxFailedPercent ({allowed} %); the audit trail names each (user.fail)"))
}

fn anomalies_too_many(rollout: &Rollout, wave: i32, flagged: i64) -> Option<String> {
    let allowed = i64::from(rollout.max_anomalies?);
    (flagged > allowed && rollout.continue_after_wave.is_none_or(|w| w < wave))
        .then(|| format!("the pause after wave {wave}: {flagged} anomalies flagged, more than rollout.maxAnomalies ({allowed}); review them (status.backends[].flagged, audit action anomaly.flagged)"))
}

/// Revokes the waves not yet done, from where status says the rollout stands.
pub(super) async fn waves(recall: &Arc<MfaRecall>, ctx: &Arc<Context>, live: &Arc<Live>, runs: &[BackendRun], ledger: &Arc<ResourceLedger>, exclusions: &[Exclusions], stop: watch::Receiver<bool>) -> Result<Waves> {
    let Some(rollout) = &recall.spec.rollout else { return Ok(Waves::Done) };
    let pause = crate::duration::WAVE_PAUSE.parse(&rollout.pause).map_err(Error::Invalid)?;
    // Each backend's wave size, from its plan.
    let planned = live.status(None).backends;
    let mut sizes = Vec::new();
    let mut waves = 1;
    for r in runs {
        let plan = planned.iter().find(|b| b.name == r.job.backend).and_then(|b| b.plan.clone()).unwrap_or_default();
        let others = plan.users - plan.privileged;
        let size = wave_size(rollout, others)?;
        waves = waves.max(1 + (others.max(0) + i64::from(size) - 1) / i64::from(size));
        sizes.push(size);
    }
    let waves = i32::try_from(waves).unwrap_or(i32::MAX);
    let mut state = live.base.lock().unwrap().rollout.clone().unwrap_or_default();
    state.waves = waves;
    let started_before = state.wave.and_then(|w| u32::try_from(w).ok());
    // Where to go on: a paused rollout goes past its wave once allowed to; one stopped mid-wave
    // does that wave again (its finished users are taken as finished).
    let mut next = state.wave.unwrap_or(0);
    if let Some(paused) = state.paused_at_wave {
        let counts = live.status(None).counts;
        let done = counts.invalidated + counts.failed - state.done_before_wave;
        let still = failed_too_many(rollout, paused, done, counts.failed - state.failed_before_wave).or_else(|| anomalies_too_many(rollout, paused, counts.anomalies - state.anomalies_before_wave));
        if let Some(why) = still {
            state.paused_because = why;
            live.base.lock().unwrap().rollout = Some(state);
            return Ok(Waves::Paused);
        }
        (state.paused_at_wave, state.paused_because) = (None, String::new());
        next = paused + 1;
    }
    let api: Api<MfaRecall> = Api::namespaced(ctx.client.clone(), &recall.metadata.namespace.clone().unwrap_or_default());
    let mut stop_wait = stop.clone();
    for wave in next..waves {
        // A wave taken up again after a stop keeps what it is judged against.
        if state.wave != Some(wave) {
            let counts = live.status(None).counts;
            (state.wave, state.done_before_wave, state.failed_before_wave, state.anomalies_before_wave) = (Some(wave), counts.invalidated + counts.failed, counts.failed, counts.anomalies);
        }
        live.base.lock().unwrap().rollout = Some(state.clone());
        // Recorded before the wave's first user is touched: a restart knows who may have been.
        live.flush(&api, recall, ctx).await?;
        // The last wave takes whoever is left, so no planned user is passed over.
        let through = if wave + 1 == waves { u32::MAX } else { u32::try_from(wave).unwrap_or(0) };
        let ends = futures::future::try_join_all(runs.iter().zip(exclusions).zip(&sizes).map(|((r, exclusions), size)| {
            let gate = RolloutGate { wave_size: *size, privileged_first: rollout.privileged_first, through, started_before, ..Default::default() };
            let job = crate::engine::RecallJob { rollout: Some(Arc::new(gate)), ..r.job.clone() };
            let restored = r.restored.lock().unwrap().take();
            let runner = runner(r, ledger, ctx, stop.clone());
            async move { runner.revoke_with(&job, exclusions, restored).await }
        }))
        .await?;
        if ends.contains(&RunEnd::Stopped) {
            return Ok(Waves::Stopped);
        }
        let counts = live.status(None).counts;
        if let Some(why) = failed_too_many(rollout, wave, counts.invalidated + counts.failed - state.done_before_wave, counts.failed - state.failed_before_wave) {
            return Ok(paused(live, state, wave, why));
        }
        if wave + 1 == waves {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop_wait.changed() => return Ok(Waves::Stopped),
        }
        if rollout.max_anomalies.is_some() {
            // The window is watched over the users revoked so far.
            for r in runs {
                r.progress.lock().unwrap().recalled_index = None;
                if runner(r, ledger, ctx, stop.clone()).check_re_enrollment(&r.job).await? == RunEnd::Stopped {
                    return Ok(Waves::Stopped);
                }
                r.progress.lock().unwrap().recalled_index = None;
            }
            let counts = live.status(None).counts;
            if let Some(why) = anomalies_too_many(rollout, wave, counts.anomalies - state.anomalies_before_wave) {
                return Ok(paused(live, state, wave, why));
            }
        }
    }
    live.base.lock().unwrap().rollout = Some(state);
    Ok(Waves::Done)
}

fn paused(live: &Live, mut state: RolloutStatus, wave: i32, why: String) -> Waves {
    (state.paused_at_wave, state.paused_because) = (Some(wave), why);
    live.base.lock().unwrap().rollout = Some(state);
    Waves::Paused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(size: &str, max_failed: i32, continue_after: Option<i32>) -> Rollout {
        serde_json::from_value(serde_json::json!({ "waveSize": size, "maxFailedPercent": max_failed, "continueAfterWave": continue_after })).unwrap()
    }

    #[test]
    fn a_wave_is_a_count_or_a_share_of_the_planned_users() {
        assert_eq!(wave_size(&rollout("500", 10, None), 10_000).unwrap(), 500);
        assert_eq!(wave_size(&rollout("10%", 10, None), 10_000).unwrap(), 1000);
        assert_eq!(wave_size(&rollout("10%", 10, None), 7).unwrap(), 1, "at least one");
        assert_eq!(wave_size(&rollout("33%", 10, None), 10).unwrap(), 4, "rounded up");
    }

    #[test]
    fn a_wave_with_too_many_failures_pauses_unless_let_through() {
        assert!(failed_too_many(&rollout("5", 10, None), 2, 10, 1).is_none(), "10 % is not more than 10 %");
        let why = failed_too_many(&rollout("5", 10, None), 2, 10, 2).unwrap();
        assert!(why.contains("wave 2: 2 of its 10 users failed"), "{why}");
        assert!(failed_too_many(&rollout("5", 10, Some(2)), 2, 10, 2).is_none(), "continueAfterWave lets that wave through");
        assert!(failed_too_many(&rollout("5", 10, Some(2)), 3, 10, 2).is_some(), "but not the next");
        assert!(failed_too_many(&rollout("5", 0, None), 1, 0, 0).is_none(), "an empty wave judges nothing");
    }
}
