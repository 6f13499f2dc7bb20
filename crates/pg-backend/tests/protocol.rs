//! The reference backend against Debian's real PostgreSQL (hack/postgres.sh): every call of the
//! protocol, as the operator will make them, on data shaped as an in-house store's is (mixed-case
//! names, nested groups, factors of unknown age, sessions of three kinds).

use std::process::{Child, Command};
use std::time::Duration;

use deadpool_postgres::tokio_postgres;
use serde_json::{Value, json};

const MEDIA_TYPE: &str = "application/vnd.mfa-recall.backend+json;version=1";
const TOKEN: &str = "mfacanary-pg-backend-test-token";

struct Backend(Child);

/// Removed however the test ends.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh database on the test PostgreSQL, its URL, and a client to seed it.
async fn database() -> (String, tokio_postgres::Client) {
    let server = std::env::var("MFA_RECALL_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("MFA_RECALL_POSTGRES_URL is not set: these tests need Debian's PostgreSQL. Run the suite with `hack/test.sh`, or `hack/postgres.sh start /tmp/pg && source /tmp/pg/env`")
    });
    let (admin, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls).await.expect("the test PostgreSQL answers");
    tokio::spawn(connection);
    let name = format!("store_{:08x}", fastrand::u32(..));
    admin.batch_execute(&format!("create database {name}")).await.unwrap();
    let url = format!("{}/{name}", server.rsplit_once('/').unwrap().0);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    (url, client)
}

/// The backend on a free loopback port; with `apply`, it creates the tables first.
fn start(url: &str, dir: &std::path::Path, apply: bool) -> (Backend, String) {
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut command = Command::new(env!("CARGO_BIN_EXE_mfa-recall-pg-backend"));
    // The authority of the test server's TLS certificate (hack/postgres.sh).
    if let Ok(ca) = std::env::var("MFA_RECALL_POSTGRES_CA") {
        command.env("MFA_RECALL_PG_BACKEND_DATABASE_CA", ca);
    }
    let child = command
        .args(["--database-url", url, "--listen", &addr.to_string()])
        .args(apply.then_some("--apply-schema"))
        .arg("--token-file")
        .arg(&token_file)
        .spawn()
        .expect("the backend starts");
    (Backend(child), format!("http://{addr}"))
}

