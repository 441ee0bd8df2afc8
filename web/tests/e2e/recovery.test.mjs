// When things go wrong: "Log out other devices" (the others land on the
// login screen and lose their cache), sends that fail and are retried, and
// a server restart in the middle of a chat (on a node of the test's own).
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { after, before, test } from 'node:test';
import {
  PHONE,
  TIMEOUT,
  anotherDevice,
  befriend,
  friends,
  launch,
  message,
  messageFriend,
  openFriends,
  ownServer,
  person,
  register,
  send,
  snap,
  waitForStatus,
  waitUntil,
} from './helpers.mjs';

const SMALL_PHONE = { ...PHONE, viewport: { width: 360, height: 780 } };
/** The client gives up waiting for an ack after 10 s (`ACK_TIMEOUT_MS` in session.js). */
const ACK_TIMEOUT = 10_000;

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** What this page keeps in localStorage of a login: the refresh token and the cached chats. */
function storedLogin(page) {
  return page.evaluate(() => ({
    refreshToken: localStorage.getItem('parley.refresh_token') !== null,
    cache: Object.keys(localStorage).some((key) => key.startsWith('parley.cache.')),
  }));
}

test('log out other devices: they show the login screen, drop their cache and stay logged out', async () => {
  // Kim on a 360 px phone; her desktop, open; and a laptop whose tab is closed for now.
  const kim = await person(browser, { name: 'Kim', device: SMALL_PHONE });
  await register(kim);
  const desktop = await anotherDevice(browser, kim);
  const laptop = await anotherDevice(browser, kim);
  for (const device of [desktop, laptop]) await waitUntil(device.page, () => Object.keys(localStorage).some((key) => key.startsWith('parley.cache.')));
  await laptop.page.close();

  const { page } = kim;
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Profile', exact: true }).click();
  const button = page.getByRole('button', { name: 'Log out other devices' });
  await button.click();
  const dialog = page.getByRole('dialog', { name: 'Log out other devices?' });
  // Cancelling does nothing.
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await dialog.waitFor({ state: 'detached' });
  await button.click();
  await snap(page, 'logout-others-confirm');
  let reconnects = 0;
  desktop.page.on('websocket', () => reconnects++);
  await dialog.getByRole('button', { name: 'Log out other devices' }).click();
  await page.getByRole('status').filter({ hasText: 'Logged out 2 other devices.' }).waitFor();
  await snap(page, 'logout-others-done');

  // The open desktop is told at once (close code 4003), and does not reconnect.
  await desktop.page.waitForURL(/\/login$/);
  await desktop.page.getByRole('status').filter({ hasText: 'You were logged out from another device.' }).waitFor();
  await snap(desktop.page, 'logged-out-elsewhere');
  assert.deepEqual(await storedLogin(desktop.page), { refreshToken: false, cache: false });

  // The laptop finds out when it opens: its refresh token is refused.
  laptop.page = await laptop.context.newPage();
  await laptop.page.goto('/');
  await laptop.page.waitForURL(/\/login$/);
  await laptop.page.getByRole('status').filter({ hasText: 'you were logged out from another device' }).waitFor();
  assert.deepEqual(await storedLogin(laptop.page), { refreshToken: false, cache: false });

  // This device stays logged in, also after a reload; a second run ends nothing.
  await page.reload();
  await button.click();
  await dialog.getByRole('button', { name: 'Log out other devices' }).click();
  await page.getByRole('status').filter({ hasText: 'No other devices were logged in.' }).waitFor();
  assert.equal(reconnects, 0);
  assert.ok(desktop.page.url().endsWith('/login'));

  assert.deepEqual([...kim.errors, ...desktop.errors, ...laptop.errors], []);
  for (const device of [kim, desktop, laptop]) await device.context.close();
});

