import { MANUAL_MERGE_KIND } from '../contacts/merge.js';
import { cleanDisplayText } from '../contacts/normalize.js';
import type { ManyContact } from '../contacts/service.js';
import {
  type Conflict,
  type ConflictState,
  type Contact,
  type TimelineEntry,
  timelineEntryTypes,
  transcriptOf,
} from '../contacts/types.js';
import type { BreakerOpen, DeliveryDetail, DeliverySummary } from '../delivery/index.js';
import type { JournalEntry } from '../intake/journal.js';
import { html, linkOrText, query, type SafeHtml, time } from './html.js';

/**
 * The console's pages, server-rendered. Everything interpolated goes through `html` (escaped);
 * nothing here writes an inline script or style (the CSP forbids both).
 */
export interface PageOptions {
  title: string;
  /** The signed-in session's CSRF token; absent on the sign-in page and on agent links. */
  csrf?: string;
  /** Show the main navigation (not on agent links or the sign-in page). */
  nav?: boolean;
  current?: string;
  /** Text, or markup built with `html` (escaped) when the notice carries a link. */
  notice?: string | SafeHtml;
  error?: string;
  /**
   * Reload the page every this many seconds when the browser runs no script (a progress view);
   * with script, console.js polls instead and the meta element (in <noscript>) does nothing.
   */
  refreshSeconds?: number;
}

const NAV: [string, string][] = [
  ['/console/contacts', 'Contacts'],
  ['/console/conflicts', 'Conflicts'],
  ['/console/deliveries', 'Deliveries'],
  ['/console/journal', 'Journal'],
  ['/console/channels', 'Channels'],
  ['/console/status', 'Status'],
];

export function csrfField(csrf: string | undefined): SafeHtml {
  return html`<input type="hidden" name="_csrf" value="${csrf ?? ''}">`;
}

export function layout(options: PageOptions, body: SafeHtml): string {
  const nav = options.nav
    ? html`<header class="top">
  <a class="brand" href="/console/contacts">chatbridge</a>
  <nav aria-label="Main"><ul>${NAV.map(
    ([href, label]) =>
      html`<li><a href="${href}"${options.current === href ? html` aria-current="page"` : ''}>${label}</a></li>`,
  )}</ul></nav>
  <form method="post" action="/console/sign-out" class="sign-out">${csrfField(options.csrf)}<button type="submit">Sign out</button></form>
</header>`
    : html`<header class="top"><span class="brand">chatbridge</span></header>`;
  // The icon is inline (data:): the bridge serves no /favicon.ico, and without an icon link a
  // browser asks for one on every page and logs its 404 as an error in the developer tools.
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${options.title} · chatbridge console</title>
${
  options.refreshSeconds
    ? html`<noscript><meta http-equiv="refresh" content="${options.refreshSeconds}"></noscript>
`
    : ''
}<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
${nav}
<main id="main" tabindex="-1">
${options.notice ? html`<p class="notice" role="status">${options.notice}</p>` : ''}
${options.error ? html`<p class="error" role="alert" id="page-error">${options.error}</p>` : ''}
${body}
</main>
</body>
</html>`.value;
}

export function signInPage(options: {
  pre: string;
  next: string;
  error?: string;
  notice?: string;
  /** The admin token when it is the example's published one (config/published.ts), to say so. */
  publishedToken?: string;
}): string {
  return layout(
    {
      title: 'Sign in',
      ...(options.error ? { error: options.error } : {}),
      ...(options.notice ? { notice: options.notice } : {}),
    },
    html`<h1>Sign in</h1>
<form method="post" action="/console/sign-in" class="card narrow">
  <input type="hidden" name="_pre" value="${options.pre}">
  <input type="hidden" name="next" value="${options.next}">
  <label for="token">Admin token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required autofocus aria-describedby="${
    // Read out with the field: why the last try failed (above the heading, out of the form's
    // reading order), then where the token is.
    options.error ? 'page-error token-hint' : 'token-hint'
  }">
  <p class="hint" id="token-hint">The <code>admin.token</code> of the bridge's config (<code>CHATBRIDGE_ADMIN_TOKEN</code> in the example).${
    // The example falls back to its published token when CHATBRIDGE_ADMIN_TOKEN is not set: a
    // newcomer looking for the variable found it empty. Published in the README and the example
    // file, it tells no one anything new (and such a bridge listens on loopback only).
    options.publishedToken
      ? html` This bridge still runs with the example's published token, <code>${options.publishedToken}</code>: set your own before it leaves this machine (README, Running for real).`
      : ''
  }</p>
  <button type="submit">Sign in</button>
</form>`,
  );
}

export function errorPage(options: {
  status: number;
  message: string;
  /** What to do now: text, or markup built with `html` (a link to the sign-in or the search). */
  next: string | SafeHtml;
  csrf?: string;
  nav: boolean;
  /** What was wrong with which input (a 400): named, so the user knows what to change. */
  issues?: ReadonlyArray<{ path: string; message: string }>;
}): string {
  const issues = options.issues ?? [];
  return layout(
    { title: `Error ${options.status}`, nav: options.nav, ...(options.csrf ? { csrf: options.csrf } : {}) },
    html`<h1>Something went wrong (${options.status})</h1>
