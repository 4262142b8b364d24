// Wearcast dashboards, shared part: plain ES2020, no dependencies, no build step.
//
// Every page (/operator, /service, /manufacturer) loads this first. It provides
// formatting (dates in a site's own time zone, money, remaining life), the JSON API
// client, the polling loop with its "updated at" indicator, change-only rendering, and
// the pieces of the hand-drawn SVG charts (axes, ticks, legends). It exposes them as
// `window.Wearcast`; nothing else is global.
//
// Nothing is ever written to the console: failures are shown in the page.
'use strict';

(() => {
  const API = '/api/v1';
  const REQUEST_TIMEOUT_MS = 8000;
  const LOCALE = 'en-GB';
  const HOUR = 3.6e6;
  const DAY = 24 * HOUR;

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

  // ---------------------------------------------------------------- platform clock

  const clock = { info: null, at: 0 };

  /** Keeps the last /info answer: the platform clock (the demo runs faster than real time). */
  function setInfo(info) {
    clock.info = info;
    clock.at = performance.now();
  }

  /** The platform's now: the last `now` from /info, advanced at `clock_speed`. */
  function platformNow() {
    const ms = clock.info ? toMs(clock.info.now) : null;
    if (ms === null) return Date.now();
    const speed = Number(clock.info.clock_speed);
    const elapsed = Math.max(0, performance.now() - clock.at);
    return ms + elapsed * (Number.isFinite(speed) && speed > 0 ? speed : 1);
  }

  // ---------------------------------------------------------------- formatting

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

  // Building an Intl formatter is the costly part of formatting: each is built once.
  const zones = new Map();

  function validTimeZone(tz) {
    if (!tz) return false;
    let ok = zones.get(tz);
    if (ok === undefined) {
      try {
        new Intl.DateTimeFormat(LOCALE, { timeZone: tz });
        ok = true;
      } catch (_) {
        ok = false;
      }
      zones.set(tz, ok);
    }
    return ok;
  }

  const numberFormats = new Map();

  function numberFormat(options) {
    const key = JSON.stringify(options);
    let f = numberFormats.get(key);
    if (!f) {
      f = new Intl.NumberFormat(LOCALE, options);
      numberFormats.set(key, f);
    }
    return f;
  }

  const formatters = new Map();

  /** A cached Intl.DateTimeFormat in `timeZone` ('local': the browser's; unknown: UTC). */
  function dateFormat(options, timeZone = 'UTC') {
    const key = JSON.stringify([options, timeZone]);
    let f = formatters.get(key);
    if (!f) {
      const tz = timeZone === 'local' ? undefined : validTimeZone(timeZone) ? timeZone : 'UTC';
      f = new Intl.DateTimeFormat(LOCALE, tz ? { ...options, timeZone: tz } : { ...options });
      formatters.set(key, f);
    }
    return f;
  }

  const DATE_TIME = {
    weekday: 'short', day: 'numeric', month: 'short', year: 'numeric',
    hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
  };
  const DATE_ONLY = { day: 'numeric', month: 'short', year: 'numeric' };
  const DAY_LONG = { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' };
  const TIME_ONLY = { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };

  /** "Sun 29 Nov 2026, 06:00 UTC" */
  function formatUtc(t) {
    const ms = toMs(t);
    return ms === null ? '—' : `${dateFormat(DATE_TIME).format(ms)} UTC`;
  }

  /** "Sun 29 Nov 2026, 07:00" in `tz` (with the zone's name when `withZone`). */
  function formatInZone(t, tz, { withZone = false } = {}) {
    const ms = toMs(t);
    if (ms === null) return '—';
    const zone = validTimeZone(tz) ? tz : 'UTC';
    return `${dateFormat(DATE_TIME, zone).format(ms)}${withZone ? ` (${zone})` : ''}`;
  }

  /** "29 Nov 2026" in `tz` (UTC by default). */
  function formatDate(t, tz = 'UTC') {
    const ms = toMs(t);
    return ms === null ? '—' : dateFormat(DATE_ONLY, tz).format(ms);
  }

  /** "Sunday 29 November 2026" in `tz`: a day heading. */
  function formatDay(t, tz) {
    const ms = toMs(t);
    return ms === null ? '—' : dateFormat(DAY_LONG, tz).format(ms);
  }

  /** "06:00" in `tz`. */
  function formatTime(t, tz) {
    const ms = toMs(t);
    return ms === null ? '—' : dateFormat(TIME_ONLY, tz).format(ms);
  }

  /** "2026-11-29" in `tz`: a key to group by local day. */
  function dayKey(t, tz) {
    const ms = toMs(t);
    if (ms === null) return '';
    const p = Object.fromEntries(
      dateFormat({ year: 'numeric', month: '2-digit', day: '2-digit' }, tz)
        .formatToParts(ms)
        .map((x) => [x.type, x.value]),
    );
    return `${p.year}-${p.month}-${p.day}`;
  }

  /** "Sun 29 Nov, 06:00–14:00 (Europe/Berlin)" in the site's own time zone. */
  function formatWindow(start, end, timeZone) {
    const tz = validTimeZone(timeZone) ? timeZone : 'UTC';
    const s = toMs(start);
    const e = toMs(end);
    if (s === null) return '—';
    const day = dateFormat({ weekday: 'short', day: 'numeric', month: 'short' }, tz);
    const time = dateFormat(TIME_ONLY, tz);
    if (e === null) return `${day.format(s)}, ${time.format(s)} (${tz})`;
    const sameDay = day.format(s) === day.format(e) && e - s < DAY;
    return sameDay
      ? `${day.format(s)}, ${time.format(s)}–${time.format(e)} (${tz})`
      : `${day.format(s)}, ${time.format(s)} – ${day.format(e)}, ${time.format(e)} (${tz})`;
  }

  /** "3 days", "5 hours" style span for a non-negative number of hours. */
  function humanSpan(hours) {
    const h = Math.max(0, hours);
    if (h < 1) return `${Math.max(1, Math.round(h * 60))} min`;
    if (h < 48) {
      const r = Math.round(h);
      return `${r} hour${r === 1 ? '' : 's'}`;
    }
    const d = h / 24;
    if (d < 14) return `${Math.round(d)} days`;
    if (d < 70) return `${Math.round(d / 7)} weeks`;
    if (d < 730) return `${Math.round(d / 30.44)} months`;
    return `${Math.round(d / 365.25)} years`;
  }

  /** "in 3 days" / "5 min ago" against the platform clock; `past` never reads as future. */
  function relativeTime(t, { past = false } = {}) {
    const ms = toMs(t);
    if (ms === null) return 'never';
    let diffH = (ms - platformNow()) / HOUR;
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
      return numberFormat({ style: 'currency', currency, maximumFractionDigits: 0 }).format(value);
    } catch (_) {
      return `${value.toFixed(0)} ${currency ?? ''}`.trim();
    }
  }

  function formatNumber(v, digits = 2) {
    if (!Number.isFinite(v)) return '—';
    return numberFormat({ maximumFractionDigits: digits }).format(v);
  }

  /** "spindle_bearing" -> "Spindle bearing" */
  function humanizeKey(key) {
    const s = String(key ?? '').replace(/[_-]+/g, ' ').trim();
    return s ? s[0].toUpperCase() + s.slice(1) : '—';
  }

  function healthStatus(s) {
    return Object.prototype.hasOwnProperty.call(SEVERITY, s) ? s : 'unknown';
  }

  /** A status badge: the word is the signal, the colour only repeats it. */
  function statusBadge(status) {
    const s = healthStatus(status);
    return `<span class="badge badge-${s}">${esc(HEALTH_LABEL[s])}</span>`;
  }

  /** A badge for any workflow state ("scheduled", "declined", …), named in words. */
  function stateBadge(state) {
    const s = String(state ?? 'unknown');
    return `<span class="badge badge-state badge-state-${esc(s.replace(/[^a-z_]/g, ''))}">${esc(humanizeKey(s))}</span>`;
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

  // ---------------------------------------------------------------- DOM

  const $ = (id) => document.getElementById(id);
  const rendered = new WeakMap();

  /** Writes HTML into a container only when it changed; keeps keyboard focus and open forms. */
  function setHtml(el, html) {
    if (!el || rendered.get(el) === html) return false;
    const active = document.activeElement;
    const focusKey = active && el.contains(active) ? active.getAttribute('data-focus') : null;
    el.innerHTML = html;
    rendered.set(el, html);
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

  /** The CSRF token the server set with the session cookie (sent back on changes). */
  function csrfToken() {
    const m = /(?:^|;\s*)wearcast_csrf=([^;]*)/.exec(document.cookie);
    return m ? m[1] : '';
  }

  /** Not signed in (or the token expired or was revoked): to the sign-in page and back. */
  function toSignIn() {
    location.assign(`/signin?next=${encodeURIComponent(location.pathname + location.search + location.hash)}`);
  }

  async function request(method, path, body) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const init = {
        method,
        signal: controller.signal,
        cache: 'no-store',
        credentials: 'same-origin',
        headers: { Accept: 'application/json' },
      };
      if (method !== 'GET') init.headers['X-CSRF-Token'] = csrfToken();
      if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      const res = await fetch(API + path, init);
      if (res.status === 401) toSignIn();
      if (!res.ok) {
        let message = `HTTP ${res.status}`;
        try {
          const answer = await res.json();
          if (answer && answer.error) message = String(answer.error);
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

  const getJson = (path) => request('GET', path);
  const postJson = (path, body) => request('POST', path, body ?? {});

  // ---------------------------------------------------------------- header and polling

  function renderClock() {
    const el = $('platform-clock');
    if (!el || !clock.info) return;
    const speed = Number(clock.info.clock_speed);
    let text = `Platform time: ${formatUtc(clock.info.now)}`;
    if (speed > 1) text += ` (×${speed.toLocaleString(LOCALE, { useGrouping: false, maximumFractionDigits: 1 })} demo speed)`;
    setText(el, text);
    setText($('version'), clock.info.version ? `v${clock.info.version}` : '');
  }

  let lastUpdate = null;

  /** The "Updated 12:00:03" / "Connection lost" indicator: words and an icon, not only colour. */
  function renderRefreshState(error) {
    const el = $('refresh-state');
    if (!el) return;
    if (!error) lastUpdate = new Date();
    const indicator = el.closest('.conn-indicator');
    const time = lastUpdate
      ? dateFormat({ hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }, 'local').format(lastUpdate)
      : null;
    const mode = error ? 'lost' : 'ok';
    setText(el, error ? `Connection lost — retrying${time ? ` (last update ${time})` : ''}` : `Updated ${time}`);
    if (indicator) indicator.dataset.state = mode;
    const announce = $('refresh-announce');
    if (announce && announce.dataset.last !== mode) {
      announce.dataset.last = mode;
      setText(announce, error ? 'Connection lost, retrying.' : 'Live data connected.');
    }
  }

  /**
   * Calls `tick(info)` now and then every `intervalMs` while the page is visible, never
   * two at once. `info` is the promise of this round's /info (the platform clock),
   * fetched alongside: `tick` starts its own requests at once and awaits `info` before it
   * renders anything that reads the clock. A thrown error marks the connection as lost.
   * Returns `{ now() }` to refresh at once (after an action).
   */
  function poll(intervalMs, tick) {
    let timer = 0;
    let running = false;
    let inflight = false;
    let again = false;
    async function run() {
      clearTimeout(timer);
      if (inflight) {
        again = true;
        return;
      }
      inflight = true;
      try {
        const info = getJson('/info').then(setInfo);
        // Awaited twice on purpose: if `tick` fails first, `info` must not reject unheard.
        info.catch(() => {});
        await tick(info);
        await info;
        renderClock();
        renderRefreshState(null);
      } catch (err) {
        renderRefreshState(err || true);
      }
      inflight = false;
      if (again) {
        again = false;
        run();
        return;
      }
      if (running) timer = setTimeout(run, intervalMs);
    }
    function start() {
      if (running) return;
      running = true;
      run();
    }
    function stop() {
      running = false;
      clearTimeout(timer);
    }
    document.addEventListener('visibilitychange', () => (document.hidden ? stop() : start()));
    if (!document.hidden) start();
    return { now: run };
  }

  /** Runs `fn` once the DOM is ready. */
  function ready(fn) {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', fn);
    else fn();
  }

  // ---------------------------------------------------------------- charts

  /**
   * Round tick values inside [min, max], about `count` of them; with `cover`, from the
   * last tick at or below `min` to the first at or above `max` (an axis that holds every
   * value); with `integer`, whole steps only (counts).
   */
  function niceTicks(min, max, count = 5, { cover = false, integer = false } = {}) {
    const span = max - min;
    if (!(span > 0)) return [min];
    const raw = span / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    let step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count) ?? 10 * mag;
    if (integer) step = Math.max(1, Math.round(step));
    const first = cover ? Math.floor(min / step + 1e-9) * step : Math.ceil(min / step - 1e-9) * step;
    const last = cover ? Math.ceil(max / step - 1e-9) * step : max;
    const ticks = [];
    for (let v = first; v <= last + step * 1e-9; v += step) {
      ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return ticks;
  }

  /** The offset of `tz` from UTC at `ms`, in milliseconds (Berlin in winter: +1 h). */
  function zoneOffset(ms, tz) {
    const p = Object.fromEntries(
      dateFormat(
        { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' },
        tz,
      )
        .formatToParts(ms)
        .map((x) => [x.type, x.value]),
    );
    const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
    return asUtc - Math.floor(ms / 1000) * 1000;
  }

  const TIME_STEPS = [
    HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR,
    DAY, 2 * DAY, 7 * DAY, 14 * DAY, 28 * DAY, 91 * DAY, 182 * DAY, 364 * DAY,
  ];
  // 1970-01-01 was a Thursday: week ticks fall on Mondays.
  const WEEK_ALIGN = 4 * DAY;

  /**
   * Time ticks at whole local hours, midnights or Mondays in `tz`, at most `count` of
   * them, with their labels: `{ ticks: [{ t, label: [line1, line2?] }], zone }`.
   */
  function timeTicks(t0, t1, count, tz) {
    const zone = validTimeZone(tz) ? tz : 'UTC';
    const span = t1 - t0;
    const step = TIME_STEPS.find((s) => span / s <= count) ?? TIME_STEPS[TIME_STEPS.length - 1];
    const align = step >= 7 * DAY ? WEEK_ALIGN : 0;
    const ticks = [];
    let local = Math.ceil((t0 + zoneOffset(t0, zone) - align) / step) * step + align;
    for (let guard = 0; guard < 200; guard++) {
      // Local wall time -> UTC instant (the offset at that instant; DST shifts a tick by an hour at most).
      const t = local - zoneOffset(local - zoneOffset(local, zone), zone);
      if (t > t1) break;
      if (t >= t0) ticks.push(t);
      local += step;
    }
    const dayFmt = dateFormat({ day: 'numeric', month: 'short' }, zone);
    const timeFmt = dateFormat(TIME_ONLY, zone);
    let prevDay = null;
    return {
      zone,
      ticks: ticks.map((t) => {
        const d = dayFmt.format(t);
        let label;
        if (step < DAY) label = d !== prevDay ? [timeFmt.format(t), d] : [timeFmt.format(t)];
        else label = [d];
        prevDay = d;
        return { t, label };
      }),
    };
  }

  /** SVG for a y axis with grid lines: `y(v)` maps values, `format(v)` labels them. */
  function yAxisSvg({ ticks, y, left, width, format }) {
    return ticks
      .map(
        (v) => `<g class="c-tick">
          <line class="c-grid" x1="${left}" x2="${left + width}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}"/>
          <text x="${left - 8}" y="${y(v).toFixed(1)}" dy="0.32em" text-anchor="end">${esc(format(v))}</text>
        </g>`,
      )
      .join('');
  }

  /** SVG for a time axis with grid lines below a plot at `top`..`bottom`. */
  function xTimeAxisSvg({ ticks, x, top, bottom }) {
    return ticks
      .map(({ t, label }) => {
        const xx = x(t).toFixed(1);
        return `<g class="c-tick">
          <line class="c-grid" x1="${xx}" x2="${xx}" y1="${top}" y2="${bottom}"/>
          <text x="${xx}" y="${bottom + 16}" text-anchor="middle">${esc(label[0])}${
            label[1] ? `<tspan x="${xx}" dy="1.2em">${esc(label[1])}</tspan>` : ''
          }</text>
        </g>`;
      })
      .join('');
  }

  /** A legend: each entry a small SVG sample and its words, so no entry relies on colour. */
  function legendHtml(entries, label = 'Chart legend') {
    return `<ul class="legend" aria-label="${esc(label)}">${entries
      .map((e) => `<li><svg width="28" height="14" aria-hidden="true">${e.sample}</svg>${esc(e.text)}</li>`)
      .join('')}</ul>`;
  }

  /**
   * A horizontal bar chart with a value axis: `rows` [{ label, value, cls, text }],
   * `format(v)` for the axis, `unit` named in the axis title. Each bar carries its
   * value as text, so the chart reads without colour.
   */
  function barChartSvg({ id, title, rows, width, format, axisTitle, integer = false, minTop = null }) {
    const barH = 26;
    const gap = 10;
    // Room for the longest label (about 6.6 px a character at 12 px), at most 45%.
    const labelW = Math.max(...rows.map((r) => String(r.label).length)) * 6.6 + 14;
    const m = { top: 8, right: 90, bottom: 44, left: Math.round(Math.min(width * 0.45, Math.max(60, labelW))) };
    const height = m.top + m.bottom + rows.length * (barH + gap);
    const iw = Math.max(60, width - m.left - m.right);
    // `minTop`: the axis reaches at least this far (e.g. 1 for shares), so an empty
    // chart still has a readable scale.
    const max = Math.max(minTop ?? (integer ? 1 : 1e-9), ...rows.map((r) => r.value));
    const ticks = niceTicks(0, max, Math.max(2, Math.floor(iw / 80)), { cover: true, integer });
    const top = ticks[ticks.length - 1] || max;
    const x = (v) => m.left + (v / top) * iw;
    const bars = rows
      .map((r, i) => {
        const y = m.top + i * (barH + gap);
        const w = Math.max(0, x(r.value) - m.left);
        return `<g>
          <text class="c-bar-label" x="${m.left - 8}" y="${y + barH / 2}" dy="0.32em" text-anchor="end">${esc(r.label)}</text>
          <rect class="c-bar ${esc(r.cls ?? '')}" x="${m.left}" y="${y}" width="${w.toFixed(1)}" height="${barH}"/>
          <text class="c-bar-value" x="${(m.left + w + 6).toFixed(1)}" y="${y + barH / 2}" dy="0.32em">${esc(r.text ?? format(r.value))}</text>
        </g>`;
      })
      .join('');
    const plotBottom = m.top + rows.length * (barH + gap) - gap;
    const grid = ticks
      .map(
        (v) => `<g class="c-tick">
          <line class="c-grid" x1="${x(v).toFixed(1)}" x2="${x(v).toFixed(1)}" y1="${m.top}" y2="${plotBottom}"/>
          <text x="${x(v).toFixed(1)}" y="${plotBottom + 16}" text-anchor="middle">${esc(format(v))}</text>
        </g>`,
      )
      .join('');
    const desc = rows.map((r) => `${r.label}: ${r.text ?? format(r.value)}`).join('; ');
    return `<figure class="chart">
      <svg class="chart-svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-labelledby="${id}-t ${id}-d">
        <title id="${id}-t">${esc(title)}</title>
        <desc id="${id}-d">${esc(desc)}</desc>
        ${grid}${bars}
        <line class="c-axis" x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${plotBottom}"/>
        <line class="c-axis" x1="${m.left}" x2="${m.left + iw}" y1="${plotBottom}" y2="${plotBottom}"/>
        <text class="c-axis-title" x="${m.left + iw / 2}" y="${height - 6}" text-anchor="middle">${esc(axisTitle)}</text>
      </svg>
    </figure>`;
  }

  window.Wearcast = Object.freeze({
    HOUR, DAY, SEVERITY, HEALTH_LABEL, LOCALE,
    setInfo, platformNow,
    esc, toMs, validTimeZone, dateFormat, formatUtc, formatInZone, formatDate, formatDay, formatTime,
    dayKey, formatWindow, humanSpan, relativeTime, rulShort, rulAbout, rulBand, percent, money,
    formatNumber, humanizeKey, healthStatus, statusBadge, stateBadge, connectionBadge, healthBar,
    $, setHtml, setText,
    HttpError, getJson, postJson,
    renderClock, renderRefreshState, poll, ready,
    niceTicks, timeTicks, yAxisSvg, xTimeAxisSvg, legendHtml, barChartSvg,
  });
})();
