// trayback web interface: what every page shares. Plain script, no libraries: the page key,
// calls to the JSON API, building DOM and SVG (text only, never markup from data), formats.
'use strict';

const TB = (() => {
  // The session's key arrives once in the login redirect's fragment; it is kept in this
  // origin's storage (another port of 127.0.0.1 cannot read it) and sent with every API call.
  const KEY = 'trayback-key';
  const m = location.hash.match(/^#key=([0-9a-f]{64})$/);
  if (m) {
    localStorage.setItem(KEY, m[1]);
    history.replaceState(null, '', location.pathname + location.search);
  }
  const key = localStorage.getItem(KEY) || '';

  async function api(path, body) {
    const opts = { headers: { 'X-Trayback-Key': key }, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      opts.method = 'POST';
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    const text = await r.text();
    let data = null;
    try { data = JSON.parse(text); } catch (e) { /* not JSON: a refusal in plain text */ }
    if (!r.ok) throw new Error((data && data.error) || text.trim() || r.statusText);
    return data;
  }

  // el('div', {class: 'x', text: 'y', onclick: f}, child, 'text', ...)
  function build(node, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of kids) {
      if (c === undefined || c === null || c === false) continue;
      node.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return node;
  }
  // Replace a node's children, leaving out absent ones.
  const put = (node, ...kids) => node.replaceChildren(...kids.filter((k) => k !== null && k !== undefined && k !== false));
  const el = (tag, attrs, ...kids) => build(document.createElement(tag), attrs, kids);
  const svg = (tag, attrs, ...kids) =>
    build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, kids);

  function human(n) {
    if (n === null || n === undefined) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + ' ' + u[i];
  }
  const pad = (n) => String(n).padStart(2, '0');
  function when(t) {
    if (!t) return '–';
    const d = new Date(t);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes());
  }
  function ago(t, now) {
    if (!t) return 'never';
    const s = Math.max(0, (new Date(now || Date.now()) - new Date(t)) / 1000);
    if (s < 90) return 'just now';
    if (s < 5400) return Math.round(s / 60) + ' minutes ago';
    if (s < 129600) return Math.round(s / 3600) + ' hours ago';
    return Math.round(s / 86400) + ' days ago';
  }

  // The kinds of backup, largest first (the server's `Kind`).
  const KINDS = ['monthly', 'weekly', 'daily', 'micro'];

  const page = document.body.dataset.page;
  const medium = document.body.dataset.medium;
  const main = document.getElementById('main');

  function nav() {
    const n = document.getElementById('nav');
    const links = [['Trays', '/', 'trays']];
    if (medium) {
      links.push(['Tree', '/m/' + medium + '/tree', 'tree'],
        ['Files', '/m/' + medium + '/files', 'files'],
        ['Space', '/m/' + medium + '/space', 'space']);
    }
    n.replaceChildren(...links.map(([t, h, p]) => el('a', { href: h, class: p === page ? 'here' : null }, t)));
  }

  function banner(msg) {
    const b = document.getElementById('banner');
    b.hidden = !msg;
    b.textContent = msg || '';
  }

  // Run an operation's request, then follow it on /api/ops until it ends; `show` gets the op.
  async function follow(path, body, show) {
    const started = await api(path, body === undefined ? {} : body);
    for (;;) {
      const ops = await api('/api/ops');
      const op = ops.find((o) => o.id === started.op);
      if (!op) throw new Error('the operation was lost');
      show(op);
      if (op.done) return op;
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  nav();
  if (!key) banner('This page has no key: open the URL that `trayback ui` printed.');
  return { api, el, put, svg, human, when, ago, page, medium, main, banner, follow, KINDS };
})();
