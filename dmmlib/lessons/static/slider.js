// The static slider of dmmlib.lessons.viz.static_slider (the id placeholder is bound at render time).
(function () {
  var root = document.getElementById(ROOT_ID);
  if (!root || root.dataset.ready) { return; }
  root.dataset.ready = "1";
  var frames = root.querySelectorAll("img.dmm-slider-frame");
  var range = root.querySelector("input[type=range]");
  var label = root.querySelector("output");
  var labels = JSON.parse(root.getAttribute("data-labels"));
  function show(i) {
    i = Math.max(0, Math.min(frames.length - 1, i));
    for (var k = 0; k < frames.length; k++) { frames[k].hidden = (k !== i); }
    range.value = String(i);
    range.setAttribute("aria-valuetext", labels[i]);
    label.textContent = labels[i];
    root.setAttribute("data-current", String(i));
  }
  range.addEventListener("input", function () { show(parseInt(range.value, 10)); });
  root.querySelector("button.dmm-prev").addEventListener("click", function () { show(parseInt(range.value, 10) - 1); });
  root.querySelector("button.dmm-next").addEventListener("click", function () { show(parseInt(range.value, 10) + 1); });
  show(parseInt(range.value, 10));
})();
