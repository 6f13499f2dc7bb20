//! Shared by the integration tests: the parts started by hack/localparts.sh (read from the
//! environment, failing loudly when absent), and the operator as a real child process.
#![allow(dead_code)]

pub mod notices;
pub mod proxy;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use testkit::KeycloakAdmin;

pub struct Parts {
    pub keycloak_url: String,
    pub admin_user: String,
    pub admin_password: String,
    pub work_dir: PathBuf,
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: these tests need the real kube-apiserver, etcd and Keycloak. Run the whole suite with \
             `hack/test.sh`, or start the parts with `hack/localparts.sh start /tmp/parts && source /tmp/parts/env`."
        )
    })
}

impl Parts {
    pub fn from_env() -> Self {
        required("KUBECONFIG");
        let work_dir = PathBuf::from(required("MFA_RECALL_PARTS_DIR")).join("tests");
        std::fs::create_dir_all(&work_dir).unwrap();
        Self {
            keycloak_url: required("MFA_RECALL_KEYCLOAK_URL"),
            admin_user: required("MFA_RECALL_KEYCLOAK_ADMIN_USER"),
            admin_password: required("MFA_RECALL_KEYCLOAK_ADMIN_PASSWORD"),
            work_dir,
        }
    }

    pub async fn client(&self) -> Client {
        let client = Client::try_default().await.expect("kube client from KUBECONFIG");
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in mfa_recall::api::crds() {
            let name = crd.metadata.name.clone().unwrap();
            crds.patch(&name, &PatchParams::apply("mfa-recall-tests").force(), &Patch::Apply(&crd)).await.expect("install CRD");
            testkit::cluster::wait_for(&crds, &name, std::time::Duration::from_secs(30), |c| {
                c.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
            })
            .await
            .expect("CRD established");
        }
        client
    }

    pub async fn keycloak(&self) -> KeycloakAdmin {
        KeycloakAdmin::connect(&self.keycloak_url, &self.admin_user, &self.admin_password).await.expect("Keycloak admin login")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        let path = self.work_dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }
}

/// The ledger key every operator of the tests signs with, as the chart mounts one Secret into
/// every replica; a canary, so the sweep after the suite finds it wherever it leaked.
pub const LEDGER_KEY: &str = "mfacanary-ledger-key-of-the-integration-tests";

/// The file holding LEDGER_KEY in `dir`, written whole before any operator reads it.
pub fn ledger_key_file(dir: &Path) -> PathBuf {
    let path = dir.join("ledger.key");
    if !path.exists() {
        // Renamed into place: operators of tests running side by side never read half a key.
        let partial = dir.join(format!("ledger.key.{}", unique("partial")));
        std::fs::write(&partial, LEDGER_KEY).unwrap();
        std::fs::rename(&partial, &path).unwrap();
    }
    path
}

/// The operator binary as a child process, watching one namespace.
pub struct Operator {
    child: Option<Child>,
    pub namespace: String,
    pub audit_file: PathBuf,
    pub log_file: PathBuf,
}

impl Operator {
    pub fn start(namespace: &str, audit_file: &PathBuf, log_file: &PathBuf) -> Self {
        Self::start_with(namespace, audit_file, log_file, &format!("op-{namespace}"), &[])
    }

    /// An operator named `instance`, with extra command-line arguments.
    pub fn start_with(namespace: &str, audit_file: &PathBuf, log_file: &PathBuf, instance: &str, extra: &[&str]) -> Self {
        Self::spawn(namespace, audit_file, log_file, instance, extra, None)
    }

    /// The operator authenticating with `kubeconfig` (another identity) instead of the test's admin.
    pub fn start_with_kubeconfig(namespace: &str, audit_file: &PathBuf, log_file: &PathBuf, kubeconfig: &Path, extra: &[&str]) -> Self {
        Self::spawn(namespace, audit_file, log_file, &format!("op-{namespace}"), extra, Some(kubeconfig))
    }

