// The gradient explorer (dmmlib.lessons.explorers.gradient_description): the cost with one entry moved,
// X-hat and dL/dC for Alg. 1 and the Sinkhorn layer side by side, and how X-hat in row i follows the move.
// A method's "x" holds X-hat in hundredths, "g" the gradient in ten-thousandths.
RENDERERS.gradient = function (v) {
  var st = v.state, pr = v.tables.problems[st.problem], line = v.tables.lines[st.line];
  var i = v.setting.row.value, j = v.setting.col.value, d = v.setting.delta.value;
  var C = pr.cost.map(function (row) { return row.slice(); });
  C[i][j] += d;
  var m = C[0].length, cell = m > 20 ? 13 : 24;
  var marks = pr["true"].map(function (t, r) { return {i: r, j: t, shape: "ring", colour: "#00d5ff"}; });
  marks.push({i: i, j: j, shape: "box", colour: "#000000"});
  function label(r) { return "r" + r; }
  var costScale = kit.scale("seq", pr.lo, pr.hi);
  var costPanel = kit.row([kit.heatmap({matrix: C, cell: cell, scale: costScale, marks: marks, rowLabel: label,
      title: "cost C, with C[" + i + "," + j + "] moved by " + (d >= 0 ? "+" : "") + d.toFixed(2), colAxis: "proposal j",
      tip: function (r, c, x) { return "C[" + r + "," + c + "] = " + x.toFixed(3); }}),
    kit.colorbar({scale: costScale, height: Math.max(60, C.length * cell), max: pr.hi, label: "C"})]);
  var out = kit.svg(costPanel);
  var xScale = kit.scale("seq", 0, 1);
  st.methods.forEach(function (method) {
    var X = method.x.map(function (row) { return row.map(function (q) { return q / 100; }); });
    var xmax = Math.max.apply(null, X.map(function (row) { return Math.max.apply(null, row); }));
    var G = method.g.map(function (row) { return row.map(function (q) { return q / 10000; }); });
    var L = Math.max.apply(null, G.map(function (row) { return Math.max.apply(null, row.map(Math.abs)); }));
    var gScale = kit.scale("div", -(L > 0 ? L : 1), L > 0 ? L : 1);
    out += kit.svg(kit.row([
      kit.heatmap({matrix: X, cell: cell, scale: xScale, marks: marks, rowLabel: label, title: method.name + ": X\u0302",
        tip: function (r, c, x) { return "X\u0302[" + r + "," + c + "] = " + x.toFixed(2); }}),
      kit.colorbar({scale: xScale, height: Math.max(60, X.length * cell), max: xmax, label: "X\u0302"}),
      kit.heatmap({matrix: G, cell: cell, scale: gScale, marks: marks, rowLabel: label, title: method.name + ": \u2202L/\u2202C",
        tip: function (r, c, x) { return "\u2202L/\u2202C[" + r + "," + c + "] = " + x.toFixed(4); }}),
      kit.colorbar({scale: gScale, height: Math.max(60, X.length * cell), max: gScale.hi, label: "\u2202L/\u2202C"})
    ]));
  });
  var colours = ["#1f77b4", "#2ca02c"], series = [];
  st.methods.forEach(function (method, k) {
    series.push({x: v.spec.deltas, y: line[method.name].xij, colour: colours[k], label: method.name + ": X\u0302[i, j]"});
    series.push({x: v.spec.deltas, y: line[method.name].xtrue, colour: colours[k], dash: "5 3", label: method.name + ": true"});
  });
  out += kit.svg(kit.curve({
    width: 460, height: 250, xmin: v.spec.deltas[0], xmax: v.spec.deltas[v.spec.deltas.length - 1], ymin: 0, vline: d,
    series: series, title: "row i = " + i + " as C[" + i + "," + j + "] moves", xlabel: "change of C[i, j]", ylabel: "X\u0302"
  }));
  return out;
};
