import { isAbsolute, relative, resolve } from 'node:path';
import { bothWays, shellOption } from '../cli/named.js';
import { type CredentialExpiry, durationInWords, EXPIRY_WARNING_DAYS } from '../crm/credentials.js';
import type { CheckChange, CrmCheckOutcome } from '../crm/last-check.js';
import type { BreakerOpen } from '../delivery/breaker-state.js';
import { html, type SafeHtml, time } from './html.js';
import { csrfField, layout } from './pages.js';

/** The channels and status pages. Channel secrets (tokens, API tokens) are never passed in here. */
export interface ChannelView {
  id: string;
  name: string;
  vendor: string;
  vendorName: string;
  /** The intake URL with the token replaced: the token is a credential. */
  intakeUrl: string | null;
  lastTraffic: string | null;
  jobs: { name: string; schedule: string; runs: Record<string, number> }[];
  keys?: { kid: string; createdAt: string; revokedAt: string | null }[];
  keysError?: string;
  /** Shown exactly once, right after generation. */
  newKey?: { kid: string; key: string; createdAt: string };
  agentSync?: { reports: AgentSyncReportView[]; error?: string; running?: AgentSyncProgressView | null };
  /** A polled channel (Chatvisor's conversation poll): its first run and its last runs. */
  polling?: { first: PollReportView | null; recent: PollReportView[]; error?: string };
}

/**
 * A poll report as the channel's `GET conversation-poll` route answers it. Read loosely: the
 * console shows what it finds and does not import the vendor's types (core → adapter only
 * through the registry).
 */
export interface PollReportView {
  baseline?: boolean;
  source?: string;
  startedAt?: string;
  finishedAt?: string;
  pages?: number;
  conversationsSeen?: number;
  seeded?: number;
  conversationEvents?: number;
  messageEvents?: number;
  backfills?: number;
  backfill?: {
    windowMs?: number;
    since?: string;
    conversations?: number;
    messages?: number;
    olderThanWindow?: number;
    unknownAge?: number;
  } | null;
  identified?: number;
  failed?: { customerId: string; reason: string }[];
  unreadable?: number;
  repeated?: number;
  cutOff?: { reason?: string; afterPages?: number } | null;
  /** Set on a run that failed: why it stopped. */
  error?: string;
}

export interface AgentSyncReportView {
  id?: string;
  dryRun?: boolean;
  startedAt?: string;
  finishedAt?: string;
  created?: string[];
  updated?: { email: string; fields: string[] }[];
  removed?: { email: string; action: string }[];
  unchanged?: string[];
  /** Managed agents gone from the directory that the sync left as they are (onRemovedAgent). */
  ignored?: string[];
  onRemovedAgent?: string;
  failed?: { email: string; action: string; reason: string }[];
  writes?: number;
  error?: string;
  /**
   * A run that never finished: where it stopped, kept by the run itself when its instance stopped
   * it (`cause: 'shutdown'`), or by the run that took over when its process died and its lease
   * lapsed. Its lists are what it had done by then.
   */
  interrupted?: {
    step?: string;
    planned?: number | null;
    handled?: number;
    current?: string;
    cause?: string;
    leaseExpiredAt?: string;
    takenOverBy?: string;
  };
}

/**
 * Where an agent sync stands, as the channel's `GET agent-sync/progress` route answers it (read
 * loosely, like the reports): written by the run into the store, so any instance shows it.
 */
export interface AgentSyncProgressView {
  id?: string;
  dryRun?: boolean;
  /**
   * `interrupted`: the run's lease lapsed before it finished (its process stopped), or (`cause:
   * 'shutdown'`) its instance stopped it and said so.
   */
  state?: 'running' | 'finished' | 'failed' | 'interrupted';
  cause?: string;
  step?: 'listing' | 'writing' | 'done';
  startedAt?: string;
  updatedAt?: string;
  /** While running: until when its heartbeat holds the run's lease; when interrupted, when it lapsed. */
  leaseExpiresAt?: string;
  finishedAt?: string;
  directory?: number;
  listed?: number | null;
  planned?: number | null;
  handled?: number;
  created?: number;
  updated?: number;
  removed?: number;
  unchanged?: number;
  ignored?: number;
  failed?: number;
  current?: string;
  error?: string;
}

