// The console: find an identity, see why its contacts are one, repair it (edit, delete, block).
// Every call goes to the same API as any client; when the server has tokens, one is asked once
// and kept for the browser tab (sessionStorage), and GET /whoami tells its role: the console
// shows only what that role may do (docs/API.md, "Exposure").

import { draw } from '/console/graph.js';
import { showLatest, showHistory } from '/console/changes.js';

const $ = id => document.getElementById(id);
const TOKEN_KEY = 'identity-engine-token';
const ROLES = ['client', 'read', 'operate', 'admin'];
let caller = null;      // {name, role} from GET /whoami
let graphView = null;   // the drawn graph of the identity shown
let shown = null;       // {id, graph} of the identity shown

// An identity's primary, whichever spelling the server's --answer-key sends (docs/API.md).
const primaryOf = identity => identity.primaryContactId ?? identity.primaryContatctId;

// ---- calling the API ----

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body, { raw = false, type = 'application/json' } = {}) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers['Authorization'] = `Bearer ${token}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = type;
    init.body = typeof body === 'string' || body instanceof ArrayBuffer ? body : JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.ok) return raw ? response : response.json();
  let error = { code: 'http_' + response.status, message: response.statusText };
  try { error = (await response.json()).error || error; } catch { /* not JSON */ }
  if (response.status === 401) askForToken(Boolean(token));
  if (response.status === 403 && !caller) say('This server answers the console from its own host only; start it with --tokens or --admin-token to use the console from elsewhere.', true);
  else if (response.status === 403) say(`${error.message}`, true);
  throw Object.assign(new ApiError(response.status, error.code, error.message), { rows: error.rows });
}

function say(text, isError = false) {
  const status = $('status');
  status.textContent = text;
  status.className = isError ? 'error' : 'ok';
}

// Runs `work`, turning a refusal into a message instead of an unhandled rejection.
async function attempt(work) {
  try { return await work(); } catch (e) {
    if (e instanceof ApiError) {
      if (e.status !== 401 && e.status !== 403) say(`${e.message} (${e.code})`, true);
    } else {
      say(String(e), true);
    }
  }
}

// ---- signing in ----

function askForToken(wasWrong) {
  if (wasWrong) sessionStorage.removeItem(TOKEN_KEY);
  $('signin').hidden = false;
  $('signin-error').textContent = wasWrong ? 'That token is wrong: the server refused it.' : '';
  document.querySelector('main').hidden = true;
  $('token').focus();
}

$('signin-form').addEventListener('submit', async event => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  if (!(await learnRole())) return;
  $('token').value = '';
  $('signin').hidden = true;
  document.querySelector('main').hidden = false;
  say(`Signed in as ${caller.name} (${caller.role}).`);
  route();
});

$('signout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  caller = null;
  $('caller').hidden = true;
  askForToken(false);
});

// Whether the caller's role may do what `role` may.
const may = role => caller !== null && ROLES.indexOf(caller.role) >= ROLES.indexOf(role);

// Asks the server who the token is; shows only what its role may do. False if refused.
async function learnRole() {
  try { caller = await api('GET', '/whoami'); } catch { caller = null; return false; }
  for (const node of document.querySelectorAll('[data-needs]')) node.hidden = !may(node.dataset.needs);
  $('caller-name').textContent = `${caller.name} (${caller.role})`;
  $('caller').hidden = false;
  return true;
}

// ---- views and routing (#overview, #identity, #contact/N, #blocklist, #erasures, #try, #data) ----

function show(view) {
  for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== `view-${view}`;
  for (const link of document.querySelectorAll('nav a')) {
    link.toggleAttribute('aria-current', link.getAttribute('href') === `#${view}`);
  }
}

async function route() {
  if (!caller && !(await learnRole())) return;
  if (!may('read')) { show('try'); say(`The token ${caller.name} has role ${caller.role}: it may only send /identify.`); return; }
  const hash = location.hash.slice(1) || 'overview';
  const contact = hash.match(/^contact\/(\d+)$/);
  if (contact) { show('identity'); return attempt(() => openContact(Number(contact[1]))); }
  const view = ['overview', 'identity', 'blocklist', 'erasures', 'try', 'data'].includes(hash) ? hash : 'overview';
  show(view);
  if (view === 'overview') return attempt(loadOverview);
  if (view === 'blocklist') return attempt(loadBlocklist);
  if (view === 'erasures') return attempt(loadLedger);
}

