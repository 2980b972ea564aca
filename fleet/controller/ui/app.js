// fleet status page: polls api/v1/status and draws the cluster x bundle matrix.
//
// Owns: reading the status document (every field may be null or absent), the label selector and state
// filters, sorting, the keyboard grid, the details panel, Jaeger links and links to each cluster's and
// bundle's history (api/v1/history), and with several replicas which replica answers and which shards'
// clusters are unknown. Rows are diffed by cluster
// name: a poll that changes one cluster rewrites one <tr>. No dependencies, no build step.
// Does not: send anything but GET api/v1/status, or store anything but the URL fragment.
'use strict';

(function () {
  // ---- constants ---------------------------------------------------------------------------------
  const CLUSTER_STATES = ['Failed', 'Unreachable', 'Progressing', 'Pending', 'Paused', 'Synced'];
  const ALL_STATES = ['Failed', 'Unreachable', 'Progressing', 'Pending', 'Paused', 'Suspended', 'Synced'];
  // Worst first; an unknown state string sorts just after Failed (something unexpected is wrong).
  const SEVERITY = { Failed: 0, Unreachable: 2, Progressing: 3, Pending: 4, Paused: 5, Suspended: 6, Synced: 7 };
  const UNKNOWN_SEVERITY = 1;
  const GLYPH = {
    Synced: '✓', Progressing: '↻', Failed: '✗', Unreachable: '⚠', Paused: '‖', Pending: '…',
    Suspended: '⊘', 'not placed': '·',
  };
  const NOT_PLACED = 'not placed';
  const TITLE_MAX = 600;

  function meta(name) {
    const el = document.querySelector('meta[name="' + name + '"]');
    return el ? el.getAttribute('content') : null;
  }
  const JAEGER = (meta('fleet-jaeger-url') || '').replace(/\/+$/, '') || null;
  const POLL_MS = Math.max(50, Number(meta('fleet-poll-interval-ms')) || 2000);
  const STATUS_URL = meta('fleet-status-url') || 'api/v1/status';
  const FETCH_TIMEOUT_MS = Math.max(5000, POLL_MS * 3);

  // ---- small helpers -----------------------------------------------------------------------------
  const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  function esc(value) {
    return String(value).replace(/[&<>"']/g, (ch) => ESC[ch]);
  }
  // Writes only when the content differs: no DOM churn, and live regions speak only on real changes.
  function setHtml(el, html) {
    if (el.__html !== html) { el.innerHTML = html; el.__html = html; }
  }
  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }
  function isObject(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
  }
  function str(v) {
    return v === null || v === undefined ? null : String(v);
  }
  function stateClass(state) {
    if (state === NOT_PLACED) return 's-none';
    return Object.prototype.hasOwnProperty.call(SEVERITY, state) ? 's-' + state.toLowerCase() : 's-unknown';
  }
  function glyph(state) {
    return GLYPH[state] || '?';
  }
  function severity(state) {
    return Object.prototype.hasOwnProperty.call(SEVERITY, state) ? SEVERITY[state] : UNKNOWN_SEVERITY;
  }
  function shortSha(sha) {
    return sha ? String(sha).slice(0, 7) : null;
  }
  function clip(text, max) {
    return text.length > max ? text.slice(0, max - 1) + '…' : text;
  }
  const rtf = typeof Intl !== 'undefined' && Intl.RelativeTimeFormat
    ? new Intl.RelativeTimeFormat('en', { numeric: 'auto' }) : null;
  function age(iso) {
    if (!iso) return null;
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return String(iso);
    const s = Math.round((t - Date.now()) / 1000);
    const abs = Math.abs(s);
    const [n, unit] = abs < 60 ? [s, 'second'] : abs < 3600 ? [Math.round(s / 60), 'minute']
      : abs < 86400 ? [Math.round(s / 3600), 'hour'] : [Math.round(s / 86400), 'day'];
    return rtf ? rtf.format(n, unit) : n + ' ' + unit + 's';
  }
  function timeEl(iso) {
    if (!iso) return '<span class="none">never</span>';
    return '<time datetime="' + esc(iso) + '" title="' + esc(iso) + '">' + esc(age(iso)) + '</time>';
  }

  // ---- label selectors (Kubernetes syntax) -------------------------------------------------------
  const KEY_RE = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
  const VALUE_RE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

  function tokenize(text) {
    const tokens = [];
    let i = 0;
    while (i < text.length) {
      const ch = text[i];
      if (/\s/.test(ch)) { i++; continue; }
      const two = text.slice(i, i + 2);
      if (two === '==' || two === '!=') { tokens.push({ t: two, at: i }); i += 2; continue; }
      if ('=!(),<>'.includes(ch)) { tokens.push({ t: ch, at: i }); i++; continue; }
      let j = i;
      while (j < text.length && !/[\s=!(),<>]/.test(text[j])) j++;
      tokens.push({ t: 'id', v: text.slice(i, j), at: i });
      i = j;
    }
    tokens.push({ t: 'end', at: text.length });
    return tokens;
  }

  class SelectorError extends Error {}

  // Parses a label selector into a list of requirements {key, op, values}; throws SelectorError.
  function parseSelector(text) {
    const tokens = tokenize(text);
    let p = 0;
    const reqs = [];
    const peek = () => tokens[p];
    const fail = (msg, tok) => {
      throw new SelectorError(msg + ' at character ' + ((tok || peek()).at + 1));
    };
    const describe = (tok) => (tok.t === 'end' ? 'the end' : tok.t === 'id' ? '"' + tok.v + '"' : '"' + tok.t + '"');
    const key = () => {
      const tok = peek();
      if (tok.t !== 'id') fail('expected a label key, found ' + describe(tok));
      if (!KEY_RE.test(tok.v)) fail('invalid label key "' + tok.v + '"', tok);
      p++;
      return tok.v;
    };
    const value = (allowEmpty) => {
      const tok = peek();
      if (tok.t !== 'id') {
        if (allowEmpty && (tok.t === ',' || tok.t === 'end' || tok.t === ')')) return '';
        fail('expected a label value, found ' + describe(tok));
      }
      if (!VALUE_RE.test(tok.v) || tok.v.length > 63) fail('invalid label value "' + tok.v + '"', tok);
      p++;
      return tok.v;
    };
    if (peek().t === 'end') return reqs;
    for (;;) {
      if (peek().t === '!') {
        p++;
        reqs.push({ key: key(), op: '!exists', values: [] });
      } else {
        const k = key();
        const tok = peek();
        if (tok.t === ',' || tok.t === 'end') {
          reqs.push({ key: k, op: 'exists', values: [] });
        } else if (tok.t === '=' || tok.t === '==' || tok.t === '!=') {
          p++;
          reqs.push({ key: k, op: tok.t === '!=' ? '!=' : '=', values: [value(true)] });
        } else if (tok.t === '<' || tok.t === '>') {
          p++;
          const v = value(false);
          if (!/^-?\d+$/.test(v)) fail('"' + tok.t + '" needs an integer, found "' + v + '"', tokens[p - 1]);
          reqs.push({ key: k, op: tok.t, values: [v] });
        } else if (tok.t === 'id' && (tok.v === 'in' || tok.v === 'notin')) {
          p++;
          if (peek().t !== '(') fail('expected "(" after ' + tok.v + ', found ' + describe(peek()));
          p++;
          const values = [value(true)];
          while (peek().t === ',') { p++; values.push(value(true)); }
          if (peek().t !== ')') fail('expected "," or ")", found ' + describe(peek()));
          p++;
          reqs.push({ key: k, op: tok.v, values });
        } else {
          fail('expected "=", "!=", "in", "notin", "," or the end after "' + k + '", found ' + describe(tok));
        }
      }
      if (peek().t === 'end') return reqs;
      if (peek().t !== ',') fail('expected "," between requirements, found ' + describe(peek()));
      p++;
    }
  }

  function matches(reqs, labels) {
    for (const r of reqs) {
      const has = Object.prototype.hasOwnProperty.call(labels, r.key);
      const v = has ? String(labels[r.key]) : null;
      let ok;
      switch (r.op) {
        case 'exists': ok = has; break;
        case '!exists': ok = !has; break;
        case '=': ok = has && v === r.values[0]; break;
        case '!=': ok = !(has && v === r.values[0]); break;
        case 'in': ok = has && r.values.includes(v); break;
        case 'notin': ok = !(has && r.values.includes(v)); break;
        case '>': ok = has && /^-?\d+$/.test(v) && Number(v) > Number(r.values[0]); break;
        case '<': ok = has && /^-?\d+$/.test(v) && Number(v) < Number(r.values[0]); break;
        default: ok = false;
      }
      if (!ok) return false;
    }
    return true;
  }

  // ---- the status document, normalised -----------------------------------------------------------
  function normalise(doc) {
    if (!isObject(doc)) throw new Error('the status document is not a JSON object');
    const clusters = [];
    const bundleSet = new Set();
    const rawClusters = isObject(doc.clusters) ? doc.clusters : {};
    for (const name of Object.keys(rawClusters)) {
      const raw = isObject(rawClusters[name]) ? rawClusters[name] : {};
      const labels = {};
      if (isObject(raw.labels)) for (const k of Object.keys(raw.labels)) labels[k] = String(raw.labels[k]);
      const bundles = new Map();
      if (isObject(raw.bundles)) {
        for (const b of Object.keys(raw.bundles)) {
          const rb = isObject(raw.bundles[b]) ? raw.bundles[b] : {};
          bundles.set(b, {
            state: str(rb.state) || 'Pending',
            revision: str(rb.revision),
            objects: typeof rb.objects === 'number' ? rb.objects : null,
            lastError: str(rb.lastError),
          });
          bundleSet.add(b);
        }
      }
      clusters.push({
        name,
        state: str(raw.state) || 'Pending',
        labels,
        revision: str(raw.revision),
        lastSyncAt: str(raw.lastSyncAt),
        lastError: str(raw.lastError),
        traceId: str(raw.traceId),
        watch: isObject(raw.watch) ? raw.watch : null,
        bundles,
      });
    }
    const errors = Array.isArray(doc.errors) ? doc.errors.filter(isObject) : [];
    const rollouts = [];
    if (isObject(doc.rollouts)) {
      for (const b of Object.keys(doc.rollouts).sort()) {
        const r = isObject(doc.rollouts[b]) ? doc.rollouts[b] : {};
        rollouts.push({
          bundle: b,
          revision: str(r.revision),
          state: str(r.state) || 'Progressing',
          reason: str(r.reason),
          wave: str(r.wave),
          updatedAt: str(r.updatedAt),
          waves: Array.isArray(r.waves) ? r.waves.filter(isObject) : [],
          actions: Array.isArray(r.actions) ? r.actions.filter(isObject) : [],
        });
      }
    }
    // Several replicas (docs/scaling.md): which one answers, and the shards whose clusters are unknown.
    const rep = isObject(doc.replica) ? doc.replica : null;
    const sh = isObject(doc.shards) ? doc.shards : null;
    const ints = (v) => (Array.isArray(v) ? v.filter((n) => Number.isInteger(n)) : []);
    const replica = rep ? {
      id: str(rep.id),
      coordinating: rep.coordinating === true,
      shards: ints(rep.shards),
      shardCount: Number.isInteger(rep.shardCount) ? rep.shardCount : null,
      missing: sh ? ints(sh.missing) : [],
      writers: sh && isObject(sh.writers) ? sh.writers : {},
      whole: sh !== null,
    } : null;
    return {
      replica,
      rollouts,
      revision: str(doc.revision),
      message: str(doc.message),
      author: str(doc.author),
      committedAt: str(doc.committedAt),
      fetchedAt: str(doc.fetchedAt),
      errors,
      clusters,
      byName: new Map(clusters.map((c) => [c.name, c])),
      bundles: Array.from(bundleSet).sort(),
    };
  }

  // ---- page state ------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: null,
    lastText: null,
    lastOkAt: null,
    problem: null,
    selectorText: '',
    selector: [],
    selectorError: null,
    states: new Set(),
    sort: 'name',
    columns: [],
    rows: new Map(), // cluster name -> {html, tr}
    order: [],
    active: { cluster: null, col: 0 }, // col 0: name, 1: state, 2+: bundle index + 2
    detailsOpen: false,
    lastRender: null,
    renders: 0,
    polls: 0,
  };

  // ---- rendering ---------------------------------------------------------------------------------
  // Tooltips are made on hover (not in the row HTML): 15,000 title strings would slow the first render.
  function cellTitle(cluster, col) {
    if (col === 0) return cluster.name + ': ' + Object.keys(cluster.labels).sort().map((k) => k + '=' + cluster.labels[k]).join(', ');
    if (col === 1) return cluster.name + ': ' + cluster.state + (cluster.lastError ? '\n' + clip(cluster.lastError, TITLE_MAX) : '');
    const bundle = ui.columns[col - 2];
    const b = cluster.bundles.get(bundle);
    if (!b) return bundle + ' is not placed on ' + cluster.name;
    return bundle + ' on ' + cluster.name + ': ' + b.state + (b.lastError ? '\n' + clip(b.lastError, TITLE_MAX) : '');
  }

  function onGridHover(ev) {
    const pos = cellPosition(ev.target);
    const c = pos && ui.status ? ui.status.byName.get(pos.cluster) : null;
    if (c) pos.cell.title = cellTitle(c, pos.col);
  }

  function rowHtml(c, columns) {
    let h = '<tr data-c="' + esc(c.name) + '"><th scope="row" class="name">'
      + '<span class="cname">' + esc(c.name) + '</span>';
    const keys = Object.keys(c.labels).sort();
    if (keys.length) {
      h += '<span class="chips">';
      for (const k of keys) h += '<span class="chip">' + esc(k) + '=' + esc(c.labels[k]) + '</span>';
      h += '</span>';
    }
    h += '</th><td class="state ' + stateClass(c.state) + (c.lastError ? ' has-error' : '') + '"><span class="badge"><span aria-hidden="true">' + glyph(c.state) + '</span> ' + esc(c.state) + '</span></td>';
    for (let i = 0; i < columns.length; i++) {
      const b = c.bundles.get(columns[i]);
      const state = b ? b.state : NOT_PLACED;
      h += '<td class="cell ' + stateClass(state) + (b && b.lastError ? ' has-error' : '') + '" aria-label="'
        + esc(state) + '">' + glyph(state) + '</td>';
    }
    return h + '</tr>';
  }

  function headHtml(columns) {
    let h = '<tr><th scope="col" class="name" aria-sort="' + ariaSort('name') + '">'
      + '<button type="button" class="sort-btn" data-sort="name">Cluster</button></th>'
      + '<th scope="col" class="state" aria-sort="' + ariaSort('state') + '">'
      + '<button type="button" class="sort-btn" data-sort="state">State</button></th>';
    for (const b of columns) h += '<th scope="col" class="bundle" title="' + esc(b) + '"><span>' + esc(b) + '</span></th>';
    return h + '</tr>';
  }

  function ariaSort(key) {
    if (ui.sort === key) return 'ascending';
    if (ui.sort === '-' + key) return 'descending';
    return 'none';
  }

  function visibleClusters(status) {
    let list = status.clusters;
    if (ui.selector.length) list = list.filter((c) => matches(ui.selector, c.labels));
    if (ui.states.size) list = list.filter((c) => ui.states.has(c.state));
    const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    const key = ui.sort.replace(/^-/, '');
    const dir = ui.sort.startsWith('-') ? -1 : 1;
    const cmp = key === 'state'
      ? (a, b) => (severity(a.state) - severity(b.state)) * dir || byName(a, b)
      : (a, b) => byName(a, b) * dir;
    return list.slice().sort(cmp);
  }

  function renderHeader(status) {
    const rev = $('revision');
    if (!status.revision) {
      setHtml(rev, '<span class="none">No revision fetched yet</span>'
        + (status.fetchedAt ? ' · last fetch ' + timeEl(status.fetchedAt) : ''));
      return;
    }
    setHtml(rev, 'Rolling out <code class="sha" title="' + esc(status.revision) + '">'
      + esc(shortSha(status.revision)) + '</code> '
      + '<span class="message">' + (status.message ? esc(status.message) : '<span class="none">(no message)</span>') + '</span>'
      + ' <span class="by">by ' + (status.author ? esc(status.author) : '<span class="none">unknown</span>') + '</span>'
      + ' <span class="when">committed ' + timeEl(status.committedAt) + '</span>'
      + ' <span class="when">· fetched ' + timeEl(status.fetchedAt) + '</span>');
  }

  function renderReplica(status) {
    const box = $('replica');
    const r = status.replica;
    if (!r) { box.hidden = true; return; }
    const per = {};
    for (const w of Object.values(r.writers)) { const k = str(w) || '?'; per[k] = (per[k] || 0) + 1; }
    const others = Object.keys(per).filter((w) => w !== r.id).sort()
      .map((w) => esc(w) + ' (' + per[w] + ')').join(', ');
    let h = 'Replica <code>' + esc(r.id || '?') + '</code>' + (r.coordinating ? ' (coordinating)' : '')
      + ' writes ' + r.shards.length + ' of ' + (r.shardCount != null ? r.shardCount : '?') + ' shards';
    h += r.whole
      ? '; the other clusters are shown as their owners last reported them' + (others ? ': ' + others : '')
      : '; only its own clusters are shown';
    if (r.missing.length) {
      h += '. <span class="replica-missing">No status summary for shard' + (r.missing.length > 1 ? 's ' : ' ')
        + esc(r.missing.join(', ')) + ': their clusters\' status is unknown.</span>';
    }
    setHtml(box, h);
    box.hidden = false;
  }

  function renderErrors(status) {
    const box = $('revision-errors');
    if (!status.errors.length) { box.hidden = true; return; }
    setHtml($('revision-errors-list'), status.errors.map((e) => '<li><code>'
      + esc((e.path != null ? e.path : '?') + (e.line != null ? ':' + e.line : '')) + '</code> '
      + esc(e.message != null ? e.message : '') + '</li>').join(''));
    box.hidden = false;
  }

  function renderSummary(status) {
    const counts = {};
    for (const c of status.clusters) counts[c.state] = (counts[c.state] || 0) + 1;
    const states = CLUSTER_STATES.concat(Object.keys(counts).filter((s) => !CLUSTER_STATES.includes(s)).sort());
    let h = '';
    for (const s of states) {
      const n = counts[s] || 0;
      h += '<button type="button" class="state-btn ' + stateClass(s) + '" data-state="' + esc(s) + '" aria-pressed="'
        + ui.states.has(s) + '"><span aria-hidden="true">' + glyph(s) + '</span> ' + esc(s)
        + ' <span class="count">' + n + '</span></button>';
    }
    const box = $('state-filter');
    if (box.innerHTML !== h) {
      const focused = document.activeElement && document.activeElement.closest('.state-btn');
      const focusedState = focused ? focused.dataset.state : null;
      box.innerHTML = h;
      if (focusedState) {
        const again = box.querySelector('[data-state="' + CSS.escape(focusedState) + '"]');
        if (again) again.focus();
      }
    }
    // The tab title says when something is wrong, so a background tab still tells.
    const bad = ['Failed', 'Unreachable'].filter((x) => counts[x]).map((x) => counts[x] + ' ' + x);
    const title = 'fleet status' + (bad.length ? ' · ' + bad.join(', ') : '');
    if (document.title !== title) document.title = title;
    const pairs = {};
    let total = 0;
    for (const c of status.clusters) for (const b of c.bundles.values()) { pairs[b.state] = (pairs[b.state] || 0) + 1; total++; }
    const parts = Object.keys(pairs).sort((a, b) => severity(a) - severity(b)).map((s) => pairs[s] + ' ' + esc(s));
    setHtml($('pairs'), status.clusters.length + ' clusters · ' + status.bundles.length + ' bundles · '
      + total + ' placed pairs' + (parts.length ? ': ' + parts.join(', ') : ''));
  }

  function renderMatrix(status) {
    const columns = status.bundles;
    const body = $('matrix-body');
    if (columns.join('\n') !== ui.columns.join('\n') || $('matrix-head').dataset.sort !== ui.sort) {
      if (columns.join('\n') !== ui.columns.join('\n')) ui.rows.clear();
      ui.columns = columns;
      $('matrix-head').innerHTML = headHtml(columns);
      $('matrix-head').dataset.sort = ui.sort;
    }
    const visible = visibleClusters(status);
    const names = visible.map((c) => c.name);
    const focusedCell = document.activeElement && body.contains(document.activeElement)
      ? document.activeElement.closest('th,td') : null;
    let kind;
    if (ui.rows.size === 0 && visible.length) {
      // First build: one innerHTML for the whole body.
      const htmls = visible.map((c) => rowHtml(c, columns));
      body.innerHTML = htmls.join('');
      const trs = body.children;
      for (let i = 0; i < visible.length; i++) ui.rows.set(visible[i].name, { html: htmls[i], tr: trs[i] });
      kind = 'full';
    } else {
      // Diff keyed by cluster: only changed rows are rebuilt, in one template parse.
      const changed = [];
      for (const c of visible) {
        const html = rowHtml(c, columns);
        const entry = ui.rows.get(c.name);
        if (!entry || entry.html !== html) changed.push([c.name, html, entry]);
      }
      if (changed.length) {
        const tpl = document.createElement('template');
        tpl.innerHTML = '<table><tbody>' + changed.map((x) => x[1]).join('') + '</tbody></table>';
        const fresh = tpl.content.querySelector('tbody').children;
        const trs = Array.from(fresh);
        for (let i = 0; i < changed.length; i++) {
          const [name, html, entry] = changed[i];
          if (entry && entry.tr.parentNode === body) entry.tr.replaceWith(trs[i]);
          ui.rows.set(name, { html, tr: trs[i] });
        }
      }
      const sameOrder = names.length === ui.order.length && names.every((n, i) => n === ui.order[i])
        && body.children.length === names.length;
      if (!sameOrder) body.replaceChildren(...names.map((n) => ui.rows.get(n).tr));
      kind = changed.length || !sameOrder ? 'diff' : 'none';
      ui.lastChanged = changed.length;
    }
    // Forget clusters that are gone from the document.
    for (const name of ui.rows.keys()) if (!status.byName.has(name)) ui.rows.delete(name);
    ui.order = names;
    placeActive(focusedCell != null);
    const empty = $('empty');
    if (!status.clusters.length) {
      setText(empty, 'No clusters are registered in this revision.');
      empty.hidden = false;
    } else if (!visible.length) {
      setText(empty, 'No cluster matches the filters.');
      empty.hidden = false;
    } else {
      empty.hidden = true;
    }
    setText($('shown'), 'Showing ' + visible.length + ' of ' + status.clusters.length + ' clusters'
      + (ui.selector.length || ui.states.size ? ' (filtered)' : ''));
    return kind;
  }

  // The grid has one tab stop (roving tabindex); it follows the active (cluster, column).
  function cellAt(cluster, col) {
    const entry = ui.rows.get(cluster);
    if (!entry || entry.tr.parentNode !== $('matrix-body')) return null;
    const cells = entry.tr.children;
    return cells[Math.min(col, cells.length - 1)] || null;
  }

  function activeCell() {
    return ui.active.cluster != null ? cellAt(ui.active.cluster, ui.active.col) : null;
  }

  function placeActive(refocus) {
    let cell = activeCell();
    // The active cluster is filtered out or gone: the first row takes over, unless its details are open.
    if (!cell && !ui.detailsOpen && ui.order.length) {
      ui.active = { cluster: ui.order[0], col: ui.active.col };
      cell = activeCell();
    }
    const stop = cell || (ui.order.length ? cellAt(ui.order[0], 0) : null);
    const prev = $('matrix-body').querySelector('[tabindex="0"]');
    if (prev && prev !== stop) prev.removeAttribute('tabindex');
    if (!stop) return;
    stop.setAttribute('tabindex', '0');
    if (refocus && cell && document.activeElement !== cell) cell.focus({ preventScroll: true });
  }

  function moveTo(cluster, col, { focus = true } = {}) {
    ui.active = { cluster, col };
    placeActive(false);
    const cell = activeCell();
    if (cell && focus) cell.focus();
    if (ui.detailsOpen) renderDetails();
  }

  // ---- rollouts (docs/rollouts.md) ---------------------------------------------------------------
  // Rollout and wave states shown with the cluster palette: a halt reads as a failure, a wait as pending.
  const ROLLOUT_CLASS = {
    Progressing: 's-progressing', Soaking: 's-progressing', WaitingApproval: 's-pending', Halted: 's-failed',
    Completed: 's-synced', Superseded: 's-suspended', Aborted: 's-suspended', RolledBack: 's-paused',
    Pending: 's-pending', Healthy: 's-synced', Done: 's-synced', Failed: 's-failed', Skipped: 's-suspended',
    Removed: 's-none',
  };
  const ROLLOUT_GLYPH = {
    Progressing: '◐', Soaking: '◐', WaitingApproval: '⏸', Halted: '✖', Completed: '✔', Superseded: '↷',
    Aborted: '■', RolledBack: '↶', Pending: '○', Healthy: '✔', Done: '✔', Failed: '✖', Skipped: '↷', Removed: '–',
  };
  function rolloutBadge(state) {
    return '<span class="badge ' + (ROLLOUT_CLASS[state] || 's-unknown') + '"><span aria-hidden="true">'
      + (ROLLOUT_GLYPH[state] || '?') + '</span> ' + esc(state) + '</span>';
  }
  function nextCommand(r) {
    if (r.state === 'Halted') return 'fleet rollout resume ' + r.bundle;
    if (r.state === 'WaitingApproval') return 'fleet rollout approve ' + r.bundle + (r.wave ? ' --wave ' + r.wave : '');
    return null;
  }
  function waveHtml(w, r) {
    const clusters = isObject(w.clusters) ? w.clusters : {};
    const failed = isObject(w.failed) ? w.failed : {};
    const deadlines = isObject(w.deadlines) ? w.deadlines : {};
    const notes = [];
    if (w.approval && w.approval !== 'none') notes.push('approval ' + esc(w.approval) + (w.approved ? ' (approved)' : ''));
    if (typeof w.soakRemainingSeconds === 'number') notes.push('soak ' + Math.ceil(w.soakRemainingSeconds) + 's left');
    let chips = '';
    for (const name of Object.keys(clusters).sort()) {
      const st = str(clusters[name]) || 'Pending';
      let title = name + ': ' + st;
      if (failed[name]) title += ' (' + str(failed[name].reason) + ': ' + str(failed[name].message) + ')';
      else if (deadlines[name]) title += ' (deadline ' + str(deadlines[name]) + ')';
      chips += '<li class="chip ' + (ROLLOUT_CLASS[st] || 's-unknown') + '" title="' + esc(title) + '" data-cluster="'
        + esc(name) + '" data-state="' + esc(st) + '"><span aria-hidden="true">' + (ROLLOUT_GLYPH[st] || '?')
        + '</span> ' + esc(name) + '<span class="visually-hidden"> ' + esc(st) + '</span></li>';
    }
    const fails = Object.keys(failed).sort().map((n) => '<li><strong>' + esc(n) + '</strong> '
      + esc(str(failed[n].reason)) + ': ' + esc(clip(str(failed[n].message) || '', 300)) + '</li>').join('');
    const current = w.name === r.wave && r.state !== 'Completed';
    return '<li class="wave' + (current ? ' current' : '') + '" data-wave="' + esc(str(w.name)) + '">'
      + '<div class="wave-head"><span class="wave-name">' + esc(str(w.name)) + '</span> ' + rolloutBadge(str(w.state) || 'Pending')
      + (notes.length ? ' <span class="wave-notes">' + notes.join(' · ') + '</span>' : '') + '</div>'
      + '<ul class="chips">' + (chips || '<li class="none">no clusters</li>') + '</ul>'
      + (fails ? '<ul class="wave-failures">' + fails + '</ul>' : '') + '</li>';
  }
  function rolloutHtml(r) {
    const cmd = nextCommand(r);
    const last = r.actions.length ? r.actions[r.actions.length - 1] : null;
    return '<article class="rollout" data-bundle="' + esc(r.bundle) + '" data-state="' + esc(r.state) + '">'
      + '<header class="rollout-head"><h3>' + esc(r.bundle) + '</h3> ' + rolloutBadge(r.state)
      + ' <code class="sha" title="' + esc(r.revision || '') + '">' + esc(shortSha(r.revision) || '?') + '</code>'
      + ' <span class="when">updated ' + timeEl(r.updatedAt) + '</span>'
      + ' <a class="history" href="api/v1/rollouts/' + encodeURIComponent(r.bundle) + '">JSON</a></header>'
      + (r.reason && r.state !== 'Completed' ? '<p class="rollout-reason">' + esc(clip(r.reason, 600)) + '</p>' : '')
      + (cmd ? '<p class="rollout-next">Next: <code>' + esc(cmd) + '</code></p>' : '')
      + '<ol class="waves">' + r.waves.map((w) => waveHtml(w, r)).join('') + '</ol>'
      + (last ? '<p class="rollout-action">Last action: ' + esc(str(last.action)) + ' by ' + esc(str(last.actor))
        + (last.reason ? ' (' + esc(str(last.reason)) + ')' : '') + ' ' + timeEl(str(last.at)) + '</p>' : '')
      + '</article>';
  }
  function renderRollouts(status) {
    const box = $('rollouts');
    if (!status.rollouts.length) { box.hidden = true; return; }
    const open = status.rollouts.filter((r) => r.state !== 'Completed');
    const done = status.rollouts.filter((r) => r.state === 'Completed');
    let h = open.map(rolloutHtml).join('');
    if (done.length) {
      h += '<details class="rollouts-done"><summary>' + done.length + ' completed: '
        + done.map((r) => esc(r.bundle) + ' <code>' + esc(shortSha(r.revision) || '?') + '</code>').join(', ')
        + '</summary>' + done.map(rolloutHtml).join('') + '</details>';
    }
    const body = $('rollouts-body');
    if (body.dataset.html !== h) {
      const wasOpen = body.querySelector('details.rollouts-done[open]') !== null;
      body.innerHTML = h;
      body.dataset.html = h;
      if (wasOpen) { const d = body.querySelector('details.rollouts-done'); if (d) d.open = true; }
    }
    box.hidden = false;
  }

  function renderAll(reason) {
    const status = ui.status;
    if (!status) return;
    const t0 = performance.now();
    renderHeader(status);
    renderReplica(status);
    renderErrors(status);
    renderSummary(status);
    renderRollouts(status);
    const kind = renderMatrix(status);
    if (ui.detailsOpen) renderDetails();
    void $('matrix').offsetHeight; // include style and layout in the measurement
    const ms = performance.now() - t0;
    ui.renders++;
    const record = { ms, at: performance.now(), framedMs: null, kind, reason, rows: ui.order.length,
      columns: ui.columns.length, cells: ui.order.length * (ui.columns.length + 2) };
    ui.lastRender = record;
    // Until the next frame is produced: includes paint (measured, not asserted; see benchmarks/bench_ui.py).
    requestAnimationFrame(() => setTimeout(() => { record.framedMs = performance.now() - t0; }, 0));
    document.documentElement.dataset.renders = String(ui.renders);
  }

  // ---- details panel -----------------------------------------------------------------------------
  function traceLink(traceId) {
    if (!traceId) return '<span class="none">no trace recorded</span>';
    if (!JAEGER) return '<code>' + esc(traceId) + '</code>';
    return '<a class="trace" href="' + esc(JAEGER + '/trace/' + encodeURIComponent(traceId))
      + '" target="_blank" rel="noopener noreferrer">Open trace ' + esc(traceId.slice(0, 16)) + ' in Jaeger</a>';
  }

  function dl(rows) {
    return '<dl>' + rows.map(([k, v]) => '<dt>' + esc(k) + '</dt><dd>' + v + '</dd>').join('') + '</dl>';
  }

  function badge(state) {
    return '<span class="badge ' + stateClass(state) + '"><span aria-hidden="true">' + glyph(state) + '</span> '
      + esc(state) + '</span>';
  }

  function errorBlock(text) {
    return text ? '<pre class="error-text">' + esc(text) + '</pre>' : '<span class="none">none</span>';
  }

  function watchText(w) {
    if (!w) return '<span class="none">not watching</span>';
    const n = (v) => (typeof v === 'number' ? String(v) : '?');
    return n(w.streams) + ' streams · last event ' + timeEl(w.lastEventAt ? String(w.lastEventAt) : null)
      + ' · ' + n(w.reconnects) + ' reconnects · ' + n(w.relists) + ' relists';
  }

  // Links to the history of changes (docs/notifications.md): the JSON of GET api/v1/history, and the
  // command that shows it as a table.
  function historyLink(query, label) {
    const params = Object.keys(query).map((k) => k + '=' + encodeURIComponent(query[k])).join('&');
    return '<a class="history" href="' + esc('api/v1/history?' + params) + '" target="_blank" rel="noopener">'
      + esc(label) + '</a>';
  }

  function historyRows(cluster, bundle) {
    const cmd = 'fleet history --cluster ' + cluster + (bundle ? ' --bundle ' + bundle : '');
    const links = [historyLink({ cluster: cluster }, 'changes on ' + cluster)];
    if (bundle) {
      links.unshift(historyLink({ cluster: cluster, bundle: bundle }, 'changes of ' + bundle + ' on ' + cluster));
      links.push(historyLink({ bundle: bundle }, 'changes of ' + bundle + ' everywhere'));
    }
    return [['Recent history', links.join(' · ') + '<br><code>' + esc(cmd) + '</code>']];
  }

  function renderDetails() {
    const status = ui.status;
    const c = status && ui.active.cluster != null ? status.byName.get(ui.active.cluster) : null;
    const title = $('details-title');
    const body = $('details-body');
    if (!c) {
      setText(title, ui.active.cluster ? ui.active.cluster : 'Details');
      setHtml(body, '<p class="none">This cluster is no longer in the status document.</p>');
      return;
    }
    const clusterRows = [
      ['Cluster state', badge(c.state)],
      ['Cluster error', errorBlock(c.lastError)],
      ['Holds revision', c.revision ? '<code title="' + esc(c.revision) + '">' + esc(shortSha(c.revision)) + '</code>' : '<span class="none">none yet</span>'],
      ['Last sync', timeEl(c.lastSyncAt)],
      ['Watch', watchText(c.watch)],
      ['Last reconcile trace', traceLink(c.traceId)],
    ];
    if (ui.active.col >= 2) {
      const bundle = ui.columns[ui.active.col - 2];
      const b = c.bundles.get(bundle);
      setText(title, bundle + ' on ' + c.name);
      if (!b) {
        setHtml(body, dl([['State', badge(NOT_PLACED)], ['Why', esc(bundle) + '’s placement does not select ' + esc(c.name)]])
          + '<h3>Cluster</h3>' + dl(clusterRows));
        return;
      }
      setHtml(body, dl([
        ['State', badge(b.state)],
        ['Error', errorBlock(b.lastError)],
        ['Revision', b.revision ? '<code title="' + esc(b.revision) + '">' + esc(shortSha(b.revision)) + '</code>' : '<span class="none">none yet</span>'],
        ['Objects', b.objects === null ? '<span class="none">unknown</span>' : esc(b.objects)],
      ].concat(historyRows(c.name, bundle))) + '<h3>Cluster</h3>' + dl(clusterRows));
      return;
    }
    setText(title, c.name);
    const labels = Object.keys(c.labels).sort().map((k) => '<span class="chip">' + esc(k) + '=' + esc(c.labels[k]) + '</span>').join(' ');
    const counts = {};
    for (const b of c.bundles.values()) counts[b.state] = (counts[b.state] || 0) + 1;
    const bundleSummary = Object.keys(counts).sort((a, b) => severity(a) - severity(b)).map((s) => counts[s] + ' ' + esc(s)).join(', ');
    setHtml(body, dl([
      ['Labels', labels || '<span class="none">none</span>'],
      ['Bundles', c.bundles.size ? c.bundles.size + ' placed: ' + bundleSummary : '<span class="none">none placed</span>'],
    ].concat(clusterRows, historyRows(c.name, null))));
  }

  function openDetails() {
    ui.detailsOpen = true;
    $('details').hidden = false;
    renderDetails();
  }

  function closeDetails() {
    ui.detailsOpen = false;
    $('details').hidden = true;
    const cell = activeCell();
    if (cell) cell.focus();
  }

  // ---- filters, sort and the URL fragment --------------------------------------------------------
  function setSelector(text) {
    ui.selectorText = text;
    const input = $('selector');
    try {
      ui.selector = parseSelector(text);
      ui.selectorError = null;
      input.removeAttribute('aria-invalid');
      $('selector-error').textContent = '';
    } catch (e) {
      if (!(e instanceof SelectorError)) throw e;
      ui.selector = [];
      ui.selectorError = e.message;
      input.setAttribute('aria-invalid', 'true');
      $('selector-error').textContent = 'Label selector: ' + e.message + ' (not applied)';
    }
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (ui.selectorText) params.set('selector', ui.selectorText);
    if (ui.states.size) params.set('state', Array.from(ui.states).join(','));
    if (ui.sort !== 'name') params.set('sort', ui.sort);
    const hash = params.toString();
    history.replaceState(null, '', hash ? '#' + hash : location.pathname + location.search);
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ''));
    setSelector(params.get('selector') || '');
    $('selector').value = ui.selectorText;
    ui.states = new Set((params.get('state') || '').split(',').filter(Boolean));
    const sort = params.get('sort') || 'name';
    ui.sort = ['name', '-name', 'state', '-state'].includes(sort) ? sort : 'name';
    $('sort').value = ui.sort;
  }

  function filtersChanged() {
    writeHash();
    renderAll('filter');
  }

  // ---- keyboard and mouse on the grid -------------------------------------------------------------
  function cellPosition(el) {
    const cell = el && el.closest('#matrix-body th, #matrix-body td');
    if (!cell) return null;
    return { cluster: cell.parentNode.dataset.c, col: cell.cellIndex, cell };
  }

  function onGridKey(ev) {
    const pos = cellPosition(ev.target);
    if (!pos) return;
    const row = ui.order.indexOf(pos.cluster);
    const lastCol = ui.columns.length + 1;
    let r = row;
    let c = pos.col;
    switch (ev.key) {
      case 'ArrowRight': c = Math.min(lastCol, c + 1); break;
      case 'ArrowLeft': c = Math.max(0, c - 1); break;
      case 'ArrowDown': r = Math.min(ui.order.length - 1, r + 1); break;
      case 'ArrowUp': r = Math.max(0, r - 1); break;
      case 'PageDown': r = Math.min(ui.order.length - 1, r + 10); break;
      case 'PageUp': r = Math.max(0, r - 10); break;
      case 'Home': c = 0; if (ev.ctrlKey) r = 0; break;
      case 'End': c = lastCol; if (ev.ctrlKey) r = ui.order.length - 1; break;
      case 'Enter':
      case ' ':
        ev.preventDefault();
        ui.active = { cluster: pos.cluster, col: pos.col };
        openDetails();
        return;
      case 'Escape':
        if (ui.detailsOpen) { ev.preventDefault(); closeDetails(); }
        return;
      default:
        return;
    }
    ev.preventDefault();
    if (r >= 0 && r < ui.order.length) moveTo(ui.order[r], c);
  }

  // ---- polling -----------------------------------------------------------------------------------
  function renderConnection() {
    const conn = $('conn');
    const at = ui.lastOkAt ? ui.lastOkAt.toLocaleTimeString() : null;
    if (ui.problem) {
      conn.className = 'conn conn-bad';
      setText(conn, 'Cannot read the status (' + ui.problem + ')'
        + (at ? '; showing the status read at ' + at : '') + '. Retrying…');
    } else if (at) {
      conn.className = 'conn conn-ok';
      setText(conn, 'Live · updated ' + at);
    }
    // The visible line changes every poll; screen readers hear only when reading starts or stops failing.
    const alert = $('conn-alert');
    if (ui.problem) setText(alert, 'Cannot read the status: ' + ui.problem);
    else if (alert.textContent) setText(alert, 'The status is readable again.');
  }

  async function pollOnce() {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), FETCH_TIMEOUT_MS);
    ui.polls++;
    try {
      const resp = await fetch(STATUS_URL, { cache: 'no-cache', signal: ctrl.signal, credentials: 'same-origin',
        headers: { Accept: 'application/json' } });
      if (!resp.ok) throw new Error('HTTP ' + resp.status);
      const text = await resp.text();
      ui.lastOkAt = new Date();
      ui.problem = null;
      if (text !== ui.lastText) {
        ui.status = normalise(JSON.parse(text));
        ui.lastText = text;
        renderAll('poll');
      } else {
        renderHeader(ui.status); // ages move on
      }
    } catch (e) {
      ui.problem = e.name === 'AbortError' ? 'no answer within ' + FETCH_TIMEOUT_MS / 1000 + ' s'
        : e instanceof SyntaxError ? 'the answer is not JSON' : e.message;
    } finally {
      clearTimeout(timer);
      renderConnection();
    }
  }

  let pollTimer = null;
  async function pollLoop() {
    pollTimer = null;
    await pollOnce();
    if (!document.hidden) pollTimer = setTimeout(pollLoop, POLL_MS);
  }

  // ---- wiring ------------------------------------------------------------------------------------
  function legend() {
    $('legend').innerHTML = ALL_STATES.concat([NOT_PLACED]).map((s) => '<span class="legend-item"><span class="badge '
      + stateClass(s) + '"><span aria-hidden="true">' + glyph(s) + '</span> ' + esc(s) + '</span></span>').join(' ');
  }

  function start() {
    legend();
    readHash();
    let debounce = null;
    $('selector').addEventListener('input', (ev) => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { setSelector(ev.target.value); filtersChanged(); }, 120);
    });
    $('sort').addEventListener('change', (ev) => { ui.sort = ev.target.value; filtersChanged(); });
    $('matrix-head').addEventListener('click', (ev) => {
      const btn = ev.target.closest('.sort-btn');
      if (!btn) return;
      const key = btn.dataset.sort;
      ui.sort = ui.sort === key ? '-' + key : key; // a second click reverses
      $('sort').value = ui.sort;
      filtersChanged();
      const again = $('matrix-head').querySelector('.sort-btn[data-sort="' + key + '"]');
      if (again) again.focus();
    });
    $('clear').addEventListener('click', () => {
      $('selector').value = '';
      setSelector('');
      ui.states.clear();
      filtersChanged();
    });
    $('state-filter').addEventListener('click', (ev) => {
      const btn = ev.target.closest('.state-btn');
      if (!btn) return;
      const s = btn.dataset.state;
      if (ui.states.has(s)) ui.states.delete(s); else ui.states.add(s);
      filtersChanged();
    });
    const body = $('matrix-body');
    body.addEventListener('keydown', onGridKey);
    body.addEventListener('mouseover', onGridHover);
    body.addEventListener('click', (ev) => {
      const pos = cellPosition(ev.target);
      if (!pos) return;
      moveTo(pos.cluster, pos.col);
      openDetails();
    });
    body.addEventListener('focusin', (ev) => {
      const pos = cellPosition(ev.target);
      if (pos && (pos.cluster !== ui.active.cluster || pos.col !== ui.active.col)) moveTo(pos.cluster, pos.col, { focus: false });
    });
    $('details-close').addEventListener('click', closeDetails);
    $('details').addEventListener('keydown', (ev) => { if (ev.key === 'Escape') closeDetails(); });
    window.addEventListener('hashchange', () => { readHash(); renderAll('hash'); });
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && pollTimer === null) pollLoop();
    });
    setInterval(() => { if (ui.status) renderHeader(ui.status); }, 15000);
    pollLoop();
  }

  // Read-only hooks for tests and benchmarks.
  window.fleetUi = {
    parseSelector,
    matches,
    get lastRender() { return ui.lastRender; },
    get polls() { return ui.polls; },
    get renders() { return ui.renders; },
    get jaegerUrl() { return JAEGER; },
    get pollIntervalMs() { return POLL_MS; },
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