<p class="error" role="alert">${options.message}</p>
${
  issues.length === 0
    ? ''
    : html`<ul class="issues">${issues.map(
        (issue) => html`<li><code>${issue.path}</code>: ${issue.message}</li>`,
      )}</ul>`
}
<p>${options.next}</p>`,
  );
}

// --- contacts ------------------------------------------------------------------------------

/**
 * The longest search the contacts page takes (its query schema says the same). The field stops
 * there: a longer paste (a whole message) used to end on an error page about "the address",
 * without the search field.
 */
export const SEARCH_MAX_LENGTH = 200;

export function searchForm(q: string): SafeHtml {
  return html`<form method="get" action="/console/contacts" class="search" role="search">
  <label for="q">Find a contact</label>
  <div class="row">
    <input id="q" name="q" type="search" value="${q}" maxlength="${SEARCH_MAX_LENGTH}" placeholder="e-mail, phone, person id, contact id or name" autofocus>
    <button type="submit">Search</button>
  </div>
  <p class="hint">Phones in any format: +7 (912) 345-67-89, 89123456789 and 79123456789 are the same person.</p>
</form>`;
}

export function contactsPage(options: {
  csrf: string;
  q: string;
  /** Given more than this many, the first `limit` are listed and the page says more matched. */
  contacts: Contact[] | null;
  /** The search stopped before it had more than `limit` (a common name): more may match. */
  more?: boolean;
  limit: number;
  vendorName: (vendor: string) => string;
  /** A channel as the contact page names it: its name, else its id. */
  channelName: (channelId: string) => string;
}): string {
  const cut = options.contacts !== null && (options.contacts.length > options.limit || options.more === true);
  const contacts = options.contacts?.slice(0, options.limit) ?? null;
  let results: SafeHtml = html``;
  if (contacts && contacts.length === 0 && !cut) {
    results = html`<p class="empty">No contact matches “<bdi>${options.q}</bdi>”. Check the spelling, try the e-mail or the phone, or the person id your site passes to the chat widget. Contacts appear here once a chat vendor has sent a webhook about them.</p>`;
  } else if (contacts && contacts.length === 0) {
    // The name search stopped reading (a common word whose records are mostly gone) before it
    // found a contact: not "no contact", which may be untrue.
    results = html`<p class="notice" role="status">“<bdi>${options.q}</bdi>” is in too many names to search them all at once, and none of the first read is a contact now. Add more of the name, or search for something only one contact has (a full e-mail, a phone, a person id or a contact id).</p>`;
  } else if (contacts) {
    results = html`<h2>${cut ? `More than ${contacts.length} contacts` : `${contacts.length} contact${contacts.length === 1 ? '' : 's'}`}</h2>${
      cut
        ? html`<p class="notice" role="status">Only the first ${contacts.length} are listed. Add more of the name, or search for something only one contact has (a full e-mail, a phone, a person id or a contact id), to find the one you want.</p>`
        : ''
    }
<ul class="cards">${contacts.map(
      (
        contact,
      ) => html`<li class="card"><a class="title" href="/console/contacts/${encodeURIComponent(contact.id)}">${contact.name ?? 'Unnamed contact'}</a>
  <div class="muted mono">${contact.id}</div>
  <div>${searchCardValues(contact)}</div>
  <div class="muted">${contact.channels.map((channel) => `${options.vendorName(channel.vendor)} ${options.channelName(channel.channelId)}`).join(', ')} · updated ${time(contact.updatedAt)}</div>
</li>`,
    )}</ul>`;
  }
  return layout(
    { title: 'Contacts', nav: true, csrf: options.csrf, current: '/console/contacts' },
    html`<h1>Contacts</h1>${searchForm(options.q)}${results}`,
  );
}

/** E-mails and phones a search result card shows of each kind; the contact page shows them all. */
const CARD_VALUES = 2;

/**
 * The first e-mails and phones of a search result, and how many more of each there are: a card
 * that cut them silently read as if the contact had only those (support compares them with what
 * the customer says).
 */
function searchCardValues(contact: Contact): SafeHtml {
  const part = (values: string[], one: string, many: string) => {
    const more = values.length - CARD_VALUES;
    return [
      ...values.slice(0, CARD_VALUES),
      ...(more > 0 ? [`+${more} more ${more === 1 ? one : many}`] : []),
    ];
  };
  return html`${[...part(contact.emails, 'e-mail', 'e-mails'), ...part(contact.phones, 'phone', 'phones')].join(' · ')}`;
}

/** Attribute values longer than this are cut to their first CLAMP_SHOWN characters, with the rest behind a toggle. */
const CLAMP_OVER = 300;
const CLAMP_SHOWN = 200;

const GRAPHEMES = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

/**
 * A long value (a vendor's 600-character "comment" or a pasted page) made a wall of text in the
 * attributes: it shows its first CLAMP_SHOWN characters, and a <details> (no script: the CSP
 * allows none inline) opens the whole value. Counted and cut in graphemes (what a reader calls a
 * character), so neither an emoji nor a letter with its accent is split.
 */
function clamped(value: string, render: (text: string) => SafeHtml): SafeHtml {
  const points = Array.from(GRAPHEMES.segment(value), (part) => part.segment);
  if (points.length <= CLAMP_OVER) return html`<bdi>${render(value)}</bdi>`;
  return html`<details class="clamp"><summary><bdi class="preview">${points.slice(0, CLAMP_SHOWN).join('')}…</bdi> <span class="when-closed">Show all ${points.length} characters</span><span class="when-open">Show less</span></summary><bdi>${render(value)}</bdi></details>`;
}

function list(values: string[], empty: string): SafeHtml {
  if (values.length === 0) return html`<p class="muted">${empty}</p>`;
  return html`<ol class="values">${values.map(
    (value, index) => html`<li>${value}${index === 0 ? html` <span class="tag">primary</span>` : ''}</li>`,
  )}</ol>`;
}

/**
 * A finished conversation's transcript, in the one shape every adapter writes (src/contacts/types.ts).
 * Each message takes its direction from its own text (`dir="auto"`): an Arabic or Hebrew message
 * in the page's left-to-right flow put its closing "؟" or "." on the wrong end and read from the
 * wrong side.
 */
function transcript(data: Record<string, unknown>): SafeHtml {
  const messages = transcriptOf(data);
  if (messages.length === 0) return html``;
  return html`<details><summary>Transcript (${messages.length} message${messages.length === 1 ? '' : 's'})</summary>
