//! The OpenAPI 3 document, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{auth, chats, users};

/// Parley's REST API, version 1.
#[derive(OpenApi)]
#[openapi(
    info(title = "Parley API", version = "1", description = "REST API of Parley. Errors are RFC 9457 problem+json bodies with a stable `code`; the WebSocket protocol is described in docs/protocol.md."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::ws_ticket, auth::jwks,
        users::me, users::user,
        chats::list, chats::open_direct, chats::history,
    ),
    components(schemas(
        protocol::rest::RegisterRequest, protocol::rest::LoginRequest, protocol::rest::RefreshRequest,
        protocol::rest::TokenResponse, protocol::rest::WsTicketResponse, protocol::rest::UserView,
        protocol::rest::OpenDirectChat, protocol::rest::ChatKind, protocol::rest::ChatSummary,
        protocol::rest::ChatList, protocol::rest::MessagePage, protocol::rest::Problem, protocol::ws::Message,
    )),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "users"), (name = "chats"))
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}
