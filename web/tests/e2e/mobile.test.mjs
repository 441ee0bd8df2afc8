// The core flow on a phone (390×844, touch): register, befriend, chat both
// ways with delivered and seen, one pane at a time with a tab bar, and the
// installed app opening offline with its cached chats.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PHONE, befriend, launch, message, messageFriend, person, register, send, snap, waitForStatus } from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('on a phone: befriend, chat both ways, and open offline from the cache', async () => {
  const carol = await person(browser, { name: 'Carol', device: PHONE });
  const dave = await person(browser, { name: 'Dave', device: PHONE });
  await carol.page.goto('/register');
  await carol.page.getByRole('heading', { name: 'Create your account' }).waitFor();
  await snap(carol.page, 'mobile-register');
  await register(carol);
  await register(dave);

  // The PWA: a manifest with icons, and a service worker that takes control.
  const manifest = await (await carol.page.request.get('/manifest.webmanifest')).json();
  assert.equal(manifest.display, 'standalone');
  assert.ok(manifest.icons.some((icon) => icon.sizes === '512x512' && icon.purpose === 'maskable'));

  await befriend(carol, dave);
  await snap(carol.page, 'mobile-friends');
  await messageFriend(carol, dave);
  // One pane: the conversation, without the tab bar.
  assert.equal(await carol.page.getByRole('navigation', { name: 'Main' }).isVisible(), false);

  await send(carol, 'Are you on your phone too?');
  await waitForStatus(carol, 'Are you on your phone too?', 'delivered');

  // Dave's phone shows the chat list; he taps the chat.
  await dave.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Chats', exact: true }).tap();
  const chatItem = dave.page.locator('.chat-item', { hasText: 'Carol' });
  await chatItem.locator('.badge', { hasText: '1' }).waitFor();
  await snap(dave.page, 'mobile-chats');
  await chatItem.tap();
  await message(dave.page, 'Are you on your phone too?').waitFor();
  await waitForStatus(carol, 'Are you on your phone too?', 'seen');

  await send(dave, 'Yes! Typing with my thumbs.');
  await message(carol.page, 'Yes! Typing with my thumbs.').waitFor();
  await waitForStatus(dave, 'Yes! Typing with my thumbs.', 'seen');
  await snap(dave.page, 'mobile-chat');

  // Back to the list with the header's back button.
  await dave.page.getByRole('link', { name: 'Back' }).tap();
  await dave.page.waitForURL(/\/$/);
  await chatItem.waitFor();

  // Installed and offline: the service worker serves the app shell, the
  // cached chat shows, and the app says it is offline.
  await carol.page.evaluate(() => navigator.serviceWorker.ready);
  await carol.page.waitForFunction(() => navigator.serviceWorker.controller !== null);
  await carol.context.setOffline(true);
  await carol.page.reload();
  await message(carol.page, 'Yes! Typing with my thumbs.').waitFor();
  await carol.page.getByRole('status').filter({ hasText: 'Offline' }).waitFor();
  await snap(carol.page, 'mobile-offline');
  await carol.context.setOffline(false);
  await carol.page.getByRole('status').filter({ hasText: 'Offline' }).waitFor({ state: 'hidden' });
  await send(carol, 'Back online');
  await dave.page.locator('.chat-item', { hasText: 'Back online' }).waitFor();

  assert.deepEqual([...carol.errors, ...dave.errors], []);
  await carol.context.close();
  await dave.context.close();
});
