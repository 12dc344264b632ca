// The projection stepper (dmmlib.lessons.explorers.stepper_description): X, Dykstra's and the alternating
// iterate after the chosen number of rounds, and the exact projection, with their row and column sums;
// below, each method's distance to the exact projection over the rounds.
RENDERERS.stepper = function (v) {
  var st = v.state, ex = v.tables.examples[st.example], k = v.setting.rounds.value;
  var m = ex.x[0].length, cell = m <= 4 ? 46 : 30, scale = kit.scale("div", -ex.limit, ex.limit);
  function sums(M) {
    var rows = M.map(function (row) { return row.reduce(function (a, b) { return a + b; }, 0); });
    var cols = M[0].map(function (_, j) { return M.reduce(function (a, row) { return a + row[j]; }, 0); });
    return {rows: rows, cols: cols, rowBad: function (s) { return Math.abs(s - 1) > 5e-3; }, colBad: function (s) { return s > 1 + 5e-3; }};
  }
  function panel(M, title) {
    return kit.heatmap({matrix: M, cell: cell, scale: scale, title: title, values: cell >= 40, sums: sums(M),
      rowLabel: function (i) { return "r" + i; },
      tip: function (i, j, x) { return title + ": [" + i + "," + j + "] = " + x.toFixed(3); }});
  }
  var rounds = k === 1 ? "1 round" : k + " rounds";
  var matrices = [panel(ex.x, "X"), panel(st.dykstra, "Dykstra, " + rounds), panel(st.alternating, "alternating, " + rounds),
                  panel(ex.exact, "exact projection")];
  var all = [ex.x, st.dykstra, st.alternating, ex.exact], lo = 0, hi = 0;
  all.forEach(function (M) { M.forEach(function (row) { row.forEach(function (x) { lo = Math.min(lo, x); hi = Math.max(hi, x); }); }); });
  var bar = kit.colorbar({scale: scale, height: Math.max(60, ex.x.length * cell), max: hi, min: lo, label: "entries"});
  var curve = kit.curve({
    width: 440, height: 240, xlog: true, ylog: true, xmin: 1, xmax: ex.rounds[ex.rounds.length - 1], vline: k >= 1 ? k : undefined,
    series: [{x: ex.rounds, y: ex.dykstra, colour: "#1f77b4", label: "Dykstra"},
             {x: ex.rounds, y: ex.alternating, colour: "#ff7f0e", label: "alternating", dash: "6 3"}],
    title: "distance to the exact projection", xlabel: "projection rounds (log scale)", ylabel: "\u2016Y \u2212 P_C(X)\u2016_F"
  });
  return matrices.map(kit.svg).join("") + kit.svg(bar) + kit.svg(curve);
};
