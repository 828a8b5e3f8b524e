//! The framing of an HTTP/1.1 response, without I/O: where its head ends and what it says ([`parse_head`]),
//! and where its body ends ([`Body::decode`]), fed whatever bytes have arrived. `client` does the reading;
//! keeping this apart lets every framing rule be tested on byte strings, split at any point.

use std::mem::MaybeUninit;

use crate::record::headers;

/// The most headers a response head may have (hyper's default too).
pub(crate) const MAX_HEADERS: usize = 100;
/// The longest chunk-size or trailer line accepted.
pub(crate) const MAX_LINE: usize = 4 * 1024;
/// How much of a failed response's body is kept: enough to find a proxy's one-line reason
/// (`upstream connect error: ...`) or an error page's message, which say which hop failed.
pub(crate) const EXCERPT: usize = 1024;
/// The longest reason a record shows, in characters.
const REASON_CHARS: usize = 200;

/// The response headers a record keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Answer {
    pub revision: Option<String>,
    pub version: Option<String>,
    pub proxy: Option<String>,
    pub pod: Option<String>,
    pub upstream_revision: Option<String>,
    pub upstream_version: Option<String>,
    pub upstream_pod: Option<String>,
    pub server: Option<String>,
}

impl Answer {
    /// Keeps `value` if `name` is one of the headers a record keeps, and the first of that name (as
    /// `HeaderMap::get` did).
    pub(crate) fn offer(&mut self, name: &str, value: &[u8]) {
        let slot = if name.eq_ignore_ascii_case(headers::SERVER) {
            &mut self.server
        } else if name.as_bytes().get(..X_MESHSHIFT.len()).is_some_and(|p| p.eq_ignore_ascii_case(X_MESHSHIFT)) {
            let lab = [
                (headers::REVISION, &mut self.revision),
                (headers::VERSION, &mut self.version),
                (headers::PROXY, &mut self.proxy),
                (headers::POD, &mut self.pod),
                (headers::UPSTREAM_REVISION, &mut self.upstream_revision),
                (headers::UPSTREAM_VERSION, &mut self.upstream_version),
                (headers::UPSTREAM_POD, &mut self.upstream_pod),
            ];
            match lab.into_iter().find(|(n, _)| name.eq_ignore_ascii_case(n)) {
                Some((_, slot)) => slot,
                None => return,
            }
        } else {
            return;
        };
        if slot.is_none() {
            *slot = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
}

/// The prefix of the lab's headers.
const X_MESHSHIFT: &[u8] = b"x-meshshift-";

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct FinalHead {
    /// Its length in bytes.
    pub len: usize,
    pub status: u16,
    pub body: Body,
    /// The connection ends after this response.
    pub close: bool,
}

/// What the start of a buffer holds.
#[derive(Debug)]
pub(crate) enum Head {
    /// Not a complete head yet.
    Partial,
    /// A complete 1xx head of this length: to be skipped.
    Informational(usize),
    /// A complete final head.
    Final(FinalHead),
}

/// Parses the response head at the start of `buf`; a final head's headers that a record keeps go to
/// `answer`.
pub(crate) fn parse_head(buf: &[u8], answer: &mut Answer) -> Result<Head, String> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut response, buf, &mut slots)
        .map_err(|e| format!("invalid response head: {e}"))?;
    let httparse::Status::Complete(len) = parsed else {
        return Ok(Head::Partial);
    };
    let status = response.code.unwrap_or_default();
    match status {
        101 => return Err("unexpected 101 Switching Protocols: the prober asked for no upgrade".to_owned()),
        100..=199 => return Ok(Head::Informational(len)),
        _ => {}
    }
    let mut length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut close = false;
    let mut keep_alive = false;
    for h in response.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|&b| b == b',') {
                let n = parse_length(part.trim_ascii())
                    .ok_or_else(|| format!("invalid content-length {:?}", String::from_utf8_lossy(h.value)))?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting content-length headers".to_owned());
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding matters: chunked or not.
            transfer_encoding = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else {
            answer.offer(name, h.value);
        }
    }
    // HTTP/1.0 closes unless the server says otherwise.
    if response.version == Some(0) && !keep_alive {
        close = true;
    }
    // RFC 9112, 6.3: no body for 204 and 304; transfer-encoding over content-length; else read to the end.
    let state = if status == 204 || status == 304 {
        Body::Done
    } else if let Some(te) = transfer_encoding {
        let last = te.rsplit(|&b| b == b',').next().map(<[u8]>::trim_ascii).unwrap_or_default();
        if last.eq_ignore_ascii_case(b"chunked") { Body::ChunkSize } else { Body::Eof }
    } else {
        match length {
            Some(0) => Body::Done,
            Some(n) => Body::Length(n),
            None => Body::Eof,
        }
    };
    let close = close || state == Body::Eof;
    Ok(Head::Final(FinalHead { len, status, body: state, close }))
}

