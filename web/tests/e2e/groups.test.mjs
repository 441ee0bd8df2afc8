// Group chats and presence: three people (one on a 360 px phone) make a
// group, talk in it, see who has read what, hand out roles, rename it,
// give it a photo, remove and re-add a member, moderate, hand over
// ownership and leave, all seen live; and two friends see each other
// online, busy with a status text, away while a tab is hidden, and
// offline with a last-seen time.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PHONE, befriend, friends, launch, message, openFriends, person, register, send, snap, waitForStatus } from './helpers.mjs';

/** The narrowest phone the client is made for. */
const SMALL_PHONE = { ...PHONE, viewport: { width: 360, height: 780 } };

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** The system line (a group event) whose text matches. */
function systemLine(page, text) {
  return page.locator('.message-list .msg-system', { hasText: text });
}

/** Opens the open group chat's info panel. */
async function openInfo(user) {
  await user.page.getByRole('link', { name: 'Group info' }).click();
  await user.page.waitForURL(/\/chats\/\d+\/info$/);
  const panel = user.page.getByRole('complementary', { name: 'Group info' });
  await panel.waitFor();
  return panel;
}

/** A member's row in the info panel. */
function memberRow(panel, name) {
  return panel.locator('.member', { has: panel.page().locator('.person-name', { hasText: name }) });
}

