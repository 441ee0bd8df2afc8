//! `/api/v1/me/email` and `/api/v1/me/phone`: adding or changing an email
//! address or phone number, confirmed by a one-time code sent to the *new*
//! address.
//!
//! The confirmed address stays in force until the new one is confirmed.
//! Codes are [`CODE_DIGITS`] digits from the OS CSPRNG, stored only as a
//! keyed SHA-256 ([`code_hash`]), compared in constant time by the store,
//! single-use, expire after `contacts.code_ttl_secs`, and lock after
//! `contacts.max_attempts` wrong guesses. Requests for codes are limited per
//! user and channel and per destination address (`contacts.codes_per_hour`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{HttpResponse, web};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::{CodeHash, ConfirmOutcome, ContactChannel, NewChallenge, StorageError};
use utoipa::ToSchema;

use crate::config::{Config, ContactsConfig};
use crate::errors::ApiError;
use crate::limits::Limit;
use crate::notify::{self, Notice, Notifier, Recipient};
use crate::state::{AppState, AuthUser};

/// Digits in a confirmation code: one in a million per guess, and
/// `max_attempts` guesses per code.
pub const CODE_DIGITS: usize = 6;
/// Number of distinct codes (10^[`CODE_DIGITS`]).
const CODE_SPACE: u32 = 1_000_000;
/// The code requests' label in `rate_limited_total`.
const RATE_LIMIT_NAME: &str = "contact_code";
/// The window of the code request limits.
const HOUR: Duration = Duration::from_secs(3600);
/// Longest email address accepted (RFC 5321's path limit less the brackets).
pub const MAX_EMAIL_LEN: usize = 254;
/// Fewest digits in a phone number, country code included.
pub const MIN_PHONE_DIGITS: usize = 8;
/// Most digits in a phone number, country code included (E.164).
pub const MAX_PHONE_DIGITS: usize = 15;
/// Separates the fields hashed into a code hash, and names its purpose.
const CODE_HASH_DOMAIN: &[u8] = b"parley/contact-code/v1\0";

const _: () = assert!(10u32.pow(CODE_DIGITS as u32) == CODE_SPACE);

/// The state behind these routes: how codes are delivered, the settings,
/// and the limits on asking for codes.
pub struct ContactChanges {
    notifier: Arc<dyn Notifier>,
    settings: ContactsConfig,
    /// Keyed `user:<id>:<channel>`.
    per_user: Limit<String>,
    /// Keyed `address:<channel>:<SHA-256 of the lowercased address>`: the
    /// key may be stored in Redis, and an address is personal data.
    per_address: Limit<String>,
}

impl ContactChanges {
    /// Builds the notifiers `config` names (see [`notify::from_config`]).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Self::with_notifier(notify::from_config(config)?, config.contacts.clone()))
    }

    pub fn with_notifier(notifier: Arc<dyn Notifier>, settings: ContactsConfig) -> Self {
        let per_hour = settings.codes_per_hour;
        ContactChanges {
            notifier,
            per_user: Limit::new(RATE_LIMIT_NAME, per_hour, per_hour, HOUR),
            per_address: Limit::new(RATE_LIMIT_NAME, per_hour, per_hour, HOUR),
            settings,
        }
    }

    /// Forgets rate-limit state that has refilled; called periodically.
    pub fn prune_rate_limits(&self) {
        self.per_user.retain_recent();
        self.per_address.retain_recent();
    }

    /// Counts a code request against the user's and the address's budgets,
    /// across the cluster.
    async fn check_rate(
        &self,
        state: &AppState,
        user_id: i64,
        channel: ContactChannel,
        value: &str,
    ) -> Result<(), ApiError> {
        state.check_rate(&self.per_user, format!("user:{user_id}:{}", channel.as_str())).await?;
        let address = Sha256::digest(value.to_ascii_lowercase());
        state.check_rate(&self.per_address, format!("address:{}:{address:x}", channel.as_str())).await
    }
}

/// `POST /me/email`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChange {
    /// The new address; a code is sent to it.
    pub email: String,
}

/// `POST /me/phone`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneChange {
    /// The new number in international form: `+`, country code, number
    /// (spaces, dashes, dots and parentheses are ignored).
    pub phone: String,
}