<ol class="transcript">${messages.map(
    ({ at, author, text }) =>
      html`<li class="msg msg-${author.type}"><span class="who">${
        // As a contact's name is shown: a bidi override would turn the rest of the line around.
        cleanDisplayText(author.name || author.email || author.type) ?? author.type
      }</span> ${
        // With seconds: a question and its answer within one minute showed the same time, and
        // their order (or the wait between them) could not be read.
        at ? time(at, { seconds: true }) : ''
      }<p dir="auto">${text}</p></li>`,
  )}</ol></details>`;
}

export function timelineSection(options: {
  entries: TimelineEntry[];
  nextCursor: string | null;
  /** A filtered page that read as far as one page may before it had 25 matching entries. */
  partial?: true;
  olderHref: (cursor: string) => string;
  /** On an older page: the way back to the newest entries. */
  newestHref?: string;
  channelName: (channelId: string) => string;
  vendorName: (vendor: string) => string;
  /**
   * The filter form above the timeline: it GETs `action` (the page itself) with `channel` and
   * `type`, which the Older/Newest links carry on. A plain form: no script (the CSP allows none
   * inline).
   */
  filter: { action: string; channels: string[]; channel?: string; type?: string };
}): SafeHtml {
  const { filter } = options;
  const filtered = Boolean(filter.channel || filter.type);
  const types: string[] = [...timelineEntryTypes];
  // A type typed into the address that the list does not name stays selected, not silently "any".
  if (filter.type && !types.includes(filter.type)) types.push(filter.type);
  const form = html`<form method="get" action="${filter.action}#timeline" class="filters" aria-label="Filter the timeline">
  <div><label for="tl-channel">Channel</label><select id="tl-channel" name="channel"><option value="">any</option>${filter.channels.map(
    (id) =>
      html`<option value="${id}"${filter.channel === id ? html` selected` : ''}>${options.channelName(id)}</option>`,
  )}</select></div>
  <div><label for="tl-type">Type</label><select id="tl-type" name="type"><option value="">any</option>${types.map(
    (type) => html`<option value="${type}"${filter.type === type ? html` selected` : ''}>${type}</option>`,
  )}</select></div>
  <button type="submit">Filter</button>${filtered ? html` <a href="${filter.action}#timeline">Show all</a>` : ''}
</form>`;
  const heading = html`<h2 id="timeline">Timeline <span class="muted small">(newest first, ${
    filtered
      ? [
          filter.channel ? options.channelName(filter.channel) : 'all channels',
          filter.type ? `${filter.type} only` : undefined,
        ]
          .filter(Boolean)
          .join(', ')
      : 'all channels'
  })</span></h2>`;
  const older = options.nextCursor
    ? html`<p><a class="button" href="${options.olderHref(options.nextCursor)}">Older entries</a></p>`
    : '';
  const newest = options.newestHref ? html`<p><a href="${options.newestHref}">Newest entries</a></p>` : '';
  if (options.entries.length === 0) {
    // A filtered page can be empty and still have older entries to search (the read bound).
    const empty = options.nextCursor
      ? 'No matching entries in this stretch of the history; older entries may still match.'
      : filtered
        ? options.newestHref
          ? 'No older entries match this filter.'
          : 'No entries match this filter.'
        : options.newestHref
          ? 'No older entries.'
          : 'Nothing on the timeline yet: it fills as chats start and finish in any channel.';
    return html`${heading}
${form}
<p class="empty">${empty}${!options.nextCursor && options.newestHref ? html` <a href="${options.newestHref}">Newest entries</a>` : ''}</p>
${older}${options.nextCursor ? newest : ''}`;
  }
  return html`${heading}
${form}
<ol class="timeline">${options.entries.map(
    (entry) => html`<li class="entry">
  <div class="meta">${time(entry.at)} · <span class="tag">${options.vendorName(entry.vendor)}</span> ${
    // Entries the bridge itself writes (an unmerge) belong to no one channel: say so, no gap.
    entry.channelId ? options.channelName(entry.channelId) : 'all channels'
  } · <span class="type">${entry.type}</span></div>
  <div class="summary">${entry.summary}</div>
  ${transcript(entry.data)}
</li>`,
  )}</ol>
