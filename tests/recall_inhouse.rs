//! A recall of an in-house identity store: the operator's `webhook:` backend speaking the backend
//! protocol to the reference backend (crates/pg-backend) over Debian's real PostgreSQL, with data
//! shaped as such stores are (a break-glass account in a subgroup of an excluded group, factors
//! from after the cutoff, a factor of unknown age, sessions of three kinds).

mod support;

use std::process::Command;
use std::time::Duration;

use kube::Api;
use mfa_recall::api::{BackendLimits, IdentityBackend, RecallPhase};
use serde_json::json;
use support::Operator;
use support::store::Store;
use testkit::cluster;

const TOKEN: &str = "mfacanary-inhouse-store-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recall_of_an_in_house_store_through_the_backend_protocol() {
    let (parts, client, ns, _) = support::scenario("inhouse").await;
    let ns = ns.as_str();
    let store = Store::start(TOKEN).await;
    let (addr, token_file) = (store.url.trim_start_matches("http://").to_string(), store.token_file.clone());

    // 30 staff, three of them admins, one admin the break-glass account in a subgroup of admins.
    let cutoff = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let mut seed = String::from("insert into groups (id, name) values ('g-staff', 'staff');
        insert into groups (id, name, parent_id) values ('g-admins', 'admins', 'g-staff'), ('g-bg', 'break-glass', 'g-admins');");
    for i in 0..30 {
        let name = if i % 4 == 0 { format!("User.{i:02}") } else { format!("user.{i:02}") };
        let group = match i { 2 => "g-bg", 1 | 3 => "g-admins", _ => "g-staff" };
        seed.push_str(&format!("insert into users (id, username, email) values ('u{i:02}', '{name}', '{}@example.test');
            insert into group_members values ('{group}', 'u{i:02}');
            insert into factors (id, user_id, kind, type, created_at) values ('t{i:02}', 'u{i:02}', 'totp', 'authenticator app', now() - interval '30 days'), ('w{i:02}', 'u{i:02}', 'webauthn', 'security key', now() - interval '10 days');
            insert into sessions (id, user_id, expires_at) values ('s{i:02}', 'u{i:02}', now() + interval '1 day');
            insert into refresh_tokens (id, user_id, token_hash, expires_at) values ('r{i:02}', 'u{i:02}', 'h', now() + interval '30 days');
            insert into remembered_devices (id, user_id) values ('d{i:02}', 'u{i:02}');", name.to_lowercase()));
    }
    // Five re-enrolled already (after the cutoff), one factor of unknown age.
    seed.push_str("insert into factors (id, user_id, kind, type, created_at) select 'p' || id, id, 'passkey', 'passkey', now() - interval '10 minutes' from users where id in ('u05', 'u06', 'u07', 'u08', 'u09');
        insert into factors (id, user_id, kind, type, created_at) values ('x10', 'u10', 'recoveryCodes', 'backup codes', null);");
    store.psql(&seed);
    let before_events: i64 = store.psql("select count(*) from events").parse().unwrap();

    // The protocol checker an in-house team runs against its own implementation.
    let check = |token_file: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_mfa-recall")).args(["backend", "check", &format!("http://{addr}"), "--user", "USER.05", "--group", "staff"]).arg("--token-file").arg(token_file).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (ok, said) = check(&token_file);
    assert!(ok, "{said}");
    for line in ["ok   GET / (negotiation)", "ok   GET /users: 30 users on the first page, the last page", "ok   GET /groups/staff/members (Direct): 27 members", "ok   GET /groups/staff/members (Transitive): 30 members",
                 "ok   GET /users?name=USER.05: user.05 (id u05)", "ok   GET /users/{id}/factors: 3 factors (0 of unknown age), 3 sessions", "ok   DELETE /users/{id}/factors/{absent}: alreadyGone"] {
        assert!(said.contains(line), "{line:?} missing from:\n{said}");
    }
    let wrong = parts.file("inhouse-wrong-token.key");
    std::fs::write(&wrong, "mfacanary-not-the-token").unwrap();
    let (ok, said) = check(&wrong);
    assert!(!ok && said.contains("FAIL GET / (negotiation)") && said.contains("401"), "{said}");

    let spec = serde_json::from_value(json!({ "webhook": { "url": format!("http://{addr}"), "credentialsSecretRef": { "name": "store-credentials" } },
                                              "limits": BackendLimits { requests_per_second: 500, max_concurrency: 8, ..Default::default() } })).unwrap();
    cluster::create_backend(&client, ns, "store", spec, &[("token".to_string(), TOKEN.to_string())].into()).await.unwrap();
    let operator = Operator::start(ns, &parts.file("inhouse-audit.jsonl"), &parts.file("inhouse-operator.log"));
    let backends: Api<IdentityBackend> = Api::namespaced(client.clone(), ns);
    let ready = cluster::wait_for(&backends, "store", Duration::from_secs(60), |b| b.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))).await;
    let ready = ready.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let capabilities = ready.status.unwrap().capabilities;
    assert!(capabilities.iter().any(|c| c == "eventStream") && capabilities.iter().any(|c| c == "nestedGroups"), "negotiated: {capabilities:?}");

    let recall = cluster::create_recall(&client, ns, json!({
        "apiVersion": "mfarecall.io/v1alpha1", "kind": "MfaRecall", "metadata": { "name": "store-breach" },
        "spec": { "reason": "INC-29 store dump", "backends": ["store"], "cutoff": cutoff.to_string(),
                  "scope": { "groups": ["staff"], "exclude": { "groups": ["break-glass"] } },
                  // No sweep of pending users: a re-enrollment is seen from the store's log alone.
                  "reEnrollment": { "sweepPerCheck": 0 } }
    })).await.unwrap();
    let recalls: Api<mfa_recall::api::MfaRecall> = Api::namespaced(client.clone(), ns);
    let done = cluster::wait_for(&recalls, "store-breach", Duration::from_secs(90), |r| r.status.as_ref().is_some_and(|s| s.phase == RecallPhase::AwaitingReEnrollment)).await;
    let done = done.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let _ = recall;
    let counts = done.status.unwrap().counts;
    // Every staff member through both levels of subgroups, each once; the break-glass account excluded.
    assert_eq!((counts.targeted, counts.excluded, counts.invalidated, counts.failed), (30, 1, 29, 0), "{counts:?}");
    assert_eq!(counts.already_enrolled, 5, "{counts:?}");
    assert_eq!(counts.kept_unknown_age, 1, "{counts:?}");

    // In the store: every factor from before the cutoff of the 29 is gone; the new ones, the one
    // of unknown age and the break-glass account's stay; their sessions of every kind ended.
    let left = store.psql("select string_agg(id, ',' order by id) from factors");
    assert_eq!(left, "pu05,pu06,pu07,pu08,pu09,t02,w02,x10");
    assert_eq!(store.psql("select count(*) from sessions where user_id <> 'u02'"), "0");
    assert_eq!(store.psql("select count(*) from refresh_tokens where user_id <> 'u02'"), "0");
    assert_eq!(store.psql("select count(*) from remembered_devices where user_id <> 'u02'"), "0");
    assert_eq!(store.psql("select count(*) from sessions where user_id = 'u02'"), "1", "the break-glass account keeps its session");
    let asked = store.psql("select string_agg(user_id, ',' order by user_id) from required_enrollments");
    assert!(!asked.contains("u02") && !asked.contains("u05") && asked.contains("u00") && asked.contains("u29"), "asked to enroll again: {asked}");
    // The store's log holds every removal (its triggers), read by the re-enrollment watch.
    let removed: i64 = store.psql("select count(*) from events where type = 'factorRemoved'").parse().unwrap();
    assert_eq!(removed, 58);
    assert!(store.psql("select count(*) from events").parse::<i64>().unwrap() >= before_events + 58);

    // A user enrolls again in the store: the operator counts them re-enrolled from the store's log.
    store.psql("insert into factors (id, user_id, kind, type, created_at) values ('n00', 'u00', 'totp', 'authenticator app', now())");
    cluster::wait_for(&recalls, "store-breach", Duration::from_secs(90), |r| r.status.as_ref().is_some_and(|s| s.counts.re_enrolled >= 1)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert!(!operator.log().contains(TOKEN), "the operator logged the store's token");
}

/// Mutual TLS: a store that knows the operator by its client certificate alone (no token),
/// behind a private authority. The adapter with the Secret's tls.crt, tls.key and ca.crt reads
/// and revokes; a certificate another authority signed is refused, as is a store whose own
/// certificate ca.crt does not vouch for, and a client certificate over plain http is refused
/// before anything is sent. The protocol checker speaks mutual TLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_knows_the_operator_by_its_client_certificate() {
    use mfa_recall::backends::{self, ErrorKind, FactorRef};
    let certificates = support::store::Certificates::make();
    let store = Store::start_with(None, Some(&certificates)).await;
    store.psql("insert into users (id, username, email) values ('u1', 'Alice.Admin', 'alice@example.test');
        insert into factors (id, user_id, kind, type, created_at) values ('f1', 'u1', 'totp', 'authenticator app', now() - interval '1 day');");
    let backend = |url: &str| -> IdentityBackend {
        let spec = serde_json::from_value(json!({ "webhook": { "url": url, "credentialsSecretRef": { "name": "store-tls" } } })).unwrap();
        let mut backend = IdentityBackend::new("store", spec);
        backend.metadata.namespace = Some("inhouse".into());
        backend
    };
    let secret = |files: &[(&str, &str)]| -> k8s_openapi::api::core::v1::Secret {
        let data = files.iter().map(|(key, file)| (key.to_string(), k8s_openapi::ByteString(certificates.read(file).into_bytes()))).collect();
        k8s_openapi::api::core::v1::Secret { metadata: kube::api::ObjectMeta { name: Some("store-tls".into()), ..Default::default() }, data: Some(data), ..Default::default() }
    };
    let trusted = secret(&[("tls.crt", "client.crt"), ("tls.key", "client.key"), ("ca.crt", "ca.crt")]);

    let provider = backends::connect(&backend(&store.url), Some(&trusted), &Default::default()).unwrap();
    provider.prepare().await.unwrap_or_else(|e| panic!("negotiation over mutual TLS: {e}\n{}", store.log()));
    let alice = provider.find_user("ALICE.ADMIN").await.unwrap().remove(0);
    let snapshot = provider.snapshot(&alice, &[mfa_recall::api::FactorKind::All], jiff::Timestamp::now()).await.unwrap();
    assert_eq!(snapshot.factors.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["f1"]);
    let factor: &FactorRef = &snapshot.factors[0];
    provider.revoke_factor(&alice, factor).await.unwrap();
    assert_eq!(store.psql("select count(*) from factors"), "0");

    // Refused: a certificate from another authority; none at all; a store certificate ca.crt does not vouch for.
    for (why, files) in [
        ("another authority's client certificate", vec![("tls.crt", "rogue.crt"), ("tls.key", "rogue.key"), ("ca.crt", "ca.crt")]),
        ("the store's certificate from an authority not in ca.crt", vec![("tls.crt", "client.crt"), ("tls.key", "client.key"), ("ca.crt", "other-ca.crt")]),
    ] {
        let provider = backends::connect(&backend(&store.url), Some(&secret(&files)), &Default::default()).unwrap();
        let error = provider.check().await.expect_err(why);
        assert!(error.to_string().contains("inhouse/store-tls"), "{why}: the Secret is named: {error}");
    }
    let token_only: k8s_openapi::api::core::v1::Secret = k8s_openapi::api::core::v1::Secret {
        data: Some([("token".to_string(), k8s_openapi::ByteString(TOKEN.as_bytes().to_vec())), ("ca.crt".to_string(), k8s_openapi::ByteString(certificates.read("ca.crt").into_bytes()))].into()),
        ..trusted.clone()
    };
    let error = backends::connect(&backend(&store.url), Some(&token_only), &Default::default()).unwrap().check().await.expect_err("no client certificate");
    assert!(!error.to_string().contains(TOKEN), "{error}");
    let plain = backends::connect(&backend(&store.url.replace("https://", "http://")), Some(&trusted), &Default::default()).err().expect("a client certificate over http");
    assert_eq!(plain.kind(), ErrorKind::Config, "{plain}");
    assert!(plain.to_string().contains("https://"), "{plain}");
    let authority_only = secret(&[("ca.crt", "ca.crt")]);
    let token_and_authority = k8s_openapi::api::core::v1::Secret { data: Some([("token".to_string(), k8s_openapi::ByteString(TOKEN.as_bytes().to_vec()))].into_iter().chain(authority_only.data.clone().unwrap()).collect()), ..authority_only };
    let plain = backends::connect(&backend(&store.url.replace("https://", "http://")), Some(&token_and_authority), &Default::default()).err().expect("ca.crt over http");
    assert!(plain.to_string().contains("ca.crt"), "an authority given for http is refused, not ignored: {plain}");
    let half = backends::connect(&backend(&store.url), Some(&secret(&[("tls.crt", "client.crt")])), &Default::default()).err().expect("a certificate without its key");
    assert!(half.to_string().contains("tls.key"), "{half}");

    // The protocol checker, as an in-house team runs it against a store behind mutual TLS.
    let check = |cert: &str, key: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_mfa-recall"))
            .args(["backend", "check", &store.url, "--user", "alice.admin"])
            .arg("--cert-file").arg(certificates.path(cert)).arg("--key-file").arg(certificates.path(key)).arg("--ca-file").arg(certificates.path("ca.crt"))
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (ok, said) = check("client.crt", "client.key");
    assert!(ok && said.contains("ok   GET / (negotiation)") && said.contains("ok   GET /users?name=alice.admin: Alice.Admin (id u1)"), "{said}");
    let (ok, said) = check("rogue.crt", "rogue.key");
    assert!(!ok && said.contains("FAIL GET / (negotiation)"), "{said}");
}
