// The console in a real browser: Debian's chromium, driven by playwright-core, against a
// running `warden serve` (started by crates/warden-cli/tests/console.rs, which checks what this
// prints). Steps: log in with the admin key; a denial made by the agent appears live; an
// agent's call held for approval is approved in the console and the agent's retry goes
// through; an agent's MCP tools/call through the mount `shop` waits for its approval, which is
// given in the console, and then goes through; a session's taint is cleared with a reason; a
// changed MCP tool definition is reviewed (its diff) and approved in the console, and the tool
// is listed again. Screenshots of each view go to SCREENSHOTS.
// Usage: node browser.cjs NPM_DIR   (env: WARDEN_URL, ADMIN_KEY, AGENT_KEY, CHROMIUM, SCREENSHOTS,
// TOOLS_FILE: the upstream's tools, rewritten here with TOOLS_V2 to change a definition)
// Prints one JSON line per step: {"step": NAME, ...facts}; exits non-zero on the first failure.
'use strict';
const { createRequire } = require('node:module');
const path = require('node:path');
const fs = require('node:fs');

const TIMEOUT = 15000;

function report(step, facts) {
  process.stdout.write(JSON.stringify(Object.assign({ step }, facts)) + '\n');
}

async function decide(url, key, body) {
  const response = await fetch(url + '/v1/decide', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': key },
    body: JSON.stringify(body),
  });
  return response.json();
}

