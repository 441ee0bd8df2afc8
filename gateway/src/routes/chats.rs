//! `/api/v1/chats`: the chat list, opening 1:1 chats, history pages.

use std::collections::HashMap;

use actix_web::web;
use protocol::limits::DEFAULT_HISTORY_PAGE;
use protocol::rest::{
    ChatKind, ChatList, ChatSummary, GroupInfo, HistoryQuery, MemberReceipts, MessagePage, OpenDirectChat,
};
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
    let chats = summaries(&state, user.user_id, overviews).await?;
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
    summary(&state, user.user_id, ChatId(chat.id)).await.map(web::Json)
}

/// One chat of the caller, as in the chat list.
#[utoipa::path(get, path = "/api/v1/chats/{chat_id}", tag = "chats", security(("bearer" = [])),
    params(("chat_id" = String, Path, description = "Chat ID")),
    responses((status = 200, body = ChatSummary), (status = 404, body = protocol::rest::Problem, description = "chat_not_found")))]
pub async fn get(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<ChatId>,
) -> Result<web::Json<ChatSummary>, ApiError> {
    summary(&state, user.user_id, *path).await.map(web::Json)
}

/// The caller's summary of one chat they are a member of.
pub async fn summary(state: &AppState, user_id: UserId, chat_id: ChatId) -> Result<ChatSummary, ApiError> {
    let overview = state.engine.chat_overview(user_id, chat_id).await?;
    let mut summaries = summaries(state, user_id, vec![overview]).await?;
    summaries.pop().ok_or(ApiError::ChatNotFound)
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
async fn summaries(
    state: &AppState,
    viewer: UserId,
    overviews: Vec<ChatOverview>,
) -> Result<Vec<ChatSummary>, ApiError> {
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
                storage::ChatKind::Group => ChatKind::Group,
            },
            members: match overview.chat.kind {
                storage::ChatKind::Direct => {
                    overview.chat.members.iter().filter_map(|id| users.get(id)).map(user_view).collect()
                }
                storage::ChatKind::Group => Vec::new(),
            },
            group: overview.chat.group.as_ref().map(|group| GroupInfo {
                name: group.name.clone(),
                avatar: group.avatar.as_deref().map(crate::avatars::avatar_urls),
                member_count: group.member_count,
                owner_id: UserId(group.owner),
                role: engine::policy::role_view(overview.chat.role_of(viewer.0).unwrap_or(storage::Role::Member)),
            }),
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
