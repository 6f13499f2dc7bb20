//! The scope catalogue: who a recall targets, on a realm laid out the way real ones are (users
//! imported with mixed-case names and emails, subgroups several levels deep, a user in two
//! groups, HOTP tokens beside TOTP apps). Each case runs the engine in-process against real
//! Keycloak and checks Keycloak's own state afterwards, and that the counts equal what it lost.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use mfa_recall::api::{BackendLimits, FactorKind, IdentityBackend, RecallCounts};
use mfa_recall::audit::AuditLog;
use mfa_recall::backends::{self, IdentityProvider, Membership, ScopeSelector};
use mfa_recall::engine::{RecallJob, RunEnd, Runner, SharedProgress};
use mfa_recall::ledger::MemoryLedger;
use testkit::KeycloakAdmin;
use serde_json::{Value, json};
use tokio::sync::watch;

const CLIENT_SECRET: &str = "mfacanary-scope-client-secret-71d0";

/// Who is where. Usernames and emails are imported as people type them; Keycloak keeps them in
/// lower case.
///
/// ```text
/// admins            Dave
///   platform        (nobody directly)
///     breakglass    Keeper-Kim
/// engineering       Erin (also holds a key enrolled after the cutoff)
///   backend         Ada.Lovelace
///     oncall        Bob (a TOTP app and an HOTP token)
/// sales             Ada.Lovelace, Carol
/// (no group)        Frank
/// ```
struct Realm {
    admin: KeycloakAdmin,
    url: String,
    name: String,
    cutoff: jiff::Timestamp,
}

const PEOPLE: [&str; 7] = ["dave", "keeper-kim", "erin", "ada.lovelace", "bob", "carol", "frank"];

impl Realm {
    async fn start() -> Realm {
        let parts = support::Parts::from_env();
        let admin = parts.keycloak().await;
        let name = support::unique("scope");
        let old = jiff::Timestamp::now().as_millisecond() - 86_400_000;
        let cutoff = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(10);
        let new = cutoff.as_millisecond() + 60_000;
        let person = |username: &str, email: &str, groups: &[&str], credentials: Vec<Value>| {
            json!({"username": username, "email": email, "enabled": true, "emailVerified": true, "firstName": username, "lastName": "Scope",
                   "groups": groups, "credentials": credentials})
        };
        let users = vec![
            person("Dave", "Dave@Example.COM", &["/admins"], vec![testkit::credential("otp", 1, old)]),
            person("Keeper-Kim", "Keeper.Kim@Example.com", &["/admins/platform/breakglass"], vec![testkit::credential("otp", 2, old)]),
            person("Erin", "erin@example.com", &["/engineering"], vec![testkit::credential("webauthn", 3, old), testkit::credential("webauthn", 33, new)]),
            person(
                "Ada.Lovelace",
                "Ada.Lovelace@Example.com",
                &["/engineering/backend", "/sales"],
                vec![testkit::credential("otp", 4, old), testkit::credential("recovery-authn-codes", 4, old)],
            ),
            person("Bob", "BOB@example.com", &["/engineering/backend/oncall"], vec![testkit::credential("otp", 5, old), testkit::hotp_credential(5, old)]),
            person("Carol", "carol@example.com", &["/sales"], vec![testkit::credential("otp", 6, old), testkit::credential("webauthn", 6, old)]),
            person("Frank", "Frank@Example.com", &[], vec![testkit::credential("otp", 7, old)]),
        ];
        let groups = json!([
            {"name": "admins", "subGroups": [{"name": "platform", "subGroups": [{"name": "breakglass"}]}]},
            {"name": "engineering", "subGroups": [{"name": "backend", "subGroups": [{"name": "oncall"}]}]},
            {"name": "sales"},
        ]);
        admin.import_realm(&name, groups, users, CLIENT_SECRET).await.unwrap();
        Realm { admin, url: parts.keycloak_url, name, cutoff }
    }

    fn provider(&self) -> Arc<dyn IdentityProvider> {
        let spec = serde_json::from_value(json!({
            "keycloak": { "url": self.url, "realm": self.name, "credentialsSecretRef": { "name": "kc" } },
            "limits": BackendLimits { requests_per_second: 500, max_concurrency: 4, ..Default::default() },
        }))
        .unwrap();
        let mut backend = IdentityBackend::new("keycloak", spec);
        backend.metadata.namespace = Some("scope".into());
        let secret = serde_json::from_value(json!({ "metadata": { "name": "kc" }, "stringData": { "client-id": testkit::OPERATOR_CLIENT, "client-secret": CLIENT_SECRET } })).unwrap();
        backends::connect(&backend, Some(&secret), &Default::default()).unwrap()
    }

