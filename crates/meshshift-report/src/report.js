// meshshift report: draws the charts from the embedded report JSON as SVG. No libraries, nothing loaded.
// Charts: #chart-steps (when each step ran), #chart-rate (requests/s ok and failed), #chart-latency (p50,
// p99, log scale), #chart-revisions (each revision's share of responses, stacked). Every chart marks the
// steps as bands and dashed lines (class step-band / step-marker, data-step = the step id).
(function () {
  'use strict';
  var NS = 'http://www.w3.org/2000/svg';
  var W = 960, L = 64, R = 16, T = 22, B = 26;
  var PW = W - L - R;
  var COLORS = { ok: '#2e7d32', failed: '#c62828', p50: '#1565c0', p99: '#ef6c00' };
  var REVISION_COLORS = ['#1e88e5', '#43a047', '#8e24aa', '#fdd835', '#6d4c41', '#00acc1', '#f4511e', '#3949ab'];
  var BAD_PHASES = { failed: true, breach: true };

  function svg(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, k) && attrs[k] !== undefined) e.setAttribute(k, attrs[k]);
    }
    if (parent) parent.appendChild(e);
    return e;
  }

  function text(parent, x, y, content, attrs) {
    var a = attrs || {};
    a.x = x.toFixed(1);
    a.y = y.toFixed(1);
    var t = svg('text', a, parent);
    t.textContent = content;
    return t;
  }

  function title(parent, content) {
    svg('title', {}, parent).textContent = content;
  }

  function fmtTime(ms) {
    var s = ms / 1000;
    if (s < 120) return (Math.round(s * 10) / 10) + ' s';
    var m = Math.floor(s / 60), r = Math.round(s - m * 60);
    if (m < 60) return m + 'm' + (r < 10 ? '0' : '') + r + 's';
    var h = Math.floor(m / 60), mm = m - h * 60;
    return h + 'h' + (mm < 10 ? '0' : '') + mm + 'm';
  }

  function fmtMs(ms) {
    if (ms >= 1000) return (Math.round(ms / 100) / 10) + ' s';
    if (ms >= 1) return (Math.round(ms * 10) / 10) + ' ms';
    return (Math.round(ms * 1000)) + ' µs';
  }

  function fmtNum(v) {
    if (v >= 100) return String(Math.round(v));
    return String(Math.round(v * 10) / 10);
  }

  function niceCeil(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  function timeStep(endMs) {
    var steps = [100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5];
    for (var i = 0; i < steps.length; i++) if (endMs / steps[i] <= 12) return steps[i];
    return Math.ceil(endMs / 12 / 36e5) * 36e5;
  }

  // Builds a path from points; a null y lifts the pen (a gap), so an empty bucket is visible.
  function linePath(xs, ys) {
    var d = [], pen = false;
    for (var i = 0; i < xs.length; i++) {
      if (ys[i] === null || ys[i] === undefined || !isFinite(ys[i])) { pen = false; continue; }
      d.push((pen ? 'L' : 'M') + xs[i].toFixed(1) + ',' + ys[i].toFixed(1));
      pen = true;
    }
    return d.join(' ');
  }

  function main() {
    var data = JSON.parse(document.getElementById('report-data').textContent);
    var box = document.getElementById('charts');
    var s = data.series;
    var steps = data.steps || [];

    if (data.probe) {
      document.getElementById('probe-line').textContent = 'Traffic: ' + data.probe.rate + ' requests/s to ' +
        data.probe.urls.join(', ') + ', from +' + fmtTime(data.probe.start_ms) +
        (s ? ' (' + fmtTime(s.bucket_ms) + ' buckets)' : '');
    }

    var end = Math.max(data.duration_ms || 0, 1);
    if (s && s.t_ms.length) end = Math.max(end, s.t_ms[s.t_ms.length - 1] + s.bucket_ms);
    var x = function (ms) { return L + Math.min(Math.max(ms / end, 0), 1) * PW; };
    var tick = timeStep(end);

    function frame(id, caption, height) {
      var fig = document.createElement('figure');
      fig.className = 'chart';
      fig.id = id + '-figure';
      var cap = document.createElement('figcaption');
      cap.textContent = caption;
      var readout = document.createElement('span');
      readout.className = 'readout';
      cap.appendChild(readout);
      fig.appendChild(cap);
      var root = svg('svg', { id: id, viewBox: '0 0 ' + W + ' ' + height, width: W, height: height,
        role: 'img', 'aria-label': caption, 'data-end-ms': end });
      fig.appendChild(root);
      box.appendChild(fig);
      var axis = svg('g', { 'class': 'axis x-axis' }, root);
      svg('line', { x1: L, x2: W - R, y1: height - B, y2: height - B }, axis);
      for (var t = 0; t <= end + 1e-9; t += tick) {
        svg('line', { x1: x(t).toFixed(1), x2: x(t).toFixed(1), y1: height - B, y2: height - B + 4 }, axis);
        text(axis, x(t), height - B + 16, fmtTime(t), { 'text-anchor': 'middle' });
      }
      return { root: root, readout: readout, top: T, bottom: height - B, height: height };
    }

    function yAxis(c, ticks, y, fmt) {
      var g = svg('g', { 'class': 'grid y-axis' }, c.root);
      ticks.forEach(function (v) {
        var yy = y(v);
        svg('line', { x1: L, x2: W - R, y1: yy.toFixed(1), y2: yy.toFixed(1) }, g);
        text(g, L - 6, yy + 4, fmt(v), { 'text-anchor': 'end' });
      });
    }

    function legend(c, items) {
      var g = svg('g', { 'class': 'legend' }, c.root);
      var lx = L;
      items.forEach(function (it) {
        svg('rect', { x: lx, y: 4, width: 10, height: 10, fill: it.color }, g);
        var t = text(g, lx + 14, 13, it.label, {});
        lx += 24 + 7 * it.label.length;
        return t;
      });
    }

    // Bands and dashed lines where steps ran, numbered at the top.
    function stepMarks(c) {
      var g = svg('g', { 'class': 'steps' }, c.root);
      var lastLabel = -1e9;
      steps.forEach(function (st) {
        (st.intervals || []).forEach(function (iv, k) {
          var x0 = x(iv[0]), x1 = Math.max(x(iv[1]), x0 + 0.5);
          var band = svg('rect', { 'class': 'step-band' + (BAD_PHASES[st.phase] ? ' bad' : ''), 'data-step': st.id,
            x: x0.toFixed(1), y: c.top, width: (x1 - x0).toFixed(1), height: c.bottom - c.top }, g);
          title(band, st.id + (k ? ' (again)' : '') + ': ' + st.phase + ', ' + fmtTime(iv[1] - iv[0]));
          var line = svg('line', { 'class': 'step-marker', 'data-step': st.id, x1: x0.toFixed(1), x2: x0.toFixed(1),
            y1: c.top, y2: c.bottom }, g);
          title(line, st.id + ' starts at +' + fmtTime(iv[0]));
          if (x0 - lastLabel >= 16) {
            text(g, x0 + 2, c.top + 9, String(st.index + 1), { 'class': 'step-num', 'data-step': st.id });
            lastLabel = x0;
          }
        });
      });
    }

    function cursor(c, describe) {
      var line = svg('line', { 'class': 'cursor', x1: -10, x2: -10, y1: c.top, y2: c.bottom, visibility: 'hidden' },
        c.root);
      c.root.addEventListener('mousemove', function (ev) {
        var rect = c.root.getBoundingClientRect();
        var px = (ev.clientX - rect.left) / rect.width * W;
        if (px < L || px > W - R) { line.setAttribute('visibility', 'hidden'); c.readout.textContent = ''; return; }
        var t = (px - L) / PW * end;
        line.setAttribute('x1', px.toFixed(1));
        line.setAttribute('x2', px.toFixed(1));
        line.setAttribute('visibility', 'visible');
        var active = steps.filter(function (st) {
          return (st.intervals || []).some(function (iv) { return iv[0] <= t && t < iv[1]; });
        }).map(function (st) { return st.id; });
        var i = s ? Math.floor((t - s.t_ms[0]) / s.bucket_ms) : -1;
        var values = s && i >= 0 && i < s.t_ms.length ? describe(i) : 'no traffic';
        c.readout.textContent = '+' + fmtTime(t) + ': ' + values + (active.length ? ' · ' + active.join(', ') : '');
      });
      c.root.addEventListener('mouseleave', function () {
        line.setAttribute('visibility', 'hidden');
        c.readout.textContent = '';
      });
    }

    // The steps lane: one row per step, a bar where it ran.
    var rowH = 16;
    var lane = frame('chart-steps', 'Steps', T + rowH * Math.max(steps.length, 1) + B);
    steps.forEach(function (st, row) {
      var y0 = T + row * rowH;
      var g = svg('g', { 'class': 'step-row', 'data-step': st.id }, lane.root);
      var right = L;
      (st.intervals || []).forEach(function (iv) {
        var x0 = x(iv[0]), x1 = Math.max(x(iv[1]), x0 + 2);
        var bar = svg('rect', { 'class': 'step-bar ' + st.phase, 'data-step': st.id, x: x0.toFixed(1), y: y0 + 3,
          width: (x1 - x0).toFixed(1), height: rowH - 6 }, g);
        title(bar, st.id + ': ' + st.phase + ', ' + fmtTime(iv[1] - iv[0]));
        right = Math.max(right, x1);
      });
      var label = (st.index + 1) + ' ' + st.id + (st.intervals && st.intervals.length ? '' : ' (' + st.phase + ')');
      var firstX = st.intervals && st.intervals.length ? x(st.intervals[0][0]) : L;
      // After the bar if it fits, else before it, else over it.
      var width = 6.5 * label.length;
      var after = right + 6 + width <= W - R, before = firstX - 6 - width >= 0;
      text(g, after ? right + 6 : before ? firstX - 6 : firstX + 4, y0 + rowH - 4, label,
        { 'class': 'step-label', 'data-step': st.id, 'text-anchor': after || !before ? 'start' : 'end' });
    });
    lane.bottom = T + rowH * steps.length;
    cursor(lane, function (i) {
      return fmtNum(s.ok_per_s[i]) + ' ok/s, ' + fmtNum(s.failed_per_s[i]) + ' failed/s';
    });

    if (!s || !s.t_ms.length) {
      var p = document.createElement('p');
      p.className = 'muted';
      p.id = 'no-traffic';
      p.textContent = 'No traffic was measured during this run: only the steps are shown.';
      box.appendChild(p);
      return;
    }
    var xs = s.t_ms.map(function (t) { return x(t + s.bucket_ms / 2); });
    var H = 200;

    // (1) Requests per second.
    var rate = frame('chart-rate', 'Requests per second (by scheduled time)', H);
    var rmax = niceCeil(1.1 * Math.max.apply(null, s.ok_per_s.concat(s.failed_per_s, [1])));
    var ry = function (v) { return rate.bottom - v / rmax * (rate.bottom - rate.top); };
    yAxis(rate, [0, rmax / 4, rmax / 2, rmax * 3 / 4, rmax], ry, fmtNum);
    stepMarks(rate);
    [['ok', s.ok_per_s], ['failed', s.failed_per_s]].forEach(function (sr) {
      svg('path', { 'class': 'series', 'data-series': sr[0], stroke: COLORS[sr[0]],
        d: linePath(xs, sr[1].map(ry)) }, rate.root);
    });
    legend(rate, [{ label: 'succeeded/s', color: COLORS.ok }, { label: 'failed/s', color: COLORS.failed }]);
    cursor(rate, function (i) {
      return fmtNum(s.ok_per_s[i]) + ' ok/s, ' + fmtNum(s.failed_per_s[i]) + ' failed/s';
    });

    // (2) Latency, log scale.
    var lat = frame('chart-latency', 'Latency from the scheduled time (log scale)', H);
    var values = s.p50_ms.concat(s.p99_ms).filter(function (v) { return v !== null && v > 0; });
    var lo = Math.pow(10, Math.floor(Math.log10(values.length ? Math.min.apply(null, values) : 1)));
    var hi = Math.pow(10, Math.ceil(Math.log10(values.length ? Math.max.apply(null, values) : 10)));
    if (hi <= lo) hi = lo * 10;
    var span = Math.log10(hi) - Math.log10(lo);
    var ly = function (v) {
      if (v === null) return null;
      var c = Math.max(v, lo);
      return lat.bottom - (Math.log10(c) - Math.log10(lo)) / span * (lat.bottom - lat.top);
    };
    var decades = [];
    for (var d = lo; d <= hi * 1.0001; d *= 10) decades.push(d);
    yAxis(lat, decades, ly, fmtMs);
    stepMarks(lat);
    [['p50', s.p50_ms], ['p99', s.p99_ms]].forEach(function (sr) {
      svg('path', { 'class': 'series', 'data-series': sr[0], stroke: COLORS[sr[0]],
        d: linePath(xs, sr[1].map(ly)) }, lat.root);
    });
    legend(lat, [{ label: 'p50', color: COLORS.p50 }, { label: 'p99', color: COLORS.p99 }]);
    cursor(lat, function (i) {
      var f = function (v) { return v === null ? '-' : fmtMs(v); };
      return 'p50 ' + f(s.p50_ms[i]) + ', p99 ' + f(s.p99_ms[i]);
    });

    // (3) Share of responses per revision, stacked.
    var rev = frame('chart-revisions', 'Share of responses per revision (x-meshshift-revision)', H);
    var sy = function (v) { return rev.bottom - v * (rev.bottom - rev.top); };
    yAxis(rev, [0, 0.25, 0.5, 0.75, 1], sy, function (v) { return Math.round(v * 100) + '%'; });
    var base = s.t_ms.map(function () { return 0; });
    var items = [];
    s.revisions.forEach(function (r, k) {
      var color = r.revision === '(none)' ? '#9e9e9e' : REVISION_COLORS[k % REVISION_COLORS.length];
      var upper = r.share.map(function (v, i) { return base[i] + v; });
      var d = linePath(xs, upper.map(sy));
      var lower = [];
      for (var i = xs.length - 1; i >= 0; i--) lower.push('L' + xs[i].toFixed(1) + ',' + sy(base[i]).toFixed(1));
      svg('path', { 'class': 'series area', 'data-series': r.revision, style: 'fill:' + color,
        d: d + ' ' + lower.join(' ') + ' Z' }, rev.root);
      base = upper;
      items.push({ label: r.revision, color: color });
    });
    stepMarks(rev);
    legend(rev, items);
    cursor(rev, function (i) {
      return s.revisions.map(function (r) { return r.revision + ' ' + Math.round(r.share[i] * 100) + '%'; })
        .join(', ');
    });
  }

  try {
    main();
    document.body.setAttribute('data-drawn', 'true');
  } catch (e) {
    var box = document.getElementById('js-error');
    box.textContent = 'The charts could not be drawn: ' + (e && e.stack ? e.stack : e);
    box.hidden = false;
    document.body.setAttribute('data-drawn', 'error');
  }
})();
