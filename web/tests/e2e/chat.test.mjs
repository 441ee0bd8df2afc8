// The core flows on a desktop screen: register, befriend, chat both ways
// with delivered and seen, typing, edit, delete, a reload that misses
// nothing, history paging on a new device, and the profile.
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  BASE,
  befriend,
  friends,
  launch,
  message,
  messageFriend,
  openFriends,
  person,
  register,
  send,
  snap,
  waitForStatus,
} from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('two people befriend and chat in real time, and a reload misses nothing', async () => {
  const alice = await person(browser, { name: 'Alice' });
  const bob = await person(browser, { name: 'Bob' });

  await alice.page.goto('/');
  await alice.page.waitForURL(/\/login$/);
  await alice.page.getByRole('heading', { name: 'Welcome back' }).waitFor();
  await snap(alice.page, 'login');

  // Bad input is explained, from the client and from the server.
  await alice.page.getByLabel('Username').fill('nobody-here');
  await alice.page.getByLabel('Password').fill('wrong password 123');
  await alice.page.getByRole('button', { name: 'Log in' }).click();
  await alice.page.getByRole('alert').filter({ hasText: 'Wrong username or password.' }).waitFor();

  await register(alice);
  await register(bob);
  await alice.page.getByText('No chats yet.').waitFor();

  await befriend(alice, bob, { shots: 'friends-request' });
  await snap(alice.page, 'friends');
  await messageFriend(alice, bob);

  // Bob is elsewhere in the app: his device still receives, so it is delivered.
  await send(alice, 'Hi Bob! Lunch today?');
  await waitForStatus(alice, 'Hi Bob! Lunch today?', 'delivered');
  const bobChat = bob.page.locator('.chat-item', { hasText: 'Alice' });
  await bobChat.locator('.badge', { hasText: '1' }).waitFor();
  await snap(bob.page, 'chat-list-unread');

  // Bob opens the chat: seen.
  await bobChat.click();
  await message(bob.page, 'Hi Bob! Lunch today?').waitFor();
  await waitForStatus(alice, 'Hi Bob! Lunch today?', 'seen');
  await bobChat.locator('.badge').waitFor({ state: 'detached' });

  // Typing shows on the other side, and the message replaces it.
  await bob.page.getByRole('textbox', { name: 'Message' }).pressSequentially('Sure', { delay: 20 });
  await alice.page.locator('.typing-row', { hasText: 'Bob is typing…' }).waitFor();
  await bob.page.getByRole('textbox', { name: 'Message' }).pressSequentially(', noon at the usual place?');
  await bob.page.getByRole('textbox', { name: 'Message' }).press('Enter');
  await message(alice.page, 'Sure, noon at the usual place?').waitFor();
  await alice.page.locator('.typing-row', { hasText: 'typing' }).waitFor({ state: 'detached' });
  await waitForStatus(bob, 'Sure, noon at the usual place?', 'seen');

  // Edit: both sides show the new text, marked edited.
  await message(alice.page, 'Hi Bob! Lunch today?').hover();
  await message(alice.page, 'Hi Bob! Lunch today?').getByRole('button', { name: 'Message actions' }).click();
  await alice.page.getByRole('dialog').getByRole('button', { name: 'Edit' }).click();
  // The composer takes the message's text once the sheet has closed: typing
  // before that would race it, for a person as for the test.
  await alice.page.locator('.edit-bar', { hasText: 'Editing message' }).waitFor();
  const aliceBox = alice.page.getByRole('textbox', { name: 'Message' });
  await aliceBox.fill('Hi Bob! Lunch tomorrow?');
  await aliceBox.press('Enter');
  await message(bob.page, 'Hi Bob! Lunch tomorrow?').locator('.edited').waitFor();
  await message(alice.page, 'Hi Bob! Lunch tomorrow?').locator('.edited').waitFor();

  // Delete for everyone: a tombstone on both sides.
  await send(alice, 'Wrong chat, sorry');
  await message(bob.page, 'Wrong chat, sorry').waitFor();
  await message(alice.page, 'Wrong chat, sorry').getByRole('button', { name: 'Message actions' }).click();
  await alice.page.getByRole('dialog').getByRole('button', { name: 'Delete for everyone' }).click();
  await message(bob.page, 'This message was deleted').waitFor();
  await message(alice.page, 'This message was deleted').waitFor();
  assert.equal(await message(bob.page, 'Wrong chat, sorry').count(), 0);

  // Delete for me: gone for Bob only.
  await message(bob.page, 'Hi Bob! Lunch tomorrow?').getByRole('button', { name: 'Message actions' }).click();
  await bob.page.getByRole('dialog').getByRole('button', { name: 'Delete for me' }).click();
  await message(bob.page, 'Hi Bob! Lunch tomorrow?').waitFor({ state: 'detached' });
  assert.equal(await message(alice.page, 'Hi Bob! Lunch tomorrow?').count(), 1);
  await snap(alice.page, 'chat');

  // Bob reloads; Alice writes while his page is away. Nothing is missed or doubled.
  const reloading = bob.page.reload();
  await send(alice, 'Sent while you reloaded');
  await reloading;
  await message(bob.page, 'Sent while you reloaded').waitFor();
  await message(bob.page, 'Sure, noon at the usual place?').waitFor();
  assert.equal(await message(bob.page, 'Sent while you reloaded').count(), 1);
  await waitForStatus(alice, 'Sent while you reloaded', 'seen');

  // And after the reload Bob still chats both ways.
  await send(bob, 'Back again');
  await message(alice.page, 'Back again').waitFor();

  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.context.close();
  await bob.context.close();
});

