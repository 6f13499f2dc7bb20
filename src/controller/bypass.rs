//! Reconcile of MfaBypass: once a second person approved it, the provider issues its own
//! temporary way in, the pass or code goes to the user's address on file and nowhere else, and it
//! is withdrawn at its lifetime's end or when someone revokes it. Each step is in the audit trail
//! before status says so. A retry of an issue cut short asks the provider again, which replaces
//! what the first try issued.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{Context, FIELD_MANAGER};
use crate::api::{BypassPhase, IdentityBackend, MfaBypass, MfaBypassStatus, MfaRecall, Reason};
use crate::audit::{Action as Audited, AuditEvent, Outcome};
use crate::backends::{BypassSupport, ErrorKind, IdentityProvider, UserRef};
use crate::ledger::{LedgerStore, ResourceLedger, UserState};
use crate::watch::OwnBypass;
use crate::{Error, Result};

/// How soon a bypass whose provider or recall could not be reached is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// How often a working bypass is checked for use, where the provider tells: one read per
/// working bypass, of which there are few.
const USE_CHECK: Duration = Duration::from_secs(15);

/// What the reconcile decided, before status is written.
struct Step {
    status: MfaBypassStatus,
    requeue: Option<Duration>,
}

impl Step {
    fn wait(status: MfaBypassStatus, requeue: Duration) -> Result<Step> {
        Ok(Step { status, requeue: Some(requeue) })
    }
    fn done(status: MfaBypassStatus) -> Result<Step> {
        Ok(Step { status, requeue: None })
    }
}

