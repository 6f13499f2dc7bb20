//! The console (crates/console) on loopback, with the real apiserver, the real Keycloak as the
//! OpenID Connect provider, and the operator recalling a simulated Okta: people sign in and work
//! in Debian's Chromium driven by playwright-core (tests/browser/console.mjs), and machines use
//! the HTTP API with Kubernetes tokens. The console runs with a ServiceAccount that may only
//! impersonate and ask TokenReview and SubjectAccessReview: what people may do is their own RBAC.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use idp_sim::{Seed, username};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use mfa_recall::api::{BackendLimits, MfaBypass, MfaRecall, RecallPhase};
use serde_json::{Value, json};
use support::{Operator, Parts};
use testkit::cluster;
use testkit::sims::{SimBackend, SimSubject};

/// People's password in the test realm: a canary, so the sweep after the suite finds it wherever it leaked.
const PASSWORD: &str = "mfacanary-console-Passw0rd";
const BACKEND: &str = "corp-okta";

/// What the console's ServiceAccount may do, as the chart grants it: impersonate, and ask who a
/// token is and what a person may do. No Secret, no mfarecall.io object of its own.
fn console_rules() -> Value {
    json!([
        { "apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"] },
        { "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"] },
        { "apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"] }
    ])
}

/// The browser parts from hack/browser.sh: (Chromium, node_modules with playwright-core).
fn browser() -> (String, String) {
    let out = Command::new("hack/browser.sh").output().expect("hack/browser.sh runs");
    assert!(out.status.success(), "hack/browser.sh failed (it installs Debian's chromium and playwright-core): {}", String::from_utf8_lossy(&out.stderr));
    let env = String::from_utf8_lossy(&out.stdout).to_string();
    let var = |name: &str| env.lines().find_map(|l| l.strip_prefix(&format!("export {name}='"))).map(|v| v.trim_end_matches('\'').to_string()).unwrap_or_else(|| panic!("hack/browser.sh printed no {name}: {env}"));
    (var("MFA_RECALL_CHROMIUM"), var("MFA_RECALL_NODE_MODULES"))
}

