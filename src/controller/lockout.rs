//! The lockout guard: before a recall revokes anything, it makes sure the organisation keeps a
//! way in. Each backend's break-glass accounts must exist, be enabled and hold a factor (the
//! recall never touches them), and a recall that reaches members of a backend's privileged groups
//! needs at least one such account there. What fails is a LockoutRisk condition that says what to
//! change; `spec.acknowledgeLockoutRisk` lets a person run the recall anyway.

use std::collections::HashMap;
use std::sync::Arc;

use kube::ResourceExt;

use crate::api::{FactorKind, IdentityBackend, MfaRecall};
use crate::backends::{ErrorKind, IdentityProvider, Membership, UserRef};
use crate::{Error, Result};

/// Every risk the recall would run into, or Ok.
pub(super) async fn check(recall: &MfaRecall, backends: &[(IdentityBackend, Arc<dyn IdentityProvider>)]) -> Result<()> {
    if recall.spec.acknowledge_lockout_risk {
        return Ok(());
    }
    let mut risks = Vec::new();
    for (backend, provider) in backends {
        let name = backend.name_any();
        let mut working = 0;
        for account in &backend.spec.break_glass {
            match break_glass_problem(&**provider, account).await? {
                None => working += 1,
                Some(problem) => risks.push(format!("{name}: break-glass account {account} {problem}")),
            }
        }
        if working == 0
            && let Some(group) = privileged_reached(recall, backend, &**provider).await?
        {
            risks.push(format!("{name}: the recall reaches members of the privileged group {group}, and no working break-glass account is named"));
        }
    }
    if risks.is_empty() {
        return Ok(());
    }
    Err(Error::LockoutRisk(format!(
        "{}: name a working break-glass account in the IdentityBackend's spec.breakGlass (it must exist, be enabled and hold a factor), or set spec.acknowledgeLockoutRisk: true on this recall to run it anyway",
        risks.join("; ")
    )))
}

/// Why `account` cannot be relied on, if it cannot.
async fn break_glass_problem(provider: &dyn IdentityProvider, account: &str) -> Result<Option<String>> {
    let found = provider.find_user(account).await?;
    let user = match found.as_slice() {
        [] => return Ok(Some("does not exist".into())),
        [one] => one,
        many => return Ok(Some(format!("names {} accounts: name it by its id", many.len()))),
    };
    match provider.enabled(user).await? {
        Some(true) => {}
        Some(false) => return Ok(Some("is disabled".into())),
        None => return Ok(Some("cannot be checked: this provider does not tell whether an account is enabled".into())),
    }
    // Every factor it holds, whenever enrolled.
    let everything = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    let snapshot = provider.snapshot(user, &[FactorKind::All], everything).await?;
    if snapshot.factors.is_empty() && snapshot.enrolled_since_cutoff.is_none() {
        return Ok(Some("holds no factor".into()));
    }
    Ok(None)
}

/// A privileged group of `backend` with a member the recall would reach (not excluded), if any.
async fn privileged_reached(recall: &MfaRecall, backend: &IdentityBackend, provider: &dyn IdentityProvider) -> Result<Option<String>> {
    let scope = &recall.spec.scope;
    if backend.spec.privileged_groups.is_empty() {
        return Ok(None);
    }
    // None: no such group (the recall's own checks name a missing scope or exclusion group).
    let members_of = async |group: &str, membership: Membership| -> Result<Option<Vec<UserRef>>> {
        match provider.all_group_members(group, membership).await {
            Ok(members) => Ok(Some(members)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Provider(e)),
        }
    };
    let mut privileged: HashMap<String, String> = HashMap::new();
    for group in &backend.spec.privileged_groups {
        let Some(members) = members_of(group, Membership::Transitive).await? else {
            return Err(Error::LockoutRisk(format!("{}: privileged group {group} not found: fix the IdentityBackend's spec.privilegedGroups", backend.name_any())));
        };
        for member in members {
            privileged.entry(member.id).or_insert_with(|| group.clone());
        }
    }
    // Excluded users are not touched, whatever group they are in.
    for name in scope.exclude.users.iter().chain(&backend.spec.break_glass) {
        for user in provider.find_user(name).await? {
            privileged.remove(&user.id);
        }
    }
    for group in &scope.exclude.groups {
        let Some(members) = members_of(group, Membership::Transitive).await? else {
            return Err(Error::ExclusionGroupNotFound(format!("{}: exclusion group {group} not found", backend.name_any())));
        };
        for user in members {
            privileged.remove(&user.id);
        }
    }
    if privileged.is_empty() {
        return Ok(None);
    }
    if scope.all_users == Some(true) {
        return Ok(privileged.into_values().min());
    }
    for name in &scope.users {
        if let Some(group) = provider.find_user(name).await?.iter().find_map(|u| privileged.get(&u.id)) {
            return Ok(Some(group.clone()));
        }
    }
    let membership = if scope.direct_members_only { Membership::Direct } else { Membership::Transitive };
    for group in &scope.groups {
        if let Some(found) = members_of(group, membership).await?.unwrap_or_default().iter().find_map(|u| privileged.get(&u.id)) {
            return Ok(Some(found.clone()));
        }
    }
    Ok(None)
}
