//! `/api/v1/chats`: the chat list, opening 1:1 chats, history pages.

use std::collections::HashMap;

use actix_web::web;
use protocol::limits::DEFAULT_HISTORY_PAGE;
use protocol::rest::{ChatKind, ChatList, ChatSummary, HistoryQuery, MemberReceipts, MessagePage, OpenDirectChat};
use protocol::{ChatId, MessageId, UserId};
use storage::{ChatOverview, UserRecord};

use crate::errors::ApiError;
use crate::routes::users::user_view;
use crate::state::{AppState, AuthUser};

/// The caller's chats, most recently active first, each with its newest message.
#[utoipa::path(get, path = "/api/v1/chats", tag = "chats", security(("bearer" = [])),
    responses((status = 200, body = ChatList), (status = 401, body = protocol::rest::Problem, description = "unauthorized")))]
pub async fn list(user: AuthUser, state: web::Data<AppState>) -> Result<web::Json<ChatList>, ApiError> {
    let overviews = state.engine.chats_of(user.user_id).await?;
    let chats = summaries(&state, overviews).await?;
    Ok(web::Json(ChatList { chats }))
}

/// Open the 1:1 chat with a user (created on first use; the same chat afterwards).
#[utoipa::path(post, path = "/api/v1/chats/direct", tag = "chats", security(("bearer" = [])), request_body = OpenDirectChat,
    responses((status = 200, body = ChatSummary), (status = 404, body = protocol::rest::Problem, description = "user_not_found"),
              (status = 422, body = protocol::rest::Problem, description = "invalid_field")))]
pub async fn open_direct(
    user: AuthUser,
    state: web::Data<AppState>,
    body: web::Json<OpenDirectChat>,
) -> Result<web::Json<ChatSummary>, ApiError> {
    let chat = state.engine.open_direct_chat(user.user_id, body.user_id).await?;
    let overview = state.engine.chats_of(user.user_id).await?.into_iter().filter(|o| o.chat.id == chat.id).collect();
    let mut summaries = summaries(&state, overview).await?;
    summaries.pop().map(web::Json).ok_or(ApiError::Internal("chat vanished".into()))
}

/// A page of a chat's messages, newest first.
#[utoipa::path(get, path = "/api/v1/chats/{chat_id}/messages", tag = "chats", security(("bearer" = [])),
    params(("chat_id" = String, Path, description = "Chat ID"), HistoryQuery),
    responses((status = 200, body = MessagePage), (status = 404, body = protocol::rest::Problem, description = "chat_not_found")))]
pub async fn history(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<ChatId>,
    query: web::Query<HistoryQuery>,
) -> Result<web::Json<MessagePage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY_PAGE);
    if limit == 0 || limit > protocol::limits::MAX_HISTORY_PAGE {
        return Err(ApiError::InvalidField(format!("limit must be 1-{}", protocol::limits::MAX_HISTORY_PAGE)));
    }
    let records = state.engine.history(user.user_id, *path, query.before, limit).await?;
    let next_before = (records.len() as u32 == limit).then(|| records.last().map(|m| MessageId(m.id))).flatten();
    let messages = records.iter().map(engine::message_view).collect();
    Ok(web::Json(MessagePage { messages, next_before }))
}

/// Resolves members of the chats to public user views with one lookup.
async fn summaries(state: &AppState, overviews: Vec<ChatOverview>) -> Result<Vec<ChatSummary>, ApiError> {
    let mut ids: Vec<i64> = overviews.iter().flat_map(|o| o.chat.members.iter().copied()).collect();
    ids.sort_unstable();
    ids.dedup();
    let users: HashMap<i64, UserRecord> =
        state.engine.stores().users.users_by_ids(&ids).await?.into_iter().map(|u| (u.id, u)).collect();
    Ok(overviews
        .into_iter()
        .map(|overview| ChatSummary {
            id: ChatId(overview.chat.id),
            kind: match overview.chat.kind {
                storage::ChatKind::Direct => ChatKind::Direct,
            },
            members: overview.chat.members.iter().filter_map(|id| users.get(id)).map(user_view).collect(),
            last_message: overview.last_message.as_ref().map(engine::message_view),
            unread: overview.unread,
            receipts: overview
                .receipts
                .iter()
                .map(|r| MemberReceipts {
                    user_id: UserId(r.user_id),
                    delivered_up_to: MessageId(r.delivered_up_to),
                    seen_up_to: MessageId(r.seen_up_to),
                })
                .collect(),
        })
        .collect())
}
