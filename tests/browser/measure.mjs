// Measures the console in headless Chromium against a running server (not a test):
//   node measure.mjs http://127.0.0.1:PORT [cluster size, default 1000]
// Prints the page's total bytes, the time to first render of /console (first contentful paint,
// and until the overview's figures are drawn), and the time to show a cluster of N contacts
// (search to graph drawn, and the layout and draw alone). It imports the cluster first, with
// ids above the server's highest, through POST /contacts/import.

import { chromium } from 'playwright-core';

const base = process.argv[2];
const size = Number(process.argv[3] || 1000);
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// A chain: contact k shares its phone with k-1 (k odd) or its email with k-1 (k even).
async function importCluster() {
  const stats = await (await fetch(`${base}/stats`)).json();
  const first = stats.contacts.live + stats.contacts.deleted + 1_000_000;
  const lines = ['id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt'];
  for (let k = 0; k < size; k++) {
    const t = new Date(Date.UTC(2024, 0, 1) + k * 1000).toISOString();
    lines.push(`${first + k},${first * 10_000 + Math.floor(k / 2)},chain${first}-${Math.floor((k + 1) / 2)}@example.com,,primary,${t},${t},`);
  }
  const response = await fetch(`${base}/contacts/import?format=csv`, { method: 'POST', body: lines.join('\n') + '\n' });
  if (!response.ok) throw new Error(`import: ${response.status} ${await response.text()}`);
  return first;
}

const first = await importCluster();
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ARGS });
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
await context.route('**/*', r => (r.request().url().startsWith(base) ? r.continue() : r.abort()));
const page = await context.newPage();
let bytes = 0;
const files = [];
page.on('response', async r => {
  const body = await r.body().catch(() => Buffer.alloc(0));
  bytes += body.length;
  files.push(`${new URL(r.url()).pathname} ${body.length}`);
});

await page.goto(`${base}/console`);
await page.locator('#figures .figure').first().waitFor();
const first_render = await page.evaluate(() => ({
  fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime,
  figures: performance.now(),
}));
const pageBytes = bytes;
const pageFiles = [...files];

await page.getByRole('searchbox', { name: 'Search' }).fill(`#${first}`);
const started = Date.now();
await page.getByRole('button', { name: 'Search', exact: true }).click();
await page.waitForFunction(n => window.consoleGraph?.cy.nodes('.contact').length === n, size, { timeout: 120000 });
const shown = Date.now() - started;
const drawn = await page.evaluate(() => window.consoleGraph.drawnInMs);
const nodes = await page.evaluate(() => window.consoleGraph.cy.nodes().length);
const clickStart = Date.now();
await page.evaluate(() => { window.consoleGraph.cy.nodes('.primary').emit('tap'); });
await page.locator('#selected strong').waitFor();
const click = Date.now() - clickStart;
await browser.close();

console.log(`page: ${pageBytes} bytes in ${pageFiles.length} responses (${pageFiles.join(', ')})`);
console.log(`first render of /console: first contentful paint ${first_render.fcp?.toFixed(0)} ms, overview figures drawn at ${first_render.figures.toFixed(0)} ms`);
console.log(`cluster of ${size} contacts (${nodes} nodes): search to graph drawn ${shown} ms, layout and draw ${drawn.toFixed(0)} ms, a click selects in ${click} ms`);