test('a new device loads older history as you scroll up', async () => {
  const [erin, finn] = await friends(browser, { name: 'Erin' }, { name: 'Finn' });
  await messageFriend(erin, finn);
  const total = 60;
  for (let i = 1; i <= total; i += 1) await send(erin, `Note ${i} of ${total}`);
  await waitForStatus(erin, `Note ${total} of ${total}`, 'delivered');

  // Finn logs in on another device: no cache, the newest page first.
  const laptop = await person(browser, { name: 'Finn' });
  await laptop.page.goto('/login');
  await laptop.page.getByLabel('Username').fill(finn.username);
  await laptop.page.getByLabel('Password').fill(finn.password);
  await laptop.page.getByRole('button', { name: 'Log in' }).click();
  await laptop.page.locator('.chat-item', { hasText: 'Erin' }).click();
  await message(laptop.page, `Note ${total} of ${total}`).waitFor();
  assert.equal(await message(laptop.page, `Note 1 of ${total}`).count(), 0, 'only the newest page at first');
  // Scrolling to the top loads the rest, up to the start of the conversation.
  const scroller = laptop.page.getByRole('log', { name: 'Messages' });
  await scroller.evaluate((el) => {
    el.scrollTop = 0;
  });
  await message(laptop.page, `Note 1 of ${total}`).waitFor();
  await laptop.page.getByText('This is the start of your conversation.').waitFor();
  assert.equal(await laptop.page.locator('.message-list .msg').count(), total);

  for (const user of [erin, finn, laptop]) {
    assert.deepEqual(user.errors, []);
    await user.context.close();
  }
});

