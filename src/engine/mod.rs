//! The recall itself, independent of Kubernetes: page through the users in scope, record what
//! each holds, then per user end sessions, delete the recorded factors and require enrollment,
//! with bounded concurrency. Provider pacing and retries live in `backends::http`; durability in
//! `ledger`; every action is audited before it is counted.

mod scope;
mod window;

pub use scope::Exclusions;
pub use window::WindowSettings;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::Result;
use crate::api::{FactorKind, RecallCounts, RecallPlan};
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::backends::{IdentityProvider, LoggedAge, PageCursors, ErrorKind, ProviderError, RevokeOutcome, ScopeSelector, UserRef, UserSnapshot};
use crate::backends::http::noting_unanswered_writes;
use crate::ledger::{self, LedgerStore, PageStart, Segment, UserRecord, UserState, Work};

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
    /// How the re-enrollment window is watched.
    pub window: WindowSettings,
    /// Where users are told of a new factor; None for no notices.
    pub notices: Option<Arc<crate::notify::Notices>>,
    /// How users get back in to enroll again.
    pub channel: crate::backends::EnrollmentChannel,
    /// Listing and snapshotting for a plan: segments are recorded as planned only.
    pub plan_only: bool,
    /// A rolled-out recall: while planning, who is privileged (their places are recorded); while
    /// revoking, which waves may be worked.
    pub rollout: Option<Arc<RolloutGate>>,
    /// The exclusions as resolved for this pass, set by `revoke_with`: a user recorded before
    /// (by a plan, or before a restart) and excluded since is left alone, not worked.
    pub exclusions_now: Option<Arc<Exclusions>>,
}

/// Which users of a rolled-out recall a revocation pass works on.
#[derive(Debug, Default)]
pub struct RolloutGate {
    /// Ids of the backend's privileged groups' members, while planning.
    pub privileged: HashSet<String>,
    /// Users per wave after the privileged ones.
    pub wave_size: u32,
    /// Privileged users make wave 0; otherwise they go with wave 1.
    pub privileged_first: bool,
    /// This pass works users of waves up to this one.
    pub through: u32,
    /// The last wave an earlier run started: its users and those before may have been worked on
    /// before a restart; the users of later waves were never touched.
    pub started_before: Option<u32>,
}

impl RolloutGate {
    /// The wave of a planned user; one planned without a place goes first.
    pub fn wave_of(&self, record: &UserRecord) -> u32 {
        match record.rollout {
            Some(crate::ledger::RolloutPlace::Privileged) => u32::from(!self.privileged_first),
            Some(crate::ledger::RolloutPlace::Ordinal(place)) => 1 + place / self.wave_size.max(1),
            None => 0,
        }
    }
}

impl RecallJob {
    /// `namespace/name` of the IdentityBackend (it lives in the recall's namespace), as errors
    /// name it.
    pub fn backend_key(&self) -> String {
        match self.recall.split_once('/') {
            Some((namespace, _)) => format!("{namespace}/{}", self.backend),
            None => self.backend.clone(),
        }
    }
}

/// Live counts of one backend, read by the status writer.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub counts: RecallCounts,
    /// Every user in scope has been listed.
    pub listed: bool,
    /// Names and groups in the scope or its exclusions that matched nobody on this backend.
    pub unresolved: BTreeSet<String>,
    /// Factors kept for want of their age, as `<user>: <kind> <id>` (the first KEPT_SHOWN).
    pub kept_factors: Vec<String>,
    /// New factors a provider took with a revocation, the same way.
    pub lost_factors: Vec<String>,
    /// Users flagged by an anomaly rule, as `<user>: <rule>` (the first KEPT_SHOWN).
    pub flagged: Vec<String>,
    /// Log entries of the event stream that could not be read, since this process started.
    pub events_skipped: u64,
    /// Where recalled users are in the ledger, once the window watch has built it.
    pub recalled_index: Option<Arc<window::RecalledIndex>>,
    /// What a plan of this backend found so far.
    pub plan: Option<RecallPlan>,
}

/// Factors kept for want of their age, named per backend in status (the audit trail has all).
pub const KEPT_SHOWN: usize = 100;

impl Progress {
    /// Names the user's factors kept for want of their age, and new ones lost with a revocation.
    fn note_kept(&mut self, record: &UserRecord) {
        let room = KEPT_SHOWN.saturating_sub(self.kept_factors.len());
        self.kept_factors.extend(record.kept_unknown_age().take(room));
        let room = KEPT_SHOWN.saturating_sub(self.lost_factors.len());
        self.lost_factors.extend(record.lost_new().take(room));
        for flag in &record.flags {
            self.note_flagged(format!("{}: {}", record.user.username, flag.rule.as_str()));
        }
    }

    fn note_flagged(&mut self, name: String) {
        if self.flagged.len() < KEPT_SHOWN && !self.flagged.contains(&name) {
            self.flagged.push(name);
        }
    }
}

pub type SharedProgress = Arc<Mutex<Progress>>;

/// Where a run continues, from the ledger.
#[derive(Debug, Default)]
pub struct Restored {
    /// Recorded segments with users still planned, oldest first.
    pub unfinished: Vec<Segment>,
    /// Cursor of the next page to list.
    pub cursor: Option<String>,
    pub next_index: u32,
    /// Every page has been listed and recorded.
    pub listed: bool,
    /// Users of the page at `cursor` already recorded in a head segment: left out when it is
    /// listed again.
    pub recorded_of_next_page: HashSet<String>,
    /// Ids of every user recorded, for a listed scope: a user found again through another
    /// group or name is not targeted twice.
    pub seen: HashSet<String>,
    /// The next-page cursors recorded: a listing that comes back to one of them would never
    /// end, in this run or the one after a retry.
    pub cursors: PageCursors,
    /// The next place among a rollout's users who are not privileged.
    pub next_place: u32,
}

/// Users per segment once a recall is under way, and the most a segment's JSON may take before
/// compression (so even incompressible, base64 in a ledger object, it stays under 1 MiB). Every
/// segment is written whole once (its outcomes, later, are small); the apiserver's cost per
/// write is about half fixed, so fewer, larger segments leave more of the machine to the recall.
const SEGMENT_USERS: usize = 1000;
const SEGMENT_JSON_BYTES: usize = 640 * 1024;

/// Whether a segment of `users` taking `json_bytes` is closed after the page just added. The
/// first segment is one page (or its head) so the first revocation comes soon; later ones grow
/// to SEGMENT_USERS, doubling from 200, so the workers have users while the next is recorded.
fn segment_is_full(index: u32, users: usize, json_bytes: usize) -> bool {
    index == 0 || users >= SEGMENT_USERS.min(100 << index.min(8)) || json_bytes >= SEGMENT_JSON_BYTES
}

