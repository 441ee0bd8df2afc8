//! `/api/v1/me`, `/api/v1/users/{user_id}` and `/api/v1/users/search`.

use actix_web::web;
use protocol::UserId;
use protocol::limits::{DEFAULT_SEARCH_PAGE, MAX_BIO_CHARS, MAX_SEARCH_CHARS, MAX_SEARCH_OFFSET, MAX_SEARCH_PAGE};
use protocol::rest::{
    OwnProfile, PresenceChoice, PresenceSetting, ProfilePatch, SearchHit, SearchQuery, SearchResults, UserView,
};
use storage::{ProfileUpdate, StorageError, UserRecord};

use crate::errors::ApiError;
use crate::routes::auth::validate_display_name;
use crate::state::{AppState, AuthUser};

/// The caller's own profile, with private contact details.
#[utoipa::path(get, path = "/api/v1/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = OwnProfile), (status = 401, body = protocol::rest::Problem, description = "unauthorized")))]
pub async fn me(user: AuthUser, state: web::Data<AppState>) -> Result<web::Json<OwnProfile>, ApiError> {
    let record = state.engine.stores().users.user_by_id(user.user_id.0).await?.ok_or(ApiError::UserNotFound)?;
    Ok(web::Json(own_profile(&record)))
}

/// Change the caller's display name or bio (the username never changes).
#[utoipa::path(patch, path = "/api/v1/me", tag = "users", security(("bearer" = [])), request_body = ProfilePatch,
    responses((status = 200, body = OwnProfile), (status = 422, body = protocol::rest::Problem, description = "invalid_field")))]
pub async fn update_me(
    user: AuthUser,
    state: web::Data<AppState>,
    body: web::Json<ProfilePatch>,
) -> Result<web::Json<OwnProfile>, ApiError> {
    let ProfilePatch { display_name, bio } = body.into_inner();
    let display_name = display_name.as_deref().map(validate_display_name).transpose()?;
    let bio = bio.as_deref().map(validate_bio).transpose()?;
    let update = ProfileUpdate { display_name, bio };
    match state.engine.stores().users.update_profile(user.user_id.0, update).await {
        Ok(record) => Ok(web::Json(own_profile(&record))),
        Err(StorageError::NotFound(_)) => Err(ApiError::UserNotFound),
        Err(error) => Err(error.into()),
    }
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

/// Find people by username or display name: case- and accent-insensitive,
/// exact matches first, then prefixes, then substrings. Queries shorter than
/// three characters match prefixes only.
#[utoipa::path(get, path = "/api/v1/users/search", tag = "users", security(("bearer" = [])), params(SearchQuery),
    responses((status = 200, body = SearchResults), (status = 422, body = protocol::rest::Problem, description = "invalid_field"),
              (status = 429, body = protocol::rest::Problem, description = "rate_limited")))]
pub async fn search(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<SearchQuery>,
) -> Result<web::Json<SearchResults>, ApiError> {
    let q = query.q.trim();
    if q.is_empty() || q.chars().count() > MAX_SEARCH_CHARS {
        return Err(ApiError::InvalidField(format!("q must be 1-{MAX_SEARCH_CHARS} characters")));
    }
    let limit = query.limit.unwrap_or(DEFAULT_SEARCH_PAGE);
    if limit == 0 || limit > MAX_SEARCH_PAGE {
        return Err(ApiError::InvalidField(format!("limit must be 1-{MAX_SEARCH_PAGE}")));
    }
    let offset = query.offset.unwrap_or(0);
    if offset > MAX_SEARCH_OFFSET {
        return Err(ApiError::InvalidField(format!("offset must be at most {MAX_SEARCH_OFFSET}")));
    }
    state.check_rate(&state.searches, user.user_id.0).await?;
    let found = state.engine.search_users(user.user_id, q, limit, offset).await?;
    let ids: Vec<i64> = found.iter().map(|record| record.id).collect();
    let relations: std::collections::HashMap<i64, storage::Relation> =
        state.engine.stores().relations.relations_with(user.user_id.0, &ids).await?.into_iter().collect();
    let users = found
        .iter()
        .map(|record| SearchHit {
            user: user_view(record),
            relation: engine::relation_state(relations.get(&record.id).copied().unwrap_or_default()),
        })
        .collect();
    Ok(web::Json(SearchResults { users }))
}

/// The public view of a stored user.
pub fn user_view(record: &UserRecord) -> UserView {
    UserView {
        id: UserId(record.id),
        username: record.username.clone(),
        display_name: record.display_name.clone(),
        bio: record.bio.clone(),
        avatar: record.avatar.as_deref().map(crate::avatars::avatar_urls),
        created_at: record.created_at_ms,
    }
}

fn own_profile(record: &UserRecord) -> OwnProfile {
    let status = match record.presence {
        storage::PresenceChoice::Auto => PresenceChoice::Auto,
        storage::PresenceChoice::Away => PresenceChoice::Away,
        storage::PresenceChoice::Busy => PresenceChoice::Busy,
        storage::PresenceChoice::Invisible => PresenceChoice::Invisible,
    };
    OwnProfile {
        user: user_view(record),
        email: record.email.clone(),
        phone: record.phone.clone(),
        presence: PresenceSetting { status, status_text: record.status_text.clone() },
    }
}

/// Choose a presence (auto, away, busy or invisible) and a status text;
/// the people entitled to the caller's presence see the change.
#[utoipa::path(put, path = "/api/v1/me/presence", tag = "users", security(("bearer" = [])), request_body = PresenceSetting,
    responses((status = 200, body = PresenceSetting), (status = 422, body = protocol::rest::Problem, description = "invalid_field")))]
pub async fn set_presence(
    user: AuthUser,
    state: web::Data<AppState>,
    body: web::Json<PresenceSetting>,
) -> Result<web::Json<PresenceSetting>, ApiError> {
    let PresenceSetting { status, status_text } = body.into_inner();
    let choice = match status {
        PresenceChoice::Auto => storage::PresenceChoice::Auto,
        PresenceChoice::Away => storage::PresenceChoice::Away,
        PresenceChoice::Busy => storage::PresenceChoice::Busy,
        PresenceChoice::Invisible => storage::PresenceChoice::Invisible,
    };
    state.engine.set_presence(user.user_id, choice, status_text.clone()).await?;
    Ok(web::Json(PresenceSetting { status, status_text: status_text.trim().to_owned() }))
}

fn validate_bio(bio: &str) -> Result<String, ApiError> {
    let bio = bio.trim();
    if bio.chars().count() > MAX_BIO_CHARS || bio.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::InvalidField(format!(
            "bio must be at most {MAX_BIO_CHARS} characters without control characters"
        )));
    }
    Ok(bio.to_string())
}
