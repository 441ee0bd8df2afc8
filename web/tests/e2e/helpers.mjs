// Shared pieces of the end-to-end tests: the browser, users in their own
// browser contexts, and screenshots. Every wait is for a condition, with
// playwright's timeouts; no fixed sleeps.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
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
export async function person(browser, { name, device = DESKTOP }) {
  const context = await browser.newContext({ ...device, baseURL: BASE, reducedMotion: 'reduce' });
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
