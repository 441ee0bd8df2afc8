//! Shared state of the HTTP workers, and the authenticated-user extractor.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Recipient;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use engine::cluster::{RequestCounts, RevokedSessions};
use engine::{Engine, Kick};
use futures_util::future::LocalBoxFuture;
use protocol::UserId;

use crate::auth::{Claims, Passwords, Tickets, TokenKeys};
use crate::config::Config;
use crate::errors::ApiError;
use crate::forwarded;
use crate::limits::Limit;

/// Everything a request handler may need.
pub struct AppState {
    pub engine: Engine,
    pub config: Config,
    pub keys: Arc<TokenKeys>,
    passwords: Arc<Passwords>,
    /// Bounds concurrent Argon2 work (each hash holds ~19 MiB for tens of ms).
    hash_permits: tokio::sync::Semaphore,
    pub tickets: Tickets,
    pub connections: Connections,
    /// Login sessions ended before their access tokens expire (shared by
    /// every node of a cluster).
    pub(crate) revoked_sessions: Arc<dyn RevokedSessions>,
    /// Requests counted by every node of a cluster together, for the limits.
    counts: Arc<dyn RequestCounts>,
    /// Register, login and refresh per IP.
    auth: Limit<IpAddr>,
    /// User searches per user.
    pub searches: Limit<i64>,
    /// Media uploads (avatars) per user.
    pub uploads: Limit<i64>,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(
        engine: Engine,
        config: Config,
        keys: Arc<TokenKeys>,
        passwords: Passwords,
        tickets: Tickets,
        revoked_sessions: Arc<dyn RevokedSessions>,
        counts: Arc<dyn RequestCounts>,
    ) -> Self {
        let limits = &config.limits;
        AppState {
            engine,
            keys,
            passwords: Arc::new(passwords),
            hash_permits: tokio::sync::Semaphore::new(hash_concurrency()),
            tickets,
            connections: Connections::default(),
            revoked_sessions,
            counts,
            auth: Limit::new("auth", limits.auth_per_minute_per_ip, limits.auth_burst_per_ip, MINUTE),
            searches: Limit::new("search", limits.searches_per_second, limits.search_burst, Duration::from_secs(1)),
            uploads: Limit::new("upload", limits.uploads_per_minute, limits.upload_burst, MINUTE),
            shutting_down: AtomicBool::new(false),
            config,
        }
    }

    /// Hashes a password under the current pepper, off the async threads.
    pub async fn hash_password(&self, password: String) -> Result<(String, u32), ApiError> {
        let _permit = self.hash_permits.acquire().await.map_err(ApiError::internal)?;
        let passwords = self.passwords.clone();
        web::block(move || passwords.hash(&password)).await.map_err(ApiError::internal)?.map_err(ApiError::internal)
    }

    /// Verifies a password against a stored `(hash, pepper version)`, or
    /// against a decoy when there is none (same cost). Returns whether it
    /// matched and whether the hash should be upgraded.
    pub async fn verify_password(
        &self,
        password: String,
        stored: Option<(String, u32)>,
    ) -> Result<(bool, bool), ApiError> {
        let _permit = self.hash_permits.acquire().await.map_err(ApiError::internal)?;
        let passwords = self.passwords.clone();
        web::block(move || {
            passwords.verify(&password, stored.as_ref().map(|(hash, version)| (hash.as_str(), *version)))
        })
        .await
        .map_err(ApiError::internal)
    }

    /// Ends `sessions` of `user_id` (already revoked in the store) on
    /// every node: their access tokens are refused from now on, and their
    /// WebSockets, on whichever node holds them, close with
    /// [`protocol::ws::close::SESSION_REVOKED`].
    pub async fn end_sessions(&self, user_id: UserId, sessions: &[i64]) -> Result<(), ApiError> {
        let ttl = Duration::from_secs(self.config.auth.access_token_ttl_secs);
        self.revoked_sessions.revoke(sessions, ttl).await?;
        Ok(self.engine.end_sessions(user_id, sessions).await?)
    }

