//! `PUT`/`DELETE /api/v1/me/avatar` and the public `GET /api/v1/media/{key}`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use protocol::rest::AvatarUrls;
use storage::{MediaStore, StorageError};

use crate::avatars::{self, AvatarPermits, MAX_AVATAR_BYTES, THUMBNAIL_CONTENT_TYPE};
use crate::errors::ApiError;
use crate::state::{AppState, AuthUser};

/// `Cache-Control` of served media: keys are unique per upload, so what a
/// key names never changes.
const MEDIA_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// Sets the caller's avatar from an uploaded image.
///
/// The body is the raw image, at most 5 MiB; its type is read from the
/// bytes (the `Content-Type` header and any file name are ignored). PNG,
/// JPEG, WebP and GIF (first frame) are accepted, up to 8192×8192 pixels and
/// 128 MiB decoded. The server stores 64 and 256 px square PNG thumbnails
/// of the centred square, re-encoded, so no metadata (EXIF, GPS, comments)
/// of the upload is kept. The previous avatar's files are deleted.
#[utoipa::path(put, path = "/api/v1/me/avatar", tag = "users", security(("bearer" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The image bytes (PNG, JPEG, WebP or GIF), at most 5 MiB"),
    responses(
        (status = 200, body = AvatarUrls, description = "the new avatar's thumbnail URLs"),
        (status = 401, body = protocol::rest::Problem, description = "unauthorized"),
        (status = 413, body = protocol::rest::Problem, description = "payload_too_large: over 5 MiB"),
        (status = 422, body = protocol::rest::Problem, description = "invalid_image: not a decodable PNG, JPEG, WebP or GIF within the limits"),
    ))]
pub async fn put_avatar(
    user: AuthUser,
    req: HttpRequest,
    state: web::Data<AppState>,
    permits: web::Data<AvatarPermits>,
    payload: web::Payload,
) -> Result<web::Json<AvatarUrls>, ApiError> {
    let user_id = user.user_id.0;
    let key = upload_avatar(&req, &state, &permits, payload, user.user_id, user_id).await?;
    let stores = state.engine.stores();
    let previous = match stores.users.set_avatar(user_id, Some(key.clone())).await {
        Ok(previous) => previous,
        Err(error) => {
            delete_files(stores.media.as_ref(), &key).await;
            return Err(match error {
                StorageError::NotFound(_) => ApiError::UserNotFound,
                other => other.into(),
            });
        }
    };
    if let Some(previous) = previous.filter(|previous| *previous != key) {
        delete_files(stores.media.as_ref(), &previous).await;
    }
    tracing::info!(user_id, avatar = %key, "avatar set");
    Ok(web::Json(avatars::avatar_urls(&key)))
}

/// Reads an avatar image uploaded by `uploader` (rate-limited per user),
/// makes its thumbnails and stores them under a fresh key beneath
/// `owner_id` (a user or a group); returns the key.
pub async fn upload_avatar(
    req: &HttpRequest,
    state: &AppState,
    permits: &AvatarPermits,
    mut payload: web::Payload,
    uploader: protocol::UserId,
    owner_id: i64,
) -> Result<String, ApiError> {
    state.check_rate(&state.uploads, uploader.0).await?;
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_AVATAR_BYTES) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| ApiError::BadRequest(format!("reading the body: {error}")))?;
        if body.len() + chunk.len() > MAX_AVATAR_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }

    let thumbnails = {
        let _permit = permits.acquire().await?;
        web::block(move || avatars::make_thumbnails(&body)).await.map_err(ApiError::internal)??
    };

    let media = &state.engine.stores().media;
    let key = avatars::avatar_key(owner_id, &format!("{:032x}", rand::random::<u128>()));
    let [small_key, large_key] = avatars::thumbnail_keys(&key);
    let stored = async {
        media.put(&small_key, thumbnails.small, THUMBNAIL_CONTENT_TYPE).await?;
        media.put(&large_key, thumbnails.large, THUMBNAIL_CONTENT_TYPE).await
    }
    .await;
    if let Err(error) = stored {
        delete_files(media.as_ref(), &key).await;
        return Err(error.into());
    }
    Ok(key)
}

/// Removes the caller's avatar and deletes its files. Succeeds if there was none.
#[utoipa::path(delete, path = "/api/v1/me/avatar", tag = "users", security(("bearer" = [])),
    responses(
        (status = 204, description = "the avatar is gone"),
        (status = 401, body = protocol::rest::Problem, description = "unauthorized"),
    ))]
pub async fn delete_avatar(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stores = state.engine.stores();
    let previous = stores.users.set_avatar(user.user_id.0, None).await.map_err(|error| match error {
        StorageError::NotFound(_) => ApiError::UserNotFound,
        other => other.into(),
    })?;
    if let Some(previous) = previous {
        delete_files(stores.media.as_ref(), &previous).await;
        tracing::info!(user_id = user.user_id.0, avatar = %previous, "avatar removed");
    }
    Ok(HttpResponse::NoContent().finish())
}

/// A public media object (avatar thumbnails), with a strong `ETag` and
/// immutable caching; `If-None-Match` gets 304. No authentication.
#[utoipa::path(get, path = "/api/v1/media/{key}", tag = "users",
    params(("key" = String, Path, description = "Media key, e.g. `avatars/<user_id>/<upload>/64.png`")),
    responses(
        (status = 200, content_type = "image/png", description = "the object's bytes"),
        (status = 304, description = "not modified (If-None-Match matched the ETag)"),
        (status = 404, body = protocol::rest::Problem, description = "not_found"),
    ))]
pub async fn media(
    req: HttpRequest,
    state: web::Data<AppState>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    if !avatars::is_public_key(&key) {
        return Err(ApiError::NotFound);
    }
    let object = match state.engine.stores().media.get(&key).await {
        Ok(Some(object)) => object,
        Ok(None) | Err(StorageError::Invalid(_)) => return Err(ApiError::NotFound),
        Err(error) => return Err(error.into()),
    };
    let etag = format!("\"{}\"", object.etag);
    let not_modified = if_none_match(&req, &etag);
    let mut response = if not_modified { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, MEDIA_CACHE_CONTROL))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")));
    if not_modified {
        return Ok(response.finish());
    }
    Ok(response.content_type(object.content_type).body(object.bytes))
}

/// Whether the request's `If-None-Match` names `etag` (weak comparison, as
/// RFC 9110 prescribes for this header) or is `*`.
fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers().get_all(header::IF_NONE_MATCH).filter_map(|value| value.to_str().ok()).flat_map(|v| v.split(',')).any(
        |candidate| {
            let candidate = candidate.trim();
            candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
        },
    )
}

/// Deletes the thumbnails of the avatar stored under `key`; failures are
/// logged, not returned (the avatar change itself has happened).
pub async fn delete_files(media: &dyn MediaStore, key: &str) {
    for file in avatars::thumbnail_keys(key) {
        if let Err(error) = media.delete(&file).await {
            tracing::warn!(%error, key = %file, "could not delete an avatar file");
        }
    }
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge(format!("an avatar image may be at most {} MiB", MAX_AVATAR_BYTES / (1024 * 1024)))
}