test('a group: created among friends, messages, roles, a live rename, a removal and a handover', async () => {
  const alice = await person(browser, { name: 'Alice' });
  const bob = await person(browser, { name: 'Bob' });
  const carol = await person(browser, { name: 'Carol', device: SMALL_PHONE });
  await register(alice);
  await register(bob);
  await register(carol);
  await befriend(alice, bob);
  await befriend(alice, carol);

  // Alice makes the group from the chat list.
  await alice.page.getByRole('link', { name: 'New group' }).click();
  await alice.page.getByLabel('Group name').fill('Hiking club');
  const picker = alice.page.getByRole('list', { name: 'Friends' });
  await picker.getByText('Bob', { exact: true }).waitFor();
  await snap(alice.page, 'group-new');
  // Empty name: said so, nothing made.
  await alice.page.getByLabel('Group name').fill('   ');
  await alice.page.getByRole('button', { name: 'Create group' }).click();
  await alice.page.getByRole('alert').filter({ hasText: 'Give the group a name.' }).waitFor();
  await alice.page.getByLabel('Group name').fill('Hiking club');
  await picker.getByText('Bob', { exact: true }).click();
  await picker.getByText('Carol', { exact: true }).click();
  await alice.page.getByText('2 selected').waitFor();
  await alice.page.getByRole('button', { name: 'Create group' }).click();
  await alice.page.waitForURL(/\/chats\/\d+$/);
  await systemLine(alice.page, 'You created the group “Hiking club”').waitFor();
  await alice.page.getByRole('heading', { name: 'Hiking club' }).waitFor();
  await alice.page.locator('.screen-header .subtitle', { hasText: '3 members' }).waitFor();

  // Bob and Carol get it live, with the "created" line.
  const bobItem = bob.page.locator('.chat-item', { hasText: 'Hiking club' });
  await bobItem.waitFor();
  await bobItem.click();
  await systemLine(bob.page, 'Alice created the group “Hiking club”').waitFor();
  await carol.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Chats', exact: true }).tap();
  const carolItem = carol.page.locator('.chat-item', { hasText: 'Hiking club' });
  await carolItem.waitFor();

  // Messages flow both ways, others' under their names; Alice's message is seen by both.
  await send(alice, 'Who is in for Saturday?');
  await message(bob.page, 'Who is in for Saturday?').locator('.msg-sender', { hasText: 'Alice' }).waitFor();
  await send(bob, 'Me! I will bring snacks.');
  await message(alice.page, 'Me! I will bring snacks.').locator('.msg-sender', { hasText: 'Bob' }).waitFor();
  await carolItem.tap();
  await message(carol.page, 'Me! I will bring snacks.').waitFor();
  await systemLine(carol.page, 'Alice created the group').waitFor();
  await send(carol, 'Count me in');
  await message(alice.page, 'Count me in').waitFor();
  await waitForStatus(alice, 'Who is in for Saturday?', 'seen');
  await message(alice.page, 'Who is in for Saturday?').getByRole('button', { name: /Seen by 2/ }).click();
  const info = alice.page.getByRole('dialog', { name: 'Message info' });
  await info.getByRole('region', { name: 'Seen by' }).getByText('Carol').waitFor();
  await info.getByRole('region', { name: 'Seen by' }).getByText('Bob').waitFor();
  await info.getByRole('button', { name: 'Close' }).click();

  // Alice makes Bob an admin from the info panel; Bob sees it.
  const panel = await openInfo(alice);
  await memberRow(panel, 'Alice').locator('.role-badge', { hasText: 'Owner' }).waitFor();
  assert.equal(await panel.locator('.member').count(), 3);
  await snap(alice.page, 'group-info');
  await memberRow(panel, 'Bob').getByRole('button', { name: 'More actions for Bob' }).click();
  await alice.page.getByRole('dialog').getByRole('button', { name: 'Make admin' }).click();
  await memberRow(panel, 'Bob').locator('.role-badge', { hasText: 'Admin' }).waitFor();
  await systemLine(bob.page, 'Alice made you an admin').waitFor();
  // A plain member has no admin controls.
  const carolPanel = await openInfo(carol);
  await memberRow(carolPanel, 'Bob').locator('.role-badge', { hasText: 'Admin' }).waitFor();
  assert.equal(await carolPanel.getByRole('button', { name: 'Rename' }).count(), 0);
  assert.equal(await carolPanel.getByRole('button', { name: 'Add members' }).count(), 0);
  await snap(carol.page, 'mobile-group-info');
  await carolPanel.getByRole('link', { name: 'Close group info' }).tap();

  // Bob, now an admin, renames the group; everyone sees the new name live.
  const bobPanel = await openInfo(bob);
  await bobPanel.getByRole('button', { name: 'Rename' }).click();
  await bobPanel.getByLabel('Group name').fill('Weekend hikers');
  await bobPanel.getByRole('button', { name: 'Save' }).click();
  await bobPanel.getByRole('heading', { name: 'Weekend hikers' }).waitFor();
  await alice.page.getByRole('heading', { name: 'Weekend hikers', level: 1 }).waitFor();
  await panel.getByRole('heading', { name: 'Weekend hikers' }).waitFor();
  await systemLine(alice.page, 'Bob renamed the group to “Weekend hikers”').waitFor();
  await carol.page.getByRole('heading', { name: 'Weekend hikers', level: 1 }).waitFor();
  await alice.page.locator('.chat-item', { hasText: 'Weekend hikers' }).waitFor();
  // An admin may not remove the owner: no such action on Alice's row.
  assert.equal(await memberRow(bobPanel, 'Alice').getByRole('button').count(), 0);
  // Bob gives the group a picture (the raw image bytes); everyone's list shows it.
  await bobPanel.locator('input[type="file"]').setInputFiles(new URL('../../app/assets/icons/icon-192.png', import.meta.url).pathname);
  await systemLine(alice.page, 'Bob changed the group photo').waitFor();
  await alice.page.locator('.chat-item', { hasText: 'Weekend hikers' }).locator('.avatar img').waitFor();
  await bobPanel.getByRole('button', { name: 'Remove photo' }).waitFor();
  await snap(carol.page, 'mobile-group');

  // Alice removes Carol; Carol sees it at once and can no longer write.
  await memberRow(panel, 'Carol').getByRole('button', { name: 'More actions for Carol' }).click();
  await alice.page.getByRole('dialog').getByRole('button', { name: 'Remove from group' }).click();
  await alice.page.getByRole('dialog', { name: 'Remove Carol?' }).getByRole('button', { name: 'Remove' }).click();
  await memberRow(panel, 'Carol').waitFor({ state: 'detached' });
  await systemLine(alice.page, 'You removed Carol').waitFor();
  await systemLine(carol.page, 'Alice removed you').waitFor();
  await carol.page.getByText('Alice removed you from this group.').waitFor();
  assert.equal(await carol.page.getByRole('textbox', { name: 'Message' }).isVisible(), false);
  await systemLine(bob.page, 'Alice removed Carol').waitFor();
  await bob.page.locator('.screen-header .subtitle', { hasText: '2 members' }).waitFor();
  await snap(alice.page, 'group-chat');

  // Alice adds Carol back from her friends; Carol can write again.
  await panel.getByRole('button', { name: 'Add members' }).click();
  const adding = alice.page.getByRole('dialog', { name: 'Add members' });
  await adding.getByText('Carol', { exact: true }).click();
  await adding.getByRole('button', { name: 'Add 1' }).click();
  await adding.waitFor({ state: 'detached' });
  await memberRow(panel, 'Carol').waitFor();
  await systemLine(carol.page, 'Alice added you').waitFor();
  await carol.page.getByRole('textbox', { name: 'Message' }).waitFor();
  await send(carol, 'Thanks for having me back');
  await message(bob.page, 'Thanks for having me back').waitFor();
  // An admin deletes anyone's message for everyone.
  await message(bob.page, 'Thanks for having me back').hover();
  await message(bob.page, 'Thanks for having me back').getByRole('button', { name: 'Message actions' }).click();
  await bob.page.getByRole('dialog').getByRole('button', { name: 'Delete for everyone' }).click();
  await message(carol.page, 'This message was deleted').waitFor();

  // The owner must hand the group over before leaving: the server's refusal is shown.
  await panel.getByRole('button', { name: 'Leave group' }).click();
  await alice.page.getByRole('dialog').getByRole('button', { name: 'Leave group' }).click();
  await panel.getByRole('alert').filter({ hasText: 'make another member the owner before leaving' }).waitFor();
  // Alice makes Bob the owner (she becomes an admin), then leaves.
  await memberRow(panel, 'Bob').getByRole('button', { name: 'More actions for Bob' }).click();
  await alice.page.getByRole('dialog').getByRole('button', { name: 'Make owner' }).click();
  await alice.page.getByRole('dialog', { name: 'Make Bob the owner?' }).getByRole('button', { name: 'Make owner' }).click();
  await memberRow(panel, 'Bob').locator('.role-badge', { hasText: 'Owner' }).waitFor();
  await memberRow(panel, 'Alice').locator('.role-badge', { hasText: 'Admin' }).waitFor();
  await systemLine(bob.page, 'Alice made you the owner').waitFor();
  await memberRow(bobPanel, 'Alice').getByRole('button', { name: 'More actions for Alice' }).waitFor();
  await panel.getByRole('button', { name: 'Leave group' }).click();
  await alice.page.getByRole('dialog').getByRole('button', { name: 'Leave group' }).click();
  await alice.page.waitForURL(/\/$/);
  await alice.page.locator('.chat-item', { hasText: 'Weekend hikers' }).waitFor({ state: 'detached' });
  await systemLine(bob.page, 'Alice left the group').waitFor();
  await memberRow(bobPanel, 'Alice').waitFor({ state: 'detached' });

  assert.deepEqual([...alice.errors, ...bob.errors, ...carol.errors], []);
  for (const user of [alice, bob, carol]) await user.context.close();
});

