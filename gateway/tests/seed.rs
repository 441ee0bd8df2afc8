//! `parley seed`: accounts created straight in a stopped node's store log in,
//! connect and refresh like registered ones; a taken name or a running node
//! makes it refuse and change nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{WsClient, spawn_node};
use protocol::rest::{LoginRequest, RefreshRequest, SeededAccounts, TokenResponse};

const PASSWORD: &str = "seeded-password";

/// Runs `parley seed` on `dir`, writing the logins to `out`.
fn seed(dir: &Path, prefix: &str, count: usize, out: &Path) -> Output {
    let password_file = out.with_extension("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["seed", "--prefix", prefix, "--count", &count.to_string(), "--data-dir"])
        .arg(dir)
        .arg("--out")
        .arg(out)
        .arg("--password-file")
        .arg(&password_file)
        .env("PARLEY_AUTH__ARGON2_MEMORY_KIB", "1024")
        .env("PARLEY_AUTH__ARGON2_ITERATIONS", "1")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[actix_web::test]
async fn seeded_accounts_connect_log_in_and_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("accounts.json");
    let seeded = seed(&dir.path().join("node"), "lt", 3, &out);
    assert!(seeded.status.success(), "seed failed: {}", stderr(&seeded));
    let accounts: SeededAccounts = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let names: Vec<&str> = accounts.users.iter().map(|a| a.username.as_str()).collect();
    assert_eq!(names, ["lt_0", "lt_1", "lt_2"]);

    let (_node, api) = spawn_node(&dir.path().join("node")).await;
    // The written access token opens a chat socket on the node.
    let first = &accounts.users[0].tokens;
    let ws = WsClient::connect(&api.ws_url(""), Some(&first.access_token)).await.unwrap();
    assert_eq!(ws.hello_seq(), 0);
    // The password works for a login, and the refresh token rotates.
    let login = LoginRequest { username: "lt_2".into(), password: PASSWORD.into() };
    let (status, body) = api.post("/api/v1/auth/login", None, &login).await;
    assert_eq!(status, 200, "login: {body}");
    assert_eq!(serde_json::from_value::<TokenResponse>(body).unwrap().user_id, accounts.users[2].tokens.user_id);
    let refresh = RefreshRequest { refresh_token: accounts.users[1].tokens.refresh_token.clone() };
    let (status, body) = api.post("/api/v1/auth/refresh", None, &refresh).await;
    assert_eq!(status, 200, "refresh: {body}");
}

#[actix_web::test]
async fn seed_refuses_a_running_node_and_taken_names_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node");
    assert!(seed(&node_dir, "lt", 2, &dir.path().join("first.json")).status.success());

    let (mut node, _api) = spawn_node(&node_dir).await;
    let busy = seed(&node_dir, "other", 2, &dir.path().join("busy.json"));
    assert!(!busy.status.success());
    assert!(stderr(&busy).contains("another parley process is using the data directory"), "{}", stderr(&busy));
    node.kill_9();

    // lt_0 and lt_1 exist: seeding lt_0..lt_3 refuses before creating lt_2.
    let taken = seed(&node_dir, "lt", 4, &dir.path().join("taken.json"));
    assert!(!taken.status.success());
    assert!(stderr(&taken).contains("username lt_0 exists already"), "{}", stderr(&taken));
    assert!(!dir.path().join("taken.json").exists());
    let (_node, api_after) = spawn_node(&node_dir).await;
    let login = LoginRequest { username: "lt_2".into(), password: PASSWORD.into() };
    let (status, body) = api_after.post("/api/v1/auth/login", None, &login).await;
    assert_eq!(status, 401, "lt_2 must not exist: {body}");
}
