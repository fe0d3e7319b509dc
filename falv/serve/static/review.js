// falv review page: plain JavaScript, no framework, no build step, nothing
// fetched from the internet. Talks to the falv serve API under /v1.
'use strict';

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const TOKEN_KEY = 'falv.token';
  const ACTIVE = new Set(['queued', 'running']);
  const LANE_LIMIT = 8; // up to this many classes, every class gets a lane

  const state = {
    labels: [],        // the model's classes, in order (GET /v1/labels)
    jobs: [],
    jobId: null,
    job: null,         // GET /v1/jobs/{id} (with the record)
    record: null,
    segments: [],      // working copy: {label, start, end, accepted, score}
    videoLabels: [],   // working copy of the video-level labels
    saved: null,       // ISO time of the last save, null when never saved
    sel: null,         // the selected segment (an object of state.segments)
    dirty: false,
    undo: [],
    redo: [],
    duration: 0,
    stride: 1,
    window: 1,
    fps: 0,
    view: { t0: 0, t1: 0 }, // the part of the video the timeline shows (zoom)
    loadSeq: 0,
  };

  // ---------------------------------------------------------------- API / auth

  const getToken = () => sessionStorage.getItem(TOKEN_KEY) || '';
  let tokenPromise = null;

  // Asks for the token once; concurrent 401s share one prompt.
  function askToken(refused) {
    if (tokenPromise) return tokenPromise;
    const dialog = $('#token-dialog');
    $('#token-reason').textContent = refused
      ? 'The server refused that token. Enter the one given to falv serve --token.'
      : 'This server needs a token (the one given to falv serve --token).';
    tokenPromise = new Promise((resolve) => {
      const form = $('#token-form');
      const onSubmit = () => {
        const value = $('#token-input').value.trim();
        if (!value) return;
        sessionStorage.setItem(TOKEN_KEY, value);
        form.removeEventListener('submit', onSubmit);
        tokenPromise = null;
        resolve(value);
      };
      form.addEventListener('submit', onSubmit);
      $('#token-input').value = '';
      if (!dialog.open) dialog.showModal();
      $('#token-input').focus();
    });
    return tokenPromise;
  }
  // The page is of no use without the token: Escape does not close the form.
  $('#token-dialog').addEventListener('cancel', (e) => e.preventDefault());

  // fetch with `Authorization: Bearer <token>`; on 401 asks for the token and retries.
  async function api(path, opts = {}) {
    for (;;) {
      const sent = getToken();
      const headers = new Headers(opts.headers || {});
      if (sent) headers.set('Authorization', `Bearer ${sent}`);
      const res = await fetch(path, { ...opts, headers });
      if (res.status !== 401) return res;
      if (getToken() === sent) await askToken(Boolean(sent));
    }
  }

  class ApiError extends Error {
    constructor(status, type, message) {
      super(message);
      this.status = status;
      this.type = type;
    }
  }

  async function apiJSON(path, opts = {}) {
    const res = await api(path, opts);
    let body = null;
    try { body = await res.json(); } catch (_) { body = null; }
    if (!res.ok) {
      const err = (body && body.error) || {};
      throw new ApiError(res.status, err.type || 'http', err.message || `${res.status} ${res.statusText}`);
    }
    return body;
  }

  // The browser fetches <video src> itself and cannot add a header, so the
  // token goes in the query string: the server must accept ?token= on
  // GET /v1/jobs/{id}/video.
  function videoURL(id) {
    const t = getToken();
    return `/v1/jobs/${encodeURIComponent(id)}/video${t ? `?token=${encodeURIComponent(t)}` : ''}`;
  }

  // ---------------------------------------------------------------- helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k === 'style') node.style.cssText = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
  const round3 = (x) => Math.round(x * 1000) / 1000;

  function fmtTime(t, long = false) {
    if (!Number.isFinite(t)) return '–';
    const neg = t < 0;
    t = Math.abs(t);
    const h = Math.floor(t / 3600);
    const m = Math.floor((t % 3600) / 60);
    const s = t % 60;
    const ss = s.toFixed(long ? 3 : 2).padStart(long ? 6 : 5, '0');
    return `${neg ? '-' : ''}${h ? `${h}:${String(m).padStart(2, '0')}` : m}:${ss}`;
  }

  function fmtWhen(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function labelIndex(label) {
    const i = state.labels.indexOf(label);
    return i >= 0 ? i : state.labels.length + [...label].reduce((a, c) => a + c.charCodeAt(0), 0);
  }

  // A stable, well spread colour per class (golden-angle hues).
  function labelColor(label, alpha = 1) {
    const hue = (labelIndex(label) * 137.508 + 200) % 360;
    return `hsla(${hue.toFixed(1)}, 65%, 55%, ${alpha})`;
  }

  let flashTimer = null;
  function flash(message, kind = 'info') {
    const node = $('#save-status');
    node.textContent = message;
    node.dataset.kind = kind;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(renderSaveStatus, 3500);
  }

  // ---------------------------------------------------------------- job list

  let pollTimer = null;
  async function refreshJobs() {
    clearTimeout(pollTimer);
    try {
      const body = await apiJSON('/v1/jobs?limit=100');
      state.jobs = body.jobs || [];
      $('#conn-status').textContent = '';
      renderJobs();
      const open = state.jobs.find((j) => j.id === state.jobId);
      if (open && state.job && (open.status !== state.job.status
          || (ACTIVE.has(open.status) && open.progress !== state.job.progress))) {
        if (open.status === 'done' || !ACTIVE.has(open.status)) loadJob(state.jobId);
        else { state.job = { ...state.job, ...open }; renderJobHead(); renderJobMessage(); }
      }
    } catch (err) {
      $('#conn-status').textContent = `Server unreachable (${err.message}); retrying`;
    }
    const active = state.jobs.some((j) => ACTIVE.has(j.status));
    pollTimer = setTimeout(refreshJobs, document.hidden ? 10000 : active ? 1000 : 5000);
  }
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshJobs(); });

  function badge(status) {
    return el('span', { class: `badge badge-${status}`, text: status });
  }

  function renderJobs() {
    const list = $('#job-list');
    const focusedId = document.activeElement && document.activeElement.closest('#job-list')
      ? document.activeElement.closest('li')?.dataset.jobId : null;
    list.replaceChildren(...state.jobs.map((job) => {
      const active = ACTIVE.has(job.status);
      const pct = Math.round((job.progress || 0) * 100);
      const link = el('a', {
        class: 'job-link', href: `#/job/${encodeURIComponent(job.id)}`,
        'aria-current': job.id === state.jobId ? 'page' : null,
        title: job.name || job.id,
      },
      el('span', { class: 'job-name', text: job.name || job.id }),
      el('span', { class: 'job-meta' }, badge(job.status),
        el('span', { class: 'muted small', text: active ? `${pct}%` : fmtWhen(job.created) })));
      const li = el('li', { class: 'job', 'data-job-id': job.id, 'data-status': job.status }, link);
      if (active) {
        li.append(el('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct, 'aria-label': `Progress of ${job.name || job.id}` },
          el('div', { class: 'progress-bar', style: `width:${pct}%` })));
        li.append(el('button', {
          type: 'button', class: 'job-cancel', title: 'Cancel this job', 'aria-label': `Cancel ${job.name || job.id}`, text: '×',
          onclick: () => cancelJob(job.id),
        }));
      }
      return li;
    }));
    $('#job-count').textContent = state.jobs.length ? `(${state.jobs.length})` : '';
    $('#job-list-empty').hidden = state.jobs.length > 0;
    if (focusedId) $(`#job-list li[data-job-id="${CSS.escape(focusedId)}"] a`)?.focus();
  }

  async function cancelJob(id) {
    try {
      await apiJSON(`/v1/jobs/${encodeURIComponent(id)}`, { method: 'DELETE' });
    } catch (err) {
      $('#upload-status').textContent = `Could not cancel: ${err.message}`;
    }
    refreshJobs();
  }

  // ---------------------------------------------------------------- upload

  // XMLHttpRequest rather than fetch, for upload progress.
  function uploadOne(file, onProgress) {
    return new Promise((resolve, reject) => {
      const send = () => {
        const xhr = new XMLHttpRequest();
        xhr.open('POST', '/v1/jobs');
        const t = getToken();
        if (t) xhr.setRequestHeader('Authorization', `Bearer ${t}`);
        xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
        xhr.onerror = () => reject(new Error('network error'));
        xhr.onload = async () => {
          let body = null;
          try { body = JSON.parse(xhr.responseText); } catch (_) { body = null; }
          if (xhr.status === 401) {
            await askToken(Boolean(t));
            send();
          } else if (xhr.status >= 200 && xhr.status < 300) {
            resolve(body);
          } else {
            reject(new Error((body && body.error && body.error.message) || `${xhr.status} ${xhr.statusText}`));
          }
        };
        const form = new FormData();
        form.append('file', file, file.name);
        xhr.send(form);
      };
      send();
    });
  }

  async function uploadFiles(files) {
    const status = $('#upload-status');
    let first = null;
    for (const [i, file] of Array.from(files).entries()) {
      const prefix = files.length > 1 ? `${i + 1}/${files.length} ` : '';
      try {
        const job = await uploadOne(file, (f) => {
          status.textContent = `${prefix}Uploading ${file.name}: ${Math.round(f * 100)}%`;
        });
        status.textContent = `${prefix}${file.name}: queued`;
        if (!first && job && job.id) first = job.id;
      } catch (err) {
        status.textContent = `${prefix}${file.name}: upload failed (${err.message})`;
        status.dataset.kind = 'error';
      }
    }
    await refreshJobs();
    if (first && !state.dirty) location.hash = `#/job/${encodeURIComponent(first)}`;
  }

  const dz = $('#dropzone');
  $('#file-input').addEventListener('change', (e) => {
    if (e.target.files.length) uploadFiles(e.target.files);
    e.target.value = '';
  });
  ['dragenter', 'dragover'].forEach((type) => dz.addEventListener(type, (e) => {
    e.preventDefault();
    dz.classList.add('over');
  }));
  ['dragleave', 'drop'].forEach((type) => dz.addEventListener(type, () => dz.classList.remove('over')));
  dz.addEventListener('drop', (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) uploadFiles(e.dataTransfer.files);
  });
  // A file dropped anywhere else must not navigate away from the page.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());

  // ---------------------------------------------------------------- routing

  function route() {
    const m = location.hash.match(/^#\/job\/(.+)$/);
    const id = m ? decodeURIComponent(m[1]) : null;
    if (id === state.jobId) return;
    if (state.dirty && !confirm('Discard the unsaved corrections of this video?')) {
      location.hash = state.jobId ? `#/job/${encodeURIComponent(state.jobId)}` : '#/';
      return;
    }
    state.jobId = id;
    state.dirty = false;
    renderJobs();
    if (id) loadJob(id);
    else showView('empty');
  }
  window.addEventListener('hashchange', route);
  window.addEventListener('beforeunload', (e) => {
    if (state.dirty) { e.preventDefault(); e.returnValue = ''; }
  });

  function showView(which) {
    $('#empty-view').hidden = which !== 'empty';
    $('#job-view').hidden = which !== 'job';
    if (which === 'empty') {
      const v = $('#video');
      v.pause();
      v.removeAttribute('src');
      v.load();
      state.job = null;
      state.record = null;
    }
  }

  // ---------------------------------------------------------------- one job

  async function loadJob(id) {
    const seq = ++state.loadSeq;
    showView('job');
    let job;
    try {
      job = await apiJSON(`/v1/jobs/${encodeURIComponent(id)}`);
    } catch (err) {
      if (seq !== state.loadSeq) return;
      state.job = { id, name: id, status: 'missing' };
      renderJobHead();
      showMessage(err.status === 404 ? 'No such job.' : `Could not load the job: ${err.message}`, 'error');
      $('#editor').hidden = true;
      return;
    }
    if (seq !== state.loadSeq) return;
    state.job = job;
    state.record = job.record || null;
    renderJobHead();
    if (job.status !== 'done' || !state.record || state.record.error) {
      $('#editor').hidden = true;
      renderJobMessage();
      return;
    }
    let corr;
    try {
      corr = await apiJSON(`/v1/jobs/${encodeURIComponent(id)}/corrections`);
    } catch (err) {
      if (seq !== state.loadSeq) return;
      showMessage(`Could not load the corrections: ${err.message}`, 'error');
      return;
    }
    if (seq !== state.loadSeq) return;
    hideMessage();
    const rec = state.record;
    const windows = rec.windows || [];
    state.window = windows.length ? windows[0].end - windows[0].start : 1;
    state.stride = windows.length > 1 ? windows[1].start - windows[0].start : state.window;
    if (!(state.stride > 0)) state.stride = state.window > 0 ? state.window : 1;
    state.fps = rec.fps || 0;
    state.duration = rec.duration || Math.max(0, ...windows.map((w) => w.end), ...(corr.segments || []).map((s) => s.end));
    state.view = { t0: 0, t1: state.duration };
    applyCorrections(corr);
    state.undo = [];
    state.redo = [];
    const video = $('#video');
    const src = videoURL(id);
    if (video.getAttribute('src') !== src) video.src = src;
    $('#editor').hidden = false;
    renderEditor();
    drawStrips();
  }

  function applyCorrections(corr) {
    const scored = (state.record && state.record.segments) || [];
    const reviewed = Boolean(corr.saved);
    state.segments = (corr.segments || []).map((s) => {
      const model = scored.find((m) => m.label === s.label && Math.abs(m.start - s.start) < 1e-3 && Math.abs(m.end - s.end) < 1e-3);
      return { label: s.label, start: s.start, end: s.end, accepted: reviewed, score: model ? model.score : null };
    });
    sortSegments();
    state.videoLabels = [...(corr.labels || [])];
    state.saved = corr.saved || null;
    state.sel = null;
    state.dirty = false;
  }

  function renderJobHead() {
    const job = state.job || {};
    $('#job-title').textContent = job.name || job.id || '';
    $('#job-title').title = job.id || '';
    $('#job-badge').replaceWith(Object.assign(badge(job.status || ''), { id: 'job-badge' }));
    renderSaveStatus();
  }

  function showMessage(text, kind = 'info') {
    const box = $('#job-message');
    box.replaceChildren(typeof text === 'string' ? el('p', { text }) : text);
    box.dataset.kind = kind;
    box.hidden = false;
  }
  function hideMessage() { $('#job-message').hidden = true; }

  function renderJobMessage() {
    const job = state.job;
    if (!job) return;
    if (ACTIVE.has(job.status)) {
      const pct = Math.round((job.progress || 0) * 100);
      showMessage(el('div', {},
        el('p', { text: job.status === 'queued' ? 'Waiting for a free worker…' : `Labeling… ${pct}%` }),
        el('div', { class: 'progress big', role: 'progressbar', 'aria-valuenow': pct, 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-label': 'Labeling progress' },
          el('div', { class: 'progress-bar', style: `width:${pct}%` })),
        el('p', { class: 'muted small', text: 'The timeline opens by itself when the job is done.' })));
    } else if (job.status === 'failed' || (state.record && state.record.error)) {
      const e = (state.record && state.record.error) || job.error || {};
      showMessage(`This video could not be labeled${e.type ? ` (${e.type})` : ''}: ${e.message || 'no details'}`, 'error');
    } else if (job.status === 'cancelled') {
      showMessage('This job was cancelled.', 'info');
    } else if (job.status === 'done') {
      showMessage('The job is done but has no record.', 'error');
    }
  }

  function renderSaveStatus() {
    const node = $('#save-status');
    const editable = !$('#editor').hidden;
    node.dataset.kind = state.dirty ? 'dirty' : 'info';
    node.textContent = !editable ? ''
      : state.dirty ? 'Unsaved changes'
        : state.saved ? `Saved ${fmtWhen(state.saved)}` : 'Model output, not reviewed yet';
    $('#save-button').hidden = !editable;
    $('#undo-button').hidden = !editable;
    $('#save-button').disabled = !editable;
    $('#undo-button').disabled = !editable || state.undo.length === 0;
  }

  // ---------------------------------------------------------------- editing

  function sortSegments() {
    state.segments.sort((x, y) => x.start - y.start || x.end - y.end || labelIndex(x.label) - labelIndex(y.label));
  }

  function snapshot() {
    return {
      segments: state.segments.map((s) => ({ ...s })),
      videoLabels: [...state.videoLabels],
      sel: state.segments.indexOf(state.sel),
    };
  }
  function restore(snap) {
    state.segments = snap.segments.map((s) => ({ ...s }));
    state.videoLabels = [...snap.videoLabels];
    state.sel = snap.sel >= 0 ? state.segments[snap.sel] || null : null;
  }

  // Runs one edit; `fn` returns false when it changed nothing.
  function edit(fn) {
    if ($('#editor').hidden) return;
    const snap = snapshot();
    if (fn() === false) return;
    commitEdit(snap);
  }
  function commitEdit(snap) {
    state.undo.push(snap);
    if (state.undo.length > 200) state.undo.shift();
    state.redo = [];
    state.dirty = true;
    sortSegments();
    renderEditor();
  }
  function undo() {
    if (!state.undo.length) { flash('Nothing to undo'); return; }
    state.redo.push(snapshot());
    restore(state.undo.pop());
    state.dirty = true;
    renderEditor();
  }
  function redo() {
    if (!state.redo.length) { flash('Nothing to redo'); return; }
    state.undo.push(snapshot());
    restore(state.redo.pop());
    state.dirty = true;
    renderEditor();
  }

  const now = () => $('#video').currentTime || 0;
  const frame = () => (state.fps > 0 ? 1 / state.fps : 0.001);
  const snapTime = (t) => clamp(state.fps > 0 ? Math.round(t * state.fps) / state.fps : round3(t), 0, state.duration);
  const minLen = () => Math.max(frame(), 0.001);

  function needSelection() {
    if (state.sel) return true;
    const t = now();
    const under = state.segments.find((s) => s.start <= t && t < s.end);
    if (under) { select(under); return true; }
    flash('Select a segment first (click a block, or ↑/↓)', 'error');
    return false;
  }

  function select(seg, { seek = false } = {}) {
    state.sel = seg || null;
    if (seg && seek) seekTo(seg.start);
    renderEditor();
    if (seg) scrollIntoViewIfNeeded(seg);
  }
  function scrollIntoViewIfNeeded(seg) {
    const node = $(`#tl-lanes .seg[data-index="${state.segments.indexOf(seg)}"]`);
    if (node) node.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  }

  function selectRelative(step) {
    if (!state.segments.length) return;
    let i = state.segments.indexOf(state.sel);
    if (i < 0) {
      const t = now();
      i = step > 0 ? state.segments.findIndex((s) => s.end > t) : state.segments.length - [...state.segments].reverse().findIndex((s) => s.start < t) - 1;
      if (i < 0 || i >= state.segments.length) i = step > 0 ? 0 : state.segments.length - 1;
    } else {
      i = clamp(i + step, 0, state.segments.length - 1);
    }
    select(state.segments[i], { seek: true });
  }

  const actions = {
    accept() {
      if (!needSelection()) return;
      const i = state.segments.indexOf(state.sel);
      edit(() => { state.sel.accepted = true; });
      const next = state.segments[i + 1];
      if (next) select(next, { seek: true });
    },
    reject() {
      if (!needSelection()) return;
      edit(() => {
        const i = state.segments.indexOf(state.sel);
        state.segments.splice(i, 1);
        state.sel = state.segments[Math.min(i, state.segments.length - 1)] || null;
      });
    },
    relabel() {
      if (!needSelection()) return;
      const sel = $('#seg-label');
      sel.focus();
      if (typeof sel.showPicker === 'function') { try { sel.showPicker(); } catch (_) { /* needs a user gesture */ } }
    },
    setLabel(label) {
      if (!needSelection() || !label || state.sel.label === label) return;
      edit(() => { state.sel.label = label; state.sel.accepted = true; state.sel.score = null; });
    },
    split() {
      const t = snapTime(now());
      let seg = state.sel && state.sel.start < t && t < state.sel.end ? state.sel : null;
      seg = seg || state.segments.find((s) => s.start < t && t < s.end);
      if (!seg || t - seg.start < minLen() || seg.end - t < minLen()) {
        flash('Put the playhead inside a segment to split it', 'error');
        return;
      }
      edit(() => {
        const right = { ...seg, start: t };
        seg.end = t;
        state.segments.push(right);
        state.sel = right;
      });
    },
    merge() {
      if (!needSelection()) return;
      const i = state.segments.indexOf(state.sel);
      // The next segment in time (multi-label: the next one in the same lane, if any).
      const later = state.segments.slice(i + 1);
      const next = (isMultiLabel() && later.find((s) => s.label === state.sel.label)) || later[0];
      if (!next) { flash('No next segment to merge with', 'error'); return; }
      edit(() => {
        const seg = state.sel;
        seg.start = Math.min(seg.start, next.start);
        seg.end = Math.max(seg.end, next.end);
        seg.score = null;
        state.segments.splice(state.segments.indexOf(next), 1);
      });
    },
    setStart() {
      if (!needSelection()) return;
      const t = snapTime(now());
      if (t > state.sel.end - minLen()) { flash('The start must be before the end', 'error'); return; }
      edit(() => { if (state.sel.start === t) return false; state.sel.start = t; return true; });
    },
    setEnd() {
      if (!needSelection()) return;
      const t = snapTime(now());
      if (t < state.sel.start + minLen()) { flash('The end must be after the start', 'error'); return; }
      edit(() => { if (state.sel.end === t) return false; state.sel.end = t; return true; });
    },
    add() {
      if (!state.duration) return;
      let start = snapTime(now());
      const len = state.window > 0 ? state.window : 1;
      // The selected segment's class, else the window's top class; never a
      // class that already has a segment under the playhead.
      const busy = (l) => state.segments.some((s) => s.label === l && s.start <= start && start < s.end);
      const label = [state.sel && state.sel.label, topLabelAt(start), ...laneLabels(), ...state.labels]
        .find((l) => l && !busy(l));
      if (!label) { flash('Every class already has a segment at the playhead', 'error'); return; }
      let end = Math.min(state.duration, start + len);
      const blocker = state.segments.find((s) => s.label === label && s.start > start && s.start < end);
      if (blocker) end = blocker.start;
      if (end - start < minLen()) { start = Math.max(0, end - len); }
      if (end - start < minLen()) { flash('No room for a new segment here', 'error'); return; }
      edit(() => {
        const seg = { label, start, end, accepted: true, score: null };
        state.segments.push(seg);
        state.sel = seg;
      });
    },
    toggleVideoLabel(label, on) {
      edit(() => {
        const has = state.videoLabels.includes(label);
        if (has === on) return false;
        state.videoLabels = on ? [...state.videoLabels, label] : state.videoLabels.filter((l) => l !== label);
        state.videoLabels.sort((x, y) => labelIndex(x) - labelIndex(y));
        return true;
      });
    },
  };

  const isMultiLabel = () => Boolean(state.record && state.record.multilabel != null ? state.record.multilabel : state.multilabel);

  function windowAt(t) {
    const ws = (state.record && state.record.windows) || [];
    let best = null;
    for (const w of ws) {
      if (w.start <= t && t < w.end) {
        if (!best || Math.abs((w.start + w.end) / 2 - t) < Math.abs((best.start + best.end) / 2 - t)) best = w;
      }
    }
    return best;
  }
  function topLabelAt(t) {
    const w = windowAt(t);
    return w && w.labels && w.labels.length ? w.labels[0].label : null;
  }

  async function save() {
    if ($('#editor').hidden || !state.jobId) return;
    const id = state.jobId;
    const d = state.duration;
    const segments = [];
    for (const s of state.segments) {
      const start = clamp(round3(s.start), 0, d);
      const end = clamp(round3(s.end), 0, d);
      if (end > start) segments.push({ label: s.label, start, end });
    }
    const body = { labels: [...state.videoLabels], segments };
    $('#save-button').disabled = true;
    $('#save-status').textContent = 'Saving…';
    try {
      const doc = await apiJSON(`/v1/jobs/${encodeURIComponent(id)}/corrections`, {
        method: 'PUT',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (id !== state.jobId) return;
      const sel = state.segments.indexOf(state.sel);
      applyCorrections(doc);
      state.sel = sel >= 0 ? state.segments[Math.min(sel, state.segments.length - 1)] || null : null;
      renderEditor();
      flash(`Saved ${fmtWhen(state.saved)}`, 'ok');
    } catch (err) {
      flash(`Not saved: ${err.message}`, 'error');
      $('#save-button').disabled = false;
    }
  }

  // GET /v1/corrections/export writes the corrected set into the server's data dir
  // (train.csv + labels.txt for `falv train --data`, segments.json for
  // `falv evaluate --untrimmed`) and answers with where it put them.
  async function exportCorrections() {
    let summary;
    try {
      summary = await apiJSON('/v1/corrections/export');
    } catch (err) {
      alert(`Export failed: ${err.message}`);
      return;
    }
    const body = $('#export-body');
    const rows = [];
    if (summary && typeof summary === 'object') {
      const videos = summary.videos ?? 0;
      rows.push(el('p', { text: `${videos} corrected video${videos === 1 ? '' : 's'} in the training source`
        + (summary.skipped ? ` (${summary.skipped} without video labels left out)` : '') + '.' }));
      const files = [['Training list', summary.csv], ['Classes', summary.labels], ['Segments (ground truth)', summary.segments]]
        .filter(([, path]) => path);
      if (files.length) {
        rows.push(el('dl', { class: 'export-files' }, ...files.flatMap(([name, path]) => [el('dt', { text: name }), el('dd', {}, el('code', { text: path }))])));
      }
      if (summary.csv) {
        rows.push(el('p', { class: 'small' }, 'Fine-tune the next model on the server with ',
          el('code', { text: `falv train --data ${summary.csv} --init MODEL_DIR` }), '.'));
      }
    }
    body.replaceChildren(...rows);
    $('#export-dialog').showModal();
  }

  async function downloadCSV() {
    try {
      const res = await api('/v1/corrections/export?format=csv');
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      const blob = await res.blob();
      const a = el('a', { href: URL.createObjectURL(blob), download: 'train.csv' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (err) {
      alert(`Download failed: ${err.message}`);
    }
  }

  // ---------------------------------------------------------------- rendering

  // Lanes: every class when there are few, else the classes in use.
  function laneLabels() {
    const used = new Set(state.segments.map((s) => s.label));
    if (state.sel) used.add(state.sel.label);
    let lanes = state.labels.length && state.labels.length <= LANE_LIMIT
      ? [...state.labels] : state.labels.filter((l) => used.has(l));
    for (const l of used) if (!lanes.includes(l)) lanes.push(l);
    if (!lanes.length) lanes = state.labels.slice(0, 1);
    return lanes;
  }

  // Positions on the timeline, in % of its width, for the visible range state.view.
  const viewSpan = () => Math.max(1e-6, state.view.t1 - state.view.t0);
  const pos = (t) => `${(((t - state.view.t0) / viewSpan()) * 100).toFixed(4)}%`;
  const len = (dt) => `${((dt / viewSpan()) * 100).toFixed(4)}%`;
  const minSpan = () => Math.min(state.duration, Math.max(0.5, 8 * frame()));

  function setView(t0, span) {
    const d = state.duration;
    if (!(d > 0)) return;
    span = clamp(span, minSpan(), d);
    t0 = clamp(t0, 0, d - span);
    if (t0 === state.view.t0 && t0 + span === state.view.t1) return;
    state.view = { t0, t1: t0 + span };
    renderLanes();
    renderRuler();
    updatePlayhead();
    $('#zoom-level').textContent = span < d - 1e-9 ? `${(d / span).toFixed(d / span < 10 ? 1 : 0)}×` : '';
  }
  // Zoom by `factor` (> 1: in) keeping the time `at` where it is on screen.
  function zoom(factor, at = now()) {
    const { t0 } = state.view;
    const span = viewSpan();
    const next = clamp(span / factor, minSpan(), state.duration);
    const frac = clamp((at - t0) / span, 0, 1);
    setView(at - frac * next, next);
  }
  const zoomFit = () => setView(0, state.duration);

  function renderEditor() {
    renderLanes();
    renderRuler();
    renderInspector();
    renderVideoLabels();
    renderSaveStatus();
    updatePlayhead();
  }

  const zoomControls = el('div', { class: 'tl-name tl-name-ruler zoom' },
    el('button', { type: 'button', class: 'zoom-btn', title: 'Zoom out (-)', 'aria-label': 'Zoom out', 'aria-keyshortcuts': '-', text: '−', onclick: () => zoom(0.5) }),
    el('button', { type: 'button', class: 'zoom-btn', title: 'Zoom in (+)', 'aria-label': 'Zoom in', 'aria-keyshortcuts': '+', text: '+', onclick: () => zoom(2) }),
    el('button', { type: 'button', class: 'zoom-btn', title: 'Whole video (0)', 'aria-label': 'Show the whole video', 'aria-keyshortcuts': '0', text: '⤢', onclick: zoomFit }),
    el('span', { id: 'zoom-level', class: 'muted zoom-level' }));

  function renderLanes() {
    const lanes = laneLabels();
    $('#editor').style.setProperty('--lanes', String(Math.min(lanes.length, 6)));
    const names = $('#tl-names');
    const area = $('#tl-lanes');
    names.replaceChildren(zoomControls,
      ...lanes.map((l) => el('div', { class: 'tl-name', title: l, style: `--c:${labelColor(l)}` },
        el('span', { class: 'swatch', 'aria-hidden': 'true' }), el('span', { class: 'tl-name-text', text: l }))),
      el('div', { class: 'tl-name tl-name-strip', text: 'scores', title: 'Score of the top class per window' }));
    area.replaceChildren(...lanes.map((l) => {
      const lane = el('div', { class: 'lane', 'data-label': l },
        el('canvas', { class: 'lane-heat', 'data-label': l, 'aria-hidden': 'true' }));
      state.segments.forEach((s, i) => {
        if (s.label !== l) return;
        lane.append(segBlock(s, i));
      });
      return lane;
    }));
    $('#seg-count').textContent = `(${state.segments.length})`;
    drawStrips();
  }

  function segBlock(s, i) {
    const selected = s === state.sel;
    return el('div', {
      class: `seg${selected ? ' selected' : ''}${s.accepted ? ' accepted' : ''}`,
      'data-index': i, 'data-label': s.label, 'data-start': s.start, 'data-end': s.end,
      role: 'button', tabindex: '-1', 'aria-pressed': selected ? 'true' : 'false',
      'aria-label': `${s.label} from ${fmtTime(s.start)} to ${fmtTime(s.end)}${s.accepted ? ', accepted' : ''}`,
      title: `${s.label}  ${fmtTime(s.start)} – ${fmtTime(s.end)}${s.score != null ? `  (score ${s.score.toFixed(2)})` : ''}`,
      style: `left:${pos(s.start)};width:${len(s.end - s.start)};--c:${labelColor(s.label)}`,
    },
    el('span', { class: 'edge edge-start', 'data-edge': 'start', title: 'Drag to move the start' }),
    el('span', {
      class: 'seg-text', text: s.label,
      // Zoomed in, a block that starts left of the view keeps its name in sight.
      style: s.start < state.view.t0 && s.end > state.view.t0
        ? `margin-left:${(((state.view.t0 - s.start) / (s.end - s.start)) * 100).toFixed(3)}%` : null,
    }),
    el('span', { class: 'edge edge-end', 'data-edge': 'end', title: 'Drag to move the end' }));
  }

  function renderRuler() {
    const ruler = $('#tl-ruler');
    const d = state.duration;
    if (!(d > 0)) { ruler.replaceChildren(); return; }
    const width = ruler.clientWidth || 800;
    const { t0, t1 } = state.view;
    const target = viewSpan() / Math.max(2, Math.floor(width / 80));
    const steps = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
    const step = steps.find((x) => x >= target) || 7200;
    const ticks = [];
    for (let i = Math.ceil(t0 / step - 1e-9); i * step <= t1 + 1e-9; i += 1) {
      const t = i * step;
      const last = t > t1 - step / 2 && t > t0;
      if (last && t < t1 - 1e-6) continue; // too close to the edge for its label
      // A tick at the very end is drawn leftwards, inside the timeline.
      ticks.push(el('span', { class: `tick${last ? ' tick-end' : ''}`, style: `left:${pos(t)}`, text: fmtTime(t).replace(/\.00$/, '') }));
    }
    ruler.replaceChildren(...ticks);
  }

  function renderInspector() {
    const seg = state.sel;
    $('#seg-none').hidden = Boolean(seg);
    $('#seg-fields').hidden = !seg;
    $$('.toolbar button[data-action]').forEach((b) => {
      const a = b.dataset.action;
      b.disabled = $('#editor').hidden || (!seg && !['add', 'split'].includes(a));
    });
    if (!seg) return;
    const select = $('#seg-label');
    const options = state.labels.includes(seg.label) ? state.labels : [...state.labels, seg.label];
    if (select.options.length !== options.length || Array.from(select.options).some((o, i) => o.value !== options[i])) {
      select.replaceChildren(...options.map((l, i) => el('option', { value: l, text: i < 9 ? `${l}  (${i + 1})` : l })));
    }
    select.value = seg.label;
    const start = $('#seg-start');
    const end = $('#seg-end');
    if (document.activeElement !== start) start.value = seg.start.toFixed(3);
    if (document.activeElement !== end) end.value = seg.end.toFixed(3);
    start.max = end.max = String(state.duration);
    $('#seg-state').textContent = seg.accepted ? '✓ accepted' : 'not reviewed';
    $('#seg-state').dataset.accepted = String(seg.accepted);
    $('#seg-score').textContent = seg.score != null ? `model score ${seg.score.toFixed(2)}` : '';
  }

  let vlShowAll = false;
  function renderVideoLabels() {
    const list = $('#video-labels');
    const filterBox = $('#vl-filter');
    const many = state.labels.length > 12;
    filterBox.hidden = !many;
    const filter = filterBox.value.trim().toLowerCase();
    const scores = new Map(((state.record && state.record.labels) || []).map((x) => [x.label, x.score]));
    let labels = [...state.labels];
    for (const l of state.videoLabels) if (!labels.includes(l)) labels.push(l);
    if (many) {
      labels = labels.filter((l) => !filter || l.toLowerCase().includes(filter));
      // Checked first, then by the model's score.
      labels.sort((x, y) => (state.videoLabels.includes(y) - state.videoLabels.includes(x))
        || ((scores.get(y) ?? -1) - (scores.get(x) ?? -1)));
    }
    const shown = many && !vlShowAll ? labels.slice(0, 30) : labels;
    const focused = list.contains(document.activeElement) ? document.activeElement.value : null;
    list.replaceChildren(...shown.map((l) => {
      const id = `vl-${labelIndex(l)}`;
      const score = scores.get(l);
      const box = el('input', {
        type: 'checkbox', id, value: l, checked: state.videoLabels.includes(l),
        onchange: (e) => actions.toggleVideoLabel(l, e.target.checked),
      });
      return el('li', { style: `--c:${labelColor(l)}` }, box,
        el('label', { for: id }, el('span', { class: 'swatch', 'aria-hidden': 'true' }), el('span', { text: l })),
        el('span', { class: 'muted small vl-score', text: score != null ? score.toFixed(2) : '' }));
    }));
    if (shown.length < labels.length) {
      list.append(el('li', {}, el('button', {
        type: 'button', class: 'linkish', text: `${labels.length - shown.length} more…`,
        onclick: () => { vlShowAll = true; renderVideoLabels(); },
      })));
    }
    // Re-rendering must not lose the keyboard focus of a checkbox.
    if (focused != null) {
      const box = Array.from(list.querySelectorAll('input')).find((x) => x.value === focused);
      if (box) box.focus();
    }
  }
  $('#vl-filter').addEventListener('input', renderVideoLabels);

  // Canvases: the score strip (top class per window: colour = class, height =
  // score) and, behind each lane, that class's score per window as a heat map.
  function sizeCanvas(canvas) {
    const r = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr));
    const h = Math.max(1, Math.round(r.height * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    return { w, h, dpr };
  }

  // The part of the timeline each window stands for (its centre +- stride/2).
  function windowSpans() {
    const ws = (state.record && state.record.windows) || [];
    return ws.map((w, i) => {
      const half = Math.min(state.stride, w.end - w.start) / 2;
      const mid = (w.start + w.end) / 2;
      let a = ws.length === 1 ? w.start : i === 0 ? w.start : mid - half;
      let b = ws.length === 1 ? w.end : i === ws.length - 1 ? w.end : mid + half;
      a = Math.max(0, a); b = Math.max(a, b);
      return { a, b, w };
    });
  }

  function drawStrips() {
    const d = state.duration;
    const strip = $('#score-strip');
    const { t0, t1 } = state.view;
    const spans = windowSpans();
    const visible = spans.filter(({ a, b }) => b > t0 && a < t1);
    const X = (t, w) => ((t - t0) / viewSpan()) * w;
    strip.dataset.windows = String(spans.length);
    if (!(d > 0) || $('#editor').hidden) return;
    {
      const { w, h } = sizeCanvas(strip);
      const ctx = strip.getContext('2d');
      ctx.clearRect(0, 0, w, h);
      for (const { a, b, w: win } of visible) {
        const top = win.labels && win.labels[0];
        if (!top) continue;
        const x0 = Math.floor(X(a, w));
        const x1 = Math.max(x0 + 1, Math.ceil(X(b, w)) - 1);
        const bh = Math.max(1, Math.round(clamp(top.score, 0, 1) * (h - 2)));
        ctx.fillStyle = labelColor(top.label, 0.25 + 0.75 * clamp(top.score, 0, 1));
        ctx.fillRect(x0, h - bh, x1 - x0, bh);
      }
      const thr = state.record && state.record.threshold;
      if (thr != null && thr > 0 && thr < 1) {
        const y = Math.round(h - thr * (h - 2)) + 0.5;
        ctx.strokeStyle = 'rgba(255,255,255,0.45)';
        ctx.setLineDash([4, 4]);
        ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
        ctx.setLineDash([]);
      }
    }
    for (const canvas of $$('#tl-lanes canvas.lane-heat')) {
      const label = canvas.dataset.label;
      const { w, h } = sizeCanvas(canvas);
      const ctx = canvas.getContext('2d');
      ctx.clearRect(0, 0, w, h);
      for (const { a, b, w: win } of visible) {
        const hit = (win.labels || []).find((x) => x.label === label);
        if (!hit || !(hit.score > 0)) continue;
        ctx.fillStyle = labelColor(label, 0.4 * clamp(hit.score, 0, 1));
        const x0 = Math.floor(X(a, w));
        ctx.fillRect(x0, 0, Math.max(1, Math.ceil(X(b, w)) - x0), h);
      }
    }
  }
  new ResizeObserver(() => { if (!$('#editor').hidden) { renderRuler(); drawStrips(); } }).observe($('#timeline'));

  // ---------------------------------------------------------------- player

  const video = $('#video');
  function seekTo(t) {
    const d = state.duration || video.duration || 0;
    video.currentTime = clamp(t, 0, d);
    updatePlayhead();
  }
  function togglePlay() {
    if (video.paused || video.ended) video.play().catch(() => {});
    else video.pause();
  }

  function updatePlayhead() {
    const t = video.currentTime || 0;
    // The view follows the playhead: a page on when it runs off either side.
    const { t0, t1 } = state.view;
    const span = viewSpan();
    if (state.duration > 0 && span < state.duration - 1e-9 && !dragging && (t < t0 || t > t1)) {
      setView(t > t1 && t - t1 < span ? t0 + span * 0.9 : t - span * 0.1, span);
    }
    $('#playhead').style.left = pos(t);
    $('#playhead').hidden = t < state.view.t0 - 1e-9 || t > state.view.t1 + 1e-9;
    const w = windowAt(t);
    const top = w && w.labels ? w.labels.slice(0, 2).map((x) => `${x.label} ${x.score.toFixed(2)}`).join(', ') : '';
    $('#time-readout').textContent = `${fmtTime(t, true)} / ${fmtTime(state.duration, true)}${top ? `  ·  ${top}` : ''}`;
  }
  let raf = 0;
  const tick = () => { updatePlayhead(); raf = video.paused ? 0 : requestAnimationFrame(tick); };
  video.addEventListener('play', () => { if (!raf) raf = requestAnimationFrame(tick); });
  ['timeupdate', 'seeked', 'loadedmetadata', 'pause'].forEach((type) => video.addEventListener(type, updatePlayhead));
  video.addEventListener('loadedmetadata', () => {
    if (!state.duration && Number.isFinite(video.duration)) {
      state.duration = video.duration;
      state.view = { t0: 0, t1: state.duration };
      renderEditor();
    }
  });
  video.addEventListener('error', () => {
    if (!$('#editor').hidden && video.getAttribute('src')) flash('The video could not be played in this browser; the timeline still works', 'error');
  });

  // ---------------------------------------------------------------- timeline pointer

  const area = $('#tl-area');
  let dragging = false;
  function timeAt(clientX) {
    const r = $('#tl-lanes').getBoundingClientRect();
    return clamp(state.view.t0 + ((clientX - r.left) / Math.max(1, r.width)) * viewSpan(), 0, state.duration);
  }

  // Ctrl+wheel zooms around the pointer; Shift+wheel (or a sideways wheel) pans.
  area.addEventListener('wheel', (e) => {
    if (!(state.duration > 0)) return;
    if (e.ctrlKey || e.metaKey) {
      e.preventDefault();
      zoom(e.deltaY < 0 ? 1.25 : 0.8, timeAt(e.clientX));
    } else if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
      e.preventDefault();
      const dx = Math.abs(e.deltaX) > Math.abs(e.deltaY) ? e.deltaX : e.deltaY;
      const r = area.getBoundingClientRect();
      setView(state.view.t0 + (dx / Math.max(1, r.width)) * viewSpan(), viewSpan());
    }
  }, { passive: false });

  area.addEventListener('pointerdown', (e) => {
    if (e.button !== 0 || !(state.duration > 0)) return;
    const edgeNode = e.target.closest('.edge');
    const segNode = e.target.closest('.seg');
    e.preventDefault();
    // Back to the shortcuts: a field that had the focus lets it go.
    if (typing(document.activeElement)) document.activeElement.blur();
    area.setPointerCapture(e.pointerId);
    if (edgeNode && segNode) {
      const seg = state.segments[Number(segNode.dataset.index)];
      if (!seg) return;
      const which = edgeNode.dataset.edge;
      const snap = snapshot();
      const before = seg[which];
      state.sel = seg;
      document.body.classList.add('dragging');
      dragging = true;
      const move = (ev) => {
        const t = snapTime(timeAt(ev.clientX));
        if (which === 'start') seg.start = clamp(t, 0, seg.end - minLen());
        else seg.end = clamp(t, seg.start + minLen(), state.duration);
        const node = $(`#tl-lanes .seg[data-index="${segNode.dataset.index}"]`);
        if (node) {
          node.style.left = pos(seg.start);
          node.style.width = len(seg.end - seg.start);
        }
        seekTo(seg[which]);
        renderInspector();
      };
      const up = () => {
        area.removeEventListener('pointermove', move);
        area.removeEventListener('pointerup', up);
        area.removeEventListener('pointercancel', up);
        document.body.classList.remove('dragging');
        dragging = false;
        if (seg[which] !== before) { seg.accepted = true; commitEdit(snap); } else renderEditor();
      };
      area.addEventListener('pointermove', move);
      area.addEventListener('pointerup', up);
      area.addEventListener('pointercancel', up);
      renderInspector();
      return;
    }
    if (segNode) {
      const seg = state.segments[Number(segNode.dataset.index)];
      seekTo(timeAt(e.clientX));
      select(seg);
      return;
    }
    // Empty timeline: seek, and scrub while the button is down.
    seekTo(timeAt(e.clientX));
    const move = (ev) => seekTo(timeAt(ev.clientX));
    const up = () => {
      area.removeEventListener('pointermove', move);
      area.removeEventListener('pointerup', up);
      area.removeEventListener('pointercancel', up);
    };
    area.addEventListener('pointermove', move);
    area.addEventListener('pointerup', up);
    area.addEventListener('pointercancel', up);
  });

  // Hover tooltip over the score strip and lanes: the window's top classes.
  area.addEventListener('pointermove', (e) => {
    const tip = $('#tl-tip');
    if (!(state.duration > 0) || e.buttons || e.target.closest('.seg')) { tip.hidden = true; return; }
    const t = timeAt(e.clientX);
    const w = windowAt(t);
    if (!w) { tip.hidden = true; return; }
    tip.textContent = `${fmtTime(w.start)}–${fmtTime(w.end)}: ${(w.labels || []).map((x) => `${x.label} ${x.score.toFixed(2)}`).join(', ')}`;
    const r = area.getBoundingClientRect();
    tip.hidden = false;
    tip.style.left = `${clamp(e.clientX - r.left + 12, 0, Math.max(0, r.width - tip.offsetWidth))}px`;
    tip.style.top = `${Math.max(0, e.clientY - r.top - tip.offsetHeight - 10)}px`;
  });
  area.addEventListener('pointerleave', () => { $('#tl-tip').hidden = true; });

  // ---------------------------------------------------------------- inspector inputs

  $('#seg-label').addEventListener('change', (e) => {
    actions.setLabel(e.target.value);
    e.target.blur();
  });
  function onTimeInput(which) {
    return (e) => {
      if (!state.sel) return;
      const t = Number(e.target.value);
      const seg = state.sel;
      if (!Number.isFinite(t)) { renderInspector(); return; }
      const v = snapTime(t);
      if ((which === 'start' && v > seg.end - minLen()) || (which === 'end' && v < seg.start + minLen())) {
        flash('The start must be before the end', 'error');
        renderInspector();
        return;
      }
      edit(() => { if (seg[which] === v) return false; seg[which] = v; seg.accepted = true; return true; });
    };
  }
  $('#seg-start').addEventListener('change', onTimeInput('start'));
  $('#seg-end').addEventListener('change', onTimeInput('end'));

  // ---------------------------------------------------------------- buttons & keys

  const actionMap = {
    accept: actions.accept, reject: actions.reject, relabel: actions.relabel, split: actions.split,
    merge: actions.merge, 'set-start': actions.setStart, 'set-end': actions.setEnd, add: actions.add,
  };
  $$('.toolbar button[data-action]').forEach((b) => b.addEventListener('click', (e) => {
    actionMap[b.dataset.action]();
    if (e.detail > 0) b.blur(); // a mouse click must not leave Space bound to the button
  }));
  $('#save-button').addEventListener('click', (e) => { save(); if (e.detail > 0) e.currentTarget.blur(); });
  $('#undo-button').addEventListener('click', (e) => { undo(); if (e.detail > 0) e.currentTarget.blur(); });
  $('#help-button').addEventListener('click', () => $('#help-dialog').showModal());
  $('#export-button').addEventListener('click', exportCorrections);
  $('#export-csv').addEventListener('click', downloadCSV);

  const NOT_TYPED = new Set(['checkbox', 'radio', 'button', 'submit', 'reset', 'file', 'range', 'color']);
  function typing(target) {
    if (!(target instanceof HTMLElement)) return false;
    if (target.tagName === 'INPUT') return !NOT_TYPED.has(target.type);
    return target.isContentEditable || target.tagName === 'SELECT' || target.tagName === 'TEXTAREA';
  }

  document.addEventListener('keydown', (e) => {
    if (document.querySelector('dialog[open]')) return; // a dialog owns the keys (Esc closes it)
    const editing = !$('#editor').hidden && !$('#job-view').hidden;
    if (e.ctrlKey || e.metaKey) {
      const k = e.key.toLowerCase();
      if (k === 's') { e.preventDefault(); if (editing) save(); } else if (k === 'z' && !typing(e.target) && editing) {
        e.preventDefault();
        if (e.shiftKey) redo(); else undo();
      } else if (k === 'y' && !typing(e.target) && editing) { e.preventDefault(); redo(); }
      return;
    }
    if (e.altKey) return;
    if (typing(e.target)) {
      if (e.key === 'Escape') e.target.blur();
      return;
    }
    if (e.key === '?') { e.preventDefault(); $('#help-dialog').showModal(); return; }
    if (!editing) return;
    // Space on a focused button or checkbox, and Enter on those or a link, press it, as everywhere.
    if (e.target instanceof HTMLElement && ((e.key === ' ' && (e.target.tagName === 'BUTTON' || e.target.type === 'checkbox'))
        || (e.key === 'Enter' && (e.target.tagName === 'BUTTON' || e.target.tagName === 'A' || e.target.type === 'checkbox')))) return;
    const step = e.shiftKey ? frame() : state.stride;
    const handlers = {
      ' ': togglePlay,
      ArrowLeft: () => seekTo(now() - step),
      ArrowRight: () => seekTo(now() + step),
      ArrowUp: () => selectRelative(-1),
      ArrowDown: () => selectRelative(1),
      Home: () => seekTo(0),
      End: () => seekTo(state.duration),
      a: actions.accept,
      r: actions.reject,
      Delete: actions.reject,
      Backspace: actions.reject,
      l: actions.relabel,
      s: actions.split,
      m: actions.merge,
      '[': actions.setStart,
      ']': actions.setEnd,
      n: actions.add,
      Escape: () => select(null),
      '+': () => zoom(2),
      '=': () => zoom(2),
      '-': () => zoom(0.5),
      0: zoomFit,
    };
    let handler = handlers[e.key] || handlers[e.key.toLowerCase()];
    if (!handler && /^[1-9]$/.test(e.key)) {
      const label = state.labels[Number(e.key) - 1];
      if (label) handler = () => actions.setLabel(label);
    }
    if (!handler) return;
    e.preventDefault();
    handler();
  });

  // ---------------------------------------------------------------- start

  async function start() {
    try {
      const body = await apiJSON('/v1/labels');
      state.labels = body.labels || [];
      state.multilabel = Boolean(body.multilabel);
    } catch (err) {
      $('#conn-status').textContent = `Could not read the labels: ${err.message}`;
    }
    await refreshJobs();
    route();
  }
  start();
})();
