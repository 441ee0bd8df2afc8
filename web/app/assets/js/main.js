// Boot: wires authentication, the store, the protocol session and the
// views to the router, and registers the service worker.

import { Api } from './api.js';
import { Auth } from './auth.js';
import { Router } from './router.js';
import { Session } from './session.js';
import { Store } from './store.js';
import { renderAuth } from './views/auth-view.js';
import { Shell } from './views/shell.js';
import { toastError } from './views/ui.js';

const root = document.getElementById('app');
const auth = new Auth();
const api = new Api(auth);
/** The signed-in app: `{ userId, store, session, shell }`, or null. */
let signedIn = null;
let notice = null;

const router = new Router(show);

function show(route) {
  root.removeAttribute('aria-busy');
  const userId = auth.userId;
  if (!userId) {
    stop();
    if (route.name !== 'login' && route.name !== 'register') return router.go('/login', { replace: true });
    renderAuth(root, { mode: route.name, auth, notice });
    notice = null;
    document.title = route.name === 'register' ? 'Create account · Parley' : 'Log in · Parley';
    return undefined;
  }
  if (route.name === 'login' || route.name === 'register') return router.go('/', { replace: true });
  start(userId);
  signedIn.shell.show(route);
  document.title = 'Parley';
  return undefined;
}

function start(userId) {
  if (signedIn?.userId === userId) return;
  stop();
  const store = Store.load(userId);
  const session = new Session({ store, api, auth });
  session.addEventListener('error', (event) => {
    if (event.detail?.code !== 'network') toastError(event.detail);
  });
  const shell = new Shell({ root, store, session, api, auth, router });
  signedIn = { userId, store, session, shell };
  session.start();
  api.me().then((profile) => store.setProfile(profile), () => {});
}

function stop() {
  if (!signedIn) return;
  signedIn.session.stop();
  signedIn.shell.destroy();
  signedIn = null;
}

auth.addEventListener('login', () => router.go('/', { replace: true }));
/** What the login screen says after a login ended other than by this tab's Log out. */
const ENDED = {
  revoked: 'You were logged out from another device.',
  expired: 'Your session has ended: you were logged out from another device, or it expired. Please log in again.',
  reused: 'Your session was ended for safety. Please log in again.',
  elsewhere: 'You logged out in another tab.',
};

// Every way a login ends comes here (`Auth.end`): Log out, logged out from
// another device (close code 4003), a refused refresh, another tab.
auth.addEventListener('logout', (event) => {
  const { reason, userId } = event.detail;
  // Cached chats are private: they leave with the session, and nothing
  // still in flight may write them back.
  signedIn?.store.close();
  stop();
  Store.forget(userId);
  notice = ENDED[reason] ?? null;
  router.go('/login', { replace: true });
});

// Keep the offline snapshot current when the page goes away.
addEventListener('pagehide', () => signedIn?.store.save());
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'hidden') signedIn?.store.save();
});
router.start();

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/sw.js').catch((error) => console.warn('service worker not registered', error));
}
