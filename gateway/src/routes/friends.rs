//! `/api/v1/friends` and `/api/v1/blocks`: friend requests, friendships
//! and blocks, each change pushed to both users' devices.

use actix_web::web;
use protocol::UserId;
use protocol::limits::{DEFAULT_RELATION_PAGE, MAX_RELATION_PAGE};
use protocol::rest::{FriendRequest, PageQuery, RelatedUser, RelatedUserPage, RelationStatus};
use storage::{Relation, RelationAction, RelationEntry};

use crate::errors::ApiError;
use crate::routes::users::user_view;
use crate::state::{AppState, AuthUser};

/// Ask a user to be friends. If they already asked you, you are now friends.
#[utoipa::path(post, path = "/api/v1/friends/requests", tag = "friends", security(("bearer" = [])), request_body = FriendRequest,
    responses((status = 200, body = RelationStatus),
              (status = 409, body = protocol::rest::Problem, description = "already_friends, already_requested, you_block_user"),
              (status = 403, body = protocol::rest::Problem, description = "blocked_by_user"),
              (status = 404, body = protocol::rest::Problem, description = "user_not_found")))]
pub async fn request(
    user: AuthUser,
    state: web::Data<AppState>,
    body: web::Json<FriendRequest>,
) -> Result<web::Json<RelationStatus>, ApiError> {
    relate(&state, user.user_id, body.user_id, RelationAction::Request).await
}

/// Cancel your pending request to a user.
#[utoipa::path(delete, path = "/api/v1/friends/requests/{user_id}", tag = "friends", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User ID")),
    responses((status = 200, body = RelationStatus), (status = 409, body = protocol::rest::Problem, description = "no_request_to_cancel")))]
pub async fn cancel(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<UserId>,
) -> Result<web::Json<RelationStatus>, ApiError> {
    relate(&state, user.user_id, *path, RelationAction::Cancel).await
}

/// Accept a user's request.
#[utoipa::path(post, path = "/api/v1/friends/requests/{user_id}/accept", tag = "friends", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User ID")),
    responses((status = 200, body = RelationStatus),
              (status = 409, body = protocol::rest::Problem, description = "no_request_to_answer, own_request")))]
pub async fn accept(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<UserId>,
) -> Result<web::Json<RelationStatus>, ApiError> {
    relate(&state, user.user_id, *path, RelationAction::Accept).await
}

/// Decline a user's request.
#[utoipa::path(post, path = "/api/v1/friends/requests/{user_id}/decline", tag = "friends", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User ID")),
    responses((status = 200, body = RelationStatus),
              (status = 409, body = protocol::rest::Problem, description = "no_request_to_answer, own_request")))]
pub async fn decline(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<UserId>,
) -> Result<web::Json<RelationStatus>, ApiError> {
    relate(&state, user.user_id, *path, RelationAction::Decline).await
}

/// Stop being friends. Your chat's history stays readable.
#[utoipa::path(delete, path = "/api/v1/friends/{user_id}", tag = "friends", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User ID")),
    responses((status = 200, body = RelationStatus), (status = 409, body = protocol::rest::Problem, description = "not_friends")))]
pub async fn remove(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<UserId>,
) -> Result<web::Json<RelationStatus>, ApiError> {
    relate(&state, user.user_id, *path, RelationAction::Remove).await
}

/// Block a user: ends any friendship or request; they can no longer
/// message you, send you requests or find you in search.
#[utoipa::path(put, path = "/api/v1/blocks/{user_id}", tag = "friends", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User ID")),
    responses((status = 200, body = RelationStatus), (status = 409, body = protocol::rest::Problem, description = "already_blocked")))]
pub async fn block(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<UserId>,
) -> Result<web::Json<RelationStatus>, ApiError> {
    relate(&state, user.user_id, *path, RelationAction::Block).await
}

/// Unblock a user (this does not restore a friendship).
#[utoipa::path(delete, path = "/api/v1/blocks/{user_id}", tag = "friends", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User ID")),
    responses((status = 200, body = RelationStatus), (status = 409, body = protocol::rest::Problem, description = "not_blocked")))]
pub async fn unblock(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<UserId>,
) -> Result<web::Json<RelationStatus>, ApiError> {
    relate(&state, user.user_id, *path, RelationAction::Unblock).await
}

/// Your friends, newest friendship first.
#[utoipa::path(get, path = "/api/v1/friends", tag = "friends", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = RelatedUserPage)))]
pub async fn friends(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<RelatedUserPage>, ApiError> {
    page(&state, user.user_id, Some(Relation::Friends), &query).await
}

/// Requests other users sent you, newest first.
#[utoipa::path(get, path = "/api/v1/friends/requests/incoming", tag = "friends", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = RelatedUserPage)))]
pub async fn incoming(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<RelatedUserPage>, ApiError> {
    page(&state, user.user_id, Some(Relation::RequestReceived), &query).await
}

/// Requests you sent, newest first.
#[utoipa::path(get, path = "/api/v1/friends/requests/outgoing", tag = "friends", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = RelatedUserPage)))]
pub async fn outgoing(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<RelatedUserPage>, ApiError> {
    page(&state, user.user_id, Some(Relation::RequestSent), &query).await
}

/// Users you block, newest first.
#[utoipa::path(get, path = "/api/v1/blocks", tag = "friends", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = RelatedUserPage)))]
pub async fn blocked(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<RelatedUserPage>, ApiError> {
    page(&state, user.user_id, None, &query).await
}

async fn relate(
    state: &AppState,
    user: UserId,
    other: UserId,
    action: RelationAction,
) -> Result<web::Json<RelationStatus>, ApiError> {
    let view = state.engine.relate(user, other, action).await?;
    Ok(web::Json(RelationStatus {
        user_id: other,
        relation: engine::relation_state(view.relation),
        blocking: view.blocking,
    }))
}

async fn page(
    state: &AppState,
    user: UserId,
    relation: Option<Relation>,
    query: &PageQuery,
) -> Result<web::Json<RelatedUserPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_RELATION_PAGE);
    if limit == 0 || limit > MAX_RELATION_PAGE {
        return Err(ApiError::InvalidField(format!("limit must be 1-{MAX_RELATION_PAGE}")));
    }
    let after = query.after.as_deref().map(parse_cursor).transpose()?;
    let entries = state.engine.related_users(user, relation, after, limit).await?;
    let ids: Vec<i64> = entries.iter().map(|entry| entry.other).collect();
    let users: std::collections::HashMap<i64, _> =
        state.engine.stores().users.users_by_ids(&ids).await?.into_iter().map(|u| (u.id, u)).collect();
    let next_after = (entries.len() as u32 == limit).then(|| entries.last().map(format_cursor)).flatten();
    let users = entries
        .iter()
        .filter_map(|entry| {
            users.get(&entry.other).map(|record| RelatedUser { user: user_view(record), since: entry.since_ms })
        })
        .collect();
    Ok(web::Json(RelatedUserPage { users, next_after }))
}

/// Cursors are `<since_ms>.<user_id>`: opaque to clients.
fn format_cursor(entry: &RelationEntry) -> String {
    format!("{}.{}", entry.since_ms, entry.other)
}

fn parse_cursor(cursor: &str) -> Result<RelationEntry, ApiError> {
    cursor
        .split_once('.')
        .and_then(|(since, other)| Some(RelationEntry { since_ms: since.parse().ok()?, other: other.parse().ok()? }))
        .ok_or_else(|| ApiError::BadRequest("malformed cursor in `after`".into()))
}