test('profile: name, bio, avatar, and an email confirmed with a code', async () => {
  const gina = await person(browser, { name: 'Gina' });
  await register(gina);
  const { page } = gina;
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Profile', exact: true }).click();
  await page.getByLabel('Display name').fill('Gina G.');
  await page.getByLabel('Bio').fill('Climber, coffee, chess.');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByRole('heading', { name: 'Gina G.' }).waitFor();

  // A file that is not an image: the server's problem is shown.
  await page.locator('#avatar-file').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not a picture') });
  await page.locator('.toast.error').waitFor();
  // A real picture.
  await page.locator('#avatar-file').setInputFiles(new URL('../../app/assets/icons/icon-192.png', import.meta.url).pathname);
  await page.locator('.identity .avatar img').waitFor();

  const email = `${gina.username}@example.com`;
  const card = page.locator('form[data-channel="email"]');
  await card.getByLabel('Email').fill(email);
  await card.getByRole('button', { name: 'Send code' }).click();
  await card.getByText(`We sent a 6-digit code to ${email}.`).waitFor();
  await card.getByLabel('Code').fill('000000');
  await card.getByRole('button', { name: 'Confirm' }).click();
  await card.getByRole('alert').filter({ hasText: /wrong code/i }).waitFor();
  await card.getByLabel('Code').fill(await codeSentTo(email));
  await card.getByRole('button', { name: 'Confirm' }).click();
  await page.locator('form[data-channel="email"]', { hasText: email }).getByRole('button', { name: 'Remove' }).waitFor();
  await page.locator('.profile .screen-body').evaluate((el) => el.scrollTo(0, 0));
  await snap(page, 'profile');

  await page.getByRole('button', { name: 'Log out', exact: true }).click();
  await page.waitForURL(/\/login$/);
  assert.deepEqual(gina.errors, []);
  await gina.context.close();
});

/** The code in the node's outbox for `address` (the e2e node has no mail server). */
async function codeSentTo(address) {
  const dir = join(process.env.PARLEY_DATA_DIR ?? '', 'outbox');
  for (const file of (await readdir(dir)).sort().reverse()) {
    const text = await readFile(join(dir, file), 'utf8');
    if (text.startsWith(`To: ${address}\n`)) return /\b(\d{6})\b/.exec(text)[1];
  }
  throw new Error(`no code for ${address} in ${dir} (${BASE})`);
}

test('the friends screen: decline, cancel, remove, block and unblock', async () => {
  const hana = await person(browser, { name: 'Hana' });
  const ivan = await person(browser, { name: 'Ivan' });
  await register(hana);
  await register(ivan);
  const row = (user, section, other) => user.page.locator(`section[aria-label="${section}"] .person`, { hasText: '@' + other.username });

  // Hana asks, then cancels.
  await openFriends(hana);
  await hana.page.getByLabel('Find people').fill(ivan.username);
  await hana.page.locator('.search-results .person', { hasText: '@' + ivan.username }).getByRole('button', { name: 'Add friend' }).click();
  await row(hana, 'Sent requests', ivan).getByRole('button', { name: 'Cancel request' }).click();
  await row(hana, 'Sent requests', ivan).waitFor({ state: 'detached' });

  // Ivan asks, Hana declines.
  await openFriends(ivan);
  await ivan.page.getByLabel('Find people').fill(hana.username);
  await ivan.page.locator('.search-results .person', { hasText: '@' + hana.username }).getByRole('button', { name: 'Add friend' }).click();
  await row(hana, 'Friend requests', ivan).getByRole('button', { name: 'Decline' }).click();
  await row(ivan, 'Sent requests', hana).waitFor({ state: 'detached' });

  // Friends, then removed; then blocked and unblocked.
  await befriend(hana, ivan);
  await row(hana, 'Friends', ivan).getByRole('button', { name: `More actions for Ivan` }).click();
  await hana.page.getByRole('dialog').getByRole('button', { name: 'Remove friend' }).click();
  await row(ivan, 'Friends', hana).waitFor({ state: 'detached' });
  await hana.page.getByLabel('Find people').fill(ivan.username);
  await hana.page.locator('.search-results .person', { hasText: '@' + ivan.username }).getByRole('button', { name: 'More actions for Ivan' }).click();
  await hana.page.getByRole('dialog').getByRole('button', { name: 'Block Ivan' }).click();
  await row(hana, 'Blocked', ivan).getByRole('button', { name: 'Unblock' }).click();
  await row(hana, 'Blocked', ivan).waitFor({ state: 'detached' });

  assert.deepEqual([...hana.errors, ...ivan.errors], []);
  await hana.context.close();
  await ivan.context.close();
});
