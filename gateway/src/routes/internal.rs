//! Endpoints one node calls on another (cluster mode), outside the public
//! API: authenticated by a peer token, never by a user's.

use actix_web::{HttpRequest, HttpResponse, web};
use engine::peers::{ChatCommand, RemoteError};
use protocol::ChatId;

use crate::errors::ApiError;
use crate::state::{AppState, bearer_token};

/// `POST /internal/v1/chats/{chat_id}/commands`: runs a chat command that
/// another node forwarded because this node owns the chat's shard. Answers
/// `Result<ChatReply, RemoteError>` as JSON; `{"Err":{"error":"moved"}}`
/// if the shard is not (or no longer) this node's.
pub async fn chat_command(
    req: HttpRequest,
    state: web::Data<AppState>,
    chat_id: web::Path<i64>,
    command: web::Json<ChatCommand>,
) -> Result<HttpResponse, ApiError> {
    let header = req.headers().get(actix_web::http::header::AUTHORIZATION).map(|value| value.to_str().unwrap_or(""));
    let peer = state
        .keys
        .verify_peer(bearer_token(header)?)
        .await
        .ok_or(ApiError::Unauthorized("invalid or expired peer token"))?;
    let chat_id = ChatId(chat_id.into_inner());
    let result = state.engine.run_chat_command(chat_id, command.into_inner()).await;
    if let Err(error) = &result {
        tracing::debug!(%peer, %chat_id, %error, "forwarded chat command refused");
    }
    Ok(HttpResponse::Ok().json(result.map_err(|error| RemoteError::from(&error))))
}