/** One sentence on where a sync stands (the progress view's status line; console.js shows it too). */
export function agentSyncProgressText(progress: AgentSyncProgressView): string {
  const dry = progress.dryRun === true;
  if (progress.state === 'interrupted') {
    const planned = progress.planned ?? null;
    const where =
      progress.step !== 'writing' || planned === null
        ? "while listing Chatvisor's agents"
        : dry
          ? 'while planning'
          : `after ${progress.handled ?? 0} of ${planned} change${planned === 1 ? '' : 's'}${progress.current ? ` (it was writing ${progress.current})` : ''}`;
    const why =
      progress.cause === 'shutdown'
        ? 'it was asked to stop (the bridge running it shut down, or the CLI command sync agents was stopped by Ctrl-C or SIGTERM)'
        : 'the process running it stopped (killed, out of memory or crashed) and its lease lapsed without a heartbeat';
    return `${dry ? 'Dry run' : 'Agent sync'} interrupted ${where}: ${why}. Start it again: a new run lists Chatvisor afresh and finishes the job.`;
  }
  if (progress.state === 'failed')
    return `${dry ? 'Dry run' : 'Agent sync'} stopped: ${progress.error ?? 'unknown error'}`;
  if (progress.state === 'finished') {
    return dry
      ? `Dry run finished: would create ${progress.created ?? 0}, update ${progress.updated ?? 0}, remove ${progress.removed ?? 0}; ${progress.unchanged ?? 0} unchanged.`
      : `Agent sync finished: created ${progress.created ?? 0}, updated ${progress.updated ?? 0}, removed ${progress.removed ?? 0}, failed ${progress.failed ?? 0}; ${progress.unchanged ?? 0} unchanged.`;
  }
  if (progress.step !== 'writing' || progress.planned === null || progress.planned === undefined)
    return `Listing Chatvisor's agents (${progress.directory ?? 0} in the directory)…`;
  if (dry) return `Planning: ${progress.planned} change${progress.planned === 1 ? '' : 's'} found…`;
  return `Writing to Chatvisor: ${progress.handled ?? 0} of ${progress.planned} change${progress.planned === 1 ? '' : 's'} done${progress.current ? ` — now ${progress.current}` : ''}.`;
}

/**
 * What console.js reads from `…/agent-sync/progress` to update the view in place: the sentence
 * and the counts, as text (it sets textContent: nothing it gets becomes markup).
 */
export function agentSyncProgressJson(progress: AgentSyncProgressView | null) {
  if (!progress) return { state: 'none' as const };
  return {
    id: progress.id ?? null,
    state: progress.state ?? 'running',
    text: agentSyncProgressText(progress),
    fields: {
      listed: progress.listed === null || progress.listed === undefined ? '…' : String(progress.listed),
      planned: progress.planned === null || progress.planned === undefined ? '…' : String(progress.planned),
      handled: String(progress.handled ?? 0),
      created: String(progress.created ?? 0),
      updated: String(progress.updated ?? 0),
      removed: String(progress.removed ?? 0),
      unchanged: String(progress.unchanged ?? 0),
      failed: String(progress.failed ?? 0),
    },
    value: progress.handled ?? 0,
    max: progress.planned ?? null,
    updatedAt: progress.updatedAt ?? null,
  };
}

/**
 * A cron expression and the zone it is read in: node-cron reads it in the process's local time
 * (TZ), so "0 9 * * *" is 09:00 in Moscow under TZ=Europe/Moscow and 12:00 Moscow time in a
 * container left on UTC. Every instance must run with the same TZ (README, Schedules): this one's.
 */
function schedule(expression: string): SafeHtml {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return html`<span class="mono">${expression}</span> (${zone} time)`;
}

function runs(job: ChannelView['jobs'][number]): string {
  const entries = Object.entries(job.runs);
  if (entries.length === 0) return 'no run on this instance since it started';
  return entries.map(([outcome, count]) => `${outcome}: ${count}`).join(', ');
}

/** Where an interrupted run stopped, in words (its report's `interrupted`). */
function interruptedText(
  item: AgentSyncReportView,
  stop: NonNullable<AgentSyncReportView['interrupted']>,
): string {
  const planned = stop.planned ?? null;
  const where =
    stop.step !== 'writing' || planned === null
      ? "while listing Chatvisor's agents"
      : item.dryRun
        ? 'while planning'
        : `after ${stop.handled ?? 0} of ${planned} change${planned === 1 ? '' : 's'}${stop.current ? ` (it was writing ${stop.current}; that write may or may not have been applied)` : ''}`;
  if (stop.cause === 'shutdown')
    return `Interrupted ${where}: it was asked to stop (the bridge running it shut down, or the CLI command sync agents was stopped by Ctrl-C or SIGTERM); the next run lists Chatvisor afresh. What it had done:`;
  return `Interrupted ${where}: the process running it stopped (killed, out of memory or crashed) and its lease lapsed${stop.leaseExpiredAt ? ` at ${stop.leaseExpiredAt}` : ''}; the next run took over and lists Chatvisor afresh. What it had done:`;
}

