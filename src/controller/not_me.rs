//! The not-me endpoint: where the link in a notice of a new factor leads. Opening the link shows a
//! page with one button (mail scanners open links; only a person's POST acts). The POST, with a
//! MAC that only this operator's ledger key makes, keeps the report in the recall's ledger; the
//! recall's next check flags the user and quarantines them (`Runner::act_on_reports`).

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response};
use kube::{Api, Resource, ResourceExt};

use super::Context;
use crate::api::{MfaRecall, RecallPhase};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::ledger::{LedgerStore, ResourceLedger};
use crate::notify::not_me_token_holds;
use crate::watch::NotMe;

pub const PATH: &str = "/v1/not-me";
/// A form of four short fields; anything longer is not one of ours.
const MAX_BODY: usize = 4096;
/// Serves the endpoint on `addr` until the process ends; it faces the internet (behind an
/// ingress), which the listener's timeouts and connection cap are for.
pub async fn serve(addr: SocketAddr, ctx: Arc<Context>) -> std::io::Result<()> {
    super::listener::serve(addr, PATH, move |request| {
        let ctx = ctx.clone();
        async move { respond(&ctx, request).await }
    })
    .await
}

/// The fields of a not-me link, from its query or the form that repeats them.
#[derive(Debug, Default, PartialEq)]
struct Link {
    recall: String,
    backend: String,
    user: String,
    token: String,
}

impl Link {
    fn parse(form: &[u8]) -> Self {
        let mut link = Link::default();
        for (key, value) in form_urlencoded::parse(form) {
            let field = match key.as_ref() {
                "recall" => &mut link.recall,
                "backend" => &mut link.backend,
                "user" => &mut link.user,
                "token" => &mut link.token,
                _ => continue,
            };
            *field = value.into_owned();
        }
        link
    }

    /// The recall the link is for, if its MAC holds for that recall (its uid: a recall made
    /// later under the same name is not the one the notice spoke of).
    async fn recall(&self, ctx: &Context) -> Result<Option<MfaRecall>, String> {
        let Some((namespace, name)) = self.recall.split_once('/') else { return Ok(None) };
        let Some(recall) = Api::<MfaRecall>::namespaced(ctx.client.clone(), namespace).get_opt(name).await.map_err(|e| e.to_string())? else { return Ok(None) };
        let uid = recall.uid().unwrap_or_default();
        Ok(not_me_token_holds(&ctx.ledger_key, &uid, &self.backend, &self.user, &self.token).then_some(recall))
    }
}

/// Whether the recall still watches its window: only then does a report lead anywhere.
fn watching(recall: &MfaRecall) -> bool {
    let phase = recall.status.as_ref().map(|s| s.phase.clone());
    !recall.spec.cancel && matches!(phase, Some(RecallPhase::Revoking | RecallPhase::AwaitingReEnrollment))
}

const NOT_VALID: (&str, &str) = ("This link is not valid", "Open the link exactly as it came in the message, or call your security team.");
const OVER: (&str, &str) = ("Call your security team", "The security measure this message belonged to is over: tell your security team at once that the new factor was not yours.");

async fn respond(ctx: &Context, request: Request<hyper::body::Incoming>) -> Response<Full<bytes::Bytes>> {
    if request.uri().path() != PATH {
        return page(404, "Not found", "There is nothing here.");
    }
    let method = request.method().clone();
    let query = request.uri().query().unwrap_or_default().as_bytes().to_vec();
    match method {
        Method::GET => {
            let link = Link::parse(&query);
            match link.recall(ctx).await {
                Ok(Some(recall)) if watching(&recall) => {}
                Ok(Some(_)) => return page(410, OVER.0, OVER.1),
                Ok(None) => return page(404, NOT_VALID.0, NOT_VALID.1),
                Err(_) => return page(503, "Try again", "This page cannot be shown just now. Try again in a minute, or call your security team."),
            }
            let hidden: String = [("recall", &link.recall), ("backend", &link.backend), ("user", &link.user), ("token", &link.token)]
                .iter()
                .map(|(name, value)| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape(value)))
                .collect();
            let body = format!(
                "<p>If you did not add a new sign-in factor to your account just now, press the button. Your account will be locked and every factor on it removed until your security team has spoken with you.</p><form method=\"post\">{hidden}<button type=\"submit\">This was not me: lock my account</button></form>"
            );
            page(200, "Was this you?", &body)
        }
        Method::POST => {
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return page(413, "Too long", "That is not a form of this page."),
            };
            let link = Link::parse(&body);
            let recall = match link.recall(ctx).await {
                Ok(Some(recall)) if watching(&recall) => recall,
                Ok(Some(_)) => return page(410, OVER.0, OVER.1),
                Ok(None) => return page(404, NOT_VALID.0, NOT_VALID.1),
                Err(_) => return page(503, "Not recorded", "Your report could not be recorded just now. Try again in a minute, or call your security team at once."),
            };
            match report(ctx, &recall, &link).await {
                Ok(true) => page(200, "Thank you", "Your account is being locked and its factors removed. Your security team will contact you; you do not need to do anything else."),
                Ok(false) => page(200, "Already received", "Your report was received before; your security team will contact you."),
                Err(why) => {
                    tracing::warn!(recall = %link.recall, backend = %link.backend, error = %why, "a not-me report could not be kept");
                    page(503, "Not recorded", "Your report could not be recorded just now. Try again in a minute, or call your security team at once.")
                }
            }
        }
        _ => page(405, "Not allowed", "Open the link from the message."),
    }
}

/// Keeps the report in the recall's ledger and the audit trail; false when the user reported before.
async fn report(ctx: &Context, recall: &MfaRecall, link: &Link) -> Result<bool, String> {
    let owner = recall.controller_owner_ref(&()).ok_or("the recall has no uid")?;
    let ledger = ResourceLedger::new(ctx.client.clone(), &recall.namespace().unwrap_or_default(), owner, ctx.ledger_key.clone());
    let report = NotMe { backend: link.backend.clone(), user_id: link.user.clone(), at: jiff::Timestamp::now() };
    if !ledger.add_report(&report).await.map_err(|e| e.to_string())? {
        return Ok(false);
    }
    let event = AuditEvent {
        recall: link.recall.clone(),
        backend: Some(link.backend.clone()),
        user: Some(link.user.clone()),
        action: Action::NotMeReported,
        outcome: Outcome::Done,
        detail: Some("the user said, from the notice of a new factor, that it was not them; the next check quarantines them".into()),
        ..Default::default()
    };
    ctx.audit.record(event).map_err(|e| e.to_string())?;
    Ok(true)
}

/// A small page that loads nothing and runs nothing.
fn page(status: u16, title: &str, body: &str) -> Response<Full<bytes::Bytes>> {
    let html = format!("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>");
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("content-security-policy", "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("cache-control", "no-store")
        .body(Full::new(bytes::Bytes::from(html)))
        .expect("a response of fixed parts")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_from_queries_and_forms_alike() {
        let link = Link::parse(b"recall=security%2Finc-42&backend=okta&user=00u1%26x&token=ab&other=1");
        assert_eq!(link, Link { recall: "security/inc-42".into(), backend: "okta".into(), user: "00u1&x".into(), token: "ab".into() });
        assert_eq!(escape("\"><script>"), "&quot;&gt;&lt;script&gt;");
    }
}
