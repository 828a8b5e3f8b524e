//! Which URLs may be probed, and what a request to one needs.
//!
//! The prober generates sustained traffic, so it only targets this machine (loopback) or the lab's network
//! namespace (10.0.0.0/8, where the lab's pod and service addresses live): pointed at someone else's host by
//! a typo, it would be a small denial-of-service tool. Hosts must be IP literals or `localhost`, so no name
//! can resolve somewhere unexpected.

use std::net::IpAddr;

use hyper::Uri;

use crate::config::ProbeError;

/// A validated URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    url: String,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Target {
    /// Parses and checks `url`: `http://HOST[:PORT][/PATH]` with an allowed host ([`is_allowed_host`]).
    pub fn parse(url: &str) -> Result<Self, ProbeError> {
        let invalid = |reason: &str| ProbeError::InvalidUrl { url: url.to_owned(), reason: reason.to_owned() };
        let uri: Uri = url.parse().map_err(|e| invalid(&format!("not a URL ({e})")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported: the prober speaks plain HTTP/1.1, as the lab's gateways do",
                ));
            }
            Some(other) => return Err(invalid(&format!("unsupported scheme {other:?} (use http://)"))),
            None => return Err(invalid("missing scheme (use http://HOST[:PORT]/PATH)")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information in URLs is not supported"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        if !is_allowed_host(&host) {
            return Err(ProbeError::NotAllowed { url: url.to_owned(), host });
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Ok(Self {
            url: url.to_owned(),
            host,
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path: if path.is_empty() { "/".to_owned() } else { path.to_owned() },
        })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The host to connect to (IP literal without brackets, or `localhost`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The default `Host` header: the URL's authority.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The request target (path and query).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Whether `host` (without brackets) may be probed: `localhost`, or an IP literal in 127.0.0.0/8 or
/// 10.0.0.0/8, or `::1` (IPv4-mapped IPv6 forms of the allowed IPv4 ranges too).
pub fn is_allowed_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.is_loopback() || v4.octets()[0] == 10,
        Ok(IpAddr::V6(v6)) => v6.is_loopback(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts() {
        for ok in
            ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "10.244.0.7", "10.96.0.1", "::1", "::ffff:127.0.0.1"]
        {
            assert!(is_allowed_host(ok), "{ok}");
        }
        for refused in
            ["example.com", "8.8.8.8", "192.168.1.1", "172.16.0.1", "11.0.0.1", "::", "2001:db8::1", "0.0.0.0"]
        {
            assert!(!is_allowed_host(refused), "{refused}");
        }
    }

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:8080/productpage?u=1").unwrap();
        assert_eq!(
            (t.host(), t.port(), t.authority(), t.path()),
            ("127.0.0.1", 8080, "127.0.0.1:8080", "/productpage?u=1")
        );
        let t = Target::parse("http://[::1]:9000").unwrap();
        assert_eq!((t.host(), t.port(), t.authority(), t.path()), ("::1", 9000, "[::1]:9000", "/"));
        let t = Target::parse("http://localhost/").unwrap();
        assert_eq!((t.host(), t.port()), ("localhost", 80));
    }

    #[test]
    fn refuses_bad_or_foreign_urls() {
        let err = Target::parse("http://example.com/").unwrap_err();
        assert!(matches!(err, ProbeError::NotAllowed { .. }));
        assert!(err.to_string().contains("only loopback"), "{err}");
        assert!(matches!(Target::parse("http://1.1.1.1/"), Err(ProbeError::NotAllowed { .. })));
        for bad in
            ["https://127.0.0.1/", "ftp://127.0.0.1/", "127.0.0.1:80", "/path", "http://user@127.0.0.1/", "not a url"]
        {
            assert!(matches!(Target::parse(bad), Err(ProbeError::InvalidUrl { .. })), "{bad}");
        }
    }
}