// One JSON-RPC request to the MCP mount `shop` with the agent's key: the answer's body.
async function mcp(url, key, method, params) {
  const response = await fetch(url + '/mcp/shop', {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'x-api-key': key,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  return response.json();
}

async function listed(url, key) {
  const answer = await mcp(url, key, 'tools/list', {});
  return answer.result.tools.map((t) => t.name);
}

async function main() {
  const npmDir = process.argv[2];
  const req = createRequire(path.join(path.resolve(npmDir), 'package.json'));
  const { chromium } = req('playwright-core');
  const url = process.env.WARDEN_URL;
  const admin = process.env.ADMIN_KEY;
  const agent = process.env.AGENT_KEY;
  const shots = process.env.SCREENSHOTS;
  fs.mkdirSync(shots, { recursive: true });

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    // Root in a container: chromium's sandbox needs user namespaces it may not have.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1400, height: 800 } });
    const page = await context.newPage();
    const consoleErrors = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));

    await page.goto(url + '/ui');
    await page.locator('#login-form').waitFor({ timeout: TIMEOUT });
    await page.screenshot({ path: path.join(shots, 'login.png') });
    await page.fill('#key', 'wk_wrong');
    await page.click('#login-form button[type=submit]');
    await page.locator('#login-error', { hasText: 'unknown key' }).waitFor({ timeout: TIMEOUT });
    report('wrong key refused', {});
    await page.fill('#key', admin);
    await page.click('#login-form button[type=submit]');
    await page.locator('#stream-state', { hasText: 'live' }).waitFor({ timeout: TIMEOUT });
    const cookies = await context.cookies();
    const cookie = cookies.find((c) => c.name === 'warden_console');
    report('logged in', {
      who: await page.textContent('#who'),
      httpOnly: cookie.httpOnly,
      sameSite: cookie.sameSite,
      script_sees_cookie: await page.evaluate(() => document.cookie.includes('warden_console')),
    });

    const secret = 'acct-DE89370400440532013000';
    const denied = await decide(url, agent, {
      session: 's1', principal: 'bot', tool: 'pay.refund', args: { to: secret },
    });
    const row = page.locator('#decisions tr.deny', { hasText: 'pay.refund' });
    await row.first().waitFor({ timeout: TIMEOUT });
    const cells = await row.first().locator('td').allTextContents();
    await page.screenshot({ path: path.join(shots, 'live.png') });
    report('denial live', {
      decision: denied.decision,
      cells,
      page_has_secret: (await page.content()).includes(secret),
    });

    const held = await decide(url, agent, {
      session: 's1', principal: 'bot', tool: 'pay.send', args: { amount: 5, to: secret },
    });
    const id = held.approval && held.approval.id;
    await page.click('nav button[data-view=approvals]');
    const pending = page.locator('#approval-rows tr', { hasText: id });
    await pending.waitFor({ timeout: TIMEOUT });
    await page.screenshot({ path: path.join(shots, 'approvals.png') });
    await pending.locator('input').fill('invoice 7, checked by phone');
    await pending.locator('button[data-action=approve]').click();
    await pending.waitFor({ state: 'detached', timeout: TIMEOUT });
    const retry = await decide(url, agent, {
      session: 's1', principal: 'bot', tool: 'pay.send', args: { amount: 5, to: secret },
    });
    report('approved in the console', {
      held: held.decision,
      retry: retry.decision,
      approval_status: retry.approval && retry.approval.status,
    });
    await page.click('nav button[data-view=live]');
    await page.locator('#decisions tr.allow', { hasText: 'pay.send' }).first().waitFor({ timeout: TIMEOUT });

    // An MCP call held by the `payments` ask rule waits (approvals.wait_ms) while a person
    // approves it here; the same request then goes through.
    const started = Date.now();
    const waiting = mcp(url, agent, 'tools/call', { name: 'pay.send', arguments: { amount: 7, to: secret } });
    await page.click('nav button[data-view=approvals]');
    const mcpPending = page.locator('#approval-rows tr', { hasText: 'pay.send' });
    await mcpPending.waitFor({ timeout: TIMEOUT });
    await page.screenshot({ path: path.join(shots, 'approvals-mcp.png') });
    const mcpCells = await mcpPending.locator('td').allTextContents();
    await mcpPending.locator('input').fill('invoice 8, agent waiting');
    await mcpPending.locator('button[data-action=approve]').click();
    const answered = await waiting;
    report('mcp call approved in the console', {
      cells: mcpCells,
      text: answered.result && answered.result.content[0].text,
      error: answered.error || null,
      waited_ms: Date.now() - started,
      page_has_secret: (await page.content()).includes(secret),
    });

    const tainted = await decide(url, agent, { session: 'w1', tool: 'web.fetch', args: { url: secret } });
    await page.click('nav button[data-view=sessions]');
    await page.fill('#session-form input[name=tenant]', 'acme');
    await page.fill('#session-form input[name=session]', 'w1');
    await page.click('#session-form button[type=submit]');
    const taintRow = page.locator('#taint-rows tr', { hasText: 'untrusted' });
    await taintRow.waitFor({ timeout: TIMEOUT });
    await page.screenshot({ path: path.join(shots, 'session.png') });
    await taintRow.locator('input').fill('the page was our own wiki');
    await taintRow.locator('button[data-action=clear]').click();
    await taintRow.waitFor({ state: 'detached', timeout: TIMEOUT });
    report('taint cleared in the console', {
      taints_before: tainted.taints,
      history: await page.locator('#history-rows tr td').allTextContents(),
    });

    // A tool definition changed by the upstream is hidden until approved here, after
    // reviewing the diff; then it is listed again.
    const before = await listed(url, agent);
    fs.writeFileSync(process.env.TOOLS_FILE, process.env.TOOLS_V2);
    const hidden = await listed(url, agent);
    await page.click('nav button[data-view=pins]');
    const card = page.locator('#pin-list .pin', { hasText: 'kb.search' });
    await card.waitFor({ timeout: TIMEOUT });
    await page.screenshot({ path: path.join(shots, 'pins.png') });
    const removed = await card.locator('pre.diff span.del').allTextContents();
    const added = await card.locator('pre.diff span.add').allTextContents();
    await card.locator('input').fill('reviewed: the new description is ours');
    await card.locator('button[data-action=approve-pin]').click();
    await card.waitFor({ state: 'detached', timeout: TIMEOUT });
    await page.locator('#pin-none').waitFor({ state: 'visible', timeout: TIMEOUT });
    report('tool definition approved in the console', {
      before,
      hidden,
      after: await listed(url, agent),
      removed,
      added,
      title: await page.locator('nav button[data-view=pins]').textContent(),
    });

    await page.click('nav button[data-view=policies]');
    await page.locator('#policy-rows tr').first().waitFor({ timeout: TIMEOUT });
    await page.screenshot({ path: path.join(shots, 'policies.png') });
    report('policies', { rows: await page.locator('#policy-rows tr td').allTextContents() });

    await page.click('#logout');
    await page.locator('#login-form').waitFor({ timeout: TIMEOUT });
    report('logged out', { console_errors: consoleErrors });
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