function report(item: AgentSyncReportView): SafeHtml {
  const list = (label: string, values: string[]) =>
    values.length === 0 ? '' : html`<li>${label}: ${values.join(', ')}</li>`;
  const stop = item.interrupted;
  return html`<li class="entry"><div class="meta">${item.dryRun ? html`<span class="tag">dry run</span>` : html`<span class="tag">run</span>`}${stop ? html` <span class="tag">interrupted</span>` : ''} ${time(item.startedAt)} → ${time(item.finishedAt)}</div>
${stop ? html`<p class="error">${interruptedText(item, stop)}</p>` : ''}<div class="summary">${item.dryRun ? 'Would create' : 'Created'} ${item.created?.length ?? 0}, ${item.dryRun ? 'update' : 'updated'} ${item.updated?.length ?? 0}, ${item.dryRun ? 'remove' : 'removed'} ${item.removed?.length ?? 0}, unchanged ${item.unchanged?.length ?? 0}, ignored ${item.ignored?.length ?? 0}, failed ${item.failed?.length ?? 0}${item.error && !stop ? ` — error: ${item.error}` : ''}</div>
<ul class="small">${list('create', item.created ?? [])}${list(
    'update',
    (item.updated ?? []).map((step) => `${step.email} (${step.fields.join(', ')})`),
  )}${list(
    'remove',
    (item.removed ?? []).map((step) => `${step.email} (${step.action})`),
  )}${list(
    `ignored (gone from the directory, left as they are in Chatvisor: onRemovedAgent ${item.onRemovedAgent ?? 'ignore'})`,
    item.ignored ?? [],
  )}${list(
    'failed',
    (item.failed ?? []).map((step) => `${step.email} ${step.action}: ${step.reason}`),
  )}</ul></li>`;
}

/** "1 conversation", "3 conversations". */
const count = (n: number | undefined, word: string) => `${n ?? 0} ${word}${n === 1 ? '' : 's'}`;

function pollRun(item: PollReportView): SafeHtml {
  const failed = item.failed ?? [];
  return html`<li class="entry"><div class="meta"><span class="tag">${item.baseline ? 'first run' : 'run'}</span> ${time(item.startedAt)} → ${time(item.finishedAt)}${item.source ? ` · by ${item.source}` : ''}</div>
<div class="summary">${count(item.conversationsSeen, 'conversation')} seen on ${count(item.pages, 'page')}; events: ${item.conversationEvents ?? 0} conversation, ${item.messageEvents ?? 0} message (${item.backfills ?? 0} found only by polling); ${count(item.identified, 'customer')} identified; failed ${failed.length}${item.unreadable ? `; ${item.unreadable} unreadable` : ''}${item.repeated ? `; ${item.repeated} listed twice` : ''}${item.cutOff ? ` — listing cut off after ${count(item.cutOff.afterPages, 'page')} (${item.cutOff.reason ?? '?'})` : ''}${item.error ? ` — failed: ${item.error}` : ''}</div>
${failed.length > 0 ? html`<ul class="small">${failed.map((entry) => html`<li>${entry.customerId}: ${entry.reason}</li>`)}</ul>` : ''}</li>`;
}

/** `scheduled`: the channel has a conversation-poll job (listed above the section). */
function pollingSection(polling: NonNullable<ChannelView['polling']>, scheduled: boolean): SafeHtml {
  const backfill = polling.first?.backfill;
  return html`<h3>Conversation polling</h3>
${polling.error ? html`<p class="error">${polling.error}</p>` : ''}
${
  polling.first
    ? html`<p>First run ${time(polling.first.startedAt)}: ${
        backfill
          ? // `since` as every other time on the page (the browser's zone), not a bare UTC ISO string.
            html`replayed ${count(backfill.conversations, 'conversation')} and ${count(backfill.messages, 'message')} changed in the backfill window (since ${backfill.since ? time(backfill.since) : '?'}); recorded ${backfill.olderThanWindow ?? 0} older and ${backfill.unknownAge ?? 0} of unknown age as they stand, without events.`
          : `recorded ${count(polling.first.seeded, 'conversation')} as they stand, without events.`
      }</p>`
    : scheduled
      ? html`<p class="empty">No poll has run yet: the first runs at the next tick of the conversation-poll job above.</p>`
      : html`<p class="empty">Polling is off: this channel has no conversation poll schedule. Set <code>schedules.conversationPoll</code> in its config (e.g. <code>"* * * * *"</code>) to poll conversations; its webhooks are taken either way.</p>`
}
${polling.recent.length > 0 ? html`<ol class="timeline">${polling.recent.map(pollRun)}</ol>` : ''}`;
}