test('a send that fails shows "not sent" with Retry, and goes out once when retried', async () => {
  const [lena, milo] = await friends(browser, { name: 'Lena' }, { name: 'Milo' });
  await messageFriend(lena, milo);
  await send(lena, 'Hello Milo');
  const miloChat = milo.page.locator('.chat-item', { hasText: 'Lena' });
  await milo.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Chats', exact: true }).click();
  await miloChat.click();
  await message(milo.page, 'Hello Milo').waitFor();
  const failed = (text) => message(lena.page, text).and(lena.page.locator('[data-status="failed"]'));

  // Too long for the server: the composer says so and keeps the text; nothing is sent.
  const box = lena.page.getByRole('textbox', { name: 'Message' });
  await box.fill('x'.repeat(16 * 1024 + 1));
  await box.press('Enter');
  await lena.page.locator('.toast.error', { hasText: 'That message is too long' }).waitFor();
  assert.equal((await box.inputValue()).length, 16 * 1024 + 1);

  // A body the server refuses as invalid (`invalid_field`): U+0085 alone is
  // blank to the server's trim but not to the browser's, so the client sends
  // it. It cannot be retried as it is: Edit puts it back in the composer.
  await box.fill('\u0085');
  await box.press('Enter');
  const invalid = lena.page.locator('.message-list .msg[data-status="failed"]');
  await invalid.getByRole('alert').filter({ hasText: 'This message cannot be sent. Edit it and try again.' }).waitFor();
  assert.equal(await invalid.getByRole('button', { name: 'Retry' }).count(), 0);
  await invalid.getByRole('button', { name: 'Edit' }).click();
  await invalid.waitFor({ state: 'detached' });
  assert.equal(await box.inputValue(), '\u0085');
  await box.fill('');

  // The server refuses a send (an `error` frame): Milo has blocked Lena.
  await openFriends(milo);
  const friendRow = milo.page.locator('section[aria-label="Friends"] .person', { hasText: '@' + lena.username });
  await friendRow.getByRole('button', { name: 'More actions for Lena' }).click();
  await milo.page.getByRole('dialog').getByRole('button', { name: 'Block Lena' }).click();
  const blockedRow = milo.page.locator('section[aria-label="Blocked"] .person', { hasText: '@' + lena.username });
  await blockedRow.waitFor();
  await send(lena, 'Are you ignoring me?');
  await failed('Are you ignoring me?').waitFor();
  await failed('Are you ignoring me?').getByRole('alert').filter({ hasText: 'This user does not accept messages from you.' }).waitFor();
  await snap(lena.page, 'send-failed');
  // The condition is fixed (unblocked); Retry delivers it, once.
  await blockedRow.getByRole('button', { name: 'Unblock' }).click();
  await blockedRow.waitFor({ state: 'detached' });
  await failed('Are you ignoring me?').getByRole('button', { name: 'Retry' }).click();
  await waitForStatus(lena, 'Are you ignoring me?', 'delivered');
  await milo.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Chats', exact: true }).click();
  await miloChat.click();
  await message(milo.page, 'Are you ignoring me?').waitFor();
  assert.equal(await message(milo.page, 'Are you ignoring me?').count(), 1);

  // No network: the client gives up waiting for the ack and says so; Retry
  // while still offline waits again; back online it goes out by itself, once.
  await lena.context.setOffline(true);
  await lena.page.getByRole('status').filter({ hasText: 'Offline' }).waitFor();
  await send(lena, 'Written in a tunnel');
  await waitForStatus(lena, 'Written in a tunnel', 'sending');
  await failed('Written in a tunnel').getByRole('alert').filter({ hasText: 'Not sent yet: no connection.' }).waitFor({ timeout: ACK_TIMEOUT + TIMEOUT });
  await failed('Written in a tunnel').getByRole('button', { name: 'Retry' }).click();
  await waitForStatus(lena, 'Written in a tunnel', 'sending');
  await lena.context.setOffline(false);
  await waitForStatus(lena, 'Written in a tunnel', 'seen');
  await message(milo.page, 'Written in a tunnel').waitFor();
  assert.equal(await message(milo.page, 'Written in a tunnel').count(), 1);
  assert.equal(await message(lena.page, 'Written in a tunnel').count(), 1);

  assert.deepEqual([...lena.errors, ...milo.errors], []);
  await lena.context.close();
  await milo.context.close();
});

test("a chat whose messages failed to load while the socket stayed up loads them by itself", async () => {
  const [nora, otto] = await friends(browser, { name: 'Nora' }, { name: 'Otto' });
  await messageFriend(nora, otto);
  await send(nora, 'Are you there?');

  // Otto's new laptop: its first two requests for the chat's messages fail
  // as if the network dropped them; its WebSocket is not touched.
  const laptop = await anotherDevice(browser, otto);
  let dropped = 0;
  await laptop.context.route('**/api/v1/chats/*/messages?*', (route) => (dropped++ < 2 ? route.abort('internetdisconnected') : route.fallback()));
  await laptop.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Chats', exact: true }).click();
  await laptop.page.locator('.chat-item', { hasText: 'Nora' }).click();
  await message(laptop.page, 'Are you there?').waitFor();
  assert.equal(dropped, 3, 'two failed loads, then the one that worked');
  assert.equal(await laptop.page.locator('.toast.error').count(), 0);

  assert.deepEqual([...nora.errors, ...otto.errors, ...laptop.errors], []);
  for (const user of [nora, otto, laptop]) await user.context.close();
});

