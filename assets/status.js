// webhook-exporter status page: refreshes the rows from /status.json (the page's own view
// model, every string already formatted by the server) every few seconds and runs a probe on
// demand. The page is complete without this script; it only keeps it
// current. Every value from the API is written with textContent or setAttribute (never
// innerHTML): the Divalto message comes from the ERP and may contain markup.
(function () {
  "use strict";

  const POLL_MS = 5000;
  const SVG_NS = "http://www.w3.org/2000/svg";

  let timer = null;
  let inFlight = false;
  // A refresh asked for while one is in flight (after "Run now") runs right after it.
  let again = false;
  // When the data shown was generated (as the server wrote it), for the refresh line.
  const rendered = document.querySelector("#refresh-state time");
  let generated = rendered ? rendered.textContent : "the page load";

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

  // Every string shown comes formatted from the server's view model (GET /status.json,
  // the same one the page was rendered from): this script formats no time or duration.
  function stamp(at) {
    return [
      h("time", { datetime: at.iso, title: at.text }, at.text),
      " ",
      h("span", { class: "age", "data-at": at.iso }, at.relative),
    ];
  }

  function chart(c) {
    return svg("svg", {
      class: "chart", role: "img", "aria-label": c.label, width: c.width, height: c.height,
      viewBox: "0 0 " + c.width + " " + c.height,
    },
    svg("title", null, c.label),
    svg("line", { class: "axis", x1: 0, x2: c.width, y1: c.baseline + 0.5, y2: c.baseline + 0.5 }),
    c.bars.map((b) => svg("rect", { class: b.class, x: b.x, y: b.y, width: b.width, height: b.height },
      svg("title", null, b.title))));
  }

  function cell(row, name) {
    return row.querySelector("td." + name);
  }

  function updateRow(row, probe) {
    const status = probe.status.key;
    const last = probe.last;
    row.classList.remove("status-up", "status-down", "status-never");
    row.classList.add("status-" + status);

    cell(row, "c-status").replaceChildren(
      h("span", { class: "badge " + status }, probe.status.text),
      " ",
      h("span", { class: "running", hidden: !probe.running }, "running…"));

    cell(row, "c-last").replaceChildren(
      ...(last ? stamp(last.at) : [h("span", { class: "none" }, "not yet")]));

    cell(row, "c-duration").replaceChildren(
      last ? last.duration : h("span", { class: "none" }, "–"));

    const result = [];
    if (last) {
      if (last.reason) result.push(h("strong", { class: "reason" }, last.reason), " ");
      if (last.detail) result.push(h("span", { class: "detail" }, last.detail), " ");
      result.push(h("span", { class: "message" }, last.message), " ",
        h("a", { class: "run-id", href: "/api/v1/runs/" + last.run_id, title: "this run in the API" },
          "run " + last.run_id));
    } else {
      result.push(h("span", { class: "none" }, "no result yet"));
    }
    const earlier = probe.earlier_failure;
    if (earlier) {
      result.push(" ", h("span", { class: "earlier" },
        "Last failure ",
        h("span", { class: "age", "data-at": earlier.at.iso, title: earlier.at.text }, earlier.at.relative),
        ": ",
        h("strong", { class: "reason" }, earlier.reason),
        " ",
        h("span", { class: "message" }, earlier.message)));
    }
    cell(row, "c-result").replaceChildren(...result);

    cell(row, "c-failures").textContent = String(probe.consecutive_failures);

    cell(row, "c-next").replaceChildren(
      ...(probe.next_run ? stamp(probe.next_run) : [h("span", { class: "none" }, "none planned")]),
      ...(probe.maintenance_until ? [h("span", { class: "maintenance" },
        "in maintenance (" + probe.maintenance_mode + ") until ",
        h("time", { datetime: probe.maintenance_until.iso, title: probe.maintenance_until.text },
          probe.maintenance_until.text))] : []));

    cell(row, "c-history").replaceChildren(chart(probe.chart));
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

  // The lists of the view model in page order: every failing probe, the never-run ones,
  // then each server's healthy rows shown (the JSON carries only the rows the page shows).
  function listsOf(data) {
    return [
      { key: "failing", probes: data.failing || [] },
      { key: "pending", probes: data.pending || [] },
      ...(data.healthy || []).map((g) => ({ key: g.key, probes: g.probes, group: g })),
    ];
  }

  function probesOf(data) {
    return listsOf(data).flatMap((l) => l.probes);
  }

  // A row that changed list (a probe went down, or ran for the first time) is moved, not
  // rebuilt: its "Run now" button and output stay the same elements.
  function place(lists, rows) {
    for (const list of lists) {
      const body = document.querySelector('tbody[data-list="' + CSS.escape(list.key) + '"]');
      if (!body) return list.probes.length === 0;
      for (const probe of list.probes) body.append(rows.get(probe.name));
      if (list.group) {
        const details = body.closest("details");
        const count = details && details.querySelector(".up-count");
        if (count) count.textContent = list.group.up_text;
      }
    }
    for (const id of ["failing", "pending"]) {
      const section = document.getElementById(id);
      if (section) section.hidden = section.querySelector("tr.probe") === null;
    }
    return true;
  }

  function apply(data) {
    const probes = probesOf(data);
    const rows = rowsByName();
    const names = new Set(probes.map((p) => p.name));
    // Probes came or went from what is shown (a reload, or one beyond the rows shown changed
    // state): the server knows how to list them. The query stays in the address.
    if (names.size !== rows.size || [...rows.keys()].some((n) => !names.has(n))
        || !place(listsOf(data), rows)) {
      window.location.reload();
      return;
    }
    for (const probe of probes) updateRow(rows.get(probe.name), probe);
    const s = data.summary;
    setText("count-up", String(s.up));
    setText("count-down", String(s.down));
    setText("count-never", String(s.never));
    setText("count-total", String(s.total));
    setText("failing-count", String((data.failing || []).length));
    setText("pending-count", String(data.pending_total || 0));
    document.title = "webhook-exporter: " + s.down + " down, " + s.up + " up";
    generated = data.generated.text;
  }

  // The same query as the page (the search form's q, server and state): only the rows shown.
  async function load() {
    const response = await fetch("/status.json" + window.location.search, {
      headers: { Accept: "application/json" },
      cache: "no-store",
    });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  async function refresh() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      apply(await load());
      setText("refresh-state", "Updated " + generated + "; refreshes every " + POLL_MS / 1000 + " s.");
      document.documentElement.dataset.refreshed = String(Date.now());
    } catch (error) {
      setText("refresh-state",
        "Refresh failed (" + error.message + "); showing data from " + generated + " or earlier. Retrying.");
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

  // The on-demand countdown (from Retry-After) is the one text the page itself counts down.
  function tickCountdowns() {
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
        // The run's duration as the page shows it: from the view model, once it holds the run.
        let took = "";
        try {
          const data = await load();
          apply(data);
          const probe = probesOf(data).find((p) => p.name === name);
          if (probe && probe.last && probe.last.at.iso === result.finished_at) {
            took = " in " + probe.last.duration;
          }
        } catch (_) {
          // The refresh below says what went wrong.
        }
        output.className = "run-output " + (result.success ? "up" : "down");
        output.textContent = result.success
          ? "Succeeded" + took + ": " + result.message
          : "Failed (" + result.reason + ")" + took + ": " + result.message;
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
  setInterval(tickCountdowns, 1000);
  document.documentElement.dataset.live = "on";
  refresh();
  schedule();
})();
