// Pincer's operator console. Plain JavaScript, no framework, no build step.
//
// It speaks the gateway's own WebSocket protocol (`connect` with the token,
// then `channels.status`, `plugins.list`, `channels.pairing.*`,
// `webhooks.*`, and the gateway's events) and its HTTP API (`/readyz`,
// `PUT /v1/plugins/{name}` for uploads), like any other client. The token
// comes from the URL fragment (`/console#token=…`, removed from the address
// bar at once) or the login form, and is kept in sessionStorage only.
// Everything the gateway sends is put on the page with textContent, never
// as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'pincer.console.token';
  const FEED_MAX = 200;
  const SCOPES = ['operator.admin', 'operator.read', 'operator.write', 'operator.pairing'];

  const $ = (id) => document.getElementById(id);

  let ws = null;
  let nextId = 1;
  const pending = new Map();
  let token = null;
  let connected = false;
  let loggedOut = false;
  let retryMs = 1000;
  let timers = [];
  let openDeliveries = null; // webhook endpoint whose deliveries are shown
  const debounced = new Map();

  // ---------- small helpers ----------

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function fmtTime(ms) {
    if (!ms) return '—';
    const d = new Date(Number(ms));
    if (Number.isNaN(d.getTime())) return '—';
    return d.toISOString().replace('T', ' ').slice(0, 19) + 'Z';
  }

  function timeEl(ms) {
    return ms ? el('time', { datetime: new Date(Number(ms)).toISOString(), text: fmtTime(ms) }) : '—';
  }

  function setError(id, err) {
    $(id).textContent = err ? String(err.message ?? err) : '';
  }

  // Run `fn` once, `ms` after the last of a burst of calls.
  function soon(key, fn, ms = 150) {
    clearTimeout(debounced.get(key));
    debounced.set(key, setTimeout(fn, ms));
  }

  // ---------- the protocol ----------

  function call(method, params = {}) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(new Error('not connected to the gateway'));
        return;
      }
      const id = `c${nextId++}`;
      pending.set(id, { resolve, reject, method });
      ws.send(JSON.stringify({ type: 'req', id, method, params }));
    });
  }

  function connect() {
    if (!token) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/`);
    ws = socket;
    let answered = false;
    socket.addEventListener('message', (m) => {
      let v;
      try {
        v = JSON.parse(m.data);
      } catch {
        return;
      }
      if (v.type === 'event' && v.event === 'connect.challenge') {
        const id = `c${nextId++}`;
        pending.set(id, {
          method: 'connect',
          resolve: () => {
            answered = true;
            onConnected();
          },
          reject: (e) => {
            answered = true;
            onLoginFailed(e);
          },
        });
        socket.send(
          JSON.stringify({
            type: 'req',
            id,
            method: 'connect',
            params: {
              minProtocol: 3,
              maxProtocol: 4,
              client: { id: 'gateway-client', displayName: 'Pincer console', version: '1', platform: 'web', mode: 'ui' },
              role: 'operator',
              scopes: SCOPES,
              caps: [],
              auth: { token },
            },
          }),
        );
      } else if (v.type === 'res') {
        const p = pending.get(v.id);
        if (!p) return;
        pending.delete(v.id);
        if (v.ok) p.resolve(v.payload);
        else p.reject(new Error(v.error?.message ?? `${p.method} failed`));
      } else if (v.type === 'event') {
        onEvent(v.event, v.payload ?? {});
      }
    });
    socket.addEventListener('close', (e) => {
      if (ws !== socket) return;
      for (const p of pending.values()) p.reject(new Error('connection closed'));
      pending.clear();
      const was = connected;
      connected = false;
      stopTimers();
      if (loggedOut) return;
      if (!answered) {
        onLoginFailed(new Error(e.reason || 'could not connect to the gateway'));
        return;
      }
      if (was) {
        setConn(`disconnected (${e.code}); reconnecting…`, 'bad');
        setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 15000);
      }
    });
  }

  function onConnected() {
    connected = true;
    retryMs = 1000;
    setConn('connected', 'ok');
    $('login').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = false;
    setError('login-error', '');
    refreshAll();
    timers.push(setInterval(refreshReadiness, 5000));
    timers.push(setInterval(refreshPairing, 5000));
    // Deliveries have no event: the open list follows along every 5 s.
    timers.push(
      setInterval(() => {
        if (openDeliveries) showDeliveries(openDeliveries);
      }, 5000),
    );
  }

  function onLoginFailed(err) {
    connected = false;
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    if (ws) ws.close();
    ws = null;
    setConn('not connected', 'bad');
    $('app').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = `Login failed: ${err.message}`;
    $('token').focus();
  }

  function stopTimers() {
    for (const t of timers) clearInterval(t);
    timers = [];
  }

  function setConn(text, cls) {
    const c = $('conn');
    c.textContent = text;
    c.className = `badge ${cls ?? ''}`;
  }

  function refreshAll() {
    refreshReadiness();
    refreshChannels();
    refreshPlugins();
    refreshPairing();
    refreshWebhooks();
  }

  // ---------- readiness (/readyz) ----------

  async function refreshReadiness() {
    const badge = $('ready');
    const dl = $('readiness-detail');
    try {
      const r = await fetch('/readyz', { cache: 'no-store' });
      const v = await r.json();
      badge.textContent = v.ready ? 'ready' : `not ready${v.reason ? `: ${v.reason}` : ''}`;
      badge.className = `badge ${v.ready ? 'ok' : 'bad'}`;
      dl.replaceChildren();
      for (const [k, val] of Object.entries(v)) {
        dl.append(el('dt', { text: k }), el('dd', { text: typeof val === 'object' ? JSON.stringify(val) : String(val) }));
      }
    } catch (e) {
      badge.textContent = `readiness unknown (${e.message})`;
      badge.className = 'badge bad';
    }
  }

  // ---------- channels ----------

  function stateCell(row) {
    const state = row.state ?? (row.running ? 'running' : 'stopped');
    const label = state === 'gave-up' ? 'gave up' : state;
    const td = el('td', { 'data-state': state }, el('span', { class: `state state-${state}`, text: label }));
    if (state === 'gave-up') {
      td.append(el('span', { class: 'hint', text: 'restart limit reached: the monitor stopped retrying; press Restart to try again' }));
    }
    if (state === 'unconfigured' || row.configured === false) {
      const missing = [];
      if (row.missingSecrets?.length) missing.push(`missing secrets: ${row.missingSecrets.join(', ')}`);
      if (row.webhook?.problem) missing.push(row.webhook.problem);
      if (missing.length === 0) missing.push('configuration incomplete');
      td.append(el('span', { class: 'hint', text: missing.join('; ') }));
    }
    return td;
  }

  async function channelAction(action, channel, accountId) {
    setError('channels-error', '');
    const params = { channel };
    if (accountId && accountId !== 'default') params.accountId = accountId;
    try {
      await call(`channels.${action}`, params);
    } catch (e) {
      setError('channels-error', new Error(`${action} ${channel}: ${e.message}`));
    }
    refreshChannels();
  }

  async function refreshChannels() {
    let v;
    try {
      v = await call('channels.status');
    } catch (e) {
      setError('channels-error', e);
      return;
    }
    const order = v.channelOrder ?? Object.keys(v.channels ?? {});
    const accounts = v.channelAccounts ?? {};
    // An account column only when some channel has more than its one
    // default account.
    const multi = order.some((n) => {
      const a = accounts[n] ?? [];
      return a.length > 1 || a.some((x) => x.accountId && x.accountId !== 'default');
    });
    for (const th of document.querySelectorAll('.account-col')) th.hidden = !multi;
    const tbody = $('channel-rows');
    tbody.replaceChildren();
    for (const name of order) {
      const rows = multi && accounts[name]?.length ? accounts[name] : [{ ...v.channels[name], accountId: null }];
      for (const row of rows) {
        const who = row.accountId && row.accountId !== 'default' ? `${name} (${row.accountId})` : name;
        const btn = (action, label) =>
          el('button', {
            type: 'button',
            'data-action': action,
            'aria-label': `${label} ${who}`,
            text: label,
            onclick: (ev) => {
              ev.currentTarget.disabled = true;
              channelAction(action, name, row.accountId);
            },
          });
        tbody.append(
          el(
            'tr',
            { 'data-channel': name, 'data-account': row.accountId ?? undefined },
            el('th', { scope: 'row', text: name }),
            multi ? el('td', { text: row.accountId ?? '' }) : null,
            stateCell(row),
            el('td', {}, timeEl(row.lastActivityAt)),
            el('td', {
              'data-restarts': row.restartsTotal ?? row.restarts ?? 0,
              title: `${row.restarts ?? 0} in the current window`,
              text: String(row.restartsTotal ?? row.restarts ?? 0),
            }),
            el('td', { class: 'error-text', text: row.lastError ?? '' }),
            el('td', {}, btn('start', 'Start'), btn('stop', 'Stop'), btn('restart', 'Restart')),
          ),
        );
      }
    }
  }

  // ---------- pairing ----------

  async function pairingAction(action, r) {
    setError('pairing-error', '');
    try {
      await call(`channels.pairing.${action}`, { channel: r.channel, accountId: r.accountId, code: r.code });
    } catch (e) {
      setError('pairing-error', new Error(`${action} ${r.sender} on ${r.channel}: ${e.message}`));
    }
    refreshPairing();
  }

  async function refreshPairing() {
    let v;
    try {
      v = await call('channels.pairing.list');
    } catch (e) {
      setError('pairing-error', e);
      return;
    }
    const reqs = v.requests ?? [];
    const tbody = $('pairing-rows');
    tbody.replaceChildren();
    for (const r of reqs) {
      const who = r.senderName ? `${r.senderName} (${r.sender})` : r.sender;
      tbody.append(
        el(
          'tr',
          { 'data-code': r.code, 'data-channel': r.channel, 'data-sender': r.sender },
          el('td', { text: r.channel }),
          el('td', { text: r.accountId ?? 'default' }),
          el('th', { scope: 'row', text: who }),
          el('td', {}, el('code', { text: r.code })),
          el('td', {}, timeEl(r.createdAt)),
          el(
            'td',
            {},
            el('button', {
              type: 'button',
              'data-action': 'approve',
              'aria-label': `Approve ${who} on ${r.channel}`,
              text: 'Approve',
              onclick: (ev) => {
                ev.currentTarget.disabled = true;
                pairingAction('approve', r);
              },
            }),
            el('button', {
              type: 'button',
              'data-action': 'dismiss',
              'aria-label': `Dismiss ${who} on ${r.channel}`,
              text: 'Dismiss',
              onclick: (ev) => {
                ev.currentTarget.disabled = true;
                pairingAction('dismiss', r);
              },
            }),
          ),
        ),
      );
    }
    $('pairing-empty').hidden = reqs.length > 0;
  }

  // ---------- plugins ----------

  async function refreshPlugins() {
    let v;
    try {
      v = await call('plugins.list');
    } catch (e) {
      setUpload('failed', `plugins.list: ${e.message}`);
      return;
    }
    const tbody = $('plugin-rows');
    tbody.replaceChildren();
    for (const p of v.plugins ?? []) {
      tbody.append(
        el(
          'tr',
          { 'data-plugin': p.name, 'data-state': p.state },
          el('th', { scope: 'row', text: p.name }),
          el('td', { text: p.kind ?? '—' }),
          el('td', { text: p.version ?? '—' }),
          el('td', {}, el('span', { class: `state state-${p.state === 'loaded' ? 'running' : 'failed'}`, text: p.state })),
          el('td', {}, timeEl(p.loaded_at_ms)),
          el('td', { class: 'error-text', text: p.last_error ?? '' }),
        ),
      );
    }
  }

  let uploading = null; // name of the plugin whose load result is awaited

  // The upload status line; `outcome` (sending, loading, loaded, failed,
  // refused) is also set as `data-outcome` for scripts and tests.
  function setUpload(outcome, text) {
    const status = $('upload-status');
    status.dataset.outcome = outcome;
    status.textContent = text;
  }

  async function upload(ev) {
    ev.preventDefault();
    const file = $('upload-file').files[0];
    const name = $('upload-name').value.trim();
    if (!file || !name) {
      setUpload('refused', 'Choose a .wasm file and a plugin name.');
      return;
    }
    setUpload('sending', `Uploading ${name}…`);
    try {
      const r = await fetch(`/v1/plugins/${encodeURIComponent(name)}`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/wasm' },
        body: file,
      });
      const v = await r.json().catch(() => ({}));
      if (!r.ok) {
        setUpload('refused', `Upload refused (${r.status}): ${v.error?.message ?? r.statusText}`);
        return;
      }
      uploading = name;
      setUpload('loading', `Uploaded ${name} (${v.bytes} bytes); waiting for the gateway to load it…`);
    } catch (e) {
      setUpload('refused', `Upload failed: ${e.message}`);
    }
  }

  function suggestName() {
    const file = $('upload-file').files[0];
    if (!file) return;
    const stem = file.name.replace(/\.wasm$/i, '').replace(/[^A-Za-z0-9_-]/g, '-').replace(/^[^A-Za-z0-9]+/, '');
    if (!$('upload-name').value) $('upload-name').value = stem.slice(0, 64);
  }

  // ---------- webhooks ----------

  async function refreshWebhooks() {
    let v;
    try {
      v = await call('webhooks.list');
    } catch (e) {
      setError('webhooks-error', e);
      return;
    }
    const list = v.webhooks ?? [];
    const tbody = $('webhook-rows');
    tbody.replaceChildren();
    for (const w of list) {
      tbody.append(
        el(
          'tr',
          { 'data-webhook': w.id },
          el('th', { scope: 'row' }, el('code', { text: w.id })),
          el('td', { text: w.url }),
          el('td', { text: (w.events ?? []).join(', ') }),
          el('td', { text: w.enabled ? 'yes' : 'no' }),
          el('td', {}, timeEl(w.failingSinceMs)),
          el(
            'td',
            {},
            el('button', {
              type: 'button',
              'aria-label': `Show deliveries of ${w.url}`,
              text: 'Show deliveries',
              onclick: () => showDeliveries(w.id),
            }),
          ),
        ),
      );
    }
    $('webhooks-empty').hidden = list.length > 0;
    if (openDeliveries) showDeliveries(openDeliveries);
  }

  async function showDeliveries(id) {
    openDeliveries = id;
    let v;
    try {
      v = await call('webhooks.deliveries', { id, limit: 20 });
    } catch (e) {
      setError('webhooks-error', e);
      return;
    }
    $('deliveries').hidden = false;
    $('deliveries-title').textContent = `Recent deliveries of ${id}`;
    const tbody = $('delivery-rows');
    tbody.replaceChildren();
    for (const d of v.deliveries ?? []) {
      const attempts = el('ul', { class: 'attempts' });
      for (const a of d.attempts ?? []) {
        attempts.append(
          el('li', {
            text: `#${a.attempt} ${fmtTime(a.tsMs)} ${a.status ?? 'no answer'} ${a.latencyMs} ms${a.error ? ` — ${a.error}` : ''}`,
          }),
        );
      }
      tbody.append(
        el(
          'tr',
          { 'data-delivery': d.id, 'data-status': d.status, 'data-attempts': d.attemptCount ?? 0 },
          el('th', { scope: 'row', text: String(d.id) }),
          el('td', { text: d.kind }),
          el('td', { text: d.status }),
          el('td', {}, timeEl(d.createdMs)),
          el('td', {}, `${d.attemptCount ?? 0}`, attempts),
          el(
            'td',
            {},
            el('button', {
              type: 'button',
              'aria-label': `Replay delivery ${d.id}`,
              text: 'Replay',
              onclick: async (ev) => {
                ev.currentTarget.disabled = true;
                setError('webhooks-error', '');
                try {
                  await call('webhooks.replay', { id, deliveryId: d.id });
                } catch (e) {
                  setError('webhooks-error', new Error(`replay ${d.id}: ${e.message}`));
                }
                showDeliveries(id);
              },
            }),
          ),
        ),
      );
    }
  }

  // ---------- the live feed ----------

  function summary(name, p) {
    if (name === 'health') {
      const ch = p.channels && typeof p.channels === 'object' ? Object.keys(p.channels).length : 0;
      return `ok=${p.ok ?? '?'} channels=${ch}`;
    }
    if (name.startsWith('channel.')) {
      const parts = [`channel ${p.channel}`];
      if (p.from || p.to) parts.push(`${p.from ?? '?'} → ${p.to ?? '?'}`);
      if (p.reason) parts.push(p.reason);
      if (p.manual) parts.push('by an operator');
      return parts.join(': ');
    }
    if (name.startsWith('plugin.')) {
      return [`plugin ${p.plugin}`, p.version, p.error].filter(Boolean).join(': ');
    }
    const s = JSON.stringify(p);
    return s.length > 300 ? `${s.slice(0, 300)}…` : s;
  }

  function onEvent(name, payload) {
    if (name === 'tick') return;
    const feed = $('feed');
    feed.prepend(
      el(
        'li',
        { 'data-event': name, 'data-channel': payload.channel, 'data-plugin': payload.plugin },
        el('time', { text: fmtTime(payload.ts ?? Date.now()) }),
        el('span', { class: 'name', text: name }),
        summary(name, payload),
      ),
    );
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();

    if (name === 'health' || name.startsWith('channel.')) {
      soon('channels', refreshChannels);
      soon('readiness', refreshReadiness);
    }
    if (name.startsWith('plugin.')) {
      soon('plugins', refreshPlugins);
      soon('channels', refreshChannels);
      if (uploading && payload.plugin === uploading) {
        if (name === 'plugin.failed') setUpload('failed', `${uploading} did not load: ${payload.error}`);
        else if (name === 'plugin.loaded') setUpload('loaded', `${uploading} loaded (version ${payload.version || '?'})`);
        if (name !== 'plugin.unloaded') uploading = null;
      }
    }
  }

  // ---------- start ----------

  function login(t) {
    token = t;
    loggedOut = false;
    sessionStorage.setItem(TOKEN_KEY, t);
    setConn('connecting…');
    connect();
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token').value;
      $('token').value = '';
      setError('login-error', '');
      if (t) login(t);
    });
    $('logout').addEventListener('click', () => {
      loggedOut = true;
      sessionStorage.removeItem(TOKEN_KEY);
      token = null;
      stopTimers();
      if (ws) ws.close();
      ws = null;
      connected = false;
      setConn('logged out');
      $('app').hidden = true;
      $('logout').hidden = true;
      $('login').hidden = false;
    });
    $('pairing-refresh').addEventListener('click', refreshPairing);
    $('webhooks-refresh').addEventListener('click', refreshWebhooks);
    $('upload-form').addEventListener('submit', upload);
    $('upload-file').addEventListener('change', suggestName);

    // `#token=…` in the fragment: take it, then drop it from the address bar
    // and the history.
    const hash = new URLSearchParams(location.hash.slice(1));
    const fromHash = hash.get('token');
    if (fromHash) history.replaceState(null, '', location.pathname + location.search);
    refreshReadiness();
    const t = fromHash || sessionStorage.getItem(TOKEN_KEY);
    if (t) login(t);
    else $('token').focus();
  });
})();
