//! Changing email and phone through a real server: codes go to a real SMTP
//! server on loopback (aiosmtpd, `tests/support/smtp_sink.py`), to the
//! outbox in the data directory, or to an SMS webhook, and are read back
//! from there like a user would.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use awc::http::Method;
use common::{RawResponse, TestServer, TestUser, WAIT};
use gateway::config::{Secret, SmsConfig, SmtpConfig, SmtpTls};
use serde_json::{Value, json};

// ------------------------------------------------------------- harness

/// A real SMTP server (aiosmtpd) on loopback that saves each message it
/// receives as a file. Stopped when dropped.
struct SmtpSink {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--dir")
            .arg(dir.path())
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the SMTP tests");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        if !line.starts_with("ready") {
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            let _ = child.wait();
            panic!(
                "the loopback SMTP server did not start; it needs aiosmtpd \
                 (`python3 -m pip install aiosmtpd`, done by .ci/run): {stderr}"
            );
        }
        SmtpSink { child, dir, port }
    }

    /// SMTP settings that send to this sink.
    fn config(&self) -> SmtpConfig {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: Some(self.port),
            tls: SmtpTls::None,
            from: "Parley <noreply@parley.test>".into(),
            ..SmtpConfig::default()
        }
    }

    /// The messages received for `to` so far, oldest first.
    fn mails_to(&self, to: &str) -> Vec<String> {
        let header = format!("X-Envelope-To: {to}\r\n");
        sorted_files(self.dir.path(), ".eml").into_iter().filter(|mail| mail.starts_with(&header)).collect()
    }

    /// Waits until `count` messages for `to` have arrived; returns the last.
    async fn wait_for_mail(&self, to: &str, count: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let mails = self.mails_to(to);
            if mails.len() >= count {
                return mails[count - 1].clone();
            }
            assert!(Instant::now() < deadline, "no mail #{count} for {to} within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The contents of the files in `dir` whose names end with `suffix`, by name.
fn sorted_files(dir: &Path, suffix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> =
        entries.map(|entry| entry.unwrap().path()).filter(|path| path.to_string_lossy().ends_with(suffix)).collect();
    paths.sort();
    paths.into_iter().map(|path| std::fs::read_to_string(path).unwrap()).collect()
}

/// The outbox messages of `kind` (`email` or `sms`) addressed to `to`.
fn outbox(server: &TestServer, kind: &str, to: &str) -> Vec<String> {
    let header = format!("To: {to}\n");
    sorted_files(&server.dir.path().join(gateway::notify::OUTBOX_DIR), &format!("-{kind}.txt"))
        .into_iter()
        .filter(|text| text.starts_with(&header))
        .collect()
}

/// The confirmation code in a message.
fn code_in(text: &str) -> String {
    let (_, rest) = text.split_once("code is ").unwrap_or_else(|| panic!("no code in {text:?}"));
    let code: String = rest.chars().take(6).collect();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "bad code {code:?} in {text:?}");
    code
}

/// A different, well-formed code.
fn wrong(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

/// An SMS webhook on loopback that records each POST (its `Authorization`
/// header and JSON body) and answers `status`.
struct Webhook {
    url: String,
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Webhook {
    fn start(status: u16) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/sms", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(request) = read_request(&stream) {
                    log.lock().unwrap().push(request);
                }
                let mut stream = stream;
                let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Webhook { url, received }
    }

    fn config(&self, token: Option<&str>) -> SmsConfig {
        SmsConfig::Webhook { url: self.url.clone(), bearer_token: token.map(|t| Secret(t.into())), timeout_secs: 5 }
    }

    fn received(&self) -> Vec<(String, Value)> {
        self.received.lock().unwrap().clone()
    }
}

/// Reads one HTTP/1.1 request: returns its `Authorization` header and JSON body.
fn read_request(stream: &TcpStream) -> Option<(String, Value)> {
    let mut reader = BufReader::new(stream);
    let (mut authorization, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "authorization" => authorization = value.trim().to_owned(),
                "content-length" => length = value.trim().parse().ok()?,
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((authorization, serde_json::from_slice(&body).ok()?))
}

/// Everything the process logs, captured from the first call on (the
/// server runs in this process, so this includes its log lines).
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(logs))
            .try_init();
        logs
    })
}

