// Wearcast web dashboard: plain ES2020, no dependencies, no build step.
//
// The page reads the JSON API under /api/v1 and re-renders only the sections whose
// content changed. Each section has its own render function that writes into its own
// container and does nothing when the container is absent, so role-specific pages
// (/operator, /service, /manufacturer) can reuse them with a subset of the markup.
//
// Nothing is ever written to the console: failures are shown in the page.
'use strict';

(() => {
  // ---------------------------------------------------------------- configuration

  const API = '/api/v1';
  const POLL_MS = 3000; // info, machines, offers
  const DETAIL_POLL_MS = 5000; // the open machine's detail and telemetry
  const SITES_MAX_AGE_MS = 60000; // sites (time zones) change rarely
  const REQUEST_TIMEOUT_MS = 8000;
  const TELEMETRY_LIMIT = 2000;
  const LOCALE = 'en-GB';

  // Worse states sort first: failed > critical > degrading > unknown > healthy.
  const SEVERITY = { failed: 4, critical: 3, degrading: 2, unknown: 1, healthy: 0 };
  const HEALTH_LABEL = {
    failed: 'Failed',
    critical: 'Critical',
    degrading: 'Degrading',
    unknown: 'Unknown',
    healthy: 'Healthy',
  };
  const CONNECTION_LABEL = { online: 'Online', offline: 'Offline', unknown: 'Unknown' };
  const SUMMARY_ORDER = ['failed', 'critical', 'degrading', 'unknown', 'healthy'];

  // ---------------------------------------------------------------- state

  const state = {
    info: null,
    infoAt: 0, // performance.now() when `info` arrived
    machines: null,
    offers: null,
    sites: new Map(), // site id -> SiteView
    sitesFetchedAt: 0,
    componentNames: new Map(), // machine model -> Map(component key -> name)
    selected: null, // machine id shown in the detail panel
    detail: null,
    detailError: null,
    component: null, // component key whose chart is shown
    telemetry: null, // { machine, channel, windows, truncated }
    lastUpdate: null, // Date of the last successful refresh (browser clock)
    failing: false,
    running: false,
    inflight: { main: false, detail: false },
    timers: { main: 0, detail: 0 },
    detailGen: 0, // bumps whenever the selection changes, to drop stale answers
    rendered: new WeakMap(), // container -> last HTML written
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- helpers

  const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

  /** Escapes any value for use as HTML text or a quoted attribute value. */
  function esc(value) {
    return String(value ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]);
  }

  /** Milliseconds since the epoch from an RFC 3339 string or a Unix-ms number. */
  function toMs(t) {
    if (t === null || t === undefined) return null;
    if (typeof t === 'number') return Number.isFinite(t) ? t : null;
    const ms = Date.parse(t);
    return Number.isFinite(ms) ? ms : null;
  }

  /**
   * The platform clock (the demo runs faster than real time), not the browser's:
   * the last `now` from /info, advanced by the real time since at `clock_speed`.
   */
  function platformNow() {
    const ms = state.info ? toMs(state.info.now) : null;
    if (ms === null) return Date.now();
    const speed = Number(state.info.clock_speed);
    const elapsed = Math.max(0, performance.now() - state.infoAt);
    return ms + elapsed * (Number.isFinite(speed) && speed > 0 ? speed : 1);
  }

  const formatters = new Map();

  /** A cached Intl.DateTimeFormat; falls back to UTC for an unknown time zone. */
  /** `timeZone` 'local' means the browser's own zone. */
  function dateFormat(options, timeZone = 'UTC') {
    const key = JSON.stringify([options, timeZone]);
    let f = formatters.get(key);
    if (!f) {
      try {
        f = new Intl.DateTimeFormat(
          LOCALE,
          timeZone === 'local' ? { ...options } : { ...options, timeZone },
        );
      } catch (_) {
        f = new Intl.DateTimeFormat(LOCALE, { ...options, timeZone: 'UTC' });
      }
      formatters.set(key, f);
    }
    return f;
  }

  function validTimeZone(tz) {
    if (!tz) return false;
    try {
      new Intl.DateTimeFormat(LOCALE, { timeZone: tz });
      return true;
    } catch (_) {
      return false;
    }
  }

  const DATE_TIME = {
    weekday: 'short', day: 'numeric', month: 'short', year: 'numeric',
    hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
  };
  const DATE_ONLY = { day: 'numeric', month: 'short', year: 'numeric' };

  /** "Sun 29 Nov 2026, 06:00 UTC" */
  function formatUtc(t) {
    const ms = toMs(t);
    return ms === null ? '—' : `${dateFormat(DATE_TIME).format(ms)} UTC`;
  }

  /** "29 Nov 2026" (UTC) */
  function formatDate(t) {
    const ms = toMs(t);
    return ms === null ? '—' : dateFormat(DATE_ONLY).format(ms);
  }

  /** "3 days", "about an hour" style span for a non-negative number of hours. */
  function humanSpan(hours) {
    const h = Math.max(0, hours);
    if (h < 1) {
      const m = Math.max(1, Math.round(h * 60));
      return `${m} min`;
    }
    if (h < 48) {
      const r = Math.round(h);
      return `${r} hour${r === 1 ? '' : 's'}`;
    }
    const d = h / 24;
    if (d < 14) {
      const r = Math.round(d);
      return `${r} days`;
    }
    if (d < 70) return `${Math.round(d / 7)} weeks`;
    if (d < 730) return `${Math.round(d / 30.44)} months`;
    return `${Math.round(d / 365.25)} years`;
  }

  /**
   * "in 3 days" / "5 min ago" relative to the platform clock. With `past`, an instant
   * that can only lie in the past (last seen, last data) never reads as future.
   */
  function relativeTime(t, { past = false } = {}) {
    const ms = toMs(t);
    if (ms === null) return 'never';
    let diffH = (ms - platformNow()) / 3.6e6;
    if (past) diffH = Math.min(0, diffH);
    if (Math.abs(diffH) < 1 / 60) return 'just now';
    const span = humanSpan(Math.abs(diffH));
    return diffH < 0 ? `${span} ago` : `in ${span}`;
  }

  /** A remaining-life quantile in hours, short form: "9 days", "not in sight". */
  function rulShort(hours) {
    if (hours === null || hours === undefined || !Number.isFinite(hours)) return 'not in sight';
    if (hours <= 0) return 'now';
    return humanSpan(hours);
  }

  /** A remaining-life median in a sentence: "about 9 days". */
  function rulAbout(hours, status) {
    if (status === 'failed') return 'Already failed';
    if (hours === null || hours === undefined || !Number.isFinite(hours)) return 'No end in sight';
    if (hours <= 0) return 'Now';
    return `about ${humanSpan(hours)}`;
  }

  /** "P10 5 days · P50 9 days · P90 16 days" */
  function rulBand(p10, p50, p90) {
    return `P10 ${rulShort(p10)} · P50 ${rulShort(p50)} · P90 ${rulShort(p90)}`;
  }

  function percent(p) {
    if (p === null || p === undefined || !Number.isFinite(p)) return '—';
    const v = p * 100;
    if (v > 0 && v < 1) return '<1%';
    if (v > 99 && v < 100) return '>99%';
    return `${Math.round(v)}%`;
  }

  function money(cents, currency) {
    const value = (Number(cents) || 0) / 100;
    try {
      return new Intl.NumberFormat(LOCALE, { style: 'currency', currency }).format(value);
    } catch (_) {
      return `${value.toFixed(2)} ${currency ?? ''}`.trim();
    }
  }

  function formatNumber(v, digits = 2) {
    if (!Number.isFinite(v)) return '—';
    return new Intl.NumberFormat(LOCALE, { maximumFractionDigits: digits }).format(v);
  }

  /** "spindle_bearing" -> "Spindle bearing" */
  function humanizeKey(key) {
    const s = String(key ?? '').replace(/[_-]+/g, ' ').trim();
    return s ? s[0].toUpperCase() + s.slice(1) : '—';
  }

  /** A component's name as its machine model names it, once any such machine was opened. */
  function componentName(machineId, key) {
    const model = (state.machines ?? []).find((m) => m.id === machineId)?.model ?? state.detail?.model;
    return state.componentNames.get(model)?.get(key) ?? humanizeKey(key);
  }

  function healthStatus(s) {
    return Object.prototype.hasOwnProperty.call(SEVERITY, s) ? s : 'unknown';
  }

  function statusBadge(status) {
    const s = healthStatus(status);
    return `<span class="badge badge-${s}">${esc(HEALTH_LABEL[s])}</span>`;
  }

  function connectionBadge(status) {
    const s = Object.prototype.hasOwnProperty.call(CONNECTION_LABEL, status) ? status : 'unknown';
    return `<span class="conn conn-${s}"><span class="conn-dot" aria-hidden="true"></span>${esc(CONNECTION_LABEL[s])}</span>`;
  }

  /** A health bar with its percentage as text (the bar itself is decorative). */
  function healthBar(pct, status) {
    if (pct === null || pct === undefined || !Number.isFinite(pct)) {
      return '<span class="muted">No data</span>';
    }
    const v = Math.max(0, Math.min(100, pct));
    return `<span class="health">
      <span class="bar" aria-hidden="true"><span class="bar-fill fill-${healthStatus(status)}" style="width:${v.toFixed(1)}%"></span></span>
      <span class="bar-value">${Math.round(v)}%<span class="visually-hidden"> health</span></span>
    </span>`;
  }

  /** Writes HTML into a container only when it changed; keeps keyboard focus. */
  function setHtml(el, html) {
    if (!el || state.rendered.get(el) === html) return false;
    const active = document.activeElement;
    const focusKey = active && el.contains(active) ? active.getAttribute('data-focus') : null;
    el.innerHTML = html;
    state.rendered.set(el, html);
    if (focusKey) {
      for (const candidate of el.querySelectorAll('[data-focus]')) {
        if (candidate.getAttribute('data-focus') === focusKey) {
          candidate.focus({ preventScroll: true });
          break;
        }
      }
    }
    return true;
  }

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  // ---------------------------------------------------------------- API

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function getJson(path) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const res = await fetch(API + path, {
        signal: controller.signal,
        cache: 'no-store',
        headers: { Accept: 'application/json' },
      });
      if (!res.ok) {
        let message = `HTTP ${res.status}`;
        try {
          const body = await res.json();
          if (body && body.error) message = String(body.error);
        } catch (_) {
          // not JSON: keep the status line
        }
        throw new HttpError(res.status, message);
      }
      return await res.json();
    } finally {
      clearTimeout(timer);
    }
  }

  const api = {
    info: () => getJson('/info'),
    machines: () => getJson('/machines'),
    machine: (id) => getJson(`/machines/${encodeURIComponent(id)}`),
    telemetry: (id, channel, from) => {
      const q = new URLSearchParams({ channel, limit: String(TELEMETRY_LIMIT) });
      if (from) q.set('from', from);
      return getJson(`/machines/${encodeURIComponent(id)}/telemetry?${q}`);
    },
    offers: () => getJson('/offers?status=proposed'),
    sites: () => getJson('/sites'),
  };

  // ---------------------------------------------------------------- header

  function renderClock() {
    const el = $('platform-clock');
    if (!el || !state.info) return;
    const speed = Number(state.info.clock_speed);
    let text = `Platform time: ${formatUtc(state.info.now)}`;
    if (speed > 1) text += ` (×${speed.toLocaleString(LOCALE, { useGrouping: false, maximumFractionDigits: 1 })} demo speed)`;
    setText(el, text);
    setText($('version'), state.info.version ? `v${state.info.version}` : '');
  }

  function renderRefreshState(error) {
    const el = $('refresh-state');
    if (!el) return;
    const indicator = el.closest('.conn-indicator');
    const time = state.lastUpdate
      ? dateFormat({ hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }, 'local').format(state.lastUpdate)
      : null;
    let text;
    let mode;
    if (error) {
      mode = 'lost';
      text = `Connection lost — retrying${time ? ` (last update ${time})` : ''}`;
    } else {
      mode = 'ok';
      text = `Updated ${time}`;
    }
    setText(el, text);
    if (indicator) indicator.dataset.state = mode;
    // Announce only changes of state, not every refresh.
    const announce = $('refresh-announce');
    const spoken = error ? 'Connection lost, retrying.' : 'Live data connected.';
    if (announce && announce.dataset.last !== mode) {
      announce.dataset.last = mode;
      setText(announce, spoken);
    }
  }

  function renderFleetSummary() {
    const el = $('fleet-summary');
    if (!el || !state.machines) return;
    const counts = Object.fromEntries(SUMMARY_ORDER.map((s) => [s, 0]));
    let online = 0;
    for (const m of state.machines) {
      counts[healthStatus(m.health?.status)] += 1;
      if (m.status === 'online') online += 1;
    }
    const offers = state.offers ?? [];
    const urgent = offers.filter((o) => o.urgent).length;
    const items = SUMMARY_ORDER.map(
      (s) => `<li class="stat stat-${s}">
        <span class="stat-value">${counts[s]}</span>
        <span class="stat-label"><span class="swatch swatch-${s}" aria-hidden="true"></span>${esc(HEALTH_LABEL[s])}</span>
      </li>`,
    ).join('');
    const html = `<ul class="stats" aria-label="Machines by health status">
        <li class="stat stat-total">
          <span class="stat-value">${state.machines.length}</span>
          <span class="stat-label">Machines (${online} online)</span>
        </li>
        ${items}
        <li class="stat stat-offers">
          <span class="stat-value">${offers.length}</span>
          <span class="stat-label">Open offers${urgent ? ` <span class="badge badge-urgent">${urgent} urgent</span>` : ''}</span>
        </li>
      </ul>`;
    setHtml(el, html);
  }

  // ---------------------------------------------------------------- machines table

  function sortWorstFirst(machines) {
    const sev = (m) => SEVERITY[healthStatus(m.health?.status)];
    const pct = (m) => (Number.isFinite(m.health?.health_pct) ? m.health.health_pct : 101);
    return [...machines].sort(
      (a, b) => sev(b) - sev(a) || pct(a) - pct(b) || String(a.id).localeCompare(String(b.id)),
    );
  }

  function machineRow(m) {
    const h = m.health;
    const status = healthStatus(h?.status);
    const selected = m.id === state.selected;
    const worst = h
      ? `<div class="worst">
          <span class="worst-name">${esc(componentName(m.id, h.component))}</span>
          <span class="worst-key">${esc(h.component)}</span>
        </div>
        <div class="worst-health">${healthBar(h.health_pct, status)} ${statusBadge(status)}</div>`
      : `<div class="worst-health">${statusBadge('unknown')} <span class="muted">No estimate yet</span></div>`;
    const rul = h ? esc(rulAbout(h.rul_p50_h, status)) : '<span class="muted">—</span>';
    const lastSeen = m.last_seen
      ? `<time datetime="${esc(m.last_seen)}" title="${esc(formatUtc(m.last_seen))}">${esc(relativeTime(m.last_seen, { past: true }))}</time>`
      : '<span class="muted">never</span>';
    return `<tr class="machine-row row-${status}${selected ? ' is-selected' : ''}" data-machine="${esc(m.id)}"${selected ? ' aria-current="true"' : ''}>
      <th scope="row" data-label="Machine">
        <button type="button" class="link-btn machine-id" data-open-machine="${esc(m.id)}"
          data-focus="open-${esc(m.id)}" aria-controls="machine-detail" aria-pressed="${selected}">${esc(m.id)}<span
          class="visually-hidden">: show details</span></button>
        <span class="machine-model">${esc(m.model_name || m.model)}</span>
      </th>
      <td data-label="Customer">${esc(m.customer_name || m.customer)}</td>
      <td data-label="Site">${esc(m.site_name || m.site)}</td>
      <td data-label="Connection">${connectionBadge(m.status)}</td>
      <td data-label="Worst component">${worst}</td>
      <td data-label="RUL (P50)" class="num-cell">${rul}</td>
      <td data-label="Last seen">${lastSeen}</td>
    </tr>`;
  }

  function renderMachines() {
    const el = $('machines-table');
    if (!el || !state.machines) return;
    const sorted = sortWorstFirst(state.machines);
    const needAction = sorted.filter((m) => SEVERITY[healthStatus(m.health?.status)] >= SEVERITY.degrading).length;
    setText(
      $('machines-note'),
      sorted.length
        ? `${sorted.length} machine${sorted.length === 1 ? '' : 's'}, ${needAction} degrading or worse. Worst first.`
        : '',
    );
    if (!sorted.length) {
      setHtml(el, '<p class="empty">No machines registered yet.</p>');
      return;
    }
    const html = `<div class="table-scroll">
      <table class="data-table machines">
        <caption class="visually-hidden">Machines sorted by health, worst first. Select a machine to see its detail. Relative times use the platform clock.</caption>
        <thead>
          <tr>
            <th scope="col">Machine</th>
            <th scope="col">Customer</th>
            <th scope="col">Site</th>
            <th scope="col">Connection</th>
            <th scope="col">Worst component</th>
            <th scope="col">RUL (P50)</th>
            <th scope="col">Last seen</th>
          </tr>
        </thead>
        <tbody>${sorted.map(machineRow).join('')}</tbody>
      </table>
    </div>`;
    setHtml(el, html);
  }

  // ---------------------------------------------------------------- machine detail

  function selectedComponent() {
    const comps = state.detail?.components ?? [];
    return comps.find((c) => c.key === state.component) ?? null;
  }

  /** Keeps the chosen component if it still exists, else the worst one. */
  function chooseComponent(detail) {
    const comps = detail.components ?? [];
    if (comps.some((c) => c.key === state.component)) return state.component;
    const withChannel = comps.filter((c) => c.wear_channels?.length);
    const pool = withChannel.length ? withChannel : comps;
    const worst = [...pool].sort(
      (a, b) =>
        SEVERITY[healthStatus(b.status)] - SEVERITY[healthStatus(a.status)] ||
        (a.health_pct ?? 101) - (b.health_pct ?? 101),
    )[0];
    return worst ? worst.key : null;
  }

  function basisText(est) {
    const d = est?.distribution;
    if (!d) return '';
    if (d.kind === 'trend') return `trend fit${d.shape ? ` (${d.shape})` : ''}`;
    if (d.kind === 'fleet_prior') return 'fleet life prior (no degradation trend yet)';
    if (d.kind === 'failed') return 'component has failed';
    return String(d.kind);
  }

  function evidenceText(est) {
    if (!est) return 'No estimate yet.';
    const parts = [`Basis: ${basisText(est)}`];
    const ev = est.evidence ?? {};
    if (ev.onset_at !== null && ev.onset_at !== undefined) {
      parts.push(`degrading since ${formatDate(ev.onset_at)} (${relativeTime(ev.onset_at, { past: true })})`);
    }
    if (Number.isFinite(ev.hi_per_day) && ev.hi_per_day > 0) {
      parts.push(`wear index rising ${formatNumber(ev.hi_per_day, 3)} per day`);
    }
    if (Number.isFinite(ev.points)) parts.push(`${ev.points} data points`);
    if (ev.last_data_at !== null && ev.last_data_at !== undefined) {
      parts.push(`last data ${relativeTime(ev.last_data_at, { past: true })}`);
    }
    return `${parts.join(' · ')}.`;
  }

  function componentRow(c) {
    const status = healthStatus(c.status);
    const est = c.estimate;
    const selected = c.key === state.component;
    const hasChannel = (c.wear_channels ?? []).length > 0;
    const failed = c.failed_at ? `<div class="small">Failed ${esc(formatDate(c.failed_at))}</div>` : '';
    const rulCell = (v) => (est ? esc(rulShort(v)) : '<span class="muted">—</span>');
    return `<tr class="${selected ? 'is-selected' : ''}"${selected ? ' aria-current="true"' : ''}>
      <th scope="row" data-label="Component">
        <span class="comp-name">${esc(c.name || humanizeKey(c.key))}</span>
        <span class="comp-meta">${esc(c.key)} · part ${esc(c.part)}</span>
        ${
          hasChannel
            ? `<button type="button" class="btn btn-small trend-btn${selected ? ' btn-active' : ''}" data-component="${esc(c.key)}"
                data-focus="comp-${esc(c.key)}" aria-pressed="${selected}" aria-controls="detail-chart">${
                  selected ? 'Trend shown' : 'Show trend'
                }<span class="visually-hidden"> of ${esc(c.name || c.key)}</span></button>`
            : '<span class="muted small">No wear channel to chart</span>'
        }
      </th>
      <td data-label="Status">${statusBadge(status)}</td>
      <td data-label="Health">${healthBar(c.health_pct, status)}</td>
      <td data-label="RUL P10" class="num-cell">${rulCell(est?.rul_p10_h)}</td>
      <td data-label="RUL P50" class="num-cell">${rulCell(est?.rul_p50_h)}</td>
      <td data-label="RUL P90" class="num-cell">${rulCell(est?.rul_p90_h)}</td>
      <td data-label="Installed"><time datetime="${esc(c.installed_at)}">${esc(formatDate(c.installed_at))}</time>${failed}</td>
    </tr>
    <tr class="evidence-row${selected ? ' is-selected' : ''}">
      <td colspan="7" class="evidence">${esc(evidenceText(est))}</td>
    </tr>`;
  }

  function renderDetail() {
    const section = $('machine-detail');
    if (!section) return;
    section.hidden = !state.selected;
    if (!state.selected) return;
    const body = $('detail-body');
    const d = state.detail;
    if (state.detailError && !d) {
      setText($('detail-heading'), `Machine ${state.selected}`);
      setText($('detail-status'), '');
      setHtml(body, `<p class="empty">${esc(state.detailError)}</p>`);
      setHtml($('detail-chart'), '');
      return;
    }
    if (!d) {
      setText($('detail-heading'), `Machine ${state.selected}`);
      setText($('detail-status'), 'Loading machine detail…');
      setHtml(body, '');
      setHtml($('detail-chart'), '');
      return;
    }
    setText($('detail-heading'), `Machine ${d.id} · ${d.model_name || d.model}`);
    setText(
      $('detail-status'),
      d.health
        ? `Worst component: ${componentName(d.id, d.health.component)}, ${HEALTH_LABEL[healthStatus(d.health.status)]}.`
        : 'No health estimate yet.',
    );
    const comps = d.components ?? [];
    const html = `<dl class="facts">
        <div><dt>Customer</dt><dd>${esc(d.customer_name || d.customer)}</dd></div>
        <div><dt>Site</dt><dd>${esc(d.site_name || d.site)} <span class="muted">(${esc(d.timezone)})</span></dd></div>
        <div><dt>Serial</dt><dd>${esc(d.serial)}</dd></div>
        <div><dt>Connection</dt><dd>${connectionBadge(d.status)}</dd></div>
        <div><dt>Last seen</dt><dd>${d.last_seen ? `<time datetime="${esc(d.last_seen)}">${esc(relativeTime(d.last_seen, { past: true }))}</time>` : 'never'}</dd></div>
      </dl>
      ${
        comps.length
          ? `<div class="table-scroll">
        <table class="data-table components">
          <caption class="visually-hidden">Components of machine ${esc(d.id)}</caption>
          <thead><tr>
            <th scope="col">Component</th>
            <th scope="col">Status</th>
            <th scope="col">Health</th>
            <th scope="col">RUL P10</th>
            <th scope="col">RUL P50</th>
            <th scope="col">RUL P90</th>
            <th scope="col">Installed</th>
          </tr></thead>
          <tbody>${comps.map(componentRow).join('')}</tbody>
        </table>
      </div>`
          : '<p class="empty">This machine has no registered components.</p>'
      }`;
    setHtml(body, html);
    renderChartSection();
  }

  function renderChartSection() {
    const el = $('detail-chart');
    if (!el || !state.detail) return;
    const comp = selectedComponent();
    if (!comp) {
      setHtml(el, '');
      return;
    }
    const wc = comp.wear_channels?.[0];
    const name = comp.name || humanizeKey(comp.key);
    if (!wc) {
      setHtml(el, `<h3>${esc(name)}</h3><p class="empty">This component has no wear channel to chart.</p>`);
      return;
    }
    const t = state.telemetry;
    const windows = t && t.machine === state.detail.id && t.channel === wc.channel ? t.windows : null;
    const heading = `<h3>${esc(name)} — ${esc(wc.channel)} <span class="muted">(${esc(wc.unit)})</span></h3>`;
    if (windows === null) {
      setHtml(el, `${heading}<p class="muted">Loading telemetry…</p>`);
      return;
    }
    if (!windows.length) {
      setHtml(el, `${heading}<p class="empty">No telemetry yet.</p>`);
      return;
    }
    const width = Math.max(320, Math.round(el.clientWidth || 800));
    setHtml(el, heading + chartSvg(windows, wc, name, width) + chartLegend(wc));
  }

  // ---------------------------------------------------------------- SVG chart

  /** Round tick values covering [min, max], about `count` of them. */
  function niceTicks(min, max, count = 5) {
    const span = max - min;
    if (!(span > 0)) return [min];
    const raw = span / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count) ?? 10 * mag;
    const ticks = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
      ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return ticks;
  }

  const HOUR = 3.6e6;
  const DAY = 24 * HOUR;
  const TIME_STEPS = [
    HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR,
    DAY, 2 * DAY, 3 * DAY, 4 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 61 * DAY, 91 * DAY, 182 * DAY, 365 * DAY,
  ];

  /** Time ticks aligned to whole UTC hours/days, at most `count` of them. */
  function timeTicks(t0, t1, count) {
    const span = t1 - t0;
    const step = TIME_STEPS.find((s) => span / s <= count) ?? TIME_STEPS[TIME_STEPS.length - 1];
    const ticks = [];
    for (let v = Math.ceil(t0 / step) * step; v <= t1; v += step) ticks.push(v);
    return { ticks, step };
  }

  function timeTickLabel(ms, step, first) {
    if (step < DAY) {
      const time = dateFormat({ hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(ms);
      const midnight = ms % DAY === 0;
      return first || midnight ? [time, dateFormat({ day: 'numeric', month: 'short' }).format(ms)] : [time];
    }
    return [dateFormat({ day: 'numeric', month: 'short' }).format(ms)];
  }

  function chartSvg(windows, wc, name, width) {
    const height = Math.round(Math.min(340, Math.max(240, width * 0.38)));
    const m = { top: 16, right: 20, bottom: 58, left: 64 };
    const iw = width - m.left - m.right;
    const ih = height - m.top - m.bottom;

    const pts = windows
      .map((w) => ({
        s: toMs(w.start),
        e: toMs(w.end),
        mean: w.mean,
        min: w.min,
        max: w.max,
      }))
      .filter((p) => p.s !== null && Number.isFinite(p.mean))
      .map((p) => ({
        ...p,
        t: p.e !== null && p.e > p.s ? (p.s + p.e) / 2 : p.s,
        lo: Number.isFinite(p.min) ? p.min : p.mean,
        hi: Number.isFinite(p.max) ? p.max : p.mean,
      }));

    let t0 = pts[0].t;
    let t1 = pts[pts.length - 1].t;
    if (t1 - t0 < HOUR) {
      t0 -= HOUR / 2;
      t1 += HOUR / 2;
    }
    let v0 = Math.min(wc.healthy, wc.failure, ...pts.map((p) => p.lo));
    let v1 = Math.max(wc.healthy, wc.failure, ...pts.map((p) => p.hi));
    if (!(v1 > v0)) {
      v0 -= 1;
      v1 += 1;
    }
    const pad = (v1 - v0) * 0.06;
    v0 -= pad;
    v1 += pad;

    const x = (t) => m.left + ((t - t0) / (t1 - t0)) * iw;
    const y = (v) => m.top + (1 - (v - v0) / (v1 - v0)) * ih;
    const f = (n) => n.toFixed(1);

    // Break the line where data is missing (a gap much longer than the usual spacing).
    const gaps = [];
    for (let i = 1; i < pts.length; i++) gaps.push(pts[i].t - pts[i - 1].t);
    const typical = gaps.length ? [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length / 2)] : 0;
    const segments = [];
    let current = [];
    pts.forEach((p, i) => {
      if (i > 0 && typical > 0 && p.t - pts[i - 1].t > typical * 4) {
        segments.push(current);
        current = [];
      }
      current.push(p);
    });
    segments.push(current);

    const band = segments
      .map((seg) => {
        const upper = seg.map((p) => `${f(x(p.t))},${f(y(p.hi))}`);
        const lower = seg.map((p) => `${f(x(p.t))},${f(y(p.lo))}`).reverse();
        return seg.length > 1 ? `<polygon class="c-band" points="${upper.concat(lower).join(' ')}"/>` : '';
      })
      .join('');
    const lines = segments
      .map((seg) =>
        seg.length > 1
          ? `<polyline class="c-line" points="${seg.map((p) => `${f(x(p.t))},${f(y(p.mean))}`).join(' ')}"/>`
          : `<circle class="c-dot" cx="${f(x(seg[0].t))}" cy="${f(y(seg[0].mean))}" r="2.5"/>`,
      )
      .join('');

    const yTicks = niceTicks(v0, v1, 5);
    const yGrid = yTicks
      .map(
        (v) => `<g class="c-tick">
          <line class="c-grid" x1="${m.left}" x2="${m.left + iw}" y1="${f(y(v))}" y2="${f(y(v))}"/>
          <text x="${m.left - 8}" y="${f(y(v))}" dy="0.32em" text-anchor="end">${esc(formatNumber(v, 3))}</text>
        </g>`,
      )
      .join('');
    const { ticks: xt, step } = timeTicks(t0, t1, Math.max(2, Math.floor(iw / 90)));
    const xGrid = xt
      .map((t, i) => {
        const label = timeTickLabel(t, step, i === 0);
        return `<g class="c-tick">
          <line class="c-grid" x1="${f(x(t))}" x2="${f(x(t))}" y1="${m.top}" y2="${m.top + ih}"/>
          <text x="${f(x(t))}" y="${m.top + ih + 16}" text-anchor="middle">${esc(label[0])}${
            label[1] ? `<tspan x="${f(x(t))}" dy="1.2em">${esc(label[1])}</tspan>` : ''
          }</text>
        </g>`;
      })
      .join('');

    const refLine = (v, cls, label) => {
      const yy = f(y(v));
      return `<line class="${cls}" x1="${m.left}" x2="${m.left + iw}" y1="${yy}" y2="${yy}"/>
        <text class="c-ref-label ${cls}-label" x="${m.left + iw - 4}" y="${yy}" dy="-0.4em" text-anchor="end">${esc(label)}</text>`;
    };

    const last = pts[pts.length - 1];
    const unit = wc.unit ? ` ${wc.unit}` : '';
    const titleText = `${name}: ${wc.channel} over time`;
    const descText =
      `Line chart of the ${wc.channel} window means in ${wc.unit || 'channel units'}, ` +
      `${pts.length} windows from ${formatUtc(pts[0].s)} to ${formatUtc(last.e ?? last.s)}, ` +
      `with the min to max range as a shaded band. Latest mean ${formatNumber(last.mean, 3)}${unit}; ` +
      `healthy level ${formatNumber(wc.healthy, 3)}${unit}, failure level ${formatNumber(wc.failure, 3)}${unit}.`;
    const uid = 'trend-chart'; // one chart per page; stable so unchanged data is not redrawn

    return `<figure class="chart">
      <svg class="chart-svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"
        role="img" aria-labelledby="${uid}-t ${uid}-d">
        <title id="${uid}-t">${esc(titleText)}</title>
        <desc id="${uid}-d">${esc(descText)}</desc>
        <rect class="c-plot" x="${m.left}" y="${m.top}" width="${iw}" height="${ih}"/>
        ${yGrid}${xGrid}
        ${band}
        ${refLine(wc.failure, 'c-failure', `Failure ${formatNumber(wc.failure, 3)}${unit}`)}
        ${refLine(wc.healthy, 'c-healthy', `Healthy ${formatNumber(wc.healthy, 3)}${unit}`)}
        ${lines}
        <line class="c-axis" x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${m.top + ih}"/>
        <line class="c-axis" x1="${m.left}" x2="${m.left + iw}" y1="${m.top + ih}" y2="${m.top + ih}"/>
        <text class="c-axis-title" x="${m.left + iw / 2}" y="${height - 6}" text-anchor="middle">Time (UTC)</text>
        <text class="c-axis-title" transform="translate(14 ${m.top + ih / 2}) rotate(-90)" text-anchor="middle">${esc(
          `${wc.channel}${wc.unit ? ` (${wc.unit})` : ''}`,
        )}</text>
      </svg>
      <figcaption class="visually-hidden">${esc(descText)}</figcaption>
    </figure>`;
  }

  function chartLegend(wc) {
    const t = state.telemetry;
    const note = t?.truncated ? ` Showing the most recent ${TELEMETRY_LIMIT} windows.` : '';
    return `<ul class="legend" aria-label="Chart legend">
        <li><svg width="28" height="12" aria-hidden="true"><line class="c-line" x1="2" x2="26" y1="6" y2="6"/></svg>Window mean</li>
        <li><svg width="28" height="12" aria-hidden="true"><rect class="c-band" x="2" y="1" width="24" height="10"/></svg>Min–max range</li>
        <li><svg width="28" height="12" aria-hidden="true"><line class="c-failure" x1="2" x2="26" y1="6" y2="6"/></svg>Failure level (${esc(formatNumber(wc.failure, 3))} ${esc(wc.unit)})</li>
        <li><svg width="28" height="12" aria-hidden="true"><line class="c-healthy" x1="2" x2="26" y1="6" y2="6"/></svg>Healthy level (${esc(formatNumber(wc.healthy, 3))} ${esc(wc.unit)})</li>
      </ul>${note ? `<p class="muted small">${esc(note.trim())}</p>` : ''}`;
  }

  // ---------------------------------------------------------------- offers

  /** "Sun 29 Nov, 06:00–14:00 (Europe/Berlin)" in the site's own time zone. */
  function formatWindow(start, end, timeZone) {
    const tz = validTimeZone(timeZone) ? timeZone : 'UTC';
    const s = toMs(start);
    const e = toMs(end);
    if (s === null) return '—';
    const day = dateFormat({ weekday: 'short', day: 'numeric', month: 'short' }, tz);
    const time = dateFormat({ hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }, tz);
    if (e === null) return `${day.format(s)}, ${time.format(s)} (${tz})`;
    const sameDay = day.format(s) === day.format(e) && e - s < DAY;
    return sameDay
      ? `${day.format(s)}, ${time.format(s)}–${time.format(e)} (${tz})`
      : `${day.format(s)}, ${time.format(s)} – ${day.format(e)}, ${time.format(e)} (${tz})`;
  }

  function offerCard(o) {
    const machine = (state.machines ?? []).find((m) => m.id === o.machine);
    const site = state.sites.get(o.site);
    const price = o.price ?? {};
    const cur = price.currency;
    const comps = (o.components ?? [])
      .map(
        (c) => `<li>
          <span class="comp-name">${esc(componentName(o.machine, c.component))}</span>
          <span class="comp-meta">part ${esc(c.part)} · health ${esc(percent(Math.min(1, Math.max(0, 1 - c.health_index))))} · failure risk before window ${esc(percent(c.p_fail_before_window))}</span>
        </li>`,
      )
      .join('');
    const titleId = `offer-${esc(o.id)}-title`;
    return `<article class="offer${o.urgent ? ' offer-urgent' : ''}" aria-labelledby="${titleId}">
      <header class="offer-head">
        <h3 id="${titleId}">
          ${esc(o.machine)}${machine ? ` <span class="machine-model">· ${esc(machine.model_name || machine.model)}</span>` : ''}
        </h3>
        ${o.urgent ? '<span class="badge badge-urgent">Urgent</span>' : ''}
      </header>
      <p class="offer-where muted">${esc(machine?.customer_name || o.customer)} · ${esc(site?.name || machine?.site_name || o.site)}</p>
      <p class="offer-window">
        <span class="label">Proposed window</span>
        <strong>${esc(formatWindow(o.window_start, o.window_end, site?.timezone))}</strong>
        <span class="muted">· ${esc(relativeTime(o.window_start))}</span>
      </p>
      <ul class="offer-comps" aria-label="Components to replace">${comps}</ul>
      <dl class="offer-facts">
        <div class="stacked"><dt>Remaining life</dt><dd>${esc(rulBand(o.rul_p10_h, o.rul_p50_h, o.rul_p90_h))}</dd></div>
        <div><dt>Failure risk before this window</dt><dd>${esc(percent(o.p_fail_before_window))}</dd></div>
        <div><dt>Failure risk before the next window</dt><dd>${esc(percent(o.p_fail_before_next_window))}</dd></div>
        <div><dt>Contract risk tolerance</dt><dd>${esc(percent(o.risk_tolerance))}</dd></div>
      </dl>
      <div class="offer-price">
        <div class="price-total">
          <span class="label">Total price</span>
          <strong>${esc(money(price.total_cents, cur))}</strong>
        </div>
        <dl class="price-lines">
          <div><dt>Parts</dt><dd>${esc(money(price.parts_cents, cur))}</dd></div>
          <div><dt>Labour</dt><dd>${esc(money(price.labour_cents, cur))}</dd></div>
          <div><dt>Travel</dt><dd>${esc(money(price.travel_cents, cur))}</dd></div>
          <div><dt>Covered by contract</dt><dd>−${esc(money(price.coverage_cents, cur))}</dd></div>
          <div class="cost-of-waiting"><dt>Cost of waiting</dt><dd>${esc(money(price.cost_of_waiting_cents, cur))}</dd></div>
        </dl>
      </div>
      ${o.explanation ? `<p class="offer-explanation">${esc(o.explanation)}</p>` : ''}
    </article>`;
  }

  function renderOffers() {
    const el = $('offers-list');
    if (!el || !state.offers) return;
    const offers = [...state.offers].sort(
      (a, b) => (toMs(a.window_start) ?? 0) - (toMs(b.window_start) ?? 0) || String(a.id).localeCompare(String(b.id)),
    );
    const urgent = offers.filter((o) => o.urgent).length;
    setText(
      $('offers-note'),
      offers.length
        ? `${offers.length} proposed${urgent ? `, ${urgent} urgent` : ''}. Soonest window first; windows in each site's local time.`
        : '',
    );
    if (!offers.length) {
      setHtml(el, '<p class="empty">No open offers. Offers appear when a component’s failure risk becomes material.</p>');
      return;
    }
    setHtml(el, `<div class="offer-grid">${offers.map(offerCard).join('')}</div>`);
  }

  // ---------------------------------------------------------------- polling

  function renderMain() {
    renderClock();
    renderFleetSummary();
    renderMachines();
    renderOffers();
  }

  function markOk() {
    state.failing = false;
    state.lastUpdate = new Date();
    renderRefreshState(null);
  }

  function markFailed(err) {
    state.failing = true;
    renderRefreshState(err || true);
  }

  async function refreshSites(force) {
    if (!force && Date.now() - state.sitesFetchedAt < SITES_MAX_AGE_MS) return;
    const sites = await api.sites();
    state.sites = new Map((Array.isArray(sites) ? sites : []).map((s) => [s.id, s]));
    state.sitesFetchedAt = Date.now();
  }

  async function pollMain() {
    clearTimeout(state.timers.main);
    if (state.inflight.main) return;
    state.inflight.main = true;
    try {
      const [info, machines, offers] = await Promise.all([
        api.info(),
        api.machines(),
        api.offers(),
        refreshSites(false),
      ]);
      state.info = info;
      state.infoAt = performance.now();
      state.machines = Array.isArray(machines) ? machines : [];
      state.offers = Array.isArray(offers) ? offers : [];
      // An offer at a site we have not seen yet: fetch the sites again for its time zone.
      if (state.offers.some((o) => !state.sites.has(o.site)) && Date.now() - state.sitesFetchedAt > POLL_MS * 3) {
        await refreshSites(true);
      }
      markOk();
    } catch (err) {
      markFailed(err);
    }
    try {
      renderMain();
    } catch (err) {
      setText($('refresh-state'), `Display error: ${err && err.message ? err.message : err}`);
    }
    state.inflight.main = false;
    if (state.running) state.timers.main = setTimeout(pollMain, POLL_MS);
  }

  /** Loads the selected component's first wear channel, incrementally after the first time. */
  async function loadTelemetry(gen) {
    const d = state.detail;
    const comp = selectedComponent();
    const wc = comp?.wear_channels?.[0];
    if (!d || !wc) return;
    if (!(d.channels ?? []).includes(wc.channel)) {
      // Asking would be a 404: the machine has sent nothing on this channel yet.
      state.telemetry = { machine: d.id, channel: wc.channel, windows: [], truncated: false };
      return;
    }
    const prev = state.telemetry;
    const same = prev && prev.machine === d.id && prev.channel === wc.channel && prev.windows.length > 0;
    const from = same ? prev.windows[prev.windows.length - 1].start : null;
    const res = await api.telemetry(d.id, wc.channel, from);
    if (gen !== state.detailGen) return;
    const fresh = Array.isArray(res.windows) ? res.windows : [];
    let windows;
    let truncated = Boolean(res.truncated);
    if (same && !res.truncated) {
      const cut = toMs(from);
      windows = prev.windows.filter((w) => toMs(w.start) < cut).concat(fresh);
      if (windows.length > TELEMETRY_LIMIT) {
        windows = windows.slice(windows.length - TELEMETRY_LIMIT);
        truncated = true;
      } else {
        truncated = prev.truncated;
      }
    } else {
      windows = fresh;
    }
    state.telemetry = { machine: d.id, channel: wc.channel, windows, truncated };
  }

  async function pollDetail() {
    clearTimeout(state.timers.detail);
    const id = state.selected;
    if (!id || state.inflight.detail) return;
    state.inflight.detail = true;
    const gen = state.detailGen;
    try {
      const detail = await api.machine(id);
      if (gen === state.detailGen) {
        state.detail = detail;
        state.detailError = null;
        const known = state.componentNames.has(detail.model);
        const names = new Map((detail.components ?? []).map((c) => [c.key, c.name || humanizeKey(c.key)]));
        state.componentNames.set(detail.model, names);
        if (!known) {
          // Component names of this model are now known: show them in the other sections too.
          renderMachines();
          renderOffers();
        }
        state.component = chooseComponent(detail);
        await loadTelemetry(gen);
      }
    } catch (err) {
      if (gen === state.detailGen) {
        if (err instanceof HttpError && err.status === 404) {
          state.detailError = `Machine ${id} was not found. It may have been removed.`;
          state.detail = null;
        } else {
          markFailed(err);
        }
      }
    }
    state.inflight.detail = false;
    if (gen !== state.detailGen) {
      // The selection changed while we were waiting: load the new one now.
      if (state.running && state.selected) pollDetail();
      return;
    }
    try {
      renderDetail();
    } catch (err) {
      setText($('detail-status'), `Display error: ${err && err.message ? err.message : err}`);
    }
    if (state.running && state.selected === id) {
      state.timers.detail = setTimeout(pollDetail, DETAIL_POLL_MS);
    }
  }

  function start() {
    if (state.running) return;
    state.running = true;
    pollMain();
    if (state.selected) pollDetail();
  }

  function stop() {
    state.running = false;
    clearTimeout(state.timers.main);
    clearTimeout(state.timers.detail);
  }

  // ---------------------------------------------------------------- interaction

  function selectMachine(id, { focus = true } = {}) {
    if (!id) return;
    const changed = id !== state.selected;
    state.selected = id;
    if (changed) {
      state.detailGen += 1;
      state.detail = null;
      state.detailError = null;
      state.component = null;
      state.telemetry = null;
    }
    history.replaceState(null, '', `#machine=${encodeURIComponent(id)}`);
    renderMachines();
    renderDetail();
    if (focus) {
      const heading = $('detail-heading');
      $('machine-detail')?.scrollIntoView({ behavior: 'smooth', block: 'start' });
      heading?.focus({ preventScroll: true });
    }
    if (changed || !state.detail) {
      clearTimeout(state.timers.detail);
      if (state.running) pollDetail();
    }
  }

  function closeDetail() {
    const id = state.selected;
    state.selected = null;
    state.detailGen += 1;
    state.detail = null;
    state.detailError = null;
    state.telemetry = null;
    state.component = null;
    clearTimeout(state.timers.detail);
    history.replaceState(null, '', location.pathname + location.search);
    renderDetail();
    renderMachines();
    // Return focus to the row the detail came from.
    if (id) {
      for (const b of document.querySelectorAll('[data-open-machine]')) {
        if (b.getAttribute('data-open-machine') === id) {
          b.focus();
          break;
        }
      }
    }
  }

  async function selectComponent(key) {
    if (!state.detail || key === state.component) return;
    state.component = key;
    state.telemetry = null;
    renderDetail();
    const gen = state.detailGen;
    try {
      await loadTelemetry(gen);
    } catch (err) {
      markFailed(err);
    }
    if (gen === state.detailGen) renderDetail();
  }

  function onClick(event) {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const open = target.closest('[data-open-machine]');
    if (open) {
      selectMachine(open.getAttribute('data-open-machine'));
      return;
    }
    const comp = target.closest('[data-component]');
    if (comp) {
      selectComponent(comp.getAttribute('data-component'));
      return;
    }
    if (target.closest('#detail-close')) {
      closeDetail();
      return;
    }
    // A click anywhere else on a machine row opens it too (the button is the keyboard path).
    const row = target.closest('tr[data-machine]');
    if (row && !target.closest('a, button, input, select, textarea')) {
      selectMachine(row.getAttribute('data-machine'));
    }
  }

  function machineFromHash() {
    const m = /^#machine=(.+)$/.exec(location.hash);
    if (!m) return null;
    try {
      return decodeURIComponent(m[1]);
    } catch (_) {
      return null;
    }
  }

  let resizeFrame = 0;
  function onResize() {
    cancelAnimationFrame(resizeFrame);
    resizeFrame = requestAnimationFrame(() => {
      try {
        renderChartSection();
      } catch (_) {
        // the next refresh redraws it
      }
    });
  }

  function init() {
    document.addEventListener('click', onClick);
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) stop();
      else start();
    });
    window.addEventListener('hashchange', () => {
      const id = machineFromHash();
      if (id && id !== state.selected) selectMachine(id);
    });
    const chart = $('detail-chart');
    if (chart && 'ResizeObserver' in window) {
      let lastWidth = 0;
      new ResizeObserver((entries) => {
        const w = Math.round(entries[0]?.contentRect?.width ?? 0);
        if (w && w !== lastWidth) {
          lastWidth = w;
          onResize();
        }
      }).observe(chart);
    }
    const initial = machineFromHash();
    if (initial) selectMachine(initial, { focus: false });
    if (!document.hidden) start();
  }

  // Exposed for the role-specific pages to come; the page itself needs nothing global.
  window.Wearcast = Object.freeze({
    esc,
    humanSpan,
    rulBand,
    money,
    percent,
    formatWindow,
    selectMachine,
  });

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
