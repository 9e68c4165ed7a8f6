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

// The dashboard's figures, formatted as the page's template formats them (dashboard.html's macros).
var FORMATS = {
  num: function (v) { return v.toLocaleString("en-US"); },
  ms: function (v) { return (v >= 10 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1)) + " ms"; },
  pct: function (v) { return (v * 100).toFixed(1) + " %"; },
  rate: function (v) { return v.toFixed(1) + " tok/s"; }
};

function fmt(value, format) {
  return value === null || value === undefined ? "—" : FORMATS[format](value);
}

function pick(data, path) {
  return path.split(".").reduce(function (v, k) { return v === null || v === undefined ? v : v[k]; }, data);
}

function utc(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function cell(text, cls) {
  var td = document.createElement("td");
  td.textContent = text;
  if (cls) { td.className = cls; }
  return td;
}

function modelRows(models) {
  if (!models.length) {
    var empty = cell("No requests.", "muted");
    empty.colSpan = 4;
    var tr = document.createElement("tr");
    tr.appendChild(empty);
    return [tr];
  }
  return models.map(function (m) {
    var row = document.createElement("tr");
    row.appendChild(cell(m.model));
    [m.requests, m.total_tokens, m.errors].forEach(function (n) { row.appendChild(cell(fmt(n, "num"), "n")); });
    return row;
  });
}

function renderTraffic(data, section) {
  section.querySelectorAll("[data-fig]").forEach(function (el) {
    el.textContent = fmt(pick(data, el.dataset.fig), el.dataset.format);
  });
  section.querySelectorAll("tbody[data-rows]").forEach(function (tbody) {
    tbody.replaceChildren.apply(tbody, modelRows(pick(data, tbody.dataset.rows) || []));
  });
  setText("traffic-updated", utc(data.time));
}

function degrees(t) { return t === null ? "" : ", " + t.toFixed(1) + " °C"; }

function npuText(npu) {
  if (!npu) { return "not available (no NPU on this machine)"; }
  return "load " + (npu.load ? npu.load.join(" % / ") + " %" : "not available (debugfs is readable by root only)") +
    (npu.freq_hz ? ", " + Math.round(npu.freq_hz / 1e6) + " MHz" : "") + degrees(npu.temp_c);
}

function gpuText(gpu) {
  if (!gpu) { return "not available (no GPU on this machine)"; }
  return gpu.name + ": load " + (gpu.load === null ? "not available" : gpu.load + " %") +
    (gpu.memory_total ? ", memory " + formatBytes(gpu.memory_used) + " of " + formatBytes(gpu.memory_total) : "") +
    degrees(gpu.temp_c);
}

function chips(id, texts, none) {
  var el = document.getElementById(id);
  if (!el) { return; }
  if (!texts.length) { el.textContent = none; return; }
  var nodes = [];
  texts.forEach(function (text) {
    var chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = text;
    nodes.push(chip, document.createTextNode(" "));  // as the template spaces them
  });
  el.replaceChildren.apply(el, nodes);
}

function renderLive(data) {
  var s = data.system;
  chips("cpu", s.cpu.map(function (c, i) { return "core " + i + ": " + c.toFixed(1) + " %"; }), "");
  setText("memory", s.memory ? formatBytes(s.memory.used) + " of " + formatBytes(s.memory.total) : "not available");
  setText("disk", s.disk ? formatBytes(s.disk.used) + " of " + formatBytes(s.disk.total) + " (" + s.disk.path + ")" : "not available");
  setText("npu", npuText(s.npu));
  setText("gpu", gpuText(s.gpu));
  chips("temperatures", s.temperatures.map(function (t) { return t.name + ": " + t.temp_c.toFixed(1) + " °C"; }), "not available");
  setText("updated", utc(s.time));
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
      [m.name, m.state].forEach(function (v) { tr.appendChild(cell(v)); });
      return tr;
    });
    var tbody = models.querySelector("tbody");
    if (tbody) { tbody.replaceChildren.apply(tbody, rows); }
  }
}

// The dashboard's two refreshing parts: each [data-refresh] section polls its JSON twin every 5 s.
var RENDERERS = { monitor: renderLive, traffic: renderTraffic };

function setupLiveRefresh() {
  document.querySelectorAll("[data-refresh]").forEach(function (section) {
    var render = RENDERERS[section.dataset.render];
    if (!render) { return; }
    window.setInterval(function () {
      if (document.hidden) { return; }
      fetch(section.dataset.refresh, { credentials: "same-origin", headers: POLL_HEADERS })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) { if (data) { render(data, section); } })
        .catch(function () { /* the next tick tries again */ });
    }, 5000);
  });
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
  set("error_short", m.error_short || "");
  var box = row.querySelector('[data-field="error_box"]');
  if (box) { box.hidden = !m.error; }
  set("disk_bytes", m.disk_bytes === null ? "—" : formatBytes(m.disk_bytes));
  set("memory", m.memory_bytes ? formatBytes(m.memory_bytes) + " in memory" : "");
  // Only the actions that fit the state (issue 19): the server says which.
  row.querySelectorAll("form[data-action]").forEach(function (form) {
    form.hidden = m.actions.indexOf(form.dataset.action) < 0;
  });
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
