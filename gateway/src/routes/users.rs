//! `/api/v1/me` and `/api/v1/users/{user_id}`.

use actix_web::web;
use protocol::UserId;
use protocol::rest::UserView;
use storage::UserRecord;

use crate::errors::ApiError;
use crate::state::{AppState, AuthUser};

/// The caller's own account.
#[utoipa::path(get, path = "/api/v1/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = protocol::rest::Problem, description = "unauthorized")))]
pub async fn me(user: AuthUser, state: web::Data<AppState>) -> Result<web::Json<UserView>, ApiError> {
    let record = state.engine.stores().users.user_by_id(user.user_id.0).await?.ok_or(ApiError::UserNotFound)?;
    Ok(web::Json(user_view(&record)))
}

/// A user's public profile.
#[utoipa::path(get, path = "/api/v1/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User ID")),
    responses((status = 200, body = UserView), (status = 404, body = protocol::rest::Problem, description = "user_not_found")))]
pub async fn user(
    _user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<UserId>,
) -> Result<web::Json<UserView>, ApiError> {
    let record = state.engine.stores().users.user_by_id(path.0).await?.ok_or(ApiError::UserNotFound)?;
    Ok(web::Json(user_view(&record)))
}

/// The public view of a stored user.
pub fn user_view(record: &UserRecord) -> UserView {
    UserView {
        id: UserId(record.id),
        username: record.username.clone(),
        display_name: record.display_name.clone(),
        created_at: record.created_at_ms,
    }
}
