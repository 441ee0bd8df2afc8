//! Authentication: Argon2id passwords with a versioned pepper, EdDSA access
//! tokens with a published key set, rotating refresh tokens with reuse
//! detection, and one-time WebSocket tickets.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use engine::cluster::local::LocalTickets;
use engine::cluster::{ClusterError, TicketStore};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::files::write_private;

/// Issuer and audience of Parley access tokens.
const TOKEN_ISSUER: &str = "parley";
/// Audience of the tokens one node shows another (never an access token's).
const PEER_AUDIENCE: &str = "parley-peer";
/// Lifetime of a peer token: one is signed per forwarded request.
const PEER_TOKEN_TTL: Duration = Duration::from_secs(60);
/// Seconds of clock skew tolerated when checking `exp`.
const TOKEN_LEEWAY_SECS: u64 = 5;
/// Access tokens remembered as verified (about 100 bytes each).
const VERIFIED_TOKENS_KEPT: usize = 16_384;
/// Bytes of randomness in a refresh token or WebSocket ticket.
const OPAQUE_TOKEN_BYTES: usize = 32;
/// Longer strings are no ticket of ours (ours are 43 characters): refused
/// without asking the store.
const MAX_TICKET_BYTES: usize = 64;

/// Errors while setting up or using the auth keys.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("key file {0}: {1}")]
    KeyFile(String, String),
    #[error("argon2 parameters: {0}")]
    Params(String),
}

/// Claims of a Parley access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user ID as a decimal string.
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    /// Token family (login session) this access token belongs to.
    pub sid: String,
}

impl Claims {
    pub fn user_id(&self) -> Option<protocol::UserId> {
        self.sub.parse().ok()
    }

    /// The token family (login session) as an ID; 0 if malformed.
    pub fn session_id(&self) -> i64 {
        self.sid.parse().unwrap_or(0)
    }
}

/// Signs and verifies access tokens with the node's Ed25519 key.
pub struct TokenKeys {
    kid: String,
    public_x: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Checks signatures (batched per thread: `signatures`).
    verifying: VerifyingKey,
    /// What an access token's claims must be (the signature is checked
    /// apart, so these skip it).
    validation: Validation,
    /// The same for a peer token.
    peer_validation: Validation,
    /// Access tokens whose signature checked out, by the SHA-256 of the
    /// token. A device shows the same token on every REST call and
    /// reconnect until it expires, and the Ed25519 check (50–70 µs) is
    /// most of what authenticating costs; a remembered token costs a hash.
    /// Expiry is still checked on every use; revocation is checked by the
    /// caller as for any token.
    verified: quick_cache::sync::Cache<[u8; 32], VerifiedToken>,
}

/// What an access token of ours says, in less memory than [`Claims`].
#[derive(Clone, Copy)]
struct VerifiedToken {
    user_id: i64,
    session_id: i64,
    iat: u64,
    exp: u64,
}

impl VerifiedToken {
    /// `None` for claims that would not read back the same from the numbers.
    fn of(claims: &Claims) -> Option<Self> {
        let token = VerifiedToken {
            user_id: claims.sub.parse().ok()?,
            session_id: claims.sid.parse().ok()?,
            iat: claims.iat,
            exp: claims.exp,
        };
        (token.claims() == *claims).then_some(token)
    }

    fn claims(&self) -> Claims {
        Claims {
            sub: self.user_id.to_string(),
            iss: TOKEN_ISSUER.into(),
            aud: TOKEN_ISSUER.into(),
            iat: self.iat,
            exp: self.exp,
            sid: self.session_id.to_string(),
        }
    }
}

