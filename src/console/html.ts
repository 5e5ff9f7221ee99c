/**
 * HTML building for the console. Every value a vendor, a CRM or a person typed is hostile until
 * escaped, so the only way to produce markup is the `html` tag: interpolated values are escaped
 * unless they are `SafeHtml` built by this module. Links go through `safeHref`, which lets only
 * absolute http(s) URLs through (no `javascript:`, `data:` or relative tricks).
 */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
  '`': '&#96;',
};

export function escapeHtml(value: unknown): string {
  return String(value ?? '').replace(/[&<>"'`]/g, (char) => ESCAPES[char]!);
}

type Interpolated = SafeHtml | string | number | boolean | null | undefined | readonly Interpolated[];

function render(value: Interpolated): string {
  if (value === null || value === undefined || value === false) return '';
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map(render).join('');
  return escapeHtml(value);
}

export function html(strings: TemplateStringsArray, ...values: Interpolated[]): SafeHtml {
  let out = strings[0]!;
  values.forEach((value, index) => {
    out += render(value) + strings[index + 1]!;
  });
  return new SafeHtml(out);
}

/** An absolute http(s) URL, or undefined: anything else must never become an href. */
export function safeHref(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const trimmed = value.trim();
  if (!/^https?:\/\//i.test(trimmed) || !URL.canParse(trimmed)) return undefined;
  const url = new URL(trimmed);
  return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : undefined;
}

/** A link when the value is a safe http(s) URL, plain escaped text otherwise. */
export function linkOrText(value: unknown, text?: string): SafeHtml {
  const href = safeHref(value);
  const label = text ?? String(value ?? '');
  return href ? html`<a href="${href}" rel="noopener noreferrer nofollow">${label}</a>` : html`${label}`;
}

/**
 * A time the browser rewrites into its own zone (console.js); the UTC text is the fallback.
 * `seconds`: the browser keeps the seconds too (a transcript's messages, often several a minute).
 */
export function time(iso: string | null | undefined, options: { seconds?: boolean } = {}): SafeHtml {
  if (!iso) return html`<span class="muted">—</span>`;
  return html`<time datetime="${iso}"${options.seconds ? html` data-seconds` : ''}>${iso.replace('T', ' ').replace(/\.\d+Z$|Z$/, ' UTC')}</time>`;
}

/** Build a query string from defined values only. */
export function query(params: Record<string, string | undefined>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value) search.set(name, value);
  const text = search.toString();
  return text ? `?${text}` : '';
}
