"use strict";
// ldoctor case report: slice stacks, Grad-CAM choice, threshold sliders, sortable tables. No network, no framework.
(function () {
  var data = JSON.parse(document.getElementById("report-data").textContent);

  function byId(id) { return document.getElementById(id); }
  function each(list, fn) { Array.prototype.forEach.call(list, fn); }
  function fixed(x) { return Number(x).toFixed(3); }

  // Sensitivity and specificity at threshold t, linear between the validation operating points
  // (curve: [[threshold, sensitivity, specificity], ...], thresholds ascending; held flat outside them).
  function interpolate(curve, t) {
    var n = curve.length;
    if (n === 0) { return null; }
    if (t <= curve[0][0]) { return [curve[0][1], curve[0][2]]; }
    if (t >= curve[n - 1][0]) { return [curve[n - 1][1], curve[n - 1][2]]; }
    for (var k = 1; k < n; k++) {
      if (t <= curve[k][0]) {
        var a = curve[k - 1], b = curve[k];
        var w = b[0] === a[0] ? 1 : (t - a[0]) / (b[0] - a[0]);
        return [a[1] + w * (b[1] - a[1]), a[2] + w * (b[2] - a[2])];
      }
    }
    return null;
  }

  Object.keys(data.nodules).forEach(function (index) {
    var stack = data.nodules[index], prefix = "nodule-" + index + "-";
    var slider = byId(prefix + "slider"), slice = byId(prefix + "slice"), overlay = byId(prefix + "overlay");
    var toggle = byId(prefix + "overlay-toggle"), number = byId(prefix + "slice-number");
    slider.addEventListener("input", function () {
      var k = Number(slider.value);
      slice.src = stack.slices[k];
      overlay.src = stack.heatmaps[k];
      number.textContent = String(k + 1);
    });
    toggle.addEventListener("change", function () { overlay.hidden = !toggle.checked; });
  });

  var gradcam = byId("gradcam-select");
  if (gradcam) {
    gradcam.addEventListener("change", function () {
      each(document.querySelectorAll("img.gradcam"), function (img) {
        img.hidden = img.id !== "gradcam-" + gradcam.value;
      });
    });
  }

  data.findings.forEach(function (finding) {
    var prefix = "finding-" + finding.id + "-";
    var slider = byId(prefix + "threshold"), value = byId(prefix + "threshold-value"), label = byId(prefix + "label");
    var sens = byId(prefix + "sens"), spec = byId(prefix + "spec");
    slider.addEventListener("input", function () {
      var t = Number(slider.value), positive = finding.probability >= t, at = interpolate(finding.curve, t);
      value.textContent = fixed(t);
      label.textContent = positive ? "positive" : "negative";
      label.className = "flag " + (positive ? "positive" : "negative");
      if (at !== null) {
        sens.textContent = fixed(at[0]);
        spec.textContent = fixed(at[1]);
      }
    });
  });

  // Sortable tables: a header click sorts by that column (numbers numerically, then text), again to reverse.
  function sortKey(cell) {
    var text = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    var number = parseFloat(text);
    return { text: text, number: isFinite(number) && /^\s*[-+]?[\d.]/.test(text) ? number : null };
  }
  function compare(a, b) {
    if (a.number !== null && b.number !== null) { return a.number - b.number; }
    if (a.number !== null || b.number !== null) { return a.number !== null ? -1 : 1; }
    return a.text.localeCompare(b.text);
  }
  each(document.querySelectorAll("table.sortable"), function (table) {
    var headers = table.tHead.rows[0].cells;
    each(headers, function (header, column) {
      header.addEventListener("click", function () {
        var ascending = header.getAttribute("aria-sort") !== "ascending";
        each(headers, function (h) { h.removeAttribute("aria-sort"); });
        header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r, s) {
          var c = compare(sortKey(r.cells[column]), sortKey(s.cells[column]));
          return ascending ? c : -c;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
