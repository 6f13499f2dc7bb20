//! Durable per-user progress of a recall, so the invariants hold across crashes: a segment of
//! users is written with each user's snapshot (the factors that existed before the cutoff)
//! *before* anything is revoked, and again once the segment is done. A resumed recall re-runs
//! only unfinished users, deletes only recorded factor ids, and recomputes counts from here.

pub mod legacy;
mod resource;

pub use resource::{BACKEND_LABEL, KEY_NAME, RECALL_UID_LABEL, ResourceLedger, SEGMENT_LABEL, read_unchecked, segment_name};

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::api::RecallCounts;
use crate::backends::{Enrollment, UserRef, UserSnapshot};
use crate::watch::{Flag, NotMe, WatchState};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UserState {
    /// Listed, not finished yet.
    Planned,
    Invalidated,
    Excluded,
    Failed,
    /// Sessions ended and factors of known age dealt with; the rest of the user's factors wait
    /// until the provider's logs can tell their age (`Runner::settle`).
    AwaitingLogs,
}

/// What the recall has done to one user so far, step by step: a user taken up again (after a
/// wait for the logs, or a restart) goes on from here, and counts are what the provider lost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Work {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sessions_ended: bool,
    /// Recorded factors this recall deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
    /// Recorded factors already gone when this recall came to delete them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<String>,
    /// Recorded factors of unknown age that the logs showed registered since the cutoff: kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_new: Vec<String>,
    /// Recorded factors of unknown age the logs could not date: kept, counted and named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_unknown_age: Vec<String>,
    /// Factors enrolled since the cutoff that the provider took with one this recall revoked,
    /// as `<kind> <id>` (never recorded: they were new).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_new: Vec<String>,
    /// When this recall last revoked a factor whose revocation ends every enrollment the user
    /// holds (`Capabilities::revoking_ends_enrollments`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollments_ended_at: Option<jiff::Timestamp>,
}

impl Work {
    /// Whether the recall has decided about this factor (deleted, found gone or kept).
    pub fn settled(&self, id: &str) -> bool {
        [&self.revoked, &self.gone, &self.kept_new, &self.kept_unknown_age].iter().any(|ids| ids.iter().any(|i| i == id))
    }
}

/// Everything the recall knows and did about one user on one backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub user: UserRef,
    pub state: UserState,
    /// What the user held before anything was touched; recorded before any revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<UserSnapshot>,
    /// The exclusion rule, or the error that made the user fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re_enrolled: Option<Enrollment>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// What was done so far; None in ledgers of operators before it was kept (their invalidated
    /// users lost every recorded factor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<Work>,
    /// Anomaly rules that tripped on the user's events in the re-enrollment window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    /// Set when a flag quarantined the user (the recall's anomalies.action), until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<Quarantine>,
    /// Where a rolled-out recall's plan put the user: a member of the backend's privileged groups
    /// (first wave), or the user's place among the others (which wave follows from the wave size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPlace>,
}

/// A user's place in a rollout, recorded with the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RolloutPlace {
    Privileged,
    /// The user's place, from 0, among the users of the backend who are not privileged.
    Ordinal(u32),
}

/// A user a flag quarantined: every factor they held revoked (the flagged new one with them),
/// sessions ended and the account disabled, until a person clears it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quarantine {
    pub at: jiff::Timestamp,
    /// The rules whose flags put the user here.
    pub rules: Vec<crate::watch::Rule>,
    pub factors_revoked: u32,
    /// What could not be done (a factor, the sessions, the account), for the person who reviews it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
    /// The person who cleared it (as the admission policy checked), and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<jiff::Timestamp>,
}

impl Quarantine {
    pub fn holds(&self) -> bool {
        self.cleared_at.is_none()
    }
}

impl UserRecord {
    pub fn planned(user: UserRef) -> Self {
        Self { user, state: UserState::Planned, snapshot: None, note: None, re_enrolled: None, disabled: false, work: None, flags: Vec::new(), quarantine: None, rollout: None }
    }

    /// The recorded factors the user lost to this recall.
    pub fn lost(&self) -> impl Iterator<Item = &crate::backends::FactorRef> {
        let factors = self.snapshot.as_ref().map_or(&[][..], |s| &s.factors[..]);
        factors.iter().filter(move |f| match &self.work {
            Some(work) => work.revoked.contains(&f.id),
            None => self.state == UserState::Invalidated,
        })
    }

