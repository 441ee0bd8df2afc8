// Shared pieces of the end-to-end tests: the browser, users in their own
// browser contexts, and screenshots. Every wait is for a condition, with
// playwright's timeouts; no fixed sleeps.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

export const BASE = process.env.PARLEY_URL ?? 'http://127.0.0.1:8080';
const ARTIFACTS = process.env.E2E_ARTIFACTS ?? join(process.cwd(), 'artifacts');
/** How long any single expectation may take. */
export const TIMEOUT = 10_000;

export const DESKTOP = { viewport: { width: 1280, height: 800 } };
export const PHONE = {
  viewport: { width: 390, height: 844 },
  deviceScaleFactor: 2,
  isMobile: true,
  hasTouch: true,
  userAgent:
    'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36',
};

/** Debian's Chromium; the flags keep it off the network (this machine reaches no Google hosts). */
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

/** A unique username for this run (the server's data directory is shared by the test files). */
export function uniqueName(prefix) {
  return `${prefix}${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
}

/**
 * A person with their own browser context (own storage, own tokens).
 * `errors` collects uncaught page errors, unhandled rejections and CSP violations.
 */
export async function person(browser, { name, device = DESKTOP, baseURL = BASE }) {
  const context = await browser.newContext({ ...device, baseURL, reducedMotion: 'reduce' });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  // The app must live within its own Content-Security-Policy.
  page.on('console', (msg) => {
    if (/Content.Security.Policy/i.test(msg.text())) errors.push(new Error(msg.text()));
  });
  return { name, username: uniqueName(name.toLowerCase()), password: `password-${name}-0123`, context, page, errors };
}

/** Registers through the UI and waits for the signed-in app. */
export async function register(user) {
  const { page } = user;
  await page.goto('/register');
  await page.getByLabel('Display name').fill(user.name);
  await page.getByLabel('Username').fill(user.username);
  await page.getByLabel('Password').fill(user.password);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
}

/** Logs in through the UI (`user` from `person`, with the username and password of an account) and waits for the app. */
export async function login(user) {
  const { page } = user;
  await page.goto('/login');
  await page.getByLabel('Username').fill(user.username);
  await page.getByLabel('Password').fill(user.password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
}

/** The same account on another device (a new browser context), logged in. */
export async function anotherDevice(browser, user, { device = DESKTOP, baseURL = BASE } = {}) {
  const other = await person(browser, { name: user.name, device, baseURL });
  other.username = user.username;
  other.password = user.password;
  await login(other);
  return other;
}

/** Saves a screenshot of the page as `<name>.png` in the artifacts directory. */
export async function snap(page, name) {
  await mkdir(ARTIFACTS, { recursive: true });
  // Transient toasts would cover the screen being shown. (Through the CSSOM:
  // the app's Content-Security-Policy refuses injected style sheets.)
  const toasts = page.locator('#toasts');
  await toasts.evaluate((el) => el.style.setProperty('display', 'none'));
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
  await toasts.evaluate((el) => el.style.removeProperty('display'));
}

/** The message bubble (list item) whose text is `text`. */
export function message(page, text) {
  return page.locator('.message-list .msg').filter({ has: page.locator('.msg-body', { hasText: text }) });
}

/** Waits until a locator's attribute has the value. */
export async function waitForAttribute(locator, name, value) {
  await locator.and(locator.page().locator(`[${name}="${value}"]`)).waitFor();
}

/** Waits until `fn` (run in the page) returns truthy. */
export function waitUntil(page, fn, arg) {
  return page.waitForFunction(fn, arg, { timeout: TIMEOUT });
}

/** Opens the Friends tab. */
export async function openFriends(user) {
  await user.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Friends', exact: true }).click();
  await user.page.getByLabel('Find people').waitFor();
}

/** `a` finds `b` by search and asks to be friends; `b` accepts from their Friends screen. */
export async function befriend(a, b, { shots = null } = {}) {
  await openFriends(a);
  await a.page.getByLabel('Find people').fill(b.username);
  const hit = a.page.locator('.search-results .person', { hasText: '@' + b.username });
  await hit.getByRole('button', { name: 'Add friend' }).click();
  await hit.getByRole('button', { name: 'Cancel request' }).waitFor();
  await a.page.locator('section[aria-label="Sent requests"] .person', { hasText: '@' + b.username }).waitFor();

  await openFriends(b);
  const request = b.page.locator('section[aria-label="Friend requests"] .person', { hasText: '@' + a.username });
  await request.waitFor();
  if (shots) await snap(b.page, shots);
  await request.getByRole('button', { name: 'Accept' }).click();
  await b.page.locator('section[aria-label="Friends"] .person', { hasText: '@' + a.username }).waitFor();
  // `a` sees the acceptance live (a relation update), without reloading.
  await a.page.locator('section[aria-label="Friends"] .person', { hasText: '@' + b.username }).waitFor();
}

/** From the Friends screen, opens the chat with `peer`. */
export async function messageFriend(user, peer) {
  const row = user.page.locator('section[aria-label="Friends"] .person', { hasText: '@' + peer.username });
  await row.getByRole('button', { name: 'Message' }).click();
  await user.page.waitForURL(/\/chats\/\d+$/);
  await user.page.getByRole('textbox', { name: 'Message' }).waitFor();
}

/** Types and sends a message from the open chat. */
export async function send(user, text) {
  const box = user.page.getByRole('textbox', { name: 'Message' });
  await box.fill(text);
  await box.press('Enter');
  await message(user.page, text).waitFor();
}

/** Waits until my message `text` shows the state (`sent`, `delivered`, `seen`). */
export async function waitForStatus(user, text, status) {
  await user.page
    .locator(`.message-list .msg[data-status="${status}"]`)
    .filter({ has: user.page.locator('.msg-body', { hasText: text }) })
    .waitFor();
}

/**
 * A `parley` node of the test's own, for tests that stop and restart it
 * (the other tests share the one scripts/e2e runs): the binary in
 * PARLEY_BIN with the same settings (the PARLEY_<SECTION>__<KEY> variables
 * scripts/e2e exports), on a free loopback port, with its own data
 * directory that survives restarts. Its log goes to the artifacts.
 */
export async function ownServer(name = 'own') {
  const bin = process.env.PARLEY_BIN;
  if (!bin) throw new Error('PARLEY_BIN is not set (scripts/e2e sets it)');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const dataDir = await mkdtemp(join(tmpdir(), 'parley-e2e-own-'));
  await mkdir(ARTIFACTS, { recursive: true });
  const log = createWriteStream(join(ARTIFACTS, `server-${name}.log`), { flags: 'a' });
  // Only settings: other PARLEY_ variables (PARLEY_URL, PARLEY_DATA_DIR, ...) would be read as unknown keys.
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('PARLEY_') || key.includes('__')));
  let child = null;
  const killOnExit = () => child?.kill('SIGKILL');
  process.on('exit', killOnExit);

  const server = {
    url,
    dataDir,
    /** Starts the node and waits until it answers /readyz. */
    async start() {
      if (child) throw new Error('already running');
      const proc = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', join(dataDir, 'node')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      proc.stdout.pipe(log, { end: false });
      proc.stderr.pipe(log, { end: false });
      child = proc;
      let exited = null;
      proc.once('exit', (code, signal) => {
        exited = { code, signal };
        if (child === proc) child = null;
      });
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline) {
        if (exited) throw new Error(`parley exited early (${JSON.stringify(exited)}); see server-${name}.log`);
        try {
          if ((await fetch(`${url}/readyz`)).ok) return;
        } catch {
          // Not listening yet.
        }
        await sleep(100);
      }
      throw new Error(`parley did not become ready at ${url}`);
    },
    /** Freezes the node (SIGSTOP): connections stay open, but nothing is read or answered. */
    freeze() {
      child?.kill('SIGSTOP');
    },
    /** Stops the node with `signal` (SIGTERM: a graceful shutdown), frozen or not, and waits until it has exited. */
    async stop(signal = 'SIGTERM') {
      const proc = child;
      if (!proc) return;
      const exited = once(proc, 'exit');
      proc.kill(signal);
      proc.kill('SIGCONT');
      await exited;
    },
    /** Stops and removes its data (the log stays). */
    async close() {
      await server.stop();
      process.off('exit', killOnExit);
      log.end();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  await server.start();
  return server;
}

/** A free loopback TCP port. */
async function freePort() {
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address();
  probe.close();
  await once(probe, 'close');
  return port;
}