struct Capture(&'static Mutex<Vec<u8>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// POSTs JSON as `user` (or anonymously); returns the full response.
async fn post(server: &TestServer, path: &str, user: Option<&TestUser>, body: Value) -> RawResponse {
    send(server, Method::POST, path, user, body.to_string()).await
}

async fn send(server: &TestServer, method: Method, path: &str, user: Option<&TestUser>, body: String) -> RawResponse {
    let auth = user.map(|u| format!("Bearer {}", u.tokens.access_token));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    server.request(method, path, &headers, body).await
}

async fn delete(server: &TestServer, path: &str, user: &TestUser) -> RawResponse {
    send(server, Method::DELETE, path, Some(user), String::new()).await
}

/// The caller's own profile.
async fn me(server: &TestServer, user: &TestUser) -> Value {
    let (status, body) = server.get("/api/v1/me", Some(&user.tokens.access_token)).await;
    assert_eq!(status, 200, "GET /me: {body}");
    body
}

async fn confirm(server: &TestServer, user: &TestUser, channel: &str, code: &str) -> RawResponse {
    post(server, &format!("/api/v1/me/{channel}/confirm"), Some(user), json!({ "code": code })).await
}

/// Asks for a code on `channel` and expects it accepted.
async fn request_code(server: &TestServer, user: &TestUser, channel: &str, value: &str) -> Value {
    let response = post(server, &format!("/api/v1/me/{channel}"), Some(user), json!({ channel: value })).await;
    assert_eq!(response.status, 202, "request {channel} {value}: {}", response.json());
    response.json()
}

/// Requests and confirms `email` for `user` through the outbox.
async fn confirm_email_via_outbox(server: &TestServer, user: &TestUser, email: &str) {
    request_code(server, user, "email", email).await;
    let code = code_in(outbox(server, "email", email).last().unwrap());
    assert_eq!(confirm(server, user, "email", &code).await.status, 200);
}

// --------------------------------------------------------------- tests

#[actix_web::test]
async fn email_change_is_confirmed_by_a_code_sent_to_the_new_address() {
    let logs = captured_logs();
    let sink = SmtpSink::start();
    let smtp = sink.config();
    let server = TestServer::start_with(|config| config.smtp = Some(smtp)).await;
    let alice = server.register("alice").await;

    // Adding a first address.
    let pending = request_code(&server, &alice, "email", " Alice@Old.EXAMPLE ").await;
    assert_eq!(pending, json!({ "channel": "email", "pending": "Alice@old.example", "expires_in": 600 }));
    assert_eq!(me(&server, &alice).await["email"], Value::Null, "nothing changes before confirmation");
    let mail = sink.wait_for_mail("Alice@old.example", 1).await;
    assert!(mail.contains("From: Parley <noreply@parley.test>"), "{mail}");
    assert!(mail.contains("Subject: Your Parley confirmation code"), "{mail}");
    let first_code = code_in(&mail);
    let confirmed = confirm(&server, &alice, "email", &first_code).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.json());
    assert_eq!(confirmed.json(), json!({ "channel": "email", "value": "Alice@old.example" }));
    assert_eq!(me(&server, &alice).await["email"], "Alice@old.example");

    // Changing it: the code goes to the new address; the old one stays until then.
    request_code(&server, &alice, "email", "alice@new.example").await;
    let code = code_in(&sink.wait_for_mail("alice@new.example", 1).await);
    assert_eq!(sink.mails_to("Alice@old.example").len(), 1, "nothing is sent to the old address");
    assert_eq!(me(&server, &alice).await["email"], "Alice@old.example", "the old address keeps working");
    assert_eq!(confirm(&server, &alice, "email", &code).await.status, 200);
    assert_eq!(me(&server, &alice).await["email"], "alice@new.example");

    // A code works once.
    confirm(&server, &alice, "email", &code).await.assert_problem(404, "no_pending_change");

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("contact change confirmed"), "the capture sees the server's log lines");
    for code in [first_code, code] {
        assert!(!logs.contains(&code), "code {code} appears in the log");
    }
}

#[actix_web::test]
async fn wrong_codes_count_attempts_and_then_lock_the_change() {
    let sink = SmtpSink::start();
    let smtp = sink.config();
    let server = TestServer::start_with(|config| {
        config.smtp = Some(smtp);
        config.contacts.max_attempts = 3;
    })
    .await;
    let alice = server.register("alice").await;
    request_code(&server, &alice, "email", "alice@example.com").await;
    let code = code_in(&sink.wait_for_mail("alice@example.com", 1).await);

    for left in [2, 1, 0] {
        let problem = confirm(&server, &alice, "email", &wrong(&code)).await.assert_problem(422, "invalid_code");
        assert!(problem["detail"].as_str().unwrap().contains(&format!("{left} attempt(s) left")), "{problem}");
    }
    confirm(&server, &alice, "email", &code).await.assert_problem(422, "too_many_attempts");
    assert_eq!(me(&server, &alice).await["email"], Value::Null);

    // A new code starts over; the locked one is gone.
    request_code(&server, &alice, "email", "alice@example.com").await;
    let fresh = code_in(&sink.wait_for_mail("alice@example.com", 2).await);
    if fresh != code {
        confirm(&server, &alice, "email", &code).await.assert_problem(422, "invalid_code");
    }
    assert_eq!(confirm(&server, &alice, "email", &fresh).await.status, 200);
    assert_eq!(me(&server, &alice).await["email"], "alice@example.com");
}

