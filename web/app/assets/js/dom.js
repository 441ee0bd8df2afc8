// Small DOM helpers: build elements declaratively, without innerHTML, so
// text from the network can never become markup.

/**
 * Creates an element. `props`: attributes, plus `class`, `text`, `dataset`, `style` (an object),
 * `on` (event listeners) and DOM properties given as `.name` (e.g. `.value`).
 * Children: nodes, strings, or nested arrays; null/false are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    // Through the CSSOM: the Content-Security-Policy refuses style attributes.
    else if (key === 'style') for (const [name, v] of Object.entries(value)) el.style.setProperty(name, v);
    else if (key === 'on') for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    else if (key.startsWith('.')) el[key.slice(1)] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces every child of `el`. */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/**
 * Brings `container`'s children in line with `items`, reusing the element
 * of an item whose key and version did not change (so focus, scroll and
 * animations survive updates).
 */
export function reconcile(container, items, { key, version, render }) {
  const wanted = new Set(items.map((item) => String(key(item))));
  const existing = new Map();
  for (const child of [...container.children]) {
    if (wanted.has(child.dataset.key)) existing.set(child.dataset.key, child);
    else child.remove();
  }
  let cursor = container.firstElementChild;
  for (const item of items) {
    const k = String(key(item));
    const v = String(version(item));
    let el = existing.get(k);
    if (!el || el.dataset.version !== v) {
      const fresh = render(item);
      fresh.dataset.key = k;
      fresh.dataset.version = v;
      if (el) {
        if (el === cursor) cursor = fresh;
        el.replaceWith(fresh);
      }
      el = fresh;
    }
    if (el === cursor) cursor = cursor.nextElementSibling;
    else container.insertBefore(el, cursor);
  }
}

/** Moves keyboard focus to `el` without scrolling the page. */
export function focus(el) {
  el?.focus({ preventScroll: true });
}
