// The files page: open any backup and walk its directories; search a name across the
// medium's backups; one file's versions across all backups (time, size, changed or not);
// download one file; restore a selection to its original place or a chosen directory, with
// the CLI restore's rules (nothing newer overwritten unless asked), progress and a summary.
// Paths go to the server as their keys (exact bytes, see wire.rs) and are shown as the server
// shows them (a byte that is not UTF-8 as \xNN).
'use strict';

(() => {
  const { api, el, put, human, when, medium, main, banner, follow } = TB;
  const q = new URLSearchParams(location.search);
  const st = { backups: [], label: '', backup: Number(q.get('backup')) || null, path: q.get('path') || '/', picked: new Map() };
  const box = {
    list: el('div', { id: 'list' }),
    found: el('div', { id: 'found' }),
    versions: el('div', { id: 'versions' }),
    restore: el('div', { id: 'restore', class: 'panel' }),
  };

  // Each box's newest request: a reply to an older one (out of order) is not drawn.
  const seq = { list: 0, versions: 0, found: 0 };

  const parent = (p) => p.replace(/\/[^/]*$/, '') || '/';
  const rec = (id) => st.backups.find((b) => b.id === id);
  const backupName = (b) => '#' + b.id + ' ' + b.kind + ' ' + when(b.started) + (b.verified ? '' : ' (unverified)');

  function remember() {
    history.replaceState(null, '', location.pathname + '?backup=' + st.backup + '&path=' + encodeURIComponent(st.path));
  }

  async function download(backup, path) {
    try {
      const r = await api('/api/media/' + medium + '/download', { backup, path });
      const a = el('a', { href: r.url, download: '' });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (e) { banner(e.message); }
  }

  // The way from / to the directory: [name shown, key] of each (the server's, or / alone).
  function crumbs(way) {
    const c = el('div', { class: 'crumbs' }, el('a', { href: '#', text: '/', onclick: (e) => { e.preventDefault(); open('/'); } }));
    for (const [name, key] of way || []) {
      c.append(el('a', { href: '#', text: name + '/', onclick: (e) => { e.preventDefault(); open(key); } }));
    }
    return c;
  }

  async function open(path) {
    st.path = path;
    remember();
    box.list.replaceChildren(el('p', { class: 'muted', text: 'Loading…' }));
    const mine = ++seq.list;
    try {
      const d = await api('/api/media/' + medium + '/ls?backup=' + st.backup + '&path=' + encodeURIComponent(path));
      if (mine !== seq.list) return;
      const rows = d.rows.slice().sort((a, b) => (b.kind === 'dir') - (a.kind === 'dir') || (a.path < b.path ? -1 : 1));
      const table = el('table', { id: 'listing' }, el('tr', {},
        el('th', { text: '' }), el('th', { text: 'name' }), el('th', { class: 'num', text: 'size' }),
        el('th', { text: 'modified' }), el('th', { text: 'in this backup' }), el('th', { text: '' })));
      if (path !== '/') {
        table.append(el('tr', { class: 'up' }, el('td'), el('td', {}, el('a', { href: '#', text: '..', onclick: (e) => { e.preventDefault(); open(parent(path)); } }))));
      }
      for (const r of rows) {
        const name = r.path.slice(r.path.lastIndexOf('/') + 1);
        const pick = el('input', { type: 'checkbox', class: 'pick', checked: st.picked.has(r.key) });
        pick.addEventListener('change', () => { pick.checked ? st.picked.set(r.key, r.path) : st.picked.delete(r.key); drawRestore(); });
        const nameCell = r.kind === 'dir'
          ? el('a', { href: '#', class: 'dir', text: name + '/', onclick: (e) => { e.preventDefault(); open(r.key); } })
          : el('span', { text: name + (r.target ? ' → ' + r.target : '') });
        const acts = el('td', { class: 'acts' });
        if (r.kind === 'file') {
          acts.append(el('button', { class: 'plain versions', text: 'Versions', onclick: () => versions(r.key) }), ' ',
            el('button', { class: 'plain download', text: 'Download', onclick: () => download(st.backup, r.key) }));
        }
        table.append(el('tr', { class: 'entry ' + r.kind, 'data-key': r.key },
          el('td', {}, pick), el('td', {}, nameCell), el('td', { class: 'num', text: r.kind === 'file' ? human(r.size) : '' }),
          el('td', { text: when(r.mtime) }), el('td', { class: 'muted', text: r.origin }), acts));
      }
      box.list.replaceChildren(crumbs(d.crumbs), table);
      if (d.truncated) box.list.append(el('p', { class: 'muted', text: 'Only the first ' + d.rows.length + ' entries are shown.' }));
    } catch (e) {
      if (mine !== seq.list) return;
      box.list.replaceChildren(crumbs(), el('p', { class: 'error', text: e.message }));
    }
  }

  async function versions(path) {
    box.versions.replaceChildren(el('div', { class: 'panel' }, el('p', { class: 'muted', text: 'Looking through every backup…' })));
    const mine = ++seq.versions;
    try {
      const d = await api('/api/media/' + medium + '/versions?path=' + encodeURIComponent(path));
      if (mine !== seq.versions) return;
      const table = el('table', {}, el('tr', {}, el('th', { text: 'backup' }), el('th', { text: 'made' }),
        el('th', { text: 'version' }), el('th', { class: 'num', text: 'size' }), el('th', { text: 'modified' }),
        el('th', { text: '' }), el('th', { text: '' })));
      for (const r of d.rows.slice().reverse()) {
        table.append(el('tr', { class: 'version' + (r.changed ? ' changed' : ''), 'data-backup': r.backup,
          'data-version': r.version, 'data-changed': String(r.changed) },
          el('td', { text: '#' + r.backup + ' ' + r.kind + (r.verified ? '' : ' (unverified)') }),
          el('td', { text: when(r.started) }), el('td', { text: 'v' + (r.version + 1) }),
          el('td', { class: 'num', text: human(r.size) }), el('td', { text: when(r.mtime) }),
          el('td', { class: r.changed ? '' : 'muted', text: r.changed ? 'changed' : 'unchanged' }),
          el('td', {}, el('button', { class: 'plain download', text: 'Download', onclick: () => download(r.backup, path) }), ' ',
            el('button', { class: 'plain restore-version', text: 'Restore this version…', onclick: () => pickVersion(r.backup, path, d.path) }))));
      }
      box.versions.replaceChildren(el('div', { class: 'panel' },
        el('h2', { text: 'Versions of ' + d.path }),
        el('p', { class: 'muted', text: d.versions.length + ' different versions in ' + d.rows.length + ' backups (newest first).' }),
        d.rows.length ? table : el('p', { text: 'In no backup on this medium.' })));
      box.versions.scrollIntoView();
    } catch (e) {
      if (mine !== seq.versions) return;
      box.versions.replaceChildren(el('div', { class: 'panel' }, el('p', { class: 'error', text: e.message })));
    }
  }

  async function pickVersion(backup, path, shown) {
    st.backup = backup;
    st.picked = new Map([[path, shown]]);
    document.getElementById('backup').value = String(backup);
    await open(parent(path));
    drawRestore();
    box.restore.scrollIntoView();
  }

  async function search(text) {
    box.found.replaceChildren(el('div', { class: 'panel' }, el('p', { class: 'muted', text: 'Searching every backup…' })));
    const mine = ++seq.found;
    try {
      const d = await api('/api/media/' + medium + '/search?q=' + encodeURIComponent(text));
      if (mine !== seq.found) return;
      const list = el('ul', { class: 'plain' }, ...d.found.map((f) => el('li', { class: 'hit', 'data-key': f.key },
        el('a', { href: '#', text: f.path + (f.kind === 'dir' ? '/' : ''), onclick: (e) => {
          e.preventDefault(); st.backup = f.backup; document.getElementById('backup').value = String(f.backup); open(parent(f.key));
        } }),
        ' ', el('span', { class: 'muted', text: (f.kind === 'file' ? human(f.size) + ', ' : '') + 'newest in #' + f.backup + ' ' }),
        f.kind === 'file' ? el('button', { class: 'plain versions', text: 'Versions', onclick: () => versions(f.key) }) : null)));
      box.found.replaceChildren(el('div', { class: 'panel' },
        el('h2', { text: 'Found "' + text + '"' }),
        d.found.length ? list : el('p', { text: 'No name on this medium contains it.' }),
        d.truncated ? el('p', { class: 'muted', text: 'More matched; only the first ' + d.found.length + ' are shown.' }) : null,
        d.index === 'building' ? el('p', { class: 'muted indexing', text: 'Still indexing this medium: searches are faster when it is done.' }) : null));
    } catch (e) {
      if (mine !== seq.found) return;
      box.found.replaceChildren(el('div', { class: 'panel' }, el('p', { class: 'error', text: e.message })));
    }
  }

  function drawRestore() {
    const b = rec(st.backup);
    const picked = [...st.picked.keys()].sort();
    const toOrig = el('input', { type: 'radio', name: 'to', id: 'to-original', checked: true });
    const toDir = el('input', { type: 'radio', name: 'to', id: 'to-dir' });
    const dir = el('input', { type: 'text', id: 'target-dir', class: 'wide', placeholder: '/root/restored' });
    dir.addEventListener('input', () => { toDir.checked = true; });
    const overwrite = el('input', { type: 'checkbox', id: 'overwrite' });
    const dry = el('input', { type: 'checkbox', id: 'dry-run' });
    const result = el('div', { id: 'restore-result' });
    const go = el('button', { id: 'restore-go', text: 'Restore', disabled: !b });
    go.addEventListener('click', async () => {
      go.disabled = true;
      const body = { backup: st.backup, paths: picked, overwrite: overwrite.checked, dry_run: dry.checked };
      if (toDir.checked) body.to = dir.value.trim();
      const bar = el('progress', {});
      result.className = 'result';
      result.replaceChildren(el('div', { text: 'restoring…' }), bar);
      try {
        const op = await follow('/api/media/' + medium + '/restore', body, (o) => {
          if (o.total) { bar.max = o.total; bar.value = o.bytes; }
        });
        result.className = 'result ' + (op.done.ok ? 'ok' : 'failed');
        const kept = (op.done.detail && op.done.detail.kept) || [];
        result.replaceChildren(el('div', { class: 'summary', text: op.done.message }));
        if (kept.length) result.append(el('ul', {}, ...kept.map((k) => el('li', { class: 'kept', text: k.path + ' (' + k.why.replace('_', ' ') + ')' }))));
      } catch (e) {
        result.className = 'result failed';
        result.replaceChildren(el('div', { class: 'summary', text: e.message }));
      }
      go.disabled = false;
    });
    put(box.restore,
      el('h2', { text: 'Restore' }),
      el('p', {}, b ? 'From backup ' + backupName(b) + ': ' : 'Pick a backup. ',
        picked.length ? picked.length + ' selected' : 'nothing selected: the whole backup'),
      picked.length ? el('ul', { class: 'plain picked' }, ...picked.map((p) => el('li', { text: st.picked.get(p) }))) : null,
      el('div', {}, el('label', {}, toOrig, ' to the original place')),
      el('div', {}, el('label', {}, toDir, ' under the directory '), dir,
        el('span', { class: 'muted', text: ' (full paths kept below it)' })),
      el('div', {}, el('label', {}, overwrite, ' replace newer files and things in the way (otherwise they are kept and listed)')),
      el('div', {}, el('label', {}, dry, ' only show what would be restored')),
      el('div', { class: 'actions' }, go),
      result);
  }

  async function load() {
    try {
      const t = await api('/api/media/' + medium + '/tree');
      st.backups = t.backups.slice().sort((a, b) => (a.started < b.started ? 1 : -1) || b.id - a.id);
      st.label = t.label;
      if (!st.backup || !rec(st.backup)) st.backup = t.latest_verified;
      const pickBackup = el('select', { id: 'backup' }, ...st.backups.map((b) =>
        el('option', { value: b.id, text: backupName(b), selected: b.id === st.backup })));
      pickBackup.addEventListener('change', () => { st.backup = Number(pickBackup.value); st.picked.clear(); open(st.path); drawRestore(); });
      const text = el('input', { type: 'text', id: 'search', placeholder: 'a file name, or part of one' });
      const find = el('button', { id: 'find', text: 'Find in all backups' });
      const form = el('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); if (text.value.trim()) search(text.value.trim()); } },
        text, find);
      main.replaceChildren(el('h1', { text: 'Files on ' + t.label }),
        el('div', { class: 'toolbar' }, el('label', { for: 'backup', text: 'Backup ' }), pickBackup), form,
        box.found, box.versions, box.list, box.restore);
      drawRestore();
      if (st.backup) open(st.path); else box.list.replaceChildren(el('p', { text: 'No backups on this medium yet.' }));
    } catch (e) {
      banner(e.message);
      main.replaceChildren();
    }
  }

  load();
})();
