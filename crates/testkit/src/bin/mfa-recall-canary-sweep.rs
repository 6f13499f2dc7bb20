//! Run after the whole suite: every credential the tests hand the operator carries the marker
//! `testkit::CANARY`, so a credential that leaked into anything the operator wrote shows here.
//! Searches the tests' files (operator logs, audit trails) and every object the operator writes
//! or touches on the apiserver (events, recalls and backends with their status, ledger segments
//! decompressed, ConfigMaps, Leases); Secrets and the tests' `.key` files, where the credentials
//! and keys belong, are left out. Names where each hit is, never the credential. Exits 1 on any hit.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Parser;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use testkit::CANARY;

#[derive(Parser)]
struct Args {
    /// The tests' folder of files (`$MFA_RECALL_PARTS_DIR/tests`).
    #[arg(long)]
    files: PathBuf,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut hits = Vec::new();
    let mut searched = (0usize, 0usize);
    for path in files_under(&args.files) {
        let bytes = std::fs::read(&path).unwrap_or_default();
        searched.0 += 1;
        if contains(&bytes) {
            hits.push(format!("file {}", path.display()));
        }
    }
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("canary sweep: no Kubernetes connection ({e}): source the parts' env file (hack/localparts.sh) first");
            return std::process::ExitCode::from(2);
        }
    };
    let kinds = [
        ApiResource::erase::<k8s_openapi::api::core::v1::Event>(&()),
        ApiResource::erase::<k8s_openapi::api::events::v1::Event>(&()),
        ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
        ApiResource::erase::<k8s_openapi::api::coordination::v1::Lease>(&()),
        ApiResource::erase::<mfa_recall::api::MfaRecall>(&()),
        ApiResource::erase::<mfa_recall::api::IdentityBackend>(&()),
        ApiResource::erase::<mfa_recall::api::RecallLedgerSegment>(&()),
    ];
    for kind in &kinds {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), kind);
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api.list(&params).await.unwrap_or_else(|e| panic!("listing {}: {e}", kind.plural));
            for object in &page.items {
                searched.1 += 1;
                let mut bytes = serde_json::to_vec(object).expect("objects serialize");
                // Ledger segments are gzip, in base64.
                if let Some(data) = object.data.pointer("/spec/data").and_then(|d| d.as_str()) {
                    bytes.extend(gunzip_base64(data));
                }
                if contains(&bytes) {
                    let meta = &object.metadata;
                    hits.push(format!("{} {}/{}", kind.kind, meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or("")));
                }
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
    }
    println!("canary sweep: {} files and {} objects searched, {} holding a test credential", searched.0, searched.1, hits.len());
    for hit in &hits {
        println!("  a test credential is in {hit}");
    }
    if hits.is_empty() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) }
}

fn contains(bytes: &[u8]) -> bool {
    bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes())
}

fn gunzip_base64(text: &str) -> Vec<u8> {
    use base64::Engine;
    let Ok(gz) = base64::engine::general_purpose::STANDARD.decode(text) else { return Vec::new() };
    let mut out = Vec::new();
    let _ = flate2::read::GzDecoder::new(&gz[..]).take(256 << 20).read_to_end(&mut out);
    out
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path)
            } else if path.extension().is_none_or(|e| e != "key") {
                found.push(path)
            }
        }
    }
    found
}
