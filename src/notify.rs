//! Notice of every new factor (NIST SP 800-63B: the subscriber is told of each new authenticator
//! bound to their account): when a recalled user re-enrolls, the address on file gets a message
//! saying what was added, when and from where, and how to say "this was not me". Sinks: mail over
//! SMTP, and a webhook (JSON, HMAC-SHA-256 over the timestamp and body) for whatever the
//! organisation routes notices through.

use std::time::Duration;

use hmac::Mac;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;

use crate::api::{FactorKind, SmtpSecurity};
use crate::keys::HmacKey;

/// How long one delivery may take before it is given up (and audited as failed).
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a recall's notices go, with the credentials read from their Secrets.
#[derive(Clone, Default)]
pub struct Notices {
    pub smtp: Option<SmtpSink>,
    pub webhook: Option<WebhookSink>,
    /// Where "this was not me" links point, and the key that signs them.
    pub not_me: Option<NotMeLinks>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").field("smtp", &self.smtp.as_ref().map(|s| (&s.host, s.port))).field("webhook", &self.webhook.as_ref().map(|w| &w.url)).finish()
    }
}

#[derive(Clone)]
pub struct SmtpSink {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub from: Mailbox,
    /// User name and password, from the Secret the spec names.
    pub credentials: Option<(String, String)>,
}

#[derive(Clone)]
pub struct WebhookSink {
    pub url: reqwest::Url,
    pub key: HmacKey,
    pub http: reqwest::Client,
}

#[derive(Clone)]
pub struct NotMeLinks {
    pub base: reqwest::Url,
    pub key: HmacKey,
    /// The recall's uid: a link stops working with its recall, even if another takes its name.
    pub recall_uid: String,
}

impl NotMeLinks {
    /// The link a user follows to say a new factor was not theirs: it names the recall, the
    /// backend and the user, and carries a MAC over them and the recall's uid, so nobody can
    /// make one for another user or another recall.
    pub fn link(&self, recall: &str, backend: &str, user_id: &str) -> String {
        let mut url = self.base.clone();
        let token = not_me_token(&self.key, &self.recall_uid, backend, user_id);
        url.query_pairs_mut().append_pair("recall", recall).append_pair("backend", backend).append_pair("user", user_id).append_pair("token", &token);
        url.to_string()
    }
}

fn not_me_mac(key: &HmacKey, recall_uid: &str, backend: &str, user_id: &str) -> hmac::Hmac<sha2::Sha256> {
    let mut mac = key.mac();
    mac.update(b"mfa-recall not-me v2\0");
    for part in [recall_uid, backend, user_id] {
        mac.update(part.as_bytes());
        mac.update(b"\0");
    }
    mac
}

/// The MAC a not-me link carries.
pub fn not_me_token(key: &HmacKey, recall_uid: &str, backend: &str, user_id: &str) -> String {
    hex::encode(not_me_mac(key, recall_uid, backend, user_id).finalize().into_bytes())
}

/// Whether `token` is the MAC of a not-me link for these (in constant time).
pub fn not_me_token_holds(key: &HmacKey, recall_uid: &str, backend: &str, user_id: &str, token: &str) -> bool {
    hex::decode(token).is_ok_and(|given| not_me_mac(key, recall_uid, backend, user_id).verify_slice(&given).is_ok())
}

/// One new factor to tell a user about.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// `factor.enrolled`.
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub recall: String,
    pub backend: String,
    pub user: String,
    /// The user's address on file, where the mail goes.
    pub address: String,
    pub factor_kind: FactorKind,
    pub at: jiff::Timestamp,
    /// Where the enrollment came from, as the provider logged it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_me_url: Option<String>,
}

impl Notice {
    fn subject(&self) -> String {
        "A new sign-in factor was added to your account".into()
    }

    fn text(&self) -> String {
        let kind = serde_json::to_value(self.factor_kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let from = self.origin.as_deref().map(|o| format!(" from {o}")).unwrap_or_default();
        let report = match &self.not_me_url {
            Some(url) => format!("If it was not you, open this link at once: your account will be locked and every factor on it removed until the security team has spoken with you.\n\n  {url}\n"),
            None => format!("If it was not you, tell your security team at once and quote {}.\n", self.recall),
        };
        format!(
            "A second factor ({kind}) was added to your account {} on {} at {}{from}.\n\nYour organisation asked everyone to set up their factors again after a security incident; if this was you, there is nothing more to do.\n\n{report}",
            self.user, self.backend, self.at
        )
    }
}

impl Notices {
    pub fn is_empty(&self) -> bool {
        self.smtp.is_none() && self.webhook.is_none()
    }

    /// Sends `notice` through every sink: each sink's name and how it went (never a secret).
    pub async fn send(&self, notice: &Notice) -> Vec<(&'static str, Result<(), String>)> {
        let mut sent = Vec::new();
        if let Some(smtp) = &self.smtp {
            sent.push(("smtp", smtp.send(notice).await));
        }
        if let Some(webhook) = &self.webhook {
            sent.push(("webhook", webhook.send(notice).await));
        }
        sent
    }
}

impl SmtpSink {
    async fn send(&self, notice: &Notice) -> Result<(), String> {
        self.send_text(&notice.address, &notice.subject(), notice.text()).await
    }