    fn spawn(namespace: &str, audit_file: &PathBuf, log_file: &PathBuf, instance: &str, extra: &[&str], kubeconfig: Option<&Path>) -> Self {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log_file).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_mfa-recall"));
        command
            .args(["operator", "--namespace", namespace, "--no-audit-stdout", "--instance", instance])
            .args(extra)
            .arg("--audit-file")
            .arg(audit_file)
            .env("MFA_RECALL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        if !extra.contains(&"--ledger-key-file") {
            command.arg("--ledger-key-file").arg(ledger_key_file(audit_file.parent().unwrap()));
        }
        let child = command.spawn().expect("start the operator");
        Self { child: Some(child), namespace: namespace.into(), audit_file: audit_file.clone(), log_file: log_file.clone() }
    }

    /// SIGKILL: no chance to checkpoint, exactly like a node dying.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, as the kubelet sends it; then waits up to `grace` for the exit.
    pub fn terminate(&mut self, grace: std::time::Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The audit trail's lines as JSON.
pub fn audit_lines(path: &PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Keycloak credential types mapped to the recall's factor kinds, as status reports them.
pub fn as_factor_kinds(by_type: &BTreeMap<String, i64>) -> BTreeMap<mfa_recall::api::FactorKind, i64> {
    use mfa_recall::api::FactorKind;
    let mut out = BTreeMap::new();
    for (t, n) in by_type {
        let kind = match t.as_str() {
            "otp" => FactorKind::Totp,
            "webauthn" => FactorKind::Webauthn,
            "webauthn-passwordless" => FactorKind::Passkey,
            "recovery-authn-codes" => FactorKind::RecoveryCodes,
            other => panic!("unexpected credential type {other}"),
        };
        *out.entry(kind).or_insert(0) += n;
    }
    out
}

/// A loopback address with a port free right now.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// GET on the operator's own endpoints: (status, body).
pub async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// A name no earlier run used, so reruns against the same parts never collide.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:05x}", fastrand::u32(..0xfffff))
}

/// Everything a test starts from: the parts, a client with the CRDs installed, and a fresh
/// namespace and Keycloak realm name of its own.
pub async fn scenario(name: &str) -> (Parts, Client, String, String) {
    let parts = Parts::from_env();
    let client = parts.client().await;
    let namespace = unique(&format!("recall-{name}"));
    testkit::cluster::create_namespace(&client, &namespace).await.unwrap();
    (parts, client, namespace, unique(name))
}

/// The Argo CD health check shipped with the chart (charts/mfa-recall-operator/argocd) for the
/// object's kind, run by Debian's Lua interpreter on `object` as Argo CD hands it over: (status, message).
pub fn argocd_health(object: &serde_json::Value) -> (String, String) {
    fn lua(value: &serde_json::Value) -> String {
        use serde_json::Value;
        match value {
            Value::Null => "nil".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").replace('\r', "\\r")),
            Value::Array(items) => format!("{{{}}}", items.iter().map(lua).collect::<Vec<_>>().join(", ")),
            Value::Object(fields) => format!("{{{}}}", fields.iter().map(|(k, v)| format!("[{}] = {}", lua(&Value::String(k.clone())), lua(v))).collect::<Vec<_>>().join(", ")),
        }
    }
    let kind = object["kind"].as_str().expect("the object's kind").to_lowercase();
    let script = std::fs::read_to_string(format!("{}/charts/mfa-recall-operator/argocd/{kind}-health.lua", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let program = format!("obj = {}\nlocal hs = (function()\n{script}\nend)()\nio.write(hs.status, \"\\t\", hs.message or \"\")\n", lua(object));
    let path = std::env::temp_dir().join(format!("mfa-recall-health-{:016x}.lua", fastrand::u64(..)));
    std::fs::write(&path, program).unwrap();
    let out = std::process::Command::new("lua5.4").arg(&path).output().unwrap_or_else(|e| panic!("lua5.4: {e}: the Argo CD health test needs Debian's Lua interpreter; run hack/lua.sh"));
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "the health script failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\t').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

/// Prometheus Alertmanager built by hack/parts.sh, as a child process on loopback.
pub struct Alertmanager {
    child: Child,
    /// Where its API listens, such as http://127.0.0.1:9093.
    pub url: String,
    pub log_file: PathBuf,
}

impl Alertmanager {
    /// Starts Alertmanager with `config` (YAML), alone (no cluster peers), and waits until it is ready.
    pub async fn start(dir: &Path, config: &str) -> Self {
        let binary = std::env::var("MFA_RECALL_ALERTMANAGER").unwrap_or_else(|_| {
            panic!("MFA_RECALL_ALERTMANAGER is not set: the signal tests fire real alerts through Prometheus Alertmanager. Build it with `hack/parts.sh alertmanager` and source the env of `hack/localparts.sh start DIR` (or run `hack/test.sh`).")
        });
        let dir = dir.join(unique("alertmanager"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
        let addr = free_addr();
        let log_file = dir.join("alertmanager.log");
        let log = std::fs::File::create(&log_file).unwrap();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let am = Self { child, url: format!("http://{addr}"), log_file };
        let ready = format!("{}/-/ready", am.url);
        eventually(&format!("Alertmanager ready (its log: {})", am.log_file.display()), || async { get(&ready).await.0 == 200 }).await;
        am
    }

    /// Posts alerts to its v2 API, as Prometheus does.
    pub async fn fire(&self, alerts: serde_json::Value) {
        let response = reqwest::Client::new().post(format!("{}/api/v2/alerts", self.url)).json(&alerts).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "Alertmanager refused the alerts: {}", response.text().await.unwrap_or_default());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client acting as `user` (impersonated by the test's admin), so RBAC and admission policies
/// see that user's name.
pub async fn acting_as(user: &str) -> Client {
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).unwrap()
}

/// A ValidatingAdmissionPolicy and its binding from one of the committed YAML files, installed
/// for a test; `remove` takes them away (they hold for every namespace).
pub struct AdmissionPolicy {
    admin: Client,
    policy: String,
    binding: String,
}

impl AdmissionPolicy {
    pub async fn install(admin: &Client, yaml: &str) -> Self {
        use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
        use serde::Deserialize;
        let apply = PatchParams::apply("mfa-recall-tests").force();
        let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(yaml).map(|d| serde_json::to_value(serde_norway::Value::deserialize(d).unwrap()).unwrap()).collect();
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(docs[0].clone()).unwrap();
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(docs[1].clone()).unwrap();
        let (policy_name, binding_name) = (policy.metadata.name.clone().unwrap(), binding.metadata.name.clone().unwrap());
        Api::<ValidatingAdmissionPolicy>::all(admin.clone()).patch(&policy_name, &apply, &Patch::Apply(&policy)).await.unwrap();
        Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone()).patch(&binding_name, &apply, &Patch::Apply(&binding)).await.unwrap();
        Self { admin: admin.clone(), policy: policy_name, binding: binding_name }
    }

    pub async fn remove(self) {
        use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
        let delete = kube::api::DeleteParams::default();
        Api::<ValidatingAdmissionPolicyBinding>::all(self.admin.clone()).delete(&self.binding, &delete).await.unwrap();
        Api::<ValidatingAdmissionPolicy>::all(self.admin.clone()).delete(&self.policy, &delete).await.unwrap();
    }
}

/// Asks `observe` until it says true; a guard against waiting for ever, not a measure of speed.
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut observe: impl FnMut() -> F) {
    let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !observe().await {
        assert!(tokio::time::Instant::now() < give_up, "{what}: not seen within a minute");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The apiserver takes up a new admission policy within a second or so, and says so nowhere but
/// in its answers: `attempt` (given a fresh number each time, for a fresh object name) is made
/// until the apiserver refuses it; the refusal.
pub async fn refused_once_active<T, F: std::future::Future<Output = Result<T, kube::Error>>>(what: &str, mut attempt: impl FnMut(u32) -> F) -> String {
    let refusal = std::sync::Mutex::new(None);
    let tries = std::sync::atomic::AtomicU32::new(0);
    eventually(what, || {
        let made = attempt(tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let refusal = &refusal;
        async move {
            match made.await {
                Ok(_) => false,
                Err(e) => {
                    *refusal.lock().unwrap() = Some(e.to_string());
                    true
                }
            }
        }
    })
    .await;
    refusal.into_inner().unwrap().unwrap_or_default()
}

/// A Role in `namespace` with `rules`, bound to `users` (a user name, or `group:NAME` for a group).
pub async fn grant(admin: &Client, namespace: &str, name: &str, rules: serde_json::Value, users: &[&str]) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let apply = PatchParams::apply("mfa-recall-tests").force();
    let role = serde_json::json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": name }, "rules": rules });
    Api::<Role>::namespaced(admin.clone(), namespace).patch(name, &apply, &Patch::Apply(role)).await.unwrap();
    let subjects: Vec<serde_json::Value> = users
        .iter()
        .map(|u| match u.strip_prefix("group:") {
            Some(group) => serde_json::json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group }),
            None => serde_json::json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u }),
        })
        .collect();
    let binding = serde_json::json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": name },
                                      "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name }, "subjects": subjects });
    Api::<RoleBinding>::namespaced(admin.clone(), namespace).patch(name, &apply, &Patch::Apply(binding)).await.unwrap();
}

/// A token of ServiceAccount `name` in `namespace` (created when missing), from TokenRequest.
pub async fn service_account_token(admin: &Client, namespace: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    if accounts.get_opt(name).await.unwrap().is_none() {
        accounts.create(&Default::default(), &serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).unwrap()).await.unwrap();
    }
    let request = TokenRequest { spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }), ..Default::default() };
    let answer = accounts.create_token_request(name, &Default::default(), &request).await.expect("TokenRequest");
    answer.status.and_then(|s| s.token).expect("a token")
}

