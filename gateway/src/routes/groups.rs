//! `/api/v1/chats/...` for groups: creation, name and avatar, members and
//! roles, and who has received or read a message.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use engine::GroupCommand;
use protocol::rest::{
    AddMembers, ChatMember, ChatSummary, CreateGroup, GroupPatch, MemberList, MessageReceipts, Role, SetRole,
    TransferOwnership,
};
use protocol::{ChatId, MessageId, UserId};
use storage::UserRecord;

use crate::avatars::AvatarPermits;
use crate::errors::ApiError;
use crate::routes::avatars::{delete_files, upload_avatar};
use crate::routes::chats::summary;
use crate::routes::users::user_view;
use crate::state::{AppState, AuthUser};

/// Create a group: the caller owns it; every other member must be a friend of the caller.
#[utoipa::path(post, path = "/api/v1/chats/groups", tag = "groups", security(("bearer" = [])), request_body = CreateGroup,
    responses((status = 201, body = ChatSummary),
              (status = 403, body = protocol::rest::Problem, description = "not_a_friend"),
              (status = 409, body = protocol::rest::Problem, description = "too_many_groups"),
              (status = 422, body = protocol::rest::Problem, description = "invalid_field")))]
pub async fn create(
    user: AuthUser,
    state: web::Data<AppState>,
    body: web::Json<CreateGroup>,
) -> Result<HttpResponse, ApiError> {
    let CreateGroup { name, members } = body.into_inner();
    let created = state.engine.create_group(user.user_id, name, members).await?;
    let summary = summary(&state, user.user_id, ChatId(created.chat.id)).await?;
    Ok(HttpResponse::Created().json(summary))
}

/// Rename a group (admins and the owner).
#[utoipa::path(patch, path = "/api/v1/chats/{chat_id}", tag = "groups", security(("bearer" = [])), request_body = GroupPatch,
    params(("chat_id" = String, Path, description = "Chat ID")),
    responses((status = 200, body = ChatSummary), (status = 403, body = protocol::rest::Problem, description = "forbidden"),
              (status = 404, body = protocol::rest::Problem, description = "chat_not_found")))]
pub async fn rename(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<ChatId>,
    body: web::Json<GroupPatch>,
) -> Result<web::Json<ChatSummary>, ApiError> {
    change(&state, user.user_id, *path, GroupCommand::Rename(body.into_inner().name)).await
}

/// Set a group's avatar from an uploaded image (admins and the owner); the
/// image rules are those of `PUT /me/avatar`.
#[utoipa::path(put, path = "/api/v1/chats/{chat_id}/avatar", tag = "groups", security(("bearer" = [])),
    params(("chat_id" = String, Path, description = "Chat ID")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The image bytes, at most 5 MiB"),
    responses((status = 200, body = ChatSummary), (status = 403, body = protocol::rest::Problem, description = "forbidden"),
              (status = 413, body = protocol::rest::Problem, description = "payload_too_large"),
              (status = 422, body = protocol::rest::Problem, description = "invalid_image")))]
pub async fn put_avatar(
    user: AuthUser,
    req: HttpRequest,
    state: web::Data<AppState>,
    permits: web::Data<AvatarPermits>,
    path: web::Path<ChatId>,
    payload: web::Payload,
) -> Result<web::Json<ChatSummary>, ApiError> {
    // Permission is checked before the upload is read, and again when applied.
    let chat_id = *path;
    let overview = state.engine.chat_overview(user.user_id, chat_id).await?;
    if overview.chat.role_of(user.user_id.0) < Some(storage::Role::Admin) || overview.chat.group.is_none() {
        return Err(ApiError::Forbidden("only admins can change the group's avatar".into()));
    }
    let key = upload_avatar(&req, &state, &permits, payload, user.user_id, chat_id.0).await?;
    let media = state.engine.stores().media.clone();
    match state.engine.change_group(user.user_id, chat_id, GroupCommand::SetAvatar(Some(key.clone()))).await {
        Ok(changed) => {
            if let Some(previous) = changed.previous_avatar {
                delete_files(media.as_ref(), &previous).await;
            }
            summary(&state, user.user_id, chat_id).await.map(web::Json)
        }
        Err(error) => {
            delete_files(media.as_ref(), &key).await;
            Err(error.into())
        }
    }
}

/// Remove a group's avatar (admins and the owner).
#[utoipa::path(delete, path = "/api/v1/chats/{chat_id}/avatar", tag = "groups", security(("bearer" = [])),
    params(("chat_id" = String, Path, description = "Chat ID")),
    responses((status = 200, body = ChatSummary), (status = 403, body = protocol::rest::Problem, description = "forbidden")))]
pub async fn delete_avatar(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<ChatId>,
) -> Result<web::Json<ChatSummary>, ApiError> {
    change(&state, user.user_id, *path, GroupCommand::SetAvatar(None)).await
}

/// Every member of a chat with their role.
#[utoipa::path(get, path = "/api/v1/chats/{chat_id}/members", tag = "groups", security(("bearer" = [])),
    params(("chat_id" = String, Path, description = "Chat ID")),
    responses((status = 200, body = MemberList), (status = 404, body = protocol::rest::Problem, description = "chat_not_found")))]
