// Switchyard dashboard: reads the admin API every two seconds and draws services, pools,
// rollouts, certificates and a chart of each service's traffic share per pool. Read-only.
// The token is sent as an Authorization header and kept in this tab's sessionStorage only.
'use strict';

(function () {
  const POLL_MS = 2000;
  const TOKEN_KEY = 'switchyard.token';
  const EVENTS_SHOWN = 15;
  const SVG = 'http://www.w3.org/2000/svg';
  const NAMED_COLOURS = { blue: '#3b82f6', green: '#16a34a', red: '#dc2626', yellow: '#ca8a04' };
  const PALETTE = ['#3b82f6', '#16a34a', '#f59e0b', '#8b5cf6', '#ec4899', '#14b8a6', '#64748b'];

  let token = sessionStorage.getItem(TOKEN_KEY);
  let timer = null;
  let generationOfPage = 0;

  class Refused extends Error {}

  const $ = (id) => document.getElementById(id);

  // An element with attributes (`class`, `data-*`, ...) and children (nodes or text).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  // GET a path of the API (relative: the page may sit under a path prefix). `null` on 404 when
  // `missingOk`; `Refused` on 401.
  async function api(path, missingOk) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const resp = await fetch(path, { headers, cache: 'no-store', credentials: 'omit' });
    if (resp.status === 401) throw new Refused('the admin API refused the token');
    if (resp.status === 404 && missingOk) return null;
    if (!resp.ok) {
      let reason = resp.status + ' ' + resp.statusText;
      try { reason = (await resp.json()).error || reason; } catch (_) { /* not JSON */ }
      throw new Error(path + ': ' + reason);
    }
    return resp.json();
  }

  function setConn(state, text) {
    const c = $('conn');
    c.dataset.state = state;
    c.textContent = text;
  }

  function showLogin(message) {
    clearTimeout(timer);
    timer = null;
    $('app').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    setConn('signed-out', 'signed out');
    $('token').focus();
  }

  function showApp() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = !token;
  }

  // ---- formatting ----

  const pct = (x) => (x * 100).toFixed(x > 0 && x < 0.01 ? 2 : 1) + ' %';
  const ms = (x) => (x === null || x === undefined ? '–' : x < 10 ? x.toFixed(2) + ' ms' : x.toFixed(0) + ' ms');
  const rate = (live) => (live && live.window_seconds > 0 ? live.requests / live.window_seconds : 0);
  const clock = (unixMs) => new Date(unixMs).toLocaleTimeString([], { hour12: false });
  const when = (rfc3339) => new Date(rfc3339).toLocaleString([], { hour12: false });

  function colour(pool, index) {
    return NAMED_COLOURS[pool] || PALETTE[index % PALETTE.length];
  }

  function swatch(fill) {
    return svg('svg', { class: 'swatch', width: 10, height: 10, viewBox: '0 0 10 10', 'aria-hidden': 'true' },
      svg('rect', { width: 10, height: 10, rx: 2, fill }));
  }

  // ---- services and pools ----

  function serverChip(s) {
    let state = 'up';
    let text = 'up';
    if (!s.healthy) { state = 'down'; text = 'down (health check)'; }
    else if (s.ejected) { state = 'ejected'; text = 'ejected (passive check)'; }
    const title = text + (s.backup ? ', backup' : '') + ', ' + s.in_flight + ' in flight'
      + (s.name ? ', ' + s.name : '');
    return el('span', { class: 'server', 'data-state': state, title },
      el('span', { class: 'dot' }), s.address, s.backup ? el('span', { class: 'tag' }, 'backup') : null,
      s.in_flight > 0 ? el('span', { class: 'muted' }, ' ' + s.in_flight + ' in flight') : null);
  }

  function poolsTable(service) {
    const total = service.pools.reduce((a, p) => a + p.weight, 0) || 1;
    const rows = [];
    service.pools.forEach((p, i) => {
      const share = p.weight / total;
      const live = p.live;
      rows.push(el('tr', { class: 'pool', 'data-pool': p.name, 'data-weight': p.weight },
        el('td', { class: 'pool-name' }, swatch(colour(p.name, i)), ' ', p.name),
        el('td', { class: 'weight num' }, String(p.weight),
          p.overridden ? el('span', { class: 'tag', title: 'runtime override; the config says ' + p.config_weight }, 'override') : null),
        el('td', { class: 'share', 'data-share': share.toFixed(3) },
          svg('svg', { class: 'bar', width: 80, height: 8, viewBox: '0 0 80 8', 'aria-hidden': 'true' },
            svg('rect', { class: 'bar-bg', width: 80, height: 8, rx: 2 }),
            svg('rect', { width: (80 * share).toFixed(1), height: 8, rx: 2, fill: colour(p.name, i) })),
          ' ' + pct(share)),
        el('td', { class: 'health num', 'data-healthy': p.healthy_servers },
          p.healthy_servers + '/' + p.servers.length),
        el('td', { class: 'rps num' }, rate(live).toFixed(1)),
        el('td', { class: 'errors num', 'data-bad': live.error_rate > 0.05 ? 'yes' : 'no' },
          live.requests ? pct(live.error_rate) : '–'),
        el('td', { class: 'p99 num' }, ms(live.p99_ms))));
      rows.push(el('tr', { class: 'servers' }, el('td', { colspan: 7 }, p.servers.map(serverChip))));
    });
    const window = service.pools.length ? service.pools[0].live.window_seconds : 0;
    return el('table', { class: 'pools' },
      el('thead', {}, el('tr', {},
        el('th', {}, 'Pool'), el('th', { class: 'num' }, 'Weight'), el('th', {}, 'Share of weight'),
        el('th', { class: 'num' }, 'Healthy'),
        el('th', { class: 'num', title: 'requests over the last ' + window + ' s' }, 'req/s'),
        el('th', { class: 'num' }, 'Errors'), el('th', { class: 'num' }, 'p99'))),
      el('tbody', {}, rows));
  }

  // ---- rollouts ----

  function rolloutPanel(r, events) {
    if (!r) {
      return el('div', { class: 'rollout', 'data-state': 'none' },
        el('h3', {}, 'Rollout'), el('p', { class: 'muted' }, 'No rollout on this service yet.'));
    }
    const active = !r.finished_at;
    const steps = r.steps.map((w, i) => {
      const state = i < r.step || (r.state === 'promoted') ? 'done' : i === r.step && active ? 'current' : 'todo';
      return el('li', { class: 'step', 'data-state': state }, w + ' %');
    });
    const figures = (label, live) => el('div', { class: 'figure' },
      el('span', { class: 'muted' }, label), ' ',
      live.requests + ' req, ' + (live.requests ? pct(live.error_rate) : '–') + ' errors, p99 ' + ms(live.p99_ms));
    const shown = events.slice(-EVENTS_SHOWN).reverse();
    return el('div', { class: 'rollout', 'data-state': r.state, 'data-step': r.step },
      el('h3', {}, (r.kind === 'switch' ? 'Watched switch' : 'Rollout') + ' #' + r.id + ' ',
        el('span', { class: 'state', 'data-state': r.state }, r.state.replace('_', ' '))),
      el('p', {}, 'canary ', el('b', {}, r.canary), ' against stable ', el('b', {}, r.stable),
        ' · canary weight ', el('b', { class: 'canary-weight' }, String(r.canary_weight)),
        ' · step ', el('b', { class: 'step-no' }, (Math.min(r.step, r.steps.length - 1) + 1) + ' of ' + r.steps.length),
        ' · limits: errors ≤ ' + pct(r.max_error_rate) + (r.max_p99_ms ? ', p99 ≤ ' + ms(r.max_p99_ms) : '')),
      el('ol', { class: 'steps' }, steps),
      r.reason ? el('p', { class: 'reason' }, 'reason: ', el('b', {}, r.reason)) : null,
      r.holding ? el('p', { class: 'muted' }, 'holding: ' + r.holding) : null,
      active ? el('div', { class: 'figures' }, figures('canary', r.canary_live), figures('stable', r.stable_live)) : null,
      el('p', { class: 'muted' }, 'started ' + when(r.started_at)
        + (r.finished_at ? ' · finished ' + when(r.finished_at) : '')),
      el('h4', {}, 'Events'),
      shown.length
        ? el('table', { class: 'events' }, el('tbody', {}, shown.map((e) => el('tr', { class: 'event', 'data-event': e.event },
          el('td', { class: 'muted' }, clock(e.time)),
          el('td', {}, el('span', { class: 'state', 'data-state': e.event }, e.event.replace('_', ' '))),
          el('td', { class: 'num' }, e.canary_weight + ' %'),
          el('td', {}, e.message)))))
        : el('p', { class: 'muted' }, 'No events.'));
  }

  // ---- the traffic chart ----

  const W = 720, H = 180, PAD_L = 36, PAD_B = 18, PAD_T = 14;

  // Stacked areas of each pool's share of the requests per sample; a sample without requests
  // leaves a gap. Rollout events are vertical markers.
  function chart(service, traffic, events) {
    const samples = traffic ? traffic.samples : [];
    const pools = service.pools.map((p) => p.name);
    const root = svg('svg', {
      class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-samples': samples.length,
      'aria-label': 'share of requests per pool over the last minutes',
    });
    const plotW = W - PAD_L - 4, plotH = H - PAD_T - PAD_B;
    for (const f of [0, 0.5, 1]) {
      const y = PAD_T + plotH * (1 - f);
      root.append(svg('line', { class: 'grid', x1: PAD_L, x2: W - 4, y1: y, y2: y }));
      root.append(svg('text', { class: 'axis', x: PAD_L - 4, y: y + 4, 'text-anchor': 'end' }, f * 100 + '%'));
    }
    if (!samples.length) {
      root.append(svg('text', { class: 'axis', x: PAD_L + plotW / 2, y: PAD_T + plotH / 2, 'text-anchor': 'middle' },
        'collecting samples…'));
      return root;
    }
    const end = samples[samples.length - 1].time;
    const span = Math.max(60000, end - samples[0].time);
    const start = end - span;
    const x = (t) => PAD_L + plotW * ((t - start) / span);
    const y = (f) => PAD_T + plotH * (1 - f);
    for (let m = 1; m * 60000 <= span; m++) {
      const t = end - m * 60000;
      root.append(svg('line', { class: 'grid', x1: x(t), x2: x(t), y1: PAD_T, y2: PAD_T + plotH }));
      root.append(svg('text', { class: 'axis', x: x(t), y: H - 4, 'text-anchor': 'middle' }, '-' + m + ' min'));
    }
    root.append(svg('text', { class: 'axis', x: W - 4, y: H - 4, 'text-anchor': 'end' }, clock(end)));

    // Per sample: the cumulative share below each pool, or null without requests.
    const stacks = samples.map((s) => {
      const by = Object.fromEntries(s.pools.map((p) => [p.name, p.requests]));
      const sum = pools.reduce((a, n) => a + (by[n] || 0), 0);
      if (!sum) return null;
      let acc = 0;
      return pools.map((n) => { const lo = acc; acc += (by[n] || 0) / sum; return [lo, acc]; });
    });
    const runs = [];
    let run = [];
    stacks.forEach((st, i) => {
      if (st) run.push(i); else if (run.length) { runs.push(run); run = []; }
    });
    if (run.length) runs.push(run);
    pools.forEach((name, k) => {
      const shares = stacks.filter(Boolean).map((st) => st[k][1] - st[k][0]);
      const last = stacks.length && stacks[stacks.length - 1] ? stacks[stacks.length - 1][k] : null;
      const g = svg('g', {
        class: 'area', 'data-pool': name,
        'data-max-share': (shares.length ? Math.max(...shares) : 0).toFixed(3),
        'data-last-share': last ? (last[1] - last[0]).toFixed(3) : '',
      });
      for (const r of runs) {
        // A lone sample is drawn a step wide, so it shows.
        const xs = r.length === 1 ? [samples[r[0]].time - samples[r[0]].seconds * 1000, samples[r[0]].time] : r.map((i) => samples[i].time);
        const tops = r.length === 1 ? [stacks[r[0]][k][1], stacks[r[0]][k][1]] : r.map((i) => stacks[i][k][1]);
        const bottoms = r.length === 1 ? [stacks[r[0]][k][0], stacks[r[0]][k][0]] : r.map((i) => stacks[i][k][0]);
        const pts = xs.map((t, j) => `${x(t).toFixed(1)},${y(tops[j]).toFixed(1)}`)
          .concat(xs.map((t, j) => `${x(t).toFixed(1)},${y(bottoms[j]).toFixed(1)}`).reverse());
        g.append(svg('polygon', { points: pts.join(' '), fill: colour(name, k), 'fill-opacity': 0.75 }));
      }
      root.append(g);
    });
    // Labels take turns on two rows and turn left near the right edge, so close events stay legible.
    let row = 0;
    for (const e of events) {
      if (e.time < start || e.time > end + POLL_MS) continue;
      if (!['started', 'rolled_back', 'promoted', 'aborted', 'step'].includes(e.event)) continue;
      const ex = Math.min(x(e.time), W - 4);
      root.append(svg('line', { class: 'marker', 'data-event': e.event, x1: ex, x2: ex, y1: PAD_T - 2, y2: PAD_T + plotH }));
      if (e.event !== 'step') {
        const left = ex > W - 90;
        root.append(svg('text', {
          class: 'marker-label', 'data-event': e.event, x: left ? ex - 3 : ex + 3,
          y: PAD_T + 10 + 12 * (row++ % 2), 'text-anchor': left ? 'end' : 'start',
        }, e.event.replace('_', ' ')));
      }
    }
    return root;
  }

  function legend(service) {
    return el('p', { class: 'legend muted' }, 'Share of requests per pool, last ' + '10 minutes at most: ',
      service.pools.map((p, i) => el('span', { class: 'legend-item' }, swatch(colour(p.name, i)), ' ' + p.name + ' ')),
      '(gaps: no requests).');
  }

  // ---- certificates ----

  function expiry(notAfter, notAfterUnix) {
    if (!notAfter) return el('td', {}, '–');
    const days = (notAfterUnix - Date.now() / 1000) / 86400;
    const soon = days < 3 ? 'critical' : days < 14 ? 'soon' : 'ok';
    return el('td', { 'data-expiry': soon },
      notAfter + ' (' + (days >= 0 ? 'in ' + Math.floor(days) + ' days' : 'expired') + ')');
  }

  // ACME certificates (`certificates`) and those of [[certificates]] (`files`) in one table.
  function certsTable(acme, files) {
    if (!acme.length && !files.length) {
      return el('p', { class: 'muted', id: 'no-certs' }, 'No certificates configured.');
    }
    const rows = acme.map((c) => el('tr', { class: 'cert', 'data-cert': c.id, 'data-source': 'acme' },
      el('td', {}, 'ACME'),
      el('td', {}, c.id),
      el('td', {}, c.names.join(', ')),
      el('td', {}, el('span', { class: 'state', 'data-state': c.status }, c.status)),
      expiry(c.not_after, c.not_after_unix),
      el('td', {}, c.next_attempt || '–'),
      el('td', {}, c.issuer || '–'),
      el('td', { class: 'error' }, c.last_error || '')));
    for (const f of files) {
      rows.push(el('tr', { class: 'cert', 'data-cert': f.file, 'data-source': 'file' },
        el('td', {}, 'file'),
        el('td', { title: f.file }, f.file.split('/').pop()),
        el('td', {}, f.names.join(', ') || '–'),
        el('td', {}, f.fallback ? el('span', { class: 'tag' }, 'fallback') : ''),
        expiry(f.not_after, f.not_after_unix),
        el('td', {}, '–'),
        el('td', {}, f.issuer || '–'),
        el('td', {}, '')));
    }
    return el('table', { class: 'certs' },
      el('thead', {}, el('tr', {}, ['Source', 'Certificate', 'Names', 'Status', 'Expires', 'Next order', 'Issuer', 'Last error']
        .map((h) => el('th', {}, h)))),
      el('tbody', {}, rows));
  }

  // ---- polling ----

  async function refresh() {
    const list = await api('v1/services');
    const perService = await Promise.all(list.services.map(async (s) => {
      const enc = encodeURIComponent(s.name);
      const [rollout, events, traffic] = await Promise.all([
        api(`v1/services/${enc}/rollouts/current`, true),
        api(`v1/services/${enc}/rollouts/current/events`, true),
        api(`v1/services/${enc}/traffic`, true),
      ]);
      return { service: s, rollout, events: events ? events.events : [], traffic };
    }));
    const certs = (await api('v1/certs', true)) || {};
    render(list, perService, certs.certificates || [], certs.files || []);
  }

  function render(list, perService, acme, files) {
    const cards = perService.map(({ service, rollout, events, traffic }) => el('section',
      { class: 'card service', 'data-service': service.name },
      el('h2', {}, 'Service ', el('span', { class: 'service-name' }, service.name),
        el('span', { class: 'muted small' }, ' · ' + service.balance.replace('_', ' ')),
        service.maintenance ? el('span', { class: 'tag warn' }, 'maintenance since ' + service.maintenance.since) : null),
      el('div', { class: 'grid' },
        el('div', {}, poolsTable(service), chart(service, traffic, events), legend(service)),
        rolloutPanel(rollout, events))));
    $('services').replaceChildren(...cards);
    $('certs').replaceChildren(certsTable(acme, files));
    generationOfPage = list.generation;
    $('generation').textContent = 'generation ' + generationOfPage;
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString([], { hour12: false });
    document.body.dataset.loaded = 'yes';
  }

  async function poll() {
    timer = null;
    try {
      await refresh();
      setConn('live', 'live');
    } catch (e) {
      if (e instanceof Refused) {
        token = null;
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin('The admin API no longer accepts the token: sign in again.');
        return;
      }
      setConn('error', 'cannot read the API: ' + e.message + ' (retrying)');
    }
    timer = setTimeout(poll, POLL_MS);
  }

  function start() {
    showApp();
    if (!timer) poll();
  }

  async function signIn(ev) {
    ev.preventDefault();
    const candidate = $('token').value.trim();
    if (!candidate) return;
    $('login-submit').disabled = true;
    const previous = token;
    token = candidate;
    try {
      await api('v1/services');
      sessionStorage.setItem(TOKEN_KEY, candidate);
      $('token').value = '';
      start();
    } catch (e) {
      token = previous;
      $('login-error').textContent = e instanceof Refused ? 'Wrong token.' : 'Cannot reach the admin API: ' + e.message;
    } finally {
      $('login-submit').disabled = false;
    }
  }

  function signOut() {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin('');
  }

  // First look: with no token needed (or the tab's token still good) straight to the data.
  async function boot() {
    try {
      await api('v1/services');
      start();
    } catch (e) {
      if (e instanceof Refused) {
        const had = Boolean(token);
        token = null;
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin(had ? 'The stored token was refused: sign in again.' : '');
      } else {
        setConn('error', 'cannot read the API: ' + e.message + ' (retrying)');
        setTimeout(boot, POLL_MS);
      }
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', signIn);
    $('logout').addEventListener('click', signOut);
    boot();
  });
})();
