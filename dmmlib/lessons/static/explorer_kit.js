// Drawing helpers shared by the book's explorers (dmmlib.lessons.interactive), static page and live alike.
// Panels are built as SVG strings that the page's own HTML parser turns into elements: no namespace
// address, nothing fetched. The id placeholder is bound at render time.
var ROOT = document.getElementById(ROOT_ID);
var RENDERERS = {};
var kit = {};

kit.esc = function (s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
};

var VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129],
               [92, 200, 99], [170, 220, 50], [253, 231, 37]];
var RDBU = [[33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247], [253, 219, 199],
            [239, 138, 98], [178, 24, 43]];
// Values outside a scale's range get these colours, never the colour of the range's end.
kit.OVER = "#ff2d95";
kit.UNDER = "#18e0ff";

function ramp(anchors, t) {
  t = Math.max(0, Math.min(1, t)) * (anchors.length - 1);
  var i = Math.min(anchors.length - 2, Math.floor(t)), f = t - i, c = [];
  for (var k = 0; k < 3; k++) c.push(Math.round(anchors[i][k] * (1 - f) + anchors[i + 1][k] * f));
  return "rgb(" + c.join(",") + ")";
}

// A colour scale: "seq" maps [lo, hi] onto viridis, "div" maps [lo, hi] (lo = -hi) onto blue-white-red.
kit.scale = function (kind, lo, hi) {
  var tolerance = 1e-9 * Math.max(1, Math.abs(lo), Math.abs(hi));
  return {
    kind: kind, lo: lo, hi: hi,
    colour: function (v) {
      if (v > hi + tolerance) return kit.OVER;
      if (v < lo - tolerance) return kit.UNDER;
      return ramp(kind === "div" ? RDBU : VIRIDIS, hi > lo ? (v - lo) / (hi - lo) : 0.5);
    }
  };
};

kit.text = function (x, y, s, o) {
  o = o || {};
  return '<text x="' + x + '" y="' + y + '" font-size="' + (o.size || 11) + '" text-anchor="' + (o.anchor || "start") +
    '"' + (o.fill ? ' fill="' + o.fill + '"' : "") + (o.weight ? ' font-weight="' + o.weight + '"' : "") +
    (o.rotate ? ' transform="rotate(' + o.rotate + " " + x + " " + y + ')"' : "") + ">" + kit.esc(s) + "</text>";
};

// One panel: {svg, width, height, label} -> an <svg> element's markup.
kit.svg = function (panel) {
  return '<svg width="' + Math.ceil(panel.width) + '" height="' + Math.ceil(panel.height) + '" role="img" aria-label="' +
    kit.esc(panel.label || "") + '" font-family="sans-serif">' + panel.svg + "</svg>";
};

