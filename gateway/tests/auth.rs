//! Accounts and credentials through a real server: registration, login,
//! access tokens and their key set, refresh rotation with reuse detection,
//! logout, WebSocket authentication and auth rate limits.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{HandshakeRefused, RawResponse, TestServer, WsClient};
use protocol::rest::{LoginRequest, RefreshRequest, RegisterRequest, TokenResponse, UserView, WsTicketResponse};
use protocol::ws::{ServerFrame, close};

fn register_body(username: &str, password: &str, display_name: &str) -> RegisterRequest {
    RegisterRequest { username: username.into(), password: password.into(), display_name: display_name.into() }
}

async fn login_raw(server: &TestServer, username: &str, password: &str) -> (u16, serde_json::Value) {
    server
        .post("/api/v1/auth/login", None, &LoginRequest { username: username.into(), password: password.into() })
        .await
}

async fn refresh(server: &TestServer, refresh_token: &str) -> (u16, serde_json::Value) {
    server.post("/api/v1/auth/refresh", None, &RefreshRequest { refresh_token: refresh_token.into() }).await
}

async fn logout(server: &TestServer, refresh_token: &str) -> (u16, serde_json::Value) {
    server.post("/api/v1/auth/logout", None, &RefreshRequest { refresh_token: refresh_token.into() }).await
}

/// `GET /api/v1/me` with a raw `Authorization` header value.
async fn me_with_header(server: &TestServer, authorization: Option<&str>) -> RawResponse {
    let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("authorization", *a)).collect();
    server.request(awc::http::Method::GET, "/api/v1/me", &headers, actix_web::web::Bytes::new()).await
}

/// Asserts the documented refusal of a bearer credential.
fn assert_unauthorized(resp: &RawResponse, what: &str) {
    assert_eq!(resp.status, 401, "{what}: {:?}", resp.json());
    resp.assert_problem(401, "unauthorized");
    let challenge = resp.header("www-authenticate").unwrap_or_else(|| panic!("{what}: no WWW-Authenticate header"));
    assert!(challenge.starts_with("Bearer"), "{what}: WWW-Authenticate is {challenge:?}");
}

/// The claims of a JWT, read without verifying it.
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

// ---------------------------------------------------------------- register

#[actix_web::test]
async fn registering_returns_the_new_user_view() {
    let server = TestServer::start().await;
    let (status, body) =
        server.post("/api/v1/auth/register", None, &register_body("alice", "correct horse battery", "Alice")).await;
    assert_eq!(status, 201, "{body}");
    let view: UserView = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(view.username, "alice");
    assert_eq!(view.display_name, "Alice");
    assert!(body["id"].is_string(), "IDs travel as strings: {body}");
    let age_ms = engine::now_ms() - view.created_at;
    assert!((0..60_000).contains(&age_ms), "created_at is now, in ms: {}", view.created_at);

    let tokens = server.login("alice", "correct horse battery").await;
    assert_eq!(tokens.user_id, view.id);
    let me: UserView = server.get_ok("/api/v1/me", &tokens.access_token).await;
    assert_eq!(me, view);
}

#[actix_web::test]
async fn a_username_differing_only_in_case_is_taken() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for taken in ["alice", "Alice", "ALICE"] {
        let (status, body) =
            server.post("/api/v1/auth/register", None, &register_body(taken, "another password", "Impostor")).await;
        assert_eq!(status, 409, "{taken}: {body}");
        assert_eq!(body["code"], "username_taken", "{taken}");
    }
    // The original account is untouched: same password, same display name.
    let tokens = server.login("alice", &alice.password).await;
    let me: UserView = server.get_ok("/api/v1/me", &tokens.access_token).await;
    assert_eq!(me.display_name, "alice");
    let (status, _) = login_raw(&server, "alice", "another password").await;
    assert_eq!(status, 401, "the impostor's password does not work");
}