${options.partial ? html`<p class="muted">Fewer entries than a page holds matched in this stretch of the history; <em>Older entries</em> searches on.</p>` : ''}
${options.nextCursor ? older : html`<p class="muted">That is the beginning of this contact's history${filtered ? ' (for this filter)' : ''}.</p>`}
${newest}`;
}

/**
 * A channel's count on the contact page: its finished conversations (`conversations` counts
 * conversation.finished entries: one per chat, however often the vendor resends it). A chat that
 * has only started is none yet, and "0 conversations" read as if it had not happened: until one
 * finishes, the channel's events are counted instead, as the agent's facts do (facts.ts).
 */
function channelActivity(channel: { conversations: number; observations: number }): string {
  const plural = (count: number, noun: string) => `${count} ${noun}${count === 1 ? '' : 's'}`;
  if (channel.conversations > 0) return plural(channel.conversations, 'finished conversation');
  return `no finished conversation yet (${plural(channel.observations, 'event')})`;
}

export function contactSection(options: {
  contact: Contact;
  /** The signed-in console: unmerge forms; absent on agent links (read-only). */
  csrf?: string;
  channelName: (channelId: string) => string;
  vendorName: (vendor: string) => string;
}): SafeHtml {
  const { contact } = options;
  const groups = new Map<string, string[]>();
  for (const identity of contact.identities) {
    // A CRM identity is scoped to its destination (crm/flow.ts): one group per CRM, so ids from
    // two CRMs are not mixed up.
    const group = identity.kind.startsWith('crm')
      ? identity.channelId
        ? `CRM ${identity.channelId}`
        : 'CRM'
      : identity.channelId
        ? options.channelName(identity.channelId)
        : 'Everywhere (person, e-mail, phone)';
    const values = groups.get(group) ?? [];
    values.push(`${identity.kind}: ${identity.value}`);
    groups.set(group, values);
  }
  const attributes = Object.entries(contact.attributes);
  const crmLinks = [
    contact.crmLink,
    ...contact.identities.filter((id) => id.kind === 'crm_url').map((id) => id.value),
  ].filter((value): value is string => typeof value === 'string' && value !== '');
  return html`<h1>${contact.name ?? 'Unnamed contact'}</h1>
<p class="muted mono">${contact.id} · first seen ${time(contact.createdAt)} · updated ${time(contact.updatedAt)}</p>
<div class="grid">
<section class="card"><h2>Names</h2>${list(contact.names, 'No name given by any channel.')}</section>
<section class="card"><h2>E-mails</h2>${list(contact.emails, 'No e-mail yet.')}</section>
<section class="card"><h2>Phones</h2>${list(contact.phones, 'No phone yet.')}</section>
<section class="card"><h2>Channels</h2>${
    contact.channels.length === 0
      ? html`<p class="muted">No channel yet.</p>`
      : html`<ul>${contact.channels.map(
          (channel) =>
            html`<li><span class="tag">${options.vendorName(channel.vendor)}</span> ${options.channelName(channel.channelId)}: ${channelActivity(channel)}, last ${time(channel.lastSeen)}</li>`,
        )}</ul>`
  }</section>
<section class="card"><h2>Identities</h2>${
    groups.size === 0
      ? html`<p class="muted">None.</p>`
      : [...groups.entries()].map(
          ([group, values]) =>
            html`<h3>${group}</h3><ul class="mono small">${values.map((value) => html`<li>${value}</li>`)}</ul>`,
        )
  }</section>
<section class="card"><h2>Labels</h2>${
    contact.labels.length === 0
      ? html`<p class="muted">No labels.</p>`
      : html`<p>${contact.labels.map((label) => html`<bdi class="tag">${label}</bdi> `)}</p>`
  }</section>
<section class="card"><h2>CRM</h2>${
    crmLinks.length === 0 && !contact.responsibleAgent
      ? // Not reply.crmLink: that template only shapes JivoChat's answer, it never links a contact.
        html`<p class="muted">No CRM link yet: a CRM destination (<code>kind: amocrm</code> or <code>bitrix24</code>) links the contact to its CRM record, and so does a JivoChat chat assigned with a CRM link.</p>`
      : html`<ul>${crmLinks.map((link) => html`<li>${linkOrText(link)}</li>`)}${
          contact.responsibleAgent
            ? html`<li>Responsible agent: <bdi>${contact.responsibleAgent.name ?? contact.responsibleAgent.email ?? contact.responsibleAgent.id ?? ''}</bdi></li>`
            : ''
        }</ul>`
  }</section>
</div>
<section class="card"><h2>Attributes</h2>${
    attributes.length === 0
      ? html`<p class="muted">No attributes.</p>`
      : html`<dl class="attrs">${attributes.map(
          ([name, attribute]) =>
            // <bdi>: a bidi override in a vendor's value ends with the value instead of turning
            // the bridge's own note after it around.
            html`<dt>${attribute.label ?? name}</dt><dd>${clamped(String(attribute.value), (text) =>
              attribute.type === 'url' ? linkOrText(text) : html`${text}`,
            )} <span class="muted small">(${options.channelName(attribute.channelId)}, ${time(attribute.at)})</span></dd>`,
        )}</dl>`
  }</section>