/**
 * Buttons repeated per item ("Revoke" per key, "Unmerge" per record) name their item for screen
 * readers and voice control (aria-label, starting with the visible word): a list of identical
 * "Revoke" buttons does not say which key each one ends.
 */
function channelCard(channel: ChannelView, csrf: string): SafeHtml {
  const base = `/console/channels/${encodeURIComponent(channel.id)}`;
  return html`<section class="card" id="channel-${channel.id}" aria-labelledby="title-${channel.id}">
<h2 id="title-${channel.id}">${channel.name} <span class="tag">${channel.vendorName}</span></h2>
<dl class="attrs">
  <dt>Channel id</dt><dd class="mono">${channel.id}</dd>
  <dt>Intake URL</dt><dd class="mono break">${channel.intakeUrl ?? 'no webhook intake (this vendor is polled)'}</dd>
  <dt>Last traffic</dt><dd>${channel.lastTraffic ? time(channel.lastTraffic) : 'no webhook received yet — paste the intake URL (with the token from the config) into the vendor'}</dd>
  ${channel.jobs.map((job) => html`<dt>Job ${job.name}</dt><dd>${schedule(job.schedule)} · ${runs(job)}</dd>`)}
</dl>
${
  channel.keys !== undefined || channel.keysError
    ? html`<h3>Attribute keys</h3>
${
  channel.newKey
    ? html`<div class="notice" role="status"><p><strong>New key ${channel.newKey.kid}.</strong> Copy it now and give the key id and the key to LiveTex: it is not shown again.</p>
<label for="new-key">Key</label><input id="new-key" class="mono" readonly value="${channel.newKey.key}" data-select></div>`
    : ''
}
${channel.keysError ? html`<p class="error">${channel.keysError}</p>` : ''}
${
  channel.keys && channel.keys.length > 0
    ? html`<ul class="keys">${channel.keys.map(
        (key) =>
          html`<li><span class="mono">${key.kid}</span> · created ${time(key.createdAt)} · ${
            key.revokedAt
              ? html`<span class="state state-failed">revoked ${time(key.revokedAt)}</span>`
              : html`<span class="state state-delivered">active</span> <form method="post" action="${base}/keys/${encodeURIComponent(key.kid)}/revoke" class="inline" data-confirm="Revoke key ${key.kid}? LiveTex lookups with it stop at once.">${csrfField(csrf)}<button type="submit" class="secondary" aria-label="Revoke key ${key.kid}">Revoke</button></form>`
          }</li>`,
      )}</ul>`
    : channel.keys
      ? html`<p class="empty">No key yet: generate one and give it to LiveTex so it can look up contacts.</p>`
      : ''
}
<form method="post" action="${base}/keys">${csrfField(csrf)}<button type="submit">Generate a key</button></form>`
    : ''
}
${
  channel.agentSync
    ? html`<h3>Agent sync</h3>
<p class="muted">Copies the config's <code>agents</code> into Chatvisor. A dry run shows the plan and changes nothing.</p>
<div class="row">
<form method="post" action="${base}/agent-sync" data-progress="Planning the agent sync…">${csrfField(csrf)}<input type="hidden" name="dryRun" value="true"><button type="submit" class="secondary">Dry run</button></form>
<form method="post" action="${base}/agent-sync" data-progress="Syncing agents with Chatvisor… this can take a minute" data-confirm="Write the agent directory to Chatvisor now?">${csrfField(csrf)}<input type="hidden" name="dryRun" value="false"><button type="submit">Run agent sync</button></form>
</div>
<p class="progress" hidden role="status" aria-live="polite"><progress></progress> <span></span></p>
${
  channel.agentSync.running?.state === 'running'
    ? html`<p class="notice" role="status">${agentSyncProgressText(channel.agentSync.running)} <a href="${base}/agent-sync">Follow its progress</a></p>`
    : channel.agentSync.running?.state === 'interrupted'
      ? html`<p class="error" role="status">${agentSyncProgressText(channel.agentSync.running)} <a href="${base}/agent-sync">Where it stopped</a></p>`
      : ''
}
${channel.agentSync.error ? html`<p class="error">${channel.agentSync.error}</p>` : ''}
${
  channel.agentSync.reports.length === 0
    ? html`<p class="empty">No sync report yet: start with a dry run.</p>`
    : html`<ol class="timeline">${channel.agentSync.reports.map(report)}</ol>`
}`
    : ''
}
${
  channel.polling
    ? pollingSection(
        channel.polling,
        channel.jobs.some((job) => job.name === 'conversation-poll'),
      )
    : ''
}
</section>`;
}