impl TokenKeys {
    /// Loads `<dir>/jwt-ed25519.pem`, creating it (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, AuthSetupError> {
        let path = dir.join("jwt-ed25519.pem");
        let err = |e: &dyn std::fmt::Display| AuthSetupError::KeyFile(path.display().to_string(), e.to_string());
        let signing = if path.exists() {
            let pem = fs::read_to_string(&path).map_err(|e| err(&e))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| err(&e))?
        } else {
            let key = SigningKey::generate(&mut OsRng);
            let pem = key.to_pkcs8_pem(Default::default()).map_err(|e| err(&e))?;
            write_private(&path, pem.as_bytes()).map_err(|e| err(&e))?;
            key
        };
        let der = signing.to_pkcs8_der().map_err(|e| err(&e))?;
        let public_x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        let kid = hex_prefix(&Sha256::digest(signing.verifying_key().as_bytes()));
        let decoding = DecodingKey::from_ed_components(&public_x).map_err(|e| err(&e))?;
        let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.set_issuer(&[TOKEN_ISSUER]);
        validation.set_audience(&[TOKEN_ISSUER]);
        validation.leeway = TOKEN_LEEWAY_SECS;
        // `check` verifies the algorithm and the signature itself.
        validation.insecure_disable_signature_validation();
        let mut peer_validation = validation.clone();
        peer_validation.set_audience(&[PEER_AUDIENCE]);
        Ok(TokenKeys {
            kid,
            public_x,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            decoding,
            verifying: signing.verifying_key(),
            validation,
            peer_validation,
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS_KEPT),
        })
    }

    /// Signs an access token for `user_id` in token family `family_id`.
    pub fn issue(&self, user_id: i64, family_id: i64, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign(user_id.to_string(), TOKEN_ISSUER, family_id.to_string(), ttl)
    }

    /// Verifies signature, algorithm, issuer, audience and expiry (a token
    /// seen before: expiry only).
    pub async fn verify(&self, token: &str) -> Option<Claims> {
        let digest = token_hash(token);
        if let Some(known) = self.verified.get(&digest) {
            if known.exp.saturating_add(TOKEN_LEEWAY_SECS) >= unix_secs() {
                return Some(known.claims());
            }
            self.verified.remove(&digest);
            return None;
        }
        let claims = self.check(token, &self.validation).await?;
        if let Some(known) = VerifiedToken::of(&claims) {
            self.verified.insert(digest, known);
        }
        Some(claims)
    }

    /// Signs a token with which node `node` calls another node's internal
    /// endpoints. Only nodes hold the key; its audience keeps it from ever
    /// passing as an access token, and an access token from passing as it.
    pub fn issue_peer(&self, node: &str) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign(node.to_owned(), PEER_AUDIENCE, String::new(), PEER_TOKEN_TTL)
    }

    /// The calling node's name, if `token` is a valid peer token.
    pub async fn verify_peer(&self, token: &str) -> Option<String> {
        self.check(token, &self.peer_validation).await.map(|claims| claims.sub)
    }

    /// The claims of `token` if they pass `validation` (cheap, so first),
    /// its algorithm is EdDSA and its signature is ours.
    async fn check(&self, token: &str, validation: &Validation) -> Option<Claims> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, validation).ok()?;
        if data.header.alg != jsonwebtoken::Algorithm::EdDSA {
            return None;
        }
        let (message, signature) = token.rsplit_once('.')?;
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?).ok()?;
        crate::signatures::verify(&self.verifying, message.as_bytes(), &signature).await.then_some(data.claims)
    }

    fn sign(&self, sub: String, aud: &str, sid: String, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = unix_secs();
        let claims = Claims { sub, iss: TOKEN_ISSUER.into(), aud: aud.into(), iat, exp: iat + ttl.as_secs(), sid };
        let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
    }

    /// The public key set (RFC 7517 / RFC 8037).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid, "x": self.public_x }]
        })
    }
}

/// Argon2id password hashing with a server-side pepper (Argon2's secret input).
pub struct Passwords {
    params: Params,
    current_version: u32,
    peppers: HashMap<u32, Vec<u8>>,
    /// A hash of a random password, verified when a login names an unknown
    /// user so that both cases cost the same time.
    decoy: String,
}

impl Passwords {
    /// Sets up hashing; an unset current pepper is created in `keys_dir`.
    pub fn new(config: &AuthConfig, keys_dir: &Path) -> Result<Self, AuthSetupError> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, 1, None)
            .map_err(|e| AuthSetupError::Params(e.to_string()))?;
        let mut peppers = HashMap::new();
        for (version, secret) in &config.old_peppers {
            let version: u32 =
                version.parse().map_err(|_| AuthSetupError::Params(format!("pepper version {version}")))?;
            peppers.insert(version, secret.0.as_bytes().to_vec());
        }
        let current = match &config.pepper {
            Some(secret) => secret.0.as_bytes().to_vec(),
            None => load_or_create_pepper(&keys_dir.join(format!("pepper-v{}", config.pepper_version)))?,
        };
        peppers.insert(config.pepper_version, current);
        let mut passwords = Passwords { params, current_version: config.pepper_version, peppers, decoy: String::new() };
        passwords.decoy = passwords.hash(&random_token()).map_err(|e| AuthSetupError::Params(e.to_string()))?.0;
        Ok(passwords)
    }

    fn argon(&self, version: u32) -> Option<Argon2<'_>> {
        let pepper = self.peppers.get(&version)?;
        Argon2::new_with_secret(pepper, Algorithm::Argon2id, Version::V0x13, self.params.clone()).ok()
    }

    /// Hashes with the current pepper; returns the PHC string and the pepper version.
    pub fn hash(&self, password: &str) -> Result<(String, u32), argon2::password_hash::Error> {
        let argon = self.argon(self.current_version).ok_or(argon2::password_hash::Error::Crypto)?;
        let salt = SaltString::generate(&mut OsRng);
        Ok((argon.hash_password(password.as_bytes(), &salt)?.to_string(), self.current_version))
    }

    /// Checks a password; `None` for the stored hash burns the same time
    /// and fails. Returns whether it matched and whether it should be rehashed.
    pub fn verify(&self, password: &str, stored: Option<(&str, u32)>) -> (bool, bool) {
        let (phc, version) = stored.unwrap_or((&self.decoy, self.current_version));
        let matched = match (PasswordHash::new(phc), self.argon(version)) {
            (Ok(hash), Some(argon)) => argon.verify_password(password.as_bytes(), &hash).is_ok(),
            _ => false,
        };
        (matched && stored.is_some(), version != self.current_version)
    }
}