#[actix_web::test]
async fn invalid_registrations_are_refused_and_create_nothing() {
    let server = TestServer::start().await;
    let cases = [
        ("al", "long enough password", "Al", "username too short"),
        (&*"x".repeat(33), "long enough password", "X", "username too long"),
        ("bob!", "long enough password", "Bob", "username with a bad character"),
        ("bo b", "long enough password", "Bob", "username with a space"),
        ("ålice", "long enough password", "Alice", "username with a non-ASCII letter"),
        ("carol", "123456789", "Carol", "password of 9 characters"),
        ("dave", "long enough password", "", "empty display name"),
        ("erin", "long enough password", "   ", "blank display name"),
    ];
    for (username, password, display_name, what) in cases {
        let (status, body) =
            server.post("/api/v1/auth/register", None, &register_body(username, password, display_name)).await;
        assert_eq!(status, 422, "{what}: {body}");
        assert_eq!(body["code"], "invalid_field", "{what}: {body}");
        let (status, body) = login_raw(&server, username, password).await;
        assert_eq!(status, 401, "{what}: no account was created: {body}");
    }
    // A refused registration does not reserve the name.
    let (status, body) =
        server.post("/api/v1/auth/register", None, &register_body("carol", "1234567890", "Carol")).await;
    assert_eq!(status, 201, "a 10-character password is enough: {body}");
}

// ------------------------------------------------------------------- login

#[actix_web::test]
async fn login_returns_a_bearer_token_pair() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = login_raw(&server, "alice", &alice.password).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["user_id"], alice.id.to_string());
    let tokens: TokenResponse = serde_json::from_value(body).unwrap();
    assert!(!tokens.refresh_token.is_empty());
    assert_ne!(tokens.refresh_token, alice.tokens.refresh_token, "every login starts a new session");
    // The username is matched case-insensitively.
    let (status, body) = login_raw(&server, "ALICE", &alice.password).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], alice.id.to_string());
}

#[actix_web::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (wrong_status, wrong) = login_raw(&server, "alice", "not the password").await;
    let (unknown_status, unknown) = login_raw(&server, "nobody", &alice.password).await;
    assert_eq!(wrong_status, 401, "{wrong}");
    assert_eq!(wrong["code"], "invalid_credentials");
    assert_eq!(unknown_status, 401, "{unknown}");
    assert_eq!(unknown, wrong, "the body does not tell whether the user exists");
}

#[actix_web::test]
async fn an_unknown_user_is_not_answered_visibly_faster_than_a_wrong_password() {
    // Production Argon2 parameters, so a skipped hash would show.
    let server = TestServer::start_with(|c| {
        c.auth.argon2_memory_kib = 19_456;
        c.auth.argon2_iterations = 2;
    })
    .await;
    server.register("alice").await;

    async fn timed(server: &TestServer, username: &str) -> Duration {
        let started = Instant::now();
        let (status, body) = login_raw(server, username, "not the password").await;
        let took = started.elapsed();
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["code"], "invalid_credentials");
        took
    }
    // Warm up both paths, then interleave them so that machine noise hits both alike.
    timed(&server, "alice").await;
    timed(&server, "nobody").await;
    let mut wrong_password = Vec::new();
    let mut unknown_user = Vec::new();
    for i in 0..5 {
        wrong_password.push(timed(&server, "alice").await);
        unknown_user.push(timed(&server, &format!("nobody{i}")).await);
    }
    let (wrong, unknown) = (median(wrong_password), median(unknown_user));
    assert!(
        unknown.as_secs_f64() >= 0.5 * wrong.as_secs_f64(),
        "unknown user answered in {unknown:?}, wrong password in {wrong:?}: the timing tells whether a user exists"
    );
}

// ----------------------------------------------------------- access tokens

#[actix_web::test]
async fn only_genuine_access_tokens_are_accepted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let token = &alice.tokens.access_token;
    let me: UserView = server.get_ok("/api/v1/me", token).await;
    assert_eq!(me.id, alice.id);
    // The auth scheme is case-insensitive (RFC 9110 §11.1).
    let resp = me_with_header(&server, Some(&format!("bearer {token}"))).await;
    assert_eq!(resp.status, 200, "lowercase scheme: {:?}", resp.json());

    assert_unauthorized(&me_with_header(&server, None).await, "no Authorization header");
    assert_unauthorized(&me_with_header(&server, Some("Bearer not-a-jwt")).await, "garbage token");
    assert_unauthorized(&me_with_header(&server, Some(&format!("Basic {token}"))).await, "not a bearer scheme");

    // A flipped character in the middle of the signature.
    let (head, signature) = token.rsplit_once('.').unwrap();
    let mut sig = signature.as_bytes().to_vec();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{head}.{}", String::from_utf8(sig).unwrap());
    assert_unauthorized(&me_with_header(&server, Some(&format!("Bearer {tampered}"))).await, "tampered signature");

    // Alice's signature over claims rewritten to say she is Bob.
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = claims_of(token);
    claims["sub"] = bob.id.to_string().into();
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let impersonation = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_unauthorized(&me_with_header(&server, Some(&format!("Bearer {impersonation}"))).await, "rewritten claims");

    // A well-formed token for Alice signed by another node's key.
    let other_node = tempfile::tempdir().unwrap();
    let other_keys = gateway::auth::TokenKeys::load_or_create(other_node.path()).unwrap();
    let foreign = other_keys.issue(alice.id.0, 1, Duration::from_secs(900)).unwrap();
    assert_unauthorized(&me_with_header(&server, Some(&format!("Bearer {foreign}"))).await, "another node's token");

    // The genuine token still works.
    let me: UserView = server.get_ok("/api/v1/me", token).await;
    assert_eq!(me.id, alice.id);
}