export function channelsPage(options: { csrf: string; channels: ChannelView[]; notice?: string }): string {
  return layout(
    {
      title: 'Channels',
      nav: true,
      csrf: options.csrf,
      current: '/console/channels',
      ...(options.notice ? { notice: options.notice } : {}),
    },
    html`<h1>Channels</h1>${
      options.channels.length === 0
        ? html`<p class="empty">No channel is configured. Add one under <code>channels</code> in the config (see config/bridge.example.yaml) and restart the bridge.</p>`
        : options.channels.map((channel) => channelCard(channel, options.csrf))
    }`,
  );
}

export interface StatusView {
  role: string;
  store: { kind: string; ok: boolean; message?: string };
  outbox: number | null;
  /** The deferred intake's list (intake.ackAfterAppend): events answered and not yet recorded. */
  deferred: { size: number; oldestAgeMs: number | null } | null;
  /** Deliveries per destination and state, exact (Delivery.count). */
  destinations: { id: string; pending: number; failed: number }[];
  schedules: { channelId: string; job: string; schedule: string; runs: Record<string, number> }[];
  /**
   * The CRM destinations (kind amocrm / bitrix24): what the bridge knows without calling the CRM
   * (a page view never does): the deliveries (above, in `destinations`), the token's expiry and
   * what the last `chatbridge crm check` said (null: none recorded; absent: the store could not
   * be read).
   */
  crm: {
    id: string;
    displayName: string;
    expiry: CredentialExpiry;
    lastCheck?: CrmCheckOutcome | null;
    /** What changed in the config since the last check (empty: it checked this config). */
    changedSinceCheck?: CheckChange[];
    /** What holds it back now (its Retry-After pause, open breakers: delivery/breaker-state.ts). */
    paused?: readonly BreakerOpen[];
  }[];
  /** When the page is made: says how long ago the last check was (left out without it). */
  now?: Date;
  /** The file the bridge's config came from (`chatbridge start`), from where it was started (shownConfigPath). */
  configFile?: string;
}

/**
 * A config file as a command run where the bridge was started takes it: relative when it is under
 * that directory, whole otherwise (the command quotes it: shellOption).
 */
export function shownConfigPath(file: string, cwd: string = process.cwd()): string {
  const absolute = resolve(cwd, file);
  const inside = relative(cwd, absolute);
  const shown = inside !== '' && !inside.startsWith('..') && !isAbsolute(inside) ? inside : absolute;
  return shown;
}

/** A waiting time in the largest unit that keeps it short (`45 s`, `12 min`, `3 h`, `2 d`). */
function age(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 120) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 120) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  return hours < 48 ? `${hours} h` : `${Math.floor(hours / 24)} d`;
}

/** A count of a destination's deliveries, linked to their list (paged: every one can be read there). */
function countLink(destination: string, state: 'pending' | 'failed', count: number) {
  return count === 0
    ? '0'
    : html`<a href="/console/deliveries?state=${state}&amp;destination=${encodeURIComponent(destination)}">${count.toLocaleString('en-US')}</a>`;
}

