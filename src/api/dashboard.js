// hookbox operator dashboard: plain ES2020, no framework, no build step.
//
// The page is a client of the public API like any other: it signs in with
// an API token kept in sessionStorage, reads /api/v1 every few seconds and
// draws what it gets. Everything that comes from the API reaches the DOM as
// text (textContent, attributes set one by one), never as markup. Sections
// whose endpoint answers 404 (an older server) say "not available" instead
// of failing the page.
'use strict';

(() => {
  const TOKEN_KEY = 'hookbox.token';
  const REFRESH_MS = 5000;
  const FAST_POLL_MS = 500;
  const FAST_POLL_FOR_MS = 20000;
  const SVG = 'http://www.w3.org/2000/svg';

  const state = {
    token: null,
    // null until known; false once a POST answered 403.
    canWrite: null,
    timer: null,
    refreshing: false,
    generation: 0,
    range: 'minutes',
    stats: undefined, // undefined: not loaded; null: not available; object
    webhooks: [],
    webhookStats: new Map(),
    failed: [],
    pinned: new Set(), // ids retried from this page, shown until sign-out
    expanded: new Set(),
    details: new Map(), // delivery id -> delivery with attempt_log
    events: new Map(), // event id -> event type (immutable, cached)
    retrying: new Set(),
    eventTypesLoaded: false,
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM

  // el('div', {class: 'x', text: 'y', title: 'z'}, child, 'text child', ...)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'text') node.textContent = String(value);
      else if (key === 'class') node.setAttribute('class', value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function replace(node, ...children) {
    node.replaceChildren();
    append(node, children);
  }

  function placeholder(text, kind) {
    return el('p', {class: 'placeholder' + (kind ? ' ' + kind : ''), text});
  }

  function capital(text) {
    const s = String(text || '');
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  function badge(text, kind, title) {
    return el('span', {class: 'badge ' + kind, text, title});
  }

  // ---------------------------------------------------------------- format

  function pct(rate) {
    if (rate === null || rate === undefined) return '–';
    const p = rate * 100;
    return (p >= 99.95 || p === 0 ? p.toFixed(0) : p.toFixed(1)) + '%';
  }

  function ms(value) {
    if (value === null || value === undefined) return '–';
    return value >= 10000 ? (value / 1000).toFixed(1) + ' s' : Math.round(value) + ' ms';
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return '–';
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min' + (s % 60 && s < 600 ? ' ' + (s % 60) + ' s' : '');
    if (s < 86400) return Math.floor(s / 3600) + ' h' + (s % 3600 >= 60 ? ' ' + Math.floor((s % 3600) / 60) + ' min' : '');
    return Math.floor(s / 86400) + ' d' + (s % 86400 >= 3600 ? ' ' + Math.floor((s % 86400) / 3600) + ' h' : '');
  }

  function count(n) {
    return typeof n === 'number' ? n.toLocaleString() : '–';
  }

  function ago(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return '';
    const s = (Date.now() - t) / 1000;
    if (s < 5) return 'just now';
    return duration(s).split(' ').slice(0, 2).join(' ') + ' ago';
  }

  function when(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return el('span', {text: '–'});
    return el('time', {datetime: iso, title: new Date(t).toLocaleString(), text: ago(iso)});
  }

  function clock(iso, withDay) {
    const d = new Date(Date.parse(iso));
    const hm = d.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', hour12: false});
    return withDay ? d.toLocaleDateString([], {weekday: 'short'}) + ' ' + hm : hm;
  }

  // ---------------------------------------------------------------- API

  class Unauthorized extends Error {}

  // Calls the API; resolves to {status, body} (body parsed when JSON).
  // A 401 signs out. Network errors reject.
  async function api(method, path, body) {
    const headers = {Authorization: 'Bearer ' + state.token, Accept: 'application/json'};
    const init = {method, headers, cache: 'no-store', credentials: 'omit'};
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let parsed = null;
    const text = await response.text();
    if (text) {
      try { parsed = JSON.parse(text); } catch (_) { parsed = null; }
    }
    if (response.status === 401 && path.startsWith('/api/')) {
      signOut('The token was refused (401): it is unknown, revoked, or mistyped.');
      throw new Unauthorized();
    }
    return {status: response.status, body: parsed};
  }

  function errorMessage(result, fallback) {
    const error = result && result.body && result.body.error;
    if (!error) return fallback + ' (HTTP ' + (result ? result.status : '?') + ')';
    const details = Array.isArray(error.details)
      ? error.details.map((d) => (d && d.field ? d.field + ': ' : '') + (d && d.message ? d.message : '')).filter(Boolean)
      : [];
    return String(error.message || fallback) + (details.length ? ' — ' + details.join('; ') : '');
  }

  // A POST answered 403: this token may not change anything.
  function forbidWrites() {
    if (state.canWrite === false) return;
    state.canWrite = false;
    renderScope();
    renderFailed();
    renderTesterAccess();
  }

  // ---------------------------------------------------------------- session

  function showSignIn(message) {
    $('app').hidden = true;
    $('session').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = message || '';
    $('token').value = '';
    $('token').focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(state.timer);
    Object.assign(state, {
      token: null, canWrite: null, timer: null, stats: undefined, webhooks: [], failed: [],
      refreshing: false, eventTypesLoaded: false,
    });
    state.generation += 1;
    for (const set of [state.webhookStats, state.pinned, state.expanded, state.details, state.retrying]) set.clear();
    replace($('tester-report'));
    // Nothing of this session stays on the page for the next one (whose
    // token may be allowed less).
    for (const id of ['failed', 'webhooks', 'alerts', 'chart']) replace($(id));
    for (const id of ['failed-count', 'webhooks-count', 'alerts-count']) $(id).textContent = '';
    $('tester-error').textContent = '';
    $('tester-form').reset();
    showSignIn(message);
  }

  async function signIn(token) {
    state.token = token;
    let probe;
    try {
      probe = await api('GET', '/api/v1/webhooks?limit=1');
    } catch (e) {
      if (!(e instanceof Unauthorized)) showSignIn('Could not reach hookbox: ' + e.message);
      return;
    }
    if (probe.status === 403) {
      state.token = null;
      showSignIn('This token may not read (a publish token?). Use an admin or read token.');
      return;
    }
    if (probe.status !== 200) {
      state.token = null;
      showSignIn(errorMessage(probe, 'Signing in failed'));
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $('signin').hidden = true;
    $('app').hidden = false;
    $('session').hidden = false;
    await detectScope();
    renderScope();
    renderTesterAccess();
    loadEventTypes();
    refresh();
  }

  // Learns whether the token may POST without changing anything: a retry
  // of an id that cannot exist is refused 403 by scope before any handler
  // runs, and answered 404 to a token that may retry.
  async function detectScope() {
    try {
      const r = await api('POST', '/api/v1/deliveries/dlv_0/retry');
      state.canWrite = r.status !== 403;
    } catch (e) {
      if (!(e instanceof Unauthorized)) state.canWrite = null;
    }
  }

  function renderScope() {
    const scope = $('scope');
    if (state.canWrite === false) {
      scope.textContent = 'Read-only';
      scope.className = 'scope read';
      scope.title = 'This token can see everything and change nothing';
    } else {
      scope.textContent = state.canWrite ? 'Admin' : 'Signed in';
      scope.className = 'scope admin';
      scope.title = state.canWrite ? 'This token can retry deliveries and test receivers' : '';
    }
  }

  // ---------------------------------------------------------------- refresh

  function schedule(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(refresh, delay);
  }

  async function refresh() {
    if (!state.token) return;
    if (state.refreshing) return;
    state.refreshing = true;
    const generation = state.generation;
    try {
      await Promise.all([loadHealth(), loadStats(), loadAlerts(), loadWebhooks(), loadFailed()]);
      if (generation !== state.generation) return;
      await Promise.all([loadWebhookStats(), loadDetails(), loadEventTypesOfDeliveries()]);
      if (generation !== state.generation) return;
      renderAll();
      $('updated').textContent = 'Updated ' + new Date().toLocaleTimeString();
      hideNotice('network');
    } catch (e) {
      if (e instanceof Unauthorized) return;
      showNotice('network', 'Could not reach hookbox (' + e.message + '); retrying.');
    } finally {
      if (generation === state.generation) {
        state.refreshing = false;
        if (state.token && !document.hidden) schedule(REFRESH_MS);
      }
    }
  }

  let noticeKey = null;
  function showNotice(key, text) {
    noticeKey = key;
    const n = $('notice');
    n.textContent = text;
    n.hidden = false;
  }
  function hideNotice(key) {
    if (noticeKey !== key) return;
    $('notice').hidden = true;
    noticeKey = null;
  }

  async function loadHealth() {
    const box = $('health');
    const text = $('health-text');
    try {
      const r = await fetch('/healthz', {cache: 'no-store'});
      let body = null;
      try { body = await r.json(); } catch (_) { body = null; }
      if (r.status === 200) {
        box.dataset.state = 'ok';
        text.textContent = 'Healthy';
        const checks = body && body.checks && typeof body.checks === 'object'
          ? Object.entries(body.checks).map(([k, v]) => k + ': ' + v).join(', ') : '';
        box.title = 'GET /healthz: ok' + (body && body.version ? ' · version ' + body.version : '') + (checks ? ' · ' + checks : '');
      } else if (r.status === 404) {
        box.dataset.state = 'unknown';
        text.textContent = 'Health not available';
      } else {
        box.dataset.state = 'bad';
        const failing = body && body.failing;
        text.textContent = 'Unavailable' + (failing ? ': ' + [].concat(failing).join(', ') : '');
        box.title = 'GET /healthz answered ' + r.status;
      }
    } catch (e) {
      box.dataset.state = 'bad';
      text.textContent = 'Unreachable';
    }
  }

  async function loadStats() {
    const r = await api('GET', '/api/v1/stats');
    if (r.status === 200 && r.body) state.stats = r.body;
    else if (r.status === 404) state.stats = null;
    else state.stats = {error: errorMessage(r, 'Stats failed')};
  }

  async function loadAlerts() {
    const r = await api('GET', '/api/v1/alerts?status=open&limit=50');
    if (r.status === 200 && r.body && Array.isArray(r.body.data)) state.alerts = r.body.data;
    else if (r.status === 404) state.alerts = null;
    else state.alerts = {error: errorMessage(r, 'Alerts failed')};
  }

  async function loadWebhooks() {
    const r = await api('GET', '/api/v1/webhooks?limit=100');
    if (r.status === 200 && r.body && Array.isArray(r.body.data)) {
      state.webhooks = r.body.data;
      state.webhooksMore = Boolean(r.body.next_cursor);
      state.webhooksError = null;
    } else {
      state.webhooksError = errorMessage(r, 'Listing webhooks failed');
    }
  }

  async function loadWebhookStats() {
    // Without /api/v1/stats the per-webhook stats are not there either.
    if (state.stats === null) {
      state.webhookStats.clear();
      return;
    }
    await Promise.all(state.webhooks.slice(0, 50).map(async (w) => {
      const r = await api('GET', '/api/v1/webhooks/' + encodeURIComponent(w.id) + '/stats');
      state.webhookStats.set(w.id, r.status === 200 ? r.body : null);
    }));
  }

  async function loadFailed() {
    const r = await api('GET', '/api/v1/deliveries?status=failed&limit=25');
    if (r.status === 200 && r.body && Array.isArray(r.body.data)) {
      state.failed = r.body.data;
      state.failedMore = Boolean(r.body.next_cursor);
      state.failedError = null;
    } else {
      state.failedError = errorMessage(r, 'Listing deliveries failed');
    }
  }

  async function loadDelivery(id) {
    const r = await api('GET', '/api/v1/deliveries/' + encodeURIComponent(id));
    if (r.status === 200 && r.body) state.details.set(id, r.body);
    return r;
  }

  // The attempt logs of open rows, and the retried deliveries.
  async function loadDetails() {
    const ids = new Set([...state.expanded, ...state.pinned]);
    await Promise.all([...ids].map(loadDelivery));
  }

  async function loadEventTypesOfDeliveries() {
    const ids = new Set();
    for (const d of shownDeliveries()) {
      if (d.event_id && !state.events.has(d.event_id)) ids.add(d.event_id);
    }
    await Promise.all([...ids].slice(0, 25).map(async (id) => {
      const r = await api('GET', '/api/v1/events/' + encodeURIComponent(id));
      if (r.status === 200 && r.body && typeof r.body.event === 'string') state.events.set(id, r.body.event);
    }));
  }

  async function loadEventTypes() {
    if (state.eventTypesLoaded) return;
    try {
      const r = await api('GET', '/api/v1/event-types');
      if (r.status !== 200 || !r.body || !Array.isArray(r.body.data)) return;
      const select = $('tester-event');
      const chosen = select.value;
      replace(select, r.body.data.map((t) => el('option', {value: t.name, text: t.name, title: t.description || ''})));
      if (chosen) select.value = chosen;
      state.eventTypesLoaded = true;
    } catch (_) { /* tried again at the next sign-in */ }
  }

  // ---------------------------------------------------------------- render

  function renderAll() {
    renderKpis();
    renderChart();
    renderAlerts();
    renderWebhooks();
    renderFailed();
  }

  function kpi(id, value, sub, kind) {
    const v = $(id);
    v.textContent = value;
    v.className = 'kpi-value' + (kind ? ' ' + kind : '');
    $(id + '-sub').textContent = sub || '';
  }

  function renderKpis() {
    const s = state.stats;
    if (!s || s.error) {
      const text = s && s.error ? 'error' : 'not available';
      const sub = s && s.error ? s.error : 'this server has no /api/v1/stats';
      for (const id of ['kpi-deliveries', 'kpi-rate', 'kpi-latency', 'kpi-queue']) kpi(id, text, sub, 'na');
      return;
    }
    const h = s.last_hour || {};
    kpi('kpi-deliveries', count(h.attempts),
      count(h.succeeded) + ' ok · ' + count(h.failed) + ' failed · ' + count(h.retries) + ' retries');
    const rate = h.success_rate;
    const rateKind = rate === null || rate === undefined ? '' : rate >= 0.99 ? 'good' : rate >= 0.9 ? 'warn' : 'bad';
    const day = s.last_day || {};
    kpi('kpi-rate', pct(rate), 'last day ' + pct(day.success_rate) + (h.timeouts ? ' · ' + count(h.timeouts) + ' timeouts' : ''), rateKind);
    const rt = h.response_time_ms || {};
    kpi('kpi-latency', ms(rt.p50), 'p95 ' + ms(rt.p95) + ' · p99 ' + ms(rt.p99));
    const q = s.queue || {};
    const age = q.oldest_pending_age_s;
    kpi('kpi-queue', count(q.pending) + ' pending',
      'oldest ' + (age === null || age === undefined ? '–' : duration(age)) +
      (q.held ? ' · ' + count(q.held) + ' held' : '') + (q.delivering ? ' · ' + count(q.delivering) + ' in flight' : ''),
      age > 300 ? 'warn' : '');
  }

  let lastChartWidth = 0;
  function renderChart() {
    const box = $('chart');
    const s = state.stats;
    if (!s || s.error) {
      box.dataset.state = 'na';
      replace(box, placeholder(s && s.error ? s.error : 'Delivery history is not available on this server.', 'na'));
      return;
    }
    const buckets = (s.series && Array.isArray(s.series[state.range])) ? s.series[state.range] : [];
    box.dataset.state = 'data';
    const width = Math.max(260, Math.floor(box.clientWidth || 600));
    lastChartWidth = width;
    replace(box, drawChart(buckets, width, state.range));
  }

  // A y-axis top that splits into four round steps (4, 8, 12, 60, 100, ...).
  function niceMax(value) {
    const quarter = Math.max(1, value / 4);
    const exp = Math.pow(10, Math.floor(Math.log10(quarter)));
    for (const step of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
      const s = step * exp;
      if (quarter <= s && Number.isInteger(s)) return s * 4;
    }
    return 40 * exp;
  }

  function drawChart(buckets, width, range) {
    const height = width < 480 ? 170 : 210;
    const pad = {top: 10, right: 6, bottom: 24, left: 38};
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const total = buckets.map((b) => (Number(b.succeeded) || 0) + (Number(b.failed) || 0));
    const max = niceMax(Math.max(0, ...total));
    const y = (v) => pad.top + plotH - (v / max) * plotH;
    const root = svg('svg', {
      class: 'chart-svg', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
      'aria-label': (range === 'minutes' ? 'Deliveries per minute, last hour' : 'Deliveries per hour, last day'),
    });
    for (let i = 0; i <= 4; i++) {
      const v = (max / 4) * i;
      const yy = Math.round(y(v)) + 0.5;
      root.append(svg('line', {class: i === 0 ? 'axis' : 'grid', x1: pad.left, x2: width - pad.right, y1: yy, y2: yy}));
      root.append(svg('text', {class: 'tick', x: pad.left - 6, y: yy + 4, 'text-anchor': 'end', text: count(v)}));
    }
    const n = Math.max(buckets.length, 1);
    const slot = plotW / n;
    const barW = Math.max(1, slot * (n > 30 ? 0.72 : 0.6));
    const labelEvery = range === 'minutes' ? (width < 480 ? 20 : 10) : (width < 480 ? 8 : 4);
    buckets.forEach((b, i) => {
      const ok = Number(b.succeeded) || 0;
      const bad = Number(b.failed) || 0;
      const x = pad.left + i * slot + (slot - barW) / 2;
      const g = svg('g', {class: 'bucket'});
      g.append(svg('title', {text: `${clock(b.at, range === 'hours')}: ${ok} succeeded, ${bad} failed`}));
      g.append(svg('rect', {class: 'hit', x: pad.left + i * slot, y: pad.top, width: slot, height: plotH}));
      if (ok > 0) g.append(svg('rect', {class: 'bar ok', x, width: barW, y: y(ok), height: Math.max(1, y(0) - y(ok))}));
      if (bad > 0) g.append(svg('rect', {class: 'bar bad', x, width: barW, y: y(ok + bad), height: Math.max(1, y(ok) - y(ok + bad))}));
      root.append(g);
      if (i % labelEvery === 0 && b.at) {
        root.append(svg('text', {class: 'tick', x: x + barW / 2, y: height - 6, 'text-anchor': 'middle', text: clock(b.at, false)}));
      }
    });
    if (total.every((t) => t === 0)) {
      root.append(svg('text', {class: 'empty', x: pad.left + plotW / 2, y: pad.top + plotH / 2, 'text-anchor': 'middle',
        text: 'No deliveries in this period'}));
    }
    return root;
  }

  function renderAlerts() {
    const box = $('alerts');
    const alerts = state.alerts;
    const countBox = $('alerts-count');
    countBox.textContent = '';
    if (alerts === null) {
      box.dataset.state = 'na';
      replace(box, placeholder('Alerts are not available on this server.', 'na'));
      return;
    }
    if (!Array.isArray(alerts)) {
      box.dataset.state = 'error';
      replace(box, placeholder(alerts && alerts.error ? alerts.error : 'Loading…', 'bad'));
      return;
    }
    box.dataset.state = 'data';
    countBox.textContent = alerts.length ? String(alerts.length) : '';
    countBox.className = 'count' + (alerts.length ? ' alarm' : '');
    if (!alerts.length) {
      replace(box, placeholder('No open alerts. All quiet.', 'good'));
      return;
    }
    replace(box, el('ul', {class: 'alerts'}, alerts.map((a) => el('li', {class: 'alert'},
      el('div', {class: 'alert-head'},
        badge(capital(String(a.rule || 'alert').replace(/_/g, ' ')), 'bad'),
        el('span', {class: 'muted small'}, 'opened ', when(a.opened_at))),
      el('div', {class: 'alert-title', text: a.title || ''}),
      a.message ? el('div', {class: 'alert-message', text: a.message}) : null,
      a.last_error ? el('code', {class: 'alert-error', text: a.last_error}) : null,
    ))));
  }

  function webhookById(id) {
    return state.webhooks.find((w) => w.id === id);
  }

  function renderWebhooks() {
    const box = $('webhooks');
    $('webhooks-count').textContent = state.webhooks.length ? String(state.webhooks.length) + (state.webhooksMore ? '+' : '') : '';
    if (state.webhooksError) {
      replace(box, placeholder(state.webhooksError, 'bad'));
      return;
    }
    if (!state.webhooks.length) {
      replace(box, placeholder('No webhooks yet. Register one with POST /api/v1/webhooks.'));
      return;
    }
    replace(box, el('ul', {class: 'rows webhooks'}, state.webhooks.map((w) => {
      const st = state.webhookStats.get(w.id);
      const day = st && st.last_day;
      const rate = day ? day.success_rate : null;
      const rateKind = rate === null || rate === undefined ? '' : rate >= 0.99 ? 'good' : rate >= 0.9 ? 'warn' : 'bad';
      let rateNode;
      if (state.stats === null || st === null || st === undefined) {
        rateNode = el('span', {class: 'rate na', text: 'not available', title: 'Success rate needs /api/v1/webhooks/{id}/stats'});
      } else if (rate === null || rate === undefined) {
        rateNode = el('span', {class: 'rate', text: 'no attempts', title: 'No attempts in the last day'});
      } else {
        rateNode = el('span', {class: 'rate ' + rateKind, title: `${count(day.succeeded)} of ${count(day.attempts)} attempts succeeded in the last day`},
          el('span', {class: 'rate-value', text: pct(rate)}),
          el('span', {class: 'meter', 'aria-hidden': 'true'}, meterFill(rate, rateKind)));
      }
      const queue = st && st.queue;
      return el('li', {class: 'row webhook', 'data-id': w.id},
        el('div', {class: 'row-main'},
          el('div', {class: 'url', text: w.url}),
          w.description ? el('div', {class: 'muted small', text: w.description}) : null,
          el('div', {class: 'chips'}, (Array.isArray(w.events) ? w.events : []).map((e) => el('span', {class: 'chip', text: e}))),
          w.ordering_key
            ? el('div', {class: 'muted small', text: 'In order per ' + w.ordering_key})
            : null,
          Array.isArray(w.filter) && w.filter.length
            ? el('div', {class: 'muted small', text: 'Only when ' + w.filter.map(filterText).join(' and ')})
            : null,
          Array.isArray(w.header_names) && w.header_names.length
            ? el('div', {class: 'muted small', text: 'Sends ' + w.header_names.join(', '), title: 'Custom headers (values are shown to admins at /api/v1/webhooks/{id}/headers)'})
            : null,
          el('div', {class: 'muted tiny mono', text: w.id})),
        el('div', {class: 'row-side'},
          w.enabled
            ? badge('Enabled', 'good')
            : badge('Disabled', 'bad'),
          !w.enabled ? el('div', {class: 'reason', text: w.disabled_reason || 'disabled by an operator'}) : null,
          el('div', {class: 'stat'}, el('span', {class: 'stat-label', text: 'Success, 24 h'}), rateNode),
          queue && queue.pending ? el('div', {class: 'muted small', text: `${count(queue.pending)} pending · oldest ${duration(queue.oldest_pending_age_s)}`}) : null));
    })));
  }

  // One condition of a webhook's content filter, as words.
  function filterText(c) {
    if ('eq' in c) return `${c.path} = ${JSON.stringify(c.eq)}`;
    if ('in' in c) return `${c.path} in ${JSON.stringify(c.in)}`;
    if ('prefix' in c) return `${c.path} starts with ${JSON.stringify(c.prefix)}`;
    if ('exists' in c) return c.exists ? `${c.path} is set` : `${c.path} is not set`;
    return c.path;
  }

  // A meter fill whose width is set through the CSSOM (allowed by the CSP,
  // unlike a style attribute).
  function meterFill(rate, kind) {
    const fill = el('span', {class: 'meter-fill ' + kind});
    fill.style.width = Math.max(0, Math.min(100, rate * 100)).toFixed(1) + '%';
    return fill;
  }

  // Failed deliveries, with the retried ones (whatever their state now) on top.
  function shownDeliveries() {
    const byId = new Map();
    for (const id of state.pinned) {
      const d = state.details.get(id);
      if (d) byId.set(id, d);
    }
    for (const d of state.failed) if (!byId.has(d.id)) byId.set(d.id, d);
    return [...byId.values()];
  }

  const STATUS_KIND = {succeeded: 'good', failed: 'bad', pending: 'warn', delivering: 'warn', cancelled: 'neutral'};

  function renderFailed() {
    const box = $('failed');
    const list = shownDeliveries();
    const failedCount = state.failed.length;
    $('failed-count').textContent = failedCount ? String(failedCount) + (state.failedMore ? '+' : '') : '';
    $('failed-count').className = 'count' + (failedCount ? ' alarm' : '');
    if (state.failedError) {
      replace(box, placeholder(state.failedError, 'bad'));
      return;
    }
    if (!list.length) {
      replace(box, placeholder('No failed deliveries.', 'good'));
      return;
    }
    replace(box, el('ul', {class: 'rows deliveries'}, list.map(deliveryRow)));
  }

  function deliveryRow(d) {
    const w = webhookById(d.webhook_id);
    const detail = state.details.get(d.id);
    const current = detail || d;
    const type = state.events.get(d.event_id);
    const open = state.expanded.has(d.id);
    const details = el('details', {class: 'delivery', 'data-id': d.id, 'data-status': current.status, open});
    details.addEventListener('toggle', () => {
      if (details.open) {
        state.expanded.add(d.id);
        if (!state.details.has(d.id)) loadDelivery(d.id).then(renderFailed).catch(() => {});
      } else {
        state.expanded.delete(d.id);
      }
    });
    const last = current.last_status_code ? 'HTTP ' + current.last_status_code : (current.last_error || 'no answer');
    details.append(el('summary', {},
      el('div', {class: 'summary-main'},
        el('div', {class: 'summary-line'},
          badge(capital(current.status), STATUS_KIND[current.status] || 'neutral'),
          state.pinned.has(d.id) ? badge('Retried', 'info') : null,
          el('span', {class: 'event-type', text: type || 'event'}),
          el('span', {class: 'muted small'}, '· ', when(current.updated_at))),
        el('div', {class: 'url small', text: w ? w.url : current.webhook_id}),
        el('div', {class: 'muted small'},
          `${current.attempts} attempt${current.attempts === 1 ? '' : 's'} · last: ${last}`)),
      el('span', {class: 'chevron', 'aria-hidden': 'true'})));

    const body = el('div', {class: 'delivery-body'});
    const actions = el('div', {class: 'actions'});
    if (state.canWrite === true && current.status === 'failed') {
      const busy = state.retrying.has(d.id);
      actions.append(el('button', {
        type: 'button', class: 'btn btn-primary btn-small retry', 'data-id': d.id, disabled: busy,
        text: busy ? 'Retrying…' : 'Retry now', onclick: () => retry(d.id),
      }));
    }
    actions.append(el('span', {class: 'muted tiny mono', text: d.id + ' · ' + d.event_id}));
    body.append(actions);
    if (!detail) {
      body.append(placeholder('Loading the attempt log…'));
    } else {
      const log = Array.isArray(detail.attempt_log) ? detail.attempt_log : [];
      if (!log.length) body.append(placeholder('No attempts yet.'));
      else body.append(el('ol', {class: 'attempts'}, log.slice().reverse().map(attemptRow)));
    }
    details.append(body);
    return el('li', {class: 'row'}, details);
  }

  function attemptRow(a) {
    const ok = a.status_code >= 200 && a.status_code < 300 && !a.error_kind;
    const outcome = a.status_code ? 'HTTP ' + a.status_code : (a.error_kind || 'no answer');
    return el('li', {class: 'attempt ' + (ok ? 'ok' : 'bad'), 'data-number': a.number},
      el('div', {class: 'attempt-line'},
        el('span', {class: 'attempt-number', text: '#' + a.number}),
        badge(outcome, ok ? 'good' : 'bad'),
        a.error_kind && a.error_kind !== 'http_status' ? el('span', {class: 'muted small', text: a.error_kind}) : null,
        el('span', {class: 'muted small'}, ms(a.duration_ms), ' · ', when(a.started_at))),
      a.response_body ? el('pre', {class: 'response', text: a.response_body}) : null);
  }

  // ---------------------------------------------------------------- retry

  async function retry(id) {
    if (state.retrying.has(id)) return;
    state.retrying.add(id);
    renderFailed();
    const before = state.details.get(id);
    const beforeAttempts = before ? before.attempts : -1;
    try {
      const r = await api('POST', '/api/v1/deliveries/' + encodeURIComponent(id) + '/retry');
      if (r.status === 403) {
        forbidWrites();
        showNotice('action', 'This token is read-only: it cannot retry deliveries.');
        return;
      }
      if (r.status !== 202) {
        showNotice('action', errorMessage(r, 'Retry failed'));
        return;
      }
      hideNotice('action');
      state.pinned.add(id);
      state.expanded.add(id);
      // Watch this one closely until its new attempt is recorded.
      const until = Date.now() + FAST_POLL_FOR_MS;
      while (state.token && Date.now() < until) {
        const g = await loadDelivery(id);
        const d = state.details.get(id);
        renderFailed();
        if (g.status !== 200) break;
        if (d && d.attempts > beforeAttempts && d.status !== 'pending' && d.status !== 'delivering') break;
        await new Promise((resolve) => setTimeout(resolve, FAST_POLL_MS));
      }
    } catch (e) {
      if (!(e instanceof Unauthorized)) showNotice('action', 'Retry failed: ' + e.message);
    } finally {
      state.retrying.delete(id);
      if (state.token) {
        renderFailed();
        refresh();
      }
    }
  }

  // ---------------------------------------------------------------- tester

  function renderTesterAccess() {
    const readOnly = state.canWrite === false;
    $('tester-form').hidden = readOnly;
    $('tester-readonly').hidden = !readOnly;
  }

  async function runTest(event) {
    event.preventDefault();
    const form = $('tester-form');
    const error = $('tester-error');
    const button = $('tester-submit');
    error.textContent = '';
    const url = $('tester-url').value.trim();
    const eventName = $('tester-event').value;
    if (!url) {
      error.textContent = 'Enter the receiver URL.';
      $('tester-url').focus();
      return;
    }
    const body = {event: eventName, url};
    const secret = $('tester-secret').value.trim();
    if (secret) body.secret = secret;
    const checks = [...form.querySelectorAll('.checks input:checked')].map((c) => c.value);
    if (checks.length) body.checks = checks;
    button.disabled = true;
    button.textContent = 'Sending…';
    try {
      const r = await api('POST', '/api/v1/webhooks/test', body);
      if (r.status === 403) {
        forbidWrites();
        return;
      }
      if (r.status !== 200 || !r.body) {
        error.textContent = errorMessage(r, 'The test could not run');
        return;
      }
      renderReport(r.body);
    } catch (e) {
      if (!(e instanceof Unauthorized)) error.textContent = 'The test could not run: ' + e.message;
    } finally {
      button.disabled = false;
      button.textContent = 'Send test';
    }
  }

  function renderReport(report) {
    const checks = Array.isArray(report.checks) ? report.checks : [];
    const passed = checks.filter((c) => c.passed).length;
    const answer = report.status ? 'HTTP ' + report.status : (report.error_kind || 'no answer');
    replace($('tester-report'), el('div', {class: 'report ' + (report.ok ? 'ok' : 'bad'), 'data-ok': String(Boolean(report.ok))},
      el('div', {class: 'report-head'},
        badge(report.ok ? 'All checks passed' : `${checks.length - passed} of ${checks.length} checks failed`, report.ok ? 'good' : 'bad'),
        el('span', {class: 'muted small', text: `${answer} in ${ms(report.response_time_ms)}`})),
      el('ul', {class: 'checklist'}, checks.map((c) => el('li', {class: 'check ' + (c.passed ? 'pass' : 'fail'), 'data-name': c.name},
        el('span', {class: 'check-icon', 'aria-hidden': 'true', text: c.passed ? '✓' : '✕'}),
        el('div', {},
          el('div', {class: 'check-name'}, el('span', {text: String(c.name).replace(/_/g, ' ')}),
            el('span', {class: 'sr', text: c.passed ? ' passed' : ' failed'}),
            el('span', {class: 'check-verdict', text: c.passed ? 'pass' : 'fail'})),
          el('div', {class: 'check-detail', text: c.detail || ''}))))),
      report.secret ? el('div', {class: 'small'}, el('span', {class: 'muted', text: 'Signed with '}), el('code', {class: 'secret', text: report.secret})) : null,
      report.signing_secret && report.signing_secret !== report.secret ? el('div', {class: 'small'},
        el('span', {class: 'muted', text: 'For Standard Webhooks libraries (standardwebhooks, svix): '}),
        el('code', {class: 'secret', 'data-name': 'signing_secret', text: report.signing_secret})) : null,
      report.response_body ? el('details', {class: 'response-details'},
        el('summary', {text: 'Response body'}), el('pre', {class: 'response', text: report.response_body})) : null));
  }

  // ---------------------------------------------------------------- start

  function start() {
    $('signin-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const token = $('token').value.trim();
      if (!token) {
        $('signin-error').textContent = 'Paste a token first.';
        return;
      }
      $('signin-error').textContent = '';
      signIn(token);
    });
    $('signout').addEventListener('click', () => signOut(''));
    $('tester-form').addEventListener('submit', runTest);
    for (const b of document.querySelectorAll('.segmented button')) {
      b.addEventListener('click', () => {
        state.range = b.dataset.range;
        for (const o of document.querySelectorAll('.segmented button')) o.setAttribute('aria-pressed', String(o === b));
        renderChart();
      });
    }
    let resizeTimer = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        const w = Math.floor($('chart').clientWidth);
        if (state.token && state.stats && Math.abs(w - lastChartWidth) > 2) renderChart();
      }, 150);
    });
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && state.token) refresh();
    });
    loadHealth();
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
    else showSignIn('');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