#[actix_web::test]
async fn access_tokens_verify_with_the_published_key_set() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let resp = server.get_full("/api/v1/auth/jwks", None).await;
    assert_eq!(resp.status, 200);
    let jwks = resp.json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    let kid = key["kid"].as_str().unwrap();
    let x = key["x"].as_str().unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(x).unwrap().len(), 32, "x is a raw Ed25519 public key");

    let token = &alice.tokens.access_token;
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(kid), "the token names the key that signed it");

    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["parley"]);
    validation.set_issuer(&["parley"]);
    let decoding = jsonwebtoken::DecodingKey::from_ed_components(x).unwrap();
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation).unwrap();
    assert_eq!(data.claims["sub"], alice.id.to_string());

    // The key set does not verify a token signed by someone else.
    let other_node = tempfile::tempdir().unwrap();
    let foreign = gateway::auth::TokenKeys::load_or_create(other_node.path())
        .unwrap()
        .issue(alice.id.0, 1, Duration::from_secs(900))
        .unwrap();
    assert!(jsonwebtoken::decode::<serde_json::Value>(&foreign, &decoding, &validation).is_err());
}

#[actix_web::test]
async fn an_expired_access_token_closes_the_socket_with_4001_and_is_then_refused() {
    let server = TestServer::start_with(|c| c.auth.access_token_ttl_secs = 1).await;
    let alice = server.register("alice").await;
    // Log in just after a second boundary, so the token has a full second to live.
    let into_second = unix_now().subsec_millis() as u64;
    actix_web::rt::time::sleep(Duration::from_millis(1000 - into_second + 20)).await;
    let tokens = server.login("alice", &alice.password).await;
    assert_eq!(tokens.expires_in, 1);
    let exp = claims_of(&tokens.access_token)["exp"].as_u64().unwrap();

    let connected = Instant::now();
    let mut ws = WsClient::connect(&server.ws_url(""), Some(&tokens.access_token)).await.unwrap();
    let (status, _) = server.get("/api/v1/me", Some(&tokens.access_token)).await;
    assert_eq!(status, 200, "the token works while it is fresh");
    let code = ws.closed().await;
    assert_eq!(code, Some(close::TOKEN_EXPIRED), "the server closes the socket when the token expires");
    assert!(connected.elapsed() < Duration::from_secs(4), "closed only after {:?}", connected.elapsed());

    // Past the expiry and the 5 s leeway, the token is refused.
    let refused_from = Duration::from_secs(exp + 6) + Duration::from_millis(50);
    if let Some(wait) = refused_from.checked_sub(unix_now()) {
        actix_web::rt::time::sleep(wait).await;
    }
    assert_unauthorized(&me_with_header(&server, Some(&format!("Bearer {}", tokens.access_token))).await, "expired");
    match WsClient::connect(&server.ws_url(""), Some(&tokens.access_token)).await {
        Err(HandshakeRefused { status }) => assert_eq!(status, 401),
        Ok(_) => panic!("a WebSocket opened with an expired token"),
    }
}

// ---------------------------------------------------------- refresh tokens

