// The static slider of dmmlib.lessons.viz.static_slider (the id placeholder is bound at render time).
(function () {
  var root = document.getElementById(ROOT_ID);
  if (!root || root.dataset.ready) { return; }
  root.dataset.ready = "1";
  var frames = root.querySelectorAll("img.dmm-slider-frame");
  var range = root.querySelector("input[type=range]");
  var label = root.querySelector("output");
  var labels = JSON.parse(root.getAttribute("data-labels"));
  var playButton = root.querySelector("button.dmm-play");
  var interval = parseInt(root.getAttribute("data-interval"), 10) || 500;
  var timer = null;
  function current() { return parseInt(range.value, 10); }
  function show(i) {
    i = Math.max(0, Math.min(frames.length - 1, i));
    for (var k = 0; k < frames.length; k++) { frames[k].hidden = (k !== i); }
    range.value = String(i);
    range.setAttribute("aria-valuetext", labels[i]);
    label.textContent = labels[i];
    root.setAttribute("data-current", String(i));
  }
  function playing(on) {
    root.setAttribute("data-playing", on ? "1" : "0");
    if (!playButton) { return; }
    playButton.setAttribute("aria-pressed", on ? "true" : "false");
    playButton.setAttribute("aria-label", on ? "pause" : "play");
    playButton.textContent = on ? "\u275a\u275a pause" : "\u25b6\ufe0e play";
  }
  function pause() {
    if (timer !== null) { clearInterval(timer); timer = null; }
    playing(false);
  }
  function play() {
    if (current() >= frames.length - 1) { show(0); }
    playing(true);
    timer = setInterval(function () {
      show(current() + 1);
      if (current() >= frames.length - 1) { pause(); }  // stop at the last frame
    }, interval);
  }
  range.addEventListener("input", function () { pause(); show(current()); });
  root.querySelector("button.dmm-prev").addEventListener("click", function () { pause(); show(current() - 1); });
  root.querySelector("button.dmm-next").addEventListener("click", function () { pause(); show(current() + 1); });
  if (playButton) {
    playButton.addEventListener("click", function () { if (timer !== null) { pause(); } else { play(); } });
  }
  show(current());
})();