<section class="card"><h2>Merges</h2>${
    contact.merges.length === 0
      ? html`<p class="muted">No other record is merged into this contact (past merges and unmerges are on the timeline).</p>`
      : html`<ul>${contact.merges.map(
          (merge) =>
            html`<li>${time(merge.at)}: record <span class="mono">${merge.recordId}</span> ${
              merge.via.kind === MANUAL_MERGE_KIND
                ? html`merged by hand (<bdi class="mono">${merge.via.value}</bdi>)`
                : html`joined via ${merge.via.kind} <bdi class="mono">${merge.via.value}</bdi>`
            }${
              options.csrf
                ? html` <form method="post" action="/console/contacts/${encodeURIComponent(contact.id)}/unmerge" class="inline" data-confirm="Unmerge record ${merge.recordId}? It becomes a contact of its own again and is not merged back automatically.">${csrfField(options.csrf)}<input type="hidden" name="recordId" value="${merge.recordId}"><button type="submit" class="secondary" aria-label="Unmerge record ${merge.recordId}">Unmerge</button></form>`
                : ''
            }</li>`,
        )}</ul>`
  }</section>`;
}

// --- identity conflicts ------------------------------------------------------------------------

const CONFLICT_REASONS: Record<string, string> = {
  too_large: 'together over identity.maxMergeSize records',
  unmerged_before: 'staff unmerged them before',
  renormalized: 'the same identifier after the contact re-index',
};

/** The states a conflict can be in now (src/contacts/conflicts.ts), as the page names them. */
const CONFLICT_STATES: Record<ConflictState, string> = {
  open: 'Open',
  merged: 'Merged by hand',
  resolved: 'Resolved by a later merge',
};

export function conflictsPage(options: {
  csrf: string;
  conflicts: Conflict[];
  /** The filter: conflicts in this state now, or all. */
  state: ConflictState | 'all';
  /** The page stopped looking before it had a page of them (the API's `partial`). */
  partial?: boolean;
  /**
   * Each root's contact as it is now, read when the page is made (absent: gone); a root merged
   * away maps to its survivor, with its own record's name (ContactService.getMany).
   */
  contacts: ReadonlyMap<string, ManyContact>;
  notice?: string;
  olderHref?: string;
  newestHref?: string;
}): string {
  const { contacts } = options;
  // A conflict holds its contacts' ids, not their names then: each side is named as it is now.
  // A side still a contact of its own by that contact's name; a side merged into another since
  // by its own record's name (the survivor's name on both rows read as one name twice and told
  // the sides apart by nothing), saying which contact it is part of now.
  const nameOf = (root: string): string => {
    const found = contacts.get(root);
    const name = found && (found.contact.id === root ? found.contact.name : found.recordName);
    return name ?? 'Unnamed contact';
  };
  /** A contact named for an attribute (a button's label, a confirmation): name, then id. */
  const labelOf = (root: string) => `${nameOf(root)} (${root})`;
  const named = (id: string, name: string) =>
    html`<a href="/console/contacts/${encodeURIComponent(id)}"><bdi>${name}</bdi></a> <span class="mono small">${id}</span>`;
  const contactLink = (root: string, item: Conflict) => {
    const found = contacts.get(root);
    if (!found) return html`<span class="mono">${root}</span> <span class="muted">(gone)</span>`;
    const { contact } = found;
    if (contact.id === root) return named(root, nameOf(root));
    const survivorListed = item.roots.includes(contact.id);
    return html`${named(root, nameOf(root))} <span class="muted small">(now part of ${
      survivorListed ? contact.id : html`<bdi>${contact.name ?? 'Unnamed contact'}</bdi> ${contact.id}`
    })</span>`;
  };
  /** The contact a decided conflict's contacts are now (one of them holds it). */
  const survivorOf = (item: Conflict): Contact | undefined =>
    item.roots.map((root) => contacts.get(root)?.contact).find((contact) => contact?.id === item.mergedInto);
  // An open conflict: a Merge button for each contact after the first that is not one with it yet.
  const mergeForms = (item: Conflict) => {
    if (item.state !== 'open') {
      const survivor = survivorOf(item);
      return html`<p class="muted small">${
        item.state === 'merged' ? 'Staff merged them by hand' : 'A later merge made them one contact'
      }${
        item.mergedInto
          ? html`: now ${
              survivor
                ? named(survivor.id, survivor.name ?? 'Unnamed contact')
                : html`<a href="/console/contacts/${encodeURIComponent(item.mergedInto)}" class="mono">${item.mergedInto}</a>`
            }`
          : ''
      }. Nothing to decide.</p>`;
    }
    const first = item.roots[0];
    const firstNow = first === undefined ? undefined : contacts.get(first)?.contact.id;
    if (first === undefined || firstNow === undefined) return '';
    const open = item.roots.slice(1).filter((root) => {
      const now = contacts.get(root)?.contact.id;
      return now !== undefined && now !== firstNow;
    });
    if (open.length === 0 && item.roots.length > 1)
      return html`<p class="muted small">Already one contact, or one of them is gone.</p>`;
    return html`${open.map(
      (root) =>
        html`<form method="post" action="/console/conflicts/merge" class="inline" data-confirm="Merge ${labelOf(root)} with ${labelOf(first)}? They become one contact (the older one's id stays); Unmerge on the contact undoes it.">${csrfField(options.csrf)}<input type="hidden" name="id" value="${first}"><input type="hidden" name="with" value="${root}"><button type="submit" aria-label="Merge ${labelOf(root)} with ${labelOf(first)}">Merge</button></form>`,
    )}`;
  };
  return layout(
    {
      title: 'Identity conflicts',
      nav: true,
      csrf: options.csrf,
      current: '/console/conflicts',
      ...(options.notice ? { notice: options.notice } : {}),
    },
    html`<h1>Identity conflicts</h1>
<p class="muted">Contacts one identifier names but that were not merged: the size cap or an earlier unmerge refused it, or the contact re-index found the identifier held by another contact. Merge them here if they are one person; a later chat carrying both identifiers would merge them only when no guard rail refuses. The list keeps every conflict; its state is what became of it since: open (still apart), merged by hand, or resolved by a later merge (an unmerge makes it open again).</p>
<form method="get" action="/console/conflicts" class="filters">
  <div><label for="conflict-state">State</label><select id="conflict-state" name="state">${(
    ['open', 'merged', 'resolved', 'all'] as const
  ).map(
    (state) =>
      html`<option value="${state}"${options.state === state ? html` selected` : ''}>${state === 'all' ? 'All' : CONFLICT_STATES[state]}</option>`,
  )}</select></div>
  <button type="submit">Filter</button>
