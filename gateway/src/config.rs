//! The node's configuration: defaults, then a TOML file, then `PARLEY_*`
//! environment variables (`__` separates sections: `PARLEY_AUTH__PEPPER`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use engine::EngineConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use storage::StorageConfig;

/// Everything a node is configured with. Every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP and WebSocket server listens on.
    pub listen: SocketAddr,
    /// Directory holding the database and the node's keys.
    pub data_dir: PathBuf,
    /// `human` or `json` log lines.
    pub log_format: LogFormat,
    pub storage: StorageConfig,
    pub engine: EngineConfig,
    pub auth: AuthConfig,
    pub websocket: WebSocketConfig,
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("parley-data"),
            log_format: LogFormat::Human,
            storage: StorageConfig::default(),
            engine: EngineConfig::default(),
            auth: AuthConfig::default(),
            websocket: WebSocketConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Tokens and passwords.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of an access token, seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, seconds (each rotation starts a new one).
    pub refresh_token_ttl_secs: u64,
    /// Lifetime of a WebSocket ticket, seconds.
    pub ws_ticket_ttl_secs: u64,
    /// The current password pepper. Unset: a random pepper is created in
    /// `<data_dir>/keys/pepper-v<version>` on first start. Never stored in the database.
    pub pepper: Option<Secret>,
    /// Version of `pepper`; stored with each password hash.
    pub pepper_version: u32,
    /// Earlier peppers by version, so older hashes still verify (and are
    /// upgraded to the current pepper on the next login).
    pub old_peppers: BTreeMap<String, Secret>,
    /// Argon2id memory cost in KiB (OWASP: 19,456).
    pub argon2_memory_kib: u32,
    /// Argon2id passes.
    pub argon2_iterations: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            ws_ticket_ttl_secs: 30,
            pepper: None,
            pepper_version: 1,
            old_peppers: BTreeMap::new(),
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
        }
    }
}

/// WebSocket connection settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Seconds between server pings.
    pub heartbeat_secs: u64,
    /// Seconds of silence after which a connection is closed (4009).
    pub idle_timeout_secs: u64,
    /// Invalid frames tolerated per connection before it is closed (4029).
    pub max_protocol_errors: u32,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig { heartbeat_secs: 20, idle_timeout_secs: 60, max_protocol_errors: 20 }
    }
}

/// Abuse limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Auth requests (register, login, refresh) per minute per client IP.
    pub auth_per_minute_per_ip: u32,
    /// Auth requests allowed in a burst per client IP.
    pub auth_burst_per_ip: u32,
    /// Largest JSON request body, bytes.
    pub max_json_body_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { auth_per_minute_per_ip: 30, auth_burst_per_ip: 20, max_json_body_bytes: 16 * 1024 }
    }
}

/// A secret string: shown as `***` in logs and debug output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Config {
    /// Loads defaults, then `file` (if any), then `PARLEY_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(Env::prefixed("PARLEY_").split("__")).extract().map_err(Box::new)
    }

    /// The example configuration file: every key with its default.
    pub fn example_toml() -> String {
        let body = toml::to_string_pretty(&Config::default()).unwrap_or_default();
        format!(
            "# Parley node configuration: every key with its default value.\n\
             # Generated from gateway/src/config.rs (`parley example-config`).\n\
             # Any key can be set as PARLEY_<SECTION>__<KEY>, e.g. PARLEY_AUTH__PEPPER.\n\n{body}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../parley.example.toml");
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            on_disk,
            Config::example_toml(),
            "run `cargo run -p gateway -- example-config > parley.example.toml`"
        );
    }

    #[test]
    fn example_config_parses_back_to_the_defaults() {
        let parsed: Config = toml::from_str(&Config::example_toml()).expect("example parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("listne = \"127.0.0.1:1\"").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = AuthConfig { pepper: Some(Secret("hunter2".into())), ..AuthConfig::default() };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