struct Console {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Console {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The console's ServiceAccount with only the chart's rules; its kubeconfig.
async fn console_identity(parts: &Parts, admin: &Client, namespace: &str) -> PathBuf {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let name = format!("mfa-recall-console-{namespace}");
    let role: ClusterRole = serde_json::from_value(json!({ "metadata": { "name": name }, "rules": console_rules() })).unwrap();
    Api::<ClusterRole>::all(admin.clone()).create(&PostParams::default(), &role).await.unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": "mfa-recall-console", "namespace": namespace }]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone()).create(&PostParams::default(), &binding).await.unwrap();
    let path = parts.file(&format!("console-{namespace}.kubeconfig"));
    support::service_account_kubeconfig(admin, namespace, "mfa-recall-console", &path).await;
    path
}

/// A realm with the console's public client (PKCE, a groups claim) and three people: alice and
/// bob of the security team, carol who may only look.
async fn people_realm(parts: &Parts, realm: &str, console_url: &str) {
    let keycloak = parts.keycloak().await;
    let person = |name: &str, group: &str| json!({
        "username": name, "enabled": true, "email": format!("{name}@example.test"), "emailVerified": true, "firstName": name, "lastName": "Tester",
        "credentials": [{ "type": "password", "value": PASSWORD, "temporary": false }], "groups": [format!("/{group}")]
    });
    let rep = json!({
        "realm": realm, "enabled": true, "sslRequired": "none",
        "groups": [{ "name": "security" }, { "name": "viewers" }],
        "clients": [{
            "clientId": "mfa-recall-console", "enabled": true, "publicClient": true, "standardFlowEnabled": true, "directAccessGrantsEnabled": false,
            "redirectUris": [format!("{console_url}/auth/callback")], "attributes": { "pkce.code.challenge.method": "S256" },
            "protocolMappers": [{ "name": "groups", "protocol": "openid-connect", "protocolMapper": "oidc-group-membership-mapper",
                "config": { "claim.name": "groups", "full.path": "false", "id.token.claim": "true", "access.token.claim": "true", "userinfo.token.claim": "true" } }]
        }],
        "users": [person("alice", "security"), person("bob", "security"), person("carol", "viewers")]
    });
    let (status, body) = keycloak.request(reqwest::Method::POST, "", Some(rep)).await.unwrap();
    assert_eq!(status, 201, "creating realm {realm}: {body}");
}

/// The console on `addr`, signing people in with `issuer` (or only with Kubernetes tokens).
fn start_console(parts: &Parts, kubeconfig: &PathBuf, namespace: &str, issuer: Option<&str>, addr: &str, broad: usize) -> Console {
    let url = format!("http://localhost:{}", addr.rsplit(':').next().unwrap());
    let log = parts.file(&format!("console-{namespace}.log"));
    let child = Command::new(support::workspace_binary("mfa-recall-console"))
        .args(["--listen", addr, "--public-url", &url, "--namespace", namespace, "--broad-scope-users", &broad.to_string()])
        .args(issuer.map(|i| ["--oidc-issuer", i]).into_iter().flatten())
        // Short, so the test can outwait the first sign-in before confirming a broad recall.
        .args(["--fresh-sign-in", "8s"])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .expect("the console starts");
    Console { child, url, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn people_plan_start_approve_and_watch_recalls_in_a_browser() {
    let (chromium, node_modules) = browser();
    let (parts, admin, ns, realm) = support::scenario("console").await;
    let ns = ns.as_str();

    // A simulated Okta paced so that a recall of 40 users takes a few seconds to watch.
    let subject = SimSubject::start("okta").await.unwrap();
    subject.sim.provider.seed(&Seed { users: 60, ..Seed::default() });
    let limits = BackendLimits { requests_per_second: 25, max_concurrency: 2, ..Default::default() };
    cluster::create_backend(&admin, ns, BACKEND, subject.backend_spec("corp-okta-credentials", limits), &subject.secret).await.unwrap();
    let operator = Operator::start(ns, &parts.file("console-audit.jsonl"), &parts.file("console-operator.log"));

    // The security team may do everything a recall needs; carol may look at recalls only.
    let team = json!([
        { "apiGroups": ["mfarecall.io"], "resources": ["mfarecalls", "mfabypasses"], "verbs": ["get", "list", "watch", "create", "patch"] },
        { "apiGroups": ["mfarecall.io"], "resources": ["identitybackends", "mfarecallpolicies", "recallledgersegments"], "verbs": ["get", "list"] },
        { "apiGroups": [""], "resources": ["events"], "verbs": ["list"] }
    ]);
    support::grant(&admin, ns, "security-team", team, &["group:oidc:security"]).await;
    support::grant(&admin, ns, "viewers", json!([{ "apiGroups": ["mfarecall.io"], "resources": ["mfarecalls", "identitybackends"], "verbs": ["get", "list", "watch"] }]), &["group:oidc:viewers"]).await;

    let addr = support::free_addr();
    people_realm(&parts, &realm, &format!("http://localhost:{}", addr.rsplit(':').next().unwrap())).await;
    let kubeconfig = console_identity(&parts, &admin, ns).await;
    let issuer = format!("{}/realms/{realm}", parts.keycloak_url);
    let console = start_console(&parts, &kubeconfig, ns, Some(&issuer), &addr, 30);
    support::eventually("the console answers", || async { support::get(&format!("{}/healthz", console.url)).await.0 == 200 }).await;

    let targets: Vec<String> = (0..40).map(|i| if i % 3 == 0 { username(i).to_uppercase() } else { username(i) }).collect();
    let shots = match std::env::var("MFA_RECALL_SCREENSHOTS") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => parts.work_dir.join("console-screenshots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let before = subject.sim.provider.census(None);
    let out = Command::new("node")
        .arg("tests/browser/console.mjs")
        .env("MFA_RECALL_CHROMIUM", &chromium)
        .env("MFA_RECALL_NODE_MODULES", &node_modules)
        .env("CONSOLE_URL", &console.url)
        .env("PASSWORD", PASSWORD)
        .env("BACKEND", BACKEND)
        .env("TARGETS", targets.join("\n"))
        .env("APPROVAL_TARGETS", [username(50), username(51)].join("\n"))
        .env("BYPASS_USER", username(1))
        .env("SHOTS", &shots)
        .stderr(Stdio::inherit())
        .output()
        .expect("node runs");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "the browser scenarios failed:\n{said}\nconsole log:\n{}\noperator log:\n{}", console.log(), operator.log());
    let result: Value = serde_json::from_str(said.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("the browser scenarios printed no result ({e}):\n{said}"));

    // The recall started from the form after its plan: exactly the 40 users, in alice's name.
    let recalls: Api<MfaRecall> = Api::namespaced(admin.clone(), ns);
    let first = result["recall"].as_str().unwrap();
    let done = cluster::wait_for(&recalls, first, Duration::from_secs(60), |r| r.status.as_ref().is_some_and(|s| s.phase == RecallPhase::AwaitingReEnrollment)).await.unwrap();
    let status = done.status.unwrap();
    assert_eq!((status.counts.targeted, status.counts.invalidated), (40, 40), "{:?}", status.counts);
    assert_eq!(status.plan.as_ref().map(|p| p.users), Some(40));
    // The page's counts rose while it ran, without a reload.
    let seen: Vec<i64> = result["doneSeen"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert!(seen.len() >= 3 && seen.windows(2).all(|w| w[0] < w[1]) && seen.last() == Some(&40), "counts the page showed, in order: {seen:?}");
    assert_eq!(result["reloaded"], json!(false), "the page was reloaded while the recall ran");
    assert_eq!(result["freshSignIn"], json!(true), "a broad recall asked for a fresh sign-in (prompt=login, max_age=0)");
    assert_eq!(result["oldSessionAfterFreshSignIn"], json!(303), "the session before the fresh sign-in still works");
    assert_ne!(subject.sim.provider.census(None), before);

    // Approved by a second person: bob's name, as the apiserver authenticated him through the console.
    let second = result["approvalRecall"].as_str().unwrap();
    let approved = cluster::wait_for(&recalls, second, Duration::from_secs(60), |r| r.status.as_ref().is_some_and(|s| s.phase == RecallPhase::AwaitingReEnrollment)).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let approval = approved.spec.approval.unwrap();
    assert_eq!((approval.requested_by.as_str(), approval.approved_by.as_deref()), ("oidc:alice", Some("oidc:bob")));
    assert_eq!(approved.status.unwrap().counts.invalidated, 2);

    // carol was refused (403 on the page) and nothing of hers exists.
    assert_eq!(result["carolStatus"], json!(403), "{result}");
    let all = recalls.list(&ListParams::default()).await.unwrap();
    assert!(all.items.iter().all(|r| r.spec.reason != "carol tries"), "carol's recall exists");
    assert_eq!(all.items.len(), 2, "only alice's two recalls: {:?}", all.items.iter().map(|r| &r.metadata.name).collect::<Vec<_>>());

    // The bypass: requested by alice, approved by bob.
    let bypasses: Api<MfaBypass> = Api::namespaced(admin.clone(), ns);
    let bypass = bypasses.list(&ListParams::default()).await.unwrap().items.into_iter().next().expect("a bypass was requested");
    assert_eq!((bypass.spec.requested_by.as_str(), bypass.spec.approved_by.as_deref(), bypass.spec.user.as_str()), ("oidc:alice", Some("oidc:bob"), username(1).as_str()));

    // The console's log names people, never their password or a token.
    let log = console.log();
    assert!(log.contains("signed in with OpenID Connect") && log.contains("oidc:alice"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains("eyJ"), "the console logged a secret:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn machines_use_the_api_with_kubernetes_tokens_and_rbac_decides() {
    let (parts, admin, ns, _) = support::scenario("console-api").await;
    let ns = ns.as_str();
    let subject = SimSubject::start("okta").await.unwrap();
    subject.sim.provider.seed(&Seed { users: 10, ..Seed::default() });
    cluster::create_backend(&admin, ns, BACKEND, subject.backend_spec("corp-okta-credentials", BackendLimits::default()), &subject.secret).await.unwrap();
    let operator = Operator::start(ns, &parts.file("console-api-audit.jsonl"), &parts.file("console-api-operator.log"));

    // A SOAR tool's ServiceAccount may plan, start and follow recalls and read their users; another may do nothing.
    let rules = json!([
        { "apiGroups": ["mfarecall.io"], "resources": ["mfarecalls"], "verbs": ["get", "list", "watch", "create", "patch"] },
        { "apiGroups": ["mfarecall.io"], "resources": ["recallledgersegments"], "verbs": ["get"] }
    ]);
    support::grant(&admin, ns, "soar", rules, &[&format!("system:serviceaccount:{ns}:soar-bot")]).await;
    let (bot, intruder) = (support::service_account_token(&admin, ns, "soar-bot").await, support::service_account_token(&admin, ns, "intruder").await);
    let kubeconfig = console_identity(&parts, &admin, ns).await;
    let console = start_console(&parts, &kubeconfig, ns, None, &support::free_addr(), 100);
    support::eventually("the console answers", || async { support::get(&format!("{}/healthz", console.url)).await.0 == 200 }).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let api = format!("{}/api/v1/namespaces/{ns}/recalls", console.url);
    let recalls: Api<MfaRecall> = Api::namespaced(admin.clone(), ns);

    // The OpenAPI document describes what is served.
    let doc: Value = http.get(format!("{}/api/v1/openapi.json", console.url)).send().await.unwrap().json().await.unwrap();
    for path in ["/namespaces/{namespace}/recalls", "/namespaces/{namespace}/recalls/{name}/start", "/namespaces/{namespace}/recalls/{name}/approve", "/namespaces/{namespace}/recalls/{name}/events", "/namespaces/{namespace}/recalls/{name}/users"] {
        assert!(doc["paths"][path].is_object(), "the OpenAPI document lacks {path}");
    }

    // No token, or one Kubernetes does not accept: 401. A token without the right: 403, and nothing is created.
    let plan = json!({ "name": "soar-1", "spec": { "reason": "SOAR case 991", "backends": [BACKEND], "scope": { "users": [username(1), username(2).to_uppercase()] } } });
    assert_eq!(http.post(&api).json(&plan).send().await.unwrap().status(), 401);
    assert_eq!(http.post(&api).bearer_auth("not-a-token").json(&plan).send().await.unwrap().status(), 401);
    let refused = http.post(&api).bearer_auth(&intruder).json(&plan).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let said: Value = refused.json().await.unwrap();
    assert!(said["message"].as_str().unwrap().contains(&format!("system:serviceaccount:{ns}:intruder may not create mfarecalls")), "{said}");
    assert!(recalls.list(&ListParams::default()).await.unwrap().items.is_empty(), "the refused call created a recall");
    let bad = http.post(&api).bearer_auth(&bot).json(&json!({ "name": "soar-0", "spec": { "reason": "x", "backends": [BACKEND], "scope": { "users": ["a"] }, "factors": ["smoke-signals"] } })).send().await.unwrap();
    assert_eq!(bad.status(), 422, "an invalid spec is refused with what to fix");
    assert!(bad.text().await.unwrap().contains("smoke-signals"));

    // A plan by default; followed by server-sent events; started; its users read.
    let created = http.post(&api).bearer_auth(&bot).json(&plan).send().await.unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let mut events = http.get(format!("{api}/soar-1/events")).bearer_auth(&bot).send().await.unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    let planned = testkit::sse::next(&mut events, &mut buffer, "recall", |v| v["phase"] == "Planned").await;
    assert_eq!((planned["mode"].as_str(), planned["plan"]["users"].as_i64()), (Some("Plan"), Some(2)), "{planned}");
    let started = http.post(format!("{api}/soar-1/start")).bearer_auth(&bot).send().await.unwrap();
    assert_eq!(started.status(), 200);
    let done = testkit::sse::next(&mut events, &mut buffer, "recall", |v| v["phase"] == "AwaitingReEnrollment").await;
    assert_eq!((done["done"].as_i64(), done["backends"][0]["invalidated"].as_i64()), (Some(2), Some(2)), "{done}\n{}", operator.log());
    let read: Value = http.get(format!("{api}/soar-1")).bearer_auth(&bot).send().await.unwrap().json().await.unwrap();
    assert_eq!(read["phase"], "AwaitingReEnrollment");
    let users: Value = http.get(format!("{api}/soar-1/users?q=USER000002")).bearer_auth(&bot).send().await.unwrap().json().await.unwrap();
    assert_eq!(users["rows"].as_array().map(Vec::len), Some(1), "{users}");
    assert_eq!(users["rows"][0]["state"], "invalidated");
    assert_eq!(http.get(format!("{api}/soar-1/users")).bearer_auth(&intruder).send().await.unwrap().status(), 403);
    assert_eq!(http.get(format!("{api}/soar-1/events")).bearer_auth(&intruder).send().await.unwrap().status(), 403);

    // Only a finished plan starts: one whose backend does not exist never has one. A name that is
    // not a Kubernetes name never reaches the apiserver.
    let unplannable = json!({ "name": "soar-9", "spec": { "reason": "SOAR case 999", "backends": ["no-such-backend"], "scope": { "users": ["a"] } } });
    assert_eq!(http.post(&api).bearer_auth(&bot).json(&unplannable).send().await.unwrap().status(), 201);
    let early = http.post(format!("{api}/soar-9/start")).bearer_auth(&bot).send().await.unwrap();
    assert_eq!(early.status(), 409);
    assert!(early.text().await.unwrap().contains("only a finished plan can be started"));
    assert_eq!(recalls.get("soar-9").await.unwrap().spec.mode, mfa_recall::api::RecallMode::Plan);
    assert_eq!(http.post(format!("{api}/soar-1%2Fstatus/start")).bearer_auth(&bot).send().await.unwrap().status(), 400);

    // A recall that needs a second person: requested in the bot's name, approved by the lead's token.
    support::grant(&admin, ns, "lead", json!([{ "apiGroups": ["mfarecall.io"], "resources": ["mfarecalls"], "verbs": ["get", "patch"] }]), &[&format!("system:serviceaccount:{ns}:lead")]).await;
    let lead = support::service_account_token(&admin, ns, "lead").await;
    let gated = json!({ "name": "soar-2", "spec": { "reason": "SOAR case 992", "backends": [BACKEND], "scope": { "users": [username(3)] }, "mode": "Execute", "approval": {} } });
    let created: Value = http.post(&api).bearer_auth(&bot).json(&gated).send().await.unwrap().json().await.unwrap();
    assert_eq!(created["requestedBy"], format!("system:serviceaccount:{ns}:soar-bot"), "{created}");
    let mut events = http.get(format!("{api}/soar-2/events")).bearer_auth(&bot).send().await.unwrap();
    let mut buffer = String::new();
    testkit::sse::next(&mut events, &mut buffer, "recall", |v| v["phase"] == "AwaitingApproval").await;
    assert_eq!(http.post(format!("{api}/soar-2/approve")).bearer_auth(&intruder).send().await.unwrap().status(), 403);
    let approved: Value = http.post(format!("{api}/soar-2/approve")).bearer_auth(&lead).send().await.unwrap().json().await.unwrap();
    assert_eq!(approved["approvedBy"], format!("system:serviceaccount:{ns}:lead"), "{approved}");
    let done = testkit::sse::next(&mut events, &mut buffer, "recall", |v| v["phase"] == "AwaitingReEnrollment").await;
    assert_eq!(done["done"], 1, "{done}");

    // The pages: a token sign-in gives a cookie scripts cannot read and other sites cannot send.
    let form = [("token", bot.as_str())];
    let signed_in = http.post(format!("{}/auth/token", console.url)).header("origin", &console.url).form(&form).send().await.unwrap();
    assert_eq!(signed_in.status(), 303);
    let set_cookie = signed_in.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.starts_with("__Host-mfa-recall-session=") && set_cookie.contains("HttpOnly") && set_cookie.contains("Secure") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    // A bearer token is the API's way in, not the pages': there it is ignored (no CSRF token, no fresh sign-in).
    let with_bearer = http.get(format!("{}/", console.url)).bearer_auth(&bot).send().await.unwrap();
    assert_eq!((with_bearer.status().as_u16(), with_bearer.headers()["location"].to_str().unwrap()), (303, "/auth/login?next=%2F"));
    // Without a session, an event stream and a form post are told 401 rather than sent to sign in.
    assert_eq!(http.get(format!("{}/events/recalls", console.url)).send().await.unwrap().status(), 401);
    assert_eq!(http.post(format!("{}/recalls", console.url)).header("origin", &console.url).form(&[("reason", "x")]).send().await.unwrap().status(), 401);
    let page = http.get(format!("{}/", console.url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains("soar-1") && !html.contains(&bot), "the page lists the recall and holds no token");

    // A forged form: another site's Origin, or no CSRF token, is refused and creates nothing.
    let recall_form = [("reason", "forged"), ("backend", BACKEND), ("users", "someone"), ("csrf", "guess")];
    let forged = http.post(format!("{}/recalls", console.url)).header("cookie", &cookie).header("origin", "https://evil.example").form(&recall_form).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    let forged = http.post(format!("{}/recalls", console.url)).header("cookie", &cookie).header("origin", &console.url).form(&recall_form).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.text().await.unwrap().contains("did not come from the console"));
    assert_eq!(recalls.list(&ListParams::default()).await.unwrap().items.len(), 3, "a forged form created a recall");

    // Sign-in attempts are limited per address.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(http.post(format!("{}/auth/token", console.url)).header("origin", &console.url).form(&[("token", "wrong")]).send().await.unwrap().status().as_u16());
    }
    // 10 a minute: a bearer token Kubernetes refused and the token sign-in above were two of them.
    assert_eq!(statuses, [[401; 8].as_slice(), &[429; 4]].concat(), "{statuses:?}");
    assert!(!console.log().contains(&bot), "the console logged a token");

    // Stopped as Kubernetes stops a pod (SIGTERM), with an event stream open: it ends and the console exits.
    let mut console = console;
    let stream = http.get(format!("{api}/soar-1/events")).bearer_auth(&bot).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert!(Command::new("kill").args(["-TERM", &console.child.id().to_string()]).status().unwrap().success());
    support::eventually("the console exits on SIGTERM", || {
        let exited = console.child.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    assert!(stream.text().await.is_ok(), "the event stream ended cleanly");
}
