// Live updates over the organisation's event stream (a WebSocket). Every page that follows the
// stream uses TesseraLive.follow; this script also prepends the dashboard's events as they happen.
// All of it is an enhancement: the pages are rendered by the server and show the state of the
// moment they were loaded without it, and it gives up quietly when the WebSocket cannot be opened
// (proxy without upgrade, server restart...): reload shows what happened.
(function () {
  "use strict";
  var UNAVAILABLE = "Live updates unavailable — reload to refresh";

  function setStatus(status, state, text) {
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
  }

  // Follow the stream at `path`, showing its state in the `status` element (if any); reconnect
  // with a growing delay, at most 5 times in a row. handlers.event(ev) receives each event (frames
  // that are not JSON are ignored); handlers.opened(again), if given, is called on each connection,
  // `again` true when it follows a lost one (events sent while away are not replayed).
  function follow(path, status, handlers) {
    var attempts = 0;
    var everConnected = false;

    function connect() {
      var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      var ws;
      try {
        ws = new WebSocket(scheme + window.location.host + path);
      } catch (e) {
        setStatus(status, "error", UNAVAILABLE);
        return;
      }
      ws.onopen = function () {
        attempts = 0;
        setStatus(status, "on", "Live");
        if (handlers.opened) handlers.opened(everConnected);
        everConnected = true;
      };
      ws.onmessage = function (msg) {
        var ev;
        try { ev = JSON.parse(msg.data); } catch (e) { return; }  // ignore malformed frames
        handlers.event(ev);
      };
      ws.onclose = function (e) {
        // 4403/4404: not allowed to follow this organisation; retrying will not help.
        if (e.code === 4403 || e.code === 4404 || attempts >= 5) {
          setStatus(status, "error", UNAVAILABLE);
          return;
        }
        attempts += 1;
        setStatus(status, "off", "Reconnecting…");
        window.setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, attempts)));
      };
    }

    connect();
  }

  window.TesseraLive = { follow: follow };

  // --- the dashboard's recent events ----------------------------------------------------------
  var list = document.getElementById("events");
  if (!list || !list.dataset.wsPath || !("WebSocket" in window)) return;
  var MAX_ITEMS = 50;
  var seen = {};
  Array.prototype.forEach.call(list.querySelectorAll("[data-seq]"), function (li) { seen[li.dataset.seq] = true; });

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

  follow(list.dataset.wsPath, document.getElementById("live-status"), { event: prepend });
})();