test('presence: online, busy with a status, away while hidden, then last seen', async () => {
  const [dana, eli] = await friends(browser, { name: 'Dana' }, { name: 'Eli' });

  // Eli sees Dana online on the Friends screen, with a dot.
  const row = eli.page.locator('section[aria-label="Friends"] .person', { hasText: '@' + dana.username });
  await row.locator('.presence.online').waitFor();
  await row.locator('.person-presence', { hasText: 'online' }).waitFor();
  await row.getByRole('button', { name: 'Message' }).click();
  await eli.page.waitForURL(/\/chats\/\d+$/);
  const subtitle = eli.page.locator('.screen-header .subtitle');
  await subtitle.filter({ hasText: /^online$/ }).waitFor();
  await eli.page.locator('.screen-header .avatar .presence.online').waitFor();
  await send(eli, 'Are you free?');

  // Eli loses the network: the app no longer claims to know that Dana is
  // online, and shows it again once it is back.
  await eli.context.setOffline(true);
  await eli.page.getByRole('status').filter({ hasText: 'Offline' }).waitFor();
  await eli.page.locator('.screen-header .avatar .presence').waitFor({ state: 'detached' });
  await subtitle.filter({ hasText: /^online$/ }).waitFor({ state: 'detached' });
  await eli.context.setOffline(false);
  await eli.page.locator('.screen-header .avatar .presence.online').waitFor();
  await subtitle.filter({ hasText: /^online$/ }).waitFor();

  // Dana chooses busy with a status text.
  await dana.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Profile', exact: true }).click();
  await dana.page.getByRole('radio', { name: /Busy/ }).check();
  await dana.page.getByLabel('Status message').fill('In a meeting');
  await dana.page.getByRole('button', { name: 'Set status' }).click();
  await dana.page.locator('.toast', { hasText: 'Status saved.' }).waitFor();
  await subtitle.filter({ hasText: 'busy · In a meeting' }).waitFor();
  await eli.page.locator('.chat-item .avatar .presence.busy').waitFor();
  await snap(dana.page, 'profile-status');
  await snap(eli.page, 'presence-busy');

  // Back to automatic; a hidden tab reports idle: away, then online again.
  await dana.page.getByRole('radio', { name: /Automatic/ }).check();
  await dana.page.getByLabel('Status message').fill('');
  await dana.page.getByRole('button', { name: 'Set status' }).click();
  await subtitle.filter({ hasText: /^online$/ }).waitFor();
  await setHidden(dana.page, true);
  await subtitle.filter({ hasText: /^away$/ }).waitFor();
  await setHidden(dana.page, false);
  await subtitle.filter({ hasText: /^online$/ }).waitFor();

  // Dana closes the app: after the grace period Eli sees when she was last there.
  await dana.page.close();
  await subtitle.filter({ hasText: /^last seen/ }).waitFor();
  assert.equal(await eli.page.locator('.screen-header .avatar .presence').count(), 0);
  await openFriends(eli);
  await row.locator('.person-presence', { hasText: 'last seen' }).waitFor();

  assert.deepEqual([...dana.errors, ...eli.errors], []);
  await dana.context.close();
  await eli.context.close();
});

/** Makes the page look hidden (or visible again) to the app, as when its tab is in the background. */
function setHidden(page, hidden) {
  return page.evaluate((value) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (value ? 'hidden' : 'visible') });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}