/// A kubeconfig at `path` that authenticates as ServiceAccount `name` of `namespace` with a fresh
/// token, trusting the same server and CA as the admin kubeconfig. Written 0600; the token is
/// never printed.
pub async fn service_account_kubeconfig(admin: &Client, namespace: &str, name: &str, path: &Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = service_account_token(admin, namespace, name).await;
    let own = kube::config::Kubeconfig::read().expect("the admin kubeconfig");
    let context = own.current_context.as_deref().expect("a current context");
    let cluster_name = own.contexts.iter().find(|c| c.name == context).and_then(|c| c.context.as_ref()).map(|c| c.cluster.clone()).unwrap();
    let cluster = own.clusters.iter().find(|c| c.name == cluster_name).and_then(|c| c.cluster.clone()).unwrap();
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "test", "user": name, "namespace": namespace}}],
        "current-context": name,
    });
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(path).unwrap();
    file.write_all(serde_norway::to_string(&config).unwrap().as_bytes()).unwrap();
}

/// A binary of another workspace package, next to this test's (`cargo build --workspace` builds it).
pub fn workspace_binary(name: &str) -> PathBuf {
    let dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let binary = dir.join(name);
    assert!(binary.exists(), "{} is missing: build it with `cargo build --workspace` (hack/test.sh builds the whole workspace)", binary.display());
    binary
}
