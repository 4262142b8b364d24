// Sign-in: posts the pasted token to /api/v1/session, which sets the session cookie
// (HttpOnly, SameSite=Strict) and the CSRF cookie the other pages echo; then goes back
// to the page that sent us here (?next=, same-origin paths only).
'use strict';

(() => {
  const form = document.getElementById('signin-form');
  const result = document.getElementById('signin-result');
  const next = (() => {
    const n = new URLSearchParams(location.search).get('next') || '/';
    return n.startsWith('/') && !n.startsWith('//') ? n : '/';
  })();

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = String(new FormData(form).get('token') || '').trim();
    result.textContent = 'Signing in…';
    try {
      const res = await fetch('/api/v1/session', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ token }),
        cache: 'no-store',
      });
      const answer = await res.json().catch(() => ({}));
      if (!res.ok) {
        result.textContent = `Sign-in failed: ${answer.error || `HTTP ${res.status}`}`;
        return;
      }
      form.reset();
      result.textContent = `Signed in as ${answer.role}${answer.customer ? ` of ${answer.customer}` : ''}${answer.technician ? ` ${answer.technician}` : ''}.`;
      location.assign(next);
    } catch (_) {
      result.textContent = 'Sign-in failed: the server did not answer.';
    }
  });

  document.getElementById('signout').addEventListener('click', async () => {
    await fetch('/api/v1/session', { method: 'DELETE' }).catch(() => {});
    result.textContent = 'Signed out.';
  });
})();
