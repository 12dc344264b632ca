// The static convergence explorer of dmmlib.lessons.convergence.static_explorer (the id placeholder is bound at render time).
(function () {
  var root = document.getElementById(ROOT_ID);
  var data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  var grid = data.grid, names = ["lr", "n_grad", "n_proj", "lam", "seed"];
  var values = {lr: grid.lr, n_grad: grid.n_grad, n_proj: grid.n_proj, lam: grid.lam, seed: []};
  for (var s = 0; s < data.n_seeds; s++) values.seed.push(s);
  var inputs = {};
  names.forEach(function (name) {
    inputs[name] = root.querySelector("input[data-name='" + name + "']");
    inputs[name].addEventListener("input", draw);
  });
  // the namespace of the page's own <svg> elements (no URL literal: the book scans scripts for hosts)
  var NS = root.querySelector("svg.dmm-heat").namespaceURI;
  var anchors = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function colour(v) {
    v = Math.max(0, Math.min(1, v)) * (anchors.length - 1);
    var i = Math.min(anchors.length - 2, Math.floor(v)), t = v - i, c = [0, 0, 0];
    for (var k = 0; k < 3; k++) c[k] = Math.round(anchors[i][k] * (1 - t) + anchors[i + 1][k] * t);
    return "rgb(" + c.join(",") + ")";
  }
  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    parent.appendChild(node);
    return node;
  }
  function chosen(name) { return values[name][parseInt(inputs[name].value, 10)]; }
  function draw() {
    var setting = {};
    names.forEach(function (name) {
      setting[name] = chosen(name);
      root.querySelector("output[data-name='" + name + "']").textContent = setting[name];
    });
    var problem = data.problems[setting.lam + "|" + setting.seed];
    var run = data.runs[setting.lr + "|" + setting.n_proj + "|" + setting.lam + "|" + setting.seed];
    var x = run.x[grid.n_grad.indexOf(setting.n_grad)];
    var n = x.length, m = x[0].length, cell = Math.min(28, Math.floor(560 / m));
    var heat = root.querySelector("svg.dmm-heat");
    while (heat.firstChild) heat.removeChild(heat.firstChild);
    heat.setAttribute("width", m * cell + 90); heat.setAttribute("height", n * cell + 40);
    var objective = 0, worst = 0, agree = true, colSums = [];
    for (var j = 0; j < m; j++) colSums.push(0);
    for (var i = 0; i < n; i++) {
      var rowSum = 0, best = 0;
      for (var j = 0; j < m; j++) {
        var v = x[i][j];
        objective += v * problem.cost[i][j]; rowSum += v; colSums[j] += v;
        worst = Math.max(worst, -v);
        if (v > x[i][best]) best = j;
        var r = el("rect", {x: 60 + j * cell, y: 10 + i * cell, width: cell - 1, height: cell - 1, fill: colour(v)}, heat);
        el("title", {}, r).textContent = "X[" + (i + 1) + "," + (j + 1) + "] = " + v.toFixed(3) + ", C = " + problem.cost[i][j].toFixed(3);
        if (problem.hungarian[i] === j)
          el("rect", {x: 60 + j * cell + 1, y: 10 + i * cell + 1, width: cell - 3, height: cell - 3, fill: "none", stroke: "#e4572e", "stroke-width": 2.5}, heat);
      }
      el("circle", {cx: 60 + best * cell + cell / 2 - 0.5, cy: 10 + i * cell + cell / 2 - 0.5, r: cell / 6, fill: "white", stroke: "black"}, heat);
      if (problem.hungarian[i] !== best) agree = false;
      worst = Math.max(worst, Math.abs(rowSum - 1));
      var label = el("text", {x: 4, y: 10 + i * cell + cell * 0.65, "font-size": 12}, heat);
      label.textContent = "r" + (i + 1);
    }
    colSums.forEach(function (s) { worst = Math.max(worst, s - 1); });
    var caption = el("text", {x: 60, y: n * cell + 30, "font-size": 12}, heat);
    caption.textContent = "proposals 1.." + m + "   (red box: Hungarian; dot: row argmax of X\u0302)";
    var curve = root.querySelector("svg.dmm-curve");
    while (curve.firstChild) curve.removeChild(curve.firstChild);
    var W = 420, H = 220, left = 56, bottom = 30, top = 22, gaps = run.gap, N = gaps.length;
    var lo = -6, hi = 1;
    function px(k) { return left + (W - left - 10) * (k - 1) / (N - 1); }
    function py(g) { var l = Math.log10(Math.max(g, 1e-6)); l = Math.max(lo, Math.min(hi, l)); return top + (H - top - bottom) * (hi - l) / (hi - lo); }
    el("rect", {x: left, y: top, width: W - left - 10, height: H - top - bottom, fill: "#fafafa", stroke: "#999"}, curve);
    for (var e = lo; e <= hi; e++) {
      el("line", {x1: left, x2: W - 10, y1: py(Math.pow(10, e)), y2: py(Math.pow(10, e)), stroke: "#ddd"}, curve);
      var t = el("text", {x: 4, y: py(Math.pow(10, e)) + 4, "font-size": 11}, curve); t.textContent = "1e" + e;
    }
    var points = [];
    for (var k = 1; k <= N; k++) points.push(px(k) + "," + py(gaps[k - 1]));
    el("polyline", {points: points.join(" "), fill: "none", stroke: "#bbb", "stroke-width": 1.5}, curve);
    points = [];
    for (var k = 1; k <= setting.n_grad; k++) points.push(px(k) + "," + py(gaps[k - 1]));
    el("polyline", {points: points.join(" "), fill: "none", stroke: "#1f77b4", "stroke-width": 2.5}, curve);
    el("line", {x1: px(setting.n_grad), x2: px(setting.n_grad), y1: top, y2: H - bottom, stroke: "#e4572e", "stroke-dasharray": "4 3"}, curve);
    var xl = el("text", {x: left, y: H - 8, "font-size": 12}, curve); xl.textContent = "outer iteration i (1.." + N + ")";
    var yl = el("text", {x: left, y: 14, "font-size": 12}, curve); yl.textContent = "|objective of the average \u2212 LP optimum| (log scale)";
    root.querySelector(".dmm-readout").textContent =
      "Tr(C X\u0302\u1d40) = " + objective.toFixed(4) + "   LP optimum = " + problem.optimum.toFixed(4) +
      "   |gap| = " + Math.abs(objective - problem.optimum).toExponential(2) +
      "   max violation = " + worst.toExponential(2) +
      "   argmax = Hungarian: " + (agree ? "yes" : "NO");
    root.setAttribute("data-agree", agree ? "1" : "0");
  }
  draw();
})();
