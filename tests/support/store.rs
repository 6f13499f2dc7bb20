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

/// A certificate authority, the store's server certificate (for 127.0.0.1) and a client
/// certificate it signed, made with Debian's openssl; and a second authority's client
/// certificate, which the store must refuse. Each `.crt` with its `.key`.
pub struct Certificates {
    pub dir: PathBuf,
}

impl Certificates {
    pub fn make() -> Certificates {
        let dir = std::env::temp_dir().join(format!("mfa-recall-certs-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl runs (Debian's openssl)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        for ca in ["ca", "other-ca"] {
            openssl(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.crt"), "-days", "2",
                      "-subj", &format!("/CN=mfa-recall test {ca}"), "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
        }
        for (name, ca, extensions) in [("server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"), ("client", "ca", "extendedKeyUsage=clientAuth"), ("rogue", "other-ca", "extendedKeyUsage=clientAuth")] {
            std::fs::write(dir.join(format!("{name}.ext")), format!("basicConstraints=CA:FALSE\n{extensions}\n")).unwrap();
            openssl(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", &format!("/CN=mfa-recall test {name}")]);
            openssl(&["x509", "-req", "-in", &format!("{name}.csr"), "-CA", &format!("{ca}.crt"), "-CAkey", &format!("{ca}.key"), "-CAcreateserial", "-out", &format!("{name}.crt"), "-days", "2", "-extfile", &format!("{name}.ext")]);
        }
        Certificates { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Store {
    /// A fresh database with the schema applied and the backend serving it on loopback, `token`
    /// its bearer token (a test credential: it carries the canary marker).
    pub async fn start(token: &str) -> Store {
        Self::start_with(Some(token), None).await
    }

    /// As `start`, serving https with `certificates`' server certificate and requiring a client
    /// certificate their authority signed; with `token`, a bearer token as well.
    pub async fn start_with(token: Option<&str>, certificates: Option<&Certificates>) -> Store {
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
        std::fs::write(&token_file, token.unwrap_or_default()).unwrap();
        let addr = super::free_addr();
        let log = dir.join("backend.log");
        let mut command = Command::new(super::workspace_binary("mfa-recall-pg-backend"));
        command.args(["--database-url", &database_url, "--listen", &addr, "--apply-schema"]);
        // The authority of the test server's TLS certificate (hack/postgres.sh): the backend reaches it over TLS.
        if let Ok(ca) = std::env::var("MFA_RECALL_POSTGRES_CA") {
            command.arg("--database-ca").arg(ca);
        }
        if token.is_some() {
            command.arg("--token-file").arg(&token_file);
        }
        if let Some(certificates) = certificates {
            command.arg("--tls-cert").arg(certificates.path("server.crt")).arg("--tls-key").arg(certificates.path("server.key")).arg("--client-ca").arg(certificates.path("ca.crt"));
        }
        let backend = command.stdout(std::fs::File::create(&log).unwrap()).stderr(std::fs::File::options().append(true).open(&log).unwrap()).spawn().expect("the reference backend starts");
        let scheme = if certificates.is_some() { "https" } else { "http" };
        let store = Store { url: format!("{scheme}://{addr}"), database_url, token_file, token: token.unwrap_or_default().to_string(), server_url, database, dir, backend };
        super::eventually("the reference backend listens", || std::future::ready(std::net::TcpStream::connect(&addr).is_ok())).await;
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
