// The kernel dashboard and the slot page refresh their live parts in place
// (templates/admin/trading/kernel/dashboard.html, templates/admin/trading/slot/change_form.html).
// A static file, not an inline script: the content security policy runs scripts only from the
// console itself. The period and the parts come from the page (data-refresh-s, data-parts).
(function () {
  "use strict";
  var state = document.getElementById("refresh-state");
  if (!state) { return; }
  var parts = (state.dataset.parts || "dashboard-banners dashboard-live").split(/\s+/);
  var every = parseFloat(state.dataset.refreshS) * 1000;
  var url = new URL(window.location.href);
  url.searchParams.set("fragment", "1");
  function refresh() {
    fetch(url.toString(), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        // A redirect here is the login page: the session has ended.
        if (r.redirected || !r.ok) { throw new Error(r.redirected ? "logged out" : "HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        parts.forEach(function (id) {
          var from = fresh.getElementById(id), to = document.getElementById(id);
          if (!from || !to) { throw new Error("unexpected answer"); }
          to.innerHTML = from.innerHTML;
        });
        state.textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
        state.className = "fs-refresh";
      })
      .catch(function (err) {
        state.textContent = "NOT REFRESHING (" + err.message + ") since " + new Date().toISOString().slice(11, 19) +
          " UTC: the figures below are out of date";
        state.className = "fs-refresh fs-refresh-failed";
      })
      .then(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();
