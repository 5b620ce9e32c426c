// The tree page: the medium's dependency tree drawn as in the spec's Fig. 2 (monthly root,
// weeklies, dailies, micro chains; each node's kind, time, size, verified), a time line of
// every backup, and the paring plan with the flow-chart step behind each backup it pares.
// The layout (which micros are one node, where each node sits) is the server's, the same
// `trayback tree` draws as text.
'use strict';

(() => {
  const { api, el, svg, human, when, medium, main, banner, KINDS } = TB;
  const ROW = 30, INDENT = 26, BOX_W = 330, BOX_H = 22, MAX_DEPTH = 32;

  function filesLink(id) {
    return '/m/' + medium + '/files?backup=' + id;
  }

  function nodeText(n, byId) {
    const b = byId.get(n.first);
    if (n.count > 1) {
      const last = byId.get(n.last);
      return '#' + n.first + ' … #' + n.last + '  ' + n.count + ' micro  ' + when(b.started) +
        ' – ' + when(last.started).slice(11);
    }
    return '#' + b.id + '  ' + b.kind + '  ' + when(b.started) + '  ' + human(b.bytes_stored) +
      (b.verified ? '  ✓' : '  unverified');
  }

  function picture(d, byId, paring) {
    const nodes = d.nodes;
    const x = (n) => 8 + Math.min(n.depth, MAX_DEPTH) * INDENT;
    const y = (i) => 8 + i * ROW;
    const width = 8 + Math.min(Math.max(0, ...nodes.map((n) => n.depth)), MAX_DEPTH) * INDENT + BOX_W + 20;
    const s = svg('svg', { id: 'tree', width, height: y(nodes.length) + 8, role: 'img',
      'aria-label': 'dependency tree of ' + d.backups.length + ' backups' });
    nodes.forEach((n, i) => {
      if (n.parent_row === null) return;
      const p = nodes[n.parent_row];
      const px = x(p) + 10, py = y(n.parent_row) + BOX_H;
      s.append(svg('path', { class: 'edge', d: 'M' + px + ' ' + py + ' V' + (y(i) + BOX_H / 2) + ' H' + x(n) }));
    });
    nodes.forEach((n, i) => {
      const b = byId.get(n.first);
      const pared = n.members.map((id) => paring.get(id)).filter(Boolean);
      const cls = ['node', b.kind, b.verified ? 'verified' : 'unverified', pared.length ? 'to-pare' : ''].join(' ');
      const g = svg('g', { class: cls, 'data-first': n.first, 'data-last': n.last, 'data-count': n.count,
        transform: 'translate(' + x(n) + ',' + y(i) + ')' });
      const tip = nodeText(n, byId) + (pared.length ? '\nto be pared: ' + pared[0].why : '');
      g.append(svg('title', { text: tip }));
      const a = svg('a', { href: filesLink(n.last) });
      a.append(svg('rect', { width: BOX_W, height: BOX_H, rx: 4 }),
        svg('text', { x: 8, y: 15, text: nodeText(n, byId) }));
      g.append(a);
      if (pared.length) g.append(svg('text', { class: 'mark', x: BOX_W + 6, y: 15, text: '✂' }));
      s.append(g);
    });
    return s;
  }

  function timeline(d, paring) {
    const W = 1000, L = 70, R = 20, lane = 26;
    const times = d.backups.map((b) => new Date(b.started).getTime());
    const t0 = Math.min(...times), t1 = Math.max(...times, t0 + 1);
    const X = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
    const s = svg('svg', { id: 'timeline', width: W, height: 30 + lane * KINDS.length, role: 'img',
      'aria-label': 'time line of ' + d.backups.length + ' backups' });
    KINDS.forEach((k, i) => {
      const yy = 20 + i * lane;
      s.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: yy, y2: yy }),
        svg('text', { class: 'label', x: 4, y: yy + 4, text: k }));
    });
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      const t = t0 + f * (t1 - t0);
      s.append(svg('text', { class: 'label', x: X(t) - 70 * f, y: 20 + lane * KINDS.length,
        text: when(new Date(t).toISOString()).slice(0, 10) }));
    }
    for (const b of d.backups) {
      const p = paring.get(b.id);
      const c = svg('circle', { class: 'dot ' + b.kind + (p ? ' to-pare' : ''), r: b.kind === 'micro' ? 3 : 5,
        cx: X(new Date(b.started).getTime()), cy: 20 + KINDS.indexOf(b.kind) * lane, 'data-id': b.id });
      c.append(svg('title', { text: '#' + b.id + ' ' + b.kind + ' ' + when(b.started) + (p ? '\nto be pared: ' + p.why : '') }));
      s.append(c);
    }
    return s;
  }

  function pareList(items, cls) {
    if (!items.length) return el('p', { class: 'muted', text: 'none' });
    return el('ol', { class: 'pares ' + cls }, ...items.map((p) =>
      el('li', {}, el('a', { href: filesLink(p.id), text: '#' + p.id }), ' ' + p.kind + ' ' + when(p.started) + ' ',
        el('span', { class: 'why', text: '— ' + p.why }))));
  }

  async function load() {
    try {
      const d = await api('/api/media/' + medium + '/tree');
      const byId = new Map(d.backups.map((b) => [b.id, b]));
      const paring = new Map();
      for (const p of d.pare_order) paring.set(p.id, p);
      for (const p of d.pare_now) paring.set(p.id, p);
      const counts = KINDS.map((k) => d.backups.filter((b) => b.kind === k).length + ' ' + k).join(', ');
      const parts = [el('h1', { text: 'Tree of ' + d.label }),
        el('p', { class: 'muted' }, d.backups.length + ' backups: ' + counts + '. Click a backup to open its files.')];
      if (!d.backups.length) {
        parts.push(el('p', { text: 'No backups on this medium yet.' }));
      } else {
        parts.push(el('div', { class: 'legend' },
          ...KINDS.map((k) => el('span', {}, el('span', { class: 'sw ' + k }), k)),
          el('span', {}, el('span', { class: 'sw pare' }), 'to be pared (✂)')),
        el('div', { class: 'panel scroll' }, picture(d, byId, paring)),
        el('h2', { text: 'Time line' }),
        el('div', { class: 'panel scroll' }, timeline(d, paring)),
        el('h2', { text: 'Paring' }),
        el('div', { class: 'panel' },
          el('p', { text: 'Pared now, by age (what `trayback pare` does after every backup):' }),
          pareList(d.pare_now, 'now'),
          el('p', { text: 'Then, as space is needed, in this order (the flow chart of Figs. 3a/3b):' }),
          pareList(d.pare_order, 'order')));
      }
      main.replaceChildren(...parts);
    } catch (e) {
      banner(e.message);
      main.replaceChildren();
    }
  }

  load();
})();