    /// An invalidated user who lost at least one factor and is expected to enroll again: not
    /// one who already held a factor from after the cutoff when the recall reached them.
    pub fn awaits_re_enrollment(&self) -> bool {
        if self.state != UserState::Invalidated || self.re_enrolled.is_some() {
            return false;
        }
        match &self.quarantine {
            // Held: disabled until cleared. Cleared: every factor went, so they must enroll anew.
            Some(quarantine) => !quarantine.holds(),
            None => !self.already_enrolled() && self.lost().next().is_some(),
        }
    }

    /// Only a factor enrolled at or after this counts as a re-enrollment: the cutoff, or later
    /// where the recall ended the user's enrollments, or a quarantine took every factor.
    pub fn re_enrollment_counts_from(&self, cutoff: jiff::Timestamp) -> jiff::Timestamp {
        let ended = self.work.as_ref().and_then(|w| w.enrollments_ended_at);
        [ended, self.quarantine.as_ref().map(|q| q.at)].into_iter().flatten().fold(cutoff, |a, b| a.max(b))
    }

    /// The user held a factor from after the cutoff when the recall reached them (and no
    /// quarantine took it since).
    pub fn already_enrolled(&self) -> bool {
        self.quarantine.is_none() && self.snapshot.as_ref().is_some_and(|s| s.enrolled_since_cutoff.is_some()) || self.work.as_ref().is_some_and(|w| !w.kept_new.is_empty())
    }

    /// Each recorded factor kept for want of its age, as `<user>: <kind> <id>`.
    pub fn kept_unknown_age(&self) -> impl Iterator<Item = String> + '_ {
        let kept = self.work.as_ref().map_or(&[][..], |w| &w.kept_unknown_age[..]);
        let factors = self.snapshot.as_ref().map_or(&[][..], |s| &s.factors[..]);
        factors.iter().filter(|f| kept.contains(&f.id)).map(|f| format!("{}: {} {}", self.user.username, f.kind.as_str(), f.id))
    }

    /// New factors the provider took with a revocation, as `<user>: <kind> <id>`.
    pub fn lost_new(&self) -> impl Iterator<Item = String> + '_ {
        self.work.iter().flat_map(|w| &w.lost_new).map(|name| format!("{}: {name}", self.user.username))
    }
}

/// One page of users on one backend of one recall.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub backend: String,
    pub index: u32,
    /// Cursor of the page after this one; None when this was the last page.
    pub next_cursor: Option<String>,
    /// Every user of the segment is invalidated, excluded or failed.
    pub complete: bool,
    pub users: Vec<UserRecord>,
    /// Set when this segment holds only the first users of a page, recorded ahead of the rest so
    /// the first revocation waits on a few snapshots rather than a whole page's; the rest of the
    /// page is the next segment. Until that one is recorded, a resumed run lists this page again
    /// and leaves out the users recorded here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_of_page: Option<PageStart>,
    /// Names and groups of the scope, or of its exclusions, that matched nobody on this
    /// backend, found while listing this segment's users.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
    /// Where the audit trail stood when this segment was first recorded: every action on its
    /// users is audited after this, so a resumed run reads from here what was done to users
    /// the segment still shows as planned (`Runner::replay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_from: Option<crate::audit::TrailMark>,
    /// Recorded by a plan (mode Plan, or a recall awaiting approval): nobody in it has been worked
    /// on. Cleared, and the segment recorded again, before its first user is touched, so that
    /// only a segment revocation has begun on is taken up as resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub planned_only: bool,
}

/// Where a page was listed from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PageStart {
    /// None for the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl Segment {
    /// A segment of freshly listed users, not yet worked on.
    pub fn fresh(backend: &str, index: u32, next_cursor: Option<String>, users: Vec<UserRecord>) -> Self {
        Self { backend: backend.to_string(), index, next_cursor, complete: false, users, head_of_page: None, unresolved: Vec::new(), audit_from: None, planned_only: false }
    }

    /// The users not finished yet, with their positions.
    pub fn planned(&self) -> impl Iterator<Item = (usize, &UserRecord)> {
        self.users.iter().enumerate().filter(|(_, r)| r.state == UserState::Planned)
    }

    /// Adds this segment's users to `counts`.
    pub fn add_counts(&self, counts: &mut RecallCounts) {
        for record in &self.users {
            add_user(record, counts);
        }
    }
}

