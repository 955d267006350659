// Optional: tells the portal which span of the recording was played, for the audit trail.
// Without JavaScript the player still works; the server audits every range it sends.
(function () {
  "use strict";
  var player = document.getElementById("player");
  if (!player || !window.FormData) { return; }
  var from = null, last = 0;
  player.addEventListener("timeupdate", function () { if (!player.seeking) { last = player.currentTime; } });
  function report() {
    if (from === null) { return; }
    var to = player.seeking ? last : player.currentTime;
    var start = Math.min(from, to), end = Math.max(from, to);
    from = null;
    if (end - start < 0.05) { return; }
    var form = new FormData();
    form.append("csrf_token", player.dataset.csrf);
    form.append("start", start.toFixed(3));
    form.append("end", end.toFixed(3));
    if (navigator.sendBeacon) {
      navigator.sendBeacon(player.dataset.report, form);
    } else {
      fetch(player.dataset.report, { method: "POST", body: form, credentials: "same-origin", keepalive: true });
    }
  }
  player.addEventListener("playing", function () { if (from === null) { from = player.currentTime; } });
  player.addEventListener("pause", report);
  player.addEventListener("ended", report);
  player.addEventListener("seeking", function () {
    if (from !== null && !player.paused) { report(); }
  });
  player.addEventListener("seeked", function () { if (!player.paused) { from = player.currentTime; } });
  window.addEventListener("pagehide", report);
})();
