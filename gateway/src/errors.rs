//! The one place that maps errors to stable wire codes: HTTP problem+json
//! for REST and `error` frame codes for the WebSocket.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use engine::cluster::ClusterError;
use engine::{EngineError, GroupError};
use protocol::rest::Problem;
use protocol::ws::ErrorCode;

/// A REST failure with its stable code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidField(String),
    /// An upload that is not a decodable PNG, JPEG, WebP or GIF within the limits.
    #[error("{0}")]
    InvalidImage(String),
    /// A request body over its documented limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("username is taken")]
    UsernameTaken,
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("refresh token is invalid or expired")]
    RefreshTokenInvalid,
    #[error("refresh token was already used; every session of this login is revoked")]
    RefreshTokenReused,
    #[error("the WebSocket subprotocol must be {}", protocol::WS_SUBPROTOCOL)]
    UnsupportedProtocol,
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Relation(#[from] storage::IllegalTransition),
    #[error(transparent)]
    Group(#[from] engine::GroupError),
    #[error("no such resource")]
    NotFound,
    #[error("user not found")]
    UserNotFound,
    #[error("chat not found")]
    ChatNotFound,
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    /// A contact-change code did not match.
    #[error("wrong code; {attempts_left} attempt(s) left")]
    InvalidCode { attempts_left: u32 },
    #[error("the code has expired; request a new one")]
    CodeExpired,
    #[error("too many wrong codes; request a new one")]
    TooManyAttempts,
    #[error("no change is pending; request a code first")]
    NoPendingChange,
    #[error("this address is confirmed on another account")]
    ContactTaken,
    /// A notifier (SMTP, SMS webhook, outbox) failed; the cause is logged.
    #[error("the code could not be delivered; try again later")]
    DeliveryFailed,
    #[error("the server is not ready")]
    Unavailable,
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidField(_) => "invalid_field",
            ApiError::InvalidImage(_) => "invalid_image",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UsernameTaken => "username_taken",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::RefreshTokenInvalid => "refresh_token_invalid",
            ApiError::RefreshTokenReused => "refresh_token_reused",
            ApiError::UnsupportedProtocol => "unsupported_protocol",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Relation(illegal) => relation_code(illegal),
            ApiError::Group(refused) => group_code(refused),
            ApiError::NotFound => "not_found",
            ApiError::UserNotFound => "user_not_found",
            ApiError::ChatNotFound => "chat_not_found",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::InvalidCode { .. } => "invalid_code",
            ApiError::CodeExpired => "code_expired",
            ApiError::TooManyAttempts => "too_many_attempts",
            ApiError::NoPendingChange => "no_pending_change",
            ApiError::ContactTaken => "contact_taken",
            ApiError::DeliveryFailed => "delivery_failed",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Maps an internal failure, logging its cause (never sent to clients).
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        ApiError::Internal(error.to_string())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::UnsupportedProtocol => StatusCode::BAD_REQUEST,
            ApiError::InvalidField(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InvalidImage(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UsernameTaken => StatusCode::CONFLICT,
            ApiError::InvalidCredentials
            | ApiError::Unauthorized(_)
            | ApiError::RefreshTokenInvalid
            | ApiError::RefreshTokenReused => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Relation(storage::IllegalTransition::Yourself) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Relation(storage::IllegalTransition::BlockedByOther) => StatusCode::FORBIDDEN,
            ApiError::Relation(_) => StatusCode::CONFLICT,
            ApiError::Group(GroupError::NotAMember(_)) => StatusCode::NOT_FOUND,
            ApiError::Group(GroupError::NotAFriend(_)) => StatusCode::FORBIDDEN,
            ApiError::Group(_) => StatusCode::CONFLICT,
            ApiError::NotFound | ApiError::UserNotFound | ApiError::ChatNotFound => StatusCode::NOT_FOUND,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::InvalidCode { .. } | ApiError::TooManyAttempts => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::CodeExpired => StatusCode::GONE,
            ApiError::NoPendingChange => StatusCode::NOT_FOUND,
            ApiError::ContactTaken => StatusCode::CONFLICT,
            ApiError::DeliveryFailed => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let retry_after = match self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let detail = match self {
            ApiError::Internal(_) => None,
            other => Some(other.to_string()),
        };
        let problem = Problem {
            type_uri: format!("https://parley.chat/problems/{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            code: self.code().to_string(),
            detail,
            retry_after,
        };
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        if let Some(secs) = retry_after {
            response.insert_header(("Retry-After", secs.to_string()));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", "Bearer realm=\"parley\""));
        }
        response.json(problem)
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::ChatNotFound => ApiError::ChatNotFound,
            EngineError::MessageNotFound => ApiError::NotFound,
            EngineError::EditClosed(why) => ApiError::Forbidden(why),
            EngineError::UserNotFound => ApiError::UserNotFound,
            EngineError::Forbidden(why) => ApiError::Forbidden(why),
            EngineError::InvalidField(why) => ApiError::InvalidField(why),
            EngineError::ClientMsgIdConflict => ApiError::InvalidField(error.to_string()),
            EngineError::Relation(illegal) => ApiError::Relation(illegal),
            EngineError::Group(refused) => ApiError::Group(refused),
            EngineError::RateLimited { retry_after_ms } => {
                ApiError::RateLimited { retry_after_secs: retry_after_ms.div_ceil(1000) }
            }
            EngineError::Cluster(error) => error.into(),
            // A shard between owners, or its owner unreachable: retry shortly.
            EngineError::Moved | EngineError::Unavailable => ApiError::Unavailable,
            EngineError::Ids(engine::ids::IdError::NoLease) => {
                tracing::warn!("refused: no valid generator lease");
                ApiError::Unavailable
            }
            other => ApiError::internal(other),
        }
    }
}

