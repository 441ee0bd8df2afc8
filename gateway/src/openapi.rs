//! The OpenAPI 3 document, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{auth, chats, friends, groups, users};

/// Parley's REST API, version 1.
#[derive(OpenApi)]
#[openapi(
    info(title = "Parley API", version = "1", description = "REST API of Parley. Errors are RFC 9457 problem+json bodies with a stable `code`; the WebSocket protocol is described in docs/protocol.md."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::logout_others, auth::ws_ticket, auth::jwks,
        users::me, users::update_me, users::set_presence, users::user, users::search,
        friends::request, friends::cancel, friends::accept, friends::decline, friends::remove,
        friends::block, friends::unblock, friends::friends, friends::incoming, friends::outgoing, friends::blocked,
        chats::list, chats::open_direct, chats::get, chats::history,
        groups::create, groups::rename, groups::put_avatar, groups::delete_avatar, groups::members,
        groups::add_members, groups::remove_member, groups::set_role, groups::transfer, groups::receipts,
        crate::routes::avatars::put_avatar, crate::routes::avatars::delete_avatar, crate::routes::avatars::media,
        crate::routes::contacts::request_email, crate::routes::contacts::confirm_email, crate::routes::contacts::delete_email,
        crate::routes::contacts::request_phone, crate::routes::contacts::confirm_phone, crate::routes::contacts::delete_phone,
    ),
    components(schemas(
        protocol::rest::RegisterRequest, protocol::rest::LoginRequest, protocol::rest::RefreshRequest,
        protocol::rest::TokenResponse, protocol::rest::WsTicketResponse, protocol::rest::UserView,
        protocol::rest::OpenDirectChat, protocol::rest::ChatKind, protocol::rest::ChatSummary,
        protocol::rest::ChatList, protocol::rest::MessagePage, protocol::rest::Problem, protocol::ws::Message,
        protocol::rest::AvatarUrls,
        crate::routes::contacts::EmailChange, crate::routes::contacts::PhoneChange, crate::routes::contacts::ConfirmCode,
        crate::routes::contacts::PendingChange, crate::routes::contacts::ConfirmedContact,
        protocol::rest::OwnProfile, protocol::rest::ProfilePatch, protocol::rest::MemberReceipts, protocol::rest::RelationState,
        protocol::rest::FriendRequest, protocol::rest::RelationStatus, protocol::rest::RelatedUser,
        protocol::rest::RelatedUserPage, protocol::rest::SearchHit, protocol::rest::SearchResults,
        protocol::rest::LoggedOutOthers, protocol::rest::PresenceSetting, protocol::rest::PresenceChoice, protocol::ws::PresenceView,
        protocol::ws::PresenceStatus, protocol::rest::GroupInfo, protocol::rest::Role, protocol::rest::CreateGroup, protocol::rest::GroupPatch,
        protocol::rest::AddMembers, protocol::rest::SetRole, protocol::rest::TransferOwnership,
        protocol::rest::ChatMember, protocol::rest::MemberList, protocol::rest::MessageReceipts, protocol::ws::ChatEvent,
    )),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "users"), (name = "friends"), (name = "chats"), (name = "groups"))
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