</form>
${options.partial ? html`<p class="muted">${options.conflicts.length === 0 ? html`No ${stateWords(options.state)}conflicts in this stretch of the list` : html`Fewer ${stateWords(options.state)}conflicts than a page holds in this stretch of the list`} (a page looks at up to 1,000); <em>Older conflicts</em> looks further.</p>` : ''}
${
  options.conflicts.length === 0
    ? options.partial
      ? ''
      : options.newestHref
        ? html`<p class="empty">No older ${stateWords(options.state)}conflicts. <a href="${options.newestHref}">Newest conflicts</a></p>`
        : html`<p class="empty">${options.state === 'open' ? 'No open identity conflicts: nothing waits for a decision. Choose All to see the decided ones.' : options.state === 'all' ? 'No identity conflicts.' : html`No ${stateWords(options.state)}identity conflicts.`}</p>`
    : html`<ol class="timeline">${options.conflicts.map(
        (
          item,
        ) => html`<li class="entry"><div class="meta"><span class="state state-${item.state}">${CONFLICT_STATES[item.state]}</span> · ${time(item.at)} · <span class="tag">${item.reason}</span> ${CONFLICT_REASONS[item.reason] ?? ''}${
          item.channelId ? html` · channel ${item.channelId}` : ''
        }</div>
<div class="summary">Via ${item.via.kind} <bdi class="mono">${item.via.value}</bdi>${
          item.was ? html` (stored as <bdi class="mono">${item.was}</bdi>)` : ''
        }</div>
<ul>${item.roots.map((root) => html`<li>${contactLink(root, item)}</li>`)}</ul>
${mergeForms(item)}</li>`,
      )}</ol>
`
}
${options.olderHref ? html`<p><a class="button" href="${options.olderHref}">Older conflicts</a></p>` : ''}
${options.newestHref && (options.conflicts.length > 0 || options.partial) ? html`<p><a href="${options.newestHref}">Newest conflicts</a></p>` : ''}`,
  );
}

/** The filter as a sentence reads it, before "conflicts" ("no open conflicts"); all: nothing. */
function stateWords(state: ConflictState | 'all'): string {
  return state === 'all' ? '' : `${state === 'merged' ? 'merged-by-hand' : state} `;
}

// --- deliveries ----------------------------------------------------------------------------

/**
 * Destinations a circuit breaker, or their own Retry-After, holds back now
 * (delivery/breaker-state.ts): why their pending deliveries sit with no attempt. Nothing when
 * none is.
 */
function pausedNotes(paused: readonly BreakerOpen[]): SafeHtml {
  if (paused.length === 0) return html``;
  return html`<div class="notice paused" role="status">${paused.map((open) =>
    open.cause === 'retry-after'
      ? html`<p><strong>Destination ${open.destination} paused until ${time(open.until, { seconds: true })}</strong> at its own request: it answered with Retry-After at ${time(open.since, { seconds: true })} (seen by instance <span class="mono">${open.instance}</span>)${
          open.lastError ? html`; answer: ${open.lastError}` : ''
        }. Nothing is sent to it until then, on any instance (a pause is at most 10 minutes; the delivery that got the answer retries at the time it asked for). Its pending deliveries wait meanwhile, some with no attempt yet.</p>`
      : html`<p><strong>Destination ${open.destination} paused until ${time(open.until, { seconds: true })}</strong> after ${open.failures} failed attempt${
          open.failures === 1 ? '' : 's'
        } in a row (circuit breaker of instance <span class="mono">${open.instance}</span>, open since ${time(open.since, { seconds: true })})${
          open.lastError ? html`; last error: ${open.lastError}` : ''
        }. Nothing is sent to it until then, on any instance; then one trial attempt, and the rest follow once it succeeds. Its pending deliveries wait meanwhile, some with no attempt yet. Check that it is up and answering 2xx.</p>`,
  )}</div>`;
}

export function deliveriesPage(options: {
  csrf: string;
  state?: string;
  destination?: string;
  destinations: string[];
  deliveries: DeliverySummary[];
  /** The listed destinations whose circuit breaker is open now, or that asked for a pause (Retry-After). */
  paused?: readonly BreakerOpen[];
  /** The next page (the list's nextCursor), when there is one. */
  nextHref?: string;
  /** The first page, on any page after it. */
  firstHref?: string;
  notice?: string;
}): string {
  const filters = html`<form method="get" action="/console/deliveries" class="filters">
  <div><label for="state">State</label><select id="state" name="state">
    <option value="">any</option>${['pending', 'delivered', 'failed'].map(
      (state) =>
        html`<option value="${state}"${options.state === state ? html` selected` : ''}>${state}</option>`,
    )}</select></div>
  <div><label for="destination">Destination</label><select id="destination" name="destination">
    <option value="">any</option>${options.destinations.map(
      (id) => html`<option value="${id}"${options.destination === id ? html` selected` : ''}>${id}</option>`,
    )}</select></div>
  <button type="submit">Filter</button>
</form>`;
  const replayAll =
    options.destinations.length === 0
      ? html``
      : html`<details class="card"><summary>Replay all failed deliveries of a destination</summary>