#[actix_web::test]
async fn refresh_rotates_the_pair_and_the_old_refresh_token_stops_working() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = refresh(&server, &alice.tokens.refresh_token).await;
    assert_eq!(status, 200, "{body}");
    let next: TokenResponse = serde_json::from_value(body).unwrap();
    assert_ne!(next.refresh_token, alice.tokens.refresh_token, "the refresh token is rotated");
    assert_eq!(next.user_id, alice.id);
    assert_eq!(next.token_type, "Bearer");
    assert_eq!(next.expires_in, 900);
    let me: UserView = server.get_ok("/api/v1/me", &next.access_token).await;
    assert_eq!(me.id, alice.id, "the new access token works");

    // The new refresh token works in turn.
    let (status, body) = refresh(&server, &next.refresh_token).await;
    assert_eq!(status, 200, "{body}");
    let third: TokenResponse = serde_json::from_value(body).unwrap();
    assert_ne!(third.refresh_token, next.refresh_token);

    let (status, body) = refresh(&server, "rt_made-up").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "refresh_token_invalid");
}

#[actix_web::test]
async fn reusing_a_rotated_refresh_token_revokes_its_whole_family() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let r1 = alice.tokens.refresh_token.clone();
    // Another login session (device) of the same user: another family.
    let laptop = server.login("alice", &alice.password).await;

    let (status, body) = refresh(&server, &r1).await;
    assert_eq!(status, 200, "legitimate refresh: {body}");
    let r2 = body["refresh_token"].as_str().unwrap().to_string();
    let a2 = body["access_token"].as_str().unwrap().to_string();
    let mut phone_ws = WsClient::connect(&server.ws_url(""), Some(&a2)).await.unwrap();

    // An attacker who stole R1 presents it again.
    let (status, body) = refresh(&server, &r1).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "refresh_token_reused");
    assert_eq!(body["status"], 401);

    // The family's access tokens are refused and its socket closes.
    let (_, code) = phone_ws.frames_until_close().await;
    assert_eq!(code, Some(close::SESSION_REVOKED));
    for access in [&alice.tokens.access_token, &a2] {
        server.get_full("/api/v1/me", Some(access)).await.assert_problem(401, "unauthorized");
    }
    assert_eq!(server.get("/api/v1/me", Some(&laptop.access_token)).await.0, 200);

    // The legitimate holder of R2 is logged out too.
    let (status, body) = refresh(&server, &r2).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "refresh_token_invalid");
    let (status, body) = refresh(&server, &r1).await;
    assert_eq!(status, 401, "{body}");

    // The other session is unaffected.
    let (status, body) = refresh(&server, &laptop.refresh_token).await;
    assert_eq!(status, 200, "another family keeps working: {body}");
}

#[actix_web::test]
async fn logout_ends_the_session_with_its_access_tokens_and_sockets() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", &alice.password).await;
    let mut alice_ws = WsClient::connect(&server.ws_url(""), Some(&alice.tokens.access_token)).await.unwrap();
    let mut phone_ws = WsClient::connect(&server.ws_url(""), Some(&phone.access_token)).await.unwrap();

    // Rotate once, then log out with the newest token: the whole family goes.
    let (status, body) = refresh(&server, &alice.tokens.refresh_token).await;
    assert_eq!(status, 200, "{body}");
    let current = body["refresh_token"].as_str().unwrap().to_string();
    let (status, body) = logout(&server, &current).await;
    assert_eq!(status, 204, "{body}");
    let (_, code) = alice_ws.frames_until_close().await;
    assert_eq!(code, Some(close::SESSION_REVOKED), "the session's socket closes");
    server.get_full("/api/v1/me", Some(&alice.tokens.access_token)).await.assert_problem(401, "unauthorized");
    let refused = WsClient::connect(&server.ws_url(""), Some(&alice.tokens.access_token)).await;
    assert!(matches!(refused, Err(HandshakeRefused { status: 401 })), "its access token opens no socket");
    let (status, body) = refresh(&server, &current).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "refresh_token_invalid");
    let (status, body) = refresh(&server, &alice.tokens.refresh_token).await;
    assert_eq!(status, 401, "an older token of the family is dead too: {body}");

    // Another session of the same user stays logged in.
    let (status, body) = refresh(&server, &phone.refresh_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/api/v1/me", Some(&phone.access_token)).await.0, 200);
    phone_ws.ping_pong().await;

    let (status, body) = logout(&server, "rt_never-issued").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "refresh_token_invalid");
}

// -------------------------------------------------------- WebSocket auth

