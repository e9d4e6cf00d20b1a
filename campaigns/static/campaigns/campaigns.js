// Campaign pages: progress is live. Each campaign event of the organisation's stream is only a
// signal: the element showing that campaign (data-live-campaign) or every campaign (data-live-all)
// fetches its own fragment again with htmx, so what appears is what the server renders for this
// viewer. Without this script the pages show the state of the moment they were loaded.
(function () {
  "use strict";
  var status = document.getElementById("live-status");
  if (!status || !status.dataset.wsPath || !("WebSocket" in window) || !window.htmx) return;
  var attempts = 0;
  var everConnected = false;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function refresh(ev) {
    var nodes = document.querySelectorAll("[data-live-campaign], [data-live-all]");
    Array.prototype.forEach.call(nodes, function (node) {
      var mine = !ev || node.hasAttribute("data-live-all") || node.dataset.liveCampaign === ev.campaign;
      if (mine) window.htmx.trigger(node, "campaign-changed");
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
      if (ev && ev.kind === "campaign") refresh(ev);
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