window.addEventListener('hashchange', route);

// ---- overview ----

const number = n => Number(n).toLocaleString('en');

async function loadOverview() {
  const stats = await api('GET', '/stats');
  const figures = [
    ['Live contacts', stats.contacts.live], ['Deleted contacts', stats.contacts.deleted],
    ['Erased contacts', stats.contacts.erased],
    ['Identities', stats.clusters], ['Remembered joins and links', stats.joins],
    ['Blocked by an admin', stats.blockedValues.admin], ['Blocked as generic', stats.blockedValues.generic],
  ];
  $('figures').replaceChildren(...figures.map(([label, value]) =>
    el('div', { class: 'figure' }, el('span', { class: 'value' }, number(value)), el('span', { class: 'label' }, label))));
  $('largest').replaceChildren(...(stats.largestClusters.length ? stats.largestClusters.map(c =>
    el('li', {}, el('a', { href: `#contact/${c.primary}` }, `Primary #${c.primary}`), ` — ${number(c.size)} contacts`))
    : [el('li', { class: 'hint' }, 'No identity has more than one contact yet.')]));
  const f = stats.storage.figures;
  const facts = [
    ['Health', stats.storage.healthy ? 'healthy' : 'FAILED: changes refused until restart'],
    ['Log written since start', `${number(f.logBytesSinceStart)} bytes, ${number(f.fsyncsSinceStart)} fsyncs`],
    ['Last snapshot', f.lastSnapshotUnixSeconds ? `${new Date(f.lastSnapshotUnixSeconds * 1000).toISOString()} (${f.lastSnapshotSeconds.toFixed(2)} s)` : 'none since start'],
    ['Recovery at start', `${f.recoverySeconds.toFixed(3)} s`],
  ];
  $('storage').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { class: k === 'Health' ? (stats.storage.healthy ? 'ok' : 'error') : '' }, v)]));
  await showLatest(api, el, $('latest-changes'));
}

// ---- search ----

$('search-form').addEventListener('submit', event => {
  event.preventDefault();
  attempt(() => search($('search').value.trim()));
});

