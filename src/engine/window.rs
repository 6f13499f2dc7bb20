//! The re-enrollment window, watched from the provider's event log: one read of the whole
//! organisation's new events per check, whatever the number of pending users; a user the log
//! names is confirmed with one read of their own; the anomaly rules judge what recalled users
//! did; and a slow sweep asks about a few pending users per check, for what a log with gaps missed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::{RecallJob, RunEnd, Runner};
use crate::Result;
use crate::api::{AnomalyAction, Clearance, FactorKind};
use crate::audit::{Action, Outcome};
use crate::backends::{ErrorKind, FactorRef, ProviderError, RevokeOutcome, UserRef};
use crate::ledger::{Quarantine, Segment, UserRecord, UserState};
use crate::watch::rules::{self, Judged};
use crate::watch::{EventKind, EventQuery, Flag, IdentityEvent, NotMe, Recent, Rule, Thresholds, WatchState, clearance_keys};

/// How a recall watches its window, from its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSettings {
    /// When revocation began: the stream is read from here (None: from the cutoff).
    pub started: Option<jiff::Timestamp>,
    pub thresholds: Thresholds,
    /// How far before the cutoff a user's baseline reaches.
    pub baseline: jiff::SignedDuration,
    /// Pending users the slow sweep asks about per check; 0 for none.
    pub sweep_per_check: usize,
    /// What a flag does to the user.
    pub action: AnomalyAction,
    /// Quarantined users people have cleared (spec.clearances).
    pub clearances: Vec<Clearance>,
    /// What the recall's approved MfaBypasses issued on this backend, so its own are not flagged.
    pub own_bypasses: Vec<crate::watch::OwnBypass>,
}

impl Default for WindowSettings {
    fn default() -> Self {
        Self {
            started: None,
            thresholds: Thresholds::default(),
            baseline: jiff::SignedDuration::from_hours(30 * 24),
            sweep_per_check: crate::api::DEFAULT_SWEEP_PER_CHECK as usize,
            action: AnomalyAction::Flag,
            clearances: Vec::new(),
            own_bypasses: Vec::new(),
        }
    }
}

/// How far past the moment of a quarantine its snapshot's cutoff lies: every factor the provider
/// holds then counts as older, whatever the provider's clock says.
const QUARANTINE_CLOCK_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// Notices sent at once, after a check has kept what it found.
const NOTICES_IN_FLIGHT: usize = 8;
/// Pages of the stream one check reads at most: a check far behind catches up over the next ones.
const MAX_PAGES_PER_CHECK: usize = 50;
/// Pages of one user's own events read for the rules (their baseline and what came just before).
const MAX_HISTORY_PAGES: usize = 5;

/// Where each recalled user is in the ledger, by a hash of their id: built once per process from
/// the ledger, so a check reads only the segments of users its events name. A hash that collides
/// costs a segment read that finds nobody.
#[derive(Debug, Default)]
pub struct RecalledIndex(Vec<(u64, u32)>);

impl RecalledIndex {
    fn key(id: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        hasher.finish()
    }

    fn segments_of(&self, id: &str) -> impl Iterator<Item = u32> + '_ {
        let key = Self::key(id);
        let start = self.0.partition_point(|(k, _)| *k < key);
        self.0[start..].iter().take_while(move |(k, _)| *k == key).map(|(_, s)| *s)
    }
}