/// A content-length value: decimal digits only.
fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Where a response body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// This many bytes to go.
    Length(u64),
    /// Chunked: at a chunk-size line.
    ChunkSize,
    /// Chunked: this many bytes of chunk data to go, then CRLF.
    ChunkData(u64),
    /// Chunked: at the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunked: after the last chunk, at a trailer line or the final empty line.
    Trailers,
    /// Until the connection closes.
    Eof,
    /// Complete.
    Done,
}

/// Consumes a response body, keeping at most an excerpt of it.
impl Body {
    pub(crate) fn is_done(self) -> bool {
        self == Body::Done
    }

    /// What is still missing, for an error message.
    pub(crate) fn missing(self) -> String {
        match self {
            Body::Length(n) => format!("{n} bytes of the body missing"),
            Body::ChunkSize | Body::ChunkData(_) | Body::ChunkEnd => "in a chunked body".to_owned(),
            Body::Trailers => "in the trailers of a chunked body".to_owned(),
            Body::Eof | Body::Done => "after the body".to_owned(),
        }
    }

    /// Consumes what it can of `data`, from its start; returns how many bytes. It stops early only at the
    /// end of the body or at an incomplete line (which needs more bytes after it). The body's content (not
    /// its chunk framing) goes to `excerpt`, if given, until that holds [`EXCERPT`] bytes.
    pub(crate) fn decode(&mut self, data: &[u8], mut excerpt: Option<&mut Vec<u8>>) -> Result<usize, String> {
        let mut keep = |content: &[u8]| {
            if let Some(e) = excerpt.as_deref_mut() {
                e.extend_from_slice(&content[..content.len().min(EXCERPT.saturating_sub(e.len()))]);
            }
        };
        let mut pos = 0;
        loop {
            let rest = &data[pos..];
            match *self {
                Body::Done => return Ok(pos),
                Body::Eof => {
                    keep(rest);
                    return Ok(data.len());
                }
                Body::Length(n) | Body::ChunkData(n) => {
                    let take = rest.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    keep(&rest[..take]);
                    pos += take;
                    let left = n - take as u64;
                    *self = match *self {
                        Body::Length(_) if left == 0 => Body::Done,
                        Body::Length(_) => Body::Length(left),
                        _ if left == 0 => Body::ChunkEnd,
                        _ => Body::ChunkData(left),
                    };
                    if left > 0 {
                        return Ok(pos);
                    }
                }
                Body::ChunkSize => {
                    // httparse reads an empty line as size 0: a size needs at least one hex digit.
                    if rest.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                        return Err("invalid chunk size line".to_owned());
                    }
                    match httparse::parse_chunk_size(rest) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            pos += used;
                            *self = if size == 0 { Body::Trailers } else { Body::ChunkData(size) };
                        }
                        Ok(httparse::Status::Partial) => return Ok(pos),
                        Err(_) => return Err("invalid chunk size line".to_owned()),
                    }
                }
                Body::ChunkEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        *self = Body::ChunkSize;
                    }
                    [] | [b'\r'] => return Ok(pos),
                    _ => return Err("chunk data not followed by CRLF".to_owned()),
                },
                Body::Trailers => {
                    let Some(end) = rest.iter().position(|&b| b == b'\n') else { return Ok(pos) };
                    pos += end + 1;
                    let line = &rest[..end];
                    if line.strip_suffix(b"\r").unwrap_or(line).is_empty() {
                        *self = Body::Done;
                    }
                }
            }
        }
    }
}

