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