/// `POST /me/email/confirm` and `POST /me/phone/confirm`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmCode {
    /// The code from the message sent to the new address.
    pub code: String,
}

/// A change waiting for its code.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PendingChange {
    /// `email` or `phone`.
    pub channel: String,
    /// The new address, as it will be stored.
    pub pending: String,
    /// Seconds until the code expires.
    pub expires_in: u64,
}

/// A confirmed address.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ConfirmedContact {
    /// `email` or `phone`.
    pub channel: String,
    /// The address now on the account.
    pub value: String,
}

/// Ask to add or change your email address: a code goes to the new address.
#[utoipa::path(post, path = "/api/v1/me/email", tag = "users", security(("bearer" = [])), request_body = EmailChange,
    responses((status = 202, body = PendingChange),
              (status = 401, body = protocol::rest::Problem, description = "unauthorized"),
              (status = 422, body = protocol::rest::Problem, description = "invalid_field"),
              (status = 429, body = protocol::rest::Problem, description = "rate_limited"),
              (status = 502, body = protocol::rest::Problem, description = "delivery_failed")))]
pub async fn request_email(
    user: AuthUser,
    state: web::Data<AppState>,
    changes: web::Data<ContactChanges>,
    body: web::Json<EmailChange>,
) -> Result<HttpResponse, ApiError> {
    let email = normalize_email(&body.email)?;
    request(&state, &changes, user.user_id.0, Recipient::Email(email)).await
}

/// Confirm the pending email change with its code.
#[utoipa::path(post, path = "/api/v1/me/email/confirm", tag = "users", security(("bearer" = [])), request_body = ConfirmCode,
    responses((status = 200, body = ConfirmedContact),
              (status = 404, body = protocol::rest::Problem, description = "no_pending_change"),
              (status = 409, body = protocol::rest::Problem, description = "contact_taken"),
              (status = 410, body = protocol::rest::Problem, description = "code_expired"),
              (status = 422, body = protocol::rest::Problem, description = "invalid_code, too_many_attempts, invalid_field")))]
pub async fn confirm_email(
    user: AuthUser,
    state: web::Data<AppState>,
    changes: web::Data<ContactChanges>,
    body: web::Json<ConfirmCode>,
) -> Result<web::Json<ConfirmedContact>, ApiError> {
    confirm(&state, &changes, user.user_id.0, ContactChannel::Email, &body.code).await
}

/// Remove your confirmed email address (a pending change stays pending).
#[utoipa::path(delete, path = "/api/v1/me/email", tag = "users", security(("bearer" = [])),
    responses((status = 204, description = "removed (or there was none)"),
              (status = 401, body = protocol::rest::Problem, description = "unauthorized")))]
pub async fn delete_email(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    clear(&state, user.user_id.0, ContactChannel::Email).await
}

/// Ask to add or change your phone number: a code goes to the new number.
#[utoipa::path(post, path = "/api/v1/me/phone", tag = "users", security(("bearer" = [])), request_body = PhoneChange,
    responses((status = 202, body = PendingChange),
              (status = 401, body = protocol::rest::Problem, description = "unauthorized"),
              (status = 422, body = protocol::rest::Problem, description = "invalid_field"),
              (status = 429, body = protocol::rest::Problem, description = "rate_limited"),
              (status = 502, body = protocol::rest::Problem, description = "delivery_failed")))]
pub async fn request_phone(
    user: AuthUser,
    state: web::Data<AppState>,
    changes: web::Data<ContactChanges>,
    body: web::Json<PhoneChange>,
) -> Result<HttpResponse, ApiError> {
    let phone = normalize_phone(&body.phone)?;
    request(&state, &changes, user.user_id.0, Recipient::Phone(phone)).await
}

/// Confirm the pending phone change with its code.
#[utoipa::path(post, path = "/api/v1/me/phone/confirm", tag = "users", security(("bearer" = [])), request_body = ConfirmCode,
    responses((status = 200, body = ConfirmedContact),
              (status = 404, body = protocol::rest::Problem, description = "no_pending_change"),
              (status = 409, body = protocol::rest::Problem, description = "contact_taken"),
              (status = 410, body = protocol::rest::Problem, description = "code_expired"),
              (status = 422, body = protocol::rest::Problem, description = "invalid_code, too_many_attempts, invalid_field")))]
