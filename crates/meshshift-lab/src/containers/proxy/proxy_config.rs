//! Reading single fields of Istio's ProxyConfig (env `PROXY_CONFIG`, annotation `proxy.istio.io/config`)
//! and Go/protobuf durations (`5s`, `1m30s`, `500ms`).
//!
//! Why a field scan rather than a YAML parser: the injector writes these as JSON (`{"discoveryAddress":
//! ...}`), users write the annotation as YAML block or flow style, and the proxy needs two top-level scalar
//! fields. Finding `key`, then the `:` and the scalar after it, reads all three forms the same way.

use std::time::Duration;

/// The scalar value of top-level field `key` in a ProxyConfig text (JSON, YAML block or flow style),
/// without quotes; `None` when absent or empty.
pub fn field(text: &str, key: &str) -> Option<String> {
    let mut search = 0;
    while let Some(found) = text[search..].find(key) {
        let start = search + found;
        let end = start + key.len();
        search = end;
        // A whole key: not part of a longer identifier.
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = text[end..].trim_start_matches(['"', '\'']).trim_start();
        let Some(value) = rest.strip_prefix(':') else { continue };
        let value = value.trim_start_matches([' ', '\t']);
        let quoted = value.starts_with(['"', '\'']);
        let value = value.trim_start_matches(['"', '\'']);
        let stop: &[char] = if quoted { &['"', '\'', '\n'] } else { &[',', '}', '\n', '#', '"', '\''] };
        let scalar = value.split(stop).next().unwrap_or_default().trim();
        return (!scalar.is_empty()).then(|| scalar.to_owned());
    }
    None
}

/// Parses a Go/protobuf-JSON duration: a sequence of decimal numbers with units `h`, `m`, `s`, `ms`,
/// `us`, `ns` (`1m30s`, `2.5s`, `500ms`). A bare number is seconds, as in protobuf's JSON form.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_yaml_and_flow_style() {
        let json = r#"{"discoveryAddress":"istiod-1-9-7.istio-system.svc:15012","terminationDrainDuration":"12s"}"#;
        assert_eq!(field(json, "discoveryAddress").as_deref(), Some("istiod-1-9-7.istio-system.svc:15012"));
        assert_eq!(field(json, "terminationDrainDuration").as_deref(), Some("12s"));
        let yaml =
            "concurrency: 2\ndiscoveryAddress: istiod.istio-system.svc:15012\nterminationDrainDuration: 20s # why\n";
        assert_eq!(field(yaml, "discoveryAddress").as_deref(), Some("istiod.istio-system.svc:15012"));
        assert_eq!(field(yaml, "terminationDrainDuration").as_deref(), Some("20s"));
        let flow = "{ terminationDrainDuration: 7s, concurrency: 1 }";
        assert_eq!(field(flow, "terminationDrainDuration").as_deref(), Some("7s"));
        assert_eq!(field("{}\n", "discoveryAddress"), None);
        assert_eq!(field("xdiscoveryAddress: a", "discoveryAddress"), None, "only whole keys");
        assert_eq!(field("discoveryAddress: ''", "discoveryAddress"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2.5s"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration(""), None);
    }
}