<form method="post" action="/console/deliveries/replay" class="row" data-confirm="Replay every failed delivery of {destination}? Each one is sent to it again.">${csrfField(options.csrf)}
  <label for="replay-destination">Destination</label>
  <select id="replay-destination" name="destination" required>${
    // Nothing is chosen for the user: with the list unfiltered, the first destination used to be
    // selected already, and one click (and an OK to a question that did not name it) replayed
    // every failed delivery of a destination nobody had picked.
    options.destination && options.destinations.includes(options.destination)
      ? ''
      : html`<option value="" selected disabled>Choose a destination</option>`
  }${options.destinations.map(
    (id) => html`<option value="${id}"${options.destination === id ? html` selected` : ''}>${id}</option>`,
  )}</select>
  <button type="submit">Replay all failed</button>
</form></details>`;
  const table =
    options.destinations.length === 0
      ? html`<p class="empty">No destination is configured, so nothing is delivered. Add one under <code>destinations</code> in the config (see the README's “Outbound events”) and restart.</p>`
      : options.deliveries.length === 0
        ? options.firstHref
          ? html`<p class="empty">No more deliveries. <a href="${options.firstHref}">First deliveries</a></p>`
          : html`<p class="empty">No delivery matches these filters. Deliveries appear when a chat event happens; try “any” state.</p>`
        : html`<div class="table"><table>
<thead><tr><th scope="col">Delivery</th><th scope="col">Event</th><th scope="col">Destination</th><th scope="col">State</th><th scope="col">Attempts</th><th scope="col">Last error</th><th scope="col">Updated</th></tr></thead>
<tbody>${options.deliveries.map(
            (item) => html`<tr>
  <td data-label="Delivery"><a class="mono" href="/console/deliveries/${encodeURIComponent(item.id)}${query({ state: options.state, destination: options.destination })}">${item.id}</a></td>
  <td data-label="Event">${item.eventType}</td><td data-label="Destination">${item.destination}</td>
  <td data-label="State"><span class="state state-${item.state}">${item.state}</span></td>
  <td data-label="Attempts">${item.attempts}</td>
  <td data-label="Last error">${item.lastError ? `${item.lastError.status !== null ? `${item.lastError.status}: ` : ''}${item.lastError.message}` : ''}</td>
  <td data-label="Updated">${time(item.updatedAt)}</td></tr>`,
          )}</tbody></table></div>
<p class="muted">Oldest first${options.state ? '' : '; pending, then delivered, then failed'}${
            options.nextHref
              ? ': there are more on the next page.'
              : options.firstHref
                ? ': that is the last page.'
                : '.'
          }</p>
${options.nextHref ? html`<p><a class="button" href="${options.nextHref}">Next deliveries</a></p>` : ''}
${options.firstHref ? html`<p><a href="${options.firstHref}">First deliveries</a></p>` : ''}`;
  return layout(
    {
      title: 'Deliveries',
      nav: true,
      csrf: options.csrf,
      current: '/console/deliveries',
      ...(options.notice ? { notice: options.notice } : {}),
    },
    html`<h1>Deliveries</h1>${pausedNotes(options.paused ?? [])}${filters}${replayAll}${table}`,
  );
}

