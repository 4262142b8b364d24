// Wearcast — the plant operator's view (/operator), scoped to one customer.
//
// The customer is picked in the page (or given as ?customer=ID) among the machines the
// signed-in token may see: a customer's token sees only its own, so the picker holds one
// customer; staff see every customer. The API enforces it, not this page. The page shows the customer's machines worst first, a machine's
// components with a chart per component (health-index history, fitted trend, failure
// threshold, RUL P10–P90 band and the planned maintenance windows on one time axis),
// the open offers with accept / decline / pick another window, and the maintenance
// calendar of the customer's sites with the visits booked in it.
'use strict';

(() => {
  const W = window.Wearcast;
  const { esc, $, setHtml, setText, toMs, HOUR, DAY } = W;

  const POLL_MS = 4000;
  const SITES_MAX_AGE_MS = 60000;
  /** How far ahead the machine chart looks at least, and at most. */
  const CHART_AHEAD_MIN = 14 * DAY;
  const CHART_AHEAD_MAX = 42 * DAY;

  const state = {
    customer: null,
    machines: null, // every machine (the picker lists their customers)
    offers: null, // this customer's proposed offers
    workOrders: null, // this customer's open work orders
    sites: new Map(),
    sitesAt: 0,
    selected: null,
    detail: null,
    health: null,
    detailError: null,
    component: null,
    windows: new Map(), // offer id -> candidate windows (loaded when the operator asks)
  };

  // ---------------------------------------------------------------- customer scope

  function customers() {
    const seen = new Map();
    for (const m of state.machines ?? []) {
      if (!seen.has(m.customer)) seen.set(m.customer, m.customer_name || m.customer);
    }
    return [...seen.entries()].sort((a, b) => a[1].localeCompare(b[1]));
  }

  function renderPicker() {
    const list = customers();
    if (!list.length) return;
    if (!state.customer || !list.some(([id]) => id === state.customer)) {
      state.customer = list[0][0];
      syncUrl();
    }
    const select = $('customer-select');
    const html = list
      .map(([id, name]) => `<option value="${esc(id)}"${id === state.customer ? ' selected' : ''}>${esc(name)} (${esc(id)})</option>`)
      .join('');
    if (setHtml(select, html)) select.value = state.customer;
  }

  function syncUrl() {
    const q = new URLSearchParams(location.search);
    q.set('customer', state.customer);
    const hash = state.selected ? `#machine=${encodeURIComponent(state.selected)}` : '';
    history.replaceState(null, '', `${location.pathname}?${q}${hash}`);
  }

  const mine = () => (state.machines ?? []).filter((m) => m.customer === state.customer);

  // ---------------------------------------------------------------- summary and machines

  const SUMMARY_ORDER = ['failed', 'critical', 'degrading', 'unknown', 'healthy'];

  function renderSummary() {
    const machines = mine();
    const counts = Object.fromEntries(SUMMARY_ORDER.map((s) => [s, 0]));
    let online = 0;
    for (const m of machines) {
      counts[W.healthStatus(m.health?.status)] += 1;
      if (m.status === 'online') online += 1;
    }
    const offers = state.offers ?? [];
    const urgent = offers.filter((o) => o.urgent).length;
    const items = SUMMARY_ORDER.map(
      (s) => `<li class="stat stat-${s}">
        <span class="stat-value">${counts[s]}</span>
        <span class="stat-label"><span class="swatch swatch-${s}" aria-hidden="true"></span>${esc(W.HEALTH_LABEL[s])}</span>
      </li>`,
    ).join('');
    setHtml(
      $('fleet-summary'),
      `<ul class="stats" aria-label="Machines by health status">
        <li class="stat stat-total"><span class="stat-value">${machines.length}</span>
          <span class="stat-label">Machines (${online} online)</span></li>
        ${items}
        <li class="stat stat-offers"><span class="stat-value">${offers.length}</span>
          <span class="stat-label">Open offers${urgent ? ` <span class="badge badge-urgent">${urgent} urgent</span>` : ''}</span></li>
      </ul>`,
    );
  }

  function sortWorstFirst(machines) {
    const sev = (m) => W.SEVERITY[W.healthStatus(m.health?.status)];
    const pct = (m) => (Number.isFinite(m.health?.health_pct) ? m.health.health_pct : 101);
    return [...machines].sort((a, b) => sev(b) - sev(a) || pct(a) - pct(b) || a.id.localeCompare(b.id));
  }

  function machineRow(m) {
    const h = m.health;
    const status = W.healthStatus(h?.status);
    const selected = m.id === state.selected;
    const worst = h
      ? `<div class="worst"><span class="worst-name">${esc(W.humanizeKey(h.component))}</span>
          <span class="worst-key">${esc(h.component)}</span></div>
        <div class="worst-health">${W.healthBar(h.health_pct, status)} ${W.statusBadge(status)}</div>`
      : `<div class="worst-health">${W.statusBadge('unknown')} <span class="muted">No estimate yet</span></div>`;
    const offers = (state.offers ?? []).filter((o) => o.machine === m.id).length;
    return `<tr class="machine-row row-${status}${selected ? ' is-selected' : ''}" data-machine="${esc(m.id)}"${selected ? ' aria-current="true"' : ''}>
      <th scope="row" data-label="Machine">
        <button type="button" class="link-btn machine-id" data-open-machine="${esc(m.id)}"
          data-focus="open-${esc(m.id)}" aria-controls="machine-detail" aria-pressed="${selected}">${esc(m.id)}<span
          class="visually-hidden">: show details</span></button>
        <span class="machine-model">${esc(m.model_name || m.model)}</span>
      </th>
      <td data-label="Site">${esc(m.site_name || m.site)}</td>
      <td data-label="Connection">${W.connectionBadge(m.status)}</td>
      <td data-label="Health driven by">${worst}</td>
      <td data-label="RUL (P50)" class="num-cell">${h ? esc(W.rulAbout(h.rul_p50_h, status)) : '<span class="muted">—</span>'}</td>
      <td data-label="Open offers" class="num-cell">${offers ? `${offers} open` : '<span class="muted">none</span>'}</td>
    </tr>`;
  }

  function renderMachines() {
    const sorted = sortWorstFirst(mine());
    const needAction = sorted.filter((m) => W.SEVERITY[W.healthStatus(m.health?.status)] >= W.SEVERITY.degrading).length;
    setText($('machines-note'), sorted.length ? `${sorted.length} machines, ${needAction} degrading or worse. Worst first.` : '');
    if (!sorted.length) {
      setHtml($('machines-table'), '<p class="empty">This customer has no machines registered.</p>');
      return;
    }
    setHtml(
      $('machines-table'),
      `<div class="table-scroll"><table class="data-table machines">
        <caption class="visually-hidden">Machines sorted by health, worst first. Select a machine to see its components and chart.</caption>
        <thead><tr>
          <th scope="col">Machine</th><th scope="col">Site</th><th scope="col">Connection</th>
          <th scope="col">Health driven by</th><th scope="col">RUL (P50)</th><th scope="col">Offers</th>
        </tr></thead>
        <tbody>${sorted.map(machineRow).join('')}</tbody>
      </table></div>`,
    );
  }

  // ---------------------------------------------------------------- machine detail

  function chooseComponent(detail) {
    const comps = detail.components ?? [];
    if (comps.some((c) => c.key === state.component)) return state.component;
    const worst = [...comps].sort(
      (a, b) =>
        W.SEVERITY[W.healthStatus(b.status)] - W.SEVERITY[W.healthStatus(a.status)] ||
        (a.health_pct ?? 101) - (b.health_pct ?? 101),
    )[0];
    return worst ? worst.key : null;
  }

  const BASIS = {
    trend: 'fitted degradation trend',
    bounded_trend: 'fitted degradation trend (bounded by the fleet life)',
    since_onset: 'time since wear began (too few points for a trend yet)',
    healthy_signal: 'healthy signal: fleet life and warning time',
    fleet_prior: 'fleet life prior (no usable signal yet)',
    mixture: 'similar past lives',
    failed: 'component has failed',
  };

  function evidenceText(est, tz) {
    if (!est) return 'No estimate yet.';
    const kind = est.distribution?.kind;
    const parts = [`Basis: ${BASIS[kind] ?? kind ?? 'unknown'}`];
    const ev = est.evidence ?? {};
    if (ev.onset_at) parts.push(`degrading since ${W.formatDate(ev.onset_at, tz)} (${W.relativeTime(ev.onset_at, { past: true })})`);
    if (Number.isFinite(ev.hi_per_day) && ev.hi_per_day > 0) parts.push(`wear index rising ${W.formatNumber(ev.hi_per_day, 3)} per day`);
    if (Number.isFinite(ev.points)) parts.push(`${ev.points} hourly points`);
    return `${parts.join(' · ')}.`;
  }

  function componentRow(c, tz) {
    const status = W.healthStatus(c.status);
    const est = c.estimate;
    const selected = c.key === state.component;
    const cell = (v) => (est ? esc(W.rulShort(v)) : '<span class="muted">—</span>');
    return `<tr class="${selected ? 'is-selected' : ''}"${selected ? ' aria-current="true"' : ''}>
      <th scope="row" data-label="Component">
        <span class="comp-name">${esc(c.name || W.humanizeKey(c.key))}</span>
        <span class="comp-meta">${esc(c.key)} · part ${esc(c.part)}</span>
        <button type="button" class="btn btn-small trend-btn${selected ? ' btn-active' : ''}" data-component="${esc(c.key)}"
          data-focus="comp-${esc(c.key)}" aria-pressed="${selected}" aria-controls="detail-chart">${selected ? 'Chart shown' : 'Show chart'}<span
          class="visually-hidden"> of ${esc(c.name || c.key)}</span></button>
      </th>
      <td data-label="Status">${W.statusBadge(status)}</td>
      <td data-label="Health">${W.healthBar(c.health_pct, status)}</td>
      <td data-label="RUL P10" class="num-cell">${cell(est?.rul_p10_h)}</td>
      <td data-label="RUL P50" class="num-cell">${cell(est?.rul_p50_h)}</td>
      <td data-label="RUL P90" class="num-cell">${cell(est?.rul_p90_h)}</td>
      <td data-label="Installed"><time datetime="${esc(c.installed_at)}">${esc(W.formatDate(c.installed_at, tz))}</time></td>
    </tr>
    <tr class="evidence-row${selected ? ' is-selected' : ''}"><td colspan="7" class="evidence">${esc(evidenceText(est, tz))}</td></tr>`;
  }

  function renderDetail() {
    const section = $('machine-detail');
    section.hidden = !state.selected;
    if (!state.selected) return;
    const d = state.detail;
    if (!d) {
      setText($('detail-heading'), `Machine ${state.selected}`);
      setText($('detail-status'), state.detailError ?? 'Loading machine detail…');
      setHtml($('detail-body'), '');
      setHtml($('detail-chart'), '');
      return;
    }
    const tz = d.timezone;
    setText($('detail-heading'), `Machine ${d.id} · ${d.model_name || d.model}`);
    setText(
      $('detail-status'),
      d.health ? `Health driven by ${W.humanizeKey(d.health.component)}: ${W.HEALTH_LABEL[W.healthStatus(d.health.status)]}.` : 'No health estimate yet.',
    );
    setHtml(
      $('detail-body'),
      `<dl class="facts">
        <div><dt>Site</dt><dd>${esc(d.site_name || d.site)} <span class="muted">(${esc(tz)})</span></dd></div>
        <div><dt>Serial</dt><dd>${esc(d.serial)}</dd></div>
        <div><dt>Connection</dt><dd>${W.connectionBadge(d.status)}</dd></div>
        <div><dt>Last seen</dt><dd>${d.last_seen ? esc(W.relativeTime(d.last_seen, { past: true })) : 'never'}</dd></div>
      </dl>
      <div class="table-scroll"><table class="data-table components">
        <caption class="visually-hidden">Components of machine ${esc(d.id)}</caption>
        <thead><tr><th scope="col">Component</th><th scope="col">Status</th><th scope="col">Health</th>
          <th scope="col">RUL P10</th><th scope="col">RUL P50</th><th scope="col">RUL P90</th><th scope="col">Installed</th></tr></thead>
        <tbody>${(d.components ?? []).map((c) => componentRow(c, tz)).join('')}</tbody>
      </table></div>`,
    );
    renderChart();
  }

  /** The planned stops, proposed visits and booked visits of the selected machine's site. */
  function chartWindows(machine, site) {
    const out = [];
    for (const w of state.sites.get(site)?.upcoming_windows ?? []) {
      out.push({ start: toMs(w.start), end: toMs(w.end), kind: 'stop' });
    }
    for (const o of state.offers ?? []) {
      if (o.machine === machine) out.push({ start: toMs(o.window_start), end: toMs(o.window_end), kind: 'offer' });
    }
    for (const wo of state.workOrders ?? []) {
      if (wo.machine === machine) {
        out.push({ start: toMs(wo.booked_start ?? wo.window_start), end: toMs(wo.booked_end ?? wo.window_end), kind: 'booked' });
      }
    }
    return out.filter((w) => w.start !== null && w.end !== null);
  }

  const WINDOW_LABEL = { stop: 'Planned stop', offer: 'Proposed visit (open offer)', booked: 'Booked visit (work order)' };

  function renderChart() {
    const el = $('detail-chart');
    const d = state.detail;
    const h = state.health;
    const comp = (h?.components ?? []).find((c) => c.component === state.component);
    if (!d || !comp) {
      setHtml(el, d ? '<p class="muted">Loading health history…</p>' : '');
      return;
    }
    const heading = `<h3>${esc(comp.name)} — health index, trend and remaining life</h3>`;
    if (!comp.history.length) {
      setHtml(el, `${heading}<p class="empty">No telemetry for this component yet.</p>`);
      return;
    }
    const width = Math.max(320, Math.round(el.clientWidth || 800));
    setHtml(el, heading + healthChart(comp, chartWindows(d.id, d.site), d.timezone, width));
  }

  /**
   * The machine page's chart: health-index history, fitted trend, failure threshold,
   * RUL P10–P90 band (P50 marked), planned stops and visits, on one time axis in the
   * site's time zone.
   */
  function healthChart(comp, windows, tz, width) {
    const height = Math.round(Math.min(380, Math.max(280, width * 0.42)));
    const m = { top: 22, right: 24, bottom: 60, left: 60 };
    const iw = width - m.left - m.right;
    const ih = height - m.top - m.bottom;
    const now = W.platformNow();
    const hist = comp.history.map((p) => ({ t: toMs(p.t), hi: p.hi })).filter((p) => p.t !== null && Number.isFinite(p.hi));
    const trend = comp.trend.map((p) => ({ t: toMs(p.t), hi: p.hi })).filter((p) => p.t !== null && Number.isFinite(p.hi));
    const p10 = toMs(comp.rul_p10_at);
    const p50 = toMs(comp.rul_p50_at);
    const p90 = toMs(comp.rul_p90_at);

    const t0 = Math.min(hist[0].t, now - DAY);
    const wanted = Math.max(p90 ?? 0, p50 ?? 0, ...windows.map((w) => w.end)) - now;
    const t1 = now + Math.min(CHART_AHEAD_MAX, Math.max(CHART_AHEAD_MIN, wanted + DAY));
    const values = hist.map((p) => p.hi).concat(trend.filter((p) => p.t <= t1).map((p) => p.hi));
    const v0 = Math.min(0, ...values) - 0.05;
    const v1 = Math.max(comp.failure_level * 1.15, Math.min(1.5, Math.max(...values) + 0.05));
    const x = (t) => m.left + ((Math.min(Math.max(t, t0), t1) - t0) / (t1 - t0)) * iw;
    const y = (v) => m.top + (1 - (v - v0) / (v1 - v0)) * ih;
    const f = (n) => n.toFixed(1);
    const uid = `hc-${comp.component}`;

    const winRects = windows
      .filter((w) => w.end > t0 && w.start < t1)
      .sort((a, b) => ['stop', 'offer', 'booked'].indexOf(a.kind) - ['stop', 'offer', 'booked'].indexOf(b.kind))
      .map((w) => `<rect class="c-win c-win-${w.kind}" x="${f(x(w.start))}" y="${m.top}" width="${f(Math.max(2, x(w.end) - x(w.start)))}" height="${ih}">
          <title>${esc(`${WINDOW_LABEL[w.kind]}: ${W.formatWindow(w.start, w.end, tz)}`)}</title></rect>`)
      .join('');

    let band = '';
    if (p10 !== null && p10 < t1) {
      // Up to P90, or to the chart's end when P90 is not in sight. Labelled in the chart,
      // so that it is told from a planned stop by more than its colour.
      const bandWidth = p90 !== null ? Math.max(2, x(p90) - x(p10)) : x(t1) - x(p10);
      band = `<rect class="c-rul" x="${f(x(p10))}" y="${m.top}" width="${f(bandWidth)}" height="${ih}"/>${
        bandWidth > 48 ? `<text class="c-note" x="${f(x(p10) + 4)}" y="${m.top + ih - 6}">P10–P90</text>` : ''}`;
    }
    const p50Line = p50 !== null && p50 <= t1
      ? `<line class="c-p50" x1="${f(x(p50))}" x2="${f(x(p50))}" y1="${m.top}" y2="${m.top + ih}"/>
         <text class="c-note" x="${f(x(p50) + 4)}" y="${m.top + 12}">P50</text>`
      : '';
    const beyond = [];
    if (p10 !== null && p10 > t1) beyond.push(`P10 ${W.formatDate(p10, tz)}`);
    if (p50 !== null && p50 > t1) beyond.push(`P50 ${W.formatDate(p50, tz)}`);
    if (p90 !== null && p90 > t1) beyond.push(`P90 ${W.formatDate(p90, tz)}`);
    if (p90 === null && p50 !== null) beyond.push('P90 not in sight');
    const beyondText = beyond.length
      ? `<text class="c-note" x="${m.left + iw - 4}" y="${m.top + 12}" text-anchor="end">${esc(`${beyond.join(', ')} →`)}</text>`
      : '';

    const histLine = `<polyline class="c-hist" points="${hist.map((p) => `${f(x(p.t))},${f(y(p.hi))}`).join(' ')}"/>`;
    const trendLine = trend.length > 1
      ? `<polyline class="c-trend" points="${trend.filter((p) => p.t <= t1).map((p) => `${f(x(p.t))},${f(y(Math.min(p.hi, v1)))}`).join(' ')}"/>`
      : '';
    const threshold = `<line class="c-threshold" x1="${m.left}" x2="${m.left + iw}" y1="${f(y(comp.failure_level))}" y2="${f(y(comp.failure_level))}"/>
      <text class="c-note c-threshold-label" x="${m.left + 4}" y="${f(y(comp.failure_level))}" dy="-0.4em">Failure threshold</text>`;
    const nowLine = `<line class="c-now" x1="${f(x(now))}" x2="${f(x(now))}" y1="${m.top - 6}" y2="${m.top + ih}"/>
      <text class="c-note" x="${f(x(now))}" y="${m.top - 8}" text-anchor="middle">Now</text>`;

    const yTicks = W.niceTicks(v0, v1, 5);
    const { ticks, zone } = W.timeTicks(t0, t1, Math.max(2, Math.floor(iw / 80)), tz);
    const last = hist[hist.length - 1];
    const shown = windows.filter((w) => w.end > t0 && w.start < t1);
    const desc =
      `Health index of ${comp.name} (0 as new, ${comp.failure_level} at the failure threshold), ${hist.length} hourly points ` +
      `from ${W.formatInZone(hist[0].t, zone)} to ${W.formatInZone(last.t, zone)}, latest ${W.formatNumber(last.hi, 2)}. ` +
      (trend.length ? `Fitted ${comp.trend_shape ?? ''} trend drawn forward. ` : 'No degradation trend. ') +
      (p10 !== null ? `Remaining life P10 ${W.formatDate(p10, zone)}, P50 ${p50 !== null ? W.formatDate(p50, zone) : 'not in sight'}, P90 ${p90 !== null ? W.formatDate(p90, zone) : 'not in sight'}. ` : '') +
      `${shown.length} windows: ${shown.map((w) => `${WINDOW_LABEL[w.kind]} ${W.formatWindow(w.start, w.end, zone)}`).join('; ')}.`;

    const svg = `<svg class="chart-svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-labelledby="${esc(uid)}-t ${esc(uid)}-d">
      <title id="${esc(uid)}-t">${esc(`${comp.name}: health index, trend, failure threshold, remaining-life band and maintenance windows`)}</title>
      <desc id="${esc(uid)}-d">${esc(desc)}</desc>
      <defs>
        <pattern id="hatch-offer" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
          <rect width="6" height="6" class="c-hatch-bg-offer"/><line x1="0" y1="0" x2="0" y2="6" class="c-hatch-offer"/></pattern>
        <pattern id="hatch-booked" width="6" height="6" patternUnits="userSpaceOnUse">
          <rect width="6" height="6" class="c-hatch-bg-booked"/><path d="M0 0L6 6M6 0L0 6" class="c-hatch-booked"/></pattern>
        <clipPath id="${esc(uid)}-clip"><rect x="${m.left}" y="${m.top}" width="${iw}" height="${ih}"/></clipPath>
      </defs>
      <rect class="c-plot" x="${m.left}" y="${m.top}" width="${iw}" height="${ih}"/>
      ${W.yAxisSvg({ ticks: yTicks, y, left: m.left, width: iw, format: (v) => W.formatNumber(v, 2) })}
      ${W.xTimeAxisSvg({ ticks, x, top: m.top, bottom: m.top + ih })}
      <g clip-path="url(#${esc(uid)}-clip)">${winRects}${band}${p50Line}${threshold}${histLine}${trendLine}</g>
      ${nowLine}${beyondText}
      <line class="c-axis" x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${m.top + ih}"/>
      <line class="c-axis" x1="${m.left}" x2="${m.left + iw}" y1="${m.top + ih}" y2="${m.top + ih}"/>
      <text class="c-axis-title" x="${m.left + iw / 2}" y="${height - 6}" text-anchor="middle">${esc(`Date (site time, ${zone})`)}</text>
      <text class="c-axis-title" transform="translate(14 ${m.top + ih / 2}) rotate(-90)" text-anchor="middle">Health index (0 new, 1 failure)</text>
    </svg>`;
    const legend = W.legendHtml([
      { sample: '<line class="c-hist" x1="2" x2="26" y1="7" y2="7"/>', text: 'Health index (hourly)' },
      { sample: '<line class="c-trend" x1="2" x2="26" y1="7" y2="7"/>', text: trend.length ? `Fitted trend (${comp.trend_shape})` : 'Fitted trend (none yet)' },
      { sample: '<line class="c-threshold" x1="2" x2="26" y1="7" y2="7"/>', text: `Failure threshold (${comp.failure_level})` },
      { sample: '<rect class="c-rul" x="2" y="1" width="24" height="12"/>', text: 'Remaining life P10–P90' },
      { sample: '<line class="c-p50" x1="14" x2="14" y1="0" y2="14"/>', text: 'Remaining life P50' },
      { sample: '<rect class="c-win c-win-stop" x="2" y="1" width="24" height="12"/>', text: 'Planned stop' },
      { sample: '<rect class="c-win c-win-offer" x="2" y="1" width="24" height="12"/><path class="c-hatch-offer" d="M2 13L14 1M14 13L26 1"/>', text: 'Proposed visit' },
      { sample: '<rect class="c-win c-win-booked" x="2" y="1" width="24" height="12"/><path class="c-hatch-booked" d="M2 1L26 13M26 1L2 13"/>', text: 'Booked visit' },
    ]);
    return `<figure class="chart">${svg}<figcaption class="visually-hidden">${esc(desc)}</figcaption></figure>${legend}`;
  }

  // ---------------------------------------------------------------- offers

  function offerCard(o) {
    const machine = (state.machines ?? []).find((m) => m.id === o.machine);
    const site = state.sites.get(o.site);
    const price = o.price ?? {};
    const cur = price.currency;
    const comps = (o.components ?? [])
      .map((c) => `<li><span class="comp-name">${esc(W.humanizeKey(c.component))}</span>
          <span class="comp-meta">part ${esc(c.part)} · health ${esc(W.percent(Math.min(1, Math.max(0, 1 - c.health_index))))} · failure risk before window ${esc(W.percent(c.p_fail_before_window))}</span></li>`)
      .join('');
    const titleId = `offer-${esc(o.id)}-title`;
    return `<article class="offer${o.urgent ? ' offer-urgent' : ''}" aria-labelledby="${titleId}" data-offer="${esc(o.id)}">
      <header class="offer-head">
        <h3 id="${titleId}">${esc(o.machine)}${machine ? ` <span class="machine-model">· ${esc(machine.model_name || machine.model)}</span>` : ''}</h3>
        ${o.urgent ? '<span class="badge badge-urgent">Urgent</span>' : ''}
      </header>
      <p class="offer-where muted">${esc(site?.name || machine?.site_name || o.site)}</p>
      <p class="offer-window"><span class="label">Proposed window</span>
        <strong>${esc(W.formatWindow(o.window_start, o.window_end, site?.timezone))}</strong>
        <span class="muted">· ${esc(W.relativeTime(o.window_start))}</span></p>
      <ul class="offer-comps" aria-label="Components to replace">${comps}</ul>
      <dl class="offer-facts">
        <div class="stacked"><dt>Remaining life</dt><dd>${esc(W.rulBand(o.rul_p10_h, o.rul_p50_h, o.rul_p90_h))}</dd></div>
        <div><dt>Failure risk before this window</dt><dd>${esc(W.percent(o.p_fail_before_window))}</dd></div>
        <div><dt>Failure risk before the next window</dt><dd>${esc(W.percent(o.p_fail_before_next_window))}</dd></div>
      </dl>
      <div class="offer-price">
        <div class="price-total"><span class="label">Total price</span><strong>${esc(W.money(price.total_cents, cur))}</strong></div>
        <dl class="price-lines">
          <div><dt>Parts</dt><dd>${esc(W.money(price.parts_cents, cur))}</dd></div>
          <div><dt>Labour</dt><dd>${esc(W.money(price.labour_cents, cur))}</dd></div>
          <div><dt>Travel</dt><dd>${esc(W.money(price.travel_cents, cur))}</dd></div>
          <div><dt>Covered by contract</dt><dd>−${esc(W.money(price.coverage_cents, cur))}</dd></div>
          <div class="cost-of-waiting"><dt>Cost of waiting</dt><dd>${esc(W.money(price.cost_of_waiting_cents, cur))}</dd></div>
        </dl>
      </div>
      ${o.explanation ? `<p class="offer-explanation">${esc(o.explanation)}</p>` : ''}
      <div class="offer-actions-slot" data-actions-slot="${esc(o.id)}"></div>
    </article>`;
  }

  // The actions of each offer are built once and moved into the re-rendered card, so a
  // refresh never closes a form the operator is filling in.
  const actionNodes = new Map();

  function actionsNode(o) {
    let node = actionNodes.get(o.id);
    if (node) return node;
    node = document.createElement('div');
    node.className = 'offer-actions';
    const id = esc(o.id);
    node.innerHTML = `
      <button type="button" class="btn btn-primary" data-accept="${id}">Accept proposed window<span class="visually-hidden"> for offer ${id}</span></button>
      <details class="offer-more" data-more="${id}">
        <summary>Pick another window or decline</summary>
        <form class="inline-form" data-pick-form="${id}">
          <label for="pick-${id}">Another planned stop</label>
          <select id="pick-${id}" name="window_start" required><option value="">Loading the site's stops…</option></select>
          <button type="submit" class="btn">Accept in this window</button>
        </form>
        <form class="inline-form" data-decline-form="${id}">
          <label for="reason-${id}">Reason for declining</label>
          <input id="reason-${id}" name="reason" type="text" required maxlength="300" placeholder="e.g. replaced by own staff">
          <button type="submit" class="btn btn-danger">Decline offer</button>
        </form>
      </details>`;
    actionNodes.set(o.id, node);
    return node;
  }

  function renderOffers() {
    const offers = [...(state.offers ?? [])].sort((a, b) => toMs(a.window_start) - toMs(b.window_start) || a.id.localeCompare(b.id));
    const urgent = offers.filter((o) => o.urgent).length;
    setText($('offers-note'), offers.length ? `${offers.length} proposed${urgent ? `, ${urgent} urgent` : ''}. Soonest window first; times in each site's local time.` : '');
    const el = $('offers-list');
    if (!offers.length) {
      setHtml(el, '<p class="empty">No open offers. Offers appear when a component’s failure risk becomes material.</p>');
      return;
    }
    setHtml(el, `<div class="offer-grid">${offers.map(offerCard).join('')}</div>`);
    for (const slot of el.querySelectorAll('[data-actions-slot]')) {
      const o = offers.find((x) => x.id === slot.getAttribute('data-actions-slot'));
      const node = o && actionsNode(o);
      if (node && node.parentNode !== slot) slot.appendChild(node);
    }
    for (const id of [...actionNodes.keys()]) if (!offers.some((o) => o.id === id)) actionNodes.delete(id);
  }

  async function loadWindows(offerId) {
    const select = document.getElementById(`pick-${offerId}`);
    if (!select) return;
    try {
      const windows = await W.getJson(`/offers/${encodeURIComponent(offerId)}/windows`);
      const offer = (state.offers ?? []).find((o) => o.id === offerId);
      const tz = state.sites.get(offer?.site)?.timezone;
      const why = (w) =>
        [!w.within_tolerance && 'risk above the contract’s tolerance', !w.after_lead_time && 'parts not in time', !w.technician_free && 'no technician free']
          .filter(Boolean)
          .join(', ');
      select.innerHTML = windows.length
        ? windows
            .map((w) => `<option value="${esc(w.start)}"${w.selectable ? '' : ' disabled'}>${esc(W.formatWindow(w.start, w.end, tz))} — failure risk ${esc(W.percent(w.p_fail_before))}${w.selectable ? '' : ` (not possible: ${esc(why(w))})`}</option>`)
            .join('')
        : '<option value="">No other planned stops</option>';
      const first = windows.find((w) => w.selectable);
      if (first) select.value = first.start;
    } catch (err) {
      select.innerHTML = `<option value="">Could not load stops: ${esc(err.message)}</option>`;
    }
  }

  async function act(what, fn) {
    const out = $('offer-result');
    setText(out, `${what}…`);
    try {
      const msg = await fn();
      setText(out, msg);
    } catch (err) {
      setText(out, `${what} failed: ${err.message}`);
    }
    refresher.now();
  }

  function acceptedText(res) {
    const wo = res.work_order;
    if (!wo) return `Offer ${res.offer?.id ?? ''} accepted.`;
    const who = wo.technician_name ? ` with ${wo.technician_name}` : ' (no technician free yet: the service desk will assign one)';
    return `Accepted: work order ${wo.id} for ${wo.machine}${who}, ${W.formatWindow(wo.booked_start ?? wo.window_start, wo.booked_end ?? wo.window_end, wo.timezone)}.`;
  }

  // ---------------------------------------------------------------- calendar

  function renderCalendar() {
    const sites = [...state.sites.values()].filter((s) => s.customer === state.customer);
    setText($('visits-note'), 'Planned stops of the coming weeks, in each site’s local time, with what is booked or proposed in them.');
    if (!sites.length) {
      setHtml($('calendar'), '<p class="empty">No sites.</p>');
      return;
    }
    const html = sites
      .map((s) => {
        const stops = (s.upcoming_windows ?? []).map((w) => ({ start: toMs(w.start), end: toMs(w.end), kind: 'stop' }));
        const inStop = (t) => stops.some((w) => t >= w.start && t < w.end);
        // Urgent visits happen outside the planned stops: they get rows of their own.
        const extra = new Map();
        for (const t of [
          ...(state.workOrders ?? []).filter((wo) => wo.site === s.id).map((wo) => [wo.booked_start ?? wo.window_start, wo.booked_end ?? wo.window_end]),
          ...(state.offers ?? []).filter((o) => o.site === s.id).map((o) => [o.window_start, o.window_end]),
        ]) {
          const a = toMs(t[0]);
          if (a !== null && !inStop(a) && !extra.has(a)) extra.set(a, { start: a, end: toMs(t[1]), kind: 'urgent' });
        }
        const rows = stops.concat([...extra.values()]).sort((x, y) => x.start - y.start).map((w) => {
          const inside = (t) => t !== null && t >= w.start && t < (w.kind === 'stop' ? w.end : w.start + 1);
          const booked = (state.workOrders ?? []).filter((wo) => wo.site === s.id && inside(toMs(wo.booked_start ?? wo.window_start)));
          const proposed = (state.offers ?? []).filter((o) => o.site === s.id && inside(toMs(o.window_start)));
          const items = booked
            .map((wo) => `<li>${W.stateBadge(wo.status === 'unassigned' ? 'awaiting_technician' : 'booked')} ${esc(wo.machine)}: ${esc(wo.components.map((c) => c.part_name || c.part).join(', '))}${wo.technician_name ? ` — ${esc(wo.technician_name)}` : ''}</li>`)
            .concat(proposed.map((o) => `<li>${W.stateBadge('proposed')} ${esc(o.machine)}: ${esc(o.components.map((c) => W.humanizeKey(c.component)).join(', '))}</li>`))
            .join('');
          const label = w.kind === 'stop' ? 'Planned stop' : 'Urgent visit, outside the planned stops';
          return `<tr><th scope="row">${esc(W.formatWindow(w.start, w.end, s.timezone))} <span class="comp-meta">${esc(label)}</span></th>
            <td>${items ? `<ul class="plain">${items}</ul>` : '<span class="muted">Nothing planned</span>'}</td></tr>`;
        });
        return `<section class="site-calendar" aria-labelledby="cal-${esc(s.id)}">
          <h3 id="cal-${esc(s.id)}">${esc(s.name)} <span class="muted">(${esc(s.timezone)})</span></h3>
          <p class="small"><a href="/api/v1/sites/${encodeURIComponent(s.id)}/calendar.ics">Subscribe: calendar of stops and visits (iCalendar)</a></p>
          <div class="table-scroll"><table class="data-table">
            <caption class="visually-hidden">Planned stops at ${esc(s.name)}</caption>
            <thead><tr><th scope="col">When</th><th scope="col">Visits</th></tr></thead>
            <tbody>${rows.join('') || '<tr><td colspan="2">No planned stops in the coming weeks.</td></tr>'}</tbody>
          </table></div>
        </section>`;
      })
      .join('');
    setHtml($('calendar'), html);
  }

  // ---------------------------------------------------------------- loading

  async function tick(info) {
    const needSites = Date.now() - state.sitesAt > SITES_MAX_AGE_MS;
    const scoped = (customer) => {
      const c = encodeURIComponent(customer);
      // Accepted visits: booked with a technician, or waiting for one (unassigned).
      return Promise.all([
        W.getJson(`/offers?status=proposed&customer=${c}`),
        Promise.all([W.getJson('/work-orders?status=scheduled'), W.getJson('/work-orders?status=unassigned')]).then((lists) => lists.flat()),
      ]);
    };
    const id = state.selected && encodeURIComponent(state.selected);
    const detail = id
      ? Promise.all([W.getJson(`/machines/${id}`), W.getJson(`/machines/${id}/health-history`)]).catch((err) => {
          if (err instanceof W.HttpError && err.status === 404) return null;
          throw err;
        })
      : Promise.resolve(undefined);
    // One round of requests when the customer is known (the usual case: it is in the URL).
    const early = state.customer;
    const [machines, sites, scopedAnswers, detailAnswers] = await Promise.all([
      W.getJson('/machines'),
      needSites ? W.getJson('/sites') : null,
      early ? scoped(early) : null,
      detail,
    ]);
    state.machines = machines;
    if (sites) {
      state.sites = new Map(sites.map((s) => [s.id, s]));
      state.sitesAt = Date.now();
    }
    renderPicker();
    const [offers, workOrders] = early === state.customer ? scopedAnswers : await scoped(state.customer);
    state.offers = offers;
    state.workOrders = workOrders.filter((wo) => wo.customer === state.customer);
    if (detailAnswers === null) {
      state.detail = null;
      state.detailError = `Machine ${state.selected} was not found.`;
    } else if (detailAnswers && detailAnswers[0].id === state.selected) {
      [state.detail, state.health] = detailAnswers;
      state.component = chooseComponent(state.detail);
      state.detailError = null;
    }
    await info;
    render();
  }

  // The top of the page (fleet, machine chart) first; the long offer and calendar lists
  // in the next task, so the first screen does not wait for their layout.
  let restPending = false;

  function render() {
    renderSummary();
    renderMachines();
    renderDetail();
    if (restPending) return;
    restPending = true;
    setTimeout(() => {
      restPending = false;
      renderOffers();
      renderCalendar();
    }, 0);
  }

  // ---------------------------------------------------------------- interaction

  function selectMachine(id) {
    if (!id) return;
    if (id !== state.selected) {
      state.selected = id;
      state.detail = null;
      state.health = null;
      state.component = null;
    }
    syncUrl();
    renderMachines();
    renderDetail();
    $('machine-detail').scrollIntoView({ behavior: 'smooth', block: 'start' });
    $('detail-heading').focus({ preventScroll: true });
    refresher.now();
  }

  function closeDetail() {
    const id = state.selected;
    state.selected = null;
    state.detail = null;
    state.health = null;
    syncUrl();
    renderDetail();
    renderMachines();
    document.querySelector(`[data-open-machine="${CSS.escape(id ?? '')}"]`)?.focus();
  }

  function onClick(event) {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const open = target.closest('[data-open-machine]');
    if (open) return selectMachine(open.getAttribute('data-open-machine'));
    const comp = target.closest('[data-component]');
    if (comp) {
      state.component = comp.getAttribute('data-component');
      renderDetail();
      return;
    }
    if (target.closest('#detail-close')) return closeDetail();
    const accept = target.closest('[data-accept]');
    if (accept) {
      const id = accept.getAttribute('data-accept');
      accept.disabled = true;
      act(`Accepting offer ${id}`, async () => acceptedText(await W.postJson(`/offers/${encodeURIComponent(id)}/accept`))).finally(() => {
        accept.disabled = false;
      });
      return;
    }
    const row = target.closest('tr[data-machine]');
    if (row && !target.closest('a, button, input, select, textarea')) selectMachine(row.getAttribute('data-machine'));
  }

  function onSubmit(event) {
    const form = event.target;
    if (form.id === 'scope-form') {
      event.preventDefault();
      return;
    }
    const pick = form.getAttribute('data-pick-form');
    const decline = form.getAttribute('data-decline-form');
    if (!pick && !decline) return;
    event.preventDefault();
    const id = pick || decline;
    const data = new FormData(form);
    if (pick) {
      const start = data.get('window_start');
      if (!start) return;
      act(`Accepting offer ${id} in another window`, async () =>
        acceptedText(await W.postJson(`/offers/${encodeURIComponent(id)}/accept`, { window_start: start })));
    } else {
      act(`Declining offer ${id}`, async () => {
        await W.postJson(`/offers/${encodeURIComponent(id)}/decline`, { reason: String(data.get('reason') ?? '').trim() });
        return `Offer ${id} declined. Its components are not offered again for a while.`;
      });
    }
  }

  let refresher = { now() {} };

  W.ready(() => {
    const q = new URLSearchParams(location.search);
    state.customer = q.get('customer');
    const m = /^#machine=(.+)$/.exec(location.hash);
    if (m) state.selected = decodeURIComponent(m[1]);
    document.addEventListener('click', onClick);
    document.addEventListener('submit', onSubmit);
    window.addEventListener('hashchange', () => {
      const h = /^#machine=(.+)$/.exec(location.hash);
      if (h && decodeURIComponent(h[1]) !== state.selected) selectMachine(decodeURIComponent(h[1]));
    });
    document.addEventListener('toggle', (e) => {
      const more = e.target instanceof Element && e.target.getAttribute('data-more');
      if (more && e.target.open) loadWindows(more);
    }, true);
    $('customer-select').addEventListener('change', (e) => {
      state.customer = e.target.value;
      state.selected = null;
      state.detail = null;
      syncUrl();
      render();
      refresher.now();
    });
    if ('ResizeObserver' in window) {
      let last = 0;
      new ResizeObserver((entries) => {
        const w = Math.round(entries[0]?.contentRect?.width ?? 0);
        if (w && w !== last) {
          last = w;
          requestAnimationFrame(renderChart);
        }
      }).observe($('detail-chart'));
    }
    refresher = W.poll(POLL_MS, tick);
  });
})();
