//! `/api/v1/auth`: register, login, refresh, logout, WebSocket tickets, JWKS.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use protocol::UserId;
use protocol::limits::{DISPLAY_NAME_LEN, PASSWORD_LEN, USERNAME_LEN};
use protocol::rest::{
    LoggedOutOthers, LoginRequest, RefreshRequest, RegisterRequest, TokenResponse, UserView, WsTicketResponse,
};
use storage::{NewRefreshToken, NewTokenFamily, NewUser, RotateOutcome, StorageError};

use crate::auth::{TokenKeys, random_token, token_hash};
use crate::config::AuthConfig;
use crate::errors::ApiError;
use crate::routes::users::user_view;
use crate::state::{AppState, AuthUser};

/// Register a new account.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserView), (status = 409, body = protocol::rest::Problem, description = "username_taken"),
              (status = 422, body = protocol::rest::Problem, description = "invalid_field"),
              (status = 429, body = protocol::rest::Problem, description = "rate_limited")))]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    state.check_auth_rate(&req).await?;
    let RegisterRequest { username, password, display_name } = body.into_inner();
    let username_key = validate_username(&username)?;
    let display_name = validate_display_name(&display_name)?;
    validate_password(&password)?;
    let users = state.engine.stores().users.clone();
    if users.user_by_username(&username_key).await?.is_some() {
        return Err(ApiError::UsernameTaken);
    }
    let (password_hash, pepper_version) = state.hash_password(password).await?;
    let user = NewUser {
        id: state.engine.next_id().await?,
        username: username.clone(),
        username_key,
        display_name,
        password_hash,
        pepper_version,
        created_at_ms: engine::now_ms(),
    };
    match users.create_user(user).await {
        Ok(record) => {
            tracing::info!(user_id = record.id, "user registered");
            Ok(HttpResponse::Created().json(user_view(&record)))
        }
        Err(StorageError::Conflict(_)) => Err(ApiError::UsernameTaken),
        Err(error) => Err(error.into()),
    }
}

/// Log in with username and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = protocol::rest::Problem, description = "invalid_credentials"),
              (status = 429, body = protocol::rest::Problem, description = "rate_limited")))]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<LoginRequest>,
) -> Result<web::Json<TokenResponse>, ApiError> {
    state.check_auth_rate(&req).await?;
    let LoginRequest { username, password } = body.into_inner();
    let users = state.engine.stores().users.clone();
    // Unknown users still pay for one Argon2 verification, so the response
    // time does not tell whether a username exists.
    let user = users.user_by_username(&username.to_ascii_lowercase()).await?;
    let stored = user.as_ref().map(|u| (u.password_hash.clone(), u.pepper_version));
    let (matched, needs_rehash) = state.verify_password(password.clone(), stored).await?;
    let user = match user {
        Some(user) if matched => user,
        _ => return Err(ApiError::InvalidCredentials),
    };
    if needs_rehash {
        rehash(&state, user.id, password).await;
    }
    let access_ttl = Duration::from_secs(state.config.auth.access_token_ttl_secs);
    let tokens = start_session(&state.engine, &state.keys, &state.config.auth, user.id, access_ttl).await?;
    tracing::info!(user_id = user.id, "user logged in");
    Ok(web::Json(tokens))
}

/// Starts a login session (token family) for `user_id`: stores its first
/// refresh token and signs an access token valid for `access_ttl`.
pub(crate) async fn start_session(
    engine: &engine::Engine,
    keys: &TokenKeys,
    auth: &AuthConfig,
    user_id: i64,
    access_ttl: Duration,
) -> Result<TokenResponse, ApiError> {
    let family_id = engine.next_id().await?;
    let refresh_token = random_token();
    let now = engine::now_ms();
    engine
        .stores()
        .tokens
        .create_family(
            NewTokenFamily { id: family_id, user_id, created_at_ms: now },
            new_refresh(auth, &refresh_token, now),
        )
        .await?;
    issue_tokens(keys, user_id, family_id, refresh_token, access_ttl)
}

/// Trade a refresh token for a new token pair. The presented token is used
/// up; presenting it again revokes every token of its login.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse),
              (status = 401, body = protocol::rest::Problem, description = "refresh_token_invalid or refresh_token_reused")))]
