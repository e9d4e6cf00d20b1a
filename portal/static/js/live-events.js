// Live audit events on the dashboard. The list works without this script (it is rendered by
// the server); the script only prepends events as they happen, and gives up quietly when the
// WebSocket cannot be opened (proxy without upgrade, server restart...): reload shows them.
(function () {
  "use strict";
  var list = document.getElementById("events");
  var status = document.getElementById("live-status");
  if (!list || !list.dataset.wsPath || !("WebSocket" in window)) return;
  var MAX_ITEMS = 50;
  var attempts = 0;
  var seen = {};
  Array.prototype.forEach.call(list.querySelectorAll("[data-seq]"), function (li) { seen[li.dataset.seq] = true; });

  function setStatus(state, text) {
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
  }

  function fmt(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso || "";
    var months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return d.getUTCDate() + " " + months[d.getUTCMonth()] + " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;  // textContent: never HTML from the wire
    return node;
  }

  function prepend(ev) {
    if (!ev || ev.seq === undefined || seen[ev.seq]) return;
    seen[ev.seq] = true;
    var empty = list.querySelector(".empty");
    if (empty) empty.remove();
    var li = el("li", "event fresh");
    var time = el("time", "", fmt(ev.at));
    time.setAttribute("datetime", ev.at || "");
    li.appendChild(time);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("code", "tag", ev.tag || ev.kind || "event"));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", "target", ev.target || ""));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(el("span", "muted", "by " + (ev.actor || "the platform")));
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX_ITEMS) list.removeChild(list.lastChild);
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var ws;
    try {
      ws = new WebSocket(scheme + window.location.host + list.dataset.wsPath);
    } catch (e) {
      setStatus("error", "Live updates unavailable — reload to refresh");
      return;
    }
    ws.onopen = function () { attempts = 0; setStatus("on", "Live"); };
    ws.onmessage = function (msg) {
      try { prepend(JSON.parse(msg.data)); } catch (e) { /* ignore malformed frames */ }
    };
    ws.onclose = function (e) {
      // 4403/4404: not allowed to follow this organisation; retrying will not help.
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