impl Runner {
    /// One check of the window on a backend whose provider serves its log as a stream.
    pub(super) async fn watch_window(&self, job: &RecallJob) -> Result<RunEnd> {
        let from = job.window.started.unwrap_or(job.cutoff);
        let mut state = self.ledger.read_watch(&job.backend).await?.unwrap_or_else(|| WatchState::new(&job.backend, from));
        let index = self.recalled_index(job).await?;
        let (events, cursor) = match self.read_stream(job, &state, from).await {
            Ok(read) => read,
            // The log cannot be read at all with these credentials or settings: ask every pending
            // user, as for a provider without a stream, until it can.
            Err(e) => {
                tracing::warn!(recall = %job.recall, backend = %job.backend, error = %e, "event log refused; asking each pending user instead");
                return self.poll_pending(job).await;
            }
        };
        let mut touched: BTreeMap<u32, Segment> = BTreeMap::new();
        let mut tally = Tally::default();
        self.apply_clearances(job, &mut state, &mut touched, &mut tally).await?;
        // The enrollments remembered from earlier reads, then this read's in the log's order, all
        // known before anyone is judged; the rules that compare users see those before the one
        // judged, so the order users are taken in (the log's first mention, which may be a
        // removal the recall itself logged) changes no verdict. Kept whole while judging: the
        // cap on what is remembered applies once the read is judged.
        let mut known: Vec<Recent> = state.recent.clone();
        let mut ids: HashSet<String> = known.iter().map(|r| r.event_id.clone()).collect();
        for event in events.iter().filter(|e| e.kind == EventKind::FactorEnrolled) {
            if ids.insert(event.id.clone()) {
                known.push(self.recent(event));
            }
        }
        let new_from = state.recent.len();
        // Users in the order the log first names them (events of one second keep the log's order).
        let mut named: HashMap<&str, Vec<&IdentityEvent>> = HashMap::new();
        let mut users: Vec<&str> = Vec::new();
        for event in &events {
            let seen = named.entry(event.user_id.as_str()).or_default();
            if seen.is_empty() {
                users.push(event.user_id.as_str());
            }
            seen.push(event);
        }
        for user_id in users {
            if self.stopping() {
                return Ok(RunEnd::Stopped);
            }
            let user_events = &named[user_id];
            let mut found = None;
            for segment_index in index.segments_of(user_id) {
                let segment = match touched.entry(segment_index) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => v.insert(self.ledger.read(&job.backend, segment_index).await?),
                };
                if let Some(i) = segment.users.iter().position(|r| r.user.id == user_id && r.state == UserState::Invalidated) {
                    found = Some((segment_index, i));
                    break;
                }
            }
            let Some((segment_index, i)) = found else {
                // Not recalled here: only its enrollments mattered, to the rules that compare users.
                continue;
            };
            let segment = touched.get_mut(&segment_index).expect("read above");
            let enrolled = user_events.iter().find(|e| e.kind == EventKind::FactorEnrolled).copied();
            if enrolled.is_some() && segment.users[i].awaits_re_enrollment() {
                self.confirm(job, segment, i, enrolled, &mut tally).await?;
            }
            self.judge(job, &known, segment, i, user_events, &mut tally).await?;
        }
        for recent in known.drain(new_from..) {
            state.remember(recent);
        }
        self.sweep(job, &mut state, &mut touched, &mut tally).await?;
        let mut changed: Vec<Segment> = touched.into_values().collect();
        changed.retain(|s| s.users.iter().any(|r| r.state == UserState::Invalidated));
        for segment in &changed {
            self.persist(segment).await?;
        }
        if cursor.is_some() {
            state.cursor = cursor;
        }
        state.events_read += events.len() as u64;
        self.ledger.write_watch(&state).await?;
        let to_notify = std::mem::take(&mut tally.to_notify);
        self.publish(tally);
        // Once what the check found is kept: a slow mail server delays nobody's count or flag.
        futures::stream::iter(to_notify)
            .map(|(user, enrollment)| async move { self.notify(job, &user, &enrollment).await })
            .buffer_unordered(NOTICES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        self.audit.sync().await?;
        Ok(RunEnd::Finished)
    }