/// Users in the head segment of a recall's first page (see `Segment::head_of_page`). Under a
/// per-minute budget each snapshot is paced, so a whole first page (200 users, 600 requests on
/// Okta) would hold back the first revocation by seconds.
const HEAD_USERS: usize = 20;

/// How often a page that cannot be listed from is asked for, and the wait before the second
/// (growing by as much each time).
const LISTING_ATTEMPTS: u32 = 3;
const LISTING_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A recorded segment handed to the workers.
struct ToWork {
    segment: Segment,
    /// Recorded by an earlier run: its users may have been worked on, or have re-enrolled, since.
    resumed: bool,
    /// Recorded by a plan, worked now: its users may have enrolled anew since it was made.
    from_plan: bool,
}

/// A planned user of a recorded segment, on its way through stage two.
struct ToDo {
    /// The segment's index and the user's place in it.
    index: u32,
    i: usize,
    record: UserRecord,
    resumed: bool,
    from_plan: bool,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RunEnd {
    Finished,
    /// Asked to stop (suspend, cancel, delete, shutdown); resumable.
    Stopped,
}

/// Everything a run needs besides the job. Shared, so the run's workers can be tasks of their own.
#[derive(Clone)]
pub struct Runner {
    pub provider: Arc<dyn IdentityProvider>,
    pub ledger: Arc<dyn LedgerStore>,
    pub audit: Arc<AuditLog>,
    pub progress: SharedProgress,
    pub stop: watch::Receiver<bool>,
}

impl Runner {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn audit(&self, job: &RecallJob, user: Option<&UserRef>, action: Action, outcome: Outcome, f: impl FnOnce(&mut AuditEvent)) -> Result<()> {
        let mut event = AuditEvent {
            recall: job.recall.clone(),
            backend: Some(job.backend.clone()),
            user: user.map(|u| u.username.clone()),
            action,
            outcome,
            ..Default::default()
        };
        f(&mut event);
        self.audit.record(event)?;
        Ok(())
    }

    /// Records a segment in the ledger once the audit lines of everything it reports are durable.
    async fn persist(&self, segment: &Segment) -> Result<()> {
        self.audit.sync().await?;
        self.ledger.write(segment).await
    }

    /// Rebuilds the counts from the ledger; returns where to continue.
    pub async fn restore(&self, job: &RecallJob) -> Result<Restored> {
        let mut counts = RecallCounts::default();
        let mut restored = Restored::default();
        let mut unresolved = BTreeSet::new();
        let listed_scope = matches!(job.scope, ScopeSelector::Listed { .. });
        let mut kept = Progress::default();
        for index in self.ledger.segments(&job.backend).await? {
            let mut segment = self.ledger.read(&job.backend, index).await?;
            if !segment.complete {
                self.replay(job, &mut segment)?;
            }
            segment.add_counts(&mut counts);
            segment.users.iter().for_each(|r| kept.note_kept(r));
            for record in &segment.users {
                if let Some(crate::ledger::RolloutPlace::Ordinal(place)) = record.rollout {
                    restored.next_place = restored.next_place.max(place.saturating_add(1));
                }
            }
            unresolved.extend(segment.unresolved.iter().cloned());
            if listed_scope {
                restored.seen.extend(segment.users.iter().map(|r| r.user.id.clone()));
            }
            // A head's page is listed again on resume and gives its next cursor again.
            if let Some(next) = &segment.next_cursor
                && segment.head_of_page.is_none()
            {
                restored.cursors.remember(next);
            }
            match &segment.head_of_page {
                Some(page) => {
                    restored.cursor = page.cursor.clone();
                    restored.listed = false;
                    restored.recorded_of_next_page = segment.users.iter().map(|r| r.user.id.clone()).collect();
                }
                None => {
                    restored.cursor = segment.next_cursor.clone();
                    restored.listed = segment.next_cursor.is_none();
                    restored.recorded_of_next_page.clear();
                }
            }
            restored.next_index = index + 1;
            if !segment.complete {
                restored.unfinished.push(segment);
            }
        }
        let mut progress = self.progress.lock().unwrap();
        progress.counts = counts;
        progress.counts.names_not_found = unresolved.len() as i64;
        progress.listed = restored.listed;
        progress.unresolved = unresolved;
        progress.kept_factors = kept.kept_factors;
        progress.lost_factors = kept.lost_factors;
        Ok(restored)
    }

    /// Takes up, from the audit trail, what was done to the users an unfinished segment shows as
    /// planned: the segment is recorded again only once all its users are done, so after a
    /// restart its finished users would otherwise be worked on again (sessions ended twice,
    /// deletions sent again). Each user finished before the restart becomes finished here; one
    /// in flight goes on from the steps whose lines reached the trail. A segment recorded by
    /// another operator process (whose trail this is not) is redone from the provider's answers.
    fn replay(&self, job: &RecallJob, segment: &mut Segment) -> Result<()> {
        let Some(mark) = segment.audit_from.clone() else { return Ok(()) };
        // Lines name users by username; a name two planned users share is left to the provider.
        let mut planned: HashMap<String, Option<usize>> = HashMap::new();
        for (i, record) in segment.planned() {
            planned.entry(record.user.username.clone()).and_modify(|at| *at = None).or_insert(Some(i));
        }
        let ends_enrollments = self.provider.capabilities().revoking_ends_enrollments;
        let users = &mut segment.users;
        let since = self.audit.read_since(&mark, |line| {
            if line.event.recall != job.recall || line.event.backend.as_deref() != Some(job.backend.as_str()) {
                return;
            }
            if let Some(Some(i)) = line.event.user.as_ref().and_then(|name| planned.get(name)) {
                replay_line(&mut users[*i], &line, &ends_enrollments);
            }
        })?;
        let why = match since {
            crate::audit::Since::Read => return Ok(()),
            crate::audit::Since::Lost(why) => return Err(crate::Error::TrailLost(format!("segment {} of backend {}: {why}", segment.index, job.backend))),
            crate::audit::Since::OtherTrail => "the segment was recorded beside another audit trail",
            crate::audit::Since::Unverified => "the trail's lines after the segment's mark do not verify under the audit key (was the key changed?)",
        };
        tracing::warn!(recall = %job.recall, backend = %job.backend, segment = segment.index, "{why}; its unfinished users are taken up from the provider's answers");
        Ok(())
    }

    /// Resolves the recall's exclusions on this backend; fails, before anything is touched, when
    /// one cannot be resolved (an exclusion group that does not exist, an unreachable provider).
    pub async fn resolve_exclusions(&self, job: &RecallJob) -> Result<Exclusions> {
        Exclusions::resolve(self.provider.as_ref(), &job.exclude_users, &job.exclude_groups).await
    }

