//! Builds the Scylla instantiation of the conformance suite only when
//! `PARLEY_TEST_SCYLLA` names a node to test against, so that without one no
//! test passes without running.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(parley_test_scylla)");
    println!("cargo::rerun-if-env-changed=PARLEY_TEST_SCYLLA");
    if std::env::var_os("PARLEY_TEST_SCYLLA").is_some_and(|node| !node.is_empty()) {
        println!("cargo::rustc-cfg=parley_test_scylla");
    }
}
