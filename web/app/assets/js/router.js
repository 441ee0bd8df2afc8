// Client-side routes on the History API. The server answers every page
// path with index.html, so each screen has a real, reloadable URL.

const ROUTES = [
  ['login', /^\/login$/],
  ['register', /^\/register$/],
  ['chats', /^\/$/],
  ['chat', /^\/chats\/(?<chatId>[0-9]{1,19})$/],
  ['chat-info', /^\/chats\/(?<chatId>[0-9]{1,19})\/info$/],
  ['group-new', /^\/groups\/new$/],
  ['friends', /^\/friends$/],
  ['profile', /^\/profile$/],
];

/** Parses a path into `{ name, params }`; unknown paths are the chat list. */
export function parse(path) {
  for (const [name, pattern] of ROUTES) {
    const match = pattern.exec(path);
    if (match) return { name, params: { ...match.groups }, path };
  }
  return { name: 'chats', params: {}, path: '/' };
}

/** Calls `onRoute(route)` on start, on `go()` and on back/forward. */
export class Router {
  constructor(onRoute) {
    this.onRoute = onRoute;
    window.addEventListener('popstate', () => this.#emit());
    // Links marked `data-link` navigate without a page load.
    document.addEventListener('click', (event) => {
      const link = event.target.closest?.('a[data-link]');
      if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
      event.preventDefault();
      this.go(link.getAttribute('href'));
    });
  }

  get current() {
    return parse(location.pathname);
  }

  start() {
    this.#emit();
  }

  go(path, { replace = false } = {}) {
    if (path !== location.pathname) history[replace ? 'replaceState' : 'pushState'](null, '', path);
    this.#emit();
  }

  #emit() {
    this.onRoute(this.current);
  }
}