    /// Invalidates every user in scope on this backend, resuming from the ledger.
    ///
    /// Three stages run side by side so none waits on another: `record_segments` lists pages,
    /// snapshots their users and writes them to the ledger as a segment (write-ahead), a segment
    /// ahead; `work_segments` keeps up to `concurrency` users in flight across page boundaries;
    /// `write_finished` records each segment again once its last user is done. A user is touched
    /// only after the segment holding their snapshot is durable.
    ///
    /// The two stages that talk to the provider share `concurrency` turns, one per user being
    /// snapshotted or worked: a user's requests go one at a time, so the backend's cap on requests
    /// in flight is then never waited on. Without the turns both stages would keep `concurrency`
    /// users each, and most requests would queue for the cap (61 % in a 30 k-user run), each
    /// wait another wake-up of its task.
    pub async fn revoke(&self, job: &RecallJob) -> Result<RunEnd> {
        let exclusions = self.resolve_exclusions(job).await?;
        self.revoke_with(job, &exclusions, None).await
    }

    /// `revoke` with exclusions already resolved.
    /// `restored`: what `restore` gave, when the caller read the ledger already.
    pub async fn revoke_with(&self, job: &RecallJob, exclusions: &Exclusions, restored: Option<Restored>) -> Result<RunEnd> {
        let restored = match restored {
            Some(restored) => restored,
            None => self.restore(job).await?,
        };
        let job = &RecallJob { exclusions_now: Some(Arc::new(exclusions.clone())), ..job.clone() };
        let turns = Arc::new(Semaphore::new(job.concurrency));
        // Set when working on users fails in the operator itself: stop listing more.
        let halt = Arc::new(AtomicBool::new(false));
        let (recorded, to_work) = mpsc::channel(1);
        let (finished, to_write) = mpsc::unbounded_channel();
        let (listed, worked, written) =
            tokio::join!(self.record_segments(job, exclusions, restored, recorded, &turns, &halt), self.work_segments(job, to_work, finished, &turns, &halt), self.write_finished(to_write, &halt));
        // The operator's own failure outranks a stop; the workers' error is the most direct.
        let all_worked = worked?;
        written?;
        let listed = listed?;
        if listed && all_worked {
            self.progress.lock().unwrap().listed = true;
            Ok(RunEnd::Finished)
        } else {
            Ok(RunEnd::Stopped)
        }
    }

    /// Lists and snapshots every user in scope into the ledger, as `revoke` does, but touches
    /// nobody: each recorded segment is counted into the backend's plan. `revoke` later works
    /// exactly these users. `restored`: what `restore` gave, when the caller read the ledger already.
    pub async fn plan(&self, job: &RecallJob, exclusions: &Exclusions, restored: Option<Restored>) -> Result<RunEnd> {
        let restored = match restored {
            Some(restored) => restored,
            None => self.restore(job).await?,
        };
        let job = RecallJob { plan_only: true, ..job.clone() };
        let turns = Semaphore::new(job.concurrency);
        let halt = AtomicBool::new(false);
        let (recorded, mut to_work) = mpsc::channel::<ToWork>(1);
        // Counted afresh from every segment, those of an earlier run's plan included.
        self.progress.lock().unwrap().plan = Some(RecallPlan::default());
        let tally = async {
            while let Some(work) = to_work.recv().await {
                let part = plan_of(&work.segment);
                self.progress.lock().unwrap().plan.get_or_insert_default().add(&part);
            }
        };
        let (listed, ()) = tokio::join!(self.record_segments(&job, exclusions, restored, recorded, &turns, &halt), tally);
        if listed? {
            self.progress.lock().unwrap().listed = true;
            Ok(RunEnd::Finished)
        } else {
            Ok(RunEnd::Stopped)
        }
    }

