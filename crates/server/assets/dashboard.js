// Tollgate dashboard: progressive enhancement only (every page works without it).
// Served as a file so the Content-Security-Policy can forbid inline script.
'use strict';
document.addEventListener('click', async (ev) => {
  const button = ev.target.closest('button[data-copy]');
  if (!button) return;
  const field = document.querySelector(button.getAttribute('data-copy'));
  if (!field) return;
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(field.value);
  } catch {
    // No clipboard permission (plain http, old browser): select it for a manual copy.
    field.focus();
    field.select();
    try { document.execCommand('copy'); } catch { /* selected is enough */ }
  }
  button.textContent = 'Copied';
  setTimeout(() => { button.textContent = label; }, 1500);
});
