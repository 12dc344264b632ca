// Loaded after vendor/requirejs/require.js and before vendor/html-manager/embed-amd.js
// (see nb_ipywidgets_js in _config.yml).
//
// The widget manager's bundle loads its fonts from a "public path" that each of its modules
// derives from its require.js module URL -- by default relative to the page
// (book/@jupyter-widgets/html-manager/dist/...), where nothing is served. Map those module ids
// into the vendored folder, so the URLs point at the font files copied next to the bundle, from
// pages at any depth and with no network.
(function () {
  var assets = new URL("vendor/html-manager/", document.currentScript.src).href;
  window.__jupyter_widgets_assets_path__ = assets;
  if (typeof window.requirejs !== "function") {
    console.error("dmm-widgets-assets.js: require.js is not loaded; widgets will not render");
    return;
  }
  window.requirejs.config({
    paths: {
      "@jupyter-widgets/html-manager/dist": assets.slice(0, -1),
      "@jupyter-widgets/html-manager": assets + "html-manager",
      "@jupyter-widgets/base": assets + "base",
      "@jupyter-widgets/controls": assets + "controls",
      "@jupyter-widgets/base7": assets + "base7",
      "@jupyter-widgets/controls7": assets + "controls7",
    },
  });
})();