    /// Each person's MFA credentials as (credential type or `otp/<subType>`, created before the cutoff).
    async fn held(&self) -> BTreeMap<String, Vec<(String, bool)>> {
        let mut held = BTreeMap::new();
        for person in PEOPLE {
            let id = self.admin.user_id(&self.name, person).await.unwrap();
            let credentials = self.admin.get(&format!("/{}/users/{id}/credentials", self.name)).await.unwrap();
            let mut kinds: Vec<(String, bool)> = credentials
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["type"] != "password")
                .map(|c| {
                    let sub = c["credentialData"].as_str().and_then(|d| serde_json::from_str::<Value>(d).ok()).and_then(|d| d["subType"].as_str().map(String::from));
                    let kind = match sub {
                        Some(sub) => format!("{}/{sub}", c["type"].as_str().unwrap()),
                        None => c["type"].as_str().unwrap().to_string(),
                    };
                    (kind, c["createdDate"].as_i64().unwrap() < self.cutoff.as_millisecond())
                })
                .collect();
            kinds.sort();
            held.insert(person.to_string(), kinds);
        }
        held
    }
}

/// A run of the engine against the realm, with its own ledger and audit trail.
struct Run {
    provider: Arc<dyn IdentityProvider>,
    audit_path: PathBuf,
    progress: SharedProgress,
}

impl Run {
    fn new(realm: &Realm) -> Run {
        Run {
            provider: realm.provider(),
            audit_path: std::env::temp_dir().join(format!("mfa-recall-scope-{:016x}.jsonl", fastrand::u64(..))),
            progress: SharedProgress::default(),
        }
    }

    fn job(realm: &Realm, scope: ScopeSelector) -> RecallJob {
        RecallJob {
            recall: "scope/recall".into(),
            backend: "keycloak".into(),
            scope,
            exclude_users: vec![],
            exclude_groups: vec![],
            kinds: vec![FactorKind::All],
            revoke_sessions: true,
            cutoff: realm.cutoff,
            concurrency: 4,
            window: Default::default(),
            notices: None,
            channel: Default::default(),
            plan_only: false,
            rollout: None,
            exclusions_now: None,
        }
    }

    async fn revoke(&self, job: &RecallJob) -> mfa_recall::Result<RecallCounts> {
        let audit = Arc::new(AuditLog::open(Some(&self.audit_path), "scope", false).unwrap());
        let runner = Runner { provider: self.provider.clone(), ledger: Arc::new(MemoryLedger::default()), audit, progress: self.progress.clone(), stop: watch::channel(false).1 };
        assert_eq!(runner.revoke(job).await?, RunEnd::Finished);
        Ok(self.progress.lock().unwrap().counts.clone())
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn unresolved(&self) -> Vec<String> {
        self.progress.lock().unwrap().unresolved.iter().cloned().collect()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = mfa_recall::audit::remove(&self.audit_path);
    }
}

/// What each person lost, by kind, comparing Keycloak before and after.
fn lost(before: &BTreeMap<String, Vec<(String, bool)>>, after: &BTreeMap<String, Vec<(String, bool)>>) -> BTreeMap<String, Vec<String>> {
    let mut lost = BTreeMap::new();
    for (person, held) in before {
        let mut left = after[person].clone();
        let mut gone = Vec::new();
        for credential in held {
            match left.iter().position(|c| c == credential) {
                Some(i) => {
                    left.remove(i);
                }
                None => gone.push(credential.0.clone()),
            }
        }
        if !gone.is_empty() {
            lost.insert(person.clone(), gone);
        }
    }
    lost
}

fn kind_of(credential: &str) -> &'static str {
    match credential {
        "otp/totp" => "totp",
        "otp/hotp" => "hotp",
        "webauthn" => "webauthn",
        "recovery-authn-codes" => "recoveryCodes",
        other => panic!("unexpected credential {other}"),
    }
}

/// The counts by kind must equal what Keycloak lost.
fn assert_counts_match(counts: &RecallCounts, lost: &BTreeMap<String, Vec<String>>) {
    let mut by_kind: BTreeMap<String, i64> = BTreeMap::new();
    for credential in lost.values().flatten() {
        *by_kind.entry(kind_of(credential).to_string()).or_default() += 1;
    }
    let counted: BTreeMap<String, i64> = counts.factors_revoked.iter().map(|(k, n)| (k.as_str().to_string(), *n)).collect();
    assert_eq!(counted, by_kind, "factors revoked by kind differ from what Keycloak lost");
}

