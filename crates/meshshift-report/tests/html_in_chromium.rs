//! The report page really draws: headless Chromium loads `report.html` of a synthetic run from disk, runs
//! its inline script, and the DOM it dumps has the three charts with their series (many points each), the
//! steps marked in every chart, and the headline numbers.
//!
//! Needs Chromium (Debian package `chromium`, installed by `scripts/install-deps.sh`). Without it the test
//! fails: a report nobody checked draws is not tested.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long Chromium may take.
const TIMEOUT: Duration = Duration::from_secs(90);

fn find_chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("MESHSHIFT_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "Chromium not found (looked for `chromium` and `chromium-browser` on PATH, and $MESHSHIFT_CHROMIUM): \
         run scripts/install-deps.sh to install it (Debian package `chromium`)"
    );
}

/// Loads `page` in headless Chromium and returns the DOM after its scripts ran.
fn dump_dom(page: &Path) -> String {
    let chromium = find_chromium();
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/install-deps.sh", chromium.display()));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {TIMEOUT:?}; stderr:\n{}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let dom = out.join().unwrap();
    let stderr = err.join().unwrap();
    assert!(status.success() && !dom.is_empty(), "chromium failed ({status}); stderr:\n{stderr}");
    eprintln!("chromium --dump-dom took {:.2} s", started.elapsed().as_secs_f64());
    dom
}

/// The markup of the `<svg>` element with `id`.
fn svg_block<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no element #{id} in the DOM"));
    let start = dom[..at].rfind("<svg").unwrap_or_else(|| panic!("#{id} is not an <svg>"));
    let end = at + dom[at..].find("</svg>").unwrap_or_else(|| panic!("#{id} is not closed"));
    &dom[start..end]
}

/// The start tags named `tag` in `markup`.
fn tags<'a>(markup: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    markup
        .match_indices(&open)
        .map(|(i, _)| {
            let end = i + markup[i..].find('>').unwrap();
            &markup[i..end]
        })
        .collect()
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    Some(&tag[start..end])
}

/// The points of a path's `d` (each `M` or `L` command; `Z` closes without a point).
fn points(d: &str) -> Vec<(f64, f64)> {
    d.split(['M', 'L'])
        .map(|p| p.trim().trim_end_matches('Z').trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap_or_else(|| panic!("bad point {p:?} in {d}"));
            (x.trim().parse().unwrap(), y.trim().parse().unwrap())
        })
        .collect()
}

/// The series path `name` of chart `id`.
fn series(dom: &str, id: &str, name: &str) -> Vec<(f64, f64)> {
    let block = svg_block(dom, id);
    let path = tags(block, "path")
        .into_iter()
        .find(|t| attr(t, "data-series") == Some(name))
        .unwrap_or_else(|| panic!("#{id} has no series {name}"));
    assert!(attr(path, "class").is_some_and(|c| c.split(' ').any(|c| c == "series")), "{path}");
    points(attr(path, "d").expect("a d attribute"))
}

#[test]
fn chromium_draws_the_charts_steps_and_headline() {
    let dir = tempfile::tempdir().unwrap();
    common::write_run(dir.path());
    let (_, html) = meshshift_report::write(dir.path()).unwrap();
    let html = html.canonicalize().unwrap();

    let dom = dump_dom(&html);
    // MESHSHIFT_REPORT_KEEP=DIR keeps the page and the DOM Chromium made of it, to look at.
    if let Some(keep) = std::env::var_os("MESHSHIFT_REPORT_KEEP").map(PathBuf::from) {
        std::fs::create_dir_all(&keep).unwrap();
        for f in ["report.html", "report.json"] {
            std::fs::copy(dir.path().join(f), keep.join(f)).unwrap();
        }
        std::fs::write(keep.join("dom.html"), &dom).unwrap();
    }

    assert!(dom.contains("data-drawn=\"true\""), "the script did not finish; the DOM:\n{dom}");
    assert!(dom.contains("2000 requests, 50 failed"), "no headline");

    // (1) Requests per second: 200 buckets of 100 ms; the failure burst stands out.
    let ok = series(&dom, "chart-rate", "ok");
    let failed = series(&dom, "chart-rate", "failed");
    assert_eq!(ok.len(), 200);
    assert_eq!(failed.len(), 200);
    let baseline = failed.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let spikes = failed.iter().filter(|p| p.1 < baseline - 50.0).count();
    assert_eq!(spikes, 5, "the 500 ms burst is 5 buckets high: {failed:?}");
    assert!(ok.iter().all(|p| p.0 > 0.0 && p.0 < 960.0 && p.1.is_finite()));

    // (2) Latency: p50 and p99, one point per bucket.
    for name in ["p50", "p99"] {
        assert_eq!(series(&dom, "chart-latency", name).len(), 200, "{name}");
    }

    // (3) Revision shares: one stacked area per revision (upper edge forward, lower edge back).
    for name in ["1-9-7", "1-10-6"] {
        let area = series(&dom, "chart-revisions", name);
        assert_eq!(area.len(), 400, "{name}");
    }

    // Steps: marked in every chart and labelled in the steps lane.
    for (id, _, _, _) in common::steps() {
        for chart in ["chart-rate", "chart-latency", "chart-revisions"] {
            let block = svg_block(&dom, chart);
            let markers = tags(block, "line")
                .into_iter()
                .filter(|t| attr(t, "class") == Some("step-marker") && attr(t, "data-step") == Some(id))
                .count();
            assert_eq!(markers, 1, "{chart}: step {id}");
        }
        let lane = svg_block(&dom, "chart-steps");
        assert!(lane.contains(&format!("data-step=\"{id}\">1")) || lane.contains(&format!(" {id}</text>")), "{id}");
        assert!(tags(lane, "rect").iter().any(|t| attr(t, "data-step") == Some(id)), "no bar for {id}");
    }

    // The table, escaped text intact.
    assert!(dom.contains("<table id=\"steps\">"));
    assert!(dom.contains("green answers 3/3 routes like blue (&lt;= 5 ms apart)"));
    assert!(dom.contains("<p id=\"js-error\" hidden=\"\"></p>"), "the script reported an error");
}