// A heat map. o: {matrix, cell, scale, title, rowLabel(i), marks [{i, j, shape: box|dot|ring, colour}],
// tip(i, j, value), values (print each value), sums ({rows, cols, rowBad(s), colBad(s)}), label}
kit.heatmap = function (o) {
  var M = o.matrix, n = M.length, m = M[0].length, c = o.cell;
  var left = 30, top = o.title ? 22 : 6, parts = [];
  if (o.title) parts.push(kit.text(left, 14, o.title, {size: 12, weight: "bold"}));
  for (var i = 0; i < n; i++) {
    parts.push(kit.text(left - 4, top + i * c + c / 2 + 4, o.rowLabel ? o.rowLabel(i) : String(i), {anchor: "end"}));
    for (var j = 0; j < m; j++) {
      var v = M[i][j], x = left + j * c, y = top + i * c;
      parts.push('<rect class="dmm-cell" x="' + x + '" y="' + y + '" width="' + (c - 1) + '" height="' + (c - 1) +
        '" fill="' + o.scale.colour(v) + '"><title>' + kit.esc(o.tip ? o.tip(i, j, v) : v) + "</title></rect>");
      if (o.values) {
        var dark = o.scale.kind === "div" ? Math.abs(v) > 0.6 * o.scale.hi : v < 0.55 * o.scale.hi;
        parts.push(kit.text(x + c / 2 - 0.5, y + c / 2 + 3.5, v.toFixed(2), {size: 10, anchor: "middle", fill: dark ? "#fff" : "#111"}));
      }
    }
  }
  (o.marks || []).forEach(function (k) {
    var cx = left + k.j * c + c / 2 - 0.5, cy = top + k.i * c + c / 2 - 0.5;
    if (k.shape === "box")  // a coloured frame with a white one inside: visible on every cell colour
      parts.push('<rect class="dmm-mark-box" x="' + (left + k.j * c + 0.5) + '" y="' + (top + k.i * c + 0.5) + '" width="' + (c - 2) + '" height="' + (c - 2) +
        '" fill="none" stroke="' + k.colour + '" stroke-width="2.2"/><rect x="' + (left + k.j * c + 2.4) + '" y="' + (top + k.i * c + 2.4) +
        '" width="' + Math.max(0, c - 5.8) + '" height="' + Math.max(0, c - 5.8) + '" fill="none" stroke="#fff" stroke-width="0.9"/>');
    else if (k.shape === "ring")
      parts.push('<circle cx="' + cx + '" cy="' + cy + '" r="' + (c * 0.33) + '" fill="none" stroke="' + k.colour + '" stroke-width="1.8"/>');
    else
      parts.push('<circle cx="' + cx + '" cy="' + cy + '" r="' + Math.max(1.6, c / 7) + '" fill="' + k.colour + '" stroke="#000" stroke-width="0.8"/>');
  });
  var width = Math.max(left + m * c + 4, o.title ? left + 7 * o.title.length : 0), height = top + n * c + 4;
  if (o.sums) {
    var s = o.sums;
    width = Math.max(width, left + m * c + 48);
    parts.push(kit.text(left + m * c + 4, top - 4, "row sum", {size: 9}));
    s.rows.forEach(function (v, i) {
      parts.push(kit.text(left + m * c + 6, top + i * c + c / 2 + 4, v.toFixed(2), {size: 10, fill: s.rowBad(v) ? "#c92a2a" : "#333"}));
    });
    s.cols.forEach(function (v, j) {
      parts.push(kit.text(left + j * c + c / 2, top + n * c + 13, v.toFixed(2), {size: 10, anchor: "middle", fill: s.colBad(v) ? "#c92a2a" : "#333"}));
    });
    parts.push(kit.text(4, top + n * c + 13, "col", {size: 9}));
    height += 16;
  }
  if (o.colAxis) {
    var step = m > 20 ? 10 : m > 10 ? 2 : 1;
    for (var jj = 0; jj < m; jj += step) parts.push(kit.text(left + jj * c + c / 2, height + 8, String(jj), {size: 9, anchor: "middle"}));
    parts.push(kit.text(left, height + 22, o.colAxis, {size: 11}));
    height += 26;
  }
  return {svg: parts.join(""), width: width, height: height, label: o.label || o.title || "heat map"};
};

// A vertical colour bar that says when values leave its range. o: {scale, height, label, max, min}
kit.colorbar = function (o) {
  var sc = o.scale, h = o.height, x = 8, w = 14, parts = [], steps = 48, over = o.max > sc.hi * (1 + 1e-9) + 1e-12;
  var top = over ? 44 : 26;
  var under = o.min !== undefined && o.min < sc.lo - 1e-12 * Math.max(1, Math.abs(sc.lo));
  parts.push(kit.text(x, 12, o.label || "", {size: 11, weight: "bold"}));
  if (over) {
    parts.push('<polygon class="dmm-over" points="' + x + "," + (top - 4) + " " + (x + w) + "," + (top - 4) + " " + (x + w / 2) + "," + (top - 14) +
      '" fill="' + kit.OVER + '"/>');
    parts.push(kit.text(x + w + 4, top - 6, "> " + fmtTick(sc.hi) + ": max " + parseFloat(o.max.toFixed(3)), {size: 10, fill: "#a61e4d"}));
  }
  for (var k = 0; k < steps; k++) {
    var v = sc.hi - (sc.hi - sc.lo) * (k + 0.5) / steps;
    parts.push('<rect x="' + x + '" y="' + (top + k * h / steps) + '" width="' + w + '" height="' + (h / steps + 0.6) + '" fill="' + sc.colour(v) + '"/>');
  }
  parts.push('<rect x="' + x + '" y="' + top + '" width="' + w + '" height="' + h + '" fill="none" stroke="#666"/>');
  [sc.hi, (sc.hi + sc.lo) / 2, sc.lo].forEach(function (v, k) {
    parts.push(kit.text(x + w + 4, top + k * h / 2 + 4, fmtTick(v), {size: 10}));
  });
  if (under) {
    parts.push('<polygon class="dmm-under" points="' + x + "," + (top + h + 4) + " " + (x + w) + "," + (top + h + 4) + " " + (x + w / 2) + "," + (top + h + 14) +
      '" fill="' + kit.UNDER + '"/>');
    parts.push(kit.text(x + w + 4, top + h + 14, "< " + fmtTick(sc.lo) + ": min " + parseFloat(o.min.toFixed(3)), {size: 10, fill: "#0b7285"}));
  }
  return {svg: parts.join(""), width: over || under ? 150 : 62, height: top + h + 20, label: "colour bar of " + (o.label || "")};
};