#[actix_web::test]
async fn a_websocket_needs_valid_credentials() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    match WsClient::connect(&server.ws_url(""), None).await {
        Err(HandshakeRefused { status }) => assert_eq!(status, 401),
        Ok(_) => panic!("a WebSocket opened without credentials"),
    }
    let other_node = tempfile::tempdir().unwrap();
    let forged = gateway::auth::TokenKeys::load_or_create(other_node.path())
        .unwrap()
        .issue(alice.id.0, 1, Duration::from_secs(900))
        .unwrap();
    match WsClient::connect(&server.ws_url(""), Some(&forged)).await {
        Err(HandshakeRefused { status }) => assert_eq!(status, 401),
        Ok(_) => panic!("a WebSocket opened with a forged token"),
    }
    // The refusal is the documented problem body.
    let refused = server.ws_handshake("", &[("sec-websocket-protocol", "parley.v1")]).await;
    assert_unauthorized(&refused, "handshake without credentials");

    let ws = server.connect(&alice).await;
    match &ws.hello {
        ServerFrame::Hello { user_id, protocol, .. } => {
            assert_eq!(*user_id, alice.id);
            assert_eq!(*protocol, 1);
        }
        other => panic!("{other:?}"),
    }
}

#[actix_web::test]
async fn a_ticket_opens_one_websocket_without_a_header() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = server.post("/api/v1/auth/ws-ticket", Some(&alice.tokens.access_token), &()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 30);
    let ticket: WsTicketResponse = serde_json::from_value(body).unwrap();

    let url = server.ws_url(&format!("?ticket={}", ticket.ticket));
    let ws = WsClient::connect(&url, None).await.unwrap();
    match &ws.hello {
        ServerFrame::Hello { user_id, .. } => assert_eq!(*user_id, alice.id),
        other => panic!("{other:?}"),
    }
    match WsClient::connect(&url, None).await {
        Err(HandshakeRefused { status }) => assert_eq!(status, 401, "a ticket works once"),
        Ok(_) => panic!("a ticket opened a second WebSocket"),
    }
    match WsClient::connect(&server.ws_url("?ticket=wst_made-up"), None).await {
        Err(HandshakeRefused { status }) => assert_eq!(status, 401),
        Ok(_) => panic!("a made-up ticket opened a WebSocket"),
    }

    // A ticket needs a genuine access token.
    let (status, body) = server.post("/api/v1/auth/ws-ticket", None, &()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "unauthorized");
}

#[actix_web::test]
async fn a_websocket_must_speak_parley_v1() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bearer = format!("Bearer {}", alice.tokens.access_token);

    // A real client that offers no subprotocol is refused...
    let client = awc::Client::builder().timeout(common::WAIT).finish();
    match client.ws(server.ws_url("")).bearer_auth(&alice.tokens.access_token).connect().await {
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => assert_eq!(status.as_u16(), 400),
        Err(error) => panic!("unexpected error: {error}"),
        Ok(_) => panic!("a WebSocket opened without the parley.v1 subprotocol"),
    }
    // ... with the documented problem, also when it offers only another protocol.
    let refused = server.ws_handshake("", &[("authorization", &bearer)]).await;
    refused.assert_problem(400, "unsupported_protocol");
    let refused =
        server.ws_handshake("", &[("authorization", &bearer), ("sec-websocket-protocol", "parley.v0, chat")]).await;
    refused.assert_problem(400, "unsupported_protocol");

    // Offering several, parley.v1 among them, works; the server names its choice.
    let (resp, _framed) = client
        .ws(server.ws_url(""))
        .protocols(["parley.v2", "parley.v1"])
        .bearer_auth(&alice.tokens.access_token)
        .connect()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    assert_eq!(resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()), Some("parley.v1"));
}

// ------------------------------------------------------------- rate limits

