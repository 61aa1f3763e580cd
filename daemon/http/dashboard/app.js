// Tern dashboard: polls /api/cluster and /api/jobs, follows the selected job's server-sent
// events (/api/jobs/<id>/events; the browser resumes with Last-Event-ID after a reconnect)
// and draws them with Chart.js. Every string from ternd is rendered with textContent, never
// as HTML. Test hooks: tr[data-job-id], td[data-state], #job-state[data-state],
// #job[data-stream-items], canvas[data-points], #chart-loss[data-running-growth] (redraws
// that added loss points while the live state was RUNNING), #job[data-redraw-ms],
// body[data-csp-violations].
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const PHASES = [
    ['forward', 'forward_ms', '#1f6feb'],
    ['backward', 'backward_ms', '#8250df'],
    ['comm', 'comm_ms', '#bf8700'],
    ['optimizer', 'optimizer_ms', '#1a7f37'],
    ['checkpoint stall', 'checkpoint_ms', '#cf222e'],
  ];
  const MEMORY = [['params', 'param_bytes'], ['grads', 'grad_bytes'], ['optimizer', 'optim_bytes'],
    ['gather pool', 'gather_pool_bytes']];
  const MAX_EVENT_ROWS = 500;
  const REDRAW_MS = 500;

  const state = {
    selected: null, stream: null, streamDone: false, t0: 0, events: [], kinds: new Map(),
    incidents: [], round: 0,
    charts: {}, redrawPending: false, lastRedraw: 0, logsTimer: null, terminal: false,
    placement: [], items: 0, liveState: '', runningPoints: -1, runningGrowth: 0,
  };
  let cspViolations = 0;
  document.body.dataset.cspViolations = '0';
  document.addEventListener('securitypolicyviolation', () => {
    cspViolations += 1;
    document.body.dataset.cspViolations = String(cspViolations);
  });

  // ---- helpers ---------------------------------------------------------------------------
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function finite(v) { return typeof v === 'number' && isFinite(v); }
  function fmtNum(v, digits) {
    if (!finite(v)) return '–';
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + 'M';
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + 'k';
    return v.toFixed(digits === undefined ? 3 : digits);
  }
  function fmtDuration(s) {
    if (!finite(s) || s < 0) return '–';
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
  }
  function kindColor(kind) {
    let h = 7;
    for (const c of String(kind)) h = (h * 31 + c.codePointAt(0)) >>> 0;
    return `hsl(${h % 360}, 65%, 40%)`;
  }
  function setStatus(text, st) {
    const s = $('status');
    s.textContent = text;
    s.dataset.state = st;
  }
  // The token (when ternd runs with token files): typed into the header's field, kept in
  // sessionStorage for this tab, sent as "Authorization: Bearer" by fetch and, for the
  // EventSource (which cannot set headers), as the same-site cookie tern_token.
  function token() {
    return $('token').value.trim();
  }
  function saveToken(t) {
    try { sessionStorage.setItem('tern_token', t); } catch (e) { /* storage off */ }
    document.cookie = t
      ? `tern_token=${encodeURIComponent(t)}; path=/api/; SameSite=Strict`
      : 'tern_token=; path=/api/; max-age=0; SameSite=Strict';
  }
  function authHeaders() {
    const t = token();
    return t ? { Authorization: `Bearer ${t}` } : {};
  }
  function askForToken(message) {
    const input = $('token');
    input.placeholder = 'token needed';
    input.dataset.needed = '1';
    if (document.activeElement !== input) input.focus();
    setStatus(`${message} — enter a token above`, 'error');
  }
  async function getJSON(url) {
    const r = await fetch(url, { cache: 'no-store', headers: authHeaders() });
    const body = await r.json().catch(() => ({}));
    if (r.status === 401 || r.status === 403) {
      askForToken(body.error || `HTTP ${r.status}`);
      throw new Error(body.error || `HTTP ${r.status}`);
    }
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    return body;
  }
  function parseObject(text) {
    try {
      const v = JSON.parse(text);
      return v && typeof v === 'object' ? v : null;
    } catch (e) {
      return null;
    }
  }
  function cell(tr, text, cls) {
    const td = el('td', text, cls);
    tr.appendChild(td);
    return td;
  }

  // ---- cluster and jobs tables -------------------------------------------------------------
  function renderWorkers(c) {
    const body = $('workers').tBodies[0];
    const rows = c.workers.map((w) => {
      const tr = el('tr');
      tr.dataset.worker = w.name;
      cell(tr, w.name);
      cell(tr, w.host);
      cell(tr, w.state).dataset.state = w.state;
      cell(tr, w.slots);
      cell(tr, w.used_slots);
      cell(tr, finite(w.heartbeat_age_ms) && w.connected ? `${(w.heartbeat_age_ms / 1000).toFixed(1)} s` : '–');
      cell(tr, (w.jobs || []).join(', '));
      return tr;
    });
    body.replaceChildren(...rows);
    $('cluster-summary').textContent =
      `${c.connected_workers} connected worker(s), ${c.used_slots}/${c.slots} slots in use`;
  }

  function renderJobs(list) {
    const body = $('jobs').tBodies[0];
    const rows = list.jobs.map((j) => {
      const tr = el('tr');
      tr.dataset.jobId = j.id;
      if (j.id === state.selected) tr.className = 'selected';
      cell(tr, j.id);
      cell(tr, j.name, 'name-cell');
      cell(tr, j.state).dataset.state = j.state;
      const p = el('td');
      const bar = el('progress');
      bar.max = 1;
      bar.value = finite(j.progress) ? j.progress : 0;
      p.appendChild(bar);
      p.appendChild(document.createTextNode(finite(j.progress) ? ` ${Math.round(j.progress * 100)}%` : ''));
      tr.appendChild(p);
      cell(tr, j.train_iters ? `${j.step}/${j.train_iters}` : j.step);
      cell(tr, fmtNum(j.values.loss));
      cell(tr, fmtNum(j.values.tokens_per_s, 0));
      cell(tr, j.terminal ? '–' : fmtDuration(j.eta_s));
      cell(tr, finite(j.goodput) ? `${(j.goodput * 100).toFixed(0)}%` : '–');
      cell(tr, j.world_size || '–');
      tr.addEventListener('click', () => select(j.id));
      return tr;
    });
    body.replaceChildren(...rows);
    const mine = list.jobs.find((j) => j.id === state.selected);
    if (mine) showJobMeta(mine);
    if (!state.selected && list.jobs.length) {
      const wanted = new URLSearchParams(location.hash.slice(1)).get('job');
      const pick = list.jobs.find((j) => j.id === wanted) ||
        list.jobs.find((j) => !j.terminal) || list.jobs[0];
      select(pick.id);
    }
  }

  async function refresh() {
    try {
      const [c, jobs] = await Promise.all([getJSON('/api/cluster'), getJSON('/api/jobs')]);
      renderWorkers(c);
      renderJobs(jobs);
      document.body.dataset.ready = '1';
      if (!state.stream || state.streamDone) setStatus('connected', 'live');
    } catch (e) {
      if (!$('token').dataset.needed) setStatus(`ternd unreachable: ${e.message}`, 'error');
    }
    setTimeout(refresh, 1000);
  }

  // ---- charts ------------------------------------------------------------------------------
  const eventLines = {
    id: 'ternEvents',
    afterDatasetsDraw(chart) {
      const x = chart.scales.x;
      if (!x || chart.config.type !== 'line') return;
      const area = chart.chartArea;
      const ctx = chart.ctx;
      ctx.save();
      // Elastic incidents: from the round stopping to the next round's first step (not
      // training), shaded; still open = up to the right edge.
      ctx.fillStyle = 'rgba(200, 40, 40, 0.12)';
      for (const inc of state.incidents) {
        const a = Math.max(area.left, x.getPixelForValue(inc.t0));
        const b = Math.min(area.right, inc.t1 === null ? area.right : x.getPixelForValue(inc.t1));
        if (finite(a) && finite(b) && b > a) ctx.fillRect(a, area.top, b - a, area.bottom - area.top);
      }
      ctx.setLineDash([4, 3]);
      ctx.lineWidth = 1;
      for (const ev of state.events) {
        const px = x.getPixelForValue(ev.t);
        if (!finite(px) || px < area.left || px > area.right) continue;
        ctx.strokeStyle = kindColor(ev.kind);
        ctx.beginPath();
        ctx.moveTo(px, area.top);
        ctx.lineTo(px, area.bottom);
        ctx.stroke();
      }
      ctx.restore();
    },
  };

  function lineChart(id, series, opts) {
    const o = opts || {};
    return new window.Chart($(id), {
      type: 'line',
      data: {
        datasets: series.map(([label, color], i) => ({
          label, data: [], borderColor: color, backgroundColor: color, borderWidth: 1.5,
          pointRadius: o.points ? 3 : 1.5, showLine: !o.points, tension: 0,
          fill: o.stacked ? (i === 0 ? 'origin' : '-1') : false,
        })),
      },
      options: {
        animation: false, parsing: false, normalized: true, responsive: true,
        maintainAspectRatio: false, interaction: { mode: 'nearest', intersect: false },
        scales: {
          x: { type: 'linear', min: 0, title: { display: true, text: 'seconds since submit' } },
          y: { stacked: !!o.stacked, beginAtZero: !!o.zero },
        },
        plugins: { legend: { labels: { boxWidth: 10 } } },
      },
      plugins: [eventLines],
    });
  }

  function makeCharts() {
    if (typeof window.Chart !== 'function') {
      $('charts-missing').hidden = false;
      return {};
    }
    return {
      loss: lineChart('chart-loss', [['train loss', '#1f6feb'], ['val loss', '#cf222e']]),
      tokens: lineChart('chart-tokens', [['tokens/s', '#1a7f37']], { zero: true }),
      time: lineChart('chart-time', PHASES.map(([l, , c]) => [l, c]), { stacked: true, zero: true }),
      bytes: lineChart('chart-bytes', [['node-local', '#8250df'], ['cross-node', '#bf8700']], { zero: true }),
      ckpt: lineChart('chart-ckpt', [['GiB/s', '#cf222e']], { points: true, zero: true }),
      memory: new window.Chart($('chart-memory'), {
        type: 'bar',
        data: {
          labels: MEMORY.map(([l]) => l).concat(['peak RSS']),
          datasets: [{ label: 'MiB', data: MEMORY.map(() => 0).concat([0]), backgroundColor: '#1f6feb' }],
        },
        options: { animation: false, responsive: true, maintainAspectRatio: false,
          plugins: { legend: { display: false } } },
      }),
    };
  }

  function push(name, i, x, y) {
    const c = state.charts[name];
    if (!c || !finite(x) || !finite(y)) return;
    c.data.datasets[i].data.push({ x, y });
    scheduleRedraw();
  }

  // Redraws at most every REDRAW_MS: from a timer, or from the stream's own handler when
  // messages keep coming (a busy page may run its timers late).
  function scheduleRedraw() {
    if (performance.now() - state.lastRedraw >= REDRAW_MS) return redraw();
    if (state.redrawPending) return;
    state.redrawPending = true;
    setTimeout(redraw, REDRAW_MS);
  }

  function redraw() {
    state.redrawPending = false;
    state.lastRedraw = performance.now();
    for (const c of Object.values(state.charts)) {
      // Dots only while few: drawing thousands of them makes every redraw slow.
      for (const ds of c.data.datasets) {
        if (c.config.type === 'line' && ds.showLine && ds.data.length > 200) ds.pointRadius = 0;
      }
      c.update('none');
      c.canvas.dataset.points = String(c.data.datasets[0].data.filter((p) => p !== 0).length);
    }
    const loss = state.charts.loss;
    if (loss) {
      // Attests that the chart grew while the job's live state was RUNNING.
      const points = loss.data.datasets[0].data.length;
      if (state.liveState === 'RUNNING' && !state.endedAtConnect && points > state.runningPoints) {
        if (state.runningPoints >= 0) state.runningGrowth += 1;
        state.runningPoints = points;
      }
      loss.canvas.dataset.valPoints = String(loss.data.datasets[1].data.length);
      loss.canvas.dataset.runningGrowth = String(state.runningGrowth);
    }
    $('job').dataset.streamItems = String(state.items);
    $('job').dataset.redrawMs = String(Math.round(performance.now() - state.lastRedraw));
  }

  // ---- the selected job --------------------------------------------------------------------
  function setJobState(value) {
    state.liveState = value;
    const st = $('job-state');
    st.textContent = value;
    st.dataset.state = value;
  }

  // From the jobs table (polled) or the stream's snapshot. The stream's events own the state
  // badge once they flow: a poll answered before the newest event must not roll it back.
  function showJobMeta(j, fromStream) {
    $('job-id').textContent = j.id;
    $('job-name').textContent = j.name;
    if (fromStream || j.terminal || !state.items) setJobState(j.state);
    const parts = [`round ${j.round}`, `${j.world_size || 0} ranks`, `step ${j.step}/${j.train_iters}`];
    if (finite(j.goodput)) parts.push(`goodput ${(j.goodput * 100).toFixed(0)}%`);
    if (!j.terminal) parts.push(`ETA ${fmtDuration(j.eta_s)}`);
    if (j.checkpoints) parts.push(`${j.checkpoints} checkpoint(s)`);
    if (j.message) parts.push(j.message);
    $('job-meta').textContent = parts.join(' · ');
    state.terminal = j.terminal;
    $('cancel').disabled = j.terminal;
    state.placement = (j.placement || []).map((p) => p.rank);
  }

  function onJob(j) {
    if (!state.t0) {
      state.t0 = j.created_ms;
      state.endedAtConnect = j.terminal;  // a replayed history is not a running job
    }
    showJobMeta(j, true);
  }

  function onMetric(m) {
    const t = (m.time_ms - state.t0) / 1000;
    const v = m.values || {};
    if (m.kind === 'step') {
      const open = state.incidents[state.incidents.length - 1];
      if (open && open.t1 === null && m.round > open.round) {
        open.t1 = t;
        markIncidents();
      }
      state.round = Math.max(state.round, m.round || 0);
      push('loss', 0, t, v.loss);
      push('tokens', 0, t, v.tokens_per_s);
      PHASES.forEach(([, key], i) => push('time', i, t, v[key]));
      push('bytes', 0, t, v.bytes_intra_node);
      push('bytes', 1, t, v.bytes_inter_node);
    } else if (m.kind === 'eval') {
      push('loss', 1, t, v.val_loss);
    } else if (m.kind === 'summary') {
      setMemory(MEMORY.length, v.peak_rss_mib);
      MEMORY.forEach(([, key], i) => setMemory(i, finite(v[key]) ? v[key] / 1048576 : undefined));
    }
  }

  function setMemory(i, mib) {
    const c = state.charts.memory;
    if (!c || !finite(mib)) return;
    c.data.datasets[0].data[i] = mib;
    scheduleRedraw();
  }

  function onEvent(e) {
    const t = (e.time_ms - state.t0) / 1000;
    state.events.push({ t, kind: e.kind });
    state.kinds.set(e.kind, (state.kinds.get(e.kind) || 0) + 1);
    renderKinds();
    const tr = el('tr');
    tr.dataset.kind = e.kind;
    cell(tr, e.seq);
    cell(tr, t.toFixed(1));
    const k = el('span', e.kind, 'kind');
    k.style.backgroundColor = kindColor(e.kind);
    const kt = el('td');
    kt.appendChild(k);
    tr.appendChild(kt);
    cell(tr, e.state).dataset.state = e.state;
    cell(tr, e.rank >= 0 ? e.rank : '');
    cell(tr, e.worker);
    tr.appendChild(messageCell(e));
    const body = $('events').tBodies[0];
    body.appendChild(tr);
    while (body.rows.length > MAX_EVENT_ROWS) body.deleteRow(0);
    setJobState(e.state);
    const details = parseObject(e.message);
    if (e.kind === 'round_stopped') {
      state.incidents.push({ t0: t, t1: null, round: state.round });
      markIncidents();
    }
    if (e.kind === 'checkpoint' && details) push('ckpt', 0, t, details.gibps);
    if (e.kind === 'memory' && details && !(details.rank > 0)) {
      MEMORY.forEach(([, key], i) => setMemory(i, finite(details[key]) ? details[key] / 1048576 : undefined));
    }
    scheduleRedraw();
  }

  // A structured payload arrives with ternd's labelled fields ([[label, value], ...]): one
  // <span class="field"><b>label</b> value</span> each; plain messages as text.
  function messageCell(e) {
    const td = el('td', null, 'message');
    if (!Array.isArray(e.fields) || !e.fields.length) {
      td.textContent = e.message === undefined || e.message === null ? '' : String(e.message);
      return td;
    }
    for (const [label, value] of e.fields) {
      const f = el('span', null, 'field');
      f.appendChild(el('b', label));
      f.appendChild(document.createTextNode(` ${value}`));
      td.appendChild(f);
    }
    return td;
  }

  // How many incidents the charts shade, and how many are closed (for tests and curious eyes).
  function markIncidents() {
    const c = $('job');
    c.dataset.incidents = String(state.incidents.length);
    c.dataset.incidentsClosed = String(state.incidents.filter((i) => i.t1 !== null).length);
  }

  function renderKinds() {
    const badges = [...state.kinds.entries()].map(([kind, n]) => {
      const b = el('span', `${kind} ×${n}`, 'kind');
      b.style.backgroundColor = kindColor(kind);
      return b;
    });
    $('event-kinds').replaceChildren(...badges);
  }

  function openStream(id) {
    state.streamDone = false;
    const es = new EventSource(`/api/jobs/${encodeURIComponent(id)}/events`);
    const guard = (fn) => (ev) => {
      if (state.stream !== es) return;
      const data = parseObject(ev.data);
      if (data) fn(data);
      state.items += 1;
    };
    es.addEventListener('job', guard(onJob));
    es.addEventListener('event', guard(onEvent));
    es.addEventListener('metric', guard(onMetric));
    es.addEventListener('end', guard((d) => {
      if (d.code !== 'OK') return;  // cut off or ternd restarting: the browser reconnects
      state.streamDone = true;
      es.close();
      setStatus('job ended', 'live');
      refreshLogs();
    }));
    es.onopen = () => setStatus('live', 'live');
    es.onerror = () => { if (!state.streamDone) setStatus('reconnecting…', 'error'); };
    state.stream = es;
  }

  async function refreshLogs() {
    const id = state.selected;
    if (!id) return;
    const ranks = state.placement.length ? state.placement : [0];
    const box = $('logs');
    for (const rank of ranks) {
      let div = box.querySelector(`div[data-rank="${rank}"]`);
      if (!div) {
        div = el('div', null, 'log');
        div.dataset.rank = String(rank);
        div.appendChild(el('h4', `rank ${rank}`));
        div.appendChild(el('pre'));
        box.appendChild(div);
      }
      try {
        const r = await fetch(`/api/jobs/${encodeURIComponent(id)}/logs/${rank}?tail=8192`, { cache: 'no-store', headers: authHeaders() });
        if (id !== state.selected) return;
        const text = r.ok ? await r.text() : '(no log yet)';
        const pre = div.querySelector('pre');
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent = text;
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      } catch (e) {
        /* next round */
      }
    }
  }

  function select(id) {
    if (state.selected === id) return;
    if (state.stream) state.stream.close();
    for (const c of Object.values(state.charts)) c.destroy();
    clearInterval(state.logsTimer);
    Object.assign(state, {
      selected: id, stream: null, t0: 0, events: [], kinds: new Map(), placement: [],
      incidents: [], round: 0,
      terminal: false, items: 0, liveState: '', runningPoints: -1, runningGrowth: 0,
      endedAtConnect: false,
    });
    $('events').tBodies[0].replaceChildren();
    $('logs').replaceChildren();
    $('event-kinds').replaceChildren();
    $('cancel-result').textContent = '';
    $('job').hidden = false;
    for (const tr of $('jobs').tBodies[0].rows) tr.className = tr.dataset.jobId === id ? 'selected' : '';
    state.charts = makeCharts();
    history.replaceState(null, '', `#job=${encodeURIComponent(id)}`);
    openStream(id);
    refreshLogs();
    state.logsTimer = setInterval(() => { if (!state.terminal) refreshLogs(); }, 2000);
  }

  $('cancel').addEventListener('click', async () => {
    const result = $('cancel-result');
    const headers = authHeaders();
    try {
      const r = await fetch(`/api/jobs/${encodeURIComponent(state.selected)}/cancel`, { method: 'POST', headers });
      const body = await r.json().catch(() => ({}));
      result.textContent = r.ok ? `cancelled (${body.state})` : (body.error || `HTTP ${r.status}`);
      result.dataset.ok = String(r.ok);
    } catch (e) {
      result.textContent = e.message;
      result.dataset.ok = 'false';
    }
  });

  try { $('token').value = sessionStorage.getItem('tern_token') || ''; } catch (e) { /* off */ }
  saveToken(token());
  $('token').addEventListener('change', () => {
    saveToken(token());
    delete $('token').dataset.needed;
    if (state.selected) {  // reopen the stream with the new cookie
      const id = state.selected;
      state.selected = null;
      select(id);
    }
  });
  refresh();
})();