/// Counts one finished (or planned) user. What was done to a user is counted whether or not
/// the user then failed: the counts are what the provider lost.
pub fn add_user(record: &UserRecord, counts: &mut RecallCounts) {
    counts.targeted += 1;
    counts.anomalies += record.flags.len() as i64;
    counts.quarantined += record.quarantine.as_ref().is_some_and(Quarantine::holds) as i64;
    match record.state {
        UserState::Planned => return,
        UserState::Excluded => {
            counts.excluded += 1;
            if let Some(rule) = &record.note {
                *counts.excluded_by.entry(rule.clone()).or_default() += 1;
            }
            return;
        }
        UserState::Failed => counts.failed += 1,
        UserState::AwaitingLogs => counts.awaiting_logs += 1,
        UserState::Invalidated => {
            counts.invalidated += 1;
            if record.re_enrolled.is_some() {
                counts.re_enrolled += 1;
            } else if record.already_enrolled() {
                counts.already_enrolled += 1;
            } else if record.awaits_re_enrollment() {
                counts.pending += 1;
            }
            if record.disabled {
                counts.disabled += 1;
            }
            if record.snapshot.as_ref().is_some_and(|s| s.at_risk.is_some()) {
                counts.at_risk += 1;
            }
        }
    }
    let sessions_ended = match &record.work {
        Some(work) => work.sessions_ended,
        None => record.state == UserState::Invalidated,
    };
    if sessions_ended && let Some(snapshot) = &record.snapshot {
        counts.sessions_revoked += snapshot.sessions as i64;
    }
    for factor in record.lost() {
        *counts.factors_revoked.entry(factor.kind).or_default() += 1;
    }
    counts.kept_unknown_age += record.work.as_ref().map_or(0, |w| w.kept_unknown_age.len() as i64);
    counts.new_factors_lost += record.work.as_ref().map_or(0, |w| w.lost_new.len() as i64);
}

/// Where segments live. Implementations must make `write` durable before returning.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Indexes of the segments stored for `backend`, ascending.
    async fn segments(&self, backend: &str) -> Result<Vec<u32>>;
    async fn read(&self, backend: &str, index: u32) -> Result<Segment>;
    async fn write(&self, segment: &Segment) -> Result<()>;
    /// What `backend`'s re-enrollment watch kept; None before its first check.
    async fn read_watch(&self, backend: &str) -> Result<Option<WatchState>>;
    async fn write_watch(&self, state: &WatchState) -> Result<()>;
    /// A pseudonym of personal data (an address, a phone number) under the store's key: equal
    /// values get equal pseudonyms within one operator, and nobody without the key can test a
    /// guess against one.
    fn pseudonym(&self, value: &str) -> String;
    /// Users' not-me reports on this backend, oldest first.
    async fn read_reports(&self, _backend: &str) -> Result<Vec<NotMe>> {
        Ok(Vec::new())
    }
    /// Keeps a not-me report for the recall's next check to act on; false when the user has
    /// reported already (one report per user and recall).
    async fn add_report(&self, report: &NotMe) -> Result<bool> {
        Err(crate::Error::Ledger { name: report.backend.clone(), message: "this ledger keeps no reports".into() })
    }
}

/// An in-process store for engine tests and dry runs.
#[derive(Default)]
pub struct MemoryLedger {
    segments: Mutex<BTreeMap<(String, u32), Segment>>,
    watches: Mutex<BTreeMap<String, WatchState>>,
    reports: Mutex<Vec<NotMe>>,
}