    /// The stream's new events since the state's cursor, and the cursor after them. A page that
    /// cannot be read ends the reading for this check; what was read before it is dealt with.
    /// Err when the first page is refused for credentials or configuration (not a passing fault).
    async fn read_stream(&self, job: &RecallJob, state: &WatchState, from: jiff::Timestamp) -> std::result::Result<(Vec<IdentityEvent>, Option<String>), ProviderError> {
        let (mut events, mut cursor) = (Vec::new(), state.cursor.clone());
        let mut skipped = 0u64;
        for _ in 0..MAX_PAGES_PER_CHECK {
            let query = EventQuery { cursor: cursor.as_deref(), from, until: None, user: None };
            match self.provider.read_events(&query).await {
                Ok(page) => {
                    for why in &page.skipped {
                        tracing::warn!(recall = %job.recall, backend = %job.backend, %why, "log entry skipped");
                    }
                    skipped += page.skipped.len() as u64;
                    events.extend(page.events);
                    if page.cursor.is_some() {
                        cursor = page.cursor;
                    }
                    if !page.more {
                        break;
                    }
                }
                Err(e) if events.is_empty() && matches!(e.kind(), ErrorKind::Auth | ErrorKind::Config) => return Err(e),
                Err(e) => {
                    tracing::warn!(recall = %job.recall, backend = %job.backend, error = %e, "event log unreadable; will read on from here at the next check");
                    break;
                }
            }
        }
        self.progress.lock().unwrap().events_skipped += skipped;
        // Some logs list newest first (Graph, the Reports API): the rules judge in time order.
        events.sort_by_key(|e| e.at);
        Ok((events, cursor))
    }

    /// Confirms with the provider that the user named by an enrollment event holds a factor
    /// newer than the cutoff (or than the recall's end of their enrollments), and records it;
    /// where from is the stream's word, where the provider's answer does not say.
    async fn confirm(&self, job: &RecallJob, segment: &mut Segment, i: usize, seen: Option<&IdentityEvent>, tally: &mut Tally) -> Result<()> {
        let record = &segment.users[i];
        let since = record.re_enrollment_counts_from(job.cutoff);
        match self.provider.holds_factor_since(&record.user, since).await {
            Ok(Some(mut enrollment)) => {
                if enrollment.origin.is_none() {
                    enrollment.origin = seen.map(|e| e.client.to_origin());
                }
                let user = record.user.clone();
                self.audit_enrollment(job, &user, &enrollment)?;
                tally.to_notify.push((user.clone(), enrollment.clone()));
                segment.users[i].re_enrolled = Some(enrollment);
                tally.re_enrolled += 1;
                tally.pending -= 1;
            }
            Ok(None) => {}
            Err(e) => warn_check_failed(job, &e),
        }
        Ok(())
    }

    /// Tells the user of their new factor through the recall's sinks; each delivery is audited,
    /// and one that fails does not stop the watch.
    async fn notify(&self, job: &RecallJob, user: &UserRef, enrollment: &crate::backends::Enrollment) -> Result<()> {
        let Some(notices) = job.notices.as_ref().filter(|n| !n.is_empty()) else { return Ok(()) };
        let address = match self.provider.address(user).await {
            Ok(Some(address)) => address,
            Ok(None) => return self.audit(job, Some(user), Action::NoticeSend, Outcome::Skipped, |e| e.detail = Some("no address on file".into())),
            Err(e) => return self.audit(job, Some(user), Action::NoticeSend, Outcome::Failed, |ev| ev.detail = Some(format!("address on file unreadable: {e}"))),
        };
        let notice = crate::notify::Notice {
            type_: "factor.enrolled",
            recall: job.recall.clone(),
            backend: job.backend.clone(),
            user: user.username.clone(),
            address,
            factor_kind: enrollment.kind.into(),
            at: enrollment.at,
            // Address and place only: a user agent is whatever the client sent, and an attacker's
            // words have no place in a message from the security team.
            origin: enrollment.origin.as_ref().map(|o| crate::backends::EnrollmentOrigin { user_agent: None, ..o.clone() }.to_string()),
            not_me_url: notices.not_me.as_ref().map(|links| links.link(&job.recall, &job.backend, &user.id)),
        };
        for (sink, sent) in notices.send(&notice).await {
            let (outcome, detail) = match sent {
                Ok(()) => (Outcome::Done, format!("{sink}: told of the new {} factor", notice.factor_kind.as_str())),
                Err(why) => (Outcome::Failed, format!("{sink}: {why}")),
            };
            self.audit(job, Some(user), Action::NoticeSend, outcome, |e| e.detail = Some(detail))?;
        }
        Ok(())
    }

