// Live overview: polls the feed every 2 s and rewrites each row's state and dots in place.
(function () {
  "use strict";
  var table = document.querySelector("table[data-live]");
  if (!table) { return; }
  var feed = table.getAttribute("data-live");
  var note = document.getElementById("live-state");
  var loadedDown = Number(table.getAttribute("data-down"));
  var ids = Array.prototype.map.call(table.querySelectorAll("tbody tr[id^='check-']"),
    function (row) { return row.id.slice(6); }).join(",");
  function tick() {
    fetch(feed + "?ids=" + ids, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (j) {
        j.checks.forEach(function (c) {
          var row = document.getElementById("check-" + c.id);
          if (!row) { return; }
          var st = row.querySelector("td.st");
          if (st.innerHTML !== c.state_html) {
            row.setAttribute("data-status", c.state);
            row.setAttribute("data-quorum", c.quorum ? "ok" : "short");
            row.className = "r-" + c.state;
            st.innerHTML = c.state_html;
          }
          var dots = row.querySelector("td.dots");
          if (dots.innerHTML !== c.dots_html) { dots.innerHTML = c.dots_html; }
        });
        var down = document.getElementById("down-count");
        if (down) { down.textContent = j.down; }
        var more = document.getElementById("more-down");
        if (more) { more.hidden = !(j.down > loadedDown); }
        var quorum = document.getElementById("quorum-state");
        if (quorum && quorum.textContent !== j.quorum_words) { quorum.textContent = j.quorum_words; }
        if (note) { note.textContent = "live, updated " + new Date().toLocaleTimeString(); }
      })
      .catch(function () {
        if (note) { note.textContent = "live updates interrupted; retrying"; }
      })
      .then(function () { setTimeout(tick, 2000); });
  }
  setTimeout(tick, 2000);
})();
