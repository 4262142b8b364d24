// Wearcast — the field-service view (/service): work orders by technician and day,
// each with the parts to bring, the site, the machine and why; a completion form
// (as-found condition per part, notes); assignment of unassigned work; and a machine's
// history (ended lives and past visits).
'use strict';

(() => {
  const W = window.Wearcast;
  const { esc, $, setHtml, setText, toMs } = W;

  const POLL_MS = 4000;
  const AS_FOUND = [
    ['worn', 'Worn (replaced in time)'],
    ['good', 'Good (could have run longer)'],
    ['failed', 'Failed'],
  ];

  const state = {
    technicians: [],
    workOrders: null,
    filter: { technician: '', status: 'open' },
    history: null, // machine id whose history is shown
    historyData: null,
  };

  // Forms are built once per work order and moved into the re-rendered card, so a
  // refresh never loses what the technician is typing.
  const formNodes = new Map();

  function techName(id) {
    return state.technicians.find((t) => t.id === id)?.name ?? id;
  }

  function visible() {
    const f = state.filter;
    return (state.workOrders ?? []).filter((wo) => {
      if (f.status === 'open' && !['scheduled', 'unassigned'].includes(wo.status)) return false;
      if (f.status === 'completed' && wo.status !== 'completed') return false;
      if (f.technician && wo.technician !== f.technician) return false;
      return true;
    });
  }

  function start(wo) {
    return toMs(wo.booked_start ?? wo.window_start);
  }

  function partsToBring(orders) {
    const count = new Map();
    for (const wo of orders) {
      for (const c of wo.components) {
        const key = `${c.part_name || c.part} (${c.part})`;
        count.set(key, (count.get(key) ?? 0) + 1);
      }
    }
    return [...count.entries()].map(([name, n]) => `${n} × ${name}`).join(', ');
  }

  function workOrderCard(wo) {
    const tz = wo.timezone;
    const when = wo.booked_start
      ? `${W.formatTime(wo.booked_start, tz)}–${W.formatTime(wo.booked_end, tz)}`
      : `stop ${W.formatWindow(wo.window_start, wo.window_end, tz)}`;
    const parts = wo.components
      .map((c) => `<li><strong>${esc(c.part_name || c.part)}</strong> <span class="comp-meta">part ${esc(c.part)} · for ${esc(W.humanizeKey(c.component))}${
        c.as_found ? ` · found ${esc(c.as_found)}` : ''}${c.notes ? ` · ${esc(c.notes)}` : ''}</span></li>`)
      .join('');
    const titleId = `wo-${esc(wo.id)}-title`;
    return `<article class="work-order" aria-labelledby="${titleId}" data-work-order="${esc(wo.id)}">
      <header class="offer-head">
        <h4 id="${titleId}"><span class="wo-time">${esc(when)}</span> · ${esc(wo.machine)} <span class="machine-model">${esc(wo.machine_model)}</span></h4>
        ${W.stateBadge(wo.status)}
      </header>
      <dl class="wo-facts">
        <div><dt>Site</dt><dd>${esc(wo.site_name)} <span class="muted">(${esc(tz)}${wo.travel_minutes ? `, ${wo.travel_minutes} min travel` : ''})</span></dd></div>
        <div><dt>Work order</dt><dd>${esc(wo.id)}</dd></div>
        ${wo.completed_at ? `<div><dt>Completed</dt><dd>${esc(W.formatInZone(wo.completed_at, tz))}</dd></div>` : ''}
      </dl>
      <p class="label">Parts to bring</p>
      <ul class="offer-comps">${parts}</ul>
      <p class="wo-why"><span class="label">Why</span> ${esc(wo.reason || '—')}</p>
      ${wo.notes ? `<p class="wo-notes"><span class="label">Notes</span> ${esc(wo.notes)}</p>` : ''}
      <div class="wo-actions">
        <button type="button" class="btn btn-small" data-history="${esc(wo.machine)}" data-focus="hist-${esc(wo.id)}">Machine history<span class="visually-hidden"> of ${esc(wo.machine)}</span></button>
      </div>
      <div data-form-slot="${esc(wo.id)}"></div>
    </article>`;
  }

  /** Whether the planned stop the visit is booked in has not begun on the platform clock. */
  function notDueYet(wo) {
    const begins = toMs(wo.window_start);
    return begins !== null && begins > W.platformNow();
  }

  function formNode(wo) {
    // A visit that has not begun asks the technician to confirm the work was done early
    // (the API refuses it otherwise: most often it is the wrong card). The form is
    // rebuilt once when the visit begins.
    const early = wo.status === 'scheduled' && notDueYet(wo);
    const key = `${wo.id}:${wo.status}:${wo.technician ?? ''}:${early}`;
    let node = formNodes.get(key);
    if (node) return node;
    const id = esc(wo.id);
    node = document.createElement('div');
    if (wo.status === 'scheduled') {
      const fields = wo.components
        .map((c, i) => `<fieldset>
          <legend>${esc(c.part_name || c.part)} for ${esc(W.humanizeKey(c.component))}</legend>
          <input type="hidden" name="component-${i}" value="${esc(c.component)}">
          <label for="found-${id}-${i}">As found</label>
          <select id="found-${id}-${i}" name="as_found-${i}" required>
            ${AS_FOUND.map(([v, l]) => `<option value="${v}">${esc(l)}</option>`).join('')}
          </select>
          <label for="cnotes-${id}-${i}">Notes on this part</label>
          <input id="cnotes-${id}-${i}" name="notes-${i}" type="text" maxlength="500" placeholder="e.g. outer race pitted">
        </fieldset>`)
        .join('');
      node.innerHTML = `<details class="offer-more">
        <summary>Record completion<span class="visually-hidden"> of ${id}</span></summary>
        <form class="complete-form" data-complete-form="${id}" data-components="${wo.components.length}">
          ${fields}
          <label for="notes-${id}">Notes on the visit</label>
          <textarea id="notes-${id}" name="notes" rows="2" maxlength="2000"></textarea>
          ${early ? `<p class="early-note"><input id="early-${id}" name="early" type="checkbox" value="yes" required>
            <label for="early-${id}">Done before the planned stop it is booked in
              (${esc(W.formatWindow(wo.window_start, wo.window_end, wo.timezone))})</label></p>` : ''}
          <button type="submit" class="btn btn-primary">Complete work order</button>
        </form>
      </details>`;
    } else if (wo.status === 'unassigned') {
      const options = state.technicians
        .filter((t) => t.active && t.skills.includes(wo.machine_model))
        .map((t) => `<option value="${esc(t.id)}">${esc(t.name)} (${esc(t.home_region)})</option>`)
        .join('');
      node.innerHTML = `<form class="inline-form" data-assign-form="${id}">
        <label for="assign-${id}">Assign to</label>
        <select id="assign-${id}" name="technician" required>${options || '<option value="">No qualified technician</option>'}</select>
        <button type="submit" class="btn">Assign</button>
      </form>`;
    }
    formNodes.set(key, node);
    return node;
  }

  function renderSchedule() {
    const orders = visible().sort((a, b) => start(a) - start(b) || a.id.localeCompare(b.id));
    setText(
      $('schedule-note'),
      `${orders.length} work order${orders.length === 1 ? '' : 's'}. Days and times in each site's local time.`,
    );
    if (!orders.length) {
      setHtml($('schedule-list'), '<p class="empty">No work orders here. Accepted offers become work orders.</p>');
      return;
    }
    // technician -> day -> orders; unassigned work first.
    const byTech = new Map();
    for (const wo of orders) {
      const tech = wo.technician ?? '';
      if (!byTech.has(tech)) byTech.set(tech, new Map());
      const day = W.dayKey(start(wo), wo.timezone);
      const days = byTech.get(tech);
      if (!days.has(day)) days.set(day, []);
      days.get(day).push(wo);
    }
    const techs = [...byTech.keys()].sort((a, b) => (a === '' ? -1 : b === '' ? 1 : techName(a).localeCompare(techName(b))));
    const html = techs
      .map((tech) => {
        const days = byTech.get(tech);
        const title = tech ? techName(tech) : 'Not yet assigned';
        const all = [...days.values()].flat();
        const dayHtml = [...days.entries()]
          .map(([, list]) => {
            const first = list[0];
            return `<section class="day" aria-label="${esc(`${title}, ${W.formatDay(start(first), first.timezone)}`)}">
              <h4 class="day-head">${esc(W.formatDay(start(first), first.timezone))}
                <span class="muted">· ${list.length} visit${list.length === 1 ? '' : 's'} · bring ${esc(partsToBring(list))}</span></h4>
              <div class="wo-list">${list.map(workOrderCard).join('')}</div>
            </section>`;
          })
          .join('');
        return `<section class="tech" aria-labelledby="tech-${esc(tech || 'none')}">
          <h3 id="tech-${esc(tech || 'none')}">${esc(title)} <span class="muted">· ${all.length} work order${all.length === 1 ? '' : 's'}</span></h3>
          ${dayHtml}
        </section>`;
      })
      .join('');
    const el = $('schedule-list');
    setHtml(el, html);
    const used = new Set();
    for (const slot of el.querySelectorAll('[data-form-slot]')) {
      const wo = orders.find((o) => o.id === slot.getAttribute('data-form-slot'));
      const node = wo && formNode(wo);
      if (!node) continue;
      used.add(node);
      if (node.parentNode !== slot) slot.appendChild(node);
    }
    // The forms of work orders no longer shown (completed, cancelled, filtered out) are
    // let go, so a tablet left open for days does not keep every form it ever showed.
    for (const [key, node] of formNodes) {
      if (!used.has(node)) formNodes.delete(key);
    }
  }

  function renderTechnicians() {
    const select = $('tech-select');
    const html = `<option value="">All technicians</option>${state.technicians
      .map((t) => `<option value="${esc(t.id)}">${esc(t.name)} (${esc(t.home_region)})</option>`)
      .join('')}`;
    if (setHtml(select, html)) select.value = state.filter.technician;
  }

  // ---------------------------------------------------------------- machine history

  function renderHistory() {
    const section = $('history');
    section.hidden = !state.history;
    if (!state.history) return;
    setText($('history-heading'), `Machine history: ${state.history}`);
    const h = state.historyData;
    if (!h) {
      setHtml($('history-body'), '<p class="muted">Loading history…</p>');
      return;
    }
    // Dates in the machine's site's zone (named in the table's caption).
    const tz = h.timezone;
    const lives = h.lives.length
      ? `<div class="table-scroll"><table class="data-table">
          <caption>Ended component lives, newest first (dates in site time, ${esc(tz)})</caption>
          <thead><tr><th scope="col">Component</th><th scope="col">Part</th><th scope="col">Installed</th><th scope="col">Ended</th>
            <th scope="col">Life</th><th scope="col">How it ended</th><th scope="col">As found</th><th scope="col">Work order</th></tr></thead>
          <tbody>${h.lives
            .map((l) => `<tr><th scope="row">${esc(W.humanizeKey(l.component))}</th><td>${esc(l.part)}</td>
              <td>${esc(W.formatDate(l.installed_at, tz))}</td><td>${esc(W.formatDate(l.ended_at, tz))}</td>
              <td class="num-cell">${esc(W.humanSpan(l.life_hours))}</td><td>${W.stateBadge(l.end_reason)}</td>
              <td>${l.as_found ? W.stateBadge(l.as_found) : '<span class="muted">—</span>'}</td><td>${esc(l.work_order ?? '—')}</td></tr>`)
            .join('')}</tbody></table></div>`
      : '<p class="empty">No ended lives yet: every component is on its first install.</p>';
    const visits = h.orders.length
      ? `<ul class="plain">${h.orders
          .map((wo) => `<li>${W.stateBadge(wo.status)} ${esc(W.formatInZone(wo.completed_at ?? wo.booked_start ?? wo.window_start, wo.timezone))} —
            ${esc(wo.components.map((c) => `${c.part_name || c.part}${c.as_found ? ` (found ${c.as_found})` : ''}`).join(', '))}
            ${wo.technician_name ? `· ${esc(wo.technician_name)}` : ''}${wo.notes ? ` · “${esc(wo.notes)}”` : ''}</li>`)
          .join('')}</ul>`
      : '<p class="empty">No visits yet.</p>';
    setHtml($('history-body'), `<h3>Visits</h3>${visits}<h3>Component lives</h3>${lives}`);
  }

  async function loadHistory() {
    if (!state.history) return;
    const id = encodeURIComponent(state.history);
    const [lives, orders, machine] = await Promise.all([
      W.getJson(`/machines/${id}/lives`),
      W.getJson(`/work-orders?machine=${id}`),
      W.getJson(`/machines/${id}`),
    ]);
    state.historyData = {
      lives,
      timezone: machine.timezone,
      orders: orders.sort((a, b) => (toMs(b.completed_at ?? b.window_start) ?? 0) - (toMs(a.completed_at ?? a.window_start) ?? 0)),
    };
  }

  // ---------------------------------------------------------------- loading and actions

  async function tick(info) {
    const [technicians, workOrders] = await Promise.all([W.getJson('/technicians'), W.getJson('/work-orders'), info]);
    state.technicians = technicians.sort((a, b) => a.name.localeCompare(b.name));
    state.workOrders = workOrders;
    await loadHistory();
    renderTechnicians();
    renderSchedule();
    renderHistory();
  }

  async function act(what, fn) {
    const out = $('wo-result');
    setText(out, `${what}…`);
    try {
      setText(out, await fn());
    } catch (err) {
      setText(out, `${what} failed: ${err.message}`);
    }
    refresher.now();
  }

  function onSubmit(event) {
    const form = event.target;
    if (form.id === 'filter-form') return event.preventDefault();
    const complete = form.getAttribute('data-complete-form');
    const assign = form.getAttribute('data-assign-form');
    if (!complete && !assign) return;
    event.preventDefault();
    const data = new FormData(form);
    if (complete) {
      const n = Number(form.getAttribute('data-components'));
      const components = [];
      for (let i = 0; i < n; i++) {
        components.push({
          component: String(data.get(`component-${i}`)),
          as_found: String(data.get(`as_found-${i}`)),
          notes: String(data.get(`notes-${i}`) ?? '').trim(),
        });
      }
      act(`Completing ${complete}`, async () => {
        await W.postJson(`/work-orders/${encodeURIComponent(complete)}/complete`, {
          components,
          notes: String(data.get('notes') ?? '').trim(),
          early: data.get('early') === 'yes',
        });
        return `Work order ${complete} completed; the parts' as-found condition feeds the wear models.`;
      });
    } else {
      const technician = String(data.get('technician') ?? '');
      if (!technician) return;
      act(`Assigning ${assign}`, async () => {
        const wo = await W.postJson(`/work-orders/${encodeURIComponent(assign)}/assign`, { technician });
        return `Work order ${assign} booked with ${wo.technician_name ?? technician}.`;
      });
    }
  }

  let refresher = { now() {} };

  W.ready(() => {
    const q = new URLSearchParams(location.search);
    state.filter.technician = q.get('technician') ?? '';
    if (['open', 'completed', 'all'].includes(q.get('status'))) state.filter.status = q.get('status');
    $('status-select').value = state.filter.status;
    state.history = q.get('machine');
    const sync = () => {
      const p = new URLSearchParams();
      if (state.filter.technician) p.set('technician', state.filter.technician);
      if (state.filter.status !== 'open') p.set('status', state.filter.status);
      if (state.history) p.set('machine', state.history);
      history.replaceState(null, '', `${location.pathname}${p.toString() ? `?${p}` : ''}`);
    };
    document.addEventListener('submit', onSubmit);
    document.addEventListener('change', (e) => {
      if (e.target.id === 'tech-select' || e.target.id === 'status-select') {
        state.filter.technician = $('tech-select').value;
        state.filter.status = $('status-select').value;
        sync();
        renderSchedule();
      }
    });
    document.addEventListener('click', (e) => {
      const t = e.target instanceof Element ? e.target : null;
      const hist = t?.closest('[data-history]');
      if (hist) {
        state.history = hist.getAttribute('data-history');
        state.historyData = null;
        sync();
        renderHistory();
        $('history').scrollIntoView({ behavior: 'smooth', block: 'start' });
        $('history-heading').focus({ preventScroll: true });
        refresher.now();
      } else if (t?.closest('#history-close')) {
        state.history = null;
        sync();
        renderHistory();
      }
    });
    refresher = W.poll(POLL_MS, tick);
  });
})();
