//! What to probe and how hard, the prober's errors, and parsers for command-line values.

use std::time::Duration;

use crate::buckets::DEFAULT_BUCKET;

/// What a probe does.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    /// URLs, requested round-robin (`http://`, loopback or lab addresses only: see [`crate::target`]).
    pub urls: Vec<String>,
    /// Requests per second, over all URLs together.
    pub rate: f64,
    /// How long to send for (`None`: until [`crate::ProbeHandle::stop`]).
    pub duration: Option<Duration>,
    /// Connections per host: at most this many requests are in flight to one host; later ones queue (and
    /// their latency, counted from their scheduled time, shows it).
    pub connections: usize,
    /// Extra request headers, in order (`Host` and `User-Agent` replace the defaults).
    pub headers: Vec<(String, String)>,
    /// Per-request timeout, from the moment a connection takes the request (connecting included).
    pub timeout: Duration,
    /// After the last request is due (or `stop`), how long queued and in-flight requests may still take;
    /// those that have not finished then are recorded as failed (`aborted`), never dropped.
    pub drain: Duration,
    /// Width of the aggregation buckets.
    pub bucket: Duration,
}

impl ProbeConfig {
    /// Defaults: until stopped, [`default_connections`], 5 s timeout, 10 s drain, 100 ms buckets, no extra
    /// headers.
    pub fn new(urls: Vec<String>, rate: f64) -> Self {
        Self {
            urls,
            rate,
            duration: None,
            connections: default_connections(rate),
            headers: Vec::new(),
            timeout: Duration::from_secs(5),
            drain: Duration::from_secs(10),
            bucket: DEFAULT_BUCKET,
        }
    }
}

/// Enough connections that `rate` is kept even when answers take a second (a loaded gateway, a loaded
/// machine): the rate per second, at least 16. An open-loop probe queues what its connections cannot
/// carry, and requests still queued when it ends count as failed; a worker without a request holds at most
/// an idle connection, so the headroom costs little.
pub fn default_connections(rate: f64) -> usize {
    if rate.is_finite() && rate > 0.0 { (rate.ceil() as usize).clamp(16, MAX_CONNECTIONS) } else { 16 }
}

/// Connections above this are refused: the prober is for steady probing traffic, not load generation.
pub const MAX_CONNECTIONS: usize = 4096;

/// The prober's errors.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A URL that cannot be parsed or used.
    #[error("{url}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// A URL whose host is not a loopback or lab address.
    #[error(
        "{url}: refusing to probe {host}: only loopback (127.0.0.0/8, ::1, localhost) and lab (10.0.0.0/8) \
         addresses may be probed"
    )]
    NotAllowed {
        /// The URL as given.
        url: String,
        /// Its host.
        host: String,
    },
    /// A header that is not `NAME:VALUE` with a valid name and value.
    #[error("invalid header {input:?}: {reason}")]
    InvalidHeader {
        /// The header as given.
        input: String,
        /// Why it is refused.
        reason: String,
    },
    /// A duration that cannot be parsed.
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration {
        /// The duration as given.
        input: String,
        /// Why it is refused.
        reason: String,
    },
    /// Rate, connections, timeouts or buckets out of range.
    #[error("invalid probe configuration: {0}")]
    InvalidConfig(String),
    /// `Prober::start` was called outside a Tokio runtime.
    #[error("the prober must be started inside a Tokio runtime")]
    NoRuntime,
    /// The prober's task panicked or was cancelled.
    #[error("the prober's task failed: {0}")]
    Task(String),
}

impl ProbeError {
    /// Whether the error is the caller's input (a command line exits 2 for these).
    pub fn is_input(&self) -> bool {
        !matches!(self, ProbeError::NoRuntime | ProbeError::Task(_))
    }
}

/// Parses `NAME:VALUE` (spaces around the value are trimmed), checking both are valid HTTP.
pub fn parse_header(input: &str) -> Result<(String, String), ProbeError> {
    let err = |reason: &str| ProbeError::InvalidHeader { input: input.to_owned(), reason: reason.to_owned() };
    let (name, value) = input.split_once(':').ok_or_else(|| err("expected NAME:VALUE"))?;
    let name = name.trim();
    let value = value.trim();
    hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| err("not a valid header name"))?;
    hyper::header::HeaderValue::from_str(value).map_err(|_| err("not a valid header value"))?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Parses `1.5s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, ProbeError> {
    let err = |reason: &str| ProbeError::InvalidDuration { input: input.to_owned(), reason: reason.to_owned() };
    let s = input.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().map_err(|_| err("expected a number with a unit, e.g. 10s, 500ms, 2m"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err("unknown unit (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(number * scale).map_err(|_| err("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_carry_the_rate_for_a_second_of_answers() {
        assert_eq!(default_connections(50.0), 50);
        assert_eq!(default_connections(500.5), 501);
        assert_eq!(default_connections(2.0), 16, "at least 16");
        assert_eq!(default_connections(1e9), MAX_CONNECTIONS);
        assert_eq!(default_connections(f64::NAN), 16);
        assert_eq!(ProbeConfig::new(vec![], 100.0).connections, 100);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "s", "10x", "-1s", "1.2.3s", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header("Host: bookinfo.example").unwrap(), ("Host".into(), "bookinfo.example".into()));
        assert_eq!(parse_header("x-a:b:c").unwrap(), ("x-a".into(), "b:c".into()));
        for bad in ["novalue", "bad name: x", ":x", "x: a\nb"] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
    }
}
