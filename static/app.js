// Acai OMR page: upload -> check/edit system boxes -> transcribe (SSE progress) -> results.
// Plain JS, no build step. Box coordinates are kept in page pixels; the overlay scales them.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const MIN_BOX = 8; // page pixels

  const state = {
    upload: null,    // server's upload JSON
    pages: [],       // [{index, width, height, url, include, boxes: [{x0,y0,x1,y1,quad,kind,id}]}]
    page: 0,         // page shown
    selected: null,  // id of the selected box
    drawing: false,
    job: null,       // last job snapshot
    events: null,    // EventSource
    pollTimer: null,
    nextId: 1,
  };

  // ---------------------------------------------------------------- messages

  function showError(message) {
    $("error-text").textContent = message;
    $("error").hidden = false;
    $("error").scrollIntoView({ block: "nearest", behavior: "smooth" });
  }
  function clearError() { $("error").hidden = true; }
  $("error-close").addEventListener("click", clearError);

  async function api(method, url, body) {
    const options = { method, headers: {} };
    if (body instanceof FormData) options.body = body;
    else if (body !== undefined) { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
    let response;
    try { response = await fetch(url, options); }
    catch (e) { throw new Error("The server could not be reached. Check your connection and try again."); }
    let data = null;
    try { data = await response.json(); } catch (e) { /* not JSON */ }
    if (!response.ok) {
      const message = (data && data.error) || `The server answered ${response.status} ${response.statusText}.`;
      const error = new Error(message); error.status = response.status; throw error;
    }
    return data;
  }

  async function checkStatus() {
    try {
      const status = await api("GET", "/api/status");
      if (!status.weights.ok) {
        $("banner").textContent = status.weights.message + " Uploading and box editing work; transcription needs the weights.";
        $("banner").hidden = false;
      }
      state.limits = status.limits;
      state.states = status.states;  // job statuses and system states, with their words, from the server
      showAccuracy(status.weights.accuracy);
    } catch (e) { /* the upload will report problems */ }
  }

  // How far to trust a transcription, in plain words, from the weights' own measured figures.
  function showAccuracy(accuracy) {
    const note = $("accuracy-note");
    if (!accuracy || accuracy.tedn == null) { note.hidden = true; return; }
    const parts = [`On ${accuracy.systems} test systems it has not seen, today's model's transcriptions differ from ` +
      `the printed score by ${accuracy.tedn.toFixed(0)}% (0% would be a perfect copy)`];
    if (accuracy.pitch_exact != null) parts.push(`it names the top note's pitch exactly ${accuracy.pitch_exact.toFixed(0)}% of the time`);
    if (accuracy.key_right != null) parts.push(`and the key signature ${accuracy.key_right.toFixed(0)}% of the time`);
    note.textContent = `How far to trust this: the model is at an early stage. ${parts.join(", ")}. ` +
      "Use the result as a starting point and check every note against the page.";
    note.hidden = false;
  }

  // ---------------------------------------------------------------- upload

  const dropzone = $("dropzone");
  ["dragenter", "dragover"].forEach((type) => dropzone.addEventListener(type, (e) => {
    e.preventDefault(); dropzone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => dropzone.addEventListener(type, (e) => {
    e.preventDefault(); dropzone.classList.remove("over");
  }));
  dropzone.addEventListener("drop", (e) => {
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) uploadFile(file);
  });
  $("file-input").addEventListener("change", (e) => { if (e.target.files[0]) uploadFile(e.target.files[0]); e.target.value = ""; });
  $("camera-input").addEventListener("change", (e) => { if (e.target.files[0]) uploadFile(e.target.files[0]); e.target.value = ""; });

  $("btn-sample").addEventListener("click", async () => {
    const response = await fetch($("btn-sample").dataset.src || "/static/sample-page.png");
    if (!response.ok) { showError("The sample page could not be loaded."); return; }
    const blob = await response.blob();
    uploadFile(new File([blob], "Im wunderschönen Monat Mai.png", { type: "image/png" }));
  });

  async function uploadFile(file) {
    clearError();
    if (state.limits && file.size > state.limits.max_upload_bytes) {
      showError(`‘${file.name}’ is ${(file.size / 1048576).toFixed(1)} MiB; the limit is ${(state.limits.max_upload_bytes / 1048576).toFixed(0)} MiB.`);
      return;
    }
    const form = new FormData();
    form.append("file", file);
    const pages = $("pdf-pages").value.trim();
    if (pages && pages.toLowerCase() !== "all") form.append("pages", pages);
    $("upload-status").textContent = `Uploading ${file.name} and looking for systems…`;
    try {
      const upload = await api("POST", "/api/uploads", form);
      // only now is the page before replaced: a refused file leaves it and its edited boxes as they were
      hide("step-systems", "step-progress", "step-result");
      $("upload-status").textContent = `${file.name}: ${upload.pages.length} page(s), ${upload.systems_found} system(s) found.`;
      loadUpload(upload);
    } catch (e) {
      $("upload-status").textContent = state.upload ? "The page you were working on is unchanged." : "";
      showError(e.message);
    }
  }

  function loadUpload(upload) {
    state.upload = upload;
    state.pages = upload.pages.map((p) => ({
      index: p.index, number: p.number, width: p.width, height: p.height, url: p.url, include: true,
      boxes: p.boxes.map((b) => ({ ...b, id: state.nextId++ })),
      messages: p.messages,
    }));
    state.page = 0; state.selected = null;
    $("systems-notice").textContent = (upload.messages || []).join(" ");
    $("systems-notice").hidden = !(upload.messages && upload.messages.length);
    renderTabs();
    showPage(0);
    show("step-systems");
    $("step-systems").scrollIntoView({ block: "start", behavior: "smooth" });
  }

  // ---------------------------------------------------------------- pages and boxes

  function renderTabs() {
    const tabs = $("page-tabs");
    tabs.innerHTML = "";
    tabs.hidden = state.pages.length < 2;
    state.pages.forEach((p, i) => {
      const wrap = document.createElement("span");
      const tab = document.createElement("button");
      tab.type = "button"; tab.className = "tab"; tab.setAttribute("role", "tab");
      tab.setAttribute("aria-selected", String(i === state.page));
      tab.textContent = `Page ${pageNumber(i)} (${p.boxes.length})`;
      tab.addEventListener("click", () => showPage(i));
      const check = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox"; box.checked = p.include; box.title = "Transcribe this page";
      box.addEventListener("change", () => { p.include = box.checked; renderList(); });
      check.append(box, " use");
      wrap.append(tab, " ", check);
      tabs.append(wrap);
    });
  }

  function showPage(i) {
    state.page = i; state.selected = null; stopDrawing();
    const img = $("page-image");
    img.onload = () => renderBoxes();
    img.src = state.pages[i].url;
    renderTabs();
    renderBoxes();
  }

  function scale() {
    const page = state.pages[state.page];
    const img = $("page-image");
    return img.clientWidth ? img.clientWidth / page.width : 0;
  }

  // reading order: included pages in order, boxes in list order
  function orderedBoxes() {
    const list = [];
    state.pages.forEach((p, pi) => { if (p.include) p.boxes.forEach((b) => list.push({ page: pi, box: b })); });
    return list;
  }
  function numberOf(box) {
    const i = orderedBoxes().findIndex((e) => e.box === box);
    return i < 0 ? "–" : String(i + 1);
  }
  function currentBoxes() { return state.pages[state.page] ? state.pages[state.page].boxes : []; }
  function selectedBox() { return currentBoxes().find((b) => b.id === state.selected) || null; }

  function renderBoxes() {
    const overlay = $("overlay");
    overlay.innerHTML = "";
    const s = scale();
    if (!s) return;
    currentBoxes().forEach((b) => {
      const el = document.createElement("div");
      el.className = "box" + (b.id === state.selected ? " selected" : "");
      el.tabIndex = 0;
      el.dataset.id = b.id;
      el.setAttribute("role", "button");
      el.setAttribute("aria-label", `System ${numberOf(b)}`);
      Object.assign(el.style, { left: `${b.x0 * s}px`, top: `${b.y0 * s}px`, width: `${(b.x1 - b.x0) * s}px`, height: `${(b.y1 - b.y0) * s}px` });
      const label = document.createElement("span");
      label.className = "label"; label.textContent = numberOf(b);
      el.append(label);
      ["nw", "ne", "sw", "se"].forEach((corner) => {
        const h = document.createElement("span"); h.className = `handle ${corner}`; h.dataset.corner = corner; el.append(h);
      });
      // Tab / Shift+Tab walk through the boxes; re-rendering replaces the element, so focus the new one
      el.addEventListener("focus", () => { if (state.selected !== b.id) select(b.id, true); });
      overlay.append(el);
    });
    renderList();
  }

  // a page's own number in the document (PDF pages "2-3" stay 2 and 3), else its position from 1
  function pageNumber(index) {
    const page = state.pages && state.pages[index];
    return page && page.number ? page.number : index + 1;
  }

  function renderList() {
    const list = $("box-list");
    list.innerHTML = "";
    const all = orderedBoxes();
    const onPage = {};
    all.forEach(({ page, box }, i) => {
      const li = document.createElement("li");
      onPage[page] = (onPage[page] || 0) + 1;
      li.textContent = `Page ${pageNumber(page)}, system ${onPage[page]}` + (box.kind === "manual" ? " (drawn by hand)" : "");
      if (box.id === state.selected) li.className = "selected";
      li.addEventListener("click", () => { if (page !== state.page) showPage(page); select(box.id, true); });
      list.append(li);
    });
    $("box-count").textContent = `(${all.length})`;
    $("btn-transcribe").disabled = all.length === 0;
    $("btn-delete").disabled = $("btn-earlier").disabled = $("btn-later").disabled = !selectedBox();
    const tabs = $("page-tabs").querySelectorAll(".tab");
    tabs.forEach((t, i) => { t.textContent = `Page ${pageNumber(i)} (${state.pages[i].boxes.length})`; });
  }

  function select(id, focus) {
    state.selected = id;
    renderBoxes();
    if (focus) {
      const el = $("overlay").querySelector(`[data-id="${id}"]`);
      if (el) el.focus({ preventScroll: false });
    }
  }

  function changed(box) { box.quad = []; if (box.kind !== "manual") box.kind = "edited"; }

  function clampBox(b) {
    const p = state.pages[state.page];
    const w = b.x1 - b.x0, h = b.y1 - b.y0;
    if (b.x0 < 0) { b.x0 = 0; b.x1 = w; }
    if (b.y0 < 0) { b.y0 = 0; b.y1 = h; }
    if (b.x1 > p.width) { b.x1 = p.width; b.x0 = Math.max(0, p.width - w); }
    if (b.y1 > p.height) { b.y1 = p.height; b.y0 = Math.max(0, p.height - h); }
  }

  function deleteSelected() {
    const boxes = currentBoxes();
    const i = boxes.findIndex((b) => b.id === state.selected);
    if (i < 0) return;
    boxes.splice(i, 1);
    state.selected = boxes.length ? boxes[Math.min(i, boxes.length - 1)].id : null;
    renderBoxes();
    if (state.selected) select(state.selected, true);
  }

  function moveInOrder(delta) {
    const boxes = currentBoxes();
    const i = boxes.findIndex((b) => b.id === state.selected);
    const j = i + delta;
    if (i < 0 || j < 0 || j >= boxes.length) return;
    [boxes[i], boxes[j]] = [boxes[j], boxes[i]];
    select(state.selected, true);
  }

  // ---------------------------------------------------------------- pointer: draw, move, resize

  let drag = null;
  const overlay = $("overlay");

  function pagePoint(e) {
    const rect = overlay.getBoundingClientRect();
    const s = scale();
    return { x: (e.clientX - rect.left) / s, y: (e.clientY - rect.top) / s };
  }

  overlay.addEventListener("pointerdown", (e) => {
    if (e.button !== undefined && e.button !== 0) return;
    const p = pagePoint(e);
    const boxEl = e.target.closest(".box");
    if (state.drawing) {
      const box = { x0: p.x, y0: p.y, x1: p.x, y1: p.y, quad: [], kind: "manual", confidence: null, id: state.nextId++ };
      currentBoxes().push(box);
      state.selected = box.id;
      drag = { mode: "draw", box, start: p };
    } else if (boxEl) {
      const box = currentBoxes().find((b) => String(b.id) === boxEl.dataset.id);
      if (!box) return;
      if (state.selected !== box.id) { state.selected = box.id; renderBoxes(); }
      const corner = e.target.dataset.corner;
      drag = { mode: corner ? "resize" : "move", corner, box, start: p, orig: { ...box } };
    } else {
      if (state.selected !== null) { state.selected = null; renderBoxes(); }
      return;
    }
    overlay.setPointerCapture(e.pointerId);
    e.preventDefault();
  });

  overlay.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const p = pagePoint(e);
    const page = state.pages[state.page];
    const b = drag.box;
    const clampX = (x) => Math.max(0, Math.min(page.width, x));
    const clampY = (y) => Math.max(0, Math.min(page.height, y));
    if (drag.mode === "draw") {
      b.x0 = clampX(Math.min(drag.start.x, p.x)); b.x1 = clampX(Math.max(drag.start.x, p.x));
      b.y0 = clampY(Math.min(drag.start.y, p.y)); b.y1 = clampY(Math.max(drag.start.y, p.y));
    } else if (drag.mode === "move") {
      const dx = p.x - drag.start.x, dy = p.y - drag.start.y;
      b.x0 = drag.orig.x0 + dx; b.x1 = drag.orig.x1 + dx; b.y0 = drag.orig.y0 + dy; b.y1 = drag.orig.y1 + dy;
      clampBox(b);
    } else {
      const c = drag.corner;
      if (c.includes("w")) b.x0 = clampX(Math.min(p.x, b.x1 - MIN_BOX));
      if (c.includes("e")) b.x1 = clampX(Math.max(p.x, b.x0 + MIN_BOX));
      if (c.includes("n")) b.y0 = clampY(Math.min(p.y, b.y1 - MIN_BOX));
      if (c.includes("s")) b.y1 = clampY(Math.max(p.y, b.y0 + MIN_BOX));
    }
    drag.moved = true;
    renderBoxes();
  });

  function endDrag() {
    if (!drag) return;
    const b = drag.box;
    if (drag.mode === "draw") {
      const page = state.pages[state.page];
      if (b.x1 - b.x0 < 20 / scale() || b.y1 - b.y0 < 20 / scale()) {
        // a tap: place a page-wide box of typical system height around the point
        const h = page.height * 0.1, cy = drag.start.y;
        b.x0 = page.width * 0.05; b.x1 = page.width * 0.95;
        b.y0 = Math.max(0, cy - h / 2); b.y1 = Math.min(page.height, cy + h / 2);
      }
      stopDrawing();
      sortNewBoxIntoReadingOrder(b);
    } else if (drag.moved) {
      changed(b);
    }
    drag = null;
    select(b.id, true);
  }
  overlay.addEventListener("pointerup", endDrag);
  overlay.addEventListener("pointercancel", endDrag);

  // a drawn box goes where it belongs top to bottom among the page's boxes
  function sortNewBoxIntoReadingOrder(box) {
    const boxes = currentBoxes();
    boxes.splice(boxes.indexOf(box), 1);
    let at = boxes.findIndex((b) => (b.y0 + b.y1) / 2 > (box.y0 + box.y1) / 2);
    if (at < 0) at = boxes.length;
    boxes.splice(at, 0, box);
  }

  function startDrawing() {
    state.drawing = true;
    overlay.classList.add("drawing");
    $("btn-new").classList.add("active");
  }
  function stopDrawing() {
    state.drawing = false;
    overlay.classList.remove("drawing");
    $("btn-new").classList.remove("active");
  }

  $("btn-new").addEventListener("click", () => (state.drawing ? stopDrawing() : startDrawing()));
  $("btn-delete").addEventListener("click", deleteSelected);
  $("btn-earlier").addEventListener("click", () => moveInOrder(-1));
  $("btn-later").addEventListener("click", () => moveInOrder(1));
  $("btn-clear").addEventListener("click", () => { currentBoxes().length = 0; state.selected = null; renderBoxes(); });
  window.addEventListener("resize", () => renderBoxes());

  // ---------------------------------------------------------------- keyboard

  document.addEventListener("keydown", (e) => {
    if ($("step-systems").hidden || !$("step-progress").hidden && isRunning()) return;
    const tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select") return;
    const box = selectedBox();
    if (e.key === "n" && !e.ctrlKey && !e.metaKey) { startDrawing(); e.preventDefault(); return; }
    if (e.key === "Escape") { stopDrawing(); state.selected = null; renderBoxes(); return; }
    if (e.key === "Enter" && !(tag === "button" || tag === "a")) { e.preventDefault(); transcribe(); return; }
    if (e.key === "PageDown" && state.page < state.pages.length - 1) { showPage(state.page + 1); e.preventDefault(); return; }
    if (e.key === "PageUp" && state.page > 0) { showPage(state.page - 1); e.preventDefault(); return; }
    if (!box) return;
    if (e.key === "Delete" || e.key === "Backspace") { deleteSelected(); e.preventDefault(); return; }
    if (e.key === "[") { moveInOrder(-1); e.preventDefault(); return; }
    if (e.key === "]") { moveInOrder(1); e.preventDefault(); return; }
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (arrows[e.key]) {
      const step = (e.shiftKey ? 10 : 1) / (scale() || 1);
      const [dx, dy] = arrows[e.key];
      if (e.altKey) { // resize from the bottom-right corner
        box.x1 = Math.max(box.x0 + MIN_BOX, box.x1 + dx * step);
        box.y1 = Math.max(box.y0 + MIN_BOX, box.y1 + dy * step);
      } else {
        box.x0 += dx * step; box.x1 += dx * step; box.y0 += dy * step; box.y1 += dy * step;
      }
      clampBox(box); changed(box); select(box.id, true);
      e.preventDefault();
    }
  });

  // ---------------------------------------------------------------- transcription

  function isRunning() { return state.job && !(state.states ? state.states.terminal : []).includes(state.job.status); }

  async function transcribe() {
    if (!state.states) await checkStatus();  // the state vocabulary, should the first look have failed
    if (isRunning()) return;
    clearError();
    const systems = orderedBoxes().map(({ page, box }) => ({
      page, x0: box.x0, y0: box.y0, x1: box.x1, y1: box.y1, quad: box.quad && box.quad.length === 4 ? box.quad : undefined,
    }));
    if (!systems.length) { showError("There are no boxes to transcribe. Draw one with “New box” (n)."); return; }
    let job;
    try {
      job = await api("POST", "/api/jobs", { upload_id: state.upload.upload_id, systems });
    } catch (e) {
      if (e.status === 503 && !$("banner").hidden) showError("Transcription is unavailable until the model weights are installed (see the note above).");
      else showError(e.message);
      return;
    }
    state.job = job;
    hide("step-result");
    show("step-progress");
    $("btn-cancel").disabled = false;
    renderProgress(job);
    $("step-progress").scrollIntoView({ block: "start", behavior: "smooth" });
    follow(job.job_id);
  }
  $("btn-transcribe").addEventListener("click", transcribe);

  function follow(jobId) {
    stopFollowing();
    if (window.EventSource) {
      const events = new EventSource(`/api/jobs/${jobId}/events`);
      state.events = events;
      events.addEventListener("progress", (e) => onProgress(JSON.parse(e.data)));
      events.addEventListener("end", () => stopFollowing());
      events.onerror = () => { // stream broken (proxy, network): fall back to polling
        if (state.events === events) { stopFollowing(); poll(jobId); }
      };
    } else {
      poll(jobId);
    }
  }

  function poll(jobId) {
    state.pollTimer = setTimeout(async () => {
      try {
        const snapshot = await api("GET", `/api/jobs/${jobId}`);
        onProgress(snapshot);
        if (isRunning()) poll(jobId);
      } catch (e) { showError(e.message); }
    }, 1000);
  }

  function stopFollowing() {
    if (state.events) { state.events.close(); state.events = null; }
    if (state.pollTimer) { clearTimeout(state.pollTimer); state.pollTimer = null; }
  }

  function renderProgress(job) {
    const words = state.states || { job_statuses: {}, system_states: {} };
    $("job-message").textContent = job.message || words.job_statuses[job.status] || job.status;
    const done = job.systems.filter((s) => s.state === "done").length;
    $("job-progress").max = job.systems.length + 1;
    $("job-progress").value = done + (job.status === "done" ? 1 : 0);
    const list = $("progress-list");
    list.innerHTML = "";
    job.systems.forEach((s) => {
      const li = document.createElement("li");
      const badge = document.createElement("span");
      badge.className = `state ${s.state}`; badge.textContent = words.system_states[s.state] || s.state;
      li.append(badge, `page ${pageNumber(s.page)}`);
      if (s.state === "done") li.append(` — ${s.confidence_words || "read"}`);
      else if (s.state === "decoding" && s.tokens) li.append(` — ${s.tokens} tokens so far`);
      list.append(li);
    });
  }

  function onProgress(job) {
    state.job = Object.assign({ job_id: job.id }, job);
    renderProgress(job);
    if (job.status === "done") { stopFollowing(); showResult(job); }
    else if (job.status === "failed") { stopFollowing(); $("btn-cancel").disabled = true; showError(job.message || "Transcription failed."); }
    else if (job.status === "cancelled") {
      stopFollowing(); $("btn-cancel").disabled = true; $("job-message").textContent = job.message || "Cancelled.";
      if (job.outputs && job.outputs.includes("musicxml")) showResult(job);  // the systems finished before the cancel
    }
  }

  $("btn-cancel").addEventListener("click", async () => {
    if (!state.job) return;
    $("btn-cancel").disabled = true;
    $("job-message").textContent = "Cancelling…";
    try { await api("DELETE", `/api/jobs/${state.job.id || state.job.job_id}`); }
    catch (e) { showError(e.message); }
  });

  // ---------------------------------------------------------------- result

  function showResult(job) {
    const base = `/api/jobs/${job.id}`;
    const bust = `v=${job.version}`;
    document.querySelectorAll("[data-format]").forEach((a) => {  // the buttons come from the server's format registry
      const ext = a.dataset.format;
      const available = job.outputs.includes(ext);
      a.href = available ? `${base}/result.${ext}?download=1` : "#";
      a.classList.toggle("unavailable", !available);
      a.setAttribute("aria-disabled", String(!available));
    });
    $("render-error").hidden = !job.render_error;
    $("render-error").textContent = job.render_error || "";
    const pages = $("score-pages");
    pages.innerHTML = "";
    for (let n = 1; n <= job.score_pages; n++) {
      const link = document.createElement("a");  // opens the page at full size
      link.href = `${base}/pages/${n}.png?${bust}`; link.target = "_blank"; link.rel = "noopener";
      link.title = "Open this page at full size";
      const img = document.createElement("img");
      img.src = link.href; img.alt = `Rendered score, page ${n}`;
      link.append(img);
      pages.append(link);
    }
    player.stop();
    player.url = job.outputs.includes("mid") ? `${base}/result.mid?${bust}` : null;
    $("btn-play").disabled = !player.url;
    $("player-status").textContent = player.url ? "" : "No MIDI to play (rendering is off or failed).";
    const body = $("systems-body");
    body.innerHTML = "";
    job.systems.forEach((s) => {
      const tr = document.createElement("tr");
      const num = document.createElement("td"); num.textContent = String(s.index + 1);
      const input = document.createElement("td"); input.className = "img";
      const crop = document.createElement("img"); crop.src = `${base}/systems/${s.index}/crop.png?${bust}`; crop.alt = `Input crop of system ${s.index + 1}`;
      input.append(crop);
      const out = document.createElement("td"); out.className = "img";
      if (s.rendered) {
        const render = document.createElement("img"); render.src = `${base}/systems/${s.index}/render.png?${bust}`; render.alt = `Rendering of system ${s.index + 1}`;
        out.append(render);
      } else { out.textContent = s.message || "no rendering"; }
      const conf = document.createElement("td"); conf.className = "conf-cell";
      const pct = document.createElement("span");
      pct.className = "conf" + (s.confidence < 0.7 ? " low" : "");
      pct.textContent = s.confidence == null ? "–" : s.confidence_words;
      pct.title = s.confidence == null ? "" : `confidence ${(100 * s.confidence).toFixed(0)}% (mean probability of its pitches)`;
      conf.append(pct, document.createElement("br"), `${s.tokens} tokens`);
      if (s.errors) conf.append(document.createElement("br"), `${s.errors} repaired error(s)`);
      if (s.finished === false) conf.append(document.createElement("br"), "cut at the token limit");
      tr.append(num, input, out, conf);
      body.append(tr);
    });
    hide("step-progress");
    show("step-result");
    $("step-result").scrollIntoView({ block: "start", behavior: "smooth" });
  }

  $("btn-back").addEventListener("click", () => { hide("step-result"); $("step-systems").scrollIntoView({ behavior: "smooth" }); });
  $("btn-restart").addEventListener("click", () => {
    hide("step-systems", "step-progress", "step-result");
    state.upload = null; state.pages = []; state.job = null;
    $("upload-status").textContent = "";
    window.scrollTo({ top: 0, behavior: "smooth" });
  });

  // ---------------------------------------------------------------- listening

  // The rendered MIDI, parsed by @tonejs/midi (vendored) and played by a small WebAudio synth: enough to
  // hear whether the notes are the ones on the page, with nothing fetched from elsewhere.
  const player = {
    url: null, context: null, voices: [], notes: 0, timer: null,
    async play() {
      const midi = new Midi(await (await fetch(this.url)).arrayBuffer());
      this.context = this.context || new (window.AudioContext || window.webkitAudioContext)();
      await this.context.resume();
      const start = this.context.currentTime + 0.1;
      let end = 0;
      this.voices = [];
      midi.tracks.forEach((track) => track.notes.forEach((note) => {
        const osc = this.context.createOscillator();
        const gain = this.context.createGain();
        osc.type = "triangle";
        osc.frequency.value = 440 * Math.pow(2, (note.midi - 69) / 12);
        const t0 = start + note.time, t1 = t0 + Math.max(0.05, note.duration);
        gain.gain.setValueAtTime(0, t0);
        gain.gain.linearRampToValueAtTime(0.15 * note.velocity, t0 + 0.01);
        gain.gain.exponentialRampToValueAtTime(0.001, t1);
        osc.connect(gain).connect(this.context.destination);
        osc.start(t0); osc.stop(t1 + 0.05);
        this.voices.push(osc);
        end = Math.max(end, t1);
      }));
      this.notes = this.voices.length;
      this.timer = setTimeout(() => this.stop(), (end - this.context.currentTime + 0.2) * 1000);
      return midi.duration;
    },
    stop() {
      clearTimeout(this.timer);
      this.voices.forEach((v) => { try { v.stop(); } catch (e) { /* already stopped */ } });
      this.voices = [];
      $("btn-play").textContent = "▶ Listen";
      $("player-status").textContent = "";
    },
  };

  $("btn-play").addEventListener("click", async () => {
    if (player.voices.length) { player.stop(); return; }
    try {
      const seconds = await player.play();
      $("btn-play").textContent = "■ Stop";
      $("player-status").textContent = `Playing ${player.notes} notes (${Math.round(seconds)} s).`;
    } catch (e) {
      showError(`The score could not be played: ${e.message}`);
    }
  });

  function show(...ids) { ids.forEach((id) => { $(id).hidden = false; }); }
  function hide(...ids) { ids.forEach((id) => { $(id).hidden = true; }); }

  // exposed for tests and debugging
  window.acaiOmr = { state, player };
  checkStatus();
})();
