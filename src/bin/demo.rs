//! The demo's scripted incident, run by hack/demo.sh against parts it started on loopback:
//! seeds a Keycloak realm, configures an IdentityBackend, applies an MfaRecall, waits for it,
//! has one user re-enroll through the real login page, and checks the result against Keycloak.

use std::time::Duration;

use kube::{Api, Client};
use mfa_recall::api::{MfaRecall, RecallPhase};
use mfa_recall::testbed::{self, KeycloakAdmin, USERS_WITH_PASSWORD, cluster, seeded_types, username};
use serde_json::json;

const NAMESPACE: &str = "security";
const REALM: &str = "corp";
const USERS: usize = 300;
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
    cluster::create_recall(&client, NAMESPACE, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": {"name": "vendor-breach"},
        "spec": {"reason": "Support-system breach exposed session tokens (INC-4821)", "backends": ["corp-keycloak"],
                 "scope": {"allUsers": true, "exclude": {"users": ["breakglass-1"], "groups": ["admins"]}},
                 "reEnrollment": {"gracePeriod": "72h", "checkInterval": "2s"}}
    }))
    .await?;
    say("applied MfaRecall security/vendor-breach: watch it count up");

    let recalls: Api<MfaRecall> = Api::namespaced(client.clone(), NAMESPACE);
    let phase = |r: &MfaRecall| r.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let recall = cluster::wait_for(&recalls, "vendor-breach", Duration::from_secs(600), |r| phase(r) == RecallPhase::AwaitingReEnrollment).await?;
    let status = recall.status.unwrap_or_default();
    let cutoff = status.cutoff.ok_or("no cutoff in status")?.as_millisecond();
    let (after, sessions_after) = keycloak.census(REALM, cutoff, &["breakglass-1", "breakglass-2"]).await?;
    say(&format!("all users done: {:?}", status.counts));
    say(&format!("Keycloak after the recall: MFA credentials older than the cutoff {after:?}, sessions {sessions_after}"));

    say("user0000 signs in, is required to set up a new authenticator, and does");
    testbed::enroll_totp_by_browser(&keycloak_url, REALM, &username(0)).await?;
    let recall = cluster::wait_for(&recalls, "vendor-breach", Duration::from_secs(60), |r| r.status.as_ref().is_some_and(|s| s.counts.re_enrolled >= 1)).await?;
    let counts = recall.status.unwrap_or_default().counts;
    say(&format!("re-enrolled {}, pending {}", counts.re_enrolled, counts.pending));

    let exact = after.is_empty() && sessions_after == 0 && counts.sessions_revoked == sessions_before
        && counts.invalidated + counts.excluded + counts.failed == counts.targeted;
    if !exact {
        return Err("the recall's counts do not match Keycloak".into());
    }
    say("checked against Keycloak: nothing older than the cutoff remains, counts match");
    Ok(())
}

fn say(line: &str) {
    println!("demo: {line}");
}