#[async_trait]
impl LedgerStore for MemoryLedger {
    async fn segments(&self, backend: &str) -> Result<Vec<u32>> {
        Ok(self.segments.lock().unwrap().keys().filter(|(b, _)| b == backend).map(|(_, i)| *i).collect())
    }
    async fn read(&self, backend: &str, index: u32) -> Result<Segment> {
        self.segments.lock().unwrap().get(&(backend.to_string(), index)).cloned().ok_or_else(|| crate::Error::Ledger {
            name: format!("{backend}/{index}"),
            message: "missing".into(),
        })
    }
    async fn write(&self, segment: &Segment) -> Result<()> {
        self.segments.lock().unwrap().insert((segment.backend.clone(), segment.index), segment.clone());
        Ok(())
    }
    async fn read_watch(&self, backend: &str) -> Result<Option<WatchState>> {
        Ok(self.watches.lock().unwrap().get(backend).cloned())
    }
    async fn write_watch(&self, state: &WatchState) -> Result<()> {
        self.watches.lock().unwrap().insert(state.backend.clone(), state.clone());
        Ok(())
    }
    fn pseudonym(&self, value: &str) -> String {
        // Nothing of a memory ledger outlives the process: a fixed key serves its tests.
        pseudonym(&crate::keys::HmacKey::new(b"the memory ledger's pseudonym key", "a test key").expect("a key of 32+ bytes"), value)
    }
    async fn read_reports(&self, backend: &str) -> Result<Vec<NotMe>> {
        Ok(self.reports.lock().unwrap().iter().filter(|r| r.backend == backend).cloned().collect())
    }
    async fn add_report(&self, report: &NotMe) -> Result<bool> {
        let mut reports = self.reports.lock().unwrap();
        if reports.iter().any(|r| r.backend == report.backend && r.user_id == report.user_id) {
            return Ok(false);
        }
        reports.push(report.clone());
        Ok(true)
    }
}

/// `value`'s pseudonym under `key`: the HMAC in hex, cut to 128 bits.
pub fn pseudonym(key: &crate::keys::HmacKey, value: &str) -> String {
    use hmac::Mac;
    let mut mac = key.mac();
    mac.update(b"mfa-recall pseudonym v1\0");
    mac.update(value.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// Bytes a user takes in a segment's JSON, before compression.
pub fn json_len(record: &UserRecord) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, record).map_or(0, |()| count.0)
}

/// What changes about a segment's users after it is first recorded: their states and notes,
/// re-enrollments and suspensions. A store may keep these apart from the snapshots, which never
/// change, so recording progress does not rewrite them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcomes {
    pub complete: bool,
    /// One per user, in the segment's order.
    pub users: Vec<UserOutcome>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOutcome {
    pub state: UserState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re_enrolled: Option<Enrollment>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<Work>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<Quarantine>,
}

impl Segment {
    /// The part of the segment that changes as its users are worked on.
    pub fn outcomes(&self) -> Outcomes {
        let users = self
            .users
            .iter()
            .map(|r| UserOutcome {
                state: r.state,
                note: r.note.clone(),
                re_enrolled: r.re_enrolled.clone(),
                disabled: r.disabled,
                work: r.work.clone(),
                flags: r.flags.clone(),
                quarantine: r.quarantine.clone(),
            })
            .collect();
        Outcomes { complete: self.complete, users }
    }

    /// Applies outcomes recorded after this segment; they must be of its users.
    pub fn apply(&mut self, outcomes: Outcomes) -> std::result::Result<(), String> {
        if outcomes.users.len() != self.users.len() {
            return Err(format!("has outcomes of {} users for a segment of {}", outcomes.users.len(), self.users.len()));
        }
        for (record, outcome) in self.users.iter_mut().zip(outcomes.users) {
            record.state = outcome.state;
            record.note = outcome.note;
            record.re_enrolled = outcome.re_enrolled;
            record.disabled = outcome.disabled;
            record.work = outcome.work;
            record.flags = outcome.flags;
            record.quarantine = outcome.quarantine;
        }
        self.complete = outcomes.complete;
        Ok(())
    }
}

/// Gzip-compressed JSON, as segments and their outcomes are stored.
pub fn encode(value: &impl Serialize) -> Result<Vec<u8>> {
    // Serialised into the compressor through a buffer: a segment's whole JSON (up to 640 KiB) is
    // never held at once.
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut buffered = std::io::BufWriter::with_capacity(64 * 1024, encoder);
    serde_json::to_writer(&mut buffered, value)?;
    let encoder = buffered.into_inner().map_err(|e| crate::Error::Audit(e.into_error()))?;
    encoder.finish().map_err(crate::Error::Audit)
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let decoder = flate2::read::GzDecoder::new(bytes);
    Ok(serde_json::from_reader(decoder)?)
}