    /// Runs the rules over the user's events of this read; new flags go to the trail and the
    /// user's record.
    async fn judge(&self, job: &RecallJob, known: &[Recent], segment: &mut Segment, i: usize, events: &[&IdentityEvent], tally: &mut Tally) -> Result<()> {
        let mut history: Option<Vec<IdentityEvent>> = None;
        for event in events {
            let enrolled = event.kind == EventKind::FactorEnrolled;
            if enrolled && history.is_none() {
                // An event already flagged (say, an attacker's enrollment that was quarantined)
                // tells nothing of where the user is: the next enrollment is not judged against it.
                let mut read = self.history(job, segment, i, event.at).await;
                read.retain(|e| !segment.users[i].flags.iter().any(|f| f.event_id == e.id));
                history = Some(read);
            }
            let address = event.client.ip.map(|ip| self.ledger.pseudonym(&ip.to_string()));
            let device = event.device.as_ref().map(|d| self.ledger.pseudonym(d.expose()));
            let before = known.iter().position(|r| r.event_id == event.id).unwrap_or(known.len());
            let judged = Judged { event, address: address.as_deref(), device: device.as_deref(), history: history.as_deref().unwrap_or_default(), cutoff: job.cutoff, recent: &known[..before], own_bypasses: &job.window.own_bypasses };
            let findings = rules::judge(&judged, &job.window.thresholds);
            let record = &mut segment.users[i];
            let mut tripped: Vec<Rule> = Vec::new();
            for finding in findings {
                if record.flags.iter().any(|f| f.rule == finding.rule && f.event_id == event.id) {
                    continue;
                }
                let user = record.user.clone();
                self.audit(job, Some(&user), Action::AnomalyFlagged, Outcome::Done, |e| {
                    e.factor_kind = event.factor.map(Into::into);
                    e.detail = Some(format!("{}: {}; events {}", finding.rule.as_str(), finding.evidence, finding.event_ids.join(", ")));
                })?;
                record.flags.push(Flag { rule: finding.rule, event_id: event.id.clone(), at: event.at });
                tally.flags += 1;
                tally.flagged.push(format!("{}: {}", user.username, finding.rule.as_str()));
                tripped.push(finding.rule);
            }
            let held = record.quarantine.as_ref().is_some_and(Quarantine::holds);
            if job.window.action == AnomalyAction::Quarantine && !tripped.is_empty() && !held {
                self.quarantine(job, record, tripped, tally).await?;
            }
        }
        Ok(())
    }

    /// Takes away every factor the user holds (the flagged new one with them), ends their
    /// sessions and disables the account, as the recall's anomalies.action asks. What fails is
    /// kept in the quarantine for the reviewer; the user is quarantined whatever the provider did.
    async fn quarantine(&self, job: &RecallJob, record: &mut UserRecord, rules: Vec<Rule>, tally: &mut Tally) -> Result<()> {
        let user = record.user.clone();
        let now = jiff::Timestamp::now();
        let mut quarantine = Quarantine { at: now, rules, factors_revoked: 0, incomplete: Vec::new(), cleared_by: None, cleared_at: None };
        match self.provider.snapshot(&user, &[FactorKind::All], now + QUARANTINE_CLOCK_MARGIN).await {
            Ok(snapshot) => {
                // A factor the provider deletes only once the others are gone (Entra's default
                // method) goes after them.
                let mut deferred = Vec::new();
                for factor in &snapshot.factors {
                    match self.provider.revoke_factor(&user, factor).await {
                        Ok(RevokeOutcome::AfterOthers(_)) => deferred.push(factor),
                        result => self.quarantine_revoked(job, &user, factor, result, &mut quarantine)?,
                    }
                }
                for factor in deferred {
                    let result = match self.provider.revoke_factor(&user, factor).await {
                        Ok(RevokeOutcome::AfterOthers(refusal)) => Err(refusal),
                        other => other,
                    };
                    self.quarantine_revoked(job, &user, factor, result, &mut quarantine)?;
                }
                if let Err(e) = self.provider.revoke_sessions(&user, &snapshot).await {
                    quarantine.incomplete.push(format!("sessions: {e}"));
                }
            }
            Err(e) => quarantine.incomplete.push(format!("factors unreadable: {e}")),
        }
        if let Err(e) = self.provider.disable_user(&user).await {
            quarantine.incomplete.push(format!("account not disabled: {e}"));
        }
        let rules: Vec<&str> = quarantine.rules.iter().map(|r| r.as_str()).collect();
        let outcome = if quarantine.incomplete.is_empty() { Outcome::Done } else { Outcome::Failed };
        self.audit(job, Some(&user), Action::UserQuarantine, outcome, |e| {
            e.detail = Some(format!(
                "flagged {}: {} factors revoked, sessions ended, account disabled until cleared{}",
                rules.join(", "),
                quarantine.factors_revoked,
                if quarantine.incomplete.is_empty() { String::new() } else { format!("; not done: {}", quarantine.incomplete.join("; ")) }
            ));
        })?;
        // The enrollment is undone: the user waits to enroll again once cleared, counted as
        // quarantined meanwhile (not re-enrolled, not pending, as `ledger::add_user` counts).
        let was_pending = record.awaits_re_enrollment();
        let was_already = record.already_enrolled();
        if record.re_enrolled.take().is_some() {
            tally.re_enrolled -= 1;
        }
        tally.pending -= was_pending as i64;
        tally.already_enrolled -= was_already as i64;
        record.quarantine = Some(quarantine);
        tally.quarantined += 1;
        Ok(())
    }