pub async fn refresh(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<RefreshRequest>,
) -> Result<web::Json<TokenResponse>, ApiError> {
    state.check_auth_rate(&req).await?;
    let presented = token_hash(&body.refresh_token);
    let next_token = random_token();
    let now = engine::now_ms();
    let outcome =
        state.engine.stores().tokens.rotate(&presented, new_refresh(&state.config.auth, &next_token, now), now).await?;
    match outcome {
        RotateOutcome::Rotated { user_id, family_id } => {
            let access_ttl = Duration::from_secs(state.config.auth.access_token_ttl_secs);
            Ok(web::Json(issue_tokens(&state.keys, user_id, family_id, next_token, access_ttl)?))
        }
        RotateOutcome::Reused { user_id, family_id } => {
            tracing::warn!(user_id, family_id, "refresh token reused; token family revoked");
            state.end_sessions(UserId(user_id), &[family_id]).await?;
            Err(ApiError::RefreshTokenReused)
        }
        RotateOutcome::Revoked | RotateOutcome::Expired | RotateOutcome::Unknown => Err(ApiError::RefreshTokenInvalid),
    }
}

/// Log out: ends the refresh token's login session. Its refresh tokens stop
/// working, its access tokens are refused from now on by every node, and
/// its WebSockets close with 4003, on whichever node holds them.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "revoked"), (status = 401, body = protocol::rest::Problem, description = "refresh_token_invalid"),
              (status = 503, body = protocol::rest::Problem, description = "unavailable: the session's refresh tokens are revoked, but the shared state (cluster: Redis) or the bus could not be told, so its access tokens and sockets may live on until the tokens expire")))]
pub async fn logout(state: web::Data<AppState>, body: web::Json<RefreshRequest>) -> Result<HttpResponse, ApiError> {
    let hash = token_hash(&body.refresh_token);
    let Some(ended) = state.engine.stores().tokens.revoke_family_of(&hash, engine::now_ms()).await? else {
        return Err(ApiError::RefreshTokenInvalid);
    };
    state.end_sessions(UserId(ended.user_id), &[ended.family_id]).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Log out every other device: ends every login session of the caller but
/// the one making the request. Their refresh tokens stop working, their
/// access tokens are refused from now on by every node, and their
/// WebSockets close with 4003, on whichever node holds them.
#[utoipa::path(post, path = "/api/v1/auth/logout-others", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = LoggedOutOthers), (status = 401, body = protocol::rest::Problem, description = "unauthorized"),
              (status = 503, body = protocol::rest::Problem, description = "unavailable: the sessions' refresh tokens are revoked, but the shared state (cluster: Redis) or the bus could not be told, so their access tokens and sockets may live on until the tokens expire")))]
pub async fn logout_others(user: AuthUser, state: web::Data<AppState>) -> Result<web::Json<LoggedOutOthers>, ApiError> {
    let keep = user.claims.session_id();
    let ended = state.engine.stores().tokens.revoke_other_families(user.user_id.0, keep, engine::now_ms()).await?;
    state.end_sessions(user.user_id, &ended).await?;
    tracing::info!(user_id = %user.user_id, sessions = ended.len(), "other sessions logged out");
    Ok(web::Json(LoggedOutOthers { sessions_ended: ended.len() as u32 }))
}

/// A one-time ticket to open the WebSocket from a browser.
#[utoipa::path(post, path = "/api/v1/auth/ws-ticket", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = WsTicketResponse), (status = 401, body = protocol::rest::Problem, description = "unauthorized"),
              (status = 503, body = protocol::rest::Problem, description = "unavailable: the ticket store cannot be reached, or (cluster) no node owns the user's shard right now")))]
pub async fn ws_ticket(user: AuthUser, state: web::Data<AppState>) -> Result<web::Json<WsTicketResponse>, ApiError> {
    let ttl = state.config.auth.ws_ticket_ttl_secs;
    // Cluster mode: the client must connect to the node that owns its shard.
    let url = state.engine.home_of(user.user_id).await?.map(|home| websocket_url(&home));
    let ticket = state.tickets.issue(&user.claims, Duration::from_secs(ttl)).await?;
    Ok(web::Json(WsTicketResponse { ticket, expires_in: ttl, url }))
}

