// webhook-exporter status page: refreshes the rows from /api/v1/probes every few seconds
// and runs a probe on demand. The page is complete without this script; it only keeps it
// current. Every value from the API is written with textContent or setAttribute (never
// innerHTML): the Divalto message comes from the ERP and may contain markup.
(function () {
  "use strict";

  const POLL_MS = 5000;
  const BARS = parseInt(document.body.dataset.historyBars, 10) || 30;
  // Chart geometry: keep in step with src/server/status_page.rs.
  const BAR_WIDTH = 5;
  const BAR_GAP = 1;
  const CHART_HEIGHT = 36;
  const BASELINE = 26;
  const MAX_BAR = 24;
  const FAILURE_MARK = 9;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const STATUS_TEXT = { up: "up", down: "down", never: "never run" };

  let timer = null;
  let inFlight = false;
  // A refresh asked for while one is in flight (after "Run now") runs right after it.
  let again = false;

  // Builds an element; strings become text nodes, never markup.
  function h(tag, attrs, ...children) {
    return fill(document.createElement(tag), attrs, children);
  }

  function svg(tag, attrs, ...children) {
    return fill(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function fill(el, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function duration(seconds) {
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 10) return seconds.toFixed(2) + " s";
    return seconds.toFixed(1) + " s";
  }

  function clock(iso) {
    const date = new Date(iso);
    if (isNaN(date)) return iso;
    return date.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function relative(iso) {
    const seconds = Math.trunc((new Date(iso) - Date.now()) / 1000);
    const span = Math.abs(seconds);
    if (span < 1) return "just now";
    let amount;
    if (span < 60) amount = span + " s";
    else if (span < 3600) amount = Math.floor(span / 60) + " min";
    else if (span < 86400) amount = Math.floor(span / 3600) + " h";
    else amount = Math.floor(span / 86400) + " d";
    return seconds < 0 ? amount + " ago" : "in " + amount;
  }

  function statusOf(probe) {
    if (!probe.last_result) return "never";
    return probe.last_result.success ? "up" : "down";
  }

  function detail(result) {
    const parts = [];
    if (result.http_status !== null && result.http_status !== undefined) {
      parts.push("HTTP " + result.http_status);
    }
    if (result.response_code !== null && result.response_code !== undefined) {
      parts.push("code " + result.response_code);
    }
    if (result.attempts > 1) parts.push(result.attempts + " attempts");
    return parts.join(" · ");
  }

  function stamp(iso) {
    return [
      h("time", { datetime: iso, title: clock(iso) }, clock(iso)),
      " ",
      h("span", { class: "age", "data-at": iso }, relative(iso)),
    ];
  }

  function chart(history) {
    const runs = history.slice(-BARS);
    const width = BARS * (BAR_WIDTH + BAR_GAP);
    const slowest = runs
      .filter((r) => r.success)
      .reduce((max, r) => Math.max(max, r.duration_seconds), 0);
    const failed = runs.filter((r) => !r.success).length;
    let label = "No runs yet";
    if (runs.length > 0) {
      label =
        "Last " + runs.length + (runs.length === 1 ? " run" : " runs") + ", oldest first: " +
        (runs.length - failed) +
        " succeeded, " + failed + " failed";
      if (slowest > 0) label += "; slowest success " + duration(slowest);
    }
    const first = BARS - runs.length;
    const bars = runs.map((r, i) => {
      const x = (first + i) * (BAR_WIDTH + BAR_GAP);
      const took = duration(r.duration_seconds);
      if (r.success) {
        const share = slowest > 0 ? r.duration_seconds / slowest : 0;
        const height = 2 + Math.round(share * (MAX_BAR - 2));
        return svg("rect", { class: "ok", x: x, y: BASELINE - height, width: BAR_WIDTH, height: height },
          svg("title", null, clock(r.finished_at) + ": success, " + took));
      }
      return svg("rect", { class: "failed", x: x, y: BASELINE + 1, width: BAR_WIDTH, height: FAILURE_MARK },
        svg("title", null, clock(r.finished_at) + ": failed (" + (r.reason || "other") + "), " + took));
    });
    return svg("svg", {
      class: "chart", role: "img", "aria-label": label, width: width, height: CHART_HEIGHT,
      viewBox: "0 0 " + width + " " + CHART_HEIGHT,
    },
    svg("title", null, label),
    svg("line", { class: "axis", x1: 0, x2: width, y1: BASELINE + 0.5, y2: BASELINE + 0.5 }),
    bars);
  }

  function cell(row, name) {
    return row.querySelector("td." + name);
  }

  function updateRow(row, probe) {
    const status = statusOf(probe);
    const last = probe.last_result;
    row.classList.remove("status-up", "status-down", "status-never");
    row.classList.add("status-" + status);

    cell(row, "c-status").replaceChildren(
      h("span", { class: "badge " + status }, STATUS_TEXT[status]),
      " ",
      h("span", { class: "running", hidden: !probe.running }, "running…"));

    cell(row, "c-last").replaceChildren(
      ...(last ? stamp(last.finished_at) : [h("span", { class: "none" }, "not yet")]));

    cell(row, "c-duration").replaceChildren(
      last ? duration(last.duration_seconds) : h("span", { class: "none" }, "–"));

    const result = [];
    if (last) {
      if (last.reason) result.push(h("strong", { class: "reason" }, last.reason), " ");
      const more = detail(last);
      if (more) result.push(h("span", { class: "detail" }, more), " ");
      result.push(h("span", { class: "message" }, last.message));
      if (last.success) {
        const earlier = probe.history.slice().reverse().find((r) => !r.success);
        if (earlier) {
          result.push(" ", h("span", { class: "earlier" },
            "Last failure ",
            h("span", { class: "age", "data-at": earlier.finished_at, title: clock(earlier.finished_at) },
              relative(earlier.finished_at)),
            ": ",
            h("strong", { class: "reason" }, earlier.reason || "other"),
            " ",
            h("span", { class: "message" }, earlier.message)));
        }
      }
    } else {
      result.push(h("span", { class: "none" }, "no result yet"));
    }
    cell(row, "c-result").replaceChildren(...result);

    cell(row, "c-failures").textContent = String(probe.consecutive_failures);

    cell(row, "c-next").replaceChildren(
      ...(probe.next_run ? stamp(probe.next_run) : [h("span", { class: "none" }, "none planned")]));

    cell(row, "c-history").replaceChildren(chart(probe.history));
  }

  function rowsByName() {
    const rows = new Map();
    for (const row of document.querySelectorAll("tr.probe[data-probe]")) {
      rows.set(row.dataset.probe, row);
    }
    return rows;
  }

  function setText(id, text) {
    const el = document.getElementById(id);
    if (el) el.textContent = text;
  }

  function apply(data) {
    const probes = data.probes || [];
    const rows = rowsByName();
    const names = new Set(probes.map((p) => p.name));
    // A reload added or removed probes: the server knows how to group them.
    if (names.size !== rows.size || [...rows.keys()].some((n) => !names.has(n))) {
      window.location.reload();
      return;
    }
    const counts = { up: 0, down: 0, never: 0 };
    for (const probe of probes) {
      counts[statusOf(probe)] += 1;
      updateRow(rows.get(probe.name), probe);
    }
    setText("count-up", String(counts.up));
    setText("count-down", String(counts.down));
    setText("count-never", String(counts.never));
    setText("count-total", String(probes.length));
    document.title = "webhook-exporter: " + counts.down + " down, " + counts.up + " up";
  }

  async function refresh() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      const response = await fetch("/api/v1/probes?history=" + BARS, {
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      apply(await response.json());
      setText("refresh-state",
        "Updated " + clock(new Date().toISOString()) + "; refreshes every " + POLL_MS / 1000 + " s.");
      document.documentElement.dataset.refreshed = String(Date.now());
    } catch (error) {
      setText("refresh-state",
        "Refresh failed (" + error.message + "); showing data from " + clock(new Date().toISOString()) +
        " or earlier. Retrying.");
    } finally {
      inFlight = false;
    }
    if (again) {
      again = false;
      await refresh();
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!document.hidden) await refresh();
      schedule();
    }, POLL_MS);
  }

  function nextRunText(seconds) {
    return seconds > 0 ? "Next on-demand run possible in " + seconds + " s" : "On-demand run possible now";
  }

  function tickAges() {
    for (const el of document.querySelectorAll(".age[data-at]")) {
      el.textContent = relative(el.dataset.at);
    }
    for (const el of document.querySelectorAll(".run-output[data-until]")) {
      const left = Math.max(0, Math.ceil((Number(el.dataset.until) - Date.now()) / 1000));
      el.textContent = nextRunText(left);
      if (left === 0) delete el.dataset.until;
    }
  }

  async function runNow(button) {
    const name = button.dataset.probe;
    const output = button.parentElement.querySelector(".run-output");
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    output.className = "run-output pending";
    delete output.dataset.until;
    output.textContent = "Running…";
    try {
      const response = await fetch("/api/v1/probes/" + encodeURIComponent(name) + "/run", {
        method: "POST",
        headers: { Accept: "application/json" },
      });
      if (response.status === 409) {
        output.className = "run-output busy";
        output.textContent = "Already running";
      } else if (response.status === 429) {
        // The on-demand gap spares the ERP: say when a run is possible again.
        const wait = parseInt(response.headers.get("Retry-After"), 10);
        output.className = "run-output busy";
        if (Number.isFinite(wait) && wait >= 0) {
          output.dataset.until = String(Date.now() + wait * 1000);
          output.textContent = nextRunText(wait);
        } else {
          delete output.dataset.until;
          output.textContent = "Too soon after the last run; try again shortly";
        }
      } else if (response.ok) {
        const result = await response.json();
        output.className = "run-output " + (result.success ? "up" : "down");
        output.textContent = result.success
          ? "Succeeded in " + duration(result.duration_seconds) + ": " + result.message
          : "Failed (" + result.reason + ") in " + duration(result.duration_seconds) + ": " + result.message;
      } else {
        let message = "HTTP " + response.status;
        try {
          const body = await response.json();
          if (body && body.error) message = body.error;
        } catch (_) {
          // Not JSON: the status says enough.
        }
        output.className = "run-output down";
        output.textContent = "Could not run: " + message;
      }
    } catch (error) {
      output.className = "run-output down";
      output.textContent = "Could not run: " + error.message;
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
    await refresh();
  }

  for (const button of document.querySelectorAll("button.run[data-probe]")) {
    button.hidden = false;
    button.addEventListener("click", () => runNow(button));
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  setInterval(tickAges, 1000);
  document.documentElement.dataset.live = "on";
  refresh();
  schedule();
})();