pub async fn members(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<ChatId>,
) -> Result<web::Json<MemberList>, ApiError> {
    let members = state.engine.members(user.user_id, *path).await?;
    let ids: Vec<i64> = members.iter().map(|member| member.user_id).collect();
    let users: HashMap<i64, UserRecord> =
        state.engine.stores().users.users_by_ids(&ids).await?.into_iter().map(|u| (u.id, u)).collect();
    let members = members
        .iter()
        .filter_map(|member| {
            Some(ChatMember {
                user: user_view(users.get(&member.user_id)?),
                role: engine::policy::role_view(member.role),
                joined_at: member.joined_at_ms,
            })
        })
        .collect();
    Ok(web::Json(MemberList { members }))
}

/// Add friends of the caller to a group (admins and the owner). They see
/// the group's history from this point on.
#[utoipa::path(post, path = "/api/v1/chats/{chat_id}/members", tag = "groups", security(("bearer" = [])), request_body = AddMembers,
    params(("chat_id" = String, Path, description = "Chat ID")),
    responses((status = 200, body = ChatSummary),
              (status = 403, body = protocol::rest::Problem, description = "forbidden, not_a_friend"),
              (status = 409, body = protocol::rest::Problem, description = "already_member, group_full, too_many_groups")))]
pub async fn add_members(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<ChatId>,
    body: web::Json<AddMembers>,
) -> Result<web::Json<ChatSummary>, ApiError> {
    let users = body.into_inner().members.into_iter().map(|user| user.0).collect();
    change(&state, user.user_id, *path, GroupCommand::AddMembers(users)).await
}

/// Remove a member (admins remove members, the owner anyone), or leave
/// when the path names the caller. The owner leaves only as the last member.
#[utoipa::path(delete, path = "/api/v1/chats/{chat_id}/members/{user_id}", tag = "groups", security(("bearer" = [])),
    params(("chat_id" = String, Path, description = "Chat ID"), ("user_id" = String, Path, description = "Member to remove; yourself to leave")),
    responses((status = 204, description = "removed"), (status = 403, body = protocol::rest::Problem, description = "forbidden"),
              (status = 404, body = protocol::rest::Problem, description = "chat_not_found, not_a_member"),
              (status = 409, body = protocol::rest::Problem, description = "owner_must_transfer")))]
pub async fn remove_member(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<(ChatId, UserId)>,
) -> Result<HttpResponse, ApiError> {
    let (chat_id, member) = path.into_inner();
    state.engine.change_group(user.user_id, chat_id, GroupCommand::RemoveMember(member.0)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Make a member an admin or a plain member (the owner).
#[utoipa::path(put, path = "/api/v1/chats/{chat_id}/members/{user_id}/role", tag = "groups", security(("bearer" = [])), request_body = SetRole,
    params(("chat_id" = String, Path, description = "Chat ID"), ("user_id" = String, Path, description = "Member")),
    responses((status = 200, body = ChatSummary), (status = 403, body = protocol::rest::Problem, description = "forbidden"),
              (status = 404, body = protocol::rest::Problem, description = "not_a_member"),
              (status = 422, body = protocol::rest::Problem, description = "invalid_field: owner is not a role to give")))]
pub async fn set_role(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<(ChatId, UserId)>,
    body: web::Json<SetRole>,
) -> Result<web::Json<ChatSummary>, ApiError> {
    let (chat_id, member) = path.into_inner();
    let role = match body.role {
        Role::Admin => storage::Role::Admin,
        Role::Member => storage::Role::Member,
        Role::Owner => storage::Role::Owner,
    };
    change(&state, user.user_id, chat_id, GroupCommand::SetRole { user_id: member.0, role }).await
}

/// Make another member the owner (the owner); the caller becomes an admin.
#[utoipa::path(post, path = "/api/v1/chats/{chat_id}/owner", tag = "groups", security(("bearer" = [])), request_body = TransferOwnership,
    params(("chat_id" = String, Path, description = "Chat ID")),
    responses((status = 200, body = ChatSummary), (status = 403, body = protocol::rest::Problem, description = "forbidden"),
              (status = 404, body = protocol::rest::Problem, description = "not_a_member")))]
pub async fn transfer(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<ChatId>,
    body: web::Json<TransferOwnership>,
) -> Result<web::Json<ChatSummary>, ApiError> {
    change(&state, user.user_id, *path, GroupCommand::TransferOwnership(body.user_id.0)).await
}

/// Which other members have received and read a message (from their watermarks).
#[utoipa::path(get, path = "/api/v1/chats/{chat_id}/messages/{message_id}/receipts", tag = "chats", security(("bearer" = [])),
    params(("chat_id" = String, Path, description = "Chat ID"), ("message_id" = String, Path, description = "Message ID")),
    responses((status = 200, body = MessageReceipts), (status = 404, body = protocol::rest::Problem, description = "chat_not_found, not_found")))]
pub async fn receipts(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<(ChatId, MessageId)>,
) -> Result<web::Json<MessageReceipts>, ApiError> {
    let (chat_id, message_id) = path.into_inner();
    let (delivered, seen) = state.engine.message_receipts(user.user_id, chat_id, message_id).await?;
    Ok(web::Json(MessageReceipts { message_id, delivered, seen }))
}

/// Applies a group command and answers with the caller's summary of the chat.
async fn change(
    state: &AppState,
    user_id: UserId,
    chat_id: ChatId,
    command: GroupCommand,
) -> Result<web::Json<ChatSummary>, ApiError> {
    state.engine.change_group(user_id, chat_id, command).await?;
    summary(state, user_id, chat_id).await.map(web::Json)
}