    /// Stage one: hands over the unfinished segments of an earlier run, then lists, snapshots and
    /// records new ones. True once the last page has been recorded and handed over.
    async fn record_segments(
        &self,
        job: &RecallJob,
        exclusions: &Exclusions,
        restored: Restored,
        recorded: mpsc::Sender<ToWork>,
        turns: &Semaphore,
        halt: &AtomicBool,
    ) -> Result<bool> {
        for mut segment in restored.unfinished {
            // A plan's segment is worked for the first time: recorded as such before anyone in
            // it is touched, so only a crash after that takes it up as resumed.
            let resumed = !segment.planned_only;
            let from_plan = segment.planned_only && !job.plan_only;
            if from_plan {
                segment.planned_only = false;
                self.persist(&segment).await?;
            }
            if recorded.send(ToWork { segment, resumed, from_plan }).await.is_err() {
                return Ok(false);
            }
        }
        if restored.listed {
            return Ok(true);
        }
        let (mut cursor, mut index, mut recorded_before, mut seen, mut cursors, mut next_place) =
            (restored.cursor, restored.next_index, restored.recorded_of_next_page, restored.seen, restored.cursors, restored.next_place);
        // Users listed and snapshotted for the next segment, and their size in the ledger; names
        // that matched nobody, recorded with the next segment (exclusions' first).
        let (mut users, mut json_bytes) = (Vec::new(), 0);
        let mut unresolved = exclusions.unresolved.clone();
        loop {
            if self.stopping() || halt.load(Ordering::Acquire) {
                // Users snapshotted but not recorded were never touched: listed again on resume.
                return Ok(false);
            }
            let listed_page = self
                .list_page(job, cursor.as_deref(), &mut seen)
                .await
                .and_then(|page| cursors.take(page.next.as_deref()).map(|()| page).map_err(|e| crate::Error::ListingFailed(e.of(&job.backend_key()).to_string())));
            let page = match listed_page {
                Ok(page) => page,
                Err(e @ crate::Error::ListingFailed(_)) => {
                    // The listing ends here: the users already snapshotted are recorded and worked
                    // on, as the message says.
                    if !users.is_empty() {
                        let segment = Segment { unresolved: std::mem::take(&mut unresolved), ..Segment::fresh(&job.backend, index, cursor.clone(), std::mem::take(&mut users)) };
                        self.hand_over(job, segment, &recorded).await?;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            unresolved.extend(page.unresolved);
            let mut listed: Vec<UserRecord> = page
                .users
                .into_iter()
                .filter(|user| !recorded_before.contains(&user.id))
                .map(|user| {
                    let mut record = UserRecord::planned(user);
                    if let Some(rule) = exclusions.rule_for(&record.user) {
                        record.state = UserState::Excluded;
                        record.note = Some(rule.to_string());
                    }
                    record
                })
                .collect();
            // A record that did not decode fails that user alone, named as far as it shows. It
            // has no id to act on: nothing is revoked for it, and a resume lists it again only
            // if its page was not recorded.
            listed.extend(page.unreadable.into_iter().map(|bad| UserRecord {
                state: UserState::Failed,
                note: Some(bad.why),
                ..UserRecord::planned(UserRef { id: String::new(), username: bad.label })
            }));
            recorded_before.clear();
            if index == 0 && listed.len() > HEAD_USERS {
                let rest = listed.split_off(HEAD_USERS);
                self.snapshot_users(job, &mut listed, turns).await;
                place(job, &mut listed, &mut next_place);
                let head = Segment {
                    head_of_page: Some(PageStart { cursor: cursor.clone() }),
                    unresolved: std::mem::take(&mut unresolved),
                    ..Segment::fresh(&job.backend, index, page.next.clone(), listed)
                };
                if !self.hand_over(job, head, &recorded).await? {
                    return Ok(false);
                }
                (index, listed) = (index + 1, rest);
            }
            self.snapshot_users(job, &mut listed, turns).await;
            place(job, &mut listed, &mut next_place);
            json_bytes += listed.iter().map(ledger::json_len).sum::<usize>();
            users.append(&mut listed);
            let last = page.next.is_none();
            if last || segment_is_full(index, users.len(), json_bytes) {
                let segment = Segment { unresolved: std::mem::take(&mut unresolved), ..Segment::fresh(&job.backend, index, page.next.clone(), std::mem::take(&mut users)) };
                if !self.hand_over(job, segment, &recorded).await? {
                    return Ok(false);
                }
                (index, json_bytes) = (index + 1, 0);
            }
            if last {
                return Ok(true);
            }
            cursor = page.next;
        }
    }

    /// One page of the scope. An answer that cannot be listed from (a body that does not decode,
    /// a next-page link to another host) is asked for again a few times, then ends the listing:
    /// asked for ever, it would hold the recall in Revoking with no end. A provider that is
    /// unavailable is waited for (the run is retried), as its outage may end.
    async fn list_page(&self, job: &RecallJob, cursor: Option<&str>, seen: &mut HashSet<String>) -> Result<scope::ScopePage> {
        let mut attempts = 0;
        loop {
            match scope::next_page(self.provider.as_ref(), &job.scope, cursor, seen).await {
                Err(crate::Error::Provider(why)) if why.kind() == ErrorKind::Rejected => {
                    attempts += 1;
                    if attempts == LISTING_ATTEMPTS {
                        return Err(crate::Error::ListingFailed(why.reworded(|m| format!("listing users failed {attempts} times: {m}")).of(&job.backend_key()).to_string()));
                    }
                    tracing::warn!(recall = %job.recall, backend = %job.backend, error = %why, attempts, "a page of users could not be listed; asking again");
                    tokio::time::sleep(LISTING_RETRY * attempts).await;
                }
                other => return other,
            }
        }
    }

    /// Records what each planned user holds, before touching anything (write-ahead). Users whose
    /// snapshot fails are failed here and never touched.
    async fn snapshot_users(&self, job: &RecallJob, users: &mut [UserRecord], turns: &Semaphore) {
        let needs_snapshot: Vec<usize> = users.iter().enumerate().filter(|(_, r)| r.state == UserState::Planned).map(|(i, _)| i).collect();
        let snapshots: Vec<(usize, std::result::Result<_, ProviderError>)> = futures::stream::iter(needs_snapshot)
            .map(|i| {
                let user = users[i].user.clone();
                async move {
                    let _turn = turns.acquire().await.expect("turns are never closed");
                    (i, self.provider.snapshot(&user, &job.kinds, job.cutoff).await)
                }
            })
            .buffer_unordered(job.concurrency)
            .collect()
            .await;
        for (i, snapshot) in snapshots {
            match snapshot {
                Ok(mut s) => {
                    // The provider's logs must reach this far before a factor of unknown age is judged.
                    s.taken_at = Some(jiff::Timestamp::now());
                    // A factor listed twice is revoked and counted once.
                    dedup_factors(&mut s.factors);
                    // Sessions left alone are not counted as ended.
                    if !job.revoke_sessions {
                        s.sessions = 0;
                        s.session_handles.clear();
                    }
                    users[i].snapshot = Some(s);
                }
                Err(e) => {
                    users[i].state = UserState::Failed;
                    users[i].note = Some(e.to_string());
                }
            }
        }
    }

    /// Audits the users a fresh segment settles without touching (excluded, failed to
    /// snapshot), records the segment, counts it and hands it to the workers. False when the
    /// workers have stopped: what was recorded is resumed from the ledger.
    async fn hand_over(&self, job: &RecallJob, mut segment: Segment, recorded: &mpsc::Sender<ToWork>) -> Result<bool> {
        for name in &segment.unresolved {
            self.audit(job, None, Action::ScopeUnresolved, Outcome::NotFound, |e| e.detail = Some(format!("{name}: matched nobody on this backend")))?;
        }
        for record in segment.users.iter().filter(|r| r.state != UserState::Planned) {
            let (action, outcome) = if record.state == UserState::Excluded { (Action::UserExclude, Outcome::Excluded) } else { (Action::UserFail, Outcome::Failed) };
            self.audit(job, Some(&record.user), action, outcome, |e| e.detail = record.note.clone())?;
        }
        segment.audit_from = self.audit.mark();
        segment.planned_only = job.plan_only;
        self.persist(&segment).await?;
        {
            let mut progress = self.progress.lock().unwrap();
            progress.counts.targeted += segment.users.len() as i64;
            progress.unresolved.extend(segment.unresolved.iter().cloned());
            progress.counts.names_not_found = progress.unresolved.len() as i64;
            for record in segment.users.iter().filter(|r| r.state != UserState::Planned) {
                count_finished(record, &mut progress.counts);
            }
        }
        Ok(recorded.send(ToWork { segment, resumed: false, from_plan: false }).await.is_ok())
    }

    /// Stage two: the users of all recorded segments, `concurrency` at a time across worker
    /// tasks, with no barrier at page boundaries. Each user is counted the moment its steps are
    /// audited; each segment goes to `finished` once its last user is done, and at the end
    /// whatever is left unfinished goes there as it stands. True when every segment handed over
    /// was finished.
    async fn work_segments(&self, job: &RecallJob, to_work: mpsc::Receiver<ToWork>, finished: mpsc::UnboundedSender<Segment>, turns: &Arc<Semaphore>, halt: &Arc<AtomicBool>) -> Result<bool> {
        // Segments with users still to finish, by index, with how many remain.
        let open: Mutex<HashMap<u32, (Segment, usize)>> = Mutex::default();
        let close = |index: u32| {
            if let Some((mut segment, _)) = open.lock().unwrap().remove(&index) {
                segment.complete = segment.users.iter().all(|r| r.state != UserState::Planned);
                // The writer outlives this stage; a send fails only if it already failed.
                let _ = finished.send(segment);
            }
        };
        let users = futures::stream::unfold(to_work, |mut to_work| async move { to_work.recv().await.map(|next| (next, to_work)) })
            .flat_map(|ToWork { segment, resumed, from_plan }| {
                let index = segment.index;
                // A rollout's pass works the users of its waves; the others stay planned. Users of
                // a wave no earlier run started were never touched, whatever the segment says.
                let planned: Vec<ToDo> = segment
                    .planned()
                    .filter_map(|(i, r)| {
                        let resumed = match &job.rollout {
                            None => resumed,
                            Some(gate) if gate.wave_of(r) > gate.through => return None,
                            Some(gate) => resumed && gate.started_before.is_some_and(|w| gate.wave_of(r) <= w),
                        };
                        Some(ToDo { index, i, record: r.clone(), resumed, from_plan })
                    })
                    .collect();
                open.lock().unwrap().insert(index, (segment, planned.len()));
                if planned.is_empty() {
                    close(index);
                }
                futures::stream::iter(planned)
            })
            .take_while(|_| std::future::ready(!self.stopping() && !halt.load(Ordering::Acquire)))
            // Boxed as Send here: the compiler cannot prove it for the nested closures otherwise.
            .boxed();

        // The users go to one worker task per runtime thread, so a recall uses every core; the
        // task that drew them up keeps the segments' books. Dropping the set aborts the workers.
        let shards = tokio::runtime::Handle::current().metrics().num_workers().clamp(1, job.concurrency);
        // A short queue: after a stop, the workers finish what they hold and take nothing more.
        let (to_do, queue) = mpsc::channel::<ToDo>(shards);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let (done, mut results) = mpsc::unbounded_channel();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..shards {
            let (runner, job, queue, done, turns, halt) = (self.clone(), job.clone(), queue.clone(), done.clone(), turns.clone(), halt.clone());
            workers.spawn(async move { runner.work_users(&job, &queue, job.concurrency.div_ceil(shards), &done, &turns, &halt).await });
        }
        // Only the workers hold the queue and `done`: when they stop, sending to them fails
        // rather than waits, and the books close.
        drop((queue, done));
        let hand_out = async move {
            let mut users = users;
            while let Some(user) = users.next().await {
                if to_do.send(user).await.is_err() {
                    break;
                }
            }
            // `to_do` and the stream drop here: the workers finish what they have, and the
            // recording stage stops handing over.
        };
        let mut first_error = None;
        let book = async {
            while let Some(result) = results.recv().await {
                match result {
                    Ok(ToDo { index, i, record, .. }) => {
                        let done = {
                            let mut open = open.lock().unwrap();
                            let (segment, remaining) = open.get_mut(&index).expect("a user's segment stays open until its last user is done");
                            segment.users[i] = record;
                            *remaining -= 1;
                            *remaining == 0
                        };
                        if done {
                            close(index);
                        }
                    }
                    Err(e) => {
                        // Let the users in flight finish and be recorded, then report the failure.
                        halt.store(true, Ordering::Release);
                        first_error.get_or_insert(e);
                    }
                }
            }
        };
        tokio::join!(hand_out, book);
        while let Some(worker) = workers.join_next().await {
            if let Err(e) = worker
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        let unfinished: Vec<u32> = open.lock().unwrap().keys().copied().collect();
        let all_done = unfinished.is_empty();
        for index in unfinished {
            close(index);
        }
        // `finished` drops on return, which ends the writing stage.
        match first_error {
            Some(e) => Err(e),
            None => Ok(all_done),
        }
    }

    /// One worker of stage two: takes users from the shared queue and works on up to `in_flight`
    /// of them at once; each finished user (or the operator's own error) goes to `done`.
    async fn work_users(&self, job: &RecallJob, queue: &tokio::sync::Mutex<mpsc::Receiver<ToDo>>, in_flight: usize, done: &mpsc::UnboundedSender<Result<ToDo>>, turns: &Semaphore, halt: &AtomicBool) {
        let mut working = futures::stream::FuturesUnordered::new();
        let mut more = true;
        loop {
            let take = more && working.len() < in_flight && !self.stopping() && !halt.load(Ordering::Acquire);
            tokio::select! {
                next = async { queue.lock().await.recv().await }, if take => match next {
                    Some(user) => working.push(async {
                        let _turn = turns.acquire().await.expect("turns are never closed");
                        self.work_user(job, user).await
                    }),
                    None => more = false,
                },
                Some(finished) = working.next() => {
                    let _ = done.send(finished);
                }
                else => return,
            }
        }
    }

    async fn work_user(&self, job: &RecallJob, mut user: ToDo) -> Result<ToDo> {
        let excluded_since = job.exclusions_now.as_ref().filter(|_| user.record.work.is_none()).and_then(|e| e.rule_for(&user.record.user)).map(str::to_string);
        match excluded_since {
            // A break-glass account added to an exclusion after the plan is still spared.
            Some(rule) => {
                self.audit(job, Some(&user.record.user), Action::UserExclude, Outcome::Excluded, |e| e.detail = Some(format!("{rule} (excluded since the user was recorded)")))?;
                user.record.state = UserState::Excluded;
                user.record.note = Some(rule);
            }
            None => self.invalidate_user(job, &mut user.record, user.resumed, user.from_plan).await?,
        }
        // A restart then finds this user's lines, and does not work on them again.
        self.audit.write_out()?;
        let mut progress = self.progress.lock().unwrap();
        count_finished(&user.record, &mut progress.counts);
        progress.note_kept(&user.record);
        Ok(user)
    }

    /// Stage three: records finished (or, at a stop, part-finished) segments, one at a time.
    async fn write_finished(&self, mut to_write: mpsc::UnboundedReceiver<Segment>, halt: &AtomicBool) -> Result<()> {
        while let Some(segment) = to_write.recv().await {
            if let Err(e) = self.persist(&segment).await {
                // The segment stays as last recorded and is redone on resume; stop the rest.
                halt.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// One user's ordered steps: sessions, then recorded factors, then required enrollment,
    /// going on from what `record.work` says was done. Sets the user's state: invalidated,
    /// failed (what was done before the failure stays recorded and counted), or awaiting the
    /// provider's logs when a factor of unknown age comes up before they can tell its age.
    /// The error is the operator's own (audit or ledger).
    /// `resumed`: the user may have been worked on before a crash and may already have re-enrolled.
    async fn invalidate_user(&self, job: &RecallJob, record: &mut UserRecord, resumed: bool, from_plan: bool) -> Result<()> {
        let mut work = record.work.take().unwrap_or_default();
        let outcome = self.user_steps(job, record, &mut work, resumed, from_plan).await;
        record.work = Some(work);
        match outcome {
            Ok(Steps::Done) => record.state = UserState::Invalidated,
            Ok(Steps::AwaitingLogs) => record.state = UserState::AwaitingLogs,
            Err(StepError::Operator(e)) => return Err(e),
            Err(StepError::Provider(e)) => {
                self.audit(job, Some(&record.user), Action::UserFail, Outcome::Failed, |ev| ev.detail = Some(e.to_string()))?;
                record.state = UserState::Failed;
                record.note = Some(e.to_string());
            }
        }
        Ok(())
    }

    async fn user_steps(&self, job: &RecallJob, record: &UserRecord, work: &mut Work, resumed: bool, from_plan: bool) -> std::result::Result<Steps, StepError> {
        let user = &record.user;
        let none = UserSnapshot::default();
        let snapshot = record.snapshot.as_ref().unwrap_or(&none);
        if job.revoke_sessions && !work.sessions_ended {
            self.provider.revoke_sessions(user, snapshot).await?;
            work.sessions_ended = true;
            self.audit(job, Some(user), Action::SessionRevoke, Outcome::Revoked, |e| e.detail = Some(format!("{} sessions or offline grants", snapshot.sessions)))?;
        }
        // Factors whose age only the provider's logs can tell are judged once the logs reach the
        // snapshot; until then the user waits, and the factors after them too (their order can
        // matter to the provider, such as Entra's default method last).
        let undated: Vec<_> = snapshot.factors.iter().filter(|f| f.unknown_age && !work.settled(&f.id)).cloned().collect();
        let mut ages: HashMap<String, LoggedAge> = HashMap::new();
        if !undated.is_empty() {
            match self.logs_ready_at(snapshot) {
                Some(ready) if jiff::Timestamp::now() < ready => {}
                _ => match self.provider.factor_ages(user, &undated, job.cutoff, snapshot.taken_at.unwrap_or(job.cutoff)).await {
                    Ok(found) => ages.extend(undated.iter().map(|f| f.id.clone()).zip(found)),
                    // Asked again on the next pass.
                    Err(e) if e.kind() == ErrorKind::Unavailable => tracing::warn!(recall = %job.recall, backend = %job.backend, error = %e, "the provider's logs could not be read; factors of unknown age wait"),
                    Err(e) => {
                        tracing::warn!(recall = %job.recall, backend = %job.backend, error = %e, "the provider's logs cannot tell factors' age; they are kept");
                        ages.extend(undated.iter().map(|f| (f.id.clone(), LoggedAge::Unknown)));
                    }
                },
            }
        }
        let mut after_others = Vec::new();
        for factor in &snapshot.factors {
            if work.settled(&factor.id) {
                continue;
            }
            if factor.unknown_age {
                match ages.get(&factor.id) {
                    None => return Ok(Steps::AwaitingLogs),
                    Some(LoggedAge::Before) => {}
                    Some(LoggedAge::Since) => {
                        work.kept_new.push(factor.id.clone());
                        self.audit_factor(job, user, factor, Action::FactorKeep, Outcome::RegisteredSinceCutoff)?;
                        continue;
                    }
                    Some(LoggedAge::Unknown) => {
                        work.kept_unknown_age.push(factor.id.clone());
                        self.audit_factor(job, user, factor, Action::FactorKeep, Outcome::UnknownAge)?;
                        continue;
                    }
                }
            }
            let (outcome, unanswered) = noting_unanswered_writes(self.provider.revoke_factor(user, factor)).await;
            match outcome? {
                RevokeOutcome::AfterOthers(_) => after_others.push(factor),
                outcome => self.record_revoke(job, user, factor, outcome, work, resumed || unanswered)?,
            }
        }
        for factor in after_others {
            let (outcome, unanswered) = noting_unanswered_writes(self.provider.revoke_factor(user, factor)).await;
            match outcome? {
                RevokeOutcome::AfterOthers(refusal) => return Err(refusal.reworded(|m| format!("{m} (refused again once the user's other factors were dealt with)")).of(&job.backend_key()).into()),
                outcome => self.record_revoke(job, user, factor, outcome, work, resumed || unanswered)?,
            }
        }
        // A user who already held a factor from after the cutoff when reached, or a resumed
        // user who enrolled anew since, must not be asked to enroll yet again. Where the
        // enrollment came from is asked of the provider's log: what anomaly review starts with.
        let lost: Vec<_> = snapshot.factors.iter().filter(|f| work.revoked.contains(&f.id)).cloned().collect();
        let seen = snapshot.enrolled_since_cutoff.clone().or_else(|| {
            let kept: Vec<_> = snapshot.factors.iter().filter(|f| work.kept_new.contains(&f.id)).collect();
            kept.first().map(|f| crate::backends::Enrollment { kind: f.kind, at: snapshot.taken_at.unwrap_or(job.cutoff), origin: None })
        });
        let already = match seen {
            // The origin only adds to what the snapshot showed: its lookup never fails the user.
            Some(seen) => Some(match self.provider.enrolled_since(user, job.cutoff).await {
                Ok(found) => found.unwrap_or(seen),
                Err(e) => {
                    tracing::warn!(recall = %job.recall, backend = %job.backend, error = %e, "where an enrollment came from could not be read");
                    seen
                }
            }),
            // Taken up after a restart, or from a plan made a while ago: the user may have enrolled since.
            None if (resumed || from_plan) && !lost.is_empty() => self.provider.enrolled_since(user, job.cutoff).await?,
            None => None,
        };
        if let Some(enrollment) = already {
            self.audit(job, Some(user), Action::EnrollmentRequire, Outcome::Skipped, |e| {
                e.factor_kind = Some(enrollment.kind.into());
                e.detail = Some(match &enrollment.origin {
                    Some(origin) => format!("already re-enrolled at {} from {origin}", enrollment.at),
                    None => format!("already re-enrolled at {}", enrollment.at),
                });
            })?;
        } else if !lost.is_empty() {
            self.provider.require_enrollment(user, &lost, job.channel).await?;
            let kinds: Vec<&str> = lost.iter().map(|f| f.kind.as_str()).collect();
            let via = match job.channel {
                crate::backends::EnrollmentChannel::NextSignIn => String::new(),
                crate::backends::EnrollmentChannel::Link { reset_password: true, .. } => " via a link to the address on file, the password reset".into(),
                crate::backends::EnrollmentChannel::Link { .. } => " via a link to the address on file".into(),
            };
            self.audit(job, Some(user), Action::EnrollmentRequire, Outcome::Done, |e| e.detail = Some(format!("{}{via}", kinds.join(","))))?;
        }
        Ok(Steps::Done)
    }

    /// Records and audits a factor's deletion (or its absence). `own_attempt_before`: this recall
    /// may already have deleted it without learning so (the user taken up again after a crash, or
    /// a deletion whose answer was lost and retried), so finding it gone counts as the recall's.
    fn record_revoke(&self, job: &RecallJob, user: &UserRef, factor: &crate::backends::FactorRef, outcome: RevokeOutcome, work: &mut Work, own_attempt_before: bool) -> Result<()> {
        if matches!(outcome, RevokeOutcome::Revoked | RevokeOutcome::RevokedTaking(_)) && self.provider.capabilities().revoking_ends_enrollments.contains(&factor.kind) {
            work.enrollments_ended_at = Some(jiff::Timestamp::now());
        }
        let outcome = match outcome {
            RevokeOutcome::Revoked => {
                work.revoked.push(factor.id.clone());
                Outcome::Revoked
            }
            RevokeOutcome::RevokedTaking(taken) => {
                work.revoked.push(factor.id.clone());
                for name in &taken {
                    self.audit(job, Some(user), Action::FactorLostWithRevoked, Outcome::Lost, |e| e.detail = Some(lost_with(name, factor)))?;
                }
                work.lost_new.extend(taken);
                Outcome::Revoked
            }
            // Taken with a factor this recall deleted from the user just before.
            RevokeOutcome::WentWithLinked if !work.revoked.is_empty() => {
                work.revoked.push(factor.id.clone());
                Outcome::RevokedWithLinked
            }
            // A user taken up again after a crash, or a deletion retried after its answer was
            // lost, most likely lost it to this recall's attempt before; otherwise it went by
            // other hands and is not counted.
            RevokeOutcome::AlreadyGone | RevokeOutcome::WentWithLinked if own_attempt_before => {
                work.revoked.push(factor.id.clone());
                Outcome::GoneSinceEarlierAttempt
            }
            RevokeOutcome::AlreadyGone | RevokeOutcome::WentWithLinked => {
                work.gone.push(factor.id.clone());
                Outcome::AlreadyGone
            }
            RevokeOutcome::AfterOthers(_) => return Ok(()),
        };
        self.audit_factor(job, user, factor, Action::FactorRevoke, outcome)
    }

    fn audit_factor(&self, job: &RecallJob, user: &UserRef, factor: &crate::backends::FactorRef, action: Action, outcome: Outcome) -> Result<()> {
        self.audit(job, Some(user), action, outcome, |e| {
            e.factor_kind = Some(factor.kind.into());
            e.factor_id = Some(factor.id.clone());
        })
    }

    /// When the provider's logs show every registration up to the snapshot; None when they
    /// give no evidence of age (there is nothing to wait for).
    fn logs_ready_at(&self, snapshot: &UserSnapshot) -> Option<jiff::Timestamp> {
        let delay = self.provider.capabilities().log_delay?;
        let taken = snapshot.taken_at?;
        Some(taken.checked_add(jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::MAX)).unwrap_or(jiff::Timestamp::MAX))
    }

    /// Takes up the users waiting for the provider's logs whose wait is over, and recounts from
    /// the ledger. Returns when the next waiting user's logs will be ready, None when nobody
    /// waits any more.
    pub async fn settle(&self, job: &RecallJob) -> Result<Option<jiff::Timestamp>> {
        let mut next_ready: Option<jiff::Timestamp> = None;
        let mut counts = RecallCounts::default();
        let mut kept = Progress::default();
        for index in self.ledger.segments(&job.backend).await? {
            let mut segment = self.ledger.read(&job.backend, index).await?;
            let now = jiff::Timestamp::now();
            let ready: Vec<usize> = segment
                .users
                .iter()
                .enumerate()
                .filter(|(_, r)| r.state == UserState::AwaitingLogs && r.snapshot.as_ref().and_then(|s| self.logs_ready_at(s)).is_none_or(|at| at <= now))
                .map(|(i, _)| i)
                .collect();
            if !ready.is_empty() && !self.stopping() {
                let worked: Vec<Result<(usize, UserRecord)>> = futures::stream::iter(ready)
                    .map(|i| {
                        let mut record = segment.users[i].clone();
                        async move {
                            // At a stop the rest keep waiting, as recorded: taken up on the next pass.
                            if self.stopping() {
                                return Ok((i, record));
                            }
                            let mut waiting = RecallCounts::default();
                            ledger::add_user(&record, &mut waiting);
                            self.invalidate_user(job, &mut record, false, false).await?;
                            // Progress moves user by user; the ledger's recount below is the record.
                            let mut progress = self.progress.lock().unwrap();
                            ledger::add_user(&record, &mut progress.counts);
                            progress.counts.subtract(&waiting);
                            Ok((i, record))
                        }
                    })
                    .buffer_unordered(job.concurrency)
                    .collect()
                    .await;
                // What finished is recorded even when another user's work hit an operator error.
                let mut first_error = None;
                for result in worked {
                    match result {
                        Ok((i, record)) => segment.users[i] = record,
                        Err(e) => first_error = first_error.or(Some(e)),
                    }
                }
                self.persist(&segment).await?;
                if let Some(e) = first_error {
                    return Err(e);
                }
            }
            for record in &segment.users {
                if record.state == UserState::AwaitingLogs {
                    let at = record.snapshot.as_ref().and_then(|s| self.logs_ready_at(s)).unwrap_or(now);
                    next_ready = Some(next_ready.map_or(at, |n| n.min(at)));
                }
                kept.note_kept(record);
            }
            segment.add_counts(&mut counts);
        }
        let mut progress = self.progress.lock().unwrap();
        counts.names_not_found = progress.counts.names_not_found;
        progress.counts = counts;
        progress.kept_factors = kept.kept_factors;
        progress.lost_factors = kept.lost_factors;
        Ok(next_ready)
    }

    /// One check of the re-enrollment window: from the provider's event log where it serves one
    /// as a stream, else by asking about every pending user.
    pub async fn check_re_enrollment(&self, job: &RecallJob) -> Result<RunEnd> {
        self.act_on_reports(job).await?;
        if self.provider.capabilities().event_stream {
            return self.watch_window(job).await;
        }
        self.poll_pending(job).await
    }

    fn audit_enrollment(&self, job: &RecallJob, user: &UserRef, enrollment: &crate::backends::Enrollment) -> Result<()> {
        self.audit(job, Some(user), Action::ReenrollmentSeen, Outcome::Done, |e| {
            e.factor_kind = Some(enrollment.kind.into());
            // Where from, as the provider logged it: what anomaly review starts with.
            e.detail = Some(match &enrollment.origin {
                Some(origin) => format!("enrolled at {} from {origin}", enrollment.at),
                None => format!("enrolled at {}", enrollment.at),
            });
        })
    }

    /// One pass over invalidated users who have not re-enrolled, asking the provider about each:
    /// records those who have. What a check does where the provider serves no stream (public so
    /// the benchmark can compare the two).
    pub async fn poll_pending(&self, job: &RecallJob) -> Result<RunEnd> {
        for index in self.ledger.segments(&job.backend).await? {
            if self.stopping() {
                return Ok(RunEnd::Stopped);
            }
            let mut segment = self.ledger.read(&job.backend, index).await?;
            let waiting: Vec<usize> = segment.users.iter().enumerate().filter(|(_, r)| r.awaits_re_enrollment()).map(|(i, _)| i).collect();
            let seen: Vec<(usize, std::result::Result<_, ProviderError>)> = futures::stream::iter(waiting)
                .map(|i| {
                    let user = segment.users[i].user.clone();
                    let since = segment.users[i].re_enrollment_counts_from(job.cutoff);
                    async move { (i, self.provider.enrolled_since(&user, since).await) }
                })
                .buffer_unordered(job.concurrency)
                .collect()
                .await;
            let mut changed = Vec::new();
            for (i, result) in seen {
                match result {
                    Ok(Some(enrollment)) => {
                        let user = segment.users[i].user.clone();
                        self.audit_enrollment(job, &user, &enrollment)?;
                        segment.users[i].re_enrolled = Some(enrollment);
                        changed.push(i);
                    }
                    Ok(None) => {}
                    Err(e) => window::warn_check_failed(job, &e),
                }
            }
            if !changed.is_empty() {
                self.persist(&segment).await?;
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
                        self.audit(job, Some(&user), Action::UserDisable, Outcome::Done, |e| e.detail = Some("re-enrollment deadline passed".into()))?;
                        segment.users[i].disabled = true;
                        changed += 1;
                    }
                    Err(e) => self.audit(job, Some(&user), Action::UserDisable, Outcome::Failed, |ev| ev.detail = Some(e.to_string()))?,
                }
            }
            if changed > 0 {
                self.persist(&segment).await?;
                self.progress.lock().unwrap().counts.disabled += changed;
            }
        }
        Ok(RunEnd::Finished)
    }
}

/// Drops factors listed again under an id already listed, keeping the order. A user holds a
/// handful, so this compares in place rather than build a set for every user.
/// The detail of a `factor.lostWithRevoked` line: the new factor's name first, as
/// `lost_name` reads it back.
fn lost_with(name: &str, revoked: &crate::backends::FactorRef) -> String {
    format!("{name}{LOST_WITH} {} {}", revoked.kind.as_str(), revoked.id)
}

const LOST_WITH: &str = ", enrolled since the cutoff, went with";

fn lost_name(detail: &str) -> Option<&str> {
    detail.split_once(LOST_WITH).map(|(name, _)| name)
}

/// Applies one audit line about a user to the user's record, as the step it describes left it.
fn replay_line(record: &mut UserRecord, line: &crate::audit::AuditRecord, ends_enrollments: &[FactorKind]) {
    if record.state != UserState::Planned {
        return;
    }
    let event = &line.event;
    let work = record.work.get_or_insert_default();
    let factor = event.factor_id.clone().filter(|id| !work.settled(id));
    match (&event.action, &event.outcome, factor) {
        (Action::SessionRevoke, Outcome::Revoked, _) => work.sessions_ended = true,
        (Action::FactorRevoke, Outcome::Revoked, Some(id)) => {
            if let Some(crate::audit::AuditedKind::Kind(kind)) = &event.factor_kind
                && ends_enrollments.contains(kind)
            {
                work.enrollments_ended_at = Some(line.time);
            }
            work.revoked.push(id);
        }
        (Action::FactorRevoke, Outcome::RevokedWithLinked | Outcome::GoneSinceEarlierAttempt, Some(id)) => work.revoked.push(id),
        (Action::FactorRevoke, Outcome::AlreadyGone, Some(id)) => work.gone.push(id),
        (Action::FactorKeep, Outcome::RegisteredSinceCutoff, Some(id)) => work.kept_new.push(id),
        (Action::FactorKeep, Outcome::UnknownAge, Some(id)) => work.kept_unknown_age.push(id),
        (Action::FactorLostWithRevoked, Outcome::Lost, _) => {
            if let Some(name) = event.detail.as_deref().and_then(lost_name)
                && !work.lost_new.iter().any(|n| n == name)
            {
                work.lost_new.push(name.to_string());
            }
        }
        // Requiring enrollment (or finding it already done) is a user's last step.
        (Action::EnrollmentRequire, Outcome::Done | Outcome::Skipped, _) => record.state = UserState::Invalidated,
        (Action::UserFail, Outcome::Failed, _) => {
            record.state = UserState::Failed;
            record.note = event.detail.clone();
        }
        _ => {}
    }
}

fn dedup_factors(factors: &mut Vec<crate::backends::FactorRef>) {
    let mut kept = 0;
    for i in 0..factors.len() {
        if !factors[..kept].iter().any(|f| f.id == factors[i].id) {
            factors.swap(kept, i);
            kept += 1;
        }
    }
    factors.truncate(kept);
}

/// A user finished in this run: `targeted` was counted when the page was listed.
fn count_finished(record: &UserRecord, counts: &mut RecallCounts) {
    let mut single = RecallCounts::default();
    ledger::add_user(record, &mut single);
    single.targeted = 0;
    counts.add(&single);
}

/// A rollout's plan records the place of each user still planned once snapshotted (one whose
/// snapshot failed is not worked, and takes no place): which wave they go in follows from it.
fn place(job: &RecallJob, users: &mut [UserRecord], next_place: &mut u32) {
    let Some(gate) = job.rollout.as_ref().filter(|_| job.plan_only) else { return };
    for record in users.iter_mut().filter(|r| r.state == UserState::Planned) {
        record.rollout = Some(if gate.privileged.contains(&record.user.id) {
            crate::ledger::RolloutPlace::Privileged
        } else {
            *next_place = next_place.saturating_add(1);
            crate::ledger::RolloutPlace::Ordinal(*next_place - 1)
        });
    }
}

/// What a segment's planned users hold: what revoking them would do.
fn plan_of(segment: &Segment) -> RecallPlan {
    let mut plan = RecallPlan::default();
    for record in segment.users.iter().filter(|r| r.state == UserState::Planned) {
        plan.users += 1;
        if plan.sample.len() < crate::api::PLAN_SAMPLE {
            plan.sample.push(record.user.username.clone());
        }
        let Some(snapshot) = &record.snapshot else { continue };
        for factor in &snapshot.factors {
            if factor.unknown_age {
                plan.factors_of_unknown_age += 1;
            } else {
                *plan.factors.entry(factor.kind).or_default() += 1;
            }
        }
        plan.sessions += i64::try_from(snapshot.sessions).unwrap_or(i64::MAX);
        plan.already_enrolled += i64::from(snapshot.enrolled_since_cutoff.is_some());
        plan.at_risk += i64::from(snapshot.at_risk.is_some());
        plan.privileged += i64::from(record.rollout == Some(crate::ledger::RolloutPlace::Privileged));
    }
    plan
}

/// Where a user's steps ended.
enum Steps {
    Done,
    /// At a factor of unknown age, before the provider's logs can tell its age.
    AwaitingLogs,
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
