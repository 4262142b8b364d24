// Wearcast — the manufacturer's view (/manufacturer): the service business. After-sales
// KPIs over a period, for the whole tenant or one customer (offers and why they were declined, service revenue by parts /
// labour / contracts, failures predicted in time vs unplanned, lead time, downtime
// avoided, retention, NPS, LTV) from /api/v1/kpis, the accounts with contract,
// renewal, health and churn signals from /api/v1/accounts, and how the live model's
// predictions fared against the lives that ended, from /api/v1/model-quality, and the
// backtests published on run-to-failure history, from /api/v1/model-quality/backtests.
'use strict';

(() => {
  const W = window.Wearcast;
  const { esc, $, setHtml, setText, DAY } = W;

  const POLL_MS = 5000;
  const state = { periodDays: 365, customer: '', kpis: null, accounts: null, quality: null, backtests: null };

  function ratio(v) {
    return v === null || v === undefined ? '—' : W.percent(v);
  }

  function tile(label, value, detail = '') {
    return `<li class="stat"><span class="stat-value">${esc(value)}</span>
      <span class="stat-label">${esc(label)}</span>${detail ? `<span class="stat-detail muted small">${esc(detail)}</span>` : ''}</li>`;
  }

  function renderKpis() {
    const v = state.kpis;
    if (!v) return;
    const k = v.kpis;
    const cur = v.currency;
    const m = (c) => W.money(c, cur);
    setText(
      $('kpis-note'),
      `${W.formatDate(v.period.from)} to ${W.formatDate(v.period.to)} (UTC), ${customerLabel()}; money in ${cur}.`,
    );
    setHtml(
      $('kpi-tiles'),
      `<ul class="stats kpi-stats" aria-label="Key figures">
        ${tile('Offers proposed', String(k.offers.proposed), `${k.offers.accepted} accepted · ${k.offers.declined} declined · ${k.offers.expired} expired`)}
        ${tile('Acceptance rate', ratio(k.offers.acceptance_rate), 'accepted ÷ (accepted + declined)')}
        ${tile('Service revenue', m(k.revenue.total_cents), `parts ${m(k.revenue.parts_cents)} · labour ${m(k.revenue.labour_cents)} · contracts ${m(k.revenue.contracts_cents)}`)}
        ${tile('Failures predicted in time', ratio(k.failures.in_time_rate), `${k.failures.predicted_in_time} in time · ${k.failures.failed_before_visit} before the visit · ${k.failures.unplanned} unplanned`)}
        ${tile('Median lead time', k.failures.median_lead_time_h === null ? '—' : W.humanSpan(k.failures.median_lead_time_h), 'first offer to completed replacement')}
        ${tile('Downtime avoided', `${W.formatNumber(k.failures.downtime_avoided_h, 0)} h`, m(k.failures.downtime_avoided_cents))}
        ${tile('Renewal rate', ratio(k.retention.renewal_rate), `${k.retention.renewed} renewed · ${k.retention.lapsed} lapsed · ${k.retention.pending} pending`)}
        ${tile('NPS', k.feedback.nps === null ? '—' : W.formatNumber(k.feedback.nps, 0), `${k.feedback.answers} answers · response rate ${ratio(k.feedback.response_rate)}`)}
        ${tile('Customer lifetime value', m(k.ltv.total_cents), `${k.ltv.customers} customers · average ${k.ltv.average_cents === null ? '—' : m(k.ltv.average_cents)}`)}
      </ul>`,
    );
    const width = (el) => Math.max(300, Math.round(el.clientWidth || 420));
    const count = (n) => W.formatNumber(n, 0);
    const offersEl = $('chart-offers');
    setHtml(
      offersEl,
      `<h3>Offers by outcome</h3>${W.barChartSvg({
        id: 'offers-chart',
        title: 'Offers by outcome in the period',
        width: width(offersEl),
        format: count,
        integer: true,
        axisTitle: 'Offers (count)',
        rows: [
          { label: 'Proposed', value: k.offers.proposed, cls: 'c-bar-neutral' },
          { label: 'Accepted', value: k.offers.accepted, cls: 'c-bar-good' },
          { label: 'Declined', value: k.offers.declined, cls: 'c-bar-bad' },
          { label: 'Expired', value: k.offers.expired, cls: 'c-bar-muted' },
        ],
      })}`,
    );
    const revEl = $('chart-revenue');
    setHtml(
      revEl,
      `<h3>Service revenue by source</h3>${W.barChartSvg({
        id: 'revenue-chart',
        title: `Service revenue by source in ${cur}`,
        width: width(revEl),
        format: (c) => m(c),
        axisTitle: `Revenue (${cur})`,
        rows: [
          { label: 'Parts', value: k.revenue.parts_cents, cls: 'c-bar-neutral' },
          { label: 'Labour and travel', value: k.revenue.labour_cents, cls: 'c-bar-neutral' },
          { label: 'Contracts', value: k.revenue.contracts_cents, cls: 'c-bar-good' },
        ],
      })}`,
    );
    const failEl = $('chart-failures');
    setHtml(
      failEl,
      `<h3>Failures: predicted in time vs not</h3>${W.barChartSvg({
        id: 'failures-chart',
        title: 'Component ends by whether they were predicted in time',
        width: width(failEl),
        format: count,
        integer: true,
        axisTitle: 'Component lives (count)',
        rows: [
          { label: 'Replaced in time', value: k.failures.predicted_in_time, cls: 'c-bar-good' },
          { label: 'Failed before the visit', value: k.failures.failed_before_visit, cls: 'c-bar-warn' },
          { label: 'Unplanned failures', value: k.failures.unplanned, cls: 'c-bar-bad' },
        ],
      })}`,
    );
    const reasons = k.offers.decline_reasons;
    setHtml(
      $('decline-reasons'),
      `<h3>Why offers were declined</h3>${
        reasons.length
          ? `<div class="table-scroll"><table class="data-table"><caption class="visually-hidden">Decline reasons, most frequent first</caption>
              <thead><tr><th scope="col">Reason</th><th scope="col">Offers</th></tr></thead>
              <tbody>${reasons.map((r) => `<tr><th scope="row">${esc(r.reason)}</th><td class="num-cell">${r.count}</td></tr>`).join('')}</tbody></table></div>`
          : '<p class="empty">No offer was declined in this period.</p>'
      }`,
    );
  }

  function healthCell(a) {
    const score = W.formatNumber(a.health_score, 0);
    const label = a.flagged ? 'At risk' : 'Healthy';
    return `<span class="badge ${a.flagged ? 'badge-critical' : 'badge-healthy'}">${label}</span> <span class="num">${score}/100</span>`;
  }

  function customerLabel() {
    if (!state.customer) return 'all customers';
    const a = (state.accounts ?? []).find((x) => x.customer === state.customer);
    return a ? `${a.name} (${a.customer})` : state.customer;
  }

  // The drill-down's choices: every account, by name.
  function renderCustomerChoice() {
    const list = [...(state.accounts ?? [])].sort((a, b) => a.name.localeCompare(b.name));
    const html = ['<option value="">All customers</option>']
      .concat(list.map((a) => `<option value="${esc(a.customer)}"${a.customer === state.customer ? ' selected' : ''}>${esc(a.name)} (${esc(a.customer)})</option>`))
      .join('');
    const select = $('kpi-customer');
    if (setHtml(select, html)) select.value = state.customer;
  }

  function syncUrl() {
    const q = new URLSearchParams({ days: String(state.periodDays) });
    if (state.customer) q.set('customer', state.customer);
    history.replaceState(null, '', `${location.pathname}?${q}`);
  }

  function renderAccounts() {
    const list = state.accounts;
    if (!list) return;
    const flagged = list.filter((a) => a.flagged).length;
    setText($('accounts-note'), `${list.length} accounts, ${flagged} at risk. Lowest health first.`);
    if (!list.length) {
      setHtml($('accounts-table'), '<p class="empty">No customer accounts yet.</p>');
      return;
    }
    const rows = [...list]
      .sort((a, b) => a.health_score - b.health_score || a.name.localeCompare(b.name))
      .map((a) => {
        const c = a.contract;
        const signal = a.signals[0];
        const rec = a.recommendations[0];
        return `<tr>
          <th scope="row" data-label="Account">${esc(a.name)} <span class="comp-meta">${esc(a.customer)} · ${esc(a.lifecycle_stage)} · ${a.machines} machines</span></th>
          <td data-label="Contract">${c ? `${esc(W.humanizeKey(c.tier))} <span class="comp-meta">${esc(W.money(c.annual_fee_cents, a.currency))} a year</span>` : '<span class="muted">No contract</span>'}</td>
          <td data-label="Renewal">${a.renewal_date ? `${esc(W.formatDate(a.renewal_date))} <span class="comp-meta">${esc(W.relativeTime(a.renewal_date))}</span>` : '—'}</td>
          <td data-label="Health">${healthCell(a)}</td>
          <td data-label="Strongest churn signal">${signal ? `${esc(signal.reason)} <span class="comp-meta">since ${esc(W.formatDate(signal.since))}</span>` : '<span class="muted">None</span>'}</td>
          <td data-label="LTV" class="num-cell">${esc(W.money(a.ltv.ltv_cents, a.currency))}</td>
          <td data-label="Next proposal">${rec ? `${esc(W.humanizeKey(rec.kind))}: ${esc(W.humanizeKey(rec.tier))}` : '<span class="muted">—</span>'}</td>
        </tr>`;
      })
      .join('');
    setHtml(
      $('accounts-table'),
      `<div class="table-scroll"><table class="data-table accounts">
        <caption class="visually-hidden">Customer accounts with contract, renewal date, health score and churn signals</caption>
        <thead><tr><th scope="col">Account</th><th scope="col">Contract</th><th scope="col">Renewal</th><th scope="col">Health</th>
          <th scope="col">Strongest churn signal</th><th scope="col">LTV</th><th scope="col">Next proposal</th></tr></thead>
        <tbody>${rows}</tbody></table></div>`,
    );
  }

  function hours(h) {
    return h === null || h === undefined ? '—' : W.humanSpan(h);
  }

  function renderQuality() {
    const q = state.quality;
    if (!q) return;
    const o = q.overall;
    const [lo, hi] = q.target_inside;
    const w = q.warnings;
    const calibrated = o.inside === null ? null : o.inside >= lo && o.inside <= hi;
    setText(
      $('quality-note'),
      `Lives ended ${W.formatDate(q.period.from)} to ${W.formatDate(q.period.to)} (UTC); one prediction kept per component every ${W.humanSpan(q.sampled_every_h)}.`,
    );
    setHtml(
      $('quality-tiles'),
      `<ul class="stats kpi-stats" aria-label="Model quality figures">
        ${tile('Failures warned of', w.failures ? `${w.warned} of ${w.failures}` : '—', `median warning ${hours(w.median_lead_h)} before the failure`)}
        ${tile('Failures inside P10–P90', ratio(o.inside), calibrated === null ? `target ${W.percent(lo)}–${W.percent(hi)}; no failure scored yet` : `${calibrated ? 'within' : 'outside'} the ${W.percent(lo)}–${W.percent(hi)} target · ${o.scored} predictions`)}
        ${tile('Failed before P10 (late)', ratio(o.before_p10), 'the warning came too late')}
        ${tile('Failed after P90 (early)', ratio(o.after_p90), 'replaced with life left')}
        ${tile('Median P50 error', hours(o.p50_abs_error_h), o.p50_rel_error === null ? '' : `${W.percent(o.p50_rel_error)} of the remaining life`)}
        ${tile('Replacements: outlived P90', ratio(o.outlived_p90), `${o.censored} predictions of ${w.replacements} parts replaced before failure`)}
      </ul>`,
    );
    const el = $('chart-calibration');
    const bar = (label, v, cls) => ({ label, value: v ?? 0, cls, text: v === null || v === undefined ? '—' : undefined });
    setHtml(
      el,
      `<h3>Where failures fell in the predicted interval</h3>${W.barChartSvg({
        id: 'calibration-chart',
        title: 'Share of scored predictions by where the failure fell',
        width: Math.max(300, Math.round(el.clientWidth || 420)),
        format: (v) => `${W.formatNumber(100 * v, 0)}%`,
        minTop: 1,
        axisTitle: `Predictions (share of ${o.scored})`,
        rows: [
          bar('Before P10 (late)', o.before_p10, 'c-bar-bad'),
          bar('Inside P10–P90', o.inside, 'c-bar-good'),
          bar('After P90 (early)', o.after_p90, 'c-bar-warn'),
        ],
      })}`,
    );
    const row = (label, s) => `<tr><th scope="row">${esc(label)}</th><td class="num-cell">${s.scored}</td>
      <td class="num-cell">${esc(ratio(s.inside))}</td><td class="num-cell">${esc(ratio(s.before_p10))}</td>
      <td class="num-cell">${esc(ratio(s.after_p90))}</td><td class="num-cell">${esc(hours(s.p50_abs_error_h))}</td>
      <td class="num-cell">${esc(ratio(s.outlived_p90))}</td></tr>`;
    const rows = [
      ...q.by_status.map((s) => row(`Predicted while ${s.status}`, s)),
      ...q.by_part.map((p) => row(`Part ${p.part} (from its own trend)`, p.from_signal)),
    ];
    setHtml(
      $('quality-table'),
      `<div class="table-scroll"><table class="data-table">
        <caption>Calibration by the status the prediction was made in, and by part type</caption>
        <thead><tr><th scope="col">Predictions</th><th scope="col">Scored</th><th scope="col">Inside P10–P90</th>
          <th scope="col">Before P10</th><th scope="col">After P90</th><th scope="col">Median P50 error</th>
          <th scope="col">Outlived P90 (replaced)</th></tr></thead>
        <tbody>${rows.join('')}</tbody></table></div>`,
    );
  }

  function renderBacktests() {
    const list = state.backtests?.backtests;
    if (!list) return;
    if (!list.length) {
      setHtml($('backtests-table'), '<p class="empty">No backtest published yet.</p>');
      return;
    }
    const num = (v, digits = 1) => (v === null || v === undefined ? '—' : W.formatNumber(v, digits));
    const rows = list.map((b) => {
      const calibrated = b.coverage >= b.level - 0.1 && b.coverage <= b.level + 0.1;
      return `<tr data-backtest="${esc(b.id)}"><th scope="row">${esc(W.formatDate(b.recorded_at))}</th>
        <td>${esc(b.train)} → ${esc(b.test)}</td>
        <td class="num-cell">${b.training_runs}</td><td class="num-cell">${b.test_units}</td>
        <td class="num-cell">${esc(num(b.rmse))}</td><td class="num-cell">${esc(num(b.mae))}</td>
        <td class="num-cell">${esc(W.percent(b.coverage))} <span class="muted">(${calibrated ? 'on target' : 'off target'})</span></td>
        <td class="num-cell">${esc(W.percent(b.below_p10))}</td><td class="num-cell">${esc(W.percent(b.above_p90))}</td>
        <td class="num-cell">${esc(num(b.live_engine_rmse))}</td></tr>`;
    });
    setHtml(
      $('backtests-table'),
      `<div class="table-scroll"><table class="data-table">
        <caption>Published backtests: P50 error against the true remaining life, and where the truths fell in the interval
          (target: the interval's level ±10 points)</caption>
        <thead><tr><th scope="col">Published</th><th scope="col">Training → test data</th><th scope="col">Training runs</th>
          <th scope="col">Test units</th><th scope="col">RMSE (capped)</th><th scope="col">MAE</th>
          <th scope="col">Inside the interval</th><th scope="col">Below P10 (late)</th><th scope="col">Above P90 (early)</th>
          <th scope="col">Live engine RMSE</th></tr></thead>
        <tbody>${rows.join('')}</tbody></table></div>`,
    );
  }

  async function tick(info) {
    // The period ends at the platform's now (the demo's clock runs fast).
    await info;
    const to = W.platformNow();
    const from = new Date(to - state.periodDays * DAY).toISOString();
    const only = state.customer ? `&customer=${encodeURIComponent(state.customer)}` : '';
    const [kpis, accounts, quality, backtests] = await Promise.all([
      W.getJson(`/kpis?from=${encodeURIComponent(from)}${only}`),
      W.getJson('/accounts'),
      W.getJson(`/model-quality?from=${encodeURIComponent(from)}`),
      W.getJson('/model-quality/backtests'),
    ]);
    state.kpis = kpis;
    state.accounts = accounts;
    state.quality = quality;
    state.backtests = backtests;
    renderCustomerChoice();
    renderKpis();
    renderAccounts();
    renderQuality();
    renderBacktests();
  }

  W.ready(() => {
    const q = new URLSearchParams(location.search);
    const days = Number(q.get('days'));
    if ([30, 90, 365].includes(days)) state.periodDays = days;
    state.customer = q.get('customer') ?? '';
    $('period-select').value = String(state.periodDays);
    $('period-form').addEventListener('submit', (e) => e.preventDefault());
    let refresher = { now() {} };
    $('period-select').addEventListener('change', (e) => {
      state.periodDays = Number(e.target.value);
      syncUrl();
      refresher.now();
    });
    $('kpi-customer').addEventListener('change', (e) => {
      state.customer = e.target.value;
      syncUrl();
      refresher.now();
    });
    refresher = W.poll(POLL_MS, tick);
  });
})();
