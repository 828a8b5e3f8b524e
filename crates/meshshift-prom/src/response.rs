//! Prometheus' query API answers, as documented at `/api/v1/query`:
//!
//! ```json
//! {"status": "success", "data": {"resultType": "vector",
//!   "result": [{"metric": {"job": "istio-proxies"}, "value": [1700000000.123, "42"]}]}}
//! {"status": "success", "data": {"resultType": "scalar", "result": [1700000000.123, "0.5"]}}
//! {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: ..."}
//! ```
//!
//! Values are strings because they may be `NaN`, `+Inf` or `-Inf`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::PromError;

/// One series' value at the query's evaluation time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels (`__name__` included when the expression kept it); empty for a scalar.
    pub metric: BTreeMap<String, String>,
    /// The evaluation time, seconds since the Unix epoch.
    pub timestamp: f64,
    /// The value (may be NaN or infinite).
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.metric.get(name).map(String::as_str)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Value,
}

#[derive(Deserialize)]
struct VectorEntry {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Parses an instant query's answer (HTTP `status` and `body`) into samples: one per series for a
/// vector, one without labels for a scalar, none for an empty vector. A Prometheus error answer becomes
/// [`PromError::Api`]; a matrix or string result, [`PromError::UnexpectedResultType`].
pub fn parse_response(status: u16, body: &[u8]) -> Result<Vec<Sample>, PromError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(err) if (200..300).contains(&status) => return Err(PromError::Malformed(err.to_string())),
        Err(_) => {
            return Err(PromError::Status { url: String::new(), status, body: excerpt(body) });
        }
    };
    match envelope.status.as_str() {
        "success" => {}
        "error" => {
            return Err(PromError::Api {
                status,
                error_type: envelope.error_type.unwrap_or_else(|| "unknown".to_owned()),
                message: envelope.error.unwrap_or_default(),
            });
        }
        other => return Err(PromError::Malformed(format!("unknown status {other:?}"))),
    }
    let data = envelope.data.ok_or_else(|| PromError::Malformed("a success without data".to_owned()))?;
    match data.result_type.as_str() {
        "vector" => {
            let entries: Vec<VectorEntry> =
                serde_json::from_value(data.result).map_err(|e| PromError::Malformed(format!("vector: {e}")))?;
            entries
                .into_iter()
                .map(|e| Ok(Sample { metric: e.metric, timestamp: e.value.0, value: parse_value(&e.value.1)? }))
                .collect()
        }
        "scalar" => {
            let (timestamp, value): (f64, String) =
                serde_json::from_value(data.result).map_err(|e| PromError::Malformed(format!("scalar: {e}")))?;
            Ok(vec![Sample { metric: BTreeMap::new(), timestamp, value: parse_value(&value)? }])
        }
        other => Err(PromError::UnexpectedResultType { result_type: other.to_owned() }),
    }
}

/// A sample value: a Go float (`1`, `0.25`, `1e-05`, `NaN`, `+Inf`, `-Inf`).
fn parse_value(text: &str) -> Result<f64, PromError> {
    text.parse::<f64>().map_err(|_| PromError::Malformed(format!("sample value {text:?} is not a number")))
}

/// The start of a body, for an error message.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    match trimmed.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &trimmed[..end]),
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_becomes_one_sample_per_series() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","job":"istio-proxies","pod":"productpage-v1-1"},"value":[1700000000.5,"1"]},
            {"metric":{"job":"istio-proxies","pod":"gw-2"},"value":[1700000000.5,"0"]}]}}"#;
        let samples = parse_response(200, body).expect("parse");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].label("pod"), Some("productpage-v1-1"));
        assert_eq!(samples[0].label("__name__"), Some("up"));
        assert_eq!(samples[0].value, 1.0);
        assert_eq!(samples[0].timestamp, 1_700_000_000.5);
        assert_eq!(samples[1].value, 0.0);
        assert_eq!(samples[1].label("missing"), None);
    }

    #[test]
    fn special_values_parse() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"a":"1"},"value":[1,"NaN"]},{"metric":{"a":"2"},"value":[1,"+Inf"]},
            {"metric":{"a":"3"},"value":[1,"-Inf"]},{"metric":{"a":"4"},"value":[1,"1e-05"]}]}}"#;
        let values: Vec<f64> = parse_response(200, body).expect("parse").iter().map(|s| s.value).collect();
        assert!(values[0].is_nan());
        assert_eq!(values[1], f64::INFINITY);
        assert_eq!(values[2], f64::NEG_INFINITY);
        assert_eq!(values[3], 1e-5);
    }

    #[test]
    fn a_scalar_is_one_sample_without_labels() {
        let body = br#"{"status":"success","data":{"resultType":"scalar","result":[1700000001,"0.25"]}}"#;
        let samples = parse_response(200, body).expect("parse");
        assert_eq!(samples, vec![Sample { metric: BTreeMap::new(), timestamp: 1_700_000_001.0, value: 0.25 }]);
    }

    #[test]
    fn an_empty_vector_is_no_samples() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_response(200, body).expect("parse").is_empty());
        // A sample without `metric` (sum over everything) has no labels.
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"3"]}]}}"#;
        assert!(parse_response(200, body).expect("parse")[0].metric.is_empty());
    }

    #[test]
    fn an_error_answer_is_an_api_error() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \"}\""}"#;
        match parse_response(400, body) {
            Err(PromError::Api { status: 400, error_type, message }) => {
                assert_eq!(error_type, "bad_data");
                assert!(message.contains("parse error"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let err = parse_response(503, br#"{"status":"error","errorType":"timeout","error":"query timed out"}"#)
            .expect_err("timeout");
        assert_eq!(err.to_string(), "Prometheus refused the query (timeout, HTTP 503): query timed out");
    }

    #[test]
    fn matrix_and_string_results_are_refused() {
        let matrix =
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#;
        assert!(matches!(
            parse_response(200, matrix),
            Err(PromError::UnexpectedResultType { result_type }) if result_type == "matrix"
        ));
        let string = br#"{"status":"success","data":{"resultType":"string","result":[1,"hello"]}}"#;
        assert!(matches!(parse_response(200, string), Err(PromError::UnexpectedResultType { .. })));
    }

    #[test]
    fn garbage_is_malformed_or_a_status_error() {
        assert!(matches!(parse_response(200, b"<html>not json</html>"), Err(PromError::Malformed(_))));
        match parse_response(404, b"404 page not found\n") {
            Err(PromError::Status { status: 404, body, .. }) => assert_eq!(body, "404 page not found"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_response(200, br#"{"status":"success"}"#), Err(PromError::Malformed(_))));
        assert!(matches!(parse_response(200, br#"{"status":"maybe"}"#), Err(PromError::Malformed(_))));
        let bad_value =
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#;
        assert!(matches!(parse_response(200, bad_value), Err(PromError::Malformed(m)) if m.contains("\"x\"")));
    }
}
