// Switch page: the checklist (#switch-live) polls itself every 2 s while the switch runs (htmx);
// this script adds the organisation's live stream so a step shows as soon as it happens. Each
// "switch" event is only a signal: the element fetches its own fragment again, rendered and scoped
// by the server as usual. Without WebSockets the polling alone keeps the page current.
(function () {
  "use strict";
  var status = document.getElementById("live-status");
  if (!status || !status.dataset.wsPath || !("WebSocket" in window) || !window.htmx) return;
  var attempts = 0;

  function node() { return document.getElementById("switch-live"); }
  function setStatus(state, text) { status.dataset.state = state; status.textContent = text; }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var ws;
    try {
      ws = new WebSocket(scheme + window.location.host + status.dataset.wsPath);
    } catch (e) {
      setStatus("off", "Updating every 2 s");
      return;
    }
    ws.onopen = function () { attempts = 0; setStatus("on", "Live"); };
    ws.onmessage = function (msg) {
      var ev, el = node();
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      if (ev && ev.kind === "switch" && el && ev.switch === el.dataset.liveSwitch) {
        window.htmx.trigger(el, "switch-changed");
      }
    };
    ws.onclose = function (e) {
      var el = node();
      if (el && !el.hasAttribute("hx-get")) { setStatus("off", "Finished"); return; }  // final: no more updates
      if (e.code === 4403 || e.code === 4404 || attempts >= 5) { setStatus("off", "Updating every 2 s"); return; }
      attempts += 1;
      setStatus("off", "Reconnecting…");
      window.setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, attempts)));
    };
  }

  connect();
})();