/// One-time WebSocket tickets, kept in a [`TicketStore`]: this process's
/// memory on one node, Redis in a cluster (issued on one node, redeemed
/// on any, once).
pub struct Tickets {
    store: Arc<dyn TicketStore>,
}

impl Default for Tickets {
    fn default() -> Self {
        Tickets::new(Arc::new(LocalTickets::default()))
    }
}

impl Tickets {
    pub fn new(store: Arc<dyn TicketStore>) -> Self {
        Tickets { store }
    }

    /// Issues a ticket standing for `claims` for `ttl`.
    pub async fn issue(&self, claims: &Claims, ttl: Duration) -> Result<String, ClusterError> {
        let payload = serde_json::to_string(claims)?;
        loop {
            let ticket = random_token();
            // 256 random bits do not collide; the loop only makes it certain.
            if self.store.insert(&ticket, &payload, ttl).await? {
                return Ok(ticket);
            }
        }
    }

    /// Consumes a ticket: valid once, before it expires.
    pub async fn redeem(&self, ticket: &str) -> Result<Option<Claims>, ClusterError> {
        if ticket.len() > MAX_TICKET_BYTES {
            return Ok(None);
        }
        let payload = self.store.take(ticket).await?;
        Ok(payload.and_then(|payload| serde_json::from_str(&payload).ok()))
    }
}

