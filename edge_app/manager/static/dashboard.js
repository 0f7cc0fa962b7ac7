// agecheck dashboard charts. The figures come from the page itself (a JSON block written by the
// server); Chart.js is served by the dashboard from the package.
(function () {
  "use strict";
  var el = document.getElementById("chart-data");
  if (!el || typeof Chart === "undefined") { return; }
  var data = JSON.parse(el.textContent);
  function stacked(id, part, horizontal) {
    var canvas = document.getElementById(id);
    if (!canvas) { return; }
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: part.labels,
        datasets: part.series.map(function (s) {
          return { label: s.name, data: s.values, backgroundColor: s.colour };
        })
      },
      options: {
        indexAxis: horizontal ? "y" : "x",
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { x: { stacked: true, ticks: { precision: 0 } }, y: { stacked: true, ticks: { precision: 0 } } },
        plugins: { legend: { position: "bottom" } }
      }
    });
  }
  stacked("chart-over-time", data.over_time, false);
  stacked("chart-per-till", data.per_till, true);
  var bands = document.getElementById("chart-bands");
  if (bands) {
    new Chart(bands, {
      type: "bar",
      data: {
        labels: data.bands.labels,
        datasets: [{
          label: "shoppers (camera estimate of age)",
          data: data.bands.shoppers,
          backgroundColor: data.bands.labels.map(function (b) {
            return (b === "0-12" || b === "13-17") ? "#c0392b" : "#2e6da4";
          })
        }]
      },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
                 scales: { y: { ticks: { precision: 0 } } }, plugins: { legend: { position: "bottom" } } }
    });
  }
  document.body.setAttribute("data-charts", "drawn");
})();
