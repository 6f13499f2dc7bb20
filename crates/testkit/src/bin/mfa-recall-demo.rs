//! The demo's scripted incident, run by hack/demo.sh against parts it started on loopback:
//! seeds a Keycloak realm and five provider simulators (Okta, Entra ID, Auth0, Google Workspace,
//! Duo, served from this process), configures one IdentityBackend each, applies one MfaRecall
//! over all six, waits for it, has one user re-enroll through Keycloak's real login page, and
//! checks the result against every provider's own state.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::{Api, Client};
use mfa_recall::api::{BackendLimits, MfaRecall, RecallPhase};
use idp_sim::{GroupSeed, Seed};
use testkit::sims::{SIMULATED, SimBackend, SimSubject};
use testkit::{self, KeycloakAdmin, USERS_WITH_PASSWORD, cluster, seeded_types, username};
use serde_json::json;

const NAMESPACE: &str = "security";
const REALM: &str = "corp";
const USERS: usize = 300;
const SIM_USERS: u32 = 2000;
const CLIENT_SECRET: &str = "demo-client-secret";

fn env(var: &str) -> Result<String, String> {
    std::env::var(var).map_err(|_| format!("{var} is not set: run this through hack/demo.sh, which starts the parts"))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let keycloak_url = env("MFA_RECALL_KEYCLOAK_URL")?;
    let keycloak = KeycloakAdmin::connect(&keycloak_url, &env("MFA_RECALL_KEYCLOAK_ADMIN_USER")?, &env("MFA_RECALL_KEYCLOAK_ADMIN_PASSWORD")?).await?;
    let client = Client::try_default().await.map_err(|e| e.to_string())?;

    say(&format!("seeding Keycloak realm '{REALM}': {USERS} users with TOTP, WebAuthn, passkeys and recovery codes, plus 2 break-glass admins"));
    keycloak.create_realm(REALM, USERS, &["breakglass-1", "breakglass-2"], CLIENT_SECRET).await?;
    for i in (0..USERS_WITH_PASSWORD).filter(|i| !seeded_types(*i).contains(&"otp")) {
        keycloak.open_sessions(REALM, &username(i), 2, i % 4 == 2).await?;
    }
    let (before, sessions_before) = keycloak.census(REALM, i64::MAX, &["breakglass-1", "breakglass-2"]).await?;
    say(&format!("Keycloak before the recall: MFA credentials {before:?}, live sessions and offline tokens {sessions_before}"));

    cluster::create_namespace(&client, NAMESPACE).await?;
    cluster::create_keycloak_backend(&client, NAMESPACE, "corp-keycloak", &keycloak_url, REALM, CLIENT_SECRET, 100).await?;
    say("applied IdentityBackend security/corp-keycloak and its Secret");

    // The SaaS providers, simulated on loopback by this process for as long as the demo runs.
    let seed = Seed { users: SIM_USERS, groups: vec![GroupSeed::new("admins", 100)], ..Seed::default() };
    let mut sims = Vec::new();
    let mut backend_names = vec!["corp-keycloak".to_string()];
    for kind in SIMULATED {
        let sim = SimSubject::start(kind).await?;
        sim.sim.provider.seed(&seed);
        let name = format!("corp-{kind}");
        let limits = BackendLimits { requests_per_second: 200, max_concurrency: 8, ..Default::default() };
        cluster::create_backend(&client, NAMESPACE, &name, sim.backend_spec(&format!("{name}-credentials"), limits), &sim.secret).await?;
        say(&format!("applied IdentityBackend security/{name} ({kind} simulator at {}, {SIM_USERS} users with TOTP, WebAuthn and recovery codes)", sim.running.url));
        backend_names.push(name.clone());
        sims.push((name, sim));
    }
    let cutoff = jiff::Timestamp::now();
    let sim_before: BTreeMap<String, _> = sims.iter().map(|(n, s)| (n.clone(), s.sim.provider.census(Some(cutoff)))).collect();
    cluster::create_recall(&client, NAMESPACE, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "vendor-breach"},
        "spec": {"reason": "Support-system breach exposed session tokens (INC-4821)", "backends": backend_names, "cutoff": cutoff.to_string(),
                 "scope": {"allUsers": true, "exclude": {"users": ["breakglass-1"], "groups": ["admins"]}},
                 "reEnrollment": {"gracePeriod": "72h", "checkInterval": "10s"}}
    }))
    .await?;
    say("applied MfaRecall security/vendor-breach: watch it count up");

    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), NAMESPACE);
    let phase = |r: &MfaRecall| r.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let recall = cluster::wait_for(&recalls, "vendor-breach", Duration::from_secs(600), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await?;
    let status = recall.status.unwrap_or_default();
    let cutoff_ms = status.cutoff.ok_or("no cutoff in status")?.as_millisecond();
    let (after, sessions_after) = keycloak.census(REALM, cutoff_ms, &["breakglass-1", "breakglass-2"]).await?;
    say(&format!("all users done: {:?}", status.counts));
    say(&format!("Keycloak after the recall: MFA credentials older than the cutoff {after:?}, sessions {sessions_after}"));

    say("user0000 signs in, is required to set up a new authenticator, and does");
    testkit::enroll_totp_by_browser(&keycloak_url, REALM, &username(0)).await?;
    let recall = cluster::wait_for(&recalls, "vendor-breach", Duration::from_secs(60), |r| r.status.as_ref().is_some_and(|s| s.counts.re_enrolled >= 1)).await?;
    let counts = recall.status.unwrap_or_default().counts;
    say(&format!("re-enrolled {}, pending {}", counts.re_enrolled, counts.pending));

    let keycloak_progress = status.backends.iter().find(|b| b.name == "corp-keycloak").ok_or("corp-keycloak missing from status")?;
    let exact = after.is_empty() && sessions_after == 0 && keycloak_progress.counts.sessions_revoked == sessions_before
        && counts.invalidated + counts.excluded + counts.failed == counts.targeted;
    if !exact {
        return Err("the recall's counts do not match Keycloak".into());
    }
    say("checked against Keycloak: nothing older than the cutoff remains, counts match");

    for (name, sim) in &sims {
        let progress = status.backends.iter().find(|b| &b.name == name).ok_or(format!("{name} missing from status"))?;
        let after = sim.sim.provider.census(Some(cutoff));
        let lost: BTreeMap<String, i64> = sim_before[name]
            .factors_before_cutoff
            .iter()
            .map(|(k, n)| (k.clone(), (n - after.factors_before_cutoff.get(k).copied().unwrap_or(0)) as i64))
            .filter(|(_, n)| *n > 0)
            .collect();
        let revoked: BTreeMap<String, i64> = progress.counts.factors_revoked.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.as_str().to_string(), *n)).collect();
        say(&format!(
            "{name}: targeted {}, invalidated {}, excluded {} {:?}, failed {}, factors {revoked:?}; the provider lost {lost:?}{}{}",
            progress.counts.targeted,
            progress.counts.invalidated,
            progress.counts.excluded,
            progress.counts.excluded_by,
            progress.counts.failed,
            if progress.not_found.is_empty() { String::new() } else { format!("; matched nobody here: {}", progress.not_found.join(", ")) },
            if progress.not_supported.is_empty() { String::new() } else { format!("; not supported: {}", progress.not_supported.join(" | ")) }
        ));
        if revoked != lost || progress.counts.failed != 0 {
            return Err(format!("{name}: the recall's counts do not match the provider"));
        }
    }
    say("checked against every simulated provider: counts equal what each provider lost");
    Ok(())
}

fn say(line: &str) {
    println!("demo: {line}");
}
