//! The recall itself, independent of Kubernetes: page through the users in scope, record what
//! each holds, then per user end sessions, delete the recorded factors and require enrollment,
//! with bounded concurrency. Provider pacing and retries live in `backends::http`; durability in
//! `ledger`; every action is audited before it is counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::watch;

use crate::Result;
use crate::api::{FactorKind, RecallCounts};
use crate::audit::{AuditEvent, AuditLog};
use crate::backends::{IdentityProvider, ProviderError, RevokeOutcome, ScopeSelector, UserRef};
use crate::ledger::{self, LedgerStore, Segment, UserRecord, UserState};

/// What to recall on one backend.
#[derive(Clone, Debug)]
pub struct RecallJob {
    /// `namespace/name` of the MfaRecall.
    pub recall: String,
    /// IdentityBackend name.
    pub backend: String,
    pub scope: ScopeSelector,
    pub exclude_users: Vec<String>,
    pub exclude_groups: Vec<String>,
    pub kinds: Vec<FactorKind>,
    pub revoke_sessions: bool,
    pub cutoff: jiff::Timestamp,
    /// Users worked on at once.
    pub concurrency: usize,
}

/// Live counts of one backend, read by the status writer.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub counts: RecallCounts,
    /// Every user in scope has been listed.
    pub listed: bool,
}

pub type SharedProgress = Arc<Mutex<Progress>>;

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RunEnd {
    Finished,
    /// Asked to stop (suspend, cancel, delete, shutdown); resumable.
    Stopped,
}

/// Everything a run needs besides the job.
pub struct Runner<'a> {
    pub provider: &'a dyn IdentityProvider,
    pub ledger: &'a dyn LedgerStore,
    pub audit: &'a AuditLog,
    pub progress: SharedProgress,
    pub stop: watch::Receiver<bool>,
}

