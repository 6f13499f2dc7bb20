//! The reference in-house backend (crates/pg-backend) over a database of its own on Debian's real
//! PostgreSQL (hack/postgres.sh), as the integration tests run it; `psql` reads and writes the
//! store behind the backend's back, as the in-house login service does.

use std::path::PathBuf;
use std::process::{Child, Command};

/// A running reference backend and its database, both gone when dropped.
pub struct Store {
    /// The backend's base URL (loopback).
    pub url: String,
    /// The database's connection URL.
    pub database_url: String,
    /// The file holding the bearer token the backend expects.
    pub token_file: PathBuf,
    pub token: String,
    server_url: String,
    database: String,
    dir: PathBuf,
    backend: Child,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.backend.kill();
        let _ = self.backend.wait();
        let _ = Command::new("psql").args(["-X", "-q", &self.server_url, "-c", &format!("drop database if exists {} with (force)", self.database)]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `psql` against `url`, failing the test on an error: what it printed, trimmed.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql").args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", url, "-c", sql]).output().expect("psql runs (Debian's postgresql-client)");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Store {
    /// A fresh database with the schema applied and the backend serving it on loopback, `token`
    /// its bearer token (a test credential: it carries the canary marker).
    pub async fn start(token: &str) -> Store {
        let server_url = std::env::var("MFA_RECALL_POSTGRES_URL").unwrap_or_else(|_| {
            panic!("MFA_RECALL_POSTGRES_URL is not set: this test needs Debian's PostgreSQL. Run the suite with `hack/test.sh`, or `hack/postgres.sh start /tmp/pg && source /tmp/pg/env`")
        });
        let database = format!("store_{:08x}", fastrand::u32(..));
        psql(&server_url, &format!("create database {database}"));
        let database_url = format!("{}/{database}", server_url.rsplit_once('/').unwrap().0);
        let dir = std::env::temp_dir().join(format!("mfa-recall-{database}"));
        std::fs::create_dir_all(&dir).unwrap();
        // `.key`: the canary sweep passes over key files (the token is still a canary wherever else it lands).
        let token_file = dir.join("token.key");
        std::fs::write(&token_file, token).unwrap();
        let addr = super::free_addr();
        let log = dir.join("backend.log");
        let backend = Command::new(super::workspace_binary("mfa-recall-pg-backend"))
            .args(["--database-url", &database_url, "--listen", &addr, "--apply-schema"])
            .arg("--token-file")
            .arg(&token_file)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("the reference backend starts");
        let store = Store { url: format!("http://{addr}"), database_url, token_file, token: token.to_string(), server_url, database, dir, backend };
        super::eventually("the reference backend answers", || async { super::get(&format!("{}/", store.url)).await.0 == 401 }).await;
        store
    }

    /// `psql` against the store's database.
    pub fn psql(&self, sql: &str) -> String {
        psql(&self.database_url, sql)
    }

    /// What the backend logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("backend.log")).unwrap_or_default()
    }
}