#[actix_web::test]
async fn too_many_auth_requests_from_one_address_are_rate_limited() {
    let server = TestServer::start_with(|c| {
        c.limits.auth_per_minute_per_ip = 5;
        c.limits.auth_burst_per_ip = 5;
    })
    .await;
    let body =
        serde_json::to_vec(&LoginRequest { username: "mallory".into(), password: "guess guess".into() }).unwrap();
    let login = || {
        server.request(
            awc::http::Method::POST,
            "/api/v1/auth/login",
            &[("content-type", "application/json")],
            body.clone(),
        )
    };
    for attempt in 1..=5 {
        let resp = login().await;
        resp.assert_problem(401, "invalid_credentials");
        assert!(resp.header("retry-after").is_none(), "attempt {attempt} was not limited");
    }
    let resp = login().await;
    let problem = resp.assert_problem(429, "rate_limited");
    let retry_after = problem["retry_after"].as_u64().unwrap_or_else(|| panic!("no retry_after: {problem}"));
    assert!((1..=60).contains(&retry_after), "retry_after {retry_after}");
    assert_eq!(resp.header("retry-after"), Some(retry_after.to_string().as_str()), "header and body agree");

    // Registration from the same address shares the budget.
    let (status, body) =
        server.post("/api/v1/auth/register", None, &register_body("mallory", "long enough password", "Mallory")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited");
}

/// A server that allows two auth requests per client IP, behind `proxies`.
async fn two_auth_requests_per_ip(proxies: &[&str]) -> TestServer {
    let proxies: Vec<ipnet::IpNet> = proxies.iter().map(|net| net.parse().unwrap()).collect();
    TestServer::start_with(move |c| {
        c.limits.auth_per_minute_per_ip = 2;
        c.limits.auth_burst_per_ip = 2;
        c.limits.trusted_proxies = proxies;
    })
    .await
}

/// A login as `mallory` (wrong password) that says it was forwarded for `client`.
async fn login_forwarded_for(server: &TestServer, client: &str) -> RawResponse {
    let body =
        serde_json::to_vec(&LoginRequest { username: "mallory".into(), password: "guess guess".into() }).unwrap();
    let headers = [("content-type", "application/json"), ("x-forwarded-for", client)];
    server.request(awc::http::Method::POST, "/api/v1/auth/login", &headers, body).await
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_auth_budget() {
    let server = two_auth_requests_per_ip(&["127.0.0.0/8"]).await;
    for _ in 0..2 {
        login_forwarded_for(&server, "203.0.113.7").await.assert_problem(401, "invalid_credentials");
    }
    login_forwarded_for(&server, "203.0.113.7").await.assert_problem(429, "rate_limited");
    // Another client behind the same proxy is not limited with the first,
    // even if it claims an address of its own in front of the proxy's entry.
    login_forwarded_for(&server, "203.0.113.8").await.assert_problem(401, "invalid_credentials");
    login_forwarded_for(&server, "203.0.113.7, 203.0.113.9").await.assert_problem(401, "invalid_credentials");
}

#[actix_web::test]
async fn a_forwarded_for_header_from_an_untrusted_peer_changes_nothing() {
    let server = two_auth_requests_per_ip(&[]).await;
    for client in ["203.0.113.7", "203.0.113.8"] {
        login_forwarded_for(&server, client).await.assert_problem(401, "invalid_credentials");
    }
    // A third address in the header does not buy a third attempt.
    login_forwarded_for(&server, "203.0.113.9").await.assert_problem(429, "rate_limited");
}

#[actix_web::test]
async fn logging_out_other_devices_ends_them_at_once_and_keeps_this_one() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", &alice.password).await;
    let laptop = server.login("alice", &alice.password).await;
    let mut phone_ws = WsClient::connect(&server.ws_url(""), Some(&phone.access_token)).await.unwrap();
    let bob = server.register("bob").await;
    let mut bob_ws = server.connect(&bob).await;

    let response = server.call("POST", "/api/v1/auth/logout-others", Some(&alice.tokens.access_token), None).await;
    assert_eq!((response.status, response.json()["sessions_ended"].as_u64()), (200, Some(2)));
    let (_, code) = phone_ws.frames_until_close().await;
    assert_eq!(code, Some(close::SESSION_REVOKED));

    for ended in [&phone, &laptop] {
        server.get_full("/api/v1/me", Some(&ended.access_token)).await.assert_problem(401, "unauthorized");
        let refresh = RefreshRequest { refresh_token: ended.refresh_token.clone() };
        let (status, body) = server.post("/api/v1/auth/refresh", None, &refresh).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("refresh_token_invalid")));
        let refused = WsClient::connect(&server.ws_url(""), Some(&ended.access_token)).await;
        assert!(matches!(refused, Err(HandshakeRefused { status: 401 })));
    }
    // This device and other users carry on.
    let (status, _) = server.get("/api/v1/me", Some(&alice.tokens.access_token)).await;
    assert_eq!(status, 200);
    let refresh = RefreshRequest { refresh_token: alice.tokens.refresh_token.clone() };
    assert_eq!(server.post("/api/v1/auth/refresh", None, &refresh).await.0, 200);
    bob_ws.ping_pong().await;
}
