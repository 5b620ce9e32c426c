// The space page: the medium's used space over time, what `simulate` forecasts for it (this
// capacity at this medium's own change rate, the simulation `media show --reach` runs), and
// how far back each kind of backup reaches, now and in that forecast.
'use strict';

(() => {
  const { api, el, svg, human, when, medium, main, banner, KINDS } = TB;

  // A line chart of points [x, bytes] with a capacity line; xLabel(x) names the ticks.
  function chart(id, points, capacity, xLabel, cls, extra, extraTop) {
    const W = 900, H = 260, L = 80, R = 20, T = 14, B = 30;
    const xs = points.map((p) => p[0]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    // The capacity is drawn when it is within sight of the data (a directory medium on a
    // large file system would flatten the curve to nothing).
    const most = Math.max(1, ...points.map((p) => p[1]), extraTop || 0);
    const showCap = capacity <= most * 4;
    const top = showCap ? Math.max(capacity, most) : most * 1.15;
    const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
    const Y = (v) => T + (1 - v / top) * (H - T - B);
    const s = svg('svg', { id, width: W, height: H, role: 'img' });
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      s.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: Y(top * f), y2: Y(top * f) }),
        svg('text', { class: 'label', x: 4, y: Y(top * f) + 4, text: human(Math.round(top * f)) }),
        svg('text', { class: 'label', x: X(x0 + f * (x1 - x0)) - 70 * f, y: H - 8, text: xLabel(x0 + f * (x1 - x0)) }));
    }
    s.append(svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }),
      svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
    if (points.length) {
      let d = 'M' + X(points[0][0]) + ' ' + Y(points[0][1]);
      for (let i = 1; i < points.length; i++) d += ' H' + X(points[i][0]) + ' V' + Y(points[i][1]);
      s.append(svg('path', { class: 'line ' + cls, d }));
    }
    if (showCap) {
      s.append(svg('line', { class: 'cap', x1: L, x2: W - R, y1: Y(capacity), y2: Y(capacity) }),
        svg('text', { class: 'label', x: W - R - 140, y: Y(capacity) - 4, text: 'capacity ' + human(capacity) }));
    } else {
      s.append(svg('text', { class: 'label', x: W - R - 240, y: T + 4, text: 'capacity ' + human(capacity) + ' (far above)' }));
    }
    if (extra) extra(s, X, Y);
    return s;
  }

  function reachBars(d) {
    const W = 900, L = 80, lane = 34, now = new Date(d.now).getTime();
    const back = (k) => {
      const t = d.oldest[k];
      return t ? (now - new Date(t).getTime()) / 86400000 : null;
    };
    const ahead = (k) => (d.forecast ? d.forecast[0].days[k] : null);
    const days = KINDS.flatMap((k) => [back(k), ahead(k)]).filter((v) => v !== null && v !== undefined);
    const most = Math.max(1, ...days);
    const X = (v) => L + v / most * (W - L - 160);
    const s = svg('svg', { id: 'reach', width: W, height: 16 + lane * KINDS.length, role: 'img' });
    KINDS.forEach((k, i) => {
      const y = 8 + i * lane;
      s.append(svg('text', { class: 'label', x: 4, y: y + 14, text: k }));
      const b = back(k), f = ahead(k);
      if (b !== null) {
        s.append(svg('rect', { class: 'bar now', x: L, y, width: Math.max(1, X(b) - L), height: 12 }),
          svg('text', { x: X(b) + 6, y: y + 10, text: b.toFixed(1) + ' days now' }));
      }
      if (f !== null && f !== undefined) {
        s.append(svg('rect', { class: 'bar forecast', x: L, y: y + 14, width: Math.max(1, X(f) - L), height: 12 }),
          svg('text', { x: X(f) + 6, y: y + 24, text: f.toFixed(1) + ' days forecast' }));
      }
    });
    return s;
  }

  // The forecast part: the simulation's answer, or a note while it is computed.
  function forecastPart(d) {
    if (d.forecast_error) {
      return [el('h2', { text: 'Forecast' }),
        el('p', { class: 'muted', id: 'forecast-failed', text: 'The forecast failed: ' + d.forecast_error + ' (it is tried again in a few seconds).' })];
    }
    if (!d.forecast) {
      return [el('h2', { text: 'Forecast' }),
        el('p', { class: 'muted', id: 'forecast-pending', text: 'Simulating ' + d.simulated_days + ' days on this capacity at this medium\'s rate…' })];
    }
    const [reach, points] = d.forecast;
    const h = reach.history;
    return [el('h2', { text: 'Forecast' }),
      el('p', { class: 'muted', text: 'trayback simulate on this capacity for ' + d.simulated_days + ' days at this medium\'s rate: a full backup of ' +
        human(h.full_size) + ', changes of ' + human(h.change.micro) + ' a micro, ' + human(h.change.daily) + ' a day, ' +
        human(h.change.weekly) + ' a week' + (reach.failed ? '; ' + reach.failed + ' backups would find no room' : '') + '.' }),
      el('div', { class: 'panel scroll' }, chart('forecast', points, d.capacity, (x) => 'day ' + Math.round(x), 'forecast'))];
  }

  function draw(d) {
    const used = d.packs;
    const stored = d.stored.map(([t, v]) => [new Date(t).getTime(), v]);
    main.replaceChildren(
      el('h1', { text: 'Space' }),
      el('p', {}, 'The medium\'s packs occupy ' + human(used) + '; its file system has ' + human(d.free) + ' free of ' + human(d.capacity) + '.'),
      el('h2', { text: 'Used over time' }),
      el('p', { class: 'muted', text: 'What the backups now on the medium stored, as they were made (pared backups no longer count); the dot is what its packs occupy now (with blocks no backup needs any more, until they are collected).' }),
      el('div', { class: 'panel scroll' }, chart('used', stored, d.capacity, (x) => when(new Date(x).toISOString()).slice(0, 10), '',
        (s, X, Y) => { if (stored.length) s.append(svg('circle', { class: 'now', r: 5, cx: X(stored[stored.length - 1][0]), cy: Y(used) })); }, used)),
      ...forecastPart(d),
      el('h2', { text: 'How far back each kind reaches' }),
      el('div', { class: 'legend' }, el('span', {}, el('span', { class: 'sw monthly' }), 'on the medium now'),
        d.forecast && el('span', {}, el('span', { class: 'sw daily' }), 'at the end of the forecast')),
      el('div', { class: 'panel scroll' }, reachBars(d)));
  }

  async function load() {
    main.replaceChildren(el('p', { class: 'muted', text: 'Measuring the medium…' }));
    try {
      // The page is drawn at once; the forecast, computed in the background when the tree
      // changed, is asked for again until it is there.
      for (;;) {
        const d = await api('/api/media/' + medium + '/space');
        draw(d);
        if (d.forecast) return;
        await new Promise((r) => setTimeout(r, 1000));
      }
    } catch (e) {
      banner(e.message);
      main.replaceChildren();
    }
  }

  load();
})();