test('the server restarts mid-chat, gracefully then after a crash: pages reconnect by themselves and nothing is lost or doubled', async () => {
  const server = await ownServer('restart');
  try {
    const nora = await person(browser, { name: 'Nora', baseURL: server.url });
    const omar = await person(browser, { name: 'Omar', device: PHONE, baseURL: server.url });
    // Every `send` frame Nora's page puts on the wire, by body (`wire` tells each as it goes).
    const sent = new Map();
    const wire = new EventEmitter();
    nora.page.on('websocket', (ws) =>
      ws.on('framesent', ({ payload }) => {
        const frame = JSON.parse(payload);
        if (frame.type !== 'send') return;
        sent.set(frame.body, [...(sent.get(frame.body) ?? []), frame.client_msg_id]);
        wire.emit(frame.body);
      }),
    );
    await register(nora);
    await register(omar);
    await befriend(nora, omar);
    await messageFriend(nora, omar);
    await messageFriend(omar, nora);
    await send(nora, 'Before the restart');
    await message(omar.page, 'Before the restart').waitFor();
    await waitForStatus(nora, 'Before the restart', 'seen');
    const offline = (user) => user.page.getByRole('status').filter({ hasText: 'Offline' });
    const bothReconnected = async () => {
      for (const user of [nora, omar]) await offline(user).waitFor({ state: 'hidden', timeout: 3 * TIMEOUT });
    };

    // A graceful stop (SIGTERM: close code 1001). Both pages say they are offline.
    await server.stop('SIGTERM');
    for (const user of [nora, omar]) await offline(user).waitFor();
    // Nora writes while the server is down: shown at once, waiting.
    await send(nora, 'Written while the server was down');
    await waitForStatus(nora, 'Written while the server was down', 'sending');
    await snap(nora.page, 'restart-offline');
    // The same node comes back on the same port and data. Nobody reloads.
    await server.start();
    await bothReconnected();
    await send(omar, 'After the restart');
    await message(nora.page, 'After the restart').waitFor();
    await message(omar.page, 'Written while the server was down').waitFor();
    await waitForStatus(nora, 'Written while the server was down', 'seen');

    // A crash: the server freezes as Nora sends (the frame is on the wire, no
    // ack comes), then dies (SIGKILL). The page resends it after reconnecting.
    server.freeze();
    const onWire = once(wire, 'Sent as the server froze');
    await send(nora, 'Sent as the server froze');
    await onWire;
    await server.stop('SIGKILL');
    await server.start();
    await bothReconnected();
    await message(omar.page, 'Sent as the server froze').waitFor();
    await waitForStatus(nora, 'Sent as the server froze', 'seen');
    await send(omar, 'After the crash');
    await message(nora.page, 'After the crash').waitFor();

    // Exactly once on both sides, also as the server has them (Omar reloads).
    const texts = ['Before the restart', 'Written while the server was down', 'After the restart', 'Sent as the server froze', 'After the crash'];
    for (const text of texts) {
      assert.equal(await message(nora.page, text).count(), 1, text);
      assert.equal(await message(omar.page, text).count(), 1, text);
    }
    await omar.page.reload();
    await message(omar.page, 'After the crash').waitFor();
    for (const text of texts) assert.equal(await message(omar.page, text).count(), 1, text);
    // Went out once after the reconnect; the frozen one twice, with the same client_msg_id.
    assert.equal(sent.get('Written while the server was down')?.length, 1);
    const frozen = sent.get('Sent as the server froze') ?? [];
    assert.equal(frozen.length, 2, `sent, then resent: ${frozen}`);
    assert.equal(new Set(frozen).size, 1, `one client_msg_id: ${frozen}`);

    assert.deepEqual([...nora.errors, ...omar.errors], []);
    await nora.context.close();
    await omar.context.close();
  } finally {
    await server.close();
  }
});