impl Runner<'_> {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn audit(&self, job: &RecallJob, user: Option<&UserRef>, action: &str, outcome: &str, f: impl FnOnce(&mut AuditEvent)) -> Result<()> {
        let mut event = AuditEvent {
            recall: job.recall.clone(),
            backend: Some(job.backend.clone()),
            user: user.map(|u| u.username.clone()),
            action: action.to_string(),
            outcome: outcome.to_string(),
            ..Default::default()
        };
        f(&mut event);
        self.audit.record(event).await?;
        Ok(())
    }

    /// Rebuilds the counts from the ledger; returns the segment to continue with and the cursor.
    pub async fn restore(&self, job: &RecallJob) -> Result<(Option<Segment>, Option<String>, u32, bool)> {
        let mut counts = RecallCounts::default();
        let mut unfinished = None;
        let mut cursor = None;
        let mut next_index = 0;
        let mut listed = false;
        for index in self.ledger.segments(&job.backend).await? {
            let segment = self.ledger.read(&job.backend, index).await?;
            segment.add_counts(&mut counts);
            cursor = segment.next_cursor.clone();
            listed = segment.next_cursor.is_none();
            next_index = index + 1;
            if !segment.complete {
                unfinished = Some(segment);
            }
        }
        let mut progress = self.progress.lock().unwrap();
        progress.counts = counts;
        progress.listed = listed;
        Ok((unfinished, cursor, next_index, listed))
    }

    /// Invalidates every user in scope on this backend, resuming from the ledger.
    pub async fn revoke(&self, job: &RecallJob) -> Result<RunEnd> {
        let (unfinished, mut cursor, mut next_index, mut listed) = self.restore(job).await?;
        if let Some(segment) = unfinished
            && self.work_segment(job, segment, false).await? == RunEnd::Stopped
        {
            return Ok(RunEnd::Stopped);
        }
        let excluded = if listed { HashMap::new() } else { self.exclusions(job).await? };
        while !listed {
            if self.stopping() {
                return Ok(RunEnd::Stopped);
            }
            let page = self.provider.list_users(&job.scope, cursor.as_deref()).await?;
            listed = page.next.is_none();
            let users = page
                .users
                .into_iter()
                .map(|user| {
                    let mut record = UserRecord::planned(user);
                    if let Some(rule) = excluded.get(&record.user.username) {
                        record.state = UserState::Excluded;
                        record.note = Some(rule.clone());
                    }
                    record
                })
                .collect();
            let segment = Segment { backend: job.backend.clone(), index: next_index, next_cursor: page.next.clone(), complete: false, users };
            {
                let mut progress = self.progress.lock().unwrap();
                progress.counts.targeted += segment.users.len() as i64;
            }
            cursor = page.next;
            next_index += 1;
            if self.work_segment(job, segment, true).await? == RunEnd::Stopped {
                return Ok(RunEnd::Stopped);
            }
        }
        self.progress.lock().unwrap().listed = true;
        Ok(RunEnd::Finished)
    }

    /// Usernames to leave alone, with the rule that excludes each.
    async fn exclusions(&self, job: &RecallJob) -> Result<HashMap<String, String>> {
        let mut excluded: HashMap<String, String> = job.exclude_users.iter().map(|u| (u.clone(), "exclude.users".to_string())).collect();
        for group in &job.exclude_groups {
            for member in self.provider.group_members(group).await? {
                excluded.entry(member.username).or_insert_with(|| format!("exclude.groups: {group}"));
            }
        }
        Ok(excluded)
    }

    /// Snapshots and records a fresh segment, then works on its users. A resumed segment was
    /// recorded before the crash, so it goes straight to work on the users still planned.
    async fn work_segment(&self, job: &RecallJob, mut segment: Segment, fresh: bool) -> Result<RunEnd> {
        // 1. Record what each planned user holds, before touching anything (write-ahead).
        if fresh {
            let needs_snapshot: Vec<usize> =
                segment.users.iter().enumerate().filter(|(_, r)| r.state == UserState::Planned).map(|(i, _)| i).collect();
            let snapshots: Vec<(usize, std::result::Result<_, ProviderError>)> = futures::stream::iter(needs_snapshot)
                .map(|i| {
                    let user = segment.users[i].user.clone();
                    async move { (i, self.provider.snapshot(&user, &job.kinds, job.cutoff).await) }
                })
                .buffer_unordered(job.concurrency)
                .collect()
                .await;
            for (i, snapshot) in snapshots {
                match snapshot {
                    Ok(mut s) => {
                        // Sessions left alone are not counted as ended.
                        if !job.revoke_sessions {
                            s.sessions = 0;
                            s.session_handles.clear();
                        }
                        segment.users[i].snapshot = Some(s);
                    }
                    Err(e) => {
                        segment.users[i].state = UserState::Failed;
                        segment.users[i].note = Some(e.to_string());
                    }
                }
            }
            for record in segment.users.iter().filter(|r| r.state != UserState::Planned) {
                let (action, outcome) = if record.state == UserState::Excluded { ("user.exclude", "excluded") } else { ("user.fail", "failed") };
                self.audit(job, Some(&record.user), action, outcome, |e| e.detail = record.note.clone()).await?;
            }
            self.ledger.write(&segment).await?;
            let mut progress = self.progress.lock().unwrap();
            for record in segment.users.iter().filter(|r| r.state != UserState::Planned) {
                count_finished(record, &mut progress.counts);
            }
        }

        // 2. Work on each planned user; results are audited per action, counted per user.
        let planned: Vec<usize> = segment.users.iter().enumerate().filter(|(_, r)| r.state == UserState::Planned).map(|(i, _)| i).collect();
        // Each user is counted the moment its steps are audited, so status counts up user by user.
        let results: Vec<Result<(usize, UserRecord)>> = futures::stream::iter(planned)
            .take_while(|_| std::future::ready(!self.stopping()))
            .map(|i| {
                let mut record = segment.users[i].clone();
                async move {
                    match self.invalidate_user(job, &record, !fresh).await? {
                        Ok(()) => record.state = UserState::Invalidated,
                        Err(e) => {
                            record.state = UserState::Failed;
                            record.note = Some(e.to_string());
                        }
                    }
                    count_finished(&record, &mut self.progress.lock().unwrap().counts);
                    Ok((i, record))
                }
            })
            .buffer_unordered(job.concurrency)
            .collect()
            .await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok((i, record)) => segment.users[i] = record,
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        // Record what finished even when the operator itself failed, then report the failure.
        segment.complete = segment.users.iter().all(|r| r.state != UserState::Planned);
        self.ledger.write(&segment).await?;
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(if segment.complete { RunEnd::Finished } else { RunEnd::Stopped })
    }

    /// One user's ordered steps: sessions, then recorded factors, then required enrollment.
    /// The outer error is the operator's own (audit or ledger); the inner one the provider's.
    /// `resumed`: the user may have been worked on before a crash and may already have re-enrolled.
    async fn invalidate_user(&self, job: &RecallJob, record: &UserRecord, resumed: bool) -> Result<std::result::Result<(), ProviderError>> {
        let user = &record.user;
        let snapshot = record.snapshot.clone().unwrap_or_default();
        let outcome = async {
            if job.revoke_sessions {
                self.provider.revoke_sessions(user, &snapshot).await?;
                self.audit(job, Some(user), "session.revoke", "revoked", |e| e.detail = Some(format!("{} sessions or offline grants", snapshot.sessions)))
                    .await?;
            }
            for factor in &snapshot.factors {
                let outcome = self.provider.revoke_factor(user, factor).await?;
                let outcome = match outcome {
                    RevokeOutcome::Revoked => "revoked",
                    RevokeOutcome::AlreadyGone => "alreadyGone",
                };
                self.audit(job, Some(user), "factor.revoke", outcome, |e| {
                    e.factor_kind = Some(factor.kind.as_str().to_string());
                    e.factor_id = Some(factor.id.clone());
                })
                .await?;
            }
            // A resumed user who already enrolled anew must not be asked to enroll yet again.
            let already = if resumed && !snapshot.factors.is_empty() { self.provider.enrolled_since(user, job.cutoff).await? } else { None };
            if let Some(enrollment) = already {
                self.audit(job, Some(user), "enrollment.require", "skipped", |e| {
                    e.detail = Some(format!("already re-enrolled {} at {}", enrollment.kind.as_str(), enrollment.at))
                })
                .await?;
            } else if !snapshot.factors.is_empty() {
                self.provider.require_enrollment(user, &snapshot.factors).await?;
                let kinds: Vec<&str> = snapshot.factors.iter().map(|f| f.kind.as_str()).collect();
                self.audit(job, Some(user), "enrollment.require", "done", |e| e.detail = Some(kinds.join(","))).await?;
            }
            Ok::<(), StepError>(())
        }
        .await;
        match outcome {
            Ok(()) => Ok(Ok(())),
            Err(StepError::Operator(e)) => Err(e),
            Err(StepError::Provider(e)) => {
                self.audit(job, Some(user), "user.fail", "failed", |ev| ev.detail = Some(e.to_string())).await?;
                Ok(Err(e))
            }
        }
    }

    /// One pass over invalidated users who have not re-enrolled: records those who have.
    pub async fn check_re_enrollment(&self, job: &RecallJob) -> Result<RunEnd> {
        for index in self.ledger.segments(&job.backend).await? {
            if self.stopping() {
                return Ok(RunEnd::Stopped);
            }
            let mut segment = self.ledger.read(&job.backend, index).await?;
            let waiting: Vec<usize> = segment.users.iter().enumerate().filter(|(_, r)| r.awaits_re_enrollment()).map(|(i, _)| i).collect();
            let seen: Vec<(usize, std::result::Result<_, ProviderError>)> = futures::stream::iter(waiting)
                .map(|i| {
                    let user = segment.users[i].user.clone();
                    async move { (i, self.provider.enrolled_since(&user, job.cutoff).await) }
                })
                .buffer_unordered(job.concurrency)
                .collect()
                .await;
            let mut changed = Vec::new();
            for (i, result) in seen {
                match result {
                    Ok(Some(enrollment)) => {
                        let user = segment.users[i].user.clone();
                        self.audit(job, Some(&user), "reenrollment.seen", "done", |e| {
                            e.factor_kind = Some(enrollment.kind.as_str().to_string());
                            // Where from, as the provider logged it: what anomaly review starts with.
                            e.detail = Some(match &enrollment.origin {
                                Some(origin) => format!("enrolled at {} from {origin}", enrollment.at),
                                None => format!("enrolled at {}", enrollment.at),
                            });
                        })
                        .await?;
                        segment.users[i].re_enrolled = Some(enrollment);
                        changed.push(i);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(recall = %job.recall, backend = %job.backend, error = %e, "re-enrollment check failed; will retry"),
                }
            }
            if !changed.is_empty() {
                self.ledger.write(&segment).await?;
                let mut progress = self.progress.lock().unwrap();
                progress.counts.re_enrolled += changed.len() as i64;
                progress.counts.pending -= changed.len() as i64;
            }
        }
        Ok(RunEnd::Finished)
    }

    /// At the deadline: disables every user who lost a factor and has not re-enrolled.
    pub async fn disable_pending(&self, job: &RecallJob) -> Result<RunEnd> {
        for index in self.ledger.segments(&job.backend).await? {
            if self.stopping() {
                return Ok(RunEnd::Stopped);
            }
            let mut segment = self.ledger.read(&job.backend, index).await?;
            let mut changed = 0;
            for i in 0..segment.users.len() {
                if !segment.users[i].awaits_re_enrollment() || segment.users[i].disabled {
                    continue;
                }
                let user = segment.users[i].user.clone();
                match self.provider.disable_user(&user).await {
                    Ok(()) => {
                        self.audit(job, Some(&user), "user.disable", "done", |e| e.detail = Some("re-enrollment deadline passed".into())).await?;
                        segment.users[i].disabled = true;
                        changed += 1;
                    }
                    Err(e) => self.audit(job, Some(&user), "user.disable", "failed", |ev| ev.detail = Some(e.to_string())).await?,
                }
            }
            if changed > 0 {
                self.ledger.write(&segment).await?;
                self.progress.lock().unwrap().counts.disabled += changed;
            }
        }
        Ok(RunEnd::Finished)
    }
}

/// A user finished in this run: `targeted` was counted when the page was listed.
fn count_finished(record: &UserRecord, counts: &mut RecallCounts) {
    let mut single = RecallCounts::default();
    ledger::add_user(record, &mut single);
    single.targeted = 0;
    counts.add(&single);
}

/// A step fails either at the provider (the user is reported failed) or in the operator itself,
/// such as an unwritable audit trail (the recall stops rather than act unaudited).
enum StepError {
    Provider(ProviderError),
    Operator(crate::Error),
}

impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> Self {
        StepError::Provider(e)
    }
}

impl From<crate::Error> for StepError {
    fn from(e: crate::Error) -> Self {
        StepError::Operator(e)
    }
}

#[cfg(test)]
mod tests;