pub async fn confirm_phone(
    user: AuthUser,
    state: web::Data<AppState>,
    changes: web::Data<ContactChanges>,
    body: web::Json<ConfirmCode>,
) -> Result<web::Json<ConfirmedContact>, ApiError> {
    confirm(&state, &changes, user.user_id.0, ContactChannel::Phone, &body.code).await
}

/// Remove your confirmed phone number (a pending change stays pending).
#[utoipa::path(delete, path = "/api/v1/me/phone", tag = "users", security(("bearer" = [])),
    responses((status = 204, description = "removed (or there was none)"),
              (status = 401, body = protocol::rest::Problem, description = "unauthorized")))]
pub async fn delete_phone(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    clear(&state, user.user_id.0, ContactChannel::Phone).await
}

/// Stores a new challenge for `to` and sends its code there.
async fn request(
    state: &AppState,
    changes: &ContactChanges,
    user_id: i64,
    to: Recipient,
) -> Result<HttpResponse, ApiError> {
    let channel = match to {
        Recipient::Email(_) => ContactChannel::Email,
        Recipient::Phone(_) => ContactChannel::Phone,
    };
    let value = to.address().to_owned();
    changes.check_rate(state, user_id, channel, &value).await?;

    let code = new_code();
    let ttl = changes.settings.code_ttl_secs;
    let now = now_ms();
    let expires_at_ms = now.saturating_add(i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX));
    let challenge = NewChallenge {
        user_id,
        channel,
        value: value.clone(),
        code_hash: code_hash(user_id, channel, &code),
        expires_at_ms,
        created_at_ms: now,
    };
    match state.engine.stores().contacts.put_challenge(challenge).await {
        Ok(()) => {}
        Err(StorageError::NotFound(_)) => return Err(ApiError::UserNotFound),
        Err(error) => return Err(error.into()),
    }

    let notice =
        Notice { to, subject: "Your Parley confirmation code".into(), body: message_body(channel, &code, ttl) };
    if let Err(error) = changes.notifier.send(&notice).await {
        tracing::warn!(user_id, channel = channel.as_str(), %error, "confirmation code not delivered");
        return Err(ApiError::DeliveryFailed);
    }
    tracing::info!(user_id, channel = channel.as_str(), "contact change requested");
    Ok(HttpResponse::Accepted().json(PendingChange {
        channel: channel.as_str().into(),
        pending: value,
        expires_in: ttl,
    }))
}

/// Checks a presented code against the pending change.
async fn confirm(
    state: &AppState,
    changes: &ContactChanges,
    user_id: i64,
    channel: ContactChannel,
    code: &str,
) -> Result<web::Json<ConfirmedContact>, ApiError> {
    let code = code.trim();
    if code.len() != CODE_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::InvalidField(format!("code must be {CODE_DIGITS} digits")));
    }
    let presented = code_hash(user_id, channel, code);
    let outcome = state
        .engine
        .stores()
        .contacts
        .confirm(user_id, channel, &presented, changes.settings.max_attempts, now_ms())
        .await;
    match outcome {
        Ok(ConfirmOutcome::Confirmed { value }) => {
            tracing::info!(user_id, channel = channel.as_str(), "contact change confirmed");
            Ok(web::Json(ConfirmedContact { channel: channel.as_str().into(), value }))
        }
        Ok(ConfirmOutcome::WrongCode { attempts_left }) => Err(ApiError::InvalidCode { attempts_left }),
        Ok(ConfirmOutcome::TooManyAttempts) => Err(ApiError::TooManyAttempts),
        Ok(ConfirmOutcome::Expired) => Err(ApiError::CodeExpired),
        Ok(ConfirmOutcome::NoChallenge) => Err(ApiError::NoPendingChange),
        Err(StorageError::Conflict(_)) => Err(ApiError::ContactTaken),
        Err(error) => Err(error.into()),
    }
}

async fn clear(state: &AppState, user_id: i64, channel: ContactChannel) -> Result<HttpResponse, ApiError> {
    match state.engine.stores().contacts.clear_contact(user_id, channel).await {
        Ok(_) => Ok(HttpResponse::NoContent().finish()),
        Err(StorageError::NotFound(_)) => Err(ApiError::UserNotFound),
        Err(error) => Err(error.into()),
    }
}

