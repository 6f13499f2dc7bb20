//! The workspace's promise: the operator ships without its test rig, and the simulators cannot
//! mirror the adapters' mistakes because they cannot reach the adapters' code.

use std::process::Command;

/// The packages `package` is built from (normal and build dependencies, not dev ones).
fn built_from(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--offline", "-p", package, "-e", "normal,build", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("cargo tree prints UTF-8");
    let mut names: Vec<String> = text.lines().filter_map(|line| line.split_whitespace().next()).map(String::from).collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_operator_is_built_without_the_simulators_or_the_testkit() {
    let packages = built_from("mfa-recall");
    assert!(packages.iter().any(|p| p == "kube"), "cargo tree lists the operator's dependencies: {packages:?}");
    for rig in ["idp-sim", "testkit"] {
        assert!(!packages.iter().any(|p| p == rig), "the operator depends on {rig}");
    }
    // Features it does not use are not built in: a cookie store (only the test rig's browser
    // flows keep cookies) would keep what providers set across calls.
    assert!(!packages.iter().any(|p| p == "cookie_store"), "the operator is built with reqwest's cookie store");
}

#[test]
fn the_simulators_do_not_depend_on_the_operator() {
    let packages = built_from("idp-sim");
    assert!(packages.iter().any(|p| p == "hyper"), "cargo tree lists the simulators' dependencies: {packages:?}");
    assert!(!packages.iter().any(|p| p == "mfa-recall"), "the simulators depend on the operator, so they could reuse its adapters' code");
}

#[test]
fn src_holds_only_the_product() {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    for rig in ["simulator", "testbed", "bin"] {
        assert!(!std::path::Path::new(src).join(rig).exists(), "src/{rig} belongs in crates/");
    }
}

/// The image is built from base images pinned by digest: a tag alone can move to other bytes.
#[test]
fn every_base_image_is_pinned_by_digest() {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let froms: Vec<&str> = dockerfile.lines().filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM ")).collect();
    assert!(!froms.is_empty(), "the Dockerfile has FROM lines");
    for from in froms {
        let image = from.split_whitespace().nth(1).unwrap_or_default();
        let digest = image.split_once("@sha256:").map(|(_, d)| d).unwrap_or_default();
        assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "not pinned by digest: {from}");
    }
}
