// The host part of the book's explorers (dmmlib.lessons.interactive): reads the JSON payload, and draws
// the chosen state with the renderer of the figure's kind. In the static page it wires the range inputs
// and drop-downs to the pre-computed states; live, the kernel sends one state, drawn the same way.
(function () {
  if (!ROOT || ROOT.dataset.ready) return;
  ROOT.dataset.ready = "1";
  var payload = JSON.parse(ROOT.querySelector("script.dmm-explorer-data").textContent);
  var spec = payload.spec;
  var part = function (name) { return ROOT.querySelector(".dmm-explorer-" + name); };

  function settingOf(indices) {
    var setting = {};
    spec.controls.forEach(function (c, k) {
      setting[c.name] = {index: indices[k], value: c.values[indices[k]], label: c.labels[indices[k]]};
    });
    return setting;
  }

  function draw(key) {
    var state = payload.states[key];
    if (!state) {
      part("notes").textContent = "No pre-computed state for the setting " + key + ".";
      return;
    }
    var indices = key.split(",").map(Number), setting = settingOf(indices);
    part("caption").textContent = spec.controls.map(function (c) { return c.symbol + " = " + setting[c.name].label; }).join("  \u00b7  ");
    part("figure").innerHTML = RENDERERS[spec.kind]({spec: spec, state: state, tables: payload.tables, setting: setting});
    part("readout").innerHTML = spec.readout.map(function (label, k) {
      return '<span class="dmm-explorer-number"><span>' + kit.esc(label) + '</span> <b>' + kit.esc(state.readout[k]) + "</b></span>";
    }).join("");
    part("notes").innerHTML = (state.notes || []).map(function (raised) {
      var text = spec.notes[raised[0]].replace(/\{(\w+)\}/g, function (_, name) { return raised[1][name]; });
      return '<div class="dmm-explorer-note" data-note="' + kit.esc(raised[0]) + '">' + kit.esc(text) + "</div>";
    }).join("");
    ROOT.setAttribute("data-key", key);
  }

  if (payload.current !== undefined) {
    draw(payload.current);
    return;
  }
  var inputs = spec.controls.map(function (c) { return ROOT.querySelector("[data-name='" + c.name + "']:not(output)"); });
  function currentKey() { return inputs.map(function (el) { return parseInt(el.value, 10); }).join(","); }
  inputs.forEach(function (el, k) {
    var c = spec.controls[k], output = ROOT.querySelector("output[data-name='" + c.name + "']");
    el.addEventListener(el.tagName === "SELECT" ? "change" : "input", function () {
      var i = parseInt(el.value, 10);
      if (output) output.textContent = c.labels[i];
      if (el.tagName !== "SELECT") el.setAttribute("aria-valuetext", c.labels[i]);
      draw(currentKey());
    });
  });
  draw(currentKey());
})();
