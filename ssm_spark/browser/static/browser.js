/* ssm-spark product browser (served under /browse/; every URL here is relative to the page).
 *
 * The map shows the date's SSM tiles (tiles/<date>/<z>/<x>/<y>.png, rendered by the server), the QC
 * layer on demand and the product's tile outlines; the slider walks the dates; a click draws the
 * cell's series (api/series: ssm with its p05-p95 band, from the Parquet) and, on a date without
 * product, the point retrieval (api/point). What the page shows is also in window.ssmBrowser.state
 * (and each drawn point carries its values as data-* attributes), so a test can check it.
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var W = 380, H = 220, M = {left: 42, right: 10, top: 10, bottom: 30};
  var state = {ready: false, meta: null, dates: [], product: {}, date: null, qc: false,
               tiles: {date: null, started: 0, loaded: 0, errors: 0, done: false},
               click: null, series: null, seriesError: null, point: null, chart: {points: 0, masked: 0, done: false},
               errors: []};
  var api = window.ssmBrowser = {state: state, map: null};
  var map, ssmLayer, qcLayer, marker;

  function $(id) { return document.getElementById(id); }

  function getJSON(url) {
    return fetch(url).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.error || (r.status + " " + r.statusText)); }
        return body;
      });
    });
  }

  function status(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
    if (isError) { state.errors.push(text); }
  }

  function tileUrl(date, layer) {
    return "tiles/" + date + "/{z}/{x}/{y}.png?layer=" + layer;
  }

  function fmt(v, digits) { return v === null || v === undefined ? "\u2013" : v.toFixed(digits || 3); }

  // -- map and tiles
  function makeLayer(layer, opacity) {
    var opts = {tileSize: 256, maxZoom: state.meta.max_zoom, opacity: opacity, keepBuffer: 1,
                attribution: "ssm-spark product " + (state.meta.manifest_id || "")};
    if (state.meta.bounds) { opts.bounds = L.latLngBounds(state.meta.bounds); }
    var tl = L.tileLayer(tileUrl(state.date, layer), opts);
    if (layer === "ssm") {
      tl.on("tileloadstart", function () { state.tiles.started += 1; state.tiles.done = false; });
      tl.on("tileload", function (e) {
        if (e.tile.src.indexOf("/" + state.tiles.date + "/") >= 0) { state.tiles.loaded += 1; }
      });
      tl.on("tileerror", function () { state.tiles.errors += 1; status("a map tile failed to load", true); });
      tl.on("load", function () { state.tiles.done = true; });
    }
    return tl;
  }

  function showDate(i) {
    var date = state.dates[i];
    state.date = date;
    $("slider").value = String(i);
    var has = !!state.product[date];
    $("date-label").textContent = date + (has ? "" : " (no product)");
    $("date-label").className = has ? "" : "no-product";
    state.tiles = {date: has ? date : null, started: 0, loaded: 0, errors: 0, done: !has};
    if (has) {
      ssmLayer.setUrl(tileUrl(date, "ssm"));
      qcLayer.setUrl(tileUrl(date, "qc"));
      if (!map.hasLayer(ssmLayer)) { ssmLayer.addTo(map); }
      if (state.qc && !map.hasLayer(qcLayer)) { qcLayer.addTo(map); }
      status("");
    } else {
      map.removeLayer(ssmLayer);
      map.removeLayer(qcLayer);
      status("no product on " + date + (state.meta.point_service ?
             ": click the map for a point retrieval" : " (and no point service)"));
    }
    if (state.click) { showCell(state.click.lat, state.click.lon); }
  }

  function setQC(on) {
    state.qc = on;
    $("qc-legend").hidden = !on;
    if (on && state.product[state.date]) { qcLayer.addTo(map); } else { map.removeLayer(qcLayer); }
  }

  function legend() {
    var m = state.meta;
    $("colourbar").style.background = "linear-gradient(to right, " + m.colours.join(", ") + ")";
    var ticks = $("colourbar-ticks");
    for (var k = 0; k <= 4; k++) {
      var s = document.createElement("span");
      s.textContent = (m.range[0] + (m.range[1] - m.range[0]) * k / 4).toFixed(3);
      ticks.appendChild(s);
    }
    var qc = $("qc-legend");
    m.qc_classes.forEach(function (c) {
      var sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = c.colour;
      var name = document.createElement("span");
      name.textContent = c.name;
      qc.appendChild(sw);
      qc.appendChild(name);
    });
  }

  // -- the clicked cell
  function el(name, attrs, parent) {
    var e = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function runs(n, ok) {  // [start, end) index runs where ok(i)
    var out = [], s = -1;
    for (var i = 0; i <= n; i++) {
      if (i < n && ok(i)) { if (s < 0) { s = i; } } else if (s >= 0) { out.push([s, i]); s = -1; }
    }
    return out;
  }

  function drawChart() {
    var svg = $("chart"), s = state.series;
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    state.chart = {points: 0, masked: 0, done: false};
    if (!s) { return; }
    var t = s.dates.map(function (d) { return Date.parse(d + "T00:00:00Z"); });
    var extra = state.point && state.point.ssm !== null && !state.product[state.point.date] ? [state.point] : [];
    var tAll = t.concat(extra.map(function (p) { return Date.parse(p.date + "T00:00:00Z"); }));
    var t0 = Math.min.apply(null, tAll), t1 = Math.max.apply(null, tAll);
    if (t1 === t0) { t0 -= 86400000; t1 += 86400000; }
    var lo = state.meta.range[0], hi = state.meta.range[1];
    s.ssm_p05.concat(s.ssm_p95, extra.map(function (p) { return p.ssm_p05; }), extra.map(function (p) { return p.ssm_p95; })).forEach(function (v) {
      if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    });
    function x(ms) { return M.left + (ms - t0) / (t1 - t0) * (W - M.left - M.right); }
    function y(v) { return H - M.bottom - (v - lo) / (hi - lo) * (H - M.top - M.bottom); }
    el("line", {x1: M.left, y1: H - M.bottom, x2: W - M.right, y2: H - M.bottom, "class": "axis"}, svg);
    el("line", {x1: M.left, y1: M.top, x2: M.left, y2: H - M.bottom, "class": "axis"}, svg);
    var step = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5].filter(function (st) { return (hi - lo) / st <= 6; })[0] || 1;
    for (var v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9; v += step) {
      el("line", {x1: M.left - 3, y1: y(v), x2: M.left, y2: y(v), "class": "axis"}, svg);
      el("text", {x: M.left - 5, y: y(v) + 3, "text-anchor": "end"}, svg).textContent = v.toFixed(2);
    }
    var month = new Date(t0), months = [];
    month = Date.UTC(month.getUTCFullYear(), month.getUTCMonth() + 1, 1);
    while (month < t1) { months.push(month); var dm = new Date(month); month = Date.UTC(dm.getUTCFullYear(), dm.getUTCMonth() + 1, 1); }
    var every = Math.ceil(months.length / 6);
    months.forEach(function (ms, i) {
      el("line", {x1: x(ms), y1: H - M.bottom, x2: x(ms), y2: H - M.bottom + 3, "class": "axis"}, svg);
      if (i % every === 0) {
        el("text", {x: x(ms), y: H - M.bottom + 14, "text-anchor": "middle"}, svg).textContent =
          new Date(ms).toISOString().slice(0, 7);
      }
    });
    if (!months.length) {
      [[t0, "start"], [t1, "end"]].forEach(function (a) {
        el("text", {x: x(a[0]), y: H - M.bottom + 14, "text-anchor": a[1]}, svg).textContent =
          new Date(a[0]).toISOString().slice(0, 10);
      });
    }
    el("text", {x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle"}, svg).textContent =
      "ssm (m3/m3), 5-95 % band; " + s.dates.length + " product dates";
    var ok = function (i) { return s.ssm[i] !== null && s.ssm_p05[i] !== null && s.ssm_p95[i] !== null; };
    runs(s.dates.length, ok).forEach(function (r) {
      var up = [], down = [], line = [];
      for (var i = r[0]; i < r[1]; i++) {
        up.push(x(t[i]) + "," + y(s.ssm_p95[i]));
        down.unshift(x(t[i]) + "," + y(s.ssm_p05[i]));
        line.push(x(t[i]) + "," + y(s.ssm[i]));
      }
      if (r[1] - r[0] === 1) {  // one date alone: a bar for its band
        el("rect", {x: x(t[r[0]]) - 2, y: y(s.ssm_p95[r[0]]), width: 4,
                    height: y(s.ssm_p05[r[0]]) - y(s.ssm_p95[r[0]]), "class": "band"}, svg);
      } else {
        el("polygon", {points: up.concat(down).join(" "), "class": "band"}, svg);
        el("polyline", {points: line.join(" "), "class": "line"}, svg);
      }
    });
    var tn = Date.parse(state.date + "T00:00:00Z");
    if (tn >= t0 && tn <= t1) {
      el("line", {x1: x(tn), y1: M.top, x2: x(tn), y2: H - M.bottom, "class": "now"}, svg);
    }
    s.dates.forEach(function (d, i) {
      if (s.ssm[i] === null) {
        var m = el("line", {x1: x(t[i]) - 3, y1: H - M.bottom - 3, x2: x(t[i]) + 3, y2: H - M.bottom + 3,
                            "class": "masked", "data-date": d, "data-qc": s.qc[i]}, svg);
        el("title", {}, m).textContent = d + ": no estimate (QC bits " + s.qc[i] + ")";
        state.chart.masked += 1;
        return;
      }
      var c = el("circle", {cx: x(t[i]), cy: y(s.ssm[i]), r: 3.5, "class": "pt" + (d === state.date ? " current" : ""),
                            "data-date": d, "data-ssm": String(s.ssm[i]), "data-p05": String(s.ssm_p05[i]),
                            "data-p95": String(s.ssm_p95[i]), "data-qc": String(s.qc[i])}, svg);
      el("title", {}, c).textContent = d + ": " + fmt(s.ssm[i]) + " (" + fmt(s.ssm_p05[i]) + "\u2013" +
        fmt(s.ssm_p95[i]) + ")";
      state.chart.points += 1;
    });
    extra.forEach(function (p) {
      var px = x(Date.parse(p.date + "T00:00:00Z")), py = y(p.ssm);
      if (p.ssm_p05 !== null && p.ssm_p95 !== null) {
        el("rect", {x: px - 2, y: y(p.ssm_p95), width: 4, height: y(p.ssm_p05) - y(p.ssm_p95), "class": "band-point"}, svg);
      }
      el("polygon", {points: [px, py - 5, px + 5, py, px, py + 5, px - 5, py].join(" "), "class": "pt-point",
                     "data-date": p.date, "data-ssm": String(p.ssm)}, svg);
    });
  }

  function showCell(lat, lon) {
    state.click = {lat: lat, lon: lon};
    state.series = null;
    state.seriesError = null;
    state.point = null;
    state.chart.done = false;
    if (marker) { marker.setLatLng([lat, lon]); } else {
      marker = L.circleMarker([lat, lon], {radius: 6, color: "#d7301f", weight: 2, fill: false}).addTo(map);
    }
    var date = state.date, q = "lat=" + lat.toFixed(6) + "&lon=" + lon.toFixed(6);
    $("point-info").textContent = "";
    $("point-info").className = "";
    var wantPoint = !state.product[date] && state.meta.point_service;
    var seriesDone = getJSON("api/series?" + q).then(function (s) {
      state.series = s;
      $("cell-info").textContent = "cell row " + s.cell.row + ", col " + s.cell.col + " (" + s.cell.grid +
        "), centre " + s.cell.lat.toFixed(4) + ", " + s.cell.lon.toFixed(4);
      $("hint").hidden = true;
    }, function (err) {
      state.seriesError = err.message;
      $("cell-info").textContent = err.message;
    });
    var pointDone = !wantPoint ? Promise.resolve() : getJSON("api/point?" + q + "&date=" + date).then(function (p) {
      state.point = p;
      $("point-info").textContent = "Point retrieval (" + p.source + ") on " + p.date + ": ssm " + fmt(p.ssm) +
        " (" + fmt(p.ssm_p05) + "\u2013" + fmt(p.ssm_p95) + ") m3/m3" +
        (p.qc_flags && p.qc_flags.length ? "; QC " + p.qc_flags.join(", ") : "");
    }, function (err) {
      state.point = {error: err.message, date: date};
      $("point-info").textContent = "Point retrieval on " + date + ": " + err.message;
      $("point-info").className = "error";
    });
    return Promise.all([seriesDone, pointDone]).then(function () {
      if (state.click && state.click.lat === lat && state.click.lon === lon && state.date === date) {
        drawChart();
        state.chart.done = true;
        state.chart.date = date;
      }
    });
  }

  // -- start
  Promise.all([getJSON("api/meta"), getJSON("api/dates")]).then(function (res) {
    var meta = res[0], dates = res[1];
    state.meta = meta;
    state.dates = dates.dates;
    dates.product.forEach(function (d) { state.product[d] = true; });
    $("product-info").textContent = (meta.region || "") + " \u00b7 " + meta.grid + " \u00b7 " +
      dates.product.length + " product dates" + (dates.without_product.length ?
      ", " + dates.without_product.length + " without product" : "") +
      (meta.manifest_id ? " \u00b7 registry " + meta.manifest_id : "");
    legend();
    map = api.map = L.map("map", {maxZoom: meta.max_zoom, zoomSnap: 1, fadeAnimation: false});
    L.control.scale({imperial: false}).addTo(map);
    if (meta.tiles.length) {
      L.polygon(meta.tiles, {color: "#555", weight: 1, fill: false, interactive: false}).addTo(map);
    }
    if (meta.bounds) { map.fitBounds(meta.bounds); } else { map.setView([0, 0], 2); }
    if (!state.dates.length) { status("the product has no committed date yet", true); return; }
    var last = dates.product.length ? dates.product[dates.product.length - 1] : state.dates[state.dates.length - 1];
    state.date = last;
    ssmLayer = makeLayer("ssm", 1.0);
    qcLayer = makeLayer("qc", 0.85);
    var slider = $("slider");
    slider.max = String(state.dates.length - 1);
    slider.addEventListener("input", function () { showDate(parseInt(slider.value, 10)); });
    $("prev").addEventListener("click", function () {
      showDate(Math.max(0, parseInt(slider.value, 10) - 1));
    });
    $("next").addEventListener("click", function () {
      showDate(Math.min(state.dates.length - 1, parseInt(slider.value, 10) + 1));
    });
    $("qc-toggle").addEventListener("change", function () { setQC($("qc-toggle").checked); });
    map.on("click", function (e) { showCell(e.latlng.lat, e.latlng.lng); });
    showDate(state.dates.indexOf(last));
    state.ready = true;
  }).catch(function (err) { status("cannot load the product: " + err.message, true); });
})();
