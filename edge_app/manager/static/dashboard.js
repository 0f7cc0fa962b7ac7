// agecheck dashboard: the charts, and the page keeping itself up to date.
// The figures come from the page itself (a JSON block written by the server); Chart.js is served
// by the dashboard from the package. Every few seconds the page asks /live.json whether anything
// was stored; only then it fetches itself again (same URL, so the same filters) and swaps the
// figures in place, leaving the filter form, the scroll position and the browser history alone.
(function () {
  "use strict";
  var CHART_IDS = ["chart-over-time", "chart-per-till", "chart-bands"];

  function bars(id, part, horizontal) {
    var canvas = document.getElementById(id);
    if (!canvas || !part) { return; }
    var old = Chart.getChart(canvas);
    if (old) { old.destroy(); }
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: part.labels,
        datasets: part.series.map(function (s) {
          // One colour per series: the legend's swatch is the colour of its bars.
          return { label: s.name, data: s.values, backgroundColor: s.colour, borderColor: s.colour };
        })
      },
      options: {
        indexAxis: horizontal ? "y" : "x",
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        // Stacked: the outcomes of alerts add up to the alerts; the age bands' two series
        // (under 18, 18 and over) never share a bar, so each bar stands centred on its label.
        scales: { x: { stacked: true, ticks: { precision: 0 } }, y: { stacked: true, ticks: { precision: 0 } } },
        plugins: { legend: { position: "bottom" } }
      }
    });
  }

  function draw() {
    var el = document.getElementById("chart-data");
    if (!el || typeof Chart === "undefined") { return; }
    var data = JSON.parse(el.textContent);
    bars(CHART_IDS[0], data.over_time, false);
    bars(CHART_IDS[1], data.per_till, true);
    bars(CHART_IDS[2], data.bands, false);
    document.body.setAttribute("data-charts", "drawn");
  }

  // Choosing another store empties the till and cashier choices: they belong to a store.
  var store = document.getElementById("store");
  if (store) {
    store.addEventListener("change", function () {
      ["till", "cashier"].forEach(function (id) {
        var sel = document.getElementById(id);
        if (sel) { sel.value = ""; }
      });
    });
  }

  var body = document.body;
  var every = parseInt(body.getAttribute("data-refresh-ms"), 10) || 10000;
  var busy = false;
  var state = document.getElementById("live-state");

  function say(text) { if (state) { state.textContent = text; } }

  function refresh(version) {
    return fetch(window.location.href, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) { throw new Error("the page answered " + r.status); }
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        var here = document.getElementById("live");
        if (!fresh || !here) { return; }
        var x = window.scrollX, y = window.scrollY;
        here.innerHTML = fresh.innerHTML;
        draw();
        window.scrollTo(x, y);
        document.title = doc.title;
        body.setAttribute("data-version", doc.body.getAttribute("data-version") || version);
        body.setAttribute("data-updates", String((parseInt(body.getAttribute("data-updates"), 10) || 0) + 1));
        say("updated " + new Date().toLocaleTimeString());
      });
  }

  function poll() {
    if (busy) { return; }
    busy = true;
    fetch("live.json", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (live) {
        if (live.version !== body.getAttribute("data-version")) { return refresh(live.version); }
        return null;
      })
      .catch(function (err) { say("not updating: " + err.message + " (retrying)"); })
      .then(function () { busy = false; });
  }

  draw();
  window.setInterval(poll, every);
})();
