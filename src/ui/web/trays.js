// The trays page: every known medium, where it is, its newest backups, free space, the
// running job's progress; backup now and eject, with the result ("safe to remove").
'use strict';

(() => {
  const { api, el, human, when, ago, main, banner, follow, KINDS } = TB;
  // Results of the buttons, by media id, kept across redraws.
  const results = {};
  let timer = null;
  let last = '';
  // Each refresh's number: only the newest one draws and sets the next poll, so a refresh
  // started by a button while a timed one is in flight does not start a second poll loop.
  let gen = 0;

  function newestTable(t) {
    const dl = el('dl', { class: 'kv newest' });
    for (const k of KINDS) {
      const b = t.newest[k];
      if (!b) continue;
      dl.append(el('dt', { text: 'last ' + k }), el('dd', {}, '#' + b.id + ' · ' + when(b.started)));
    }
    if (!dl.children.length) {
      dl.append(el('dt', { text: 'newest' }),
        el('dd', {}, t.newest_any ? '#' + t.newest_any.id + ' · ' + when(t.newest_any.started) : 'no backup yet'));
    }
    return dl;
  }

  function placeLines(t, now) {
    const dl = el('dl', { class: 'kv' });
    const row = (k, v) => dl.append(el('dt', { text: k }), el('dd', {}, v));
    if (t.state === 'inserted') {
      row('in', t.device + ' at ' + t.mountpoint);
      if (!t.writing) row('note', 'not written: another tray was inserted last');
      if (!t.job) row('next backup', when(t.next_due));
    } else if (t.state === 'directory') {
      row('directory', t.path);
    } else {
      row('away since', t.last_seen ? when(t.last_seen) + ' (' + ago(t.last_seen, now) + ')' : 'never seen');
      if (t.last_device) row('last in', t.last_device);
    }
    if (t.backups !== null) row('backups', String(t.backups));
    if (t.free_bytes !== null) row('free', human(t.free_bytes));
    return dl;
  }

  function jobBox(t) {
    if (t.state !== 'inserted' || !t.job) return null;
    // The server's words (as `trayback status` says it).
    return el('div', { class: 'job' }, el('div', {}, t.job_summary), el('progress', {}));
  }

  function resultBox(id) {
    const r = results[id];
    if (!r) return null;
    return el('div', { class: 'result ' + r.cls, 'data-op': r.what }, r.text);
  }

  // A button's action on this medium is in flight.
  const acting = (id) => results[id] !== undefined && results[id].cls === '';

  async function act(t, what) {
    results[t.media_id] = { cls: '', what, text: what === 'eject' ? 'ejecting…' : 'backing up…' };
    refresh();
    try {
      const op = await follow('/api/trays/' + t.media_id + '/' + what, undefined, () => {});
      results[t.media_id] = { cls: op.done.ok ? 'ok' : 'failed', what, text: op.done.message };
    } catch (e) {
      results[t.media_id] = { cls: 'failed', what, text: e.message };
    }
    refresh();
  }

  function card(t, now) {
    const c = el('section', { class: 'card tray', 'data-media': t.media_id, 'data-state': t.state },
      el('h2', {}, el('span', { class: 'label', text: t.label || '(no label)' }),
        el('span', { class: 'badge ' + t.state, text: t.state })),
      el('div', { class: 'muted' }, 'medium ' + t.media_id),
      placeLines(t, now), newestTable(t), jobBox(t));
    if (t.error) c.append(el('div', { class: 'error' }, t.error));
    const actions = el('div', { class: 'actions' });
    if (t.state === 'inserted') {
      const busy = acting(t.media_id);
      const b = el('button', { class: 'backup-now', text: 'Back up now', disabled: busy });
      b.addEventListener('click', () => act(t, 'backup-now'));
      const e = el('button', { class: 'eject plain', text: 'Eject', disabled: busy });
      e.addEventListener('click', () => act(t, 'eject'));
      actions.append(b, e);
    }
    if (t.state !== 'away' && t.media_id) {
      for (const [text, p] of [['Tree', 'tree'], ['Files', 'files'], ['Space', 'space']]) {
        actions.append(el('a', { class: 'button plain', href: '/m/' + t.media_id + '/' + p, text }));
      }
    }
    c.append(actions);
    const r = resultBox(t.media_id);
    if (r) c.append(r);
    return c;
  }

  async function refresh() {
    clearTimeout(timer);
    const mine = ++gen;
    let busy = false;
    try {
      const d = await api('/api/trays');
      if (mine !== gen) return;
      banner(null);
      // Redraw only what changed (the page is polled): what is shown, so the server's clock
      // counts only as the "… ago" it is shown as.
      const shown = { ...d, now: d.trays.map((t) => (t.state === 'away' ? ago(t.last_seen, d.now) : '')) };
      const seen = JSON.stringify([shown, results]);
      // A job running, or a button's action in flight: ask again each second.
      busy = d.trays.some((t) => t.job) || Object.keys(results).some(acting);
      if (seen === last) { timer = setTimeout(refresh, busy ? 1000 : 5000); return; }
      last = seen;
      const parts = [el('h1', { text: 'Trays' + (d.host ? ' of ' + d.host : '') })];
      if (d.agent_error) parts.push(el('p', { class: 'muted agent-error' }, 'The agent does not answer: ' + d.agent_error));
      if (d.warnings.length) parts.push(el('ul', { class: 'warnings' }, ...d.warnings.map((w) => el('li', { text: w }))));
      // Media shown as results only (ejected ones) stay until the next action.
      const cards = d.trays.map((t) => card(t, d.now));
      for (const id of Object.keys(results)) {
        if (!d.trays.some((t) => t.media_id === id)) {
          cards.push(el('section', { class: 'card tray gone', 'data-media': id },
            el('h2', { text: 'medium ' + id }), resultBox(id)));
        }
      }
      if (!cards.length) parts.push(el('p', { class: 'muted', text: 'No tray known yet: insert one.' }));
      parts.push(el('div', { class: 'cards' }, ...cards));
      main.replaceChildren(...parts);
    } catch (e) {
      if (mine !== gen) return;
      banner(e.message);
    }
    timer = setTimeout(refresh, busy ? 1000 : 5000);
  }

  refresh();
})();
