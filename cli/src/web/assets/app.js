// pluto's page: server-rendered; this only keeps the live parts fresh.
// An element with data-live="/path" has its content replaced by that path's HTML every 2 s;
// a page with data-reload on <main>'s first child reloads itself every 2 s (a job running).
(function () {
  "use strict";
  function refresh(el) {
    fetch(el.dataset.live, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { el.innerHTML = html; } })
      .catch(function () { /* the node restarting: try again at the next tick */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-live]");
    if (live.length) {
      setInterval(function () { live.forEach(refresh); }, 2000);
    }
    if (document.querySelector("[data-reload]")) {
      setTimeout(function () { location.reload(); }, 2000);
    }
  });
})();