/** The token's expiry as the bridge read it from the config (never the token). */
function expiryOf(item: StatusView['crm'][number]): SafeHtml {
  const { expiry, displayName } = item;
  switch (expiry.state) {
    case 'none':
      return html`No expiry the bridge can read (a ${displayName} webhook's expiry, if one was set, shows only in ${displayName}).`;
    case 'unknown':
      return html`<span class="state state-pending">unknown</span> The token is not a JWT with an <code>exp</code>: nothing warns before ${displayName} refuses it. When it is refused: ${expiry.renew}.`;
    case 'valid':
      return html`<span class="state state-delivered">valid</span> until ${time(expiry.at.toISOString())} (in ${durationInWords(expiry.msLeft)}).`;
    case 'soon':
      return html`<span class="state state-failed">expires soon</span> ${time(expiry.at.toISOString())}, in ${durationInWords(expiry.msLeft)} (under ${EXPIRY_WARNING_DAYS} days): then every delivery to ${displayName} fails with 401. Renew it: ${expiry.renew}.`;
    case 'expired':
      return html`<span class="state state-failed">expired</span> ${time(expiry.at.toISOString())}: ${displayName} refuses it (401) and deliveries fail. Renew it: ${expiry.renew}, then replay the failed deliveries.`;
  }
}

const CHECK_STATES: Record<CrmCheckOutcome['outcome'], { label: string; css: string }> = {
  ok: { label: 'ok', css: 'state-delivered' },
  warn: { label: 'warning', css: 'state-pending' },
  fail: { label: 'failed', css: 'state-failed' },
};

const CHANGED_PARTS: Record<CheckChange, string> = {
  unknown: 'which config it checked is not recorded',
  credentials: 'the credentials',
  settings: 'the destination’s settings or mapping',
  agents: 'the agents’ CRM users',
};

/** The last `crm check` as recorded (its reason holds CRM text: escaped like every value). */
function lastCheckOf(item: StatusView['crm'][number], status: StatusView): SafeHtml {
  const { now } = status;
  // With the file the bridge runs: without --config the command reads config/bridge.yaml or the
  // example, and a bridge started on another file (README "Connect your CRM": config/crm.example.yaml)
  // got "has no CRM destination" from the command its own page named.
  // Both ways, in the sentence of the bridge's other texts (src/cli/named.ts): the page cannot
  // know how its reader runs the CLI. The id is any string: quoted as the file is, or a pasted
  // command split it.
  const words = `crm check ${shellOption('destination', item.id)}${status.configFile === undefined ? '' : ` ${shellOption('config', status.configFile)}`}`;
  const command = bothWays(words, html, (form) => html`<code>${form}</code>`);
  if (item.lastCheck === undefined) return html`unknown (the store is not reachable)`;
  // `crm check` is a process of its own: on the in-memory store it has a store of its own too and
  // records nothing (src/cli/crm.ts), so "records its outcome here" would never come true.
  if (status.store.kind === 'memory' && item.lastCheck === null)
    return html`Not recorded: this bridge runs on the in-memory store, which the CLI's crm check (a process of its own) cannot reach: ${command} prints what it finds; with store.redis set, its outcome shows here.`;
  if (item.lastCheck === null)
    return html`None recorded. ${command} calls ${item.displayName} once (account, pipelines, users), prints what the mapping will use, and records its outcome here.`;
  const { at, outcome, reason } = item.lastCheck;
  const state = CHECK_STATES[outcome];
  const ago = now === undefined ? Number.NaN : now.getTime() - Date.parse(at);
  const changed = item.changedSinceCheck ?? [];
  const recorded = html`<span class="state ${state.css}">${state.label}</span> ${time(at)}${
    Number.isFinite(ago) && ago >= 0 ? ` (${durationInWords(ago)} ago)` : ''
  }: ${reason}`;
  // Not shown as if it applied: it checked another config (or says not which).
  if (changed.length > 0)
    return html`<span class="state state-pending">stale</span> ${
      changed.includes('unknown')
        ? html`This check was recorded by an earlier version, which did not note the config it checked`
        : html`The config changed since this check (${changed.map((part) => CHANGED_PARTS[part]).join(', ')})`
    }: run ${command} again. <span class="muted small">It said then: ${recorded}</span>`;
  return html`${recorded} <span class="muted small">Check again: ${command}</span>`;
}

/**
 * Why nothing is sent to the CRM now, shown with its end: its own Retry-After (a 429, Bitrix24's
 * QUERY_LIMIT_EXCEEDED) or an open circuit breaker. Before, only the Deliveries pages said so
 * (and not the Retry-After at all).
 */
function pausedOf(item: StatusView['crm'][number]): SafeHtml {
  const paused = item.paused ?? [];
  if (paused.length === 0) return html``;
  return html`
  <dt>Paused</dt><dd>${paused.map(
    (open) =>
      html`<p><span class="state state-pending">paused</span> until ${time(open.until, { seconds: true })}${
        open.cause === 'retry-after'
          ? html`, at ${item.displayName}'s own request (Retry-After at ${time(open.since, { seconds: true })})${
              open.lastError ? html`: ${open.lastError}` : ''
            }`
          : html`: circuit breaker of instance <span class="mono">${open.instance}</span> open after ${open.failures} failed attempt${
              open.failures === 1 ? '' : 's'
            } in a row${open.lastError ? html`; last error: ${open.lastError}` : ''}`
      }. Nothing is sent to it until then, on any instance.</p>`,
  )}</dd>`;
}

