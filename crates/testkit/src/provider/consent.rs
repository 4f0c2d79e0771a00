//! The authorize page a person sees: the request's parameters, an "Allow"
//! and a "Deny" button. Both post back here; "Allow" redirects to
//! `redirect_uri` with a code and the `state`, "Deny" with
//! `error=access_denied` and the `state` (RFC 6749 §4.1.2.1).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::routes::{check_authorization_request, oauth_error, param, parse_form, redirect};
use super::state::{random_token, AuthCode, Shared};
use super::CONSENT_PATH;

/// The S256 PKCE challenge of a verifier.
pub(super) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `GET /oauth/consent`.
pub(super) async fn page(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let params = match parse_form(query.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return oauth_error("invalid_request", &e),
    };
    let client_id = match check_authorization_request(&shared, &params) {
        Ok((client_id, _)) => client_id.to_owned(),
        Err(r) => return r.into_response(),
    };
    let mut hidden = String::new();
    let mut names: Vec<&String> = params.keys().collect();
    names.sort();
    for name in names {
        hidden.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(&params[name])
        ));
    }
    let scope = params.get("scope").map(String::as_str).unwrap_or("");
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Authorize</title></head>\
         <body><h1>Authorize {client}</h1><p id=\"scope\">Scope: {scope}</p>\
         <form method=\"post\" action=\"{CONSENT_PATH}\">{hidden}\
         <button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button>\
         </form></body></html>",
        client = escape(&client_id),
        scope = escape(scope),
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// `POST /oauth/consent`: the person's decision.
pub(super) async fn decide(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let params = match parse_form(&text) {
        Ok(p) => p,
        Err(e) => return oauth_error("invalid_request", &e),
    };
    let (client_id, redirect_uri) = match check_authorization_request(&shared, &params) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let mut pairs = Vec::new();
    if param(&params, "decision") == Some("allow") {
        let code = random_token("code-");
        shared.lock().codes.insert(
            code.clone(),
            AuthCode {
                client_id: client_id.to_string(),
                redirect_uri: redirect_uri.to_string(),
                redeemed: None,
                code_challenge: param(&params, "code_challenge").map(str::to_owned),
            },
        );
        pairs.push(("code", code));
    } else {
        pairs.push(("error", "access_denied".to_owned()));
        pairs.push((
            "error_description",
            "The user denied the request".to_owned(),
        ));
    }
    if let Some(state) = param(&params, "state") {
        pairs.push(("state", state.to_string()));
    }
    redirect(redirect_uri, &pairs)
}