#[actix_web::test]
async fn expired_codes_are_refused_and_forgotten() {
    let server = TestServer::start_with(|config| config.contacts.code_ttl_secs = 1).await;
    let alice = server.register("alice").await;
    let pending = request_code(&server, &alice, "email", "alice@example.com").await;
    assert_eq!(pending["expires_in"], 1);
    let code = code_in(&outbox(&server, "email", "alice@example.com")[0]);

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    confirm(&server, &alice, "email", &code).await.assert_problem(410, "code_expired");
    confirm(&server, &alice, "email", &code).await.assert_problem(404, "no_pending_change");
    assert_eq!(me(&server, &alice).await["email"], Value::Null);
}

#[actix_web::test]
async fn code_requests_are_rate_limited_per_user_and_per_address() {
    let server = TestServer::start_with(|config| config.contacts.codes_per_hour = 2).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    request_code(&server, &alice, "email", "a1@example.com").await;
    request_code(&server, &alice, "email", "a2@example.com").await;

    let refused = post(&server, "/api/v1/me/email", Some(&alice), json!({ "email": "a3@example.com" })).await;
    refused.assert_problem(429, "rate_limited");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after > 0 && retry_after <= 3600, "Retry-After {retry_after}");
    assert!(outbox(&server, "email", "a3@example.com").is_empty(), "nothing is sent when refused");

    // The phone channel has its own budget...
    request_code(&server, &alice, "phone", "+15550100001").await;
    // ...and an address that got its share refuses codes, whoever asks.
    let charlie = server.register("charlie").await;
    request_code(&server, &bob, "email", "a1@example.com").await;
    post(&server, "/api/v1/me/email", Some(&charlie), json!({ "email": "A1@example.com" }))
        .await
        .assert_problem(429, "rate_limited");
    request_code(&server, &charlie, "email", "c1@example.com").await;
}

#[actix_web::test]
async fn phone_change_through_the_outbox() {
    let logs = captured_logs();
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let pending = request_code(&server, &alice, "phone", "+1 (555) 010-9999").await;
    assert_eq!(pending, json!({ "channel": "phone", "pending": "+15550109999", "expires_in": 600 }));
    let texts = outbox(&server, "sms", "+15550109999");
    assert_eq!(texts.len(), 1);
    let code = code_in(&texts[0]);
    assert_eq!(me(&server, &alice).await["phone"], Value::Null);

    let confirmed = confirm(&server, &alice, "phone", &code).await;
    assert_eq!(confirmed.json(), json!({ "channel": "phone", "value": "+15550109999" }));
    let profile = me(&server, &alice).await;
    assert_eq!((profile["phone"].clone(), profile["email"].clone()), (json!("+15550109999"), Value::Null));

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("notice written to the outbox"), "the log points at the outbox file");
    assert!(!logs.contains(&code), "the code appears in the log");
}

#[actix_web::test]
async fn phone_change_through_the_sms_webhook() {
    let webhook = Webhook::start(200);
    let sms = webhook.config(Some("hook-secret"));
    let server = TestServer::start_with(|config| config.sms = sms).await;
    let alice = server.register("alice").await;

    request_code(&server, &alice, "phone", "+4915112345678").await;
    let received = webhook.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let (authorization, body) = &received[0];
    assert_eq!(authorization, "Bearer hook-secret");
    assert_eq!(body["to"], "+4915112345678");
    let code = code_in(body["text"].as_str().unwrap());
    assert!(outbox(&server, "sms", "+4915112345678").is_empty(), "the webhook replaces the outbox");

    assert_eq!(confirm(&server, &alice, "phone", &code).await.status, 200);
    assert_eq!(me(&server, &alice).await["phone"], "+4915112345678");
}