/// A new opaque random token (refresh token, ticket), URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0u8; OPAQUE_TOKEN_BYTES];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of an opaque token, as stored.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn load_or_create_pepper(path: &Path) -> Result<Vec<u8>, AuthSetupError> {
    let err = |e: std::io::Error| AuthSetupError::KeyFile(path.display().to_string(), e.to_string());
    if path.exists() {
        return Ok(fs::read_to_string(path).map_err(err)?.trim().as_bytes().to_vec());
    }
    let pepper = random_token();
    write_private(path, pepper.as_bytes()).map_err(err)?;
    Ok(pepper.into_bytes())
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn cheap_config() -> AuthConfig {
        AuthConfig { argon2_memory_kib: 256, argon2_iterations: 1, ..AuthConfig::default() }
    }

    #[test]
    fn passwords_verify_only_with_the_right_password_and_pepper() {
        let dir = tempfile::tempdir().expect("tempdir");
        let passwords = Passwords::new(&cheap_config(), dir.path()).expect("setup");
        let (hash, version) = passwords.hash("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(passwords.verify("correct horse battery", Some((&hash, version))), (true, false));
        assert!(!passwords.verify("wrong horse battery", Some((&hash, version))).0);
        // The same hash under another pepper does not verify: the pepper matters.
        let other = tempfile::tempdir().expect("tempdir");
        let rotated = Passwords::new(&cheap_config(), other.path()).expect("setup");
        assert!(!rotated.verify("correct horse battery", Some((&hash, version))).0);
    }

    #[test]
    fn old_pepper_versions_still_verify_and_ask_for_a_rehash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = AuthConfig { pepper: Some(Secret("one".into())), ..cheap_config() };
        let (hash, version) = Passwords::new(&v1, dir.path()).expect("setup").hash("a long password").expect("hash");
        let v2 = AuthConfig {
            pepper: Some(Secret("two".into())),
            pepper_version: 2,
            old_peppers: [("1".to_string(), Secret("one".into()))].into(),
            ..cheap_config()
        };
        let passwords = Passwords::new(&v2, dir.path()).expect("setup");
        assert_eq!(passwords.verify("a long password", Some((&hash, version))), (true, true));
    }

    #[actix_rt::test]
    async fn tokens_round_trip_and_tampering_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = TokenKeys::load_or_create(dir.path()).expect("keys");
        let token = keys.issue(42, 7, Duration::from_secs(60)).expect("token");
        assert_eq!(keys.verify(&token).await.and_then(|c| c.user_id()), Some(protocol::UserId(42)));
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(keys.verify(&String::from_utf8_lossy(&tampered)).await.is_none());
        // Another node's key does not verify it; the same key file does.
        assert!(
            TokenKeys::load_or_create(tempfile::tempdir().expect("tempdir").path())
                .expect("keys")
                .verify(&token)
                .await
                .is_none()
        );
        assert!(TokenKeys::load_or_create(dir.path()).expect("keys").verify(&token).await.is_some());
    }

    #[actix_rt::test]
    async fn a_remembered_token_gives_the_same_claims_until_it_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = TokenKeys::load_or_create(dir.path()).expect("keys");
        let token = keys.issue(42, 7, Duration::from_secs(60)).expect("token");
        let first = keys.verify(&token).await.expect("valid");
        assert_eq!(keys.verified.len(), 1, "the verified token is remembered");
        assert_eq!(keys.verify(&token).await, Some(first.clone()));
        assert_eq!(keys.verified.len(), 1);

        // Remembered as valid, then its time is up: refused and forgotten.
        let expired =
            VerifiedToken { exp: unix_secs() - TOKEN_LEEWAY_SECS - 1, ..VerifiedToken::of(&first).expect("ours") };
        keys.verified.insert(token_hash(&token), expired);
        assert_eq!(keys.verify(&token).await, None);
        assert_eq!(keys.verified.len(), 0);
        // A token whose signature fails is never remembered.
        assert_eq!(keys.verify(&format!("{token}x")).await, None);
        assert_eq!(keys.verified.len(), 0);
    }

    #[actix_rt::test]
    async fn peer_tokens_and_access_tokens_never_pass_for_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = TokenKeys::load_or_create(dir.path()).expect("keys");
        let peer = keys.issue_peer("node-1").expect("signed");
        assert_eq!(keys.verify_peer(&peer).await.as_deref(), Some("node-1"));
        assert!(keys.verify(&peer).await.is_none(), "a peer token opened the API as a user");
        let access = keys.issue(7, 9, Duration::from_secs(60)).expect("signed");
        assert!(keys.verify_peer(&access).await.is_none(), "an access token called a node's internal endpoint");
        let other = TokenKeys::load_or_create(tempfile::tempdir().expect("tempdir").path()).expect("keys");
        assert!(other.verify_peer(&peer).await.is_none(), "a node with another key accepted the token");
    }

    #[actix_rt::test]
    async fn a_token_whose_header_names_another_algorithm_is_refused_even_if_signed_with_our_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = TokenKeys::load_or_create(dir.path()).expect("keys");
        let token = keys.issue(42, 7, Duration::from_secs(60)).expect("token");
        let payload = token.split('.').nth(1).expect("payload");
        let pem = fs::read_to_string(dir.path().join("jwt-ed25519.pem")).expect("key file");
        let signing = SigningKey::from_pkcs8_pem(&pem).expect("key");
        let resign = |header: &str| {
            let message = format!("{}.{payload}", URL_SAFE_NO_PAD.encode(header));
            let signature = ed25519_dalek::Signer::sign(&signing, message.as_bytes());
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
        };
        // The same claims signed the same way verify; only the header differs.
        assert!(keys.verify(&resign(r#"{"typ":"JWT","alg":"EdDSA"}"#)).await.is_some());
        assert!(keys.verify(&resign(r#"{"typ":"JWT","alg":"HS256"}"#)).await.is_none());
        assert!(keys.verify(&resign(r#"{"typ":"JWT","alg":"ES256"}"#)).await.is_none());
    }

    #[actix_rt::test]
    async fn tickets_work_once() {
        let tickets = Tickets::default();
        let claims =
            Claims { sub: "1".into(), iss: "parley".into(), aud: "parley".into(), iat: 0, exp: 0, sid: "1".into() };
        let ticket = tickets.issue(&claims, Duration::from_secs(30)).await.expect("issued");
        assert_eq!(tickets.redeem(&ticket).await.expect("store").and_then(|c| c.user_id()), Some(protocol::UserId(1)));
        assert!(tickets.redeem(&ticket).await.expect("store").is_none());
        assert!(tickets.redeem("made-up").await.expect("store").is_none());
        assert!(tickets.redeem(&"x".repeat(10_000)).await.expect("store").is_none());
    }
}