/// As `decode`, reading at most `limit` bytes of JSON: for objects whose signature was not
/// checked, which could otherwise expand without bound.
pub fn decode_at_most<T: serde::de::DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T> {
    let decoder = std::io::Read::take(flate2::read::GzDecoder::new(bytes), limit);
    Ok(serde_json::from_reader(decoder)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FactorKind;
    use crate::backends::FactorRef;

    fn segment() -> Segment {
        let users = (0..3)
            .map(|i| {
                let mut record = UserRecord::planned(UserRef { id: format!("u{i}"), username: format!("user{i}") });
                let factor = FactorRef::new(format!("f{i}"), FactorKind::Totp, "otp");
                record.snapshot = Some(UserSnapshot { factors: vec![factor], sessions: 1, ..Default::default() });
                record
            })
            .collect();
        Segment::fresh("ns/okta", 4, Some("next".into()), users)
    }

    #[test]
    fn outcomes_applied_to_the_recorded_segment_give_the_segment_as_worked() {
        let recorded = segment();
        let mut worked = recorded.clone();
        worked.users[0].state = UserState::Invalidated;
        worked.users[1].state = UserState::Failed;
        worked.users[1].note = Some("503 from DELETE /factors".into());
        worked.users[2].state = UserState::Invalidated;
        worked.users[2].disabled = true;
        worked.users[2].work = Some(Work { sessions_ended: true, revoked: vec!["f2".into()], ..Default::default() });
        worked.complete = true;
        // Stored as they would be: each encoded on its own.
        let outcomes: Outcomes = decode(&encode(&worked.outcomes()).unwrap()).unwrap();
        let mut read: Segment = decode(&encode(&recorded).unwrap()).unwrap();
        read.apply(outcomes).unwrap();
        assert_eq!(read, worked);
    }

    /// Where an enrollment came from is personal data the audit line keeps; a resume does not
    /// need it, so the ledger never holds it.
    #[test]
    fn the_ledger_keeps_no_ip_user_agent_or_geo() {
        let mut worked = segment();
        let origin = crate::backends::EnrollmentOrigin { ip: Some("203.0.113.9".into()), user_agent: Some("Mozilla/5.0 canary-agent".into()), geo: Some("NL/Noord-Holland/Amsterdam".into()), asn: Some(64500) };
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        worked.users[0].state = UserState::Invalidated;
        worked.users[0].re_enrolled = Some(Enrollment { kind: FactorKind::Totp, at, origin: Some(origin) });
        for stored in [encode(&worked).unwrap(), encode(&worked.outcomes()).unwrap()] {
            let mut json = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&stored[..]), &mut json).unwrap();
            for personal in ["203.0.113.9", "canary-agent", "Amsterdam", "64500"] {
                assert!(!json.contains(personal), "{personal} in {json}");
            }
            assert!(json.contains("\"reEnrolled\""), "the enrollment itself is kept: {json}");
        }
        let read: Outcomes = decode(&encode(&worked.outcomes()).unwrap()).unwrap();
        assert_eq!(read.users[0].re_enrolled, Some(Enrollment { kind: FactorKind::Totp, at, origin: None }));

        // As earlier operators stored it, with the origin: still read, and dropped when written again.
        let older = r#"{"complete":true,"users":[{"state":"invalidated","reEnrolled":{"kind":"totp","at":"2027-01-15T08:00:00Z","origin":{"ip":"203.0.113.9","userAgent":"canary-agent"}}}]}"#;
        let read: Outcomes = serde_json::from_str(older).unwrap();
        assert_eq!(read.users[0].re_enrolled, Some(Enrollment { kind: FactorKind::Totp, at, origin: None }));
        assert!(!serde_json::to_string(&read).unwrap().contains("203.0.113.9"));
    }

    #[test]
    fn outcomes_of_another_number_of_users_are_refused() {
        let mut other = segment();
        other.users.pop();
        let mut recorded = segment();
        let error = recorded.apply(other.outcomes()).unwrap_err();
        assert_eq!(error, "has outcomes of 2 users for a segment of 3");
        assert_eq!(recorded, segment(), "nothing applied");
    }
}
