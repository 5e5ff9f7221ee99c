// chatbridge console: the only script (served by the bridge; the CSP allows nothing inline).
// It is an enhancement: every page works without it, times are then shown in UTC.

/**
 * Times in the browser's own zone: <time datetime="ISO"> is rendered server-side in UTC. The zone
 * is part of the text ("GMT+7", "CET"): a time copied into a ticket, or read next to a vendor's
 * own screen, must not be taken for UTC or for someone else's local time.
 */
function localTimes() {
  const parts = {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    timeZoneName: 'short',
  };
  const format = new Intl.DateTimeFormat(undefined, parts);
  // <time data-seconds> (a transcript's messages): two messages of one minute told apart.
  const withSeconds = new Intl.DateTimeFormat(undefined, { ...parts, second: '2-digit' });
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  for (const element of document.querySelectorAll('time[datetime]')) {
    const date = new Date(element.getAttribute('datetime'));
    if (Number.isNaN(date.getTime())) continue;
    element.textContent = (element.hasAttribute('data-seconds') ? withSeconds : format).format(date);
    element.title = `${date.toISOString()} (shown in ${zone})`;
    element.dataset.local = 'true';
  }
}

/** Long actions (an agent sync) show progress while the server works; confirmations first. */
function forms() {
  for (const form of document.querySelectorAll('form')) {
    form.addEventListener('submit', (event) => {
      // `{name}` in the question is the form's field of that name, so it names what is chosen
      // ("Replay every failed delivery of crm?"), not "this destination".
      const question = form.dataset.confirm?.replace(/\{(\w+)\}/g, (whole, name) => {
        const field = form.elements.namedItem(name);
        return field && 'value' in field && field.value ? field.value : whole;
      });
      if (question && !window.confirm(question)) {
        event.preventDefault();
        return;
      }
      const text = form.dataset.progress;
      if (text) {
        const section = form.closest('section') ?? document;
        const progress = section.querySelector('.progress');
        if (progress) {
          progress.hidden = false;
          const label = progress.querySelector('span');
          if (label) label.textContent = text;
        }
        for (const button of section.querySelectorAll('form[data-progress] button')) button.disabled = true;
      }
    });
  }
}

/**
 * A running agent sync's view follows the run: it asks the bridge where the run stands every
 * second and updates the sentence, the counts and the bar in place (as text). When the run is
 * over (or another one started) the page is loaded again, and the server shows the report.
 * Without this script the page reloads itself (<noscript> meta refresh) and has a Refresh link.
 */
function followProgress() {
  const view = document.querySelector('[data-poll]');
  if (!view) return;
  const bar = view.querySelector('progress[data-progress-bar]');
  const tick = async () => {
    let data;
    try {
      const response = await fetch(view.dataset.poll, {
        headers: { accept: 'application/json' },
        cache: 'no-store',
        redirect: 'error',
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      data = await response.json();
    } catch {
      // The bridge is restarting, or the session ended: try again a little later. The page's
      // Refresh link says the same.
      setTimeout(tick, 5000);
      return;
    }
    if (data.state !== 'running' || data.id !== view.dataset.run) {
      window.location.reload();
      return;
    }
    for (const element of view.querySelectorAll('[data-progress-field]')) {
      const name = element.dataset.progressField;
      const value = name === 'text' ? data.text : data.fields?.[name];
      if (typeof value === 'string' && element.textContent !== value) element.textContent = value;
    }
    if (bar && typeof data.max === 'number' && typeof data.value === 'number') {
      bar.max = Math.max(1, data.max);
      bar.value = data.value;
    }
    setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}

/** A freshly generated key is selected so it can be copied at once. */
function selectNewKey() {
  const input = document.querySelector('input[data-select]');
  if (input) {
    input.addEventListener('focus', () => input.select());
    input.focus();
  }
}

document.addEventListener('DOMContentLoaded', () => {
  localTimes();
  forms();
  selectNewKey();
  followProgress();
});