async function search(text) {
  if (!text) return;
  const id = text.match(/^#\s*(\d+)$/);
  if (id) return go(Number(id[1]));
  const param = text.includes('@') ? 'email' : 'phoneNumber';
  const found = await api('GET', `/contacts?${param}=${encodeURIComponent(text)}`).catch(e => {
    if (e.code === 'invalid_phone_number' && /^\d+$/.test(text)) return { contacts: [] };
    throw e;
  });
  if (found.contacts.length) return go(found.contacts[0].id);
  if (/^\d+$/.test(text)) return go(Number(text)); // no such phone: try it as an id
  say(`No live contact holds ${text}.`, true);
}

function go(id) {
  if (location.hash === `#contact/${id}`) return attempt(() => openContact(id));
  location.hash = `#contact/${id}`;
}

// ---- an identity: card, graph, rows ----

async function openContact(id) {
  show('identity');
  let identity, graph;
  try {
    [identity, graph] = await Promise.all([
      api('GET', `/contacts/${id}/identity`), api('GET', `/contacts/${id}/graph`)]);
  } catch (e) {
    if (e.status !== 404) throw e;
    const row = await api('GET', `/contacts/${id}`).catch(() => null);
    const gone = !row ? `No contact has id ${id}.`
      : row.erasedAt ? `Contact ${id} is erased (at ${row.erasedAt}); it holds no values and belongs to no identity.`
      : `Contact ${id} is deleted (at ${row.deletedAt}); it belongs to no identity.`;
    say(gone, true);
    return;
  }
  shown = { id, graph };
  $('outcome').hidden = true;
  $('identity-empty').hidden = true;
  $('identity-body').hidden = false;
  renderCard(identity.contact);
  renderRows(graph);
  renderGraph(graph);
  $('why-result').replaceChildren();
  $('selected').replaceChildren('Click a node of the graph.');
  $('history-title').textContent = `Changes that touched contact #${id}`;
  await showHistory(api, el, id, $('history'));
  say(`Identity of contact ${id}: ${graph.nodes.filter(n => n.type === 'contact').length} contacts.`);
}

function renderCard(c) {
  const list = (items, fmt = x => x) => items.length ? items.map(fmt).join(', ') : '—';
  $('identity-card').replaceChildren(
    el('h2', {}, `Primary #${primaryOf(c)}`),
    el('dl', { class: 'facts' },
      el('dt', {}, 'Emails'), el('dd', {}, list(c.emails)),
      el('dt', {}, 'Phone numbers'), el('dd', {}, list(c.phoneNumbers)),
      el('dt', {}, 'Secondaries'), el('dd', {}, c.secondaryContactIds.length
        ? c.secondaryContactIds.map(s => el('a', { href: `#contact/${s}` }, `#${s}`)).flatMap((a, i) => i ? [', ', a] : [a])
        : '—')));
}

function renderRows(graph) {
  const fields = ['id', 'email', 'phoneNumber', 'linkedId', 'linkPrecedence', 'createdAt', 'updatedAt', 'deletedAt'];
  const rows = graph.nodes.filter(n => n.type === 'contact').map(n => n.row);
  const editor = row => may('operate') ? [el('button', { type: 'button', class: 'small', 'aria-label': `Edit contact ${row.id}`,
    onclick: () => openEdit(row) }, 'Edit')] : [];
  const remover = row => may('operate') ? [el('button', { type: 'button', class: 'danger small', 'aria-label': `Delete contact ${row.id}`,
    onclick: () => confirmDelete(row.id) }, 'Delete')] : [];
  const eraser = row => may('operate') ? [el('button', { type: 'button', class: 'danger small', 'aria-label': `Erase contact ${row.id}`,
    onclick: () => confirmErase({ contactId: row.id }) }, 'Erase')] : [];
  $('rows').tBodies[0].replaceChildren(...rows.map(row => el('tr', {},
    ...fields.map(f => el('td', {}, row[f] === null ? '' : String(row[f]))),
    el('td', {}, ...editor(row), ' ', ...remover(row), ' ', ...eraser(row)))));
}

function renderGraph(graph) {
  if (graphView) graphView.destroy();
  const started = performance.now();
  graphView = draw($('graph'), graph, select);
  const cy = graphView.cy;
  const contacts = cy.nodes('.contact').length, values = cy.nodes('.value').length;
  const blocked = cy.nodes('.blocked').length;
  $('graph-caption').textContent = `${contacts} contact${contacts === 1 ? '' : 's'} and ${values} value${values === 1 ? '' : 's'}` +
    `${blocked ? ` (${blocked} blocked)` : ''}, ${cy.edges().length} edges. Click a node to select it.`;
  // For tests and for timing in the browser's console.
  window.consoleGraph = { cy, drawnInMs: performance.now() - started };
}

let nextWhyField = 'from';

function select(node) {
  if (node.contact !== undefined) {
    const row = shown.graph.nodes.find(n => n.type === 'contact' && n.row.id === node.contact).row;
    $('selected').replaceChildren(
      el('strong', {}, `Contact #${row.id}`), ` (${row.linkPrecedence})`,
      el('div', {}, [row.email, row.phoneNumber].filter(Boolean).join(' · ')),
      el('div', { class: 'hint' }, `created ${row.createdAt}`));
    // Two clicks on contacts choose the two ends of "why".
    $(nextWhyField === 'from' ? 'why-from' : 'why-to').value = row.id;
    if (nextWhyField === 'to') { nextWhyField = 'from'; attempt(explain); } else { nextWhyField = 'to'; $('why-to').value = ''; }
    return;
  }
  const holders = shown.graph.edges.filter(e => e.type === 'holds' && e.target === node.id).length;
  const action = !may('operate') ? ''
    : node.blocked
      ? el('button', { type: 'button', onclick: () => attempt(() => unblock(node.kind, node.value)) }, `Unblock ${node.value}`)
      : el('button', { type: 'button', class: 'danger', onclick: () => attempt(() => block(node.value)) }, `Block ${node.value}`);
  $('selected').replaceChildren(
    el('strong', {}, node.value), ` (${node.kind === 'email' ? 'email' : 'phone'}${node.blocked ? ', blocked' : ''})`,
    el('div', {}, `held by ${holders} contact${holders === 1 ? '' : 's'}`), action);
  $('block-value').value = node.value;
}

// ---- why ----

$('why-form').addEventListener('submit', event => { event.preventDefault(); attempt(explain); });

async function explain() {
  const from = $('why-from').value.trim().replace(/^#/, ''), to = $('why-to').value.trim().replace(/^#/, '');
  const why = await api('GET', `/contacts/${encodeURIComponent(from)}/why/${encodeURIComponent(to)}`);
  const out = $('why-result');
  if (!why.linked) {
    graphView?.clearPath();
    out.replaceChildren(el('li', {}, `Contacts #${from} and #${to} are not one identity: no evidence links them.`));
    return;
  }
  if (!why.hops.length) { out.replaceChildren(el('li', {}, `#${from} is the same contact.`)); return; }
  out.replaceChildren(...why.hops.map(h => el('li', {}, sentence(h))));
  if (shown && graphView && shown.graph.nodes.some(n => n.id === `contact:${from}`)) {
    graphView.showPath(why.hops);
    $('graph-region').dataset.highlighted = graphView.cy.elements('.path').length;
  }
  say(`#${from} and #${to}: ${why.hops.length} step${why.hops.length === 1 ? '' : 's'} of evidence, highlighted on the graph.`);
}

function sentence(h) {
  switch (h.evidence) {
    case 'email': return `#${h.from} and #${h.to} both hold the email ${h.email}.`;
    case 'phoneNumber': return `#${h.from} and #${h.to} both hold the phone number ${h.phoneNumber}.`;
    case 'join': return `A request named ${h.email} together with ${h.phoneNumber}, which joins #${h.from} and #${h.to}${h.madeAt ? ` (at ${h.madeAt})` : ' (when is not recorded)'}.`;
    default: return `#${h.from} and #${h.to} were linked by an import (a secondary's linkedId).`;
  }
}

// ---- confirming a change that cannot be taken back ----

let pending = null;   // what the confirmation dialog does if confirmed

function confirmThen(title, text, action, run) {
  pending = run;
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-action').textContent = action;
  $('confirm').showModal();
}

$('confirm').addEventListener('close', () => {
  const run = pending;
  pending = null;
  if ($('confirm').returnValue === 'confirm' && run) attempt(run);
});

// ---- repair: delete ----

function confirmDelete(id) {
  confirmThen(`Delete contact ${id}?`,
    `Contact ${id} will be soft-deleted: its row is kept, but it no longer links anyone, and its identity regroups by the evidence that remains.`,
    'Delete', () => remove(id));
}

async function remove(id) {
  const answer = await api('DELETE', `/contacts/${id}`);
  const next = answer.identities[0] && primaryOf(answer.identities[0]);
  if (next) await openContact(next); else { $('identity-body').hidden = true; $('identity-empty').hidden = false; }
  outcome($('outcome'), `Contact ${id} deleted. Its identity became ${answer.identities.length} identit${answer.identities.length === 1 ? 'y' : 'ies'}:`, answer.identities);
  say(`Contact ${id} deleted.`);
}

// ---- repair: edit (PATCH /contacts/{id}; a dry run first shows what it joins or splits) ----

let editing = null;   // {id, members of its identity now, body last previewed}

function openEdit(row) {
  editing = { id: row.id, before: shown.graph.nodes.filter(n => n.type === 'contact').map(n => n.row.id), previewed: null };
  $('edit-title').textContent = `Edit contact ${row.id}`;
  $('edit-email').value = row.email ?? '';
  $('edit-phone').value = row.phoneNumber ?? '';
  resetPreview();
  $('edit').showModal();
  $('edit-email').focus();
}

function resetPreview() {
  if (editing) editing.previewed = null;
  $('edit-confirm').disabled = true;
  $('edit-preview').replaceChildren(el('p', { class: 'hint' }, 'Preview the edit to see what it will join or split.'));
}

// Both fields, as the form holds them: a blank one removes the value.
const editBody = () => ({ email: $('edit-email').value.trim() || null, phoneNumber: $('edit-phone').value.trim() || null });

for (const field of ['edit-email', 'edit-phone']) $(field).addEventListener('input', resetPreview);
$('edit-cancel').addEventListener('click', () => { editing = null; $('edit').close(); });
$('edit-form').addEventListener('submit', event => { event.preventDefault(); attempt(previewEdit); });
$('edit-confirm').addEventListener('click', () => attempt(confirmEdit));

async function previewEdit() {
  const { id } = editing, body = editBody();
  let answer;
  try {
    answer = await api('PATCH', `/contacts/${id}?dryRun=true`, body);
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    $('edit-preview').replaceChildren(el('p', { class: 'error', role: 'alert' }, `This edit would be refused: ${e.message} (${e.code})`));
    return;
  }
  editing.previewed = JSON.stringify(body);
  $('edit-confirm').disabled = false;
  $('edit-preview').replaceChildren(...previewSentences(answer).map(s => el('p', {}, s)),
    el('p', {}, 'The identities it leaves:'), identityList(answer.identities));
}

// What a dry run's answer means for the identity shown: contacts it joins, groups it splits off.
function previewSentences(answer) {
  const members = i => [i.primaryContactId, ...i.secondaryContactIds];
  const mine = members(answer.identities[0]);
  const joined = mine.filter(id => !editing.before.includes(id));
  const apart = answer.identities.slice(1);
  const sentences = [];
  if (joined.length) {
    sentences.push(`Joins ${joined.length} contact${joined.length === 1 ? '' : 's'} from other identities: ${joined.map(id => `#${id}`).join(', ')}.`);
  }
  if (apart.length) {
    const left = apart.map(i => `#${i.primaryContactId}`).join(', ');
    sentences.push(`Splits the identity: ${apart.length} group${apart.length === 1 ? '' : 's'} stand${apart.length === 1 ? 's' : ''} apart from contact ${editing.id} (primary ${left}).`);
  }
  if (!sentences.length) sentences.push('The identity stays whole.');
  return sentences;
}

async function confirmEdit() {
  const { id, previewed } = editing, body = editBody();
  if (previewed !== JSON.stringify(body)) { resetPreview(); return; }
  let answer;
  try {
    answer = await api('PATCH', `/contacts/${id}`, body);
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    $('edit-preview').replaceChildren(el('p', { class: 'error', role: 'alert' }, `Refused: ${e.message} (${e.code}); nothing changed.`));
    $('edit-confirm').disabled = true;
    return;
  }
  editing = null;
  $('edit').close();
  await openContact(id);
  outcome($('outcome'), `Contact ${id} edited. The identities it touched are now:`, answer.identities);
  say(`Contact ${id} edited.`);
}

function identityList(identities) {
  return el('ul', {}, ...identities.map(i => el('li', {},
    `Primary #${i.primaryContactId}: ${[...i.emails, ...i.phoneNumbers].join(', ') || 'no values'}; ${1 + i.secondaryContactIds.length} contact${i.secondaryContactIds.length ? 's' : ''}`)));
}

// Lists identities (the /identify answer's "contact" objects) in `box` under `title`.
function outcome(box, title, identities) {
  box.hidden = false;
  box.replaceChildren(el('p', {}, title), el('ul', {}, ...identities.map(i => el('li', {},
    el('a', { href: `#contact/${primaryOf(i)}` }, `Primary #${primaryOf(i)}`),
    `: ${[...i.emails, ...i.phoneNumbers].join(', ') || 'no values'}; ${1 + i.secondaryContactIds.length} contact${i.secondaryContactIds.length ? 's' : ''}`))));
}

// ---- repair: block and unblock ----

const valueBody = value => (value.includes('@') ? { email: value } : { phoneNumber: value });

for (const [form, field] of [['block-form', 'block-value'], ['block-form-2', 'block-value-2']]) {
  $(form).addEventListener('submit', event => { event.preventDefault(); attempt(() => block($(field).value.trim())); });
}

async function block(value) {
  const answer = await blocklistCall(() => api('POST', '/blocklist', valueBody(value)));
  await refreshAfterRepair(answer.identities);
  const box = location.hash === '#blocklist' ? $('blocklist-outcome') : $('outcome');
  outcome(box, `Blocked ${answer.blocked.value}. The identities that held it are now:`, answer.identities);
  say(`Blocked ${answer.blocked.value}.`);
}

async function unblock(kind, value) {
  const answer = await blocklistCall(() => api('DELETE', `/blocklist?${kind}=${encodeURIComponent(value)}`));
  await refreshAfterRepair(answer.identities);
  const box = location.hash === '#blocklist' ? $('blocklist-outcome') : $('outcome');
  outcome(box, `Unblocked ${value}. Its holders are now:`, answer.identities);
  say(`Unblocked ${value}.`);
}

// Shows the blocklist, or the identity shown before the repair (or the first it became).
async function refreshAfterRepair(identities) {
  if (location.hash === '#blocklist') return loadBlocklist();
  const still = shown && identities.find(i => primaryOf(i) === shown.id || i.secondaryContactIds.includes(shown.id));
  const next = still ? shown.id : (identities[0] && primaryOf(identities[0]));
  if (next) await openContact(next);
}

async function blocklistCall(call) {
  try { return await call(); } catch (e) {
    if (e.status === 404 && e.code === 'not_found' && /path/.test(e.message)) {
      throw new ApiError(404, 'not_found', 'This server has no blocklist yet');
    }
    if (e.code === 'cluster_limit') throw new ApiError(409, e.code, `Refused: ${e.message}`);
    throw e;
  }
}

async function loadBlocklist() {
  const list = await blocklistCall(() => api('GET', '/blocklist'));
  const box = $('blocklist');
  if (!list.values.length) { box.replaceChildren(el('p', { class: 'hint' }, 'No value is blocked.')); return; }
  box.replaceChildren(el('table', {},
    el('thead', {}, el('tr', {}, ...['Kind', 'Value', 'Reason', 'Blocked at', 'Holders', ''].map(h => el('th', {}, h)))),
    el('tbody', {}, ...list.values.map(v => el('tr', {},
      el('td', {}, v.kind === 'email' ? 'email' : 'phone'), el('td', {}, v.value), el('td', {}, v.reason),
      el('td', {}, v.blockedAt), el('td', {}, String(v.holders)),
      el('td', {}, ...(may('operate') ? [el('button', { type: 'button', onclick: () => attempt(() => unblock(v.kind, v.value)) }, `Unblock ${v.value}`)] : [])))))));
}

// ---- erasure: a person forgotten ----

// The body of POST /erasures for what was typed: `#12` or digits without punctuation, a
// contact id; with an @, an email; otherwise a phone number.
function erasureBody(text) {
  const id = text.match(/^#\s*(\d+)$/);
  if (id) return { contactId: Number(id[1]) };
  return text.includes('@') ? { email: text } : { phoneNumber: text };
}

function confirmErase(body) {
  const what = body.contactId !== undefined ? `contact ${body.contactId}`
    : `every contact holding ${body.email ?? body.phoneNumber} (deleted ones too)`;
  confirmThen(`Erase ${body.contactId !== undefined ? `contact ${body.contactId}` : 'these contacts'}?`,
    `The email and phone of ${what} will be erased for good: no answer, export, backup taken afterwards or log line shows them again, and the purge removes them from every file. The rows stay, with their ids and times. This cannot be undone.`,
    'Erase', () => erase(body));
}

$('erase-form').addEventListener('submit', event => {
  event.preventDefault();
  const text = $('erase-value').value.trim();
  if (text) confirmErase(erasureBody(text));
});

async function erase(body) {
  const answer = await api('POST', '/erasures', body);
  const e = answer.erasure;
  const status = e.status === 'done' ? `done, purged at ${e.purgedAt}` : `pending, purged by ${e.purgeBy}`;
  const title = `Erasure #${e.id}: contact${e.contacts.length === 1 ? '' : 's'} ${e.contacts.map(c => `#${c}`).join(', ')} erased (${status}). The identities they left are now:`;
  $('erase-value').value = '';
  if (location.hash === '#erasures') {
    await loadLedger();
  } else if (shown && e.contacts.includes(shown.id)) {
    const next = answer.identities[0]?.primaryContactId;
    if (next) await openContact(next); else { $('identity-body').hidden = true; $('identity-empty').hidden = false; }
  } else if (shown) {
    await openContact(shown.id);
  }
  const box = location.hash === '#erasures' ? $('erase-outcome') : $('outcome');
  outcome(box, title, answer.identities);
  say(`Erasure #${e.id} recorded.`);
}

async function loadLedger() {
  const ledger = await api('GET', '/erasures');
  const box = $('ledger');
  if (!ledger.erasures.length) { box.replaceChildren(el('p', { class: 'hint' }, 'No one has been erased.')); return; }
  box.replaceChildren(el('table', {},
    el('thead', {}, el('tr', {}, ...['Erasure', 'Contacts', 'Status', 'Requested at', 'Purge by', 'Purged at'].map(h => el('th', {}, h)))),
    el('tbody', {}, ...ledger.erasures.slice().reverse().map(e => el('tr', {},
      el('td', {}, `#${e.id}`), el('td', {}, e.contacts.map(c => `#${c}`).join(', ')),
      el('td', { class: e.status === 'done' ? 'ok' : '' }, e.status), el('td', {}, e.requestedAt),
      el('td', {}, e.purgeBy), el('td', {}, e.purgedAt ?? ''))))));
}

// ---- try /identify ----

$('try-form').addEventListener('submit', event => {
  event.preventDefault();
  attempt(async () => {
    const body = {};
    if ($('try-email').value.trim()) body.email = $('try-email').value.trim();
    if ($('try-phone').value.trim()) body.phoneNumber = $('try-phone').value.trim();
    $('try-answer').textContent = 'Sending…';
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch('/identify', { method: 'POST', headers, body: JSON.stringify(body) });
    const answer = await response.json();
    const link = answer.contact && may('read') ? el('a', { href: `#contact/${primaryOf(answer.contact)}` }, `Open Primary #${primaryOf(answer.contact)}`) : '';
    $('try-answer').replaceChildren(`${response.status} ${response.statusText}\n${JSON.stringify(answer, null, 2)}\n`, link);
  });
});

// ---- data: import and export ----

$('import-form').addEventListener('submit', event => {
  event.preventDefault();
  attempt(async () => {
    const file = $('import-file').files[0];
    if (!file) return;
    const format = /\.(ndjson|jsonl)$/i.test(file.name) ? 'ndjson' : 'csv';
    const box = $('import-report');
    box.hidden = false;
    box.replaceChildren(el('p', {}, `Importing ${file.name}…`));
    try {
      const report = await api('POST', `/contacts/import?format=${format}`, await file.arrayBuffer(), { type: format === 'csv' ? 'text/csv' : 'application/x-ndjson' });
      box.replaceChildren(el('p', { class: 'ok' }, `Imported ${number(report.imported)} rows from ${file.name} (${report.deleted} deleted) in ${report.seconds.toFixed(2)} s.`),
        el('p', {}, `${report.corrected} row(s) had a linkedId/linkPrecedence the evidence corrected; ${report.existingRelinked} existing row(s) relinked.`));
      say(`Imported ${report.imported} rows.`);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      box.replaceChildren(el('p', { class: 'error' }, `Nothing was imported: ${e.message}`),
        el('ul', {}, ...(e.rows || []).slice(0, 50).map(r => el('li', {}, `line ${r.line}: ${r.message}`))));
      say('The import was refused.', true);
    }
  });
});

for (const format of ['csv', 'ndjson']) {
  $(`export-${format}`).addEventListener('click', () => attempt(async () => {
    const response = await api('GET', `/contacts/export?format=${format}`, undefined, { raw: true });
    const url = URL.createObjectURL(await response.blob());
    const a = el('a', { href: url, download: `contacts.${format}` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }));
}

// ---- helpers ----

// A DOM element with attributes (functions become listeners) and children.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === 'function') node.addEventListener(k.replace(/^on/, ''), v); else node.setAttribute(k, v);
  }
  node.append(...children.flat());
  return node;
}

// ---- start: GET /whoami tells whether a token is needed (401 asks for it) and its role ----

route();