/// The WebSocket endpoint of a node with base URL `base` (`http[s]://…`).
fn websocket_url(base: &str) -> String {
    let endpoint = format!("{base}{}/ws", protocol::API_PREFIX);
    match endpoint.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => endpoint.strip_prefix("http://").map_or(endpoint.clone(), |rest| format!("ws://{rest}")),
    }
}

/// The public keys that verify access tokens (JWK Set, Ed25519).
#[utoipa::path(get, path = "/api/v1/auth/jwks", tag = "auth", responses((status = 200, description = "JWK Set")))]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().insert_header(("Cache-Control", "public, max-age=300")).json(state.keys.jwks())
}

/// Re-hashes a password under the current pepper after a login proved it.
/// A failure only postpones the upgrade to the next login.
async fn rehash(state: &web::Data<AppState>, user_id: i64, password: String) {
    let stored = match state.hash_password(password).await {
        Ok((hash, version)) => {
            state.engine.stores().users.set_password_hash(user_id, hash, version).await.map_err(ApiError::from)
        }
        Err(error) => Err(error),
    };
    match stored {
        Ok(()) => tracing::info!(user_id, "password re-hashed under the current pepper"),
        Err(error) => tracing::warn!(user_id, %error, "storing a re-hashed password failed"),
    }
}

fn new_refresh(auth: &AuthConfig, token: &str, now: i64) -> NewRefreshToken {
    let ttl_ms = auth.refresh_token_ttl_secs.saturating_mul(1000) as i64;
    NewRefreshToken { hash: token_hash(token), expires_at_ms: now + ttl_ms, created_at_ms: now }
}

fn issue_tokens(
    keys: &TokenKeys,
    user_id: i64,
    family_id: i64,
    refresh_token: String,
    access_ttl: Duration,
) -> Result<TokenResponse, ApiError> {
    let access_token = keys.issue(user_id, family_id, access_ttl).map_err(ApiError::internal)?;
    Ok(TokenResponse {
        access_token,
        refresh_token,
        token_type: "Bearer".into(),
        expires_in: access_ttl.as_secs(),
        user_id: UserId(user_id),
    })
}

/// Checks a username and returns its case-folded key.
pub(crate) fn validate_username(username: &str) -> Result<String, ApiError> {
    let len = username.chars().count();
    let charset_ok = username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !USERNAME_LEN.contains(&len) || !charset_ok {
        return Err(ApiError::InvalidField(format!(
            "username must be {}-{} characters of a-z, 0-9, '_', '.', '-'",
            USERNAME_LEN.start(),
            USERNAME_LEN.end()
        )));
    }
    Ok(username.to_ascii_lowercase())
}

pub(crate) fn validate_display_name(display_name: &str) -> Result<String, ApiError> {
    let trimmed = display_name.trim();
    let len = trimmed.chars().count();
    if !DISPLAY_NAME_LEN.contains(&len) || trimmed.chars().any(char::is_control) {
        return Err(ApiError::InvalidField(format!(
            "display_name must be {}-{} characters without control characters",
            DISPLAY_NAME_LEN.start(),
            DISPLAY_NAME_LEN.end()
        )));
    }
    Ok(trimmed.to_string())
}

pub(crate) fn validate_password(password: &str) -> Result<(), ApiError> {
    if PASSWORD_LEN.contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::InvalidField(format!(
            "password must be {}-{} characters",
            PASSWORD_LEN.start(),
            PASSWORD_LEN.end()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_validated_and_case_folded() {
        assert_eq!(validate_username("Alice_01").ok(), Some("alice_01".to_string()));
        for bad in ["al", "a b c", "ålice", "x".repeat(33).as_str(), "bob!", ""] {
            assert!(validate_username(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn display_names_are_trimmed_and_checked() {
        assert_eq!(validate_display_name("  Alice  ").ok(), Some("Alice".to_string()));
        assert!(validate_display_name("   ").is_err());
        assert!(validate_display_name("bell\u{7}").is_err());
    }
}