#[actix_web::test]
async fn a_failing_webhook_is_a_delivery_failure() {
    let webhook = Webhook::start(500);
    let sms = webhook.config(None);
    let server = TestServer::start_with(|config| config.sms = sms).await;
    let alice = server.register("alice").await;

    post(&server, "/api/v1/me/phone", Some(&alice), json!({ "phone": "+15550100001" }))
        .await
        .assert_problem(502, "delivery_failed");
    assert_eq!(webhook.received()[0].0, "", "no token configured, none sent");
}

#[actix_web::test]
async fn email_goes_to_the_outbox_without_smtp() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    request_code(&server, &alice, "email", "alice@example.com").await;
    let mails = outbox(&server, "email", "alice@example.com");
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("Subject: Your Parley confirmation code"), "{}", mails[0]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = server.dir.path().join(gateway::notify::OUTBOX_DIR);
        let file = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "outbox files are private to the node's user");
    }
    assert_eq!(confirm(&server, &alice, "email", &code_in(&mails[0])).await.status, 200);
    assert_eq!(me(&server, &alice).await["email"], "alice@example.com");
}

#[actix_web::test]
async fn confirmed_addresses_can_be_removed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    confirm_email_via_outbox(&server, &alice, "alice@example.com").await;
    request_code(&server, &alice, "phone", "+15550100001").await;
    let code = code_in(&outbox(&server, "sms", "+15550100001")[0]);
    assert_eq!(confirm(&server, &alice, "phone", &code).await.status, 200);

    assert_eq!(delete(&server, "/api/v1/me/email", &alice).await.status, 204);
    let profile = me(&server, &alice).await;
    assert_eq!((profile["email"].clone(), profile["phone"].clone()), (Value::Null, json!("+15550100001")));
    assert_eq!(delete(&server, "/api/v1/me/email", &alice).await.status, 204, "removing nothing is fine");
    assert_eq!(delete(&server, "/api/v1/me/phone", &alice).await.status, 204);
    assert_eq!(me(&server, &alice).await["phone"], Value::Null);
}

#[actix_web::test]
async fn an_address_confirmed_on_another_account_is_refused_at_confirmation() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    confirm_email_via_outbox(&server, &alice, "shared@example.com").await;

    // Asking for a code does not reveal that the address is taken...
    request_code(&server, &bob, "email", "Shared@EXAMPLE.com").await;
    let code = code_in(outbox(&server, "email", "Shared@example.com").last().unwrap());
    // ...only someone who reads its mail learns it, at confirmation.
    confirm(&server, &bob, "email", &code).await.assert_problem(409, "contact_taken");
    assert_eq!(me(&server, &bob).await["email"], Value::Null);
    assert_eq!(me(&server, &alice).await["email"], "shared@example.com");
}

#[actix_web::test]
async fn invalid_addresses_and_codes_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let long = format!("{}@example.com", "a".repeat(250));
    for email in ["", "not-an-email", "a@", "@example.com", "two words@example.com", long.as_str()] {
        post(&server, "/api/v1/me/email", Some(&alice), json!({ "email": email }))
            .await
            .assert_problem(422, "invalid_field");
    }
    for phone in ["", "5550109999", "+1555", "+0155501099", "+1234567890123456", "+1555O109999"] {
        post(&server, "/api/v1/me/phone", Some(&alice), json!({ "phone": phone }))
            .await
            .assert_problem(422, "invalid_field");
    }
    post(&server, "/api/v1/me/email", Some(&alice), json!({ "email": "a@example.com", "extra": 1 }))
        .await
        .assert_problem(400, "bad_request");
    for code in ["", "12345", "1234567", "12a456"] {
        confirm(&server, &alice, "email", code).await.assert_problem(422, "invalid_field");
    }
    confirm(&server, &alice, "phone", "123456").await.assert_problem(404, "no_pending_change");
    let files = std::fs::read_dir(server.dir.path().join(gateway::notify::OUTBOX_DIR)).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files, 0, "nothing was sent");
}

#[actix_web::test]
async fn contact_routes_need_authentication() {
    let server = TestServer::start().await;
    for (method, path, body) in [
        (Method::POST, "/api/v1/me/email", json!({ "email": "a@example.com" })),
        (Method::POST, "/api/v1/me/email/confirm", json!({ "code": "123456" })),
        (Method::DELETE, "/api/v1/me/email", Value::Null),
        (Method::POST, "/api/v1/me/phone", json!({ "phone": "+15550100001" })),
        (Method::POST, "/api/v1/me/phone/confirm", json!({ "code": "123456" })),
        (Method::DELETE, "/api/v1/me/phone", Value::Null),
    ] {
        send(&server, method, path, None, body.to_string()).await.assert_problem(401, "unauthorized");
    }
}
