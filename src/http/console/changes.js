// The console's view of the change feed (docs/API.md, "Change feed"): the latest changes on the
// overview, and on a contact's page the changes that touched it. Events carry ids only; each
// contact is a link to its identity.

const TYPES = {
  created: 'created', merged: 'merged', split: 'regrouped', deleted: 'deleted', blocked: 'value blocked',
  unblocked: 'value unblocked', imported: 'imported', rekeyed: 're-keyed', edited: 'edited', erased: 'erased',
};

// One event as a list item: what happened, when, why and by whom, and where each contact went.
function item(el, event) {
  const what = TYPES[event.type] ?? event.type;
  const moves = event.contacts.slice(0, 12).flatMap((c, i) => [
    i ? ', ' : '',
    el('a', { href: `#contact/${c.id}` }, `#${c.id}`),
    c.primary === null ? ' gone' : c.primary === c.id ? ' primary' : ['→', el('a', { href: `#contact/${c.primary}` }, `#${c.primary}`)],
  ].flat());
  const more = event.contacts.length > 12 ? ` and ${event.contacts.length - 12} more` : '';
  const into = event.type === 'merged' ? ` into #${event.into}` : '';
  const who = event.by ? ` by ${event.by}` : '';
  return el('li', { 'data-seq': String(event.seq) },
    el('span', { class: 'seq' }, `#${event.seq}`), ` ${what}${into} `,
    el('time', { datetime: event.at }, event.at.replace('T', ' ').replace('Z', '')),
    el('span', { class: 'cause' }, ` (${event.cause}${who})`), event.contacts.length ? ': ' : '', ...moves, more);
}

function list(el, events, empty) {
  return events.length ? events.slice().reverse().map(e => item(el, e)) : [el('li', { class: 'hint' }, empty)];
}

// The newest `count` changes, newest first.
export async function showLatest(api, el, target, count = 15) {
  const head = (await api('GET', '/changes?after=18446744073709551615')).last;
  const after = Math.max(0, head - count);
  let page;
  try {
    page = await api('GET', `/changes?after=${after}&limit=${count}`);
  } catch (e) {
    if (e.status !== 410) throw e;
    page = { changes: [] };
  }
  target.replaceChildren(...list(el, page.changes, 'No change yet.'));
}

// The changes that named contact `id`, newest first.
export async function showHistory(api, el, id, target) {
  const page = await api('GET', `/changes?contact=${id}&limit=50`);
  target.replaceChildren(...list(el, page.changes, `No recent change named contact #${id}.`));
}
