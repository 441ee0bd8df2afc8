//! Operators' endpoints: liveness, readiness, Prometheus metrics, OpenAPI.

use actix_web::{HttpResponse, web};
use utoipa::OpenApi;

use crate::openapi::ApiDoc;
use crate::state::AppState;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Readiness: storage answers and the node is not draining.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.is_shutting_down() {
        return HttpResponse::ServiceUnavailable().content_type("text/plain").body("shutting down");
    }
    match state.engine.stores().meta.ping().await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready"),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            HttpResponse::ServiceUnavailable().content_type("text/plain").body("storage unavailable")
        }
    }
}

/// Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.engine.metrics().render())
}

/// The OpenAPI 3 document of the REST API.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
