//! The gateway's token cookie, and what it lets notebooks' own cookies do.

use axum::http::header::{self, HeaderMap};

use crate::addressing::{Addressing, Routing};
use atelier_domain::NotebookId;

/// The cookie that carries the token after a `?token=` visit, over http.
pub const TOKEN_COOKIE: &str = "atelier-token";
/// Its name over https: the `__Host-` prefix makes browsers refuse it unless it is `Secure`,
/// `Path=/` and host-only, so no other host can plant one.
const TOKEN_COOKIE_HOST: &str = "__Host-atelier-token";

/// The `Set-Cookie` value that keeps `token` for the notebook's origin: host-only (no
/// `Domain`), `HttpOnly`, `SameSite=Lax`, and `Secure` over https.
pub(crate) fn token_cookie(addressing: &Addressing, id: &NotebookId, token: &str) -> String {
    let secure = addressing.secure();
    let (name, path) = match (addressing.routing(), secure) {
        (Routing::Host, true) => (TOKEN_COOKIE_HOST, "/".to_owned()),
        (Routing::Host, false) => (TOKEN_COOKIE, "/".to_owned()),
        (Routing::Path, _) => (TOKEN_COOKIE, format!("/{id}/")),
    };
    let mut cookie = format!("{name}={token}; Path={path}; HttpOnly; SameSite=Lax");
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Every token cookie the request carries. There can be several (a sibling host may have
/// planted one for a parent domain); any that matches will do.
pub(crate) fn token_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .filter(|(name, _)| *name == TOKEN_COOKIE || *name == TOKEN_COOKIE_HOST)
        .map(|(_, value)| value)
}

/// A notebook's own `Set-Cookie`, confined to the notebook's host: `Domain` removed (it would
/// reach every notebook under the parent domain), `SameSite=Lax` unless `Strict`, and
/// `Secure` over https. Other attributes are kept.
pub(crate) fn confine(set_cookie: &str, secure: bool) -> String {
    let mut parts = set_cookie.split(';');
    let mut out = parts.next().unwrap_or("").trim().to_owned();
    let mut strict = false;
    let mut has_secure = false;
    for attribute in parts {
        let attribute = attribute.trim();
        let name = attribute
            .split_once('=')
            .map_or(attribute, |(name, _)| name)
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "domain" | "" => continue,
            "samesite" => {
                strict = attribute
                    .split_once('=')
                    .is_some_and(|(_, v)| v.trim().eq_ignore_ascii_case("strict"));
                continue;
            }
            "secure" => has_secure = true,
            _ => {}
        }
        out.push_str("; ");
        out.push_str(attribute);
    }
    out.push_str(if strict {
        "; SameSite=Strict"
    } else {
        "; SameSite=Lax"
    });
    if secure && !has_secure {
        out.push_str("; Secure");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notebook_cookies_stay_on_their_host() {
        assert_eq!(
            confine(
                "_xsrf=2|ab; Domain=localhost; Path=/; SameSite=None; expires=x",
                false
            ),
            "_xsrf=2|ab; Path=/; expires=x; SameSite=Lax"
        );
        assert_eq!(
            confine("a=b; HttpOnly; domain=.example.com; SameSite=Strict", true),
            "a=b; HttpOnly; SameSite=Strict; Secure"
        );
        assert_eq!(confine("a=b; Secure", true), "a=b; Secure; SameSite=Lax");
    }

    #[test]
    fn the_token_cookie_is_host_only_and_secure_over_https() {
        let id: NotebookId = "4f2c9a52-1b6e-4c3d-9e8f-0a1b2c3d4e5f".parse().unwrap();
        let local = Addressing::local(8081, Routing::Host);
        assert_eq!(
            token_cookie(&local, &id, "t"),
            "atelier-token=t; Path=/; HttpOnly; SameSite=Lax"
        );
        let public = Addressing::new("https://nb.example.com", Routing::Host).unwrap();
        assert_eq!(
            token_cookie(&public, &id, "t"),
            "__Host-atelier-token=t; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        let path = Addressing::new("http://127.0.0.1:8081", Routing::Path).unwrap();
        assert_eq!(
            token_cookie(&path, &id, "t"),
            format!("atelier-token=t; Path=/{id}/; HttpOnly; SameSite=Lax")
        );
    }

    #[test]
    fn every_token_cookie_is_offered() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            "atelier-token=planted; _xsrf=x".parse().unwrap(),
        );
        headers.append(header::COOKIE, "__Host-atelier-token=real".parse().unwrap());
        assert_eq!(
            token_cookies(&headers).collect::<Vec<_>>(),
            ["planted", "real"]
        );
    }
}