/// What a record shows of a failed response's body: its first non-empty line, or for an HTML error page
/// its text (tags dropped, the common entities decoded, white space collapsed), at most [`REASON_CHARS`]
/// characters.
pub(crate) fn reason(excerpt: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(excerpt);
    let text = text.trim_start();
    let reason =
        if text.starts_with('<') { html_text(text) } else { text.lines().next().unwrap_or_default().trim().to_owned() };
    (!reason.is_empty()).then(|| reason.chars().take(REASON_CHARS).collect())
}

/// The text of (the start of) an HTML page. Not an HTML parser: enough for an error page's message.
fn html_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = [("&quot;", "\""), ("&#39;", "'"), ("&lt;", "<"), ("&gt;", ">"), ("&nbsp;", " "), ("&amp;", "&")]
        .iter()
        .fold(text, |t, (entity, c)| t.replace(entity, c));
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `data` fed `step` bytes at a time, as the client does: unconsumed bytes wait for the next.
    fn decode(mut body: Body, data: &[u8], step: usize) -> (Body, Vec<u8>) {
        let mut excerpt = Vec::new();
        let (mut buf, mut fed) = (Vec::new(), 0);
        while fed < data.len() && !body.is_done() {
            let n = step.min(data.len() - fed);
            buf.extend_from_slice(&data[fed..fed + n]);
            fed += n;
            let used = body.decode(&buf, Some(&mut excerpt)).unwrap();
            buf.drain(..used);
        }
        (body, excerpt)
    }

    #[test]
    fn the_excerpt_is_the_content_without_framing_and_capped() {
        for step in [1, 2, 5, usize::MAX] {
            let (end, kept) = decode(Body::ChunkSize, b"3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nt: 1\r\n\r\n", step);
            assert_eq!((end, kept.as_slice()), (Body::Done, &b"abcde"[..]), "step {step}");
            let long = vec![b'x'; 3 * EXCERPT];
            let (end, kept) = decode(Body::Length(long.len() as u64), &long, step);
            assert_eq!((end, kept.len()), (Body::Done, EXCERPT), "step {step}");
            let (end, kept) = decode(Body::Eof, b"to the end", step);
            assert_eq!((end, kept.as_slice()), (Body::Eof, &b"to the end"[..]), "step {step}");
        }
        // Without an excerpt, nothing is kept and the body still ends in the same place.
        let mut body = Body::Length(2);
        assert_eq!(body.decode(b"okextra", None), Ok(2));
        assert!(body.is_done());
    }

    #[test]
    fn the_reason_is_the_first_line_or_an_error_pages_text() {
        assert_eq!(reason(b"  no healthy upstream\r\nsecond"), Some("no healthy upstream".to_owned()));
        assert_eq!(reason(b"\xffbad utf8"), Some("\u{fffd}bad utf8".to_owned()));
        assert_eq!(reason(b"\r\n\r\nafter empty lines\nnext"), Some("after empty lines".to_owned()));
        assert_eq!(reason(b" \r\n"), None);
        assert_eq!(reason(b""), None);
        let page = b"<!DOCTYPE html>\n<html><head><title>Shop</title></head><body>\n<div class=\"error\">Sorry, \
                     details are unavailable: details (10.96.0.9:9080): &quot;reset&quot; &amp; gone</div>";
        assert_eq!(
            reason(page),
            Some("Shop Sorry, details are unavailable: details (10.96.0.9:9080): \"reset\" & gone".to_owned())
        );
        // Cut inside a tag: the partial tag is dropped. Long reasons are cut to REASON_CHARS characters.
        assert_eq!(reason(b"<p>kept</p><a href=\"x"), Some("kept".to_owned()));
        let long = "é".repeat(3 * REASON_CHARS);
        assert_eq!(reason(long.as_bytes()).map(|r| r.chars().count()), Some(REASON_CHARS));
    }
}
