// The convergence explorer (dmmlib.lessons.convergence.convergence_description): X-hat as a heat map with
// Hungarian's choice, the row argmax and the true object marked, its colour bar, and the gap curve.
// A state's "x" holds X-hat in hundredths; its curve is the run's gap up to the chosen N_grad.
RENDERERS.convergence = function (v) {
  var st = v.state, pr = v.tables.problems[st.problem], run = v.tables.runs[st.run];
  var n = pr.cost.length, m = pr.cost[0].length, cell = m > 20 ? 13 : 26;
  var X = st.x.map(function (row) { return row.map(function (q) { return q / 100; }); });
  var xmax = Math.max.apply(null, X.map(function (row) { return Math.max.apply(null, row); }));
  var marks = [];
  for (var i = 0; i < n; i++) {
    marks.push({i: i, j: pr.hungarian[i], shape: "box", colour: "#e4572e"});
    marks.push({i: i, j: pr["true"][i], shape: "ring", colour: "#00d5ff"});
    marks.push({i: i, j: st.argmax[i], shape: "dot", colour: "#ffffff"});
  }
  var scale = kit.scale("seq", 0, 1);
  var heat = kit.heatmap({
    matrix: X, cell: cell, scale: scale, marks: marks, colAxis: "proposal j",
    title: "X\u0302: " + n + " templates \u00d7 " + m + " proposals",
    rowLabel: function (i) { return "r" + i; },
    tip: function (i, j, x) {
      return "X\u0302[" + i + "," + j + "] = " + x.toFixed(2) + ",  C[" + i + "," + j + "] = " + pr.cost[i][j].toFixed(3);
    }
  });
  var bar = kit.colorbar({scale: scale, height: Math.max(80, n * cell), max: xmax, label: "X\u0302"});
  var N = v.setting.n_grad.value, xs = [], ys = [];
  for (var k = 0; k < v.spec.iterations.length && v.spec.iterations[k] <= N; k++) {
    xs.push(v.spec.iterations[k]);
    ys.push(run.gap[k]);
  }
  var curve = kit.curve({
    width: 420, height: 240, xlog: true, ylog: true, xmin: 1, xmax: Math.max(N, 2), vline: N,
    series: [{x: xs, y: ys, colour: "#1f77b4", label: "running average"}],
    title: "|Tr(C X\u0302\u1d40) \u2212 LP optimum|", xlabel: "outer iteration i (log scale)", ylabel: "gap (log scale)"
  });
  return kit.svg(heat) + kit.svg(bar) + kit.svg(curve);
};