    /// Records how revoking one factor of a quarantined user went.
    fn quarantine_revoked(&self, job: &RecallJob, user: &UserRef, factor: &FactorRef, result: std::result::Result<RevokeOutcome, ProviderError>, quarantine: &mut Quarantine) -> Result<()> {
        let audited = match result {
            Ok(RevokeOutcome::AlreadyGone) => Outcome::AlreadyGone,
            Ok(RevokeOutcome::WentWithLinked) => Outcome::RevokedWithLinked,
            Ok(_) => Outcome::Revoked,
            Err(e) => {
                quarantine.incomplete.push(format!("factor {} ({}): {e}", factor.id, factor.kind.as_str()));
                return Ok(());
            }
        };
        quarantine.factors_revoked += 1;
        self.audit(job, Some(user), Action::FactorRevoke, audited, |e| {
            e.factor_id = Some(factor.id.clone());
            e.factor_kind = Some(factor.kind.into());
            e.detail = Some("quarantine".into());
        })
    }

    /// Adds what a check changed to the live counts.
    fn publish(&self, tally: Tally) {
        let mut progress = self.progress.lock().unwrap();
        progress.counts.re_enrolled += tally.re_enrolled;
        progress.counts.pending += tally.pending;
        progress.counts.already_enrolled += tally.already_enrolled;
        progress.counts.anomalies += tally.flags;
        progress.counts.quarantined += tally.quarantined;
        for name in tally.flagged {
            progress.note_flagged(name);
        }
    }

