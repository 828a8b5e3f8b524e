//! `report.html` (pure): one self-contained page. The headline, the step table and the warnings are
//! rendered here (they read without JavaScript); the report's JSON is embedded in
//! `<script type="application/json" id="report-data">` and the inline script `report.js` draws the charts
//! from it as SVG. Nothing is loaded from anywhere: no external URLs, no fonts, no images.

use std::fmt::Write as _;

use crate::build::{Report, StepReport};

/// The charts' script, inlined into the page.
const SCRIPT: &str = include_str!("report.js");

/// The page's styles, inlined into the page.
const STYLE: &str = r#"
:root { --fg: #1d2329; --muted: #5f6b76; --line: #d8dee4; --ok: #2e7d32; --bad: #c62828; --warn: #ef6c00; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); margin: 0;
  padding: 24px 32px 48px; max-width: 1100px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; }
#headline { font-size: 26px; margin: 12px 0 2px; font-weight: 600; }
.sub, .muted { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  background: #eceff1; color: var(--fg); vertical-align: middle; }
.badge.finished, .badge.done { background: #e8f5e9; color: var(--ok); }
.badge.failed, .badge.breach, .badge.rolled-back { background: #ffebee; color: var(--bad); }
.badge.paused, .badge.incomplete, .badge.undone, .badge.undoing { background: #fff3e0; color: var(--warn); }
.error { color: var(--bad); white-space: pre-wrap; }
figure.chart { margin: 16px 0 0; }
figure.chart figcaption { font-weight: 600; margin-bottom: 2px; }
figure.chart figcaption .readout { font-weight: 400; color: var(--muted); margin-left: 12px;
  font-variant-numeric: tabular-nums; }
svg { width: 100%; height: auto; display: block; overflow: visible; }
svg text { font: 11px system-ui, sans-serif; fill: var(--muted); }
svg .axis line, svg .grid line { stroke: var(--line); }
svg .series { fill: none; stroke-width: 1.5; }
svg .series.area { stroke: none; fill-opacity: 0.85; }
svg .step-band { fill: #90a4ae; fill-opacity: 0.08; }
svg .step-band.bad { fill: var(--bad); fill-opacity: 0.10; }
svg .step-marker { stroke: #78909c; stroke-dasharray: 3 3; }
svg .step-num { fill: #546e7a; font-size: 10px; }
svg .step-bar { fill: #90a4ae; }
svg .step-bar.done { fill: #66bb6a; }
svg .step-bar.failed, svg .step-bar.breach { fill: #e57373; }
svg .step-bar.undone, svg .step-bar.undoing { fill: #ffb74d; }
svg .step-label { fill: var(--fg); }
svg .cursor { stroke: #37474f; stroke-width: 1; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.when { white-space: nowrap; }
td.bad { color: var(--bad); font-weight: 600; }
ul.gates { list-style: none; margin: 0; padding: 0; }
ul.gates li.fail { color: var(--bad); }
.gate-detail, .step-detail { color: var(--muted); font-size: 12px; }
code { font-size: 12px; }
#js-error { color: var(--bad); }
"#;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON for a `<script type="application/json">` element: `<`, `>` and `&` become `\u003c` etc. (they can
/// only occur inside JSON strings, where the escape means the same), so no value can end the element.
pub fn script_json<T: serde::Serialize>(value: &T) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds for people: `850 ms`, `12.3 s`, `4m 05s`, `1h 02m`.
pub fn human_ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// A latency in milliseconds for people.
fn human_latency(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// A ratio as a percentage with enough digits to tell a few failures from none: `2.50%`, `0.013%`.
pub fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p == 0.0 || p >= 0.1 { format!("{p:.2}%") } else { format!("{p:.3}%") }
}

/// Unix milliseconds as `2024-05-01 12:34:56 UTC`.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// The headline: `N requests, M failed` (or that no traffic was measured).
pub fn headline(report: &Report) -> String {
    if report.totals.measured {
        format!("{} requests, {} failed", report.totals.requests, report.totals.failed)
    } else {
        "No traffic measured".to_owned()
    }
}

/// Renders the page (pure).
pub fn render_html(report: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let from = format!("{} ({})", report.from.revision, report.from.version);
    let to = format!("{} ({})", report.to.revision, report.to.version);
    let title = format!("meshshift upgrade {} → {}: {}", report.from.revision, report.to.revision, report.outcome);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    let _ = writeln!(
        h,
        "<header>\n<h1>Upgrade {} → {} <span class=\"badge {}\" id=\"outcome\">{}</span></h1>",
        escape(&from),
        escape(&to),
        escape(&report.outcome),
        escape(&report.outcome)
    );
    let _ = writeln!(
        h,
        "<div class=\"muted\">started {}, lasted {}</div>",
        utc(report.origin_unix_ms),
        human_ms(report.duration_ms)
    );
    if let Some(e) = &report.error {
        let _ = writeln!(h, "<div class=\"error\" id=\"run-error\">{}</div>", escape(e));
    }
    let _ = writeln!(h, "<p id=\"headline\">{}</p>", escape(&headline(report)));
    let t = &report.totals;
    if t.measured {
        let lat = |v: Option<f64>| v.map(human_latency).unwrap_or_else(|| "-".to_owned());
        let _ = write!(
            h,
            "<div class=\"sub\" id=\"subline\">{} failed; latency p50 {}, p99 {}, max {} (from the scheduled time)",
            percent(t.failure_ratio),
            lat(t.p50_ms),
            lat(t.p99_ms),
            lat(t.max_ms)
        );
        if !t.revisions.is_empty() {
            let shares: Vec<String> =
                t.revisions.iter().map(|r| format!("{} {:.1}%", escape(&r.revision), r.share * 100.0)).collect();
            let _ = write!(h, "; answered by {}", shares.join(", "));
        }
        if !t.errors.is_empty() {
            let errors: Vec<String> = t.errors.iter().map(|(k, n)| format!("{} {n}", escape(k))).collect();
            let _ = write!(h, "; errors: {}", errors.join(", "));
        }
        h.push_str("</div>\n");
    }
    h.push_str("<div class=\"muted\" id=\"probe-line\"></div>\n</header>\n");

    h.push_str("<section id=\"charts\"></section>\n<p id=\"js-error\" hidden></p>\n");
    render_steps(&mut h, &report.steps);
    if !report.warnings.is_empty() {
        h.push_str("<h2>Warnings</h2>\n<ul id=\"warnings\">\n");
        for w in &report.warnings {
            let _ = writeln!(h, "<li>{}</li>", escape(w));
        }
        h.push_str("</ul>\n");
    }
    let _ = writeln!(
        h,
        "<p class=\"muted\">Generated by meshshift {}. The data is in <code>report.json</code> beside this file.</p>",
        env!("CARGO_PKG_VERSION")
    );
    let _ = write!(
        h,
        "<script type=\"application/json\" id=\"report-data\">{}</script>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n",
        script_json(report)
    );
    h
}

fn render_steps(h: &mut String, steps: &[StepReport]) {
    h.push_str(
        "<h2>Steps</h2>\n<table id=\"steps\">\n<thead><tr><th class=\"num\">#</th><th>Step</th><th>Start</th>\
         <th class=\"num\">Duration</th><th>Phase</th><th>Gates</th><th class=\"num\">Requests</th>\
         <th class=\"num\">Failed</th><th class=\"num\">p99</th></tr></thead>\n<tbody>\n",
    );
    for s in steps {
        let _ = write!(
            h,
            "<tr data-step=\"{}\"><td class=\"num\">{}</td><td><code>{}</code><div class=\"step-detail\">{} {}</div>",
            escape(&s.id),
            s.index + 1,
            escape(&s.id),
            escape(&s.action),
            escape(&s.target)
        );
        if let Some(d) = &s.detail {
            let _ = write!(h, "<div class=\"step-detail\">{}</div>", escape(d));
        }
        let start = s.start_ms.map(|ms| format!("+{}", human_ms(ms))).unwrap_or_else(|| "-".to_owned());
        let duration = s.duration_ms.map(human_ms).unwrap_or_else(|| "-".to_owned());
        let _ = write!(
            h,
            "</td><td class=\"when\">{start}</td><td class=\"num\">{duration}</td><td><span class=\"badge {}\">{}</span></td><td>",
            escape(&s.phase),
            escape(&s.phase)
        );
        if !s.gates.is_empty() {
            h.push_str("<ul class=\"gates\">");
            for g in &s.gates {
                let _ = write!(
                    h,
                    "<li class=\"{}\">{} {}<div class=\"gate-detail\">{}</div></li>",
                    if g.ok { "pass" } else { "fail" },
                    if g.ok { "✓" } else { "✗" },
                    escape(&g.name),
                    escape(&g.detail)
                );
            }
            h.push_str("</ul>");
        }
        let p99 = s.p99_ms.map(human_latency).unwrap_or_else(|| "-".to_owned());
        let _ = writeln!(
            h,
            "</td><td class=\"num\">{}</td><td class=\"num{}\">{}</td><td class=\"num\">{p99}</td></tr>",
            s.requests,
            if s.failed > 0 { " bad" } else { "" },
            s.failed
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{Side, Totals};

    fn report() -> Report {
        Report {
            format: 1,
            outcome: "finished".into(),
            error: Some("<b>boom</b>".into()),
            from: Side { revision: "1-9-7".into(), version: "1.9.7".into() },
            to: Side { revision: "1-10-6".into(), version: "1.10.6".into() },
            origin_unix_ms: 1_700_000_000_000,
            end_unix_ms: 1_700_000_060_000,
            duration_ms: 60_000,
            probe: None,
            totals: Totals { measured: true, requests: 1200, failed: 7, ..Totals::default() },
            steps: vec![StepReport {
                index: 0,
                id: "01-<script>alert(1)</script>".into(),
                action: "move-tag".into(),
                target: "tag=\"x\" & y".into(),
                started_unix_ms: None,
                ended_unix_ms: None,
                start_ms: Some(0),
                end_ms: Some(10),
                duration_ms: Some(10),
                intervals: vec![[0, 10]],
                phase: "done".into(),
                detail: Some("it's </script> done".into()),
                gates: vec![crate::build::GateReport {
                    name: "g<1>".into(),
                    ok: true,
                    detail: "a & b".into(),
                    t_ms: 5,
                }],
                requests: 3,
                failed: 1,
                p99_ms: Some(2.5),
            }],
            series: None,
            warnings: vec!["w <x>".into()],
        }
    }

    /// The page with the embedded data removed: what the browser renders as markup.
    fn markup(html: &str) -> String {
        let start = html.find("<script type=\"application/json\" id=\"report-data\">").unwrap();
        let end = start + html[start..].find("</script>").unwrap();
        format!("{}{}", &html[..start], &html[end..])
    }

    #[test]
    fn escapes_step_ids_details_and_gates() {
        let html = render_html(&report());
        let m = markup(&html);
        assert!(!m.contains("<script>alert"), "{m}");
        assert!(m.contains("<code>01-&lt;script&gt;alert(1)&lt;/script&gt;</code>"));
        assert!(m.contains("data-step=\"01-&lt;script&gt;alert(1)&lt;/script&gt;\""));
        assert!(m.contains("tag=&quot;x&quot; &amp; y"));
        assert!(m.contains("it&#39;s &lt;/script&gt; done"));
        assert!(m.contains("g&lt;1&gt;") && m.contains("a &amp; b"));
        assert!(m.contains("&lt;b&gt;boom&lt;/b&gt;"));
        assert!(m.contains("<li>w &lt;x&gt;</li>"));
        assert!(m.contains("<p id=\"headline\">1200 requests, 7 failed</p>"));
    }

    #[test]
    fn embedded_json_cannot_end_its_script_element_and_round_trips() {
        let r = report();
        let html = render_html(&r);
        // Exactly two script elements end: the data and the code.
        assert_eq!(html.matches("</script>").count(), 2);
        let start = html.find("id=\"report-data\">").unwrap() + "id=\"report-data\">".len();
        let end = start + html[start..].find("</script>").unwrap();
        let back: Report = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn nothing_is_loaded_from_anywhere() {
        let mut r = report();
        r.probe = Some(crate::build::ProbeInfo {
            urls: vec!["http://10.0.0.1/productpage".into()],
            rate: 50.0,
            started_unix_ms: 0,
            start_ms: 0,
        });
        let html = render_html(&r);
        let m = markup(&html).to_lowercase();
        for needle in
            ["src=", "href=", "url(", "@import", "<link", "<iframe", "<img", "fetch(", "xmlhttprequest", "//cdn"]
        {
            assert!(!m.contains(needle), "the page loads something: {needle}");
        }
        // The only URL outside the data is the SVG namespace (an identifier, never fetched).
        let urls: Vec<&str> = m.match_indices("http").map(|(i, _)| &m[i..(i + 30).min(m.len())]).collect();
        assert!(urls.iter().all(|u| u.starts_with("http://www.w3.org/2000/svg")), "{urls:?}");
    }

    #[test]
    fn human_formats() {
        assert_eq!(human_ms(850), "850 ms");
        assert_eq!(human_ms(12_345), "12.3 s");
        assert_eq!(human_ms(245_000), "4m 05s");
        assert_eq!(human_ms(3_720_000), "1h 02m");
        assert_eq!(percent(0.025), "2.50%");
        assert_eq!(percent(0.00013), "0.013%");
        assert_eq!(percent(0.0), "0.00%");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
    }
}
