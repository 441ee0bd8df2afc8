//! Delivering short notices (confirmation codes) to an email address or a
//! phone number, behind one trait: [`Notifier`].
//!
//! Backends, chosen in one place ([`from_config`]): email goes through SMTP
//! ([`SmtpNotifier`], `[smtp]`) or, with no SMTP configured, to the local
//! outbox ([`OutboxNotifier`]); text messages go to the outbox or to an HTTP
//! webhook ([`WebhookSms`], `[sms] backend = "webhook"`). The outbox is one
//! file per message in `<data_dir>/outbox/`, readable only by the node's
//! user, so a single-node install works without a mail server or an SMS
//! provider. Message bodies (which hold codes) never reach the logs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_trait::async_trait;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, Secret, SmsConfig, SmtpConfig, SmtpTls};
use crate::files::write_private;

/// The outbox directory inside the data directory.
pub const OUTBOX_DIR: &str = "outbox";

/// Where a notice goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// An email address (already validated).
    Email(String),
    /// A phone number in E.164 form (already validated).
    Phone(String),
}

impl Recipient {
    /// The address itself.
    pub fn address(&self) -> &str {
        match self {
            Recipient::Email(address) | Recipient::Phone(address) => address,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Recipient::Email(_) => "email",
            Recipient::Phone(_) => "sms",
        }
    }
}

/// A short message to one recipient. `subject` is used by email only.
#[derive(Clone, Debug)]
pub struct Notice {
    pub to: Recipient,
    pub subject: String,
    pub body: String,
}

/// Why a notice was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// This backend cannot reach this kind of recipient.
    #[error("{backend} cannot deliver to a {kind} recipient")]
    Unsupported { backend: &'static str, kind: &'static str },
    /// The address was refused before sending.
    #[error("invalid recipient: {0}")]
    InvalidRecipient(String),
    /// The transport failed (server unreachable, refused, timed out).
    #[error("delivery failed: {0}")]
    Transport(String),
}

/// Delivers notices. Futures are not `Send`: senders run on the actix
/// worker that handles the request.
#[async_trait(?Send)]
pub trait Notifier: Send + Sync + 'static {
    /// Delivers `notice`, or says why not. Returns once the backend has
    /// accepted it (the SMTP server queued it, the file is written, the
    /// webhook answered 2xx).
    async fn send(&self, notice: &Notice) -> Result<(), NotifyError>;
}

/// Picks the backends the config names: SMTP or the outbox for email, the
/// webhook or the outbox for SMS.
pub fn from_config(config: &Config) -> anyhow::Result<Arc<dyn Notifier>> {
    let outbox = Arc::new(OutboxNotifier::new(config.data_dir.join(OUTBOX_DIR)));
    let email: Arc<dyn Notifier> = match &config.smtp {
        Some(smtp) => Arc::new(SmtpNotifier::new(smtp)?),
        None => outbox.clone(),
    };
    let sms: Arc<dyn Notifier> = match &config.sms {
        SmsConfig::Outbox => outbox,
        SmsConfig::Webhook { url, bearer_token, timeout_secs } => {
            Arc::new(WebhookSms::new(url, bearer_token.clone(), Duration::from_secs(*timeout_secs))?)
        }
    };
    tracing::info!(
        email = if config.smtp.is_some() { "smtp" } else { "outbox" },
        sms = match config.sms {
            SmsConfig::Outbox => "outbox",
            SmsConfig::Webhook { .. } => "webhook",
        },
        "notifiers configured"
    );
    Ok(Arc::new(ByChannel { email, sms }))
}

/// Routes each notice to the backend of its kind of recipient.
struct ByChannel {
    email: Arc<dyn Notifier>,
    sms: Arc<dyn Notifier>,
}

#[async_trait(?Send)]
impl Notifier for ByChannel {
    async fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
        match notice.to {
            Recipient::Email(_) => self.email.send(notice).await,
            Recipient::Phone(_) => self.sms.send(notice).await,
        }
    }
}

// ------------------------------------------------------------------ SMTP