/// Groups and names together, as a responder types them: subgroups count, Ada (in two groups and
/// named by email in capitals) and Frank (named twice, in two cases) are recalled once each, and
/// the name and group that match nobody are named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_names_are_one_union_each_user_once() {
    let realm = Realm::start().await;
    let before = realm.held().await;
    let run = Run::new(&realm);
    let names = ["FRANK", "frank", "ADA.LOVELACE@EXAMPLE.COM", "ghost"].map(String::from).to_vec();
    let job = Run::job(&realm, ScopeSelector::listed(vec!["engineering".into(), "sales".into(), "no-such-group".into()], names));
    let counts = run.revoke(&job).await.unwrap();
    let lost = lost(&before, &realm.held().await);

    let recalled: HashSet<&str> = lost.keys().map(String::as_str).collect();
    assert_eq!(recalled, HashSet::from(["erin", "ada.lovelace", "bob", "carol", "frank"]), "{lost:?}");
    assert_eq!((counts.targeted, counts.invalidated, counts.failed, counts.names_not_found), (5, 5, 0, 2), "{counts:?}");
    assert_counts_match(&counts, &lost);
    assert_eq!(run.unresolved(), ["group no-such-group", "user ghost"]);
    let audited: Vec<String> =
        run.audit().iter().filter(|e| e["action"] == "scope.unresolved").map(|e| e["detail"].as_str().unwrap().to_string()).collect();
    assert_eq!(audited.len(), 2, "every name that matched nobody is audited: {audited:?}");
    // Erin kept the key she enrolled after the cutoff, and is counted apart, not asked again.
    assert!(realm.held().await["erin"].contains(&("webauthn".to_string(), false)));
    assert_eq!((counts.already_enrolled, counts.pending), (1, 4), "{counts:?}");
}

/// Scope by a parent group reaches every level below it, unless narrowed to direct members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_group_reaches_its_subgroups_unless_narrowed() {
    let realm = Realm::start().await;
    let provider = realm.provider();
    let mut members = HashSet::new();
    let mut cursor = None;
    loop {
        let page = provider.group_members("engineering", Membership::Transitive, cursor.as_deref()).await.unwrap();
        members.extend(page.users.into_iter().map(|u| u.username));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(members, HashSet::from(["erin".to_string(), "ada.lovelace".to_string(), "bob".to_string()]));
    // By path too, from the middle of the tree.
    let backend = provider.group_members("/engineering/backend", Membership::Transitive, None).await.unwrap();
    assert_eq!(backend.users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["ada.lovelace"]);
    // And by the bare name of a group deep in the tree, which is unique.
    let oncall = provider.group_members("oncall", Membership::Transitive, None).await.unwrap();
    assert_eq!(oncall.users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["bob"]);

    let before = realm.held().await;
    let run = Run::new(&realm);
    let job = Run::job(&realm, ScopeSelector::Listed { groups: vec!["engineering".into()], users: vec![], membership: Membership::Direct });
    let counts = run.revoke(&job).await.unwrap();
    let lost = lost(&before, &realm.held().await);
    assert_eq!(lost.keys().collect::<Vec<_>>(), ["erin"], "direct members only: {lost:?}");
    assert_eq!(counts.targeted, 1);
}

/// Every user but the excluded: the break-glass account two levels below the excluded group and
/// a user excluded by a name in other letters keep everything; each rule's spares are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusions_reach_nested_groups_and_any_letter_case() {
    let realm = Realm::start().await;
    let before = realm.held().await;
    let run = Run::new(&realm);
    let mut job = Run::job(&realm, ScopeSelector::AllUsers);
    job.exclude_groups = vec!["admins".into()];
    job.exclude_users = vec!["FRANK@example.com".into(), "CAROL".into()];
    let counts = run.revoke(&job).await.unwrap();
    let lost = lost(&before, &realm.held().await);

    for spared in ["dave", "keeper-kim", "frank", "carol"] {
        assert!(!lost.contains_key(spared), "{spared} is excluded and must keep every factor: {lost:?}");
    }
    assert_eq!(lost.len(), 3, "{lost:?}");
    assert_counts_match(&counts, &lost);
    let by_rule: Vec<(&str, i64)> = counts.excluded_by.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(by_rule, [("exclude.groups: admins", 2), ("exclude.users", 2)], "{counts:?}");
    // Keycloak lists no service-account users: the seven people.
    assert_eq!((counts.targeted, counts.excluded, counts.invalidated), (7, 4, 3), "{counts:?}");
}