    /// Acts on users' not-me reports not acted on yet: each reported user is flagged
    /// (fraudReported) and quarantined, whatever anomalies.action says: they said the factor is
    /// not theirs.
    pub(super) async fn act_on_reports(&self, job: &RecallJob) -> Result<()> {
        let reports = self.ledger.read_reports(&job.backend).await?;
        if reports.is_empty() {
            return Ok(());
        }
        let from = job.window.started.unwrap_or(job.cutoff);
        let mut state = self.ledger.read_watch(&job.backend).await?.unwrap_or_else(|| WatchState::new(&job.backend, from));
        let waiting: Vec<&NotMe> = reports.iter().filter(|r| !state.reports_handled.contains(&r.key())).collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let index = self.recalled_index(job).await?;
        let mut tally = Tally::default();
        for report in waiting {
            let mut found = false;
            for segment_index in index.segments_of(&report.user_id) {
                let mut segment = self.ledger.read(&job.backend, segment_index).await?;
                let Some(record) = segment.users.iter_mut().find(|r| r.user.id == report.user_id) else { continue };
                found = true;
                let event_id = format!("not-me:{}", report.at);
                if !record.flags.iter().any(|f| f.event_id == event_id) {
                    let user = record.user.clone();
                    self.audit(job, Some(&user), Action::AnomalyFlagged, Outcome::Done, |e| {
                        e.detail = Some(format!("fraudReported: the user said, from the notice of a new factor, that it was not them; events {event_id}"));
                    })?;
                    record.flags.push(Flag { rule: Rule::FraudReported, event_id, at: report.at });
                    tally.flags += 1;
                    tally.flagged.push(format!("{}: {}", user.username, Rule::FraudReported.as_str()));
                }
                if !record.quarantine.as_ref().is_some_and(Quarantine::holds) {
                    self.quarantine(job, record, vec![Rule::FraudReported], &mut tally).await?;
                }
                self.persist(&segment).await?;
                break;
            }
            if !found {
                tracing::warn!(recall = %job.recall, backend = %job.backend, user = %report.user_id, "a not-me report names no recalled user of this backend");
            }
            state.reports_handled.push(report.key());
        }
        self.ledger.write_watch(&state).await?;
        self.publish(tally);
        Ok(())
    }

