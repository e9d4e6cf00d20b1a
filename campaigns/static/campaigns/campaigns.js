// Campaign pages: progress is live. Each campaign event of the organisation's stream is only a
// signal: the element showing that campaign (data-live-campaign) or every campaign (data-live-all)
// fetches its own fragment again with htmx, so what appears is what the server renders for this
// viewer. Without this script the pages show the state of the moment they were loaded. The stream
// is followed by TesseraLive.follow (js/live-events.js, included before this script).
(function () {
  "use strict";
  var status = document.getElementById("live-status");
  if (!status || !status.dataset.wsPath || !("WebSocket" in window) || !window.htmx || !window.TesseraLive) return;

  function refresh(ev) {
    var nodes = document.querySelectorAll("[data-live-campaign], [data-live-all]");
    Array.prototype.forEach.call(nodes, function (node) {
      var mine = !ev || node.hasAttribute("data-live-all") || node.dataset.liveCampaign === ev.campaign;
      if (mine) window.htmx.trigger(node, "campaign-changed");
    });
  }

  window.TesseraLive.follow(status.dataset.wsPath, status, {
    opened: function (again) { if (again) refresh(null); },  // events sent while away are not replayed
    event: function (ev) { if (ev && ev.kind === "campaign") refresh(ev); },
  });
})();
