// Jobs pages: the request form shows only the fields of the chosen kind, and job progress is live.
// Both are enhancements: without this script the form shows every field (the server ignores the
// ones the kind does not use) and the pages show the state of the moment they were loaded.
(function () {
  "use strict";

  // --- the "Request a job" form ---------------------------------------------------------------
  function showFieldsOf(form) {
    var kind = form.querySelector("select[name=kind]");
    if (!kind) return;
    Array.prototype.forEach.call(form.querySelectorAll("[data-kinds]"), function (row) {
      row.hidden = row.dataset.kinds.split(" ").indexOf(kind.value) < 0;
    });
  }
  function showAll() { Array.prototype.forEach.call(document.querySelectorAll(".job-form"), showFieldsOf); }
  document.addEventListener("change", function (e) {
    var form = e.target.closest && e.target.closest(".job-form");
    if (form && e.target.name === "kind") showFieldsOf(form);
  });
  document.addEventListener("htmx:afterSwap", showAll);  // a refused form comes back with its errors
  showAll();

  // --- live progress --------------------------------------------------------------------------
  // Each job event of the organisation's stream is only a signal: the element showing that job
  // (data-live-job), that device (data-live-device) or every job (data-live-all) fetches its own
  // fragment again with htmx, so what appears is always what the server renders, scoped as usual.
  // The stream is followed by TesseraLive.follow (js/live-events.js, included before this script).
  var status = document.getElementById("live-status");
  if (!status || !status.dataset.wsPath || !("WebSocket" in window) || !window.htmx || !window.TesseraLive) return;

  function refresh(ev) {
    var nodes = document.querySelectorAll("[data-live-job], [data-live-device], [data-live-all]");
    Array.prototype.forEach.call(nodes, function (node) {
      var mine = !ev ||
        node.hasAttribute("data-live-all") ||
        (node.dataset.liveJob && node.dataset.liveJob === ev.job) ||
        (node.dataset.liveDevice && node.dataset.liveDevice === ev.device);
      if (mine) window.htmx.trigger(node, "job-changed");
    });
  }

  window.TesseraLive.follow(status.dataset.wsPath, status, {
    opened: function (again) { if (again) refresh(null); },  // events sent while away are not replayed
    event: function (ev) { if (ev && ev.kind === "job") refresh(ev); },
  });
})();
