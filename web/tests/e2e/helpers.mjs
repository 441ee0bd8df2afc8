// Shared pieces of the end-to-end tests: the browser, users in their own
// browser contexts, and screenshots. Every wait is for a condition, with
// playwright's timeouts; no fixed sleeps.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
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

/** Two newly registered people (`person` options each) who are friends; `a` is left in the Friends screen. */
export async function friends(browser, a, b) {
  const first = await person(browser, a);
  const second = await person(browser, b);
  await register(first);
  await register(second);
  await befriend(first, second);
  return [first, second];
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

// Cluster mode (cluster.test.mjs): several `parley` nodes of the test's own
// on loopback, sharing a redis-server, a mock Kafka cluster
// (`parley-mock-kafka`, in PARLEY_MOCK_KAFKA) and one SQLite store. Every
// process logs to the artifacts and is killed if the test process exits.

/** Shards of a test cluster = partitions of its delivery topic. */
export const CLUSTER_SHARDS = 8;
/** Longest wait for a process to come up or a cluster to settle. */
const CLUSTER_PATIENCE = 60_000;

/**
 * Waits until `check()` returns something truthy (and returns it), polling;
 * fails after `timeout` ms, or at once when `proc` (a `child`) has exited.
 */
export async function until(what, check, { timeout = CLUSTER_PATIENCE, proc = null, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (proc?.exited) throw new Error(`waiting for ${what}: ${proc.name} exited (${JSON.stringify(proc.exited)}); see ${proc.name}.log`);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(interval);
  }
}

/**
 * A child process of the test: stdout and stderr go to `<name>.log` in the
 * artifacts (stdout is also kept in `stdout`); SIGKILLed if the test
 * process exits while it runs.
 */
async function child(name, command, args, { env = process.env, stdin = 'ignore' } = {}) {
  await mkdir(ARTIFACTS, { recursive: true });
  const log = createWriteStream(join(ARTIFACTS, `${name}.log`), { flags: 'a' });
  const proc = spawn(command, args, { env, stdio: [stdin, 'pipe', 'pipe'] });
  const handle = { name, proc, exited: null, stdout: '' };
  const exit = new Promise((resolve) => {
    proc.once('exit', (code, signal) => resolve((handle.exited = { code, signal })));
    proc.once('error', (error) => resolve((handle.exited = { error: error.message })));
  });
  proc.stdout.on('data', (chunk) => {
    handle.stdout += chunk;
  });
  proc.stdout.pipe(log, { end: false });
  proc.stderr.pipe(log, { end: false });
  const killOnExit = () => proc.kill('SIGKILL');
  process.on('exit', killOnExit);
  /** Sends `signal` and waits for the exit (SIGKILL after `patience` ms). */
  handle.stop = async (signal = 'SIGTERM', patience = 20_000) => {
    if (!handle.exited) {
      proc.kill(signal);
      const killer = setTimeout(() => proc.kill('SIGKILL'), patience);
      await exit;
      clearTimeout(killer);
    }
    process.off('exit', killOnExit);
    log.end();
  };
  return handle;
}

/** Whether a Redis server answers PING on loopback `port`. */
function redisAnswers(port) {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (answer) => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

/** A `redis-server` on a free loopback port, without persistence, in a temporary directory. */
async function redisServer() {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'parley-e2e-redis-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const proc = await child('cluster-redis', 'redis-server', args);
  const redis = {
    url: `redis://127.0.0.1:${port}/0`,
    async close() {
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await until('redis-server to answer', () => redisAnswers(port), { proc, timeout: 10_000 });
  } catch (error) {
    await redis.close();
    throw error;
  }
  return redis;
}

/**
 * `parley-mock-kafka` with `topics` (`[name, partitions]` pairs); `brokers`
 * is its bootstrap list. Its stdin is a pipe: it also ends when this
 * process does, however that happens.
 */
async function mockKafka(topics) {
  const bin = process.env.PARLEY_MOCK_KAFKA;
  if (!bin) throw new Error('PARLEY_MOCK_KAFKA is not set (scripts/e2e sets it)');
  const args = topics.flatMap(([name, partitions]) => ['--topic', `${name}:${partitions}`]);
  const proc = await child('cluster-kafka', bin, args, { stdin: 'pipe' });
  const kafka = {
    brokers: '',
    async close() {
      proc.proc.stdin.end();
      await proc.stop();
    },
  };
  try {
    const line = await until('parley-mock-kafka to print its brokers', () => proc.stdout.includes('\n') && proc.stdout.split('\n')[0].trim(), { proc, timeout: 10_000 });
    kafka.brokers = line;
  } catch (error) {
    await kafka.close();
    throw error;
  }
  return kafka;
}

/** A number from a Prometheus text exposition (an unlabelled sample), or null. */
function metricValue(text, name) {
  const line = text.split('\n').find((line) => line.startsWith(`${name} `));
  return line === undefined ? null : Number(line.slice(name.length + 1));
}

/** TOML of one node: its own port and data directory; the shared store, keys, Redis and broker. */
function nodeConfig({ name, port, dataDir, shared, redis, kafka }) {
  const s = JSON.stringify; // A JSON string is a TOML basic string (paths and URLs here).
  return `# Node ${name} of an e2e test cluster (web/tests/e2e/helpers.mjs).
listen = ${s(`127.0.0.1:${port}`)}
data_dir = ${s(dataDir)}

[storage]
backend = "sqlite"
path = ${s(join(shared, 'shared.sqlite3'))}

[engine]
shard_count = ${CLUSTER_SHARDS}
presence_offline_grace_ms = 200
sends_per_second = 10000
send_burst = 10000

[auth]
keys_dir = ${s(join(shared, 'keys'))}
argon2_memory_kib = 1024
argon2_iterations = 1

[limits]
auth_per_minute_per_ip = 10000
auth_burst_per_ip = 10000
searches_per_second = 10000
search_burst = 10000

# Short times to live, but twice the Rust cluster tests': a browser test
# shares a loaded machine, and a node whose generator lease lapses refuses
# logins and sends (a node waits one lease TTL before it starts).
[redis]
url = ${s(redis.url)}
key_prefix = "e2e"
lease_ttl_ms = 6000
node_ttl_ms = 6000
presence_ttl_ms = 6000
command_timeout_ms = 1000

[cluster]
node_name = ${s(name)}
url = ${s(`http://127.0.0.1:${port}`)}

[kafka]
brokers = [${s(kafka.brokers)}]
session_timeout_ms = 3000
heartbeat_interval_ms = 500
commit_interval_ms = 100
`;
}

/** A cluster node (not started): `start()`, `stop(signal)`, `ownedShards()`. */
async function clusterNode({ name, shared, redis, kafka }) {
  const bin = process.env.PARLEY_BIN;
  if (!bin) throw new Error('PARLEY_BIN is not set (scripts/e2e sets it)');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const dataDir = join(shared, name);
  await mkdir(dataDir, { recursive: true });
  const configFile = join(dataDir, 'parley.toml');
  await writeFile(configFile, nodeConfig({ name, port, dataDir, shared, redis, kafka }));
  // Only settings (as ownServer): they override the file, and scripts/e2e's agree with it.
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('PARLEY_') || key.includes('__')));
  let proc = null;
  const node = {
    name,
    url,
    port,
    get running() {
      return Boolean(proc && !proc.exited);
    },
    /** Starts the node and waits until it answers /readyz. */
    async start() {
      if (node.running) throw new Error(`${name} is already running`);
      proc = await child(`cluster-${name}`, bin, ['serve', '--config', configFile], { env });
      const ready = async () => (await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) }).catch(() => null))?.ok;
      await until(`${name} to be ready at ${url}`, ready, { proc });
    },
    /** Stops it with `signal` (SIGTERM: gracefully) and waits until it has exited. */
    async stop(signal = 'SIGTERM') {
      await proc?.stop(signal);
      proc = null;
    },
    /** `parley_owned_shards` from its /metrics (null if it does not answer). */
    async ownedShards() {
      const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2_000) }).catch(() => null);
      return response?.ok ? metricValue(await response.text(), 'parley_owned_shards') : null;
    },
  };
  return node;
}

/**
 * A cluster of `count` nodes (started one after the other, each once ready)
 * that has settled: every running node owns shards, CLUSTER_SHARDS in all.
 * `close()` stops everything and removes the shared directory (the logs stay).
 */
export async function ownCluster(count = 2) {
  const shared = await mkdtemp(join(tmpdir(), 'parley-e2e-cluster-'));
  const cluster = {
    redis: null,
    kafka: null,
    nodes: [],
    /** Waits until the running nodes share all shards, each owning some. */
    async settled() {
      const running = cluster.nodes.filter((node) => node.running);
      await until(`the shards of ${running.map((node) => node.name).join(', ')} to settle`, async () => {
        const owned = await Promise.all(running.map((node) => node.ownedShards()));
        return owned.every((n) => n > 0) && owned.reduce((sum, n) => sum + n, 0) === CLUSTER_SHARDS;
      });
    },
    async close() {
      for (const node of cluster.nodes) await node.stop();
      await cluster.kafka?.close();
      await cluster.redis?.close();
      await rm(shared, { recursive: true, force: true });
    },
  };
  try {
    cluster.redis = await redisServer();
    cluster.kafka = await mockKafka([
      ['parley.delivery', CLUSTER_SHARDS],
      ['parley.delivery.dead', 1],
    ]);
    for (let index = 1; index <= count; index++) {
      const node = await clusterNode({ name: `node-${index}`, shared, redis: cluster.redis, kafka: cluster.kafka });
      cluster.nodes.push(node);
      await node.start();
    }
    await cluster.settled();
  } catch (error) {
    await cluster.close();
    throw error;
  }
  return cluster;
}