    /// One plain-text mail to `address`. The error never holds the body, which may carry a
    /// user's one-time code.
    pub async fn send_text(&self, address: &str, subject: &str, body: String) -> Result<(), String> {
        let to: Mailbox = address.parse().map_err(|e| format!("the address on file {address:?} is not one mail can go to: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| format!("building the message: {e}"))?;
        let builder = match self.security {
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&self.host).map_err(|e| format!("SMTP over TLS to {}: {e}", self.host))?,
            SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&self.host).map_err(|e| format!("SMTP with STARTTLS to {}: {e}", self.host))?,
            // Only to a server on loopback (the spec's validation says so): nothing crosses a network in clear.
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host),
        };
        let mut builder = builder.port(self.port).timeout(Some(SEND_TIMEOUT));
        if let Some((user, password)) = &self.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let transport = builder.build();
        transport.send(message).await.map(|_| ()).map_err(|e| format!("SMTP to {}:{}: {e}", self.host, self.port))
    }
}

impl WebhookSink {
    async fn send(&self, notice: &Notice) -> Result<(), String> {
        let body = serde_json::to_vec(notice).map_err(|e| e.to_string())?;
        let timestamp = jiff::Timestamp::now().as_second().to_string();
        let signature = webhook_signature(&self.key, &timestamp, &body);
        let reply = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(WEBHOOK_TIMESTAMP, &timestamp)
            .header(WEBHOOK_SIGNATURE, format!("sha256={signature}"))
            .body(body)
            .timeout(SEND_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("webhook {}: {}", self.url.origin().ascii_serialization(), e.without_url()))?;
        if reply.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook {} answered {}", self.url.origin().ascii_serialization(), reply.status()))
        }
    }
}

/// Headers of a webhook notice: the time it was signed (Unix seconds), and the signature.
pub const WEBHOOK_TIMESTAMP: &str = "X-Mfa-Recall-Timestamp";
pub const WEBHOOK_SIGNATURE: &str = "X-Mfa-Recall-Signature";

/// Hex HMAC-SHA-256 of `timestamp`, a dot and the body: what a receiver recomputes (and compares
/// in constant time, refusing old timestamps) before it trusts a notice.
pub fn webhook_signature(key: &HmacKey, timestamp: &str, body: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A host on this machine: the only place anything may go in clear.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A URL credentials or signed messages may be sent to: https, or http to loopback. `field`
/// names it in the error.
pub fn checked_url(field: &str, text: &str) -> Result<reqwest::Url, String> {
    let url: reqwest::Url = text.parse().map_err(|e| format!("{field} {text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(url.host_str().unwrap_or_default()) => Ok(url),
        _ => Err(format!("{field} must be an https URL (http only to loopback): {text}")),
    }
}

/// A client for webhooks: no redirects (a notice goes where it was configured, or nowhere).
pub fn webhook_client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("a client without custom TLS settings builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEBHOOK_KNOWN_ANSWER: &str = "3433244d18158475586c9af209af7f3b5e192a93f81b7093cf6f8977373d2ae5";

    fn key() -> HmacKey {
        HmacKey::new(b"a key of the notify tests, 32 bytes", "a test key").unwrap()
    }

    #[test]
    fn not_me_links_are_for_one_user_only() {
        let links = NotMeLinks { base: "https://mfa.example.com/v1/not-me".parse().unwrap(), key: key(), recall_uid: "uid-1".into() };
        let link: reqwest::Url = links.link("security/inc-42", "okta", "00u1&x").parse().unwrap();
        let q: std::collections::HashMap<_, _> = link.query_pairs().into_owned().collect();
        assert_eq!((q["recall"].as_str(), q["user"].as_str()), ("security/inc-42", "00u1&x"));
        assert!(not_me_token_holds(&key(), "uid-1", "okta", "00u1&x", &q["token"]));
        assert!(!not_me_token_holds(&key(), "uid-1", "okta", "00u2", &q["token"]), "another user");
        assert!(!not_me_token_holds(&key(), "uid-2", "okta", "00u1&x", &q["token"]), "another recall of the same name");
        assert!(!not_me_token_holds(&key(), "uid-1", "duo", "00u1&x", &q["token"]), "another backend");
        assert!(!not_me_token_holds(&key(), "uid-1", "okta", "00u1&x", "zz"));
    }

    #[test]
    fn a_notice_says_what_when_where_and_how_to_report_it() {
        let notice = Notice {
            type_: "factor.enrolled",
            recall: "security/inc-42".into(),
            backend: "okta".into(),
            user: "Ada@Example.com".into(),
            address: "ada@example.com".into(),
            factor_kind: FactorKind::Totp,
            at: "2026-12-06T03:00:00Z".parse().unwrap(),
            origin: Some("ip 100.64.7.7, geo Nigeria/Lagos".into()),
            not_me_url: Some("https://mfa.example.com/v1/not-me?token=t".into()),
        };
        let text = notice.text();
        for part in ["(totp)", "Ada@Example.com", "2026-12-06T03:00:00Z", "from ip 100.64.7.7", "https://mfa.example.com/v1/not-me?token=t"] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
        // Known answer, as any receiver computes it: HMAC-SHA-256(key, "1700000000." + body), here by
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"a key of the notify tests, 32 bytes",b"1700000000.{}",hashlib.sha256).hexdigest())'
        assert_eq!(webhook_signature(&key(), "1700000000", b"{}"), WEBHOOK_KNOWN_ANSWER);
        assert_ne!(webhook_signature(&key(), "1700000001", b"{}"), WEBHOOK_KNOWN_ANSWER);
    }
}
