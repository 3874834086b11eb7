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

// ---- customers: the balance adjustment says what it will do before it is sent ----
(() => {
  const form = document.querySelector('form#adjust');
  if (!form) return;
  const preview = form.querySelector('#adjust-preview');
  const units = form.querySelector('input[name="units"]');
  const select = form.querySelector('select[name="permission"]');
  if (!preview || !units || !select) return;
  const group = (n) => Math.abs(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const show = () => {
    const typed = units.value.trim().replace(/[,\s_\u00a0]/g, '').replace('\u2212', '-').replace(/^\+/, '');
    const option = select.options[select.selectedIndex];
    if (!/^-?\d{1,13}$/.test(typed) || !option) { preview.textContent = ''; return; }
    const n = Number(typed);
    if (n === 0) { preview.textContent = ''; return; }
    const balance = Number(option.dataset.balance || '0');
    const after = Math.max(balance + n, 0);
    preview.textContent = `${n > 0 ? 'Add' : 'Take'} ${group(n)} units ${n > 0 ? 'to' : 'from'} ${option.value} (balance ${group(balance)} → ${group(after)}).`;
  };
  units.addEventListener('input', show);
  select.addEventListener('change', show);
})();
