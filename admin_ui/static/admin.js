// llmserver admin console: copy buttons and the dashboard's live refresh. No build step, no inline script.
"use strict";

// Background refreshes say so: the server does not count them as activity, so an open page does
// not keep an idle session alive forever (issue 19).
var POLL_HEADERS = { "Accept": "application/json", "X-Console-Poll": "1" };

function setupCopyButtons() {
  document.querySelectorAll("button.copy").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.dataset.copy);
      if (!source) { return; }
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      }, function () {
        var range = document.createRange();
        range.selectNodeContents(source);
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      });
    });
  });
}

function formatBytes(n) {
  var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
}

function setText(id, text) {
  var el = document.getElementById(id);
  if (el) { el.textContent = text; }
}

function renderLive(data) {
  var s = data.system;
  setText("cpu", s.cpu.map(function (c, i) { return "core " + i + ": " + c + " %"; }).join("  "));
  setText("memory", s.memory ? formatBytes(s.memory.used) + " of " + formatBytes(s.memory.total) : "not available");
  setText("disk", s.disk ? formatBytes(s.disk.used) + " of " + formatBytes(s.disk.total) + " (" + s.disk.path + ")" : "not available");
  setText("npu", s.npu ? "load " + s.npu.load.join(" % / ") + " %" + (s.npu.freq_hz ? ", " + Math.round(s.npu.freq_hz / 1e6) + " MHz" : "") +
    (s.npu.temp_c !== null ? ", " + s.npu.temp_c + " °C" : "") : "no NPU on this machine");
  setText("gpu", s.gpu ? s.gpu.name + ": load " + s.gpu.load + " %" : "no GPU on this machine");
  setText("updated", new Date(s.time * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC");
  var rpm = data.requests_per_minute;
  setText("rpm-last", String(rpm[rpm.length - 1]));
  var spark = document.getElementById("rpm");
  if (spark) {
    var bars = spark.querySelectorAll(".bar");
    rpm.forEach(function (n, i) { if (bars[i]) { bars[i].className = "bar b" + Math.min(n, 10); bars[i].title = String(n); } });
  }
  var models = document.getElementById("models");
  if (models) {
    var rows = data.runtime.models.map(function (m) {
      var tr = document.createElement("tr");
      [m.name, m.state].forEach(function (v) { var td = document.createElement("td"); td.textContent = v; tr.appendChild(td); });
      return tr;
    });
    var tbody = models.querySelector("tbody");
    if (tbody) { tbody.replaceChildren.apply(tbody, rows); }
  }
}

function setupLiveRefresh() {
  var section = document.querySelector("[data-refresh]");
  if (!section) { return; }
  var url = section.dataset.refresh;
  window.setInterval(function () {
    if (document.hidden) { return; }
    fetch(url, { credentials: "same-origin", headers: POLL_HEADERS })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { renderLive(data); } })
      .catch(function () { /* the next tick tries again */ });
  }, 5000);
}

// The Models page: states, errors and download progress from /admin/api/models once a second.
function renderModel(row, m) {
  var set = function (field, text) {
    var el = row.querySelector('[data-field="' + field + '"]');
    if (el) { el.textContent = text; }
  };
  set("desired_state", m.desired_state);
  set("actual_state", m.actual_state);
  set("download_state", m.download_state);
  set("error", m.error || "");
  var progress = row.querySelector('[data-field="progress"]');
  var percent = m.download_progress === null ? 0 : Math.round(m.download_progress * 1000) / 10;
  if (progress) { progress.value = percent; }
  set("progress_text", m.download_progress === null ? "" :
    percent + " %" + (m.total_bytes ? " of " + formatBytes(m.total_bytes) : ""));
}

function setupModelRefresh() {
  var table = document.getElementById("model-table");
  if (!table) { return; }
  window.setInterval(function () {
    if (document.hidden) { return; }
    fetch(table.dataset.live, { credentials: "same-origin", headers: POLL_HEADERS })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        var known = {};
        table.querySelectorAll("tr[data-model]").forEach(function (row) { known[row.dataset.model] = row; });
        data.models.forEach(function (m) { if (known[m.name]) { renderModel(known[m.name], m); } });
      })
      .catch(function () { /* the next tick tries again */ });
  }, 1000);
}

// The header's menu, a <details> that works without JavaScript (issue 19). With it: Escape or a
// click elsewhere closes it on a phone; a browser without ::details-content (which admin.css uses
// to show the links on a wide screen) gets the menu opened while the screen is wide.
function setupMenu() {
  var menu = document.getElementById("menu");
  if (!menu) { return; }
  var wide = window.matchMedia("(min-width: 56rem)");
  if (!CSS.supports("selector(::details-content)")) {
    var follow = function () { menu.open = wide.matches; };
    follow();
    wide.addEventListener("change", follow);
  }
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && menu.open && !wide.matches) {
      menu.open = false;
      menu.querySelector("summary").focus();
    }
  });
  document.addEventListener("click", function (event) {
    if (menu.open && !wide.matches && !menu.contains(event.target)) { menu.open = false; }
  });
}

document.addEventListener("DOMContentLoaded", function () {
  setupMenu();
  setupCopyButtons();
  setupLiveRefresh();
  setupModelRefresh();
});
