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
});