/// Waits until the backend at `base` answers its negotiation.
async fn answers(http: &reqwest::Client, base: &str) {
    for _ in 0..100 {
        if http.get(format!("{base}/")).header("accept", MEDIA_TYPE).bearer_auth(TOKEN).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the backend at {base} did not answer");
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = http.request(method, url).bearer_auth(TOKEN).header("accept", MEDIA_TYPE);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_call_of_the_protocol_on_a_real_store() {
    let (url, db) = database().await;
    let dir = TempDir(std::env::temp_dir().join(format!("pg-backend-{:08x}", fastrand::u32(..))));
    std::fs::create_dir_all(&dir.0).unwrap();
    let http = reqwest::Client::new();
    // The tables are made by their owner; the backend then runs as the role of roles.sql, so
    // every call below also proves those grants are enough.
    let (owner, base) = start(&url, &dir.0, true);
    answers(&http, &base).await;
    drop(owner);
    db.batch_execute("do $$ begin if not exists (select from pg_roles where rolname = 'mfa_recall_backend') then create role mfa_recall_backend login password 'mfacanary-backend-role'; end if; end $$;").await.unwrap();
    db.batch_execute(include_str!("../roles.sql")).await.unwrap();
    let mut as_role = reqwest::Url::parse(&url).unwrap();
    as_role.set_username("mfa_recall_backend").unwrap();
    as_role.set_password(Some("mfacanary-backend-role")).unwrap();
    // As beside a real database: TLS insisted on, the server's certificate checked.
    let mut over_tls = as_role.clone();
    over_tls.set_query(Some("sslmode=require"));
    let (_backend, base) = start(over_tls.as_str(), &dir.0, false);
    answers(&http, &base).await;
    assert_eq!(http.get(format!("{base}/users")).bearer_auth(TOKEN).header("accept", MEDIA_TYPE).send().await.unwrap().status(), 200);
    let tls: Vec<bool> = db.query("select s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid) where a.usename = 'mfa_recall_backend'", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert!(!tls.is_empty() && tls.iter().all(|t| *t), "the backend's connections are all over TLS: {tls:?}");
    // A server certificate the given authority did not sign: the backend does not start, and says why.
    let other_ca = dir.0.join("other-ca.crt");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=another authority", "-keyout"])
        .arg(dir.0.join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("openssl runs (Debian's openssl)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let refused = Command::new(env!("CARGO_BIN_EXE_mfa-recall-pg-backend"))
        .args(["--database-url", over_tls.as_str(), "--apply-schema", "--database-ca"])
        .arg(&other_ca)
        .arg("--token-file")
        .arg(dir.0.join("token"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("invalid peer certificate: UnknownIssuer"), "{said}");
    let get = |path: &str| { let (http, url) = (http.clone(), format!("{base}{path}")); async move { call(&http, reqwest::Method::GET, &url, None).await } };

    db.batch_execute(
        "insert into users (id, username, email) values ('u1', 'Alice.Admin', 'ALICE@example.test'), ('u2', 'bob', 'bob@example.test'), ('u3', 'break-glass', null), ('u4', 'carol', 'carol@example.test');
         insert into groups (id, name) values ('g-staff', 'staff');
         insert into groups (id, name, parent_id) values ('g-admins', 'admins', 'g-staff'), ('g-bg', 'break-glass', 'g-admins');
         insert into group_members values ('g-staff', 'u1'), ('g-admins', 'u2'), ('g-bg', 'u3'), ('g-staff', 'u2');
         insert into factors (id, user_id, kind, type, created_at) values
           ('f1', 'u1', 'totp', 'authenticator app', '2026-10-01T08:14:03.512Z'), ('f2', 'u1', 'webauthn', 'security key', '2026-12-07T03:01:00Z'),
           ('f3', 'u2', 'recoveryCodes', 'backup codes', null), ('f4', 'u2', 'sms', 'text message', '2026-01-01T00:00:00Z');
         insert into sessions (id, user_id, expires_at) values ('s1', 'u1', now() + interval '1 day'), ('s2', 'u1', now() + interval '1 day');
         insert into refresh_tokens (id, user_id, token_hash, expires_at) values ('r1', 'u1', 'x', now() + interval '30 days');
         insert into remembered_devices (id, user_id) values ('d1', 'u1');
         insert into sessions (id, user_id, expires_at) values ('s-old', 'u1', now() - interval '1 day');",
    )
    .await
    .unwrap();

    // The role reads no factor secret.
    let (role_db, connection) = tokio_postgres::connect(as_role.as_str(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let refused = role_db.query("select secret from factors", &[]).await.unwrap_err();
    let said = refused.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(said.contains("permission denied"), "{said}");

    // Negotiation: version 1, or 406 to a caller that does not ask for it; the token on every call.
    let (status, negotiated) = get("/").await;
    assert_eq!((status, negotiated["protocol"].as_str()), (200, Some("mfa-recall-backend")));
    assert_eq!(negotiated["capabilities"]["nestedGroups"], true);
    assert_eq!(http.get(format!("{base}/")).bearer_auth(TOKEN).header("accept", "application/json").send().await.unwrap().status(), 406);
    let refused = http.get(format!("{base}/users")).bearer_auth("mfacanary-wrong").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "unauthorized");

    // Users a page at a time; names in any letter case, and by email or id.
    let (_, first) = get("/users?limit=3").await;
    assert_eq!(first["users"].as_array().unwrap().len(), 3);
    let (_, rest) = get(&format!("/users?limit=3&cursor={}", first["next"].as_str().unwrap())).await;
    assert_eq!((rest["users"][0]["id"].as_str(), rest["next"].clone()), (Some("u4"), Value::Null));
    assert_eq!(get("/users?limit=4").await.1["next"], Value::Null, "a full page with nothing after it is the last");
    // Every refusal in the protocol's JSON shape: a query that does not read, a call that is not one.
    let (status, bad) = get("/groups/staff/members?direct=yes").await;
    assert_eq!((status, bad["error"].as_str()), (400, Some("invalid")), "{bad}");
    assert_eq!(get("/no/such/call").await, (404, json!({ "error": "notFound", "message": "no such call in the backend protocol" })));
    // The scheme of Authorization in any letter case.
    assert_eq!(http.get(format!("{base}/users?limit=1")).header("authorization", format!("bearer {TOKEN}")).header("accept", MEDIA_TYPE).send().await.unwrap().status(), 200);
    for name in ["alice.admin", "alice@EXAMPLE.test", "u1"] {
        assert_eq!(get(&format!("/users?name={name}")).await.1["users"], json!([{ "id": "u1", "username": "Alice.Admin" }]), "{name}");
    }
    assert_eq!(get("/users?name=nobody").await.1["users"], json!([]));

    // Groups: the break-glass account is in a subgroup of a subgroup.
    let ids = |v: &Value| v["users"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&get("/groups/staff/members").await.1), ["u1", "u2", "u3"], "members of subgroups, each once");
    assert_eq!(ids(&get("/groups/staff/members?direct=true").await.1), ["u1", "u2"]);
    assert_eq!(ids(&get("/groups/g-bg/members").await.1), ["u3"], "by id too");
    assert_eq!(get("/groups/nope/members").await.0, 404);
    assert_eq!(ids(&get("/groups/Break-Glass/members").await.1), ["u3"], "a group's name in any letter case");
    assert!(db.batch_execute("insert into groups (id, name) values ('g-x', 'STAFF')").await.is_err(), "one group per name, whatever its case");

    // A user's factors with creation times as stored (unknown stays unknown), and their sessions of every kind.
    let (status, u1) = get("/users/u1/factors").await;
    assert_eq!(status, 200);
    assert_eq!(u1["factors"][0], json!({ "id": "f1", "kind": "totp", "type": "authenticator app", "createdAt": "2026-10-01T08:14:03.512000Z" }));
    assert_eq!(u1["sessions"], 4, "the expired session is not counted");
    assert_eq!(get("/users/u2/factors").await.1["factors"][0]["createdAt"], Value::Null);
    assert_eq!(get("/users/nobody/factors").await, (404, json!({ "error": "notFound", "message": "no user nobody" })));

    // Revocation: idempotent, the second time alreadyGone; sessions of all three kinds end.
    let delete = |path: &str| { let (http, url) = (http.clone(), format!("{base}{path}")); async move { call(&http, reqwest::Method::DELETE, &url, None).await } };
    let post = |path: &str, body: Option<Value>| { let (http, url) = (http.clone(), format!("{base}{path}")); async move { call(&http, reqwest::Method::POST, &url, body).await } };
    assert_eq!(delete("/users/u1/factors/f1").await.0, 204);
    assert_eq!(delete("/users/u1/factors/f1").await.1["error"], "alreadyGone");
    assert_eq!(delete("/users/u2/factors/f2").await.1["error"], "alreadyGone", "another user's factor is not theirs to delete");
    assert_eq!(delete("/users/nobody/factors/f2").await.1["error"], "notFound");
    assert_eq!(post("/users/u1/sessions/revoke", None).await, (200, json!({ "revoked": 4 })), "the live ones counted, as the factors call counted them");
    assert_eq!(db.query_one("select count(*) from sessions where user_id = 'u1'", &[]).await.unwrap().get::<_, i64>(0), 0, "expired ones go too");
    assert_eq!(get("/users/u1/factors").await.1["sessions"], 0);
    assert_eq!(post("/users/u1/require-enrollment", Some(json!({ "kinds": ["totp", "webauthn"] }))).await.0, 204);
    let required: Vec<String> = db.query_one("select kinds from required_enrollments where user_id = 'u1'", &[]).await.unwrap().get(0);
    assert_eq!(required, ["totp", "webauthn"]);
    assert_eq!(post("/users/u1/require-enrollment", Some(json!({ "wrong": 1 }))).await.0, 400);
    assert_eq!(post("/users/u1/require-enrollment", Some(json!({ "kinds": ["carrierPigeon"] }))).await.1["error"], "invalid", "only the protocol's kinds");
    assert_eq!(post("/users/u1/require-enrollment", Some(json!({ "kinds": [] }))).await.0, 400);

    // Who enrolled since a time; disable and enable.
    assert_eq!(get("/users/u1/enrollments?since=2026-12-07T03:00:00Z").await.1["enrollment"]["kind"], "webauthn");
    assert_eq!(get("/users/u2/enrollments?since=2026-12-07T03:00:00Z").await.1["enrollment"], Value::Null);
    assert_eq!(get("/users/u1/enrollments?since=yesterday").await.0, 400);
    assert_eq!(post("/users/u4/disable", None).await.0, 204);
    assert_eq!(get("/users/u4").await.1["enabled"], false);
    assert_eq!(post("/users/u4/enable", None).await.0, 204);

    // The event log from a cursor: the triggers recorded every enrollment and removal, in order.
    let (_, page) = get("/events?limit=4").await;
    assert_eq!(page["more"], true);
    let (_, next) = get(&format!("/events?limit=100&cursor={}", page["next"].as_str().unwrap())).await;
    let types: Vec<&str> = page["events"].as_array().unwrap().iter().chain(next["events"].as_array().unwrap()).map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["factorEnrolled", "factorEnrolled", "factorEnrolled", "factorEnrolled", "factorRemoved"]);
    assert_eq!(next["more"], false);
    let (_, caught_up) = get(&format!("/events?cursor={}", next["next"].as_str().unwrap())).await;
    assert_eq!((caught_up["events"].clone(), caught_up["next"].clone()), (json!([]), next["next"].clone()), "a reader that caught up keeps its place");
    // A first read from a time with nothing after it goes on from the log's end, not its start.
    let (_, from_now) = get("/events?from=2099-01-01T00:00:00Z").await;
    assert_eq!(from_now["events"], json!([]));
    assert_eq!(get(&format!("/events?cursor={}", from_now["next"].as_str().unwrap())).await.1["events"], json!([]), "nothing before the end is read again");

    // An event committed late is not passed over: the log is read in commit order, up to the
    // oldest transaction still running (a sequence number is taken at insert, not at commit).
    let (late, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    late.batch_execute("begin; insert into factors (id, user_id, kind, type, created_at) values ('late', 'u1', 'totp', 'app', now())").await.unwrap();
    db.batch_execute("insert into factors (id, user_id, kind, type, created_at) values ('early', 'u3', 'sms', 'phone', now())").await.unwrap();
    let cursor = from_now["next"].as_str().unwrap().to_string();
    let (_, held) = get(&format!("/events?cursor={cursor}")).await;
    assert_eq!((held["events"].clone(), held["next"].as_str()), (json!([]), Some(cursor.as_str())), "a later commit waits while an earlier insert is open");
    late.batch_execute("commit").await.unwrap();
    let (_, both) = get(&format!("/events?cursor={cursor}")).await;
    let users: Vec<&str> = both["events"].as_array().unwrap().iter().map(|e| e["userId"].as_str().unwrap()).collect();
    assert_eq!(users, ["u1", "u3"], "{both}");
    assert_eq!(get("/events?cursor=12").await.0, 400, "a cursor the backend never gave is refused");
    assert_eq!(get("/events?cursor=99999999999999999999.0").await.0, 400, "past any transaction id");
    assert_eq!(get("/events?cursor=18446744073709551615.0").await.0, 400, "past any transaction the server has begun");
    let (_, exact) = get(&format!("/events?cursor={cursor}&limit=2")).await;
    assert_eq!(exact["more"], false, "a full page with nothing after it: nothing more to read");

    // A factor set up again in place (a new secret) is a new factor, enrolled from where the login
    // service says (its app.client_* settings).
    db.batch_execute("begin; select set_config('app.client_ip', '203.0.113.9', true); update factors set secret = 'new' where id = 'f4'; commit").await.unwrap();
    let since = get("/users/u2/enrollments?since=2026-12-01T00:00:00Z").await.1;
    assert_eq!((since["enrollment"]["kind"].as_str(), since["enrollment"]["ip"].as_str()), (Some("sms"), Some("203.0.113.9")), "{since}");
    let rekeyed = get("/users/u2/factors").await.1["factors"].as_array().unwrap().iter().find(|f| f["id"] == "f4").unwrap()["createdAt"].as_str().unwrap().to_string();
    assert!(rekeyed > "2026-12-01".to_string(), "re-keyed at {rekeyed}");

    // A bypass: issued once, its code never stored, used or not, withdrawn once.
    let (status, issued) = post("/users/u2/bypasses", Some(json!({ "lifetimeSeconds": 900 }))).await;
    assert_eq!(status, 201);
    let (code, reference) = (issued["secret"].as_str().unwrap().to_string(), issued["reference"].as_str().unwrap().to_string());
    let stored: String = db.query_one("select code_hash from bypass_codes where reference = $1", &[&reference]).await.unwrap().get(0);
    assert!(!stored.contains(&code) && stored.len() == 64);
    assert_eq!(get(&format!("/users/u2/bypasses/{reference}")).await.1, json!({ "used": false }));
    // Issued again (a retry): the earlier one is withdrawn, so one stays live.
    let (_, again) = post("/users/u2/bypasses", Some(json!({ "lifetimeSeconds": 900 }))).await;
    let live: i64 = db.query_one("select count(*) from bypass_codes where user_id = 'u2' and revoked_at is null", &[]).await.unwrap().get(0);
    assert_eq!(live, 1);
    assert_eq!(delete(&format!("/users/u2/bypasses/{reference}")).await.1["error"], "alreadyGone", "the first was withdrawn by the second");
    let reference = again["reference"].as_str().unwrap().to_string();
    assert_eq!(delete(&format!("/users/u2/bypasses/{reference}")).await.0, 204);
    assert_eq!(delete(&format!("/users/u2/bypasses/{reference}")).await.1["error"], "alreadyGone");
    assert_eq!(delete(&format!("/users/nobody/bypasses/{reference}")).await.1["error"], "notFound", "no such user is not alreadyGone");
    // One that can no longer be used (expired) is gone already.
    let (_, expiring) = post("/users/u2/bypasses", Some(json!({ "lifetimeSeconds": 900 }))).await;
    db.batch_execute("update bypass_codes set expires_at = now() - interval '1 second' where revoked_at is null").await.unwrap();
    assert_eq!(delete(&format!("/users/u2/bypasses/{}", expiring["reference"].as_str().unwrap())).await.1["error"], "alreadyGone");
    assert_eq!(post("/users/u2/bypasses", Some(json!({ "lifetimeSeconds": 5 }))).await.0, 400);

    // A statement held up (a lock taken by another session) ends at the statement timeout, which
    // the URL's options may set, and the call answers 503 rather than waiting on.
    let mut impatient = over_tls.clone();
    impatient.set_query(Some("sslmode=require&options=-c%20statement_timeout%3D500"));
    let (_impatient_backend, impatient_base) = start(impatient.as_str(), &dir.0, false);
    answers(&http, &impatient_base).await;
    late.batch_execute("begin; lock table users in access exclusive mode").await.unwrap();
    let started = std::time::Instant::now();
    let (status, held) = call(&http, reqwest::Method::GET, &format!("{impatient_base}/users/u1"), None).await;
    late.batch_execute("rollback").await.unwrap();
    assert_eq!((status, held["message"].as_str()), (503, Some("the store could not answer")), "{held}");
    assert!(started.elapsed() < Duration::from_secs(10), "ended by the statement timeout, not the request's deadline: {:?}", started.elapsed());

    // A name that names more users than one answer may hold is refused, not cut short.
    db.batch_execute("insert into users (id, username, email) select 'shared-' || i, 'shared-' || i, 'Team@example.test' from generate_series(1, 101) i").await.unwrap();
    let (status, many) = get("/users?name=team@example.test").await;
    assert_eq!((status, many["error"].as_str()), (400, Some("invalid")), "{many}");
}