function crmSection(status: StatusView): SafeHtml {
  if (status.crm.length === 0) return html``;
  const counts = new Map(status.destinations.map((item) => [item.id, item]));
  return html`<section class="card" id="crm" aria-labelledby="crm-title"><h2 id="crm-title">CRM</h2>${status.crm.map(
    (item) => {
      const count = counts.get(item.id);
      const warn = item.expiry.state === 'soon' || item.expiry.state === 'expired';
      // An HTML id has no spaces, and a destination id may (`amo main`): encoded, one id per destination.
      return html`<h3 id="crm-${encodeURIComponent(item.id)}">${item.id} <span class="tag">${item.displayName}</span></h3>
${warn ? html`<p class="error" role="alert">The ${item.displayName} token of ${item.id} ${item.expiry.state === 'expired' ? 'has expired' : `expires in ${'msLeft' in item.expiry ? durationInWords(item.expiry.msLeft) : '?'}`}: put a new one in the config.</p>` : ''}
<dl class="attrs">
  <dt>Deliveries</dt><dd>${
    count
      ? html`pending ${countLink(item.id, 'pending', count.pending)} · failed ${countLink(item.id, 'failed', count.failed)}`
      : 'unknown (the store is not reachable)'
  }</dd>
  <dt>Token</dt><dd>${expiryOf(item)}</dd>
  <dt>Last check</dt><dd>${lastCheckOf(item, status)}</dd>${pausedOf(item)}
</dl>`;
    },
  )}</section>`;
}

export function statusPage(options: { csrf: string; status: StatusView }): string {
  const { status } = options;
  return layout(
    { title: 'Status', nav: true, csrf: options.csrf, current: '/console/status' },
    html`<h1>Status</h1>
<div class="grid">
<section class="card"><h2>Store</h2><p>${status.store.kind === 'redis' ? 'Redis' : 'In-memory (data is lost on restart; set store.redis for production)'}: ${
      status.store.ok
        ? html`<span class="state state-delivered">reachable</span>`
        : html`<span class="state state-failed">unreachable</span> ${status.store.message ?? ''} — check that Redis is running and store.redis points at it`
    }</p><p class="muted">This instance runs the role <strong>${status.role}</strong>.</p></section>
<section class="card"><h2>Queues</h2><p>Outbox (events not yet routed): ${status.outbox ?? 'unknown'}</p><p>Deferred intake (events answered, not yet recorded): ${
      status.deferred === null
        ? 'unknown'
        : html`${status.deferred.size}${status.deferred.oldestAgeMs === null ? '' : html` · oldest waiting ${age(status.deferred.oldestAgeMs)}`}`
    }</p>${
      status.destinations.length === 0
        ? html`<p class="muted">No destination configured.</p>`
        : html`<div class="table"><table><thead><tr><th scope="col">Destination</th><th scope="col">Pending</th><th scope="col">Failed</th></tr></thead><tbody>${status.destinations.map(
            (item) =>
              html`<tr><td data-label="Destination"><a href="/console/deliveries?destination=${encodeURIComponent(item.id)}">${item.id}</a></td><td data-label="Pending">${countLink(item.id, 'pending', item.pending)}</td><td data-label="Failed">${countLink(item.id, 'failed', item.failed)}</td></tr>`,
          )}</tbody></table></div>`
    }</section>
<section class="card"><h2>Schedules</h2>${
      status.schedules.length === 0
        ? html`<p class="muted">No scheduled job (only Chatvisor channels have them: agent sync, conversation polling).</p>`
        : html`<ul>${status.schedules.map(
            (item) =>
              html`<li>${item.channelId} · ${item.job}: ${schedule(item.schedule)} · ${runs({ name: item.job, schedule: item.schedule, runs: item.runs })}</li>`,
          )}</ul>`
    }</section>
${crmSection(status)}
</div>`,
  );
}

/**
 * An agent sync's progress view: while it runs, the counts so far (console.js polls `poll` and
 * updates them; without script the page reloads itself); once it is over, its report.
 */
