// The web client in a two-node cluster (docs/cluster.md), on a cluster of
// the test's own (helpers.mjs `ownCluster`: redis-server, parley-mock-kafka,
// two `parley` nodes sharing one SQLite store). Both people load the app
// from node 1; the one whose shard node 2 owns is sent there by the ticket's
// `url` (a cross-origin WebSocket the page's CSP must allow). Messages cross
// nodes both ways; when node 2 stops gracefully, node 1 takes every shard
// and that person's client follows a new ticket back to node 1.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { TIMEOUT, befriend, launch, login, message, messageFriend, ownCluster, person, send, snap, uniqueName, until, waitForStatus } from './helpers.mjs';

/** Accounts registered before one lives on each node (about half land on each). */
const MAX_ACCOUNTS = 30;

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** A JSON POST to a node's REST API: `{ status, body }`. */
async function post(base, path, { token = null, body = undefined } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(base + path, {
    method: 'POST',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT),
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

/** Registers an account through `base` and logs it in: `{ username, password, token }`. */
async function newAccount(base, index) {
  const username = uniqueName(`cl${index}x`);
  const password = `password-${username}`;
  const registered = await post(base, '/api/v1/auth/register', { body: { username, password, display_name: `Cluster ${index}` } });
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  const login = await post(base, '/api/v1/auth/login', { body: { username, password } });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  return { username, password, token: login.body.access_token };
}

/** The port of the node a WebSocket ticket from `base` names for `account` (503 while its shard has no owner: retried). */
async function homePort(base, account) {
  const ticket = await until(`a ticket for ${account.username}`, async () => {
    const { status, body } = await post(base, '/api/v1/auth/ws-ticket', { token: account.token });
    if (status === 503) return null;
    assert.equal(status, 200, JSON.stringify(body));
    return body;
  });
  assert.ok(ticket.url, 'a cluster names the node to connect to');
  return Number(new URL(ticket.url).port);
}

/** Every WebSocket the page opens, in order (playwright WebSocket objects). */
function recordSockets(page) {
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws));
  return sockets;
}

const portOf = (ws) => Number(new URL(ws.url()).port);

test('cluster: each client connects to the node that owns its shard, chats across nodes, and follows its shard when that node stops', { timeout: 300_000 }, async () => {
  const cluster = await ownCluster(2);
  const people = [];
  try {
    const [node1, node2] = cluster.nodes;

    // One account whose shard node 2 owns, one whose shard node 1 owns.
    const byPort = new Map();
    for (let index = 0; index < MAX_ACCOUNTS && byPort.size < 2; index++) {
      const account = await newAccount(node1.url, index);
      const port = await homePort(node1.url, account);
      assert.ok([node1.port, node2.port].includes(port), `ticket names port ${port}, not a node`);
      if (!byPort.has(port)) byPort.set(port, account);
    }
    assert.equal(byPort.size, 2, `${MAX_ACCOUNTS} accounts all lived on one node`);

    // Node 1's pages may connect to node 2 once node 1's directory lists it (refreshed every heartbeat).
    const csp = async () => {
      const response = await fetch(`${node1.url}/login`, { headers: { accept: 'text/html' }, signal: AbortSignal.timeout(TIMEOUT) });
      return response.headers.get('content-security-policy') ?? '';
    };
    await until("node 2's socket origin in node 1's CSP", async () => (await csp()).includes(`ws://127.0.0.1:${node2.port}`), { timeout: 3 * TIMEOUT });

    // Vera lives on node 2, Ivan on node 1; both load the app from node 1.
    const vera = await person(browser, { name: 'Vera', baseURL: node1.url });
    const ivan = await person(browser, { name: 'Ivan', baseURL: node1.url });
    people.push(vera, ivan);
    Object.assign(vera, { username: byPort.get(node2.port).username, password: byPort.get(node2.port).password });
    Object.assign(ivan, { username: byPort.get(node1.port).username, password: byPort.get(node1.port).password });
    const veraSockets = recordSockets(vera.page);
    const ivanSockets = recordSockets(ivan.page);
    await login(vera);
    await login(ivan);

    // Vera's page connects straight to node 2 (the ticket it got from node 1 names it); Ivan's stays on node 1.
    await until("Vera's socket to node 2", () => veraSockets.some((ws) => portOf(ws) === node2.port && !ws.isClosed()), { timeout: TIMEOUT });
    await until("Ivan's socket to node 1", () => ivanSockets.some((ws) => portOf(ws) === node1.port && !ws.isClosed()), { timeout: TIMEOUT });
    assert.deepEqual(
      ivanSockets.map(portOf).filter((port) => port !== node1.port),
      [],
      "Ivan's page only ever connects to node 1",
    );

    // A friend request, its acceptance and messages cross the nodes both ways.
    await befriend(ivan, vera);
    await messageFriend(ivan, vera);
    await messageFriend(vera, ivan);
    await send(ivan, 'Hello from node 1');
    await message(vera.page, 'Hello from node 1').waitFor();
    await send(vera, 'Hello from node 2');
    await message(ivan.page, 'Hello from node 2').waitFor();
    // Read receipts cross too.
    await waitForStatus(ivan, 'Hello from node 1', 'seen');
    await waitForStatus(vera, 'Hello from node 2', 'seen');
    await snap(vera.page, 'cluster-vera-on-node-2');

    // Node 2 stops gracefully: it leaves the consumer group and the
    // directory, and node 1 takes every shard.
    const before = veraSockets.length;
    await node2.stop('SIGTERM');
    await cluster.settled();
    // Vera's client gets a new ticket, which names node 1, and connects there.
    const moved = await until(
      "Vera's new socket to node 1",
      () => veraSockets.slice(before).find((ws) => portOf(ws) === node1.port && !ws.isClosed()),
      { timeout: 6 * TIMEOUT },
    );
    // Messages still flow both ways, now within node 1.
    await send(vera, 'Moved to node 1');
    await message(ivan.page, 'Moved to node 1').waitFor({ timeout: 3 * TIMEOUT });
    await send(ivan, 'Welcome to node 1');
    await message(vera.page, 'Welcome to node 1').waitFor({ timeout: 3 * TIMEOUT });
    await waitForStatus(vera, 'Moved to node 1', 'seen');
    await waitForStatus(ivan, 'Welcome to node 1', 'seen');
    assert.ok(!moved.isClosed(), "Vera's socket to node 1 is still open");
    assert.ok(veraSockets.filter((ws) => portOf(ws) === node2.port).every((ws) => ws.isClosed()), "Vera's sockets to node 2 are closed");
    assert.deepEqual(ivanSockets.map(portOf).filter((port) => port !== node1.port), [], "Ivan's page only ever connected to node 1");
    await snap(vera.page, 'cluster-vera-moved-to-node-1');

    // No CSP violations (the cross-origin sockets are allowed) and no page errors.
    for (const user of [vera, ivan]) assert.deepEqual(user.errors, [], `${user.name}: ${user.errors.join('\n')}`);
  } finally {
    for (const user of people) await user.context.close().catch(() => {});
    await cluster.close();
  }
});
