//! The crate graph keeps its shape: arrows point down only
//! (gateway -> engine -> storage; protocol at the bottom).

use std::collections::BTreeSet;
use std::process::Command;

/// Normal (non-dev) dependencies of `package`, transitively, by name.
fn dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != package)
        .map(str::to_owned)
        .collect()
}

fn assert_absent(package: &str, forbidden: &[&str]) {
    let deps = dependencies(package);
    for name in forbidden {
        assert!(!deps.contains(*name), "{package} must not depend on {name}");
    }
}

#[test]
fn protocol_depends_on_no_runtime_storage_or_http() {
    assert_absent("protocol", &["actix", "actix-web", "tokio", "storage", "engine", "gateway", "rusqlite"]);
}

#[test]
fn storage_knows_no_actors_http_or_engine() {
    assert_absent("storage", &["actix", "actix-web", "engine", "gateway", "protocol"]);
}

#[test]
fn engine_knows_no_http_or_websocket_framing() {
    assert_absent("engine", &["actix-web", "actix-http", "actix-ws", "awc", "gateway"]);
    let deps = dependencies("engine");
    assert!(deps.contains("storage") && deps.contains("protocol"), "engine sits on storage and protocol");
}

#[test]
fn only_the_gateway_serves_http() {
    let deps = dependencies("gateway");
    for name in ["engine", "storage", "protocol", "actix-web", "actix-ws"] {
        assert!(deps.contains(name), "gateway should depend on {name}");
    }
}

#[test]
fn load_tests_speak_only_the_protocol() {
    assert_absent("load-tests", &["storage", "engine", "gateway", "actix-web", "rusqlite"]);
    assert!(dependencies("load-tests").contains("protocol"), "load-tests uses the protocol's wire types");
}
