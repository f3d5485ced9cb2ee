// Drives the console in headless Chromium as a support person would. Run by tests/it/browser.rs:
//   node console.mjs <scenario> <base url> [data file]
// Scenarios: support (import, try, search, graph, why, delete), block (block, regroup, unblock),
// edit (correct an email: preview, confirm, regrouped; a split; a refusal), erase (erase a
// contact and a value after confirming, the ledger), signin (a wrong token refused, the right
// one kept), readonly (a read token sees no control that changes anything), changes (the latest
// changes on the overview, a contact's own on its page). Exits non-zero on the first failure.
// Every request outside the server under test is refused, so nothing reaches the network.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';

const [scenario, base, dataFile] = process.argv.slice(2);
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// Each launch gets a fresh temporary profile (Playwright passes its own --user-data-dir).
async function withPage(run) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: 60000 });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(15000);
    await context.route('**/*', route => (route.request().url().startsWith(base) ? route.continue() : route.abort()));
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', e => errors.push(e.message));
    await run(page);
    assert.deepEqual(errors, [], 'no script errors on the page');
  } finally {
    await browser.close();
  }
}

const text = async locator => (await locator.textContent()).replace(/\s+/g, ' ').trim();

async function tryIdentify(page, email, phone) {
  await page.getByRole('link', { name: 'Try /identify' }).click();
  await page.getByRole('textbox', { name: 'Email' }).fill(email);
  await page.getByRole('textbox', { name: 'Phone number' }).fill(phone);
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  await page.waitForFunction(e => document.getElementById('try-answer').textContent.includes(`"${e}"`), email);
  const answer = await page.getByLabel('Answer').textContent();
  return JSON.parse(answer.split('\n').slice(1).join('\n').replace(/Open Primary #\d+$/, ''));
}

async function search(page, query, primary) {
  await page.getByRole('searchbox', { name: 'Search' }).fill(query);
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.getByRole('heading', { name: `Primary #${primary}`, exact: true }).waitFor();
}

async function caption(page) {
  return text(page.getByRole('region', { name: 'Cluster graph' }).locator('.caption'));
}

// Clicks the graph's node of contact `id` where cytoscape drew it.
async function clickContact(page, id) {
  await clickNode(page, { id: `contact:${id}` });
}

// Clicks a graph node, by id or as the first a cytoscape selector picks, where it was drawn.
async function clickNode(page, which) {
  const point = await page.evaluate(({ id, selector }) => {
    const cy = window.consoleGraph.cy;
    const node = id ? cy.getElementById(id) : cy.nodes(selector)[0];
    const box = window.consoleGraph.cy.container().getBoundingClientRect();
    const p = node.renderedPosition();
    return { x: box.left + p.x, y: box.top + p.y };
  }, which);
  await page.mouse.click(point.x, point.y);
}

const scenarios = {
  async changes(page) {
    await page.goto(`${base}/console`);
    await tryIdentify(page, 'george@hillvalley.edu', '919191');
    await tryIdentify(page, 'biffsucks@hillvalley.edu', '717171');
    await tryIdentify(page, 'george@hillvalley.edu', '717171');
    await page.getByRole('link', { name: 'Overview' }).click();
    const latest = page.getByRole('list', { name: 'Latest changes' });
    await latest.getByRole('listitem').nth(2).waitFor();
    // Newest first: the merge, then the two contacts it joined.
    assert.match(await text(latest.getByRole('listitem').nth(0)), /^#3 merged into #1 .*\(identify\): #2→#1$/);
    assert.match(await text(latest.getByRole('listitem').nth(2)), /^#1 created .*: #1 primary$/);
    await latest.getByRole('link', { name: '#2' }).first().click();
    await page.getByRole('heading', { name: 'Primary #1', exact: true }).waitFor();
    const history = page.getByRole('list', { name: 'Changes that touched contact #2' });
    await history.getByRole('listitem').nth(1).waitFor();
    assert.equal(await history.getByRole('listitem').count(), 2, 'created, then merged');
    assert.match(await text(history.getByRole('listitem').nth(0)), /merged into #1/);
    assert.match(await text(history.getByRole('listitem').nth(1)), /#2 created/);
  },

  async support(page) {
    await page.goto(`${base}/console`);
    await page.getByRole('heading', { name: 'Overview' }).waitFor();

    // Data: import the worked examples' contacts.
    await page.getByRole('link', { name: 'Data' }).click();
    await page.getByLabel('File to import').setInputFiles(dataFile);
    await page.getByRole('button', { name: 'Import', exact: true }).click();
    await page.locator('#import-report').getByText('Imported 4 rows').waitFor();

    // Try /identify: George's request joins 11 and 27; Doc's adds 28 beside 11's phone.
    const joined = await tryIdentify(page, 'george@hillvalley.edu', '717171');
    assert.deepEqual(joined.contact.secondaryContactIds, [27]);
    const doc = await tryIdentify(page, 'doc@hillvalley.edu', '919191');
    assert.deepEqual(doc.contact.secondaryContactIds, [27, 28]);

    // Search: the identity, its rows and its graph (3 contacts, 3 emails, 2 phones).
    await search(page, 'george@hillvalley.edu', 11);
    assert.match(await caption(page), /^3 contacts and 5 values, 7 edges/);
    assert.equal(await page.evaluate(() => window.consoleGraph.cy.nodes().length), 8);
    const rows = page.getByRole('table').getByRole('row');
    assert.equal(await rows.count(), 4, 'a header and three rows');
    const cells = await rows.nth(2).getByRole('cell').allTextContents();
    assert.deepEqual(cells.slice(0, 6), ['27', 'biffsucks@hillvalley.edu', '717171', '11', 'secondary', '2023-04-21T05:30:00.110Z']);
    assert.equal(cells[7], '', 'not deleted');

    // Why, by two ids: one join.
    await page.getByRole('textbox', { name: 'From contact' }).fill('11');
    await page.getByRole('textbox', { name: 'To contact' }).fill('27');
    await page.getByRole('button', { name: 'Explain', exact: true }).click();
    await page.locator('#why-result').getByText('A request named george@hillvalley.edu together with 717171').waitFor();
    const region = page.getByRole('region', { name: 'Cluster graph' });
    assert.equal(await region.getAttribute('data-highlighted'), '7', '2 contacts, 2 values, 3 edges');

    // Why, by two clicks on the graph: 28 shares a phone with 11, which is joined to 27.
    await clickContact(page, 28);
    await clickContact(page, 27);
    await page.locator('#why-result').getByText('#28 and #11 both hold the phone number 919191.').waitFor();
    await page.locator('#why-result').getByText('which joins #11 and #27').waitFor();
    assert.equal(await page.getByRole('textbox', { name: 'From contact' }).inputValue(), '28');

    // Repair: delete 11; its identity splits in two (27 and 28 share nothing any more).
    await page.getByRole('button', { name: 'Delete contact 11' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete', exact: true }).click();
    await page.getByText('Contact 11 deleted. Its identity became 2 identities:').waitFor();
    await page.getByRole('heading', { name: 'Primary #27', exact: true }).waitFor();
    assert.match(await caption(page), /^1 contact and 2 values/);

    // Overview: the figures and the largest clusters.
    await page.getByRole('link', { name: 'Overview' }).click();
    await page.getByText('Deleted contacts').waitFor();
    await page.getByRole('link', { name: 'Primary #1', exact: true }).click();
    await page.getByRole('heading', { name: 'Primary #1', exact: true }).waitFor();
  },

  async block(page) {
    await page.goto(`${base}/console`);
    await tryIdentify(page, 'marty@hillvalley.edu', '555');
    await tryIdentify(page, 'jennifer@hillvalley.edu', '555');
    await search(page, '555', 1);
    assert.match(await caption(page), /^2 contacts and 3 values/);

    await page.getByRole('textbox', { name: 'Value to block' }).first().fill('555');
    await page.getByRole('button', { name: 'Block', exact: true }).first().click();
    await page.getByText('Blocked 555. The identities that held it are now:').waitFor();
    assert.equal(await page.locator('#outcome li').count(), 2, 'the cluster regrouped in two');
    assert.match(await caption(page), /^1 contact and 2 values \(1 blocked\)/);

    await page.getByRole('link', { name: 'Blocked values' }).click();
    await page.getByRole('cell', { name: '555', exact: true }).waitFor();
    await page.getByRole('button', { name: 'Unblock 555' }).click();
    await page.getByText('Unblocked 555. Its holders are now:').waitFor();
    assert.equal(await page.locator('#blocklist-outcome li').count(), 1, 'merged again');
  },

  async edit(page) {
    await page.goto(`${base}/console`);
    // 1 holds jon@gmail.com; the customer mistyped it on a later order: 2 (and 3, by the phone).
    await tryIdentify(page, 'jon@gmail.com', '111');
    await tryIdentify(page, 'jon@gmial.com', '222');
    await tryIdentify(page, 'other@shop.example', '222');
    await search(page, 'jon@gmial.com', 2);

    // Correct the email: the form holds the current values; the preview says what it joins.
    await page.getByRole('button', { name: 'Edit contact 2' }).click();
    const dialog = page.getByRole('dialog', { name: 'Edit contact 2' });
    const email = dialog.getByRole('textbox', { name: 'New email' });
    assert.equal(await email.inputValue(), 'jon@gmial.com');
    assert.equal(await dialog.getByRole('textbox', { name: 'New phone number' }).inputValue(), '222');
    const confirm = dialog.getByRole('button', { name: 'Confirm edit' });
    assert.equal(await confirm.isDisabled(), true, 'no confirming before a preview');
    await email.fill('jon@gmail.com');
    await dialog.getByRole('button', { name: 'Preview edit' }).click();
    const preview = dialog.getByRole('region', { name: 'Edit preview' });
    await preview.getByText('Joins 1 contact from other identities: #1.').waitFor();
    await preview.getByText('Primary #1: jon@gmail.com, other@shop.example, 111, 222; 3 contacts').waitFor();
    const stored = await page.evaluate(() => fetch('/contacts/2').then(r => r.json()));
    assert.equal(stored.email, 'jon@gmial.com', 'a preview changes nothing');

    // Confirm: the identity shown is regrouped under the oldest primary.
    await confirm.click();
    await page.getByText('Contact 2 edited. The identities it touched are now:').waitFor();
    await page.getByRole('heading', { name: 'Primary #1', exact: true }).waitFor();
    assert.equal(await dialog.isVisible(), false);
    assert.match(await caption(page), /^3 contacts and 4 values/);
    const cells = await page.getByRole('table').getByRole('row').nth(2).getByRole('cell').allTextContents();
    assert.deepEqual(cells.slice(0, 5), ['2', 'jon@gmail.com', '222', '1', 'secondary']);

    // A split: 3's phone corrected to one no one holds leaves it alone.
    await page.getByRole('button', { name: 'Edit contact 3' }).click();
    const third = page.getByRole('dialog', { name: 'Edit contact 3' });
    await third.getByRole('textbox', { name: 'New phone number' }).fill('333');
    await third.getByRole('button', { name: 'Preview edit' }).click();
    await third.getByRole('region', { name: 'Edit preview' }).getByText('Splits the identity: 1 group stands apart from contact 3 (primary #1).').waitFor();
    await third.getByRole('button', { name: 'Confirm edit' }).click();
    await page.getByText('Contact 3 edited. The identities it touched are now:').waitFor();
    await page.getByRole('heading', { name: 'Primary #3', exact: true }).waitFor();
    assert.equal(await page.locator('#outcome li').count(), 2, 'its identity and the one it left');

    // Removing both values is refused by the preview, and confirming stays impossible.
    await page.getByRole('button', { name: 'Edit contact 3' }).click();
    const again = page.getByRole('dialog', { name: 'Edit contact 3' });
    await again.getByRole('textbox', { name: 'New email' }).fill('');
    await again.getByRole('textbox', { name: 'New phone number' }).fill('');
    await again.getByRole('button', { name: 'Preview edit' }).click();
    await again.getByRole('alert').getByText('missing_identifier').waitFor();
    assert.equal(await again.getByRole('button', { name: 'Confirm edit' }).isDisabled(), true);
    await again.getByRole('button', { name: 'Cancel' }).click();
    assert.equal(await again.isVisible(), false);
  },

  async erase(page) {
    await page.goto(`${base}/console`);
    await tryIdentify(page, 'lorraine@hillvalley.edu', '123456');
    await tryIdentify(page, 'mcfly@hillvalley.edu', '123456');
    await search(page, 'mcfly@hillvalley.edu', 1);

    // From the rows: erase 2, confirming in the dialog; its identity keeps contact 1 alone.
    await page.getByRole('button', { name: 'Erase contact 2' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByText('This cannot be undone.').waitFor();
    await dialog.getByRole('button', { name: 'Erase', exact: true }).click();
    await page.getByText('Erasure #1: contact #2 erased').waitFor();
    assert.match(await caption(page), /^1 contact and 2 values/);

    // The ledger; erasing by value there, cancelled first (nothing changes), then confirmed.
    await page.getByRole('link', { name: 'Erasures' }).click();
    await page.getByRole('cell', { name: '#1', exact: true }).waitFor();
    await page.getByRole('textbox', { name: 'Contact id, email or phone to erase' }).fill('123456');
    await page.getByRole('button', { name: 'Erase…' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
    assert.equal(await page.locator('#ledger tbody tr').count(), 1, 'cancelled: nothing erased');
    await page.getByRole('button', { name: 'Erase…' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Erase', exact: true }).click();
    await page.getByText('Erasure #2: contact #1 erased').waitFor();
    assert.equal(await page.locator('#ledger tbody tr').count(), 2);
    assert.ok(!(await page.locator('#ledger').textContent()).includes('123456'), 'the ledger shows no value');

    // An erased contact is found by its id, and said to be erased.
    await page.getByRole('searchbox', { name: 'Search' }).fill('#1');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.getByText('Contact 1 is erased').waitFor();
  },

  async signin(page) {
    await page.goto(`${base}/console`);
    const token = page.getByLabel('Token', { exact: true });
    await token.fill('not-the-token');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.getByRole('alert').getByText('That token is wrong').waitFor();
    await token.fill('sesame');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.getByText('Live contacts').waitFor();
    // Kept for the tab: a reload does not ask again.
    await page.reload();
    await page.getByText('Live contacts').waitFor();
    assert.equal(await token.isVisible(), false);
    await page.locator('#caller').getByText('admin (admin)').waitFor();
  },

  // The server holds marty and jennifer sharing 555, and 000 blocked; the token is a read one.
  async readonly(page) {
    await page.goto(`${base}/console`);
    await page.getByLabel('Token', { exact: true }).fill('r3ad');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.getByText('Live contacts').waitFor();
    await page.locator('#caller').getByText('support (read)').waitFor();
    assert.equal(await page.getByRole('link', { name: 'Data' }).isVisible(), false, 'no import or export');

    await search(page, '555', 1);
    const rows = page.getByRole('table').getByRole('row');
    assert.equal(await rows.count(), 3, 'a header and two rows');
    assert.equal(await page.getByRole('button', { name: /Delete|Edit|Erase/ }).count(), 0, 'no Delete, Edit or Erase button');
    assert.equal(await page.getByRole('button', { name: /Block/ }).count(), 0, 'no Block button');
    await clickNode(page, { selector: '.value' });
    await page.getByText(/held by \d contacts?/).waitFor();
    assert.equal(await page.getByRole('button', { name: /Block|Unblock/ }).count(), 0, 'no Block button on a value');

    await page.getByRole('link', { name: 'Blocked values' }).click();
    await page.getByRole('cell', { name: '000', exact: true }).waitFor();
    assert.equal(await page.getByRole('button', { name: /Block|Unblock/ }).count(), 0, 'no Block or Unblock button');
    assert.equal(await page.getByRole('textbox', { name: 'Value to block' }).count(), 0, 'no block form');

    await page.getByRole('link', { name: 'Erasures' }).click();
    await page.getByRole('heading', { name: 'Ledger' }).waitFor();
    assert.equal(await page.getByRole('textbox', { name: /to erase/ }).count(), 0, 'no erase form');
  },
};

if (!scenarios[scenario]) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
try {
  await withPage(scenarios[scenario]);
  console.log(`${scenario}: ok`);
} catch (e) {
  console.error(`${scenario}: FAILED\n${e.stack || e}`);
  process.exit(1);
}
