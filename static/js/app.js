// The dashboard's shared script: errors HTMX could not swap in, and the equity charts
// (TradingView lightweight-charts 5, vendored as the LightweightCharts global).
(function () {
  "use strict";

  // --- errors: a refused or failed request is said at the top of the page --------------------
  function flash(message) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(function () { box.hidden = true; }, 10000);
  }

  // The server's own reason, where it sent one: the error fragment's role=alert text (a refused
  // re-arm and a stale CSRF token answer with one). 404/409/422/423 fragments are swapped into
  // the page instead (htmx-config in base.html) and never reach this handler.
  function reasonOf(xhr) {
    const type = xhr.getResponseHeader("Content-Type") || "";
    const body = xhr.responseText || "";
    if (type.indexOf("text/html") !== 0 || !body || body.length > 8192) return null;
    const alert = new DOMParser().parseFromString(body, "text/html").querySelector("[role=alert]");
    const text = alert ? alert.textContent.trim() : "";
    return text || null;
  }

  document.addEventListener("htmx:responseError", function (event) {
    const xhr = event.detail.xhr;
    const status = xhr.status;
    const reason = reasonOf(xhr);
    const what = reason
      ? reason + " (" + status + ")"
      : status === 403
        ? "The server refused the request (403)."
        : "The server could not complete the request (" + status + "). Try again; if it persists, check the server log.";
    flash(what);
  });
  document.addEventListener("htmx:sendError", function () {
    flash("The server did not answer. Is it running? The page keeps retrying its live parts.");
  });

  // --- number formats, the same as the template filters --------------------------------------
  const money2 = new Intl.NumberFormat("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
  const price4 = new Intl.NumberFormat("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 4});
  const qty8 = new Intl.NumberFormat("en-US", {maximumFractionDigits: 8});
  const qty4 = new Intl.NumberFormat("en-US", {maximumFractionDigits: 4});
  const finite = function (v) { return typeof v === "number" && isFinite(v); };
  const format = {
    money: function (v) { return finite(v) ? money2.format(v) : "—"; },
    pnl: function (v) { return finite(v) ? (v >= 0 ? "+" : "") + money2.format(v) : "—"; },
    price: function (v) { return finite(v) ? price4.format(v) : "—"; },
    qty: function (v) { return finite(v) ? qty8.format(v) : "—"; },
  };

  // --- equity charts ------------------------------------------------------------------------
  // points: [{time: unix seconds, value}], ascending; fills: [{time, side, qty, price}].
  function equity(container, points, fills) {
    const noop = {addPoint: function () {}, addFill: function () {}};
    const lib = window.LightweightCharts;
    if (!container || !lib) return noop;
    const chart = lib.createChart(container, {
      autoSize: true,
      layout: {background: {color: "#ffffff"}, textColor: "#1f2933", fontSize: 12},
      grid: {vertLines: {color: "#eef1f4"}, horzLines: {color: "#eef1f4"}},
      rightPriceScale: {borderColor: "#d9dee3"},
      timeScale: {borderColor: "#d9dee3", timeVisible: true, secondsVisible: false},
      localization: {priceFormatter: format.money},  // times are shown in UTC
    });
    const series = chart.addSeries(lib.LineSeries, {color: "#1d4ed8", lineWidth: 2, priceLineVisible: false});
    series.setData(points);
    let lastTime = points.length ? points[points.length - 1].time : -Infinity;
    // How many points and markers the chart holds, for people and browser tests alike.
    let count = points.length;
    container.dataset.points = String(count);
    const markers = [];
    const markerApi = lib.createSeriesMarkers(series, []);

    function marker(f) {
      const buy = f.side === "buy";
      return {time: f.time, position: buy ? "belowBar" : "aboveBar", shape: buy ? "arrowUp" : "arrowDown",
              color: buy ? "#15803d" : "#b91c1c", text: (buy ? "B " : "S ") + (finite(f.qty) ? qty4.format(f.qty) : "")};
    }
    fills.forEach(function (f) { markers.push(marker(f)); });
    markerApi.setMarkers(markers);
    container.dataset.markers = String(markers.length);
    if (points.length) chart.timeScale().fitContent();
    const empty = container.querySelector(".chart-empty");

    return {
      addPoint: function (time, value) {
        if (!finite(time) || !finite(value) || time < lastTime) return;  // the chart only grows forward
        if (empty && empty.parentNode) empty.remove();
        if (time > lastTime) count += 1;
        series.update({time: time, value: value});
        lastTime = time;
        container.dataset.points = String(count);
      },
      addFill: function (f) {
        markers.push(marker(f));
        markers.sort(function (a, b) { return a.time - b.time; });
        markerApi.setMarkers(markers);
        container.dataset.markers = String(markers.length);
      },
    };
  }

  window.paperCharts = {equity: equity, format: format};

  // Static charts (a backtest's curve): <div data-equity-chart="ID"> reads <script id="ID">,
  // on page load and whenever HTMX swaps one in.
  function drawStatic(root) {
    root.querySelectorAll("[data-equity-chart]").forEach(function (box) {
      if (box.dataset.drawn) return;
      const source = document.getElementById(box.dataset.equityChart);
      if (!source) return;
      box.dataset.drawn = "1";
      equity(box, JSON.parse(source.textContent), []);
    });
  }
  if (window.htmx) {
    window.htmx.onLoad(drawStatic);
  } else {
    document.addEventListener("DOMContentLoaded", function () { drawStatic(document); });
  }
})();