pub async fn reconcile(cached: Arc<MfaBypass>, ctx: Arc<Context>) -> Result<Action> {
    // Decided on what the apiserver holds, not the watch's cache, which may not have seen this
    // controller's last status write yet: a stale Issuing would issue a second pass.
    let api: Api<MfaBypass> = Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(bypass) = api.get_opt(&cached.name_any()).await? else { return Ok(Action::await_change()) };
    let status = bypass.status.clone().unwrap_or_default();
    if status.phase.is_final() {
        return Ok(Action::await_change());
    }
    let step = decide(&bypass, &ctx, &api, status, bypass.status.is_none()).await?;
    write(&bypass, &ctx, &api, step.status, bypass.status.as_ref()).await?;
    Ok(step.requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Writes `status` if it changed, after the audit lines that say why are on disk (audit before
/// report), and publishes an event when the phase changed.
async fn write(bypass: &MfaBypass, ctx: &Context, api: &Api<MfaBypass>, mut status: MfaBypassStatus, before: Option<&MfaBypassStatus>) -> Result<()> {
    status.observed_generation = bypass.metadata.generation;
    if before == Some(&status) {
        return Ok(());
    }
    ctx.audit.sync().await?;
    let patch = json!({ "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaBypass", "status": status });
    api.patch_status(&bypass.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    if before.map(|s| s.phase) != Some(status.phase) {
        let type_ = if matches!(status.phase, BypassPhase::Failed | BypassPhase::Unsupported) { EventType::Warning } else { EventType::Normal };
        ctx.publish(bypass, type_, Reason::BypassChanged, format!("{:?}: {}", status.phase, status.message)).await;
    }
    Ok(())
}

pub fn error_policy(bypass: Arc<MfaBypass>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(bypass = %bypass.name_any(), %error, "bypass reconcile failed");
    ctx.metrics.reconcile_error("mfabypass", error.category());
    Action::requeue(RETRY)
}

/// The approval the admission policy enforces, checked again here: without the policy installed
/// (or with someone writing status), nothing is issued on one person's say.
fn dual_control(bypass: &MfaBypass) -> std::result::Result<&str, String> {
    match bypass.spec.approved_by.as_deref() {
        Some(approver) if approver != bypass.spec.requested_by => Ok(approver),
        Some(_) => Err(format!("approved by its own requester {}: a second person must approve (install crds/mfabypass-dual-control.yaml so the apiserver refuses this)", bypass.spec.requested_by)),
        None => Err("not approved".into()),
    }
}

async fn decide(bypass: &MfaBypass, ctx: &Context, api: &Api<MfaBypass>, mut status: MfaBypassStatus, fresh: bool) -> Result<Step> {
    let spec = &bypass.spec;
    let audit = |action: Audited, outcome: Outcome, detail: String| -> Result<()> {
        ctx.audit.record(AuditEvent {
            recall: format!("{}/{}", bypass.namespace().unwrap_or_default(), spec.recall),
            backend: Some(spec.backend.clone()),
            user: Some(spec.user.clone()),
            action,
            outcome,
            detail: Some(format!("MfaBypass {}: {detail}", bypass.name_any())),
            ..Default::default()
        })?;
        Ok(())
    };
    let now = jiff::Timestamp::now();
    if fresh {
        audit(Audited::BypassRequest, Outcome::Done, format!("requested by {} for {}: {}", spec.requested_by, spec.lifetime, spec.reason))?;
        status.message = "waiting for a second person to approve (approvedBy)".into();
    }
    if spec.revoked {
        let by = spec.revoked_by.as_deref().unwrap_or("someone");
        let mut withdrawn = true;
        if matches!(status.phase, BypassPhase::Issuing | BypassPhase::Active) {
            withdrawn = match issued_to(bypass, &status, ctx).await? {
                Ok(Some((provider, user))) => match withdraw(&*provider, &user, &status).await {
                    Ok(withdrawn) => withdrawn,
                    Err(e) => return Step::wait(with_message(status, format!("revoked by {by}; withdrawing it at the provider failed ({e}): trying again")), RETRY),
                },
                Ok(None) => true,
                Err(why) => return Step::wait(with_message(status, format!("revoked by {by}; cannot reach the provider to withdraw it ({why}): trying again")), RETRY),
            };
        }
        status.phase = BypassPhase::Revoked;
        status.ended_at = Some(now);
        status.message = match (withdrawn, status.expires_at) {
            (true, _) => format!("revoked by {by}; withdrawn at the provider"),
            (false, until) => format!(
                "revoked by {by}, but {} cannot withdraw it: it works until {}; if it may be in the wrong hands, disable the user at the provider until then",
                spec.backend,
                until.map_or_else(|| "its lifetime ends".to_string(), |t| t.to_string())
            ),
        };
        audit(Audited::BypassRevoke, if withdrawn { Outcome::Done } else { Outcome::Skipped }, status.message.clone())?;
        return Step::done(status);
    }
    match status.phase {
        BypassPhase::AwaitingApproval => {
            if spec.approved_by.is_none() {
                return Step::done(status);
            }
            let approver = match dual_control(bypass) {
                Ok(approver) => approver,
                Err(why) => return fail(status, &audit, why),
            };
            let target = match target(bypass, ctx).await? {
                Ok(target) => target,
                Err(why) => return fail(status, &audit, why),
            };
            let support = match target.provider.capabilities().bypass {
                Some(support) => support,
                None => {
                    let why = target.provider.capabilities().limitations.into_iter().find(|l| l.starts_with("bypass:")).unwrap_or_else(|| "bypass: this provider has none".into());
                    audit(Audited::BypassFail, Outcome::Skipped, format!("approved by {approver}, but the backend cannot issue one: {why}"))?;
                    status.phase = BypassPhase::Unsupported;
                    status.ended_at = Some(now);
                    status.message = format!("{} cannot issue a temporary bypass ({why}); nothing was issued", spec.backend);
                    return Step::done(status);
                }
            };
            let lifetime = match lifetime(spec.lifetime.as_str(), ctx.settings.max_bypass_lifetime, &support) {
                Ok(lifetime) => lifetime,
                Err(why) => return fail(status, &audit, why),
            };
            // One at a time per user: a provider keeps one pass (Entra) or replaces the codes (Duo,
            // Google), so a second would take the first with it, and withdrawing either the other.
            let others = api.list(&Default::default()).await?;
            if let Some(other) = others.items.iter().find(|b| {
                b.metadata.name != bypass.metadata.name
                    && b.spec.backend == spec.backend
                    && b.status.as_ref().is_some_and(|s| matches!(s.phase, BypassPhase::Issuing | BypassPhase::Active) && s.user_id.as_deref() == Some(target.user.id.as_str()))
            }) {
                return fail(status, &audit, format!("MfaBypass {} still works for this user: revoke it or let it end, then request again", other.name_any()));
            }
            audit(Audited::BypassApprove, Outcome::Done, format!("approved by {approver} (requested by {}) for {}", spec.requested_by, crate::duration::text(lifetime)))?;
            // Known before the provider is asked, so the window's check never takes this bypass
            // for someone else's, however the issuing and the check interleave.
            status.user_id = Some(target.user.id.clone());
            status.username = Some(target.user.username.clone());
            status.issued_at = Some(now);
            status.phase = BypassPhase::Issuing;
            status.mechanism = Some(support.mechanism.to_string());
            status.message = format!("approved by {approver}; issuing");
            Step::wait(status, Duration::ZERO)
        }
        BypassPhase::Issuing => {
            if let Err(why) = dual_control(bypass) {
                return fail(status, &audit, why);
            }
            issue(bypass, ctx, api, status, &audit).await
        }
        BypassPhase::Active => {
            let expires_at = status.expires_at.unwrap_or(now);
            let (provider, user) = match issued_to(bypass, &status, ctx).await? {
                Ok(Some(found)) => found,
                Ok(None) => return fail(status, &audit, "the user it was issued to is not known".into()),
                Err(why) => return Step::wait(with_message(status, format!("cannot reach the provider ({why}): trying again")), RETRY),
            };
            if expires_at > now {
                let left = Duration::try_from(expires_at.duration_since(now)).unwrap_or(RETRY) + Duration::from_secs(1);
                let used = match provider.bypass_used(&user, status.issued_at.unwrap_or(now), status.reference.as_deref()).await {
                    Ok(used) => used,
                    Err(e) => return Step::wait(with_message(status, format!("cannot check whether it was used: {e}")), left.min(USE_CHECK)),
                };
                if used != Some(true) {
                    return Step::wait(status, if used.is_some() { left.min(USE_CHECK) } else { left });
                }
                // Recorded as used before what is left of it goes: withdrawing first would make a
                // retry see nothing used, and call it expired.
                status.phase = BypassPhase::Used;
                status.used_at = Some(now);
                status.ended_at = Some(now);
                status.message = format!("used by {} (seen at {now}); what was left of it was withdrawn", spec.user);
                if let Err(e) = withdraw(&*provider, &user, &status).await {
                    status.message = format!("used by {} (seen at {now}); withdrawing what is left of it failed ({e}): withdraw it in the provider's console", spec.user);
                }
                audit(Audited::BypassUse, Outcome::Done, status.message.clone())?;
                return Step::done(status);
            }
            // Withdrawn at the provider too: Google's codes do not expire by themselves, and a
            // provider's own expiry may lag.
            let withdrawn = match withdraw(&*provider, &user, &status).await {
                Ok(withdrawn) => withdrawn,
                Err(e) => return Step::wait(with_message(status, format!("expired at {expires_at}; withdrawing it at the provider failed ({e}): trying again")), RETRY),
            };
            status.phase = BypassPhase::Expired;
            status.ended_at = Some(now);
            status.message = if withdrawn { format!("expired at {expires_at}; withdrawn at the provider") } else { format!("expired at {expires_at}; the provider ended it") };
            audit(Audited::BypassExpire, Outcome::Done, status.message.clone())?;
            Step::done(status)
        }
        _ => Step::done(status),
    }
}

/// Issues the bypass and delivers it. What the provider made is recorded in status before it is
/// delivered, and withdrawn again when anything after the provider's answer fails.
async fn issue(bypass: &MfaBypass, ctx: &Context, api: &Api<MfaBypass>, mut status: MfaBypassStatus, audit: &impl Fn(Audited, Outcome, String) -> Result<()>) -> Result<Step> {
    let spec = &bypass.spec;
    let namespace = bypass.namespace().unwrap_or_default();
    let (provider, user) = match issued_to(bypass, &status, ctx).await? {
        Ok(Some(found)) => found,
        Ok(None) => return fail(status, audit, "approved without the user it is for: request it again".into()),
        Err(why) => return Step::wait(with_message(status, format!("cannot reach the provider ({why}): trying again")), RETRY),
    };
    let Some(support) = provider.capabilities().bypass else { return fail(status, audit, format!("{} no longer offers a temporary bypass", spec.backend)) };
    let lifetime = match lifetime(&spec.lifetime, ctx.settings.max_bypass_lifetime, &support) {
        Ok(lifetime) => lifetime,
        Err(why) => return fail(status, audit, why),
    };
    // Where it goes is settled before anything is issued: nothing is issued that cannot be delivered.
    let (mail, address) = if support.sent_by_provider {
        (None, None)
    } else {
        let recall = Api::<MfaRecall>::namespaced(ctx.client.clone(), &namespace).get_opt(&spec.recall).await?;
        let Some(recall) = recall else { return fail(status, audit, format!("MfaRecall {} is gone; nothing was issued", spec.recall)) };
        let Some(smtp) = recall.spec.notifications.as_ref().filter(|n| n.smtp.is_some()) else {
            return fail(status, audit, format!("MfaRecall {} has no spec.notifications.smtp: a pass or code goes only to the user's own address, by mail; add it to the recall and request the bypass again", spec.recall));
        };
        let sinks = match super::run::notices(smtp, &namespace, recall.metadata.uid.as_deref(), ctx).await {
            Ok(Ok(notices)) => notices,
            Ok(Err(why)) => return fail(status, audit, why),
            Err(e) => return fail(status, audit, e.to_string()),
        };
        let address = match provider.bypass_address(&user).await {
            Ok(Some(address)) => address,
            Ok(None) => return fail(status, audit, format!("{} has no address on file for {} that the user reads without the account (Entra: an alternate email for password reset; Google: a recovery email): set one, verified by another channel, and request the bypass again", spec.backend, spec.user)),
            Err(e) if e.kind() == ErrorKind::Unavailable => return Step::wait(with_message(status, format!("reading the address on file: {e}; trying again")), RETRY),
            Err(e) => return fail(status, audit, format!("reading the address on file: {e}")),
        };
        (sinks.smtp, Some(address))
    };
    let issued_at = jiff::Timestamp::now();
    let issued = match provider.issue_bypass(&user, lifetime).await {
        Ok(issued) => issued,
        Err(e) if e.kind() == ErrorKind::Unavailable => return Step::wait(with_message(status, format!("issuing: {e}; trying again")), RETRY),
        Err(e) => {
            // The provider may have made it before the answer failed: best effort, ours only.
            status.issued_at = Some(issued_at);
            let _ = withdraw(&*provider, &user, &status).await;
            return fail(status, audit, format!("the provider refused to issue it: {e}"));
        }
    };
    status.issued_at = Some(issued_at);
    status.expires_at = Some(issued.expires_at);
    status.reference = issued.reference.clone();
    status.message = "issued; delivering".into();
    audit(Audited::BypassIssue, Outcome::Done, format!("{} issued, good until {}", support.mechanism, issued.expires_at))?;
    // What tells it apart at withdrawal is kept before anything else can fail.
    write(bypass, ctx, api, status.clone(), bypass.status.as_ref()).await?;
    let delivered_to = match (&mail, &address, &issued.secret) {
        (Some(mail), Some(address), Some(secret)) => {
            let body = message(&spec.user, &spec.backend, support.mechanism, secret.expose(), issued.expires_at);
            if let Err(why) = mail.send_text(address, "Your temporary sign-in code", body).await {
                // Nobody has it: withdraw it rather than leave a working pass behind.
                withdraw(&*provider, &user, &status).await?;
                status.ended_at = Some(jiff::Timestamp::now());
                return fail(status, audit, format!("could not be delivered ({why}); withdrawn at the provider"));
            }
            mask(address)
        }
        (None, _, None) => format!("the user's address on file, by {} itself", spec.backend),
        _ => {
            withdraw(&*provider, &user, &status).await?;
            status.ended_at = Some(jiff::Timestamp::now());
            return fail(status, audit, "the provider's answer did not fit its documented delivery; withdrawn at the provider".into());
        }
    };
    drop(issued);
    audit(Audited::BypassDeliver, Outcome::Done, format!("delivered to {delivered_to}"))?;
    status.phase = BypassPhase::Active;
    status.delivered_to = Some(delivered_to);
    status.message = format!("issued and delivered; works until {}", status.expires_at.unwrap_or(issued_at));
    Step::wait(status, USE_CHECK)
}

/// How far around its issuing and its end a bypass's log entries may fall (clocks, log lag).
const LOG_SLACK: jiff::SignedDuration = jiff::SignedDuration::from_mins(10);

/// The bypasses the recall's MfaBypasses issued, by backend, for the window's foreignBypass rule:
/// each from its issuing to its end (used, revoked, expired), and only those the provider may
/// have made. An unreadable list leaves the rule as it was (every bypass foreign): a flag too
/// many, not one too few.
pub(super) async fn issued_for(recall: &MfaRecall, ctx: &Context) -> std::collections::HashMap<String, Vec<OwnBypass>> {
    let api: Api<MfaBypass> = Api::namespaced(ctx.client.clone(), &recall.namespace().unwrap_or_default());
    let listed = match api.list(&Default::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(recall = %recall.name_any(), error = %e, "the recall's bypasses could not be read; every bypass in the window counts as foreign this check");
            Vec::new()
        }
    };
    let mut own: std::collections::HashMap<String, Vec<OwnBypass>> = std::collections::HashMap::new();
    for bypass in listed.into_iter().filter(|b| b.spec.recall == recall.name_any()) {
        let Some(status) = bypass.status else { continue };
        let (Some(user_id), Some(issued_at)) = (status.user_id, status.issued_at) else { continue };
        // Failed before the provider was asked: nothing of it can be in the log.
        if status.expires_at.is_none() && status.phase != BypassPhase::Issuing {
            continue;
        }
        let asked = crate::duration::BYPASS_LIFETIME.parse(&bypass.spec.lifetime).ok().and_then(|d| jiff::SignedDuration::try_from(d).ok()).unwrap_or(jiff::SignedDuration::from_hours(24));
        let works_until = status.expires_at.unwrap_or(issued_at + asked);
        let ended = status.ended_at.map_or(works_until, |end| end.min(works_until));
        own.entry(bypass.spec.backend).or_default().push(OwnBypass { user_id, from: issued_at - LOG_SLACK, until: ended + LOG_SLACK });
    }
    own
}

/// The recall, backend, provider and recalled user a bypass names, for its approval; Err says
/// what to fix.
struct Target {
    provider: Arc<dyn IdentityProvider>,
    user: UserRef,
}

async fn target(bypass: &MfaBypass, ctx: &Context) -> Result<std::result::Result<Target, String>> {
    let spec = &bypass.spec;
    let namespace = bypass.namespace().unwrap_or_default();
    let Some(recall) = Api::<MfaRecall>::namespaced(ctx.client.clone(), &namespace).get_opt(&spec.recall).await? else {
        return Ok(Err(format!("MfaRecall {namespace}/{} not found: a bypass is for a user a recall reached", spec.recall)));
    };
    if !recall.spec.backends.contains(&spec.backend) {
        return Ok(Err(format!("MfaRecall {} does not recall from {}: it names {}", spec.recall, spec.backend, recall.spec.backends.join(", "))));
    }
    let provider = match backend_provider(bypass, ctx).await? {
        Ok(provider) => provider,
        Err(why) => return Ok(Err(why)),
    };
    let Some(owner) = recall.controller_owner_ref(&()) else { return Ok(Err(format!("MfaRecall {} has no uid yet", spec.recall))) };
    let ledger = ResourceLedger::new(ctx.client.clone(), &namespace, owner, ctx.ledger_key.clone());
    let match_key = |name: &str| provider.capabilities().name_match.key(name);
    let wanted = match_key(&spec.user);
    // An id names one user; a name may name several (it is then refused rather than guessed).
    let (mut by_id, mut by_name) = (None, Vec::new());
    for index in ledger.segments(&spec.backend).await? {
        for record in ledger.read(&spec.backend, index).await?.users {
            if record.user.id == spec.user {
                by_id = Some(record);
            } else if match_key(&record.user.username) == wanted {
                by_name.push(record);
            }
        }
    }
    let record = match (by_id, by_name.len()) {
        (Some(record), _) => record,
        (None, 1) => by_name.remove(0),
        (None, 0) => return Ok(Err(format!("{} is not among the users MfaRecall {} reached on {} (mfa-recall report lists them)", spec.user, spec.recall, spec.backend))),
        (None, n) => return Ok(Err(format!("{} names {n} users MfaRecall {} reached on {}: name one by its id (mfa-recall report lists them)", spec.user, spec.recall, spec.backend))),
    };
    let took_factors = record.lost().next().is_some();
    match record.state {
        UserState::Invalidated | UserState::AwaitingLogs if took_factors => Ok(Ok(Target { provider, user: record.user })),
        UserState::Invalidated | UserState::AwaitingLogs => Ok(Err(format!("the recall took no factor from {}: they need no bypass", spec.user))),
        state => Ok(Err(format!("{} was not recalled by {} ({state:?}): a bypass is only for a user the recall took factors from", spec.user, spec.recall))),
    }
}

/// The backend's adapter; Err says what to fix.
async fn backend_provider(bypass: &MfaBypass, ctx: &Context) -> Result<std::result::Result<Arc<dyn IdentityProvider>, String>> {
    let namespace = bypass.namespace().unwrap_or_default();
    let Some(backend) = Api::<IdentityBackend>::namespaced(ctx.client.clone(), &namespace).get_opt(&bypass.spec.backend).await? else {
        return Ok(Err(format!("IdentityBackend {namespace}/{} not found", bypass.spec.backend)));
    };
    Ok(ctx.provider(&backend).await.map_err(|e| e.to_string()))
}

/// The adapter and the user a bypass was approved for (status.userId): what issuing, checking
/// and withdrawing need, whatever became of the recall since. None before approval.
async fn issued_to(bypass: &MfaBypass, status: &MfaBypassStatus, ctx: &Context) -> Result<std::result::Result<Option<(Arc<dyn IdentityProvider>, UserRef)>, String>> {
    let Some(id) = status.user_id.clone() else { return Ok(Ok(None)) };
    let username = status.username.clone().unwrap_or_else(|| bypass.spec.user.clone());
    Ok(backend_provider(bypass, ctx).await?.map(|provider| Some((provider, UserRef { id, username }))))
}

/// The lifetime asked for, if the operator and the provider both allow it.
fn lifetime(text: &str, max: Duration, support: &BypassSupport) -> std::result::Result<Duration, String> {
    let lifetime = crate::duration::BYPASS_LIFETIME.parse(text)?;
    if lifetime > max {
        return Err(format!("lifetime {text} is longer than the operator allows (--max-bypass-lifetime {}): request a shorter one", crate::duration::text(max)));
    }
    if !support.lifetimes.contains(&lifetime) {
        return Err(format!(
            "lifetime {text} is outside what the provider's {} takes ({} to {}): request one within it",
            support.mechanism,
            crate::duration::text(*support.lifetimes.start()),
            crate::duration::text(*support.lifetimes.end())
        ));
    }
    Ok(lifetime)
}

/// Withdraws the bypass at the provider; false where the provider cannot (it ends at its lifetime).
async fn withdraw(provider: &dyn IdentityProvider, user: &UserRef, status: &MfaBypassStatus) -> Result<bool> {
    if !provider.capabilities().bypass.is_some_and(|b| b.withdrawable) {
        return Ok(false);
    }
    provider.revoke_bypass(user, status.issued_at.unwrap_or(jiff::Timestamp::UNIX_EPOCH), status.reference.as_deref()).await?;
    Ok(true)
}

fn fail(mut status: MfaBypassStatus, audit: &impl Fn(Audited, Outcome, String) -> Result<()>, why: String) -> Result<Step> {
    audit(Audited::BypassFail, Outcome::Failed, why.clone())?;
    status.phase = BypassPhase::Failed;
    status.ended_at.get_or_insert_with(jiff::Timestamp::now);
    status.message = why;
    Ok(Step { status, requeue: None })
}

fn with_message(mut status: MfaBypassStatus, message: String) -> MfaBypassStatus {
    status.message = message;
    status
}

/// The mail to the user: the code, how long it works, and what to do if they did not ask.
fn message(user: &str, backend: &str, mechanism: &str, code: &str, expires_at: jiff::Timestamp) -> String {
    format!(
        "Your security team issued a temporary sign-in code for your account {user} on {backend} ({mechanism}).\n\n  {code}\n\nIt works until {expires_at} and only for you: use it to sign in once and set up a new second factor at once. Nobody from IT will ever ask you for it.\n\nIf you did not ask your security team for a way back in, tell them at once.\n"
    )
}

/// An address with most of its local part hidden, for status: enough to tell which one.
fn mask(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => "***".into(),
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn support(min: u64, max: u64) -> BypassSupport {
        BypassSupport { mechanism: "a pass", lifetimes: Duration::from_secs(min)..=Duration::from_secs(max), sent_by_provider: false, withdrawable: true }
    }

    #[test]
    fn a_lifetime_must_suit_the_operator_and_the_provider() {
        let hour = Duration::from_secs(3600);
        assert_eq!(lifetime("30m", hour, &support(600, 86_400)), Ok(Duration::from_secs(1800)));
        let error = lifetime("2h", hour, &support(600, 86_400)).unwrap_err();
        assert!(error.contains("longer than the operator allows (--max-bypass-lifetime 1h)"), "{error}");
        let error = lifetime("5m", hour, &support(600, 86_400)).unwrap_err();
        assert!(error.contains("outside what the provider's a pass takes (10m to 24h)"), "{error}");
        assert!(lifetime("soon", hour, &support(60, 86_400)).unwrap_err().contains("is not a duration"));
    }

    #[test]
    fn status_shows_which_address_but_not_all_of_it() {
        assert_eq!(mask("megan.bowen@contoso.example"), "m***@contoso.example");
        assert_eq!(mask("nobody"), "***");
    }
}
