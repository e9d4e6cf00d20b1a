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
  var status = document.getElementById("live-status");
  if (!status || !status.dataset.wsPath || !("WebSocket" in window) || !window.htmx) return;
  var attempts = 0;
  var everConnected = false;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

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

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var ws;
    try {
      ws = new WebSocket(scheme + window.location.host + status.dataset.wsPath);
    } catch (e) {
      setStatus("error", "Live updates unavailable — reload to refresh");
      return;
    }
    ws.onopen = function () {
      attempts = 0;
      setStatus("on", "Live");
      if (everConnected) refresh(null);  // events sent while we were away are not replayed
      everConnected = true;
    };
    ws.onmessage = function (msg) {
      var ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      if (ev && ev.kind === "job") refresh(ev);
    };
    ws.onclose = function (e) {
      if (e.code === 4403 || e.code === 4404 || attempts >= 5) {
        setStatus("error", "Live updates unavailable — reload to refresh");
        return;
      }
      attempts += 1;
      setStatus("off", "Reconnecting…");
      window.setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, attempts)));
    };
  }

  connect();
})();