/// A fresh code: [`CODE_DIGITS`] decimal digits, uniform, from the OS CSPRNG.
fn new_code() -> String {
    let n = rand::rngs::OsRng.gen_range(0..CODE_SPACE);
    format!("{n:0width$}", width = CODE_DIGITS)
}

/// What is stored for a code: SHA-256 over a domain tag, the user, the
/// channel and the code, so a hash is useless for another user or channel.
pub fn code_hash(user_id: i64, channel: ContactChannel, code: &str) -> CodeHash {
    let mut hasher = Sha256::new();
    hasher.update(CODE_HASH_DOMAIN);
    hasher.update(user_id.to_be_bytes());
    hasher.update(channel.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(code.as_bytes());
    hasher.finalize().into()
}

fn message_body(channel: ContactChannel, code: &str, ttl_secs: u64) -> String {
    let what = match channel {
        ContactChannel::Email => "email address",
        ContactChannel::Phone => "phone number",
    };
    let minutes = ttl_secs.div_ceil(60).max(1);
    format!(
        "Your Parley confirmation code is {code}.\r\n\r\n\
         It expires in {minutes} minute(s) and works once. If you did not ask to add this {what} \
         to a Parley account, ignore this message."
    )
}

/// Validates an email address (RFC 5321/5322 syntax via `lettre`, at most
/// [`MAX_EMAIL_LEN`] bytes) and lowercases its domain.
pub fn normalize_email(input: &str) -> Result<String, ApiError> {
    let input = input.trim();
    let invalid = || ApiError::InvalidField("email is not a valid email address".into());
    if input.is_empty() || input.len() > MAX_EMAIL_LEN {
        return Err(ApiError::InvalidField(format!("email must be 1-{MAX_EMAIL_LEN} bytes")));
    }
    let address: lettre::Address = input.parse().map_err(|_| invalid())?;
    Ok(format!("{}@{}", address.user(), address.domain().to_ascii_lowercase()))
}

/// Validates a phone number and returns its E.164 form: `+`, then
/// [`MIN_PHONE_DIGITS`]–[`MAX_PHONE_DIGITS`] digits, the first not 0.
/// Spaces, dashes, dots and parentheses are dropped.
pub fn normalize_phone(input: &str) -> Result<String, ApiError> {
    let compact: String = input.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let digits = compact.strip_prefix('+').unwrap_or_default();
    let valid = (MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !valid {
        return Err(ApiError::InvalidField(format!(
            "phone must be in international form: + and {MIN_PHONE_DIGITS}-{MAX_PHONE_DIGITS} digits"
        )));
    }
    Ok(compact)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_validated_and_their_domain_lowercased() {
        assert_eq!(normalize_email(" Jane.Doe@Example.COM ").ok().as_deref(), Some("Jane.Doe@example.com"));
        for bad in ["", "no-at-sign", "a@", "@b.c", "a b@c.d", "Jane <jane@example.com>"] {
            assert!(normalize_email(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("{}@example.com", "a".repeat(MAX_EMAIL_LEN));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn phones_must_be_international() {
        assert_eq!(normalize_phone("+1 (555) 010-9999").ok().as_deref(), Some("+15550109999"));
        assert_eq!(normalize_phone("+4915112345678").ok().as_deref(), Some("+4915112345678"));
        for bad in ["", "5550109999", "+1555", "+0123456789", "+1234567890123456", "+1555abc9999", "++15550109999"] {
            assert!(normalize_phone(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn codes_are_six_digits_and_hashes_are_bound_to_user_and_channel() {
        let code = new_code();
        assert_eq!(code.len(), CODE_DIGITS);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        let hash = code_hash(1, ContactChannel::Email, "123456");
        assert_eq!(hash, code_hash(1, ContactChannel::Email, "123456"));
        assert_ne!(hash, code_hash(2, ContactChannel::Email, "123456"));
        assert_ne!(hash, code_hash(1, ContactChannel::Phone, "123456"));
        assert_ne!(hash, code_hash(1, ContactChannel::Email, "123457"));
    }
}