export function deliveryPage(options: {
  csrf: string;
  delivery: DeliveryDetail;
  /** Its destination's open circuit breakers and Retry-After pause, when it is pending. */
  paused?: readonly BreakerOpen[];
  notice?: string;
  /**
   * The filters of the list this delivery was opened from: the way back (also after a replay)
   * leads to that list, not to every delivery of the destination in any state.
   */
  list?: { state?: string; destination?: string };
}): string {
  const item = options.delivery;
  const list = options.list?.state || options.list?.destination ? options.list : undefined;
  const back = list
    ? html`<a href="/console/deliveries${query({ state: list.state, destination: list.destination })}">← ${
        list.state ? `${list.state[0]!.toUpperCase()}${list.state.slice(1)} deliveries` : 'Deliveries'
      }${list.destination ? ` of ${list.destination}` : ''}</a>`
    : html`<a href="/console/deliveries${query({ destination: item.destination })}">← Deliveries of ${item.destination}</a>`;
  const keep = list
    ? html`${list.state ? html`<input type="hidden" name="state" value="${list.state}">` : ''}${
        list.destination ? html`<input type="hidden" name="destination" value="${list.destination}">` : ''
      }`
    : '';
  return layout(
    {
      title: `Delivery ${item.id}`,
      nav: true,
      csrf: options.csrf,
      current: '/console/deliveries',
      ...(options.notice ? { notice: options.notice } : {}),
    },
    html`<p>${back}</p>
<h1>Delivery <span class="mono">${item.id}</span></h1>
${item.state === 'pending' ? pausedNotes(options.paused ?? []) : ''}
<dl class="attrs card">
  <dt>State</dt><dd><span class="state state-${item.state}">${item.state}</span></dd>
  <dt>Event</dt><dd>${item.eventType} <span class="mono small">${item.eventId}</span></dd>
  <dt>Destination</dt><dd>${item.destination}</dd>
  <dt>Contact</dt><dd>${item.contactId ? html`<a href="/console/contacts/${encodeURIComponent(item.contactId)}">${item.contactId}</a>` : '—'}</dd>
  <dt>Created</dt><dd>${time(item.createdAt)}</dd>
  <dt>Next attempt</dt><dd>${time(item.nextAttemptAt)}</dd>
  <dt>Delivered</dt><dd>${time(item.deliveredAt)}</dd>
  <dt>Failed</dt><dd>${time(item.failedAt)}</dd>${
    // Why it failed, also when no attempt says so: a delivery failed without one (its destination
    // left the config, its runs kept dying: "stalled: …") showed no reason on this page.
    item.state === 'failed' && item.lastError
      ? html`
  <dt>Reason</dt><dd>${item.lastError.status !== null ? `${item.lastError.status}: ` : ''}${item.lastError.message}</dd>`
      : ''
  }
  <dt>Replays</dt><dd>${item.replays}</dd>
</dl>
<h2>Attempts</h2>
<p>${item.attempts} attempt${item.attempts === 1 ? '' : 's'} made${item.history.length < item.attempts ? html` (the last ${item.history.length} are listed)` : ''}.</p>
${
  item.history.length === 0
    ? item.state === 'pending'
      ? html`<p class="muted">No attempt yet${item.nextAttemptAt ? html`: the first is due ${time(item.nextAttemptAt)}` : ''}.</p>`
      : html`<p class="muted">No attempt recorded.</p>`
    : html`<div class="table"><table class="attempts"><thead><tr><th scope="col">Time</th><th scope="col">Status</th><th scope="col">Error</th><th scope="col">Cycle</th></tr></thead><tbody>${[
        ...item.history,
      ]
        .reverse()
        .map(
          (attempt) =>
            html`<tr><td data-label="Time">${time(attempt.at)}</td><td data-label="Status"><strong>${attempt.status ?? 'network error'}</strong></td><td data-label="Error">${attempt.error ?? ''}</td><td data-label="Cycle">${attempt.cycle === 0 ? 'first delivery' : `replay ${attempt.cycle}`}</td></tr>`,
        )}</tbody></table></div>`
}
${
  item.state === 'pending'
    ? html`<p class="muted">Pending: it is being delivered or waits for its next attempt; replay is possible once it is delivered or failed.</p>`
    : // A delivered event sent again reaches the receiver twice: asked first, as every other
      // lasting action is. A failed one is what replay is for.
      item.state === 'delivered'
      ? html`<form method="post" action="/console/deliveries/${encodeURIComponent(item.id)}/replay" data-confirm="This event was delivered to ${item.destination}. Send it again? The receiver gets it a second time (same event id).">${csrfField(options.csrf)}${keep}<button type="submit">Replay this delivery</button></form>`
      : html`<form method="post" action="/console/deliveries/${encodeURIComponent(item.id)}/replay">${csrfField(options.csrf)}${keep}<button type="submit">Replay this delivery</button></form>`
}
<h2>Body</h2>
<pre class="body">${JSON.stringify(item.body, null, 2)}</pre>`,
  );
}

// --- journal -------------------------------------------------------------------------------

export function journalPage(options: {
  csrf: string;
  channel?: string;
  kind?: string;
  channels: string[];
  /** A channel and a vendor as the contact pages name them: its name (else its id), the vendor's. */
  channelName: (channelId: string) => string;
  vendorName: (vendor: string) => string;
  entries: JournalEntry[];
  /** The next (older) page, when there is one: this page was cut there. */
  olderHref?: string;
  /** On an older page: the way back to the newest entries. */
  newestHref?: string;
}): string {
  return layout(
    { title: 'Journal', nav: true, csrf: options.csrf, current: '/console/journal' },
    html`<h1>Journal</h1>
<p class="muted">Payloads the bridge received but refused (rejected) or could not use (unhandled), kept so nothing a vendor sent is lost.</p>
<form method="get" action="/console/journal" class="filters">
  <div><label for="channel">Channel</label><select id="channel" name="channel"><option value="">any</option>${options.channels.map(
    (id) =>
      html`<option value="${id}"${options.channel === id ? html` selected` : ''}>${options.channelName(id)}</option>`,
  )}</select></div>
  <div><label for="kind">Kind</label><select id="kind" name="kind"><option value="">any</option>${[
    'rejected',
    'unhandled',
  ].map(
    (kind) => html`<option value="${kind}"${options.kind === kind ? html` selected` : ''}>${kind}</option>`,
  )}</select></div>
  <button type="submit">Filter</button>
</form>
${
  options.entries.length === 0
    ? options.newestHref
      ? html`<p class="empty">No older entries. <a href="${options.newestHref}">Newest entries</a></p>`
      : html`<p class="empty">Nothing in the journal${options.channel || options.kind ? ' for these filters' : ''}: every payload was understood.</p>`
    : html`<p class="muted">${options.entries.length} entr${options.entries.length === 1 ? 'y' : 'ies'}${options.newestHref ? ' (older page)' : ''}, newest first${
        options.olderHref ? ': there are older ones on the next page.' : ': that is all of them.'
      }</p>
<ol class="timeline">${options.entries.map(
        (
          entry,
        ) => html`<li class="entry"><div class="meta">${time(entry.at)} · <span class="tag">${entry.kind}</span> ${options.vendorName(entry.vendor)} ${options.channelName(entry.channelId)}</div>
<div class="summary">${entry.reason}</div>
<details><summary>Payload (${entry.contentType ?? 'no content type'}${entry.encoding === 'base64' ? ', base64' : ''}${entry.truncated ? ', truncated' : ''})</summary><pre class="body">${entry.body}</pre></details></li>`,
      )}</ol>
${options.olderHref ? html`<p><a class="button" href="${options.olderHref}">Older entries</a></p>` : ''}
${options.newestHref ? html`<p><a href="${options.newestHref}">Newest entries</a></p>` : ''}`
}`,
  );
}