    /// Acts on clearances not acted on yet: each quarantined user a clearance names is enabled
    /// again and the clearance audited with the person who made it. A clearance the provider
    /// cannot carry out now is tried again at the next check.
    async fn apply_clearances(&self, job: &RecallJob, state: &mut WatchState, touched: &mut BTreeMap<u32, Segment>, tally: &mut Tally) -> Result<()> {
        let keys = clearance_keys(&job.window.clearances);
        let waiting: Vec<(String, &Clearance)> = keys.into_iter().zip(&job.window.clearances).filter(|(k, _)| !state.cleared.contains(k)).collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let mut found = vec![false; waiting.len()];
        let mut failed = vec![false; waiting.len()];
        for index in self.ledger.segments(&job.backend).await? {
            let segment = match touched.entry(index) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(self.ledger.read(&job.backend, index).await?),
            };
            for record in segment.users.iter_mut().filter(|r| r.quarantine.as_ref().is_some_and(Quarantine::holds)) {
                let Some(n) = waiting.iter().position(|(_, c)| c.user.eq_ignore_ascii_case(&record.user.username) || c.user == record.user.id) else { continue };
                found[n] = true;
                let clearance = waiting[n].1;
                let user = record.user.clone();
                match self.provider.enable_user(&user).await {
                    Ok(()) => {
                        self.audit(job, Some(&user), Action::UserClear, Outcome::Done, |e| e.detail = Some(format!("cleared by {}: {}", clearance.cleared_by, clearance.note)))?;
                        if let Some(q) = record.quarantine.as_mut() {
                            q.cleared_by = Some(clearance.cleared_by.clone());
                            q.cleared_at = Some(jiff::Timestamp::now());
                        }
                        tally.quarantined -= 1;
                        // Cleared, they must enroll anew.
                        tally.pending += 1;
                    }
                    Err(e) => {
                        failed[n] = true;
                        self.audit(job, Some(&user), Action::UserClear, Outcome::Failed, |ev| ev.detail = Some(format!("cleared by {}, but the account could not be enabled: {e}", clearance.cleared_by)))?;
                    }
                }
            }
        }
        for (n, (key, clearance)) in waiting.into_iter().enumerate() {
            // Never kept for later: a clearance made before a quarantine would be one given in advance.
            if !found[n] {
                self.audit(job, None, Action::UserClear, Outcome::Skipped, |e| {
                    e.detail = Some(format!("a clearance by {} names {}, who is not quarantined on this backend: nothing done", clearance.cleared_by, clearance.user));
                })?;
            }
            if !failed[n] {
                state.cleared.push(key);
            }
        }
        Ok(())
    }

    /// The user's own events from the baseline's start up to `until`, oldest first; none where
    /// the log cannot be read for one user (the rules that need them then do not trip).
    async fn history(&self, job: &RecallJob, segment: &Segment, i: usize, until: jiff::Timestamp) -> Vec<IdentityEvent> {
        let user = &segment.users[i].user;
        let from = job.cutoff - job.window.baseline;
        let until = until + jiff::SignedDuration::from_millis(1);
        let (mut events, mut cursor) = (Vec::new(), None::<String>);
        for _ in 0..MAX_HISTORY_PAGES {
            match self.provider.read_events(&EventQuery { cursor: cursor.as_deref(), from, until: Some(until), user: Some(user) }).await {
                Ok(page) => {
                    events.extend(page.events);
                    match page.cursor {
                        Some(next) if page.more => cursor = Some(next),
                        _ => break,
                    }
                }
                Err(e) => {
                    tracing::warn!(recall = %job.recall, backend = %job.backend, user = %user.username, error = %e, "the user's earlier events are unreadable; rules that compare with them are not judged");
                    break;
                }
            }
        }
        events.sort_by_key(|e| e.at);
        events
    }

    /// Asks about the next few pending users, wherever the sweep is, going round.
    async fn sweep(&self, job: &RecallJob, state: &mut WatchState, touched: &mut BTreeMap<u32, Segment>, tally: &mut Tally) -> Result<()> {
        let segments = self.ledger.segments(&job.backend).await?;
        let (mut left, mut rounds) = (job.window.sweep_per_check, 0);
        let (mut at_segment, mut at_user) = state.sweep_at;
        while left > 0 && !segments.is_empty() && rounds < 2 {
            let Some(&index) = segments.iter().find(|s| **s >= at_segment) else {
                (at_segment, at_user, rounds) = (0, 0, rounds + 1);
                state.sweeps += 1;
                continue;
            };
            let segment = match touched.entry(index) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(self.ledger.read(&job.backend, index).await?),
            };
            while at_user < segment.users.len() && left > 0 {
                if segment.users[at_user].awaits_re_enrollment() {
                    self.confirm(job, segment, at_user, None, tally).await?;
                    left -= 1;
                }
                at_user += 1;
            }
            if at_user >= segment.users.len() {
                (at_segment, at_user) = (index + 1, 0);
            }
        }
        state.sweep_at = (at_segment, at_user);
        Ok(())
    }

    async fn recalled_index(&self, job: &RecallJob) -> Result<Arc<RecalledIndex>> {
        if let Some(index) = self.progress.lock().unwrap().recalled_index.clone() {
            return Ok(index);
        }
        let mut entries = Vec::new();
        for index in self.ledger.segments(&job.backend).await? {
            let segment = self.ledger.read(&job.backend, index).await?;
            entries.extend(segment.users.iter().filter(|r| matches!(r.state, UserState::Invalidated | UserState::AwaitingLogs)).map(|r| (RecalledIndex::key(&r.user.id), index)));
        }
        entries.sort_unstable();
        let index = Arc::new(RecalledIndex(entries));
        self.progress.lock().unwrap().recalled_index = Some(index.clone());
        Ok(index)
    }

    fn recent(&self, event: &IdentityEvent) -> Recent {
        Recent {
            user_id: event.user_id.clone(),
            event_id: event.id.clone(),
            at: event.at,
            address: event.client.ip.map(|ip| self.ledger.pseudonym(&ip.to_string())),
            device: event.device.as_ref().map(|d| self.ledger.pseudonym(d.expose())),
        }
    }
}

/// What one check changed, for the live counts.
#[derive(Default)]
struct Tally {
    re_enrolled: i64,
    flags: i64,
    /// Users quarantined, less those cleared.
    quarantined: i64,
    /// Change in users waiting to re-enroll, and in users counted as already enrolled.
    pending: i64,
    already_enrolled: i64,
    /// Re-enrollments to tell the users of, once the check's findings are kept.
    to_notify: Vec<(UserRef, crate::backends::Enrollment)>,
    /// `<user>: <rule>` of each new flag.
    flagged: Vec<String>,
}

pub(super) fn warn_check_failed(job: &RecallJob, e: &ProviderError) {
    tracing::warn!(recall = %job.recall, backend = %job.backend, error = %e, "re-enrollment check failed; will retry");
}