/// Email through an SMTP server, with `lettre`.
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpNotifier {
    pub fn new(config: &SmtpConfig) -> anyhow::Result<Self> {
        let from: Mailbox = config.from.parse().with_context(|| format!("smtp.from {:?}", config.from))?;
        let (builder, default_port) = match config.tls {
            SmtpTls::None => (AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host), 25),
            SmtpTls::Starttls => (AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)?, 587),
            SmtpTls::Tls => (AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)?, 465),
        };
        let mut builder =
            builder.port(config.port.unwrap_or(default_port)).timeout(Some(Duration::from_secs(config.timeout_secs)));
        if let Some(username) = &config.username {
            let password = config.password.as_ref().map(|Secret(p)| p.clone()).unwrap_or_default();
            builder = builder.credentials(Credentials::new(username.clone(), password));
        }
        Ok(SmtpNotifier { transport: builder.build(), from })
    }
}

#[async_trait(?Send)]
impl Notifier for SmtpNotifier {
    async fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
        let Recipient::Email(address) = &notice.to else {
            return Err(NotifyError::Unsupported { backend: "smtp", kind: notice.to.kind() });
        };
        let to: Mailbox = address.parse().map_err(|_| NotifyError::InvalidRecipient(address.clone()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(notice.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(notice.body.clone())
            .map_err(|e| NotifyError::InvalidRecipient(e.to_string()))?;
        self.transport.send(message).await.map_err(|e| NotifyError::Transport(e.to_string()))?;
        tracing::info!(kind = "email", "notice sent over smtp");
        Ok(())
    }
}

// ---------------------------------------------------------------- outbox

/// Writes each notice to its own file in a directory (mode 0600 on Unix)
/// and logs the file's path, never its content.
pub struct OutboxNotifier {
    dir: PathBuf,
    next: AtomicU64,
}

impl OutboxNotifier {
    pub fn new(dir: PathBuf) -> Self {
        OutboxNotifier { dir, next: AtomicU64::new(0) }
    }

    /// The file the next notice of `kind` goes to: `<unix ms>-<n>-<kind>.txt`,
    /// so a listing sorts oldest first.
    fn next_path(&self, kind: &str) -> PathBuf {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{millis:015}-{n:06}-{kind}.txt"))
    }
}

#[async_trait(?Send)]
impl Notifier for OutboxNotifier {
    async fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
        let path = self.next_path(notice.to.kind());
        let text = format!("To: {}\nSubject: {}\n\n{}\n", notice.to.address(), notice.subject, notice.body.trim_end());
        let file = path.clone();
        tokio::task::spawn_blocking(move || write_private(&file, text.as_bytes()))
            .await
            .map_err(|e| NotifyError::Transport(e.to_string()))?
            .map_err(|e| NotifyError::Transport(format!("writing {}: {e}", path.display())))?;
        tracing::info!(kind = notice.to.kind(), path = %path.display(), "notice written to the outbox");
        Ok(())
    }
}

// --------------------------------------------------------------- webhook

/// Text messages POSTed as JSON `{"to", "text"}` to an HTTP endpoint: an
/// SMS provider's API or a relay in front of one.
pub struct WebhookSms {
    url: String,
    bearer_token: Option<Secret>,
    timeout: Duration,
}

impl WebhookSms {
    pub fn new(url: &str, bearer_token: Option<Secret>, timeout: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "sms.url must be an http:// or https:// URL, not {url:?}"
        );
        Ok(WebhookSms { url: url.to_owned(), bearer_token, timeout })
    }
}

/// The webhook's JSON body.
#[derive(serde::Serialize)]
struct WebhookBody<'a> {
    to: &'a str,
    text: &'a str,
}

#[async_trait(?Send)]
impl Notifier for WebhookSms {
    async fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
        let Recipient::Phone(number) = &notice.to else {
            return Err(NotifyError::Unsupported { backend: "sms webhook", kind: notice.to.kind() });
        };
        // awc clients are tied to the worker thread; one per send is cheap.
        let client = awc::Client::builder().timeout(self.timeout).finish();
        let mut request = client.post(&self.url);
        if let Some(Secret(token)) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send_json(&WebhookBody { to: number, text: &notice.body })
            .await
            .map_err(|e| NotifyError::Transport(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(NotifyError::Transport(format!("webhook answered {status}")));
        }
        tracing::info!(kind = "sms", status = status.as_u16(), "notice sent to the webhook");
        Ok(())
    }
}