/// Shared state (Redis) unreachable: the client may retry shortly.
impl From<ClusterError> for ApiError {
    fn from(error: ClusterError) -> Self {
        tracing::warn!(%error, "shared state unavailable");
        ApiError::Unavailable
    }
}

impl From<storage::StorageError> for ApiError {
    fn from(error: storage::StorageError) -> Self {
        ApiError::internal(error)
    }
}

/// The stable code of an illegal friendship or block transition.
fn relation_code(illegal: &storage::IllegalTransition) -> &'static str {
    use storage::IllegalTransition::*;
    match illegal {
        Yourself => "relation_with_yourself",
        AlreadyFriends => "already_friends",
        AlreadyRequested => "already_requested",
        NoRequestToAnswer => "no_request_to_answer",
        OwnRequest => "own_request",
        NoRequestToCancel => "no_request_to_cancel",
        NotFriends => "not_friends",
        BlockedByOther => "blocked_by_user",
        YouBlock => "you_block_user",
        AlreadyBlocked => "already_blocked",
        NotBlocked => "not_blocked",
    }
}

/// The stable code of a refused group change.
fn group_code(refused: &GroupError) -> &'static str {
    match refused {
        GroupError::AlreadyMember(_) => "already_member",
        GroupError::NotAMember(_) => "not_a_member",
        GroupError::GroupFull(_) => "group_full",
        GroupError::TooManyGroups(_) => "too_many_groups",
        GroupError::OwnerMustTransfer => "owner_must_transfer",
        GroupError::NotAFriend(_) => "not_a_friend",
    }
}

/// The `error` frame code of an engine failure.
pub fn frame_code(error: &EngineError) -> ErrorCode {
    match error {
        EngineError::ChatNotFound | EngineError::UserNotFound => ErrorCode::ChatNotFound,
        EngineError::MessageNotFound => ErrorCode::MessageNotFound,
        EngineError::EditClosed(_) => ErrorCode::EditClosed,
        EngineError::Forbidden(_) | EngineError::Relation(_) | EngineError::Group(_) => ErrorCode::Forbidden,
        EngineError::InvalidField(_) => ErrorCode::InvalidField,
        EngineError::ClientMsgIdConflict => ErrorCode::ClientMsgIdConflict,
        EngineError::RateLimited { .. } => ErrorCode::RateLimited,
        // The shared state (Redis) unreachable, a shard between owners, no
        // valid generator lease: all pass; retrying is the answer.
        EngineError::Unavailable
        | EngineError::Moved
        | EngineError::Cluster(_)
        | EngineError::Ids(engine::ids::IdError::NoLease) => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

/// `retry_after_ms` of the error frame for `error`: how long to wait
/// before sending the same frame again; `None` if waiting would not help.
pub fn frame_retry_after_ms(error: &EngineError) -> Option<u64> {
    match (error, frame_code(error)) {
        (EngineError::RateLimited { retry_after_ms }, _) => Some(*retry_after_ms),
        (_, ErrorCode::Unavailable) => Some(UNAVAILABLE_RETRY_MS),
        _ => None,
    }
}

/// `retry_after_ms` of an `unavailable` error: about how long a shard
/// takes to find its next owner after a node fails.
const UNAVAILABLE_RETRY_MS: u64 = 500;

/// Turns extractor failures (bad JSON, bad path or query) into problem+json.
pub fn json_error(error: actix_web::error::JsonPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid JSON body: {error}")).into()
}

pub fn query_error(error: actix_web::error::QueryPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query: {error}")).into()
}

pub fn path_error(error: actix_web::error::PathError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid path: {error}")).into()
}
