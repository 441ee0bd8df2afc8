// The service worker. The server prepends two constants to this file:
// BUILD (a hash of every file of the app) and SHELL (the URLs of the app
// shell). A new build therefore installs a new worker, which precaches the
// new shell and drops the old one.
//
// Strategy: the shell is served cache-first (the app opens offline and
// instantly; cached chats come from localStorage); every page path gets
// the cached index.html; avatars (immutable URLs) are cached as they load;
// the API and the WebSocket always go to the network.

/* global BUILD, SHELL */
const SHELL_CACHE = `parley-shell-${BUILD}`;
const MEDIA_CACHE = 'parley-media-v1';
const MEDIA_PREFIX = '/api/v1/media/';
/** Avatars kept in the media cache; the oldest go first. */
const MEDIA_LIMIT = 200;

self.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(SHELL_CACHE);
      await cache.addAll(SHELL.map((url) => new Request(url, { cache: 'reload' })));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith('parley-shell-') && name !== SHELL_CACHE) await caches.delete(name);
      }
      await self.clients.claim();
    })(),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.startsWith(MEDIA_PREFIX)) {
    event.respondWith(media(request));
  } else if (url.pathname.startsWith('/api/')) {
    // The API is never cached here.
  } else if (request.mode === 'navigate') {
    event.respondWith(shell('/', request));
  } else {
    event.respondWith(shell(url.pathname, request));
  }
});

async function shell(path, request) {
  const cached = await caches.match(path, { cacheName: SHELL_CACHE });
  return cached ?? fetch(request);
}

async function media(request) {
  const cache = await caches.open(MEDIA_CACHE);
  const cached = await cache.match(request);
  if (cached) return cached;
  const response = await fetch(request);
  if (response.ok) {
    await cache.put(request, response.clone());
    const keys = await cache.keys();
    for (const stale of keys.slice(0, Math.max(0, keys.length - MEDIA_LIMIT))) await cache.delete(stale);
  }
  return response;
}
