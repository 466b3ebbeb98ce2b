// The ibs console's one script (served from the binary; the CSP allows no inline script).
// It shows times in the browser's time zone (the UTC value stays on hover) and polls a running
// job's progress, reloading the page when the job ends.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d.getTime())) {
      // The UTC value on hover, as "YYYY-MM-DD HH:MM:SS UTC".
      t.title = d.toISOString().slice(0, 19).replace("T", " ") + " UTC";
      t.textContent = d.toLocaleString();
    }
  });
  document.querySelectorAll("progress[data-job]").forEach(function (bar) {
    var id = bar.getAttribute("data-job");
    var status = document.querySelector('[data-status-of="' + id + '"]');
    function poll() {
      fetch("/jobs/" + encodeURIComponent(id) + "/progress.json", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j) { return; }
          if (j.percent !== null && j.percent !== undefined) { bar.value = j.percent; }
          if (status) { status.textContent = j.status; }
          if (j.running) { setTimeout(poll, 1000); } else { window.location.reload(); }
        })
        .catch(function () { setTimeout(poll, 3000); });
    }
    setTimeout(poll, 1000);
  });
});
