//! DNS rebinding on the admin listener (SPEC §4).
//!
//! A page on another site can rebind its own name to 127.0.0.1: the browser
//! then treats this listener as that page's origin, so the forgery guard
//! (`csrf.rs`) sees a same-origin request and the page may read answers and
//! set `X-Esim-Notify-Console`. What the browser cannot change is the `Host`
//! it sends: the attacker's name. So the admin listener answers only a Host
//! it knows to be itself, and every other request gets `421 Misdirected
//! Request`, whatever path and whatever token it carries. It wraps the whole
//! admin app, so it runs before the token check and the forgery guard.
//!
//! Accepted, compared case-insensitively:
//! - `localhost`, `127.0.0.1`, `[::1]`, the listen address (`admin.listen`,
//!   as written) and the address the connection arrived on (a listener on
//!   `0.0.0.0` is reached by any of the machine's addresses: an IP literal
//!   cannot be rebound), each with the port the listener is bound to;
//! - a name in `admin.allowed_hosts` (a reverse proxy's name, the other end
//!   of an SSH tunnel on another port): an entry without a port accepts the
//!   name on any port (a proxy in front decides the port), an entry with a
//!   port only on that port.
//!
//! A Host without a port means port 80, HTTP's default, so it is accepted
//! for the built-in names only when the listener is on port 80.

use std::net::{IpAddr, SocketAddr};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use crate::config::parse_host;
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The port a Host without one names.
const DEFAULT_PORT: u16 = 80;

/// The name of an IP address as it appears in a Host (IPv6 in brackets).
fn ip_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{v6}]"),
        },
    }
}

/// Why `host` may not reach this listener, or `None` when it may.
/// `listen` is `admin.listen` as configured, `local` the address the
/// connection arrived on (its port is the one the listener is bound to).
pub fn host_refusal(
    host: &str,
    listen: &str,
    local: SocketAddr,
    allowed_hosts: &[String],
) -> Option<String> {
    let refused = || {
        Some(format!(
            "this admin listener does not answer Host {host:?}: use localhost:{port} or 127.0.0.1:{port}, \
             or add the name to admin.allowed_hosts",
            port = local.port()
        ))
    };
    let Ok((name, port)) = parse_host(host) else {
        return refused();
    };
    let port = port.unwrap_or(DEFAULT_PORT);
    let mut own = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "[::1]".to_string(),
        ip_name(local.ip()),
    ];
    if let Ok(a) = listen.parse::<SocketAddr>() {
        own.push(ip_name(a.ip()));
    } else if let Ok((n, _)) = parse_host(listen) {
        own.push(n);
    }
    if port == local.port() && own.contains(&name) {
        return None;
    }
    let listed = allowed_hosts
        .iter()
        .filter_map(|h| parse_host(h).ok())
        .any(|(n, p)| n == name && p.is_none_or(|p| p == port));
    if listed {
        return None;
    }
    refused()
}

/// Middleware on the whole admin app.
pub async fn refuse_other_hosts(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if let Some(reason) = refusal(&req) {
        tracing::warn!(
            method = %req.method(),
            path = %req.path().escape_debug(),
            %reason,
            "admin request refused: unknown Host"
        );
        let resp = ApiError::new(StatusCode::MISDIRECTED_REQUEST, reason).error_response();
        return Ok(req.into_response(resp));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Every name the request gives for its target (the `Host` header and, in
/// HTTP/2 or an absolute request URI, the URI's authority) must be accepted;
/// none at all, or two `Host` headers, is refused.
fn refusal(req: &ServiceRequest) -> Option<String> {
    let Some(app) = req.app_data::<web::Data<AppState>>() else {
        return Some("the admin listener has no configuration".into());
    };
    let admin = &app.config.admin;
    let local = req.app_config().local_addr();
    let headers: Vec<_> = req.headers().get_all(header::HOST).collect();
    if headers.len() > 1 {
        return Some("more than one Host header".into());
    }
    let mut names: Vec<String> = Vec::new();
    for h in headers {
        match h.to_str() {
            Ok(s) => names.push(s.to_string()),
            Err(_) => return Some("the Host header is not ASCII text".into()),
        }
    }
    if let Some(authority) = req.uri().authority() {
        names.push(authority.as_str().to_string());
    }
    if names.is_empty() {
        return Some(
            "a request to the admin listener must name it in a Host header (localhost:PORT)".into(),
        );
    }
    names
        .iter()
        .find_map(|n| host_refusal(n, &admin.listen, local, &admin.allowed_hosts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn ok(host: &str, listen: &str, port: u16, allowed: &[&str]) -> bool {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        host_refusal(host, listen, local(port), &allowed).is_none()
    }

    #[test]
    fn own_names_with_the_bound_port() {
        for h in [
            "localhost:8081",
            "LocalHost:8081",
            "127.0.0.1:8081",
            "[::1]:8081",
            "[0:0:0:0:0:0:0:1]:8081",
        ] {
            assert!(ok(h, "127.0.0.1:0", 8081, &[]), "{h}");
        }
        for h in [
            "localhost",
            "localhost:8080",
            "rebind.example:8081",
            "127.0.0.1.nip.io:8081",
            "",
            "localhost:",
            "localhost:+8081",
            "localhost:8081/x",
            "::1:8081",
            "user@localhost:8081",
        ] {
            assert!(!ok(h, "127.0.0.1:0", 8081, &[]), "{h}");
        }
        // Without a port only on port 80.
        assert!(ok("localhost", "127.0.0.1:80", 80, &[]));
        assert!(ok("localhost:80", "127.0.0.1:80", 80, &[]));
    }

    #[test]
    fn the_listen_address_and_the_arrival_address() {
        let l = SocketAddr::from(([10, 0, 0, 5], 9000));
        assert!(host_refusal("10.0.0.5:9000", "0.0.0.0:9000", l, &[]).is_none());
        assert!(host_refusal("0.0.0.0:9000", "0.0.0.0:9000", l, &[]).is_none());
        assert!(host_refusal("10.0.0.6:9000", "0.0.0.0:9000", l, &[]).is_some());
    }

    #[test]
    fn allowed_hosts_with_or_without_a_port() {
        assert!(ok(
            "Admin.Example.com",
            "127.0.0.1:0",
            8081,
            &["admin.example.com"]
        ));
        assert!(ok(
            "admin.example.com:443",
            "127.0.0.1:0",
            8081,
            &["ADMIN.example.com"]
        ));
        assert!(ok(
            "localhost:9000",
            "127.0.0.1:0",
            8081,
            &["localhost:9000"]
        ));
        assert!(!ok(
            "localhost:9001",
            "127.0.0.1:0",
            8081,
            &["localhost:9000"]
        ));
        assert!(!ok(
            "evil.example:8081",
            "127.0.0.1:0",
            8081,
            &["admin.example.com"]
        ));
    }
}