// Panels side by side in one: [panel, ...] -> a panel.
kit.row = function (panels, gap) {
  var x = 0, height = 0, parts = [];
  panels.forEach(function (p) {
    parts.push('<g transform="translate(' + x + ',0)">' + p.svg + "</g>");
    x += p.width + (gap === undefined ? 10 : gap);
    height = Math.max(height, p.height);
  });
  return {svg: parts.join(""), width: x, height: height, label: panels.map(function (p) { return p.label; }).join("; ")};
};

function fmtTick(v) {
  if (v === 0) return "0";
  var a = Math.abs(v);
  if (a >= 1e-2 && a < 1e4) return String(parseFloat(v.toPrecision(3)));
  return v.toExponential(0);
}

function niceTicks(lo, hi, count) {
  var span = hi - lo, step = Math.pow(10, Math.floor(Math.log10(span / count))), err = span / count / step;
  if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
  var ticks = [];
  for (var t = Math.ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  return ticks;
}

// A line chart. o: {width, height, series [{x, y, colour, label, dash}], xmin, xmax, xlog, ylog, ymin, ymax,
// vline, title, xlabel, ylabel}. A log y axis spans the decades of the data (at most 14); values at or
// below its floor sit on the bottom edge as open triangles, so nothing leaves the plot.
kit.curve = function (o) {
  var W = o.width || 400, H = o.height || 230, L = 52, R = 12, T = 24, B = 42, parts = [];
  var ys = [];
  o.series.forEach(function (s) { s.y.forEach(function (y) { if (y !== null && isFinite(y)) ys.push(y); }); });
  var lo, hi;
  if (o.ylog) {
    var pos = ys.filter(function (y) { return y > 0; });
    lo = pos.length ? Math.floor(Math.log10(Math.min.apply(null, pos)) + 1e-9) : -1;
    hi = pos.length ? Math.ceil(Math.log10(Math.max.apply(null, pos)) - 1e-9) : 0;
    if (hi <= lo) hi = lo + 1;
    if (hi - lo > 14) lo = hi - 14;
  } else {
    lo = o.ymin !== undefined ? o.ymin : Math.min.apply(null, ys);
    hi = o.ymax !== undefined ? o.ymax : Math.max.apply(null, ys);
    if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
    if (o.ymin === undefined) lo -= 0.05 * (hi - lo);
    if (o.ymax === undefined) hi += 0.05 * (hi - lo);
  }
  var xlo = o.xmin, xhi = o.xmax > o.xmin ? o.xmax : o.xmin + 1;
  function fx(x) { return o.xlog ? Math.log10(x) : x; }
  function px(x) { return L + (W - L - R) * (fx(x) - fx(xlo)) / (fx(xhi) - fx(xlo)); }
  function clipped(y) { return o.ylog && !(y > Math.pow(10, lo)); }
  function py(y) {
    var t = o.ylog ? (y > 0 ? Math.log10(y) : lo) : y;
    t = Math.max(lo, Math.min(hi, t));
    return T + (H - T - B) * (hi - t) / (hi - lo);
  }
  parts.push('<rect x="' + L + '" y="' + T + '" width="' + (W - L - R) + '" height="' + (H - T - B) + '" fill="#fafafa" stroke="#999"/>');
  var yt = [];
  if (o.ylog) { var every = Math.ceil((hi - lo) / 7); for (var e = lo; e <= hi; e += every) yt.push(e); }
  else yt = niceTicks(lo, hi, 5);
  yt.forEach(function (t) {
    var y = o.ylog ? T + (H - T - B) * (hi - t) / (hi - lo) : py(t);
    parts.push('<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y + '" y2="' + y + '" stroke="#e3e3e3"/>');
    parts.push(kit.text(L - 4, y + 4, o.ylog ? "1e" + t : fmtTick(t), {size: 10, anchor: "end"}));
  });
  var xt = [];
  if (o.xlog) {
    for (var d = Math.pow(10, Math.floor(Math.log10(xlo))); d <= xhi; d *= 10)
      [1, 2, 5].forEach(function (f) { var t = f * d; if (t >= xlo - 1e-9 && t <= xhi + 1e-9) xt.push(t); });
  } else xt = niceTicks(xlo, xhi, 6);
  xt.forEach(function (t) {
    parts.push('<line x1="' + px(t) + '" x2="' + px(t) + '" y1="' + (H - B) + '" y2="' + (H - B + 4) + '" stroke="#666"/>');
    parts.push(kit.text(px(t), H - B + 15, fmtTick(t), {size: 10, anchor: "middle"}));
  });
  if (o.vline !== undefined && o.vline >= xlo && o.vline <= xhi)
    parts.push('<line x1="' + px(o.vline) + '" x2="' + px(o.vline) + '" y1="' + T + '" y2="' + (H - B) + '" stroke="#e4572e" stroke-dasharray="4 3"/>');
  o.series.forEach(function (s, k) {
    var points = [], marks = [];
    for (var q = 0; q < s.x.length; q++) {
      if (s.y[q] === null || !isFinite(s.y[q])) continue;
      var X = px(s.x[q]), Y = py(s.y[q]);
      points.push(X.toFixed(1) + "," + Y.toFixed(1));
      if (clipped(s.y[q])) marks.push('<polygon class="dmm-clipped" points="' + (X - 3.5) + "," + (Y - 7) + " " + (X + 3.5) + "," + (Y - 7) + " " + X + "," + Y +
        '" fill="none" stroke="' + s.colour + '"/>');
      else if (s.x.length <= 60) marks.push('<circle cx="' + X.toFixed(1) + '" cy="' + Y.toFixed(1) + '" r="2" fill="' + s.colour + '"/>');
    }
    parts.push('<polyline class="dmm-series" points="' + points.join(" ") + '" fill="none" stroke="' + s.colour + '" stroke-width="2"' +
      (s.dash ? ' stroke-dasharray="' + s.dash + '"' : "") + "/>");
    parts.push(marks.join(""));
    var ly = H + 6 + 14 * k, lx = L;  // the legend sits below the plot, where it hides no data
    parts.push('<line x1="' + lx + '" x2="' + (lx + 18) + '" y1="' + (ly - 4) + '" y2="' + (ly - 4) + '" stroke="' + s.colour +
      '" stroke-width="2"' + (s.dash ? ' stroke-dasharray="' + s.dash + '"' : "") + "/>");
    parts.push(kit.text(lx + 22, ly, s.label, {size: 10}));
  });
  if (o.title) parts.push(kit.text(L, 15, o.title, {size: 12, weight: "bold"}));
  if (o.xlabel) parts.push(kit.text(L + (W - L - R) / 2, H - 8, o.xlabel, {size: 11, anchor: "middle"}));
  if (o.ylabel) parts.push(kit.text(13, T + (H - T - B) / 2, o.ylabel, {size: 11, anchor: "middle", rotate: -90}));
  return {svg: parts.join(""), width: W, height: H + 6 + 14 * o.series.length, label: o.title || "curve"};
};
