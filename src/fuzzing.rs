//! Entry points for the fuzz targets in `fuzz/` (run by `hack/fuzz.sh`): each takes bytes as a
//! provider or a tenant could send them and runs the operator's own parsing on them. Any panic
//! is a defect; errors are the expected outcome.

use serde::de::DeserializeOwned;

use crate::backends::http::HttpReply;

/// Decodes `data` as `T`, as an adapter decodes an answer; the result is of no interest.
pub(crate) fn decode<T: DeserializeOwned>(data: &[u8]) {
    let _ = serde_json::from_slice::<T>(data);
}

/// An answer whose headers are `data`'s lines (`name: value`) and whose body is what follows
/// the first empty line: the header parsers (Retry-After, rate-limit budget, Date) and the
/// cut-off-body check read it.
pub fn provider_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut headers = http::HeaderMap::new();
    for line in head.lines() {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(name.trim().as_bytes()), http::HeaderValue::from_str(value.trim()))
        {
            headers.append(name, value);
        }
    }
    let reply = HttpReply { status: http::StatusCode::TOO_MANY_REQUESTS, headers, body: bytes::Bytes::from(body.to_string()) };
    crate::backends::http::read_provider_headers(&reply);
}

/// `data` as every answer each adapter decodes (pages of users and groups, factor lists, logs).
pub fn provider_json(data: &[u8]) {
    crate::backends::okta::decode_answers(data);
    crate::backends::keycloak::decode_answers(data);
    crate::backends::entra::decode_answers(data);
    crate::backends::google::decode_answers(data);
    crate::backends::duo::decode_answers(data);
    crate::backends::auth0::decode_answers(data);
}

/// `data` as an Auth0 users export (gzip of JSON lines), read line by line as the adapter does.
pub fn auth0_export(data: &[u8]) {
    crate::backends::auth0::read_export(data);
}

/// `data` as an MfaRecall and as an IdentityBackend, checked as the operator checks them before
/// acting: durations and instants; every URL against the transport rule, and the adapter built
/// from the spec and a Secret holding junk under every key an adapter reads.
pub fn tenant_objects(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<crate::api::MfaRecallSpec>(data) {
        let _ = crate::controller::run::validate(&crate::api::MfaRecall::new("fuzz", spec), None, jiff::Timestamp::now());
    }
    if let Ok(spec) = serde_json::from_slice::<crate::api::IdentityBackendSpec>(data) {
        let junk = k8s_openapi::ByteString(data.to_vec());
        let keys = ["client-id", "client-secret", "api-token", "private-key", "service-account.json", "integration-key", "secret-key"];
        let secret = k8s_openapi::api::core::v1::Secret { data: Some(keys.iter().map(|k| (k.to_string(), junk.clone())).collect()), ..Default::default() };
        let _ = crate::backends::connect(&crate::api::IdentityBackend::new("fuzz", spec), Some(&secret), &Default::default());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for bounds in [crate::duration::CHECK_INTERVAL, crate::duration::GRACE_PERIOD, crate::duration::LOG_DELAY] {
            let _ = bounds.parse(text);
        }
    }
}
