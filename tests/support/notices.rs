//! What the notice tests read back: mail from the real mail server hack/mailserver.sh starts (its
//! maildirs), and webhook deliveries caught by a receiver on loopback.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The mail server the parts started: its address, and where it delivers.
pub struct MailServer {
    pub server: String,
    maildir: PathBuf,
}

impl MailServer {
    pub fn from_env() -> Self {
        let var = |v: &str| std::env::var(v).unwrap_or_else(|_| panic!("{v} is not set: the notice tests need the mail server that `hack/localparts.sh start DIR` starts (hack/mailserver.sh); source DIR/env"));
        MailServer { server: var("MFA_RECALL_SMTP"), maildir: PathBuf::from(var("MFA_RECALL_MAILDIR")) }
    }

    /// Every message delivered to `address` so far, oldest first (maildir names begin with the
    /// delivery time; the mailbox name is compared case-insensitively).
    pub fn messages(&self, address: &str) -> Vec<String> {
        let Ok(boxes) = std::fs::read_dir(&self.maildir) else { return Vec::new() };
        let mut found = Vec::new();
        for mailbox in boxes.flatten().filter(|b| b.file_name().to_string_lossy().eq_ignore_ascii_case(address)) {
            found.extend(std::fs::read_dir(mailbox.path().join("new")).into_iter().flatten().flatten().map(|m| m.path()));
        }
        found.sort();
        found.iter().map(|path| std::fs::read_to_string(path).unwrap_or_default()).collect()
    }
}

/// A message's text with quoted-printable soft line breaks joined and `=XX` decoded (the mail
/// server delivers the body as the sender encoded it).
pub fn quoted_printable(message: &str) -> String {
    let joined = message.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One request a webhook receiver caught: its headers (names lower-cased) and body.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on loopback answering 204 to every POST and keeping what came.
pub struct WebhookReceiver {
    pub url: String,
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl WebhookReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notices", listener.local_addr().unwrap());
        let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let kept = deliveries.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 8192];
                    // Headers, then as much body as Content-Length says.
                    let (head_end, length) = loop {
                        let Ok(n) = stream.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&data[..end]).to_string();
                            let length = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))).unwrap_or(0);
                            break (end + 4, length);
                        }
                    };
                    while data.len() < head_end + length {
                        let Ok(n) = stream.read(&mut buf).await else { return };
                        if n == 0 {
                            break;
                        }
                        data.extend_from_slice(&buf[..n]);
                    }
                    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
                    let headers = head.lines().skip(1).filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
                    kept.lock().unwrap().push(Delivery { headers, body: data[head_end..].to_vec() });
                    let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await;
                });
            }
        });
        WebhookReceiver { url, deliveries }
    }
}
