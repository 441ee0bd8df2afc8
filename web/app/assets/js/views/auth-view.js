// The login and registration screens.

import { h } from '../dom.js';
import { busy, field, formError } from './ui.js';

/** Renders the login (`mode: 'login'`) or registration screen into `root`. */
export function renderAuth(root, { mode, auth, notice = null }) {
  const registering = mode === 'register';
  const error = formError();
  const submit = h('button', { type: 'submit', class: 'btn primary wide' }, registering ? 'Create account' : 'Log in');
  const form = h(
    'form',
    { class: 'auth-form', novalidate: true, 'aria-labelledby': 'auth-title' },
    h('h1', { id: 'auth-title' }, registering ? 'Create your account' : 'Welcome back'),
    h('p', { class: 'muted' }, registering ? 'Pick a username your friends can find you by.' : 'Log in to pick up your conversations.'),
    notice ? h('p', { class: 'notice', role: 'status' }, notice) : null,
    registering
      ? field({ label: 'Display name', name: 'display_name', autocomplete: 'name', required: true, maxlength: 64 })
      : null,
    field({
      label: 'Username',
      name: 'username',
      autocomplete: 'username',
      autocapitalize: 'none',
      spellcheck: 'false',
      required: true,
      minlength: registering ? 3 : null,
      maxlength: 32,
      hint: registering ? '3–32 characters: a–z, 0–9, _ . -' : null,
    }),
    field({
      label: 'Password',
      name: 'password',
      type: 'password',
      autocomplete: registering ? 'new-password' : 'current-password',
      required: true,
      minlength: registering ? 10 : null,
      hint: registering ? 'At least 10 characters.' : null,
    }),
    error.el,
    submit,
    h(
      'p',
      { class: 'switch' },
      registering ? 'Already have an account? ' : 'New to Parley? ',
      h('a', { href: registering ? '/login' : '/register', 'data-link': '' }, registering ? 'Log in' : 'Create an account'),
    ),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    error.clear();
    const data = new FormData(form);
    const typed = String(data.get('username') ?? '').trim();
    const username = registering ? typed.toLowerCase() : typed;
    const password = String(data.get('password') ?? '');
    const displayName = String(data.get('display_name') ?? '').trim();
    const problem = validate({ registering, username, password, displayName });
    if (problem) {
      error.show(problem);
      return;
    }
    busy(
      submit,
      () => (registering ? auth.register({ username, password, displayName }) : auth.login({ username, password })),
      (e) => error.show(e),
    );
  });
  root.replaceChildren(
    h(
      'main',
      { class: 'auth', id: 'main' },
      h('div', { class: 'auth-brand' }, h('img', { src: '/assets/icons/icon.svg', alt: '', width: 56, height: 56 }), h('span', {}, 'Parley')),
      form,
    ),
  );
  form.querySelector('input')?.focus();
}

function validate({ registering, username, password, displayName }) {
  if (registering && !displayName) return 'Enter a display name.';
  if (!username) return 'Enter your username.';
  if (registering && !/^[a-z0-9_.-]{3,32}$/.test(username)) {
    return 'Usernames are 3–32 characters of lowercase a–z, 0–9, _ . and -.';
  }
  if (!password) return 'Enter your password.';
  if (registering && [...password].length < 10) return 'Passwords need at least 10 characters.';
  return null;
}