export function agentSyncPage(options: {
  csrf: string;
  channelId: string;
  channelName: string;
  progress: AgentSyncProgressView | null;
  /** The finished run's report (found by the progress's id among the last reports). */
  report: AgentSyncReportView | null;
  notice?: string;
  error?: string;
}): string {
  const { progress } = options;
  const base = `/console/channels/${encodeURIComponent(options.channelId)}`;
  const running = progress?.state === 'running';
  const field = (name: string, label: string, value: string) =>
    html`<dt>${label}</dt><dd data-progress-field="${name}">${value}</dd>`;
  const json = agentSyncProgressJson(progress);
  const body = !progress
    ? html`<p class="empty">No agent sync has run in the last day. Start one from <a href="/console/channels#channel-${options.channelId}">the channel</a>.</p>`
    : html`<section class="card" id="agent-sync-progress" aria-labelledby="progress-title"${running ? html` data-poll="${base}/agent-sync/progress" data-run="${progress.id ?? ''}"` : ''}>
<h2 id="progress-title">${progress.dryRun ? 'Dry run' : 'Run'} <span class="tag">${running ? 'running' : progress.state === 'failed' ? 'stopped' : progress.state === 'interrupted' ? 'interrupted' : 'finished'}</span></h2>
<p role="status" aria-live="polite" data-progress-field="text">${agentSyncProgressText(progress)}</p>
${running ? html`<progress data-progress-bar${json.state !== 'none' && json.max !== null ? html` max="${json.max}" value="${json.value}"` : ''}></progress>` : ''}
<dl class="attrs">
  ${field('listed', 'Listed in Chatvisor', json.state === 'none' ? '' : json.fields.listed)}
  ${field('planned', 'Changes planned', json.state === 'none' ? '' : json.fields.planned)}
  ${field('handled', 'Changes handled', json.state === 'none' ? '' : json.fields.handled)}
  ${field('created', progress.dryRun ? 'Would create' : 'Created', json.state === 'none' ? '' : json.fields.created)}
  ${field('updated', progress.dryRun ? 'Would update' : 'Updated', json.state === 'none' ? '' : json.fields.updated)}
  ${field('removed', progress.dryRun ? 'Would remove' : 'Removed', json.state === 'none' ? '' : json.fields.removed)}
  ${field('unchanged', 'Unchanged', json.state === 'none' ? '' : json.fields.unchanged)}
  ${field('failed', 'Failed', json.state === 'none' ? '' : json.fields.failed)}
  <dt>Started</dt><dd>${time(progress.startedAt)}</dd>
  ${
    progress.state === 'interrupted' && progress.cause === 'shutdown'
      ? html`<dt>Stopped</dt><dd>${time(progress.finishedAt)}</dd>`
      : progress.state === 'interrupted'
        ? html`<dt>Last step</dt><dd>${time(progress.updatedAt)}</dd><dt>Lease lapsed</dt><dd>${time(progress.leaseExpiresAt)}</dd>`
        : html`<dt>${running ? 'Last step' : 'Finished'}</dt><dd>${time(running ? progress.updatedAt : progress.finishedAt)}</dd>`
  }
</dl>
${
  progress.state === 'interrupted'
    ? html`<form method="post" action="${base}/agent-sync"${progress.dryRun ? '' : html` data-confirm="Write the agent directory to Chatvisor now?"`}>${csrfField(options.csrf)}<input type="hidden" name="dryRun" value="${progress.dryRun ? 'true' : 'false'}"><button type="submit">${progress.dryRun ? 'Start the dry run again' : 'Run agent sync again'}</button></form>`
    : ''
}
${
  running
    ? html`<p class="muted small">This page follows the sync by itself (without JavaScript it reloads every few seconds): <a href="${base}/agent-sync">Refresh</a>. It runs on whichever instance started it; leaving this page does not stop it.</p>`
    : ''
}
</section>
${options.report ? html`<h2>Report</h2><ol class="timeline">${report(options.report)}</ol>` : ''}`;
  return layout(
    {
      title: 'Agent sync',
      nav: true,
      csrf: options.csrf,
      current: '/console/channels',
      ...(options.notice ? { notice: options.notice } : {}),
      ...(options.error ? { error: options.error } : {}),
      ...(running ? { refreshSeconds: 3 } : {}),
    },
    html`<p><a href="/console/channels#channel-${options.channelId}">← ${options.channelName}</a></p>
<h1>Agent sync · ${options.channelName}</h1>
${body}`,
  );
}