    /// Counts an auth request (register, login, refresh) against its
    /// client's IP budget: `auth_per_minute_per_ip` with a burst of
    /// `auth_burst_per_ip`, across the cluster ([`Limit`]). The client is
    /// the TCP peer, or behind `limits.trusted_proxies` the address they
    /// forwarded the request for.
    pub async fn check_auth_rate(&self, req: &HttpRequest) -> Result<(), ApiError> {
        match req.peer_addr() {
            Some(addr) => {
                let client = forwarded::client_ip(addr.ip(), req.headers(), &self.config.limits.trusted_proxies);
                self.check_rate(&self.auth, client).await
            }
            None => Ok(()),
        }
    }

    /// Counts one request of `key` against `limit`, across the cluster.
    pub async fn check_rate<K: Hash + Eq + Clone + Display>(&self, limit: &Limit<K>, key: K) -> Result<(), ApiError> {
        limit.check(key, &*self.counts, &self.engine.metrics().rate_limited).await
    }

    /// Forgets rate-limit state that has refilled; called periodically.
    pub fn prune_rate_limits(&self) {
        self.auth.retain_recent();
        self.searches.retain_recent();
        self.uploads.retain_recent();
        self.engine.prune_rate_limits();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Marks the node as draining: not ready, closing connections.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.connections.kick_all(Kick { code: protocol::ws::close::GOING_AWAY, reason: "server shutting down" });
    }
}

/// The window of the per-minute limits.
const MINUTE: Duration = Duration::from_secs(60);

/// Argon2 computations allowed at once: two per CPU.
fn hash_concurrency() -> usize {
    std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4)
}

/// The live WebSocket connections of this node, to close them on shutdown.
#[derive(Default)]
pub struct Connections {
    next_id: AtomicU64,
    /// How to close each one.
    live: Mutex<HashMap<u64, Recipient<Kick>>>,
}

impl Connections {
    /// A process-unique connection ID.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn insert(&self, id: u64, kick: Recipient<Kick>) {
        if let Ok(mut live) = self.live.lock() {
            live.insert(id, kick);
        }
    }

    pub fn remove(&self, id: u64) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&id);
        }
    }

    fn kick_all(&self, kick: Kick) {
        if let Ok(live) = self.live.lock() {
            for connection in live.values() {
                connection.do_send(kick);
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: Option<&str>) -> Result<&str, ApiError> {
    let header = header.ok_or(ApiError::Unauthorized("missing bearer token"))?;
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or(ApiError::Unauthorized("malformed Authorization header"))
}

/// The user a request is authenticated as (`Authorization: Bearer <access token>`).
pub struct AuthUser {
    pub user_id: UserId,
    pub claims: Claims,
}

impl AuthUser {
    /// Verifies a bearer token from the request's `Authorization` header.
    pub async fn from_headers(req: &HttpRequest, state: &AppState) -> Result<Self, ApiError> {
        let header = req.headers().get(actix_web::http::header::AUTHORIZATION).map(|value| value.to_str());
        Self::from_authorization(header.map(|value| value.unwrap_or_default()), state).await
    }

    /// Verifies a bearer token from an `Authorization` header value.
    pub async fn from_authorization(header: Option<&str>, state: &AppState) -> Result<Self, ApiError> {
        Self::from_claims(state.keys.verify(bearer_token(header)?).await, state).await
    }

    /// Accepts verified claims of a session that has not been ended (on
    /// any node: the shared state says; while it cannot be asked, the
    /// request fails with 503 rather than let an ended session in).
    pub async fn from_claims(claims: Option<Claims>, state: &AppState) -> Result<Self, ApiError> {
        let claims = claims.ok_or(ApiError::Unauthorized("invalid or expired token"))?;
        let user_id = claims.user_id().ok_or(ApiError::Unauthorized("invalid or expired token"))?;
        if state.revoked_sessions.is_revoked(claims.session_id()).await? {
            return Err(ApiError::Unauthorized("this login was ended; log in again"));
        }
        Ok(AuthUser { user_id, claims })
    }
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match req.app_data::<web::Data<AppState>>() {
                Some(state) => AuthUser::from_headers(&req, state).await,
                None => Err(ApiError::Internal("state missing".into())),
            }
        })
    }
}
