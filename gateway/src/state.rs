//! Shared state of the HTTP workers, and the authenticated-user extractor.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::Recipient;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use engine::cluster::{RequestCounts, RevokedSessions};
use engine::{Engine, Kick};
use futures_util::future::LocalBoxFuture;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use protocol::UserId;

use crate::auth::{Claims, Passwords, Tickets, TokenKeys};
use crate::config::Config;
use crate::errors::ApiError;

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
    revoked_sessions: Arc<dyn RevokedSessions>,
    auth_limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Auth requests per IP counted by every node of a cluster together.
    auth_counts: Arc<dyn RequestCounts>,
    /// User searches per user.
    pub searches: UserLimit,
    /// Media uploads (avatars) per user.
    pub uploads: UserLimit,
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
        auth_counts: Arc<dyn RequestCounts>,
    ) -> Self {
        let per_minute = nonzero(config.limits.auth_per_minute_per_ip);
        let burst = nonzero(config.limits.auth_burst_per_ip);
        AppState {
            engine,
            keys,
            passwords: Arc::new(passwords),
            hash_permits: tokio::sync::Semaphore::new(hash_concurrency()),
            tickets,
            connections: Connections::default(),
            revoked_sessions,
            auth_limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            auth_counts,
            searches: UserLimit::new(
                "search",
                Quota::per_second(nonzero(config.limits.searches_per_second))
                    .allow_burst(nonzero(config.limits.search_burst)),
            ),
            uploads: UserLimit::new(
                "upload",
                Quota::per_minute(nonzero(config.limits.uploads_per_minute))
                    .allow_burst(nonzero(config.limits.upload_burst)),
            ),
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
        let ttl = std::time::Duration::from_secs(self.config.auth.access_token_ttl_secs);
        self.revoked_sessions.revoke(sessions, ttl).await?;
        Ok(self.engine.end_sessions(user_id, sessions).await?)
    }

    /// Counts an auth request from `req`'s peer against its IP's budget:
    /// this node's limiter (`auth_per_minute_per_ip` with a burst of
    /// `auth_burst_per_ip`), then the cluster's count, which allows what
    /// that limiter allows in a minute (`per_minute + burst`) per
    /// [`AUTH_WINDOW`] across all nodes. A node alone is never held to less
    /// than its own limiter allows. If the shared count is unreachable, the
    /// node's own limit applies alone.
    pub async fn check_auth_rate(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let Some(ip) = req.peer_addr().map(|addr| addr.ip()) else { return Ok(()) };
        let refused = |wait: std::time::Duration| {
            self.engine.metrics().rate_limited.with_label_values(&["auth"]).inc();
            ApiError::RateLimited { retry_after_secs: wait.as_secs().max(1) }
        };
        self.auth_limiter.check_key(&ip).map_err(|not_until| {
            refused(not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default())))
        })?;
        let budget =
            u64::from(self.config.limits.auth_per_minute_per_ip) + u64::from(self.config.limits.auth_burst_per_ip);
        match self.auth_counts.count(&format!("auth:{ip}"), AUTH_WINDOW).await {
            Ok((count, left)) if count > budget => Err(refused(left)),
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "the cluster's auth counts are unreachable; this node's limit applies alone");
                Ok(())
            }
        }
    }

    /// Counts one request of `user_id` against `limit`.
    pub fn check_user_rate(&self, limit: &UserLimit, user_id: UserId) -> Result<(), ApiError> {
        limit.limiter.check_key(&user_id.0).map_err(|not_until| {
            self.engine.metrics().rate_limited.with_label_values(&[limit.name]).inc();
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            ApiError::RateLimited { retry_after_secs: wait.as_secs().max(1) }
        })
    }

    /// Forgets rate-limit state that has refilled; called periodically.
    pub fn prune_rate_limits(&self) {
        self.auth_limiter.retain_recent();
        self.searches.limiter.retain_recent();
        self.uploads.limiter.retain_recent();
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

/// The window in which a cluster counts each IP's auth requests.
pub const AUTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// A per-user rate limit, named in the `rate_limited_total` metric.
pub struct UserLimit {
    name: &'static str,
    limiter: DefaultKeyedRateLimiter<i64>,
}

impl UserLimit {
    fn new(name: &'static str, quota: Quota) -> Self {
        UserLimit { name, limiter: RateLimiter::keyed(quota) }
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

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
        Self::from_claims(state.keys.verify(bearer_token(header)?), state).await
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