/// An exclusion group that does not exist stops the recall before anyone is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exclusion_group_touches_nobody() {
    let realm = Realm::start().await;
    let before = realm.held().await;
    let run = Run::new(&realm);
    let mut job = Run::job(&realm, ScopeSelector::AllUsers);
    job.exclude_groups = vec!["admin".into()];
    let error = run.revoke(&job).await.unwrap_err();
    assert!(matches!(error, mfa_recall::Error::ExclusionGroupNotFound(_)), "{error:?}");
    assert_eq!(realm.held().await, before, "nothing may change");
}

/// HOTP and TOTP are told apart by the credential's sub-type: each kind asked for alone takes
/// only itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotp_and_totp_are_told_apart() {
    let realm = Realm::start().await;
    // HOTP first: Bob's TOTP app stays. Then TOTP: it goes, and nobody else's HOTP existed.
    for (kind, credential) in [(FactorKind::Hotp, "otp/hotp"), (FactorKind::Totp, "otp/totp")] {
        let before = realm.held().await;
        let run = Run::new(&realm);
        let mut job = Run::job(&realm, ScopeSelector::listed(vec![], vec!["bob".into()]));
        job.kinds = vec![kind];
        let counts = run.revoke(&job).await.unwrap();
        let after = realm.held().await;
        let lost = lost(&before, &after);
        assert_eq!(lost, BTreeMap::from([("bob".to_string(), vec![credential.to_string()])]), "{kind:?}");
        assert_counts_match(&counts, &lost);
        if kind == FactorKind::Hotp {
            assert_eq!(after["bob"], [("otp/totp".to_string(), true)], "the TOTP app is not an HOTP token");
        }
    }
}

/// A group tree larger than a page at every level: listed whole page by page, each page asked of
/// a fresh adapter (as after a restart, from the cursor in the ledger); a subgroup deleted in the
/// middle of the listing is left out without failing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_group_tree_is_paged_across_restarts_and_survives_a_deleted_subgroup() {
    let parts = support::Parts::from_env();
    let admin = parts.keycloak().await;
    let name = support::unique("scope-large");
    let in_group = |i: usize| match i {
        0..130 => "/big",
        130..250 => "/big/inner",
        _ => "/big/inner/deep",
    };
    let users: Vec<Value> = (0..255).map(|i| json!({"username": format!("Bulk-{i:03}"), "enabled": true, "groups": [in_group(i)]})).collect();
    let groups = json!([{"name": "big", "subGroups": [{"name": "inner", "subGroups": [{"name": "deep"}]}]}]);
    admin.import_realm(&name, groups, users, CLIENT_SECRET).await.unwrap();
    let realm = Realm { admin, url: parts.keycloak_url, name, cutoff: jiff::Timestamp::now() };

    let (mut listed, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = realm.provider().group_members("big", Membership::Transitive, cursor.as_deref()).await.unwrap();
        listed.extend(page.users.into_iter().map(|u| u.username));
        pages += 1;
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!((listed.len(), unique.len(), pages), (255, 255, 5), "big: 100 + 30, inner: 100 + 20, deep: 5");
    assert_eq!(realm.provider().all_group_members("big", Membership::Transitive).await.unwrap().len(), 255);

    // The first two pages, then inner (and deep below it) is deleted: the rest of the listing
    // goes on without them.
    let provider = realm.provider();
    let first = provider.group_members("big", Membership::Transitive, None).await.unwrap();
    let second = provider.group_members("big", Membership::Transitive, first.next.as_deref()).await.unwrap();
    let inner = realm.admin.get(&format!("/{}/group-by-path/big/inner", realm.name)).await.unwrap()["id"].as_str().unwrap().to_string();
    let (status, body) = realm.admin.request(reqwest::Method::DELETE, &format!("/{}/groups/{inner}", realm.name), None).await.unwrap();
    assert_eq!(status, 204, "deleting big/inner: {body}");
    let rest = provider.group_members("big", Membership::Transitive, second.next.as_deref()).await.unwrap();
    assert_eq!((first.users.len(), second.users.len(), rest.users.len(), rest.next), (100, 30, 0, None));
}
