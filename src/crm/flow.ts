import { z } from 'zod';
import type { AgentConfig, ChannelConfig, CrmDestinationConfig } from '../config/schema.js';
import { GLOBAL_KINDS, normalizeEmail, normalizePhone, splitPhones } from '../contacts/normalize.js';
import type { ContactService } from '../contacts/service.js';
import type { Contact, Identifier } from '../contacts/types.js';
import type {
  CrmApi,
  CrmContact,
  CrmContactInput,
  CrmCreation,
  CrmEntityRef,
} from '../contracts/connector.js';
import { agentEmailsOf, type DeliveredBody } from '../delivery/routing.js';
import { renewWhileHeld } from '../store/renewal.js';
import type { Store } from '../store/types.js';
import { CrmError } from './errors.js';

/**
 * What one event does in a CRM (DESIGN §10), the same for every connector:
 * 1. contact: the one already linked to this bridge contact, else the one with any of its
 *    phones / e-mails, else a new one; missing phones and e-mails are added, nothing removed;
 * 2. link back: the CRM id becomes a `crm` identity of the bridge contact scoped to this
 *    destination, and the record's URL its crmLink ("Open in CRM");
 * 3. deal per `crm.deals`; 4. offline message -> task; 5. finished chat -> transcript note.
 *
 * Exactly once: every object created is written to the delivery's progress (`checkpoint`)
 * before the next step, and a retry or replay starts from that progress instead of creating
 * it again. A create whose answer was lost (a timeout, a 504: the CRM may have made it) is
 * covered by an in-flight mark (`<kind>Pending`) recorded before it is sent: the retry asks
 * the CRM for that object first (`CrmApi.findCreated`), and where the CRM cannot say, it
 * stops rather than risk a duplicate. The find-or-create of step 1 runs under a store lock on
 * the contact's keys, and the link is kept in the store, so the next event of the same person
 * finds it at once. Two runs of one delivery never go at once: the attempt holds the delivery's
 * lease (src/delivery/processor.ts), and `checkpoint` refuses once it was lost.
 */

export const progressSchema = z.record(z.string(), z.string());
export type CrmProgress = z.infer<typeof progressSchema>;

/** Events that concern a conversation (and so a deal); contact.* events only upsert the contact. */
const DEAL_EVENTS = new Set([
  'conversation.started',
  'conversation.assigned',
  'conversation.finished',
  'conversation.rated',
  'message.received',
  'offline_message.received',
  'call.updated',
]);

/**
 * The find-or-create locks. A search may take many CRM requests (amoCRM: one per phone and
 * e-mail, each up to the destination's timeoutMs, after the shared rate limit), so the lock is
 * not trusted to outlast it: it is renewed every ttlMs / 3 while held, and checked (renewed once
 * more) right before the create. A lock found lost (expired — the store was unreachable for a
 * while — and perhaps taken by another instance) stops the step with a retry instead of creating
 * what the other holder may be creating.
 */
const LOCK = { ttlMs: 60_000, waitMs: 30_000 };
const LINK_TTL_MS = 365 * 86_400_000;

export const crmKeys = {
  link: (destinationId: string, contactId: string) =>
    `crm:link:${encodeURIComponent(destinationId)}:${contactId}`,
  conversationDeal: (destinationId: string, channelId: string, conversationId: string) =>
    `crm:deal:${encodeURIComponent(destinationId)}:${channelId}:${conversationId}`,
  upsert: (destinationId: string, key: string) => `crm:upsert:${encodeURIComponent(destinationId)}:${key}`,
  /**
   * A CRM contact id the CRM no longer has (deleted, or merged away by a manager). The bridge
   * contact keeps its `crm` identity with that id (identities are never removed), so the link
   * is skipped by this marker instead.
   */
  gone: (destinationId: string, crmId: string) =>
    `crm:gone:${encodeURIComponent(destinationId)}:${encodeURIComponent(crmId)}`,
  /**
   * The bridge contact (a record id) whose `crm` identity this CRM contact id is. Claimed once,
   * atomically (SET NX), by the first link-back: two bridge contacts linked to one CRM contact at
   * the same time (two instances, or two lanes) each saw no holder and both took the identity,
   * which merged them. One key, so one hash slot on a Cluster whatever the prefix.
   */
  holder: (destinationId: string, crmId: string) =>
    `crm:holder:${encodeURIComponent(destinationId)}:${encodeURIComponent(crmId)}`,
};

export interface CrmFlowDeps {
  destination: CrmDestinationConfig;
  displayName: string;
  store: Store;
  contacts: ContactService;
  channels: readonly ChannelConfig[];
  vendorNames: ReadonlyMap<string, string>;
  defaultCountry: string;
  /** The agent directory (config `agents`): an agent's crmUserId when no CRM user has its e-mail. */
  agents: readonly AgentConfig[];
  responsibleByEmail(email: string): Promise<string | null>;
  now(): Date;
  /** The find-or-create locks' ttl and wait (tests shorten them); default LOCK. */
  lock?: { ttlMs: number; waitMs: number };
  /**
   * The identity rules (config `identity`): which phones and e-mails may find the CRM contact
   * (searchable below). Absent: every one, as with the default rules.
   */
  identity?: { mergeOn: readonly string[]; mergeOnVisitorTyped: readonly string[] };
}

const dataSchema = z.object({
  conversationId: z.union([z.string(), z.number()]).transform(String).nullish(),
  utm: z.union([z.string(), z.record(z.string(), z.unknown())]).nullish(),
});

/** JivoChat reports UTM as an attribute `utm` = "source=google, medium=cpc" (or utm_source=...). */
export function utmOf(contact: Contact, data: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  const put = (key: string, value: unknown) => {
    const name = key.trim().toLowerCase().replace(/^utm_/, '');
    if (
      ['source', 'medium', 'campaign', 'content', 'term'].includes(name) &&
      typeof value === 'string' &&
      value.trim()
    )
      out[`utm_${name}`] = value.trim();
  };
  const fromString = (text: string) => {
    for (const part of text.split(/[,|&]/)) {
      const [key, ...rest] = part.split('=');
      if (key && rest.length > 0) put(key, rest.join('='));
    }
  };
  const attribute = contact.attributes.utm?.value;
  if (typeof attribute === 'string') fromString(attribute);
  const parsed = dataSchema.safeParse(data);
  const utm = parsed.success ? parsed.data.utm : undefined;
  if (typeof utm === 'string') fromString(utm);
  else if (utm) for (const [key, value] of Object.entries(utm)) put(key, value);
  return out;
}

function render(template: string, values: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => values[name] ?? whole);
}

export function createCrmFlow(deps: CrmFlowDeps) {
  const { destination, store } = deps;
  const destinationId = destination.id;

  function displayValues(body: DeliveredBody) {
    const channel = body.channel;
    const channelName = channel
      ? (deps.channels.find((item) => item.id === channel.id)?.name ?? channel.id)
      : '';
    const vendorName = channel ? (deps.vendorNames.get(channel.vendor) ?? channel.vendor) : '';
    const contact = body.contact;
    const contactName = contact?.name ?? contact?.emails[0] ?? contact?.phones[0] ?? 'Visitor';
    const data = dataSchema.safeParse(body.data);
    const chatId = (data.success ? data.data.conversationId : null) ?? body.id.slice(-8);
    return {
      vendorName,
      channelName,
      vendor: channel?.vendor ?? '',
      channel: channel?.id ?? '',
      contactName,
      chatId,
    };
  }

  /**
   * DESIGN §10: each agent the event names, in order (agentEmailsOf: the accepting agent, the
   * chat's agents, then the contact's responsible agent), gives its CRM user by e-mail, else its
   * agents[].crmUserId; the first that gives one is responsible, else crm.responsible.default.
   * Only the first agent was looked up by e-mail before, the others by crmUserId alone: an agent
   * the CRM did not know (an outsourced one) ahead of one it did made the deal someone else's,
   * or nobody's (a stale crmUserId the CRM refused). The directory is today's config, not the
   * body's routing of the drain's time, so a corrected crmUserId holds for retries and replays.
   */
  async function responsible(body: DeliveredBody): Promise<string | null> {
    for (const email of agentEmailsOf(body)) {
      const byEmail = await deps.responsibleByEmail(email);
      if (byEmail) return byEmail;
      const crmUserId = deps.agents.find((agent) => agent.email === email)?.crmUserId;
      if (crmUserId) return crmUserId;
    }
    return destination.crm.responsible.default ?? null;
  }

  /**
   * Run `work` under a store lock on `keys`, renewed while it runs (LOCK). `stillHeld` renews it
   * once more and throws a retryable CrmError when it was lost: call it right before a create.
   */
  async function locked<T>(keys: string[], work: (stillHeld: () => Promise<void>) => Promise<T>): Promise<T> {
    const options = deps.lock ?? LOCK;
    const lock = await store.lock(keys, options);
    let lost = false;
    // A renewal that fails (the store unreachable) is tried again, and so is the check before the create.
    const stopRenewing = renewWhileHeld({
      ttlMs: options.ttlMs,
      renew: () => lock.renew(options.ttlMs),
      onLost: () => {
        lost = true;
      },
    });
    const stillHeld = async () => {
      if (!lost && (await lock.renew(options.ttlMs))) return;
      lost = true;
      throw new CrmError(
        'retry',
        null,
        `${deps.displayName}: the store lock of a find-or-create expired before the create (the store was unreachable, or the search took too long); nothing was created, the step is retried`,
      );
    };
    try {
      return await work(stillHeld);
    } finally {
      stopRenewing();
      await lock.release();
    }
  }

  function phonesOf(contact: Contact) {
    return contact.phones
      .map((phone) => normalizePhone(phone, deps.defaultCountry))
      .filter((v): v is string => !!v);
  }
  function emailsOf(contact: Contact) {
    return contact.emails.map(normalizeEmail).filter((v): v is string => !!v);
  }

  /**
   * Whether a phone or e-mail of the contact may find its CRM contact: only one the identity
   * rules would merge on (its kind in identity.mergeOn and, typed by a visitor, in
   * mergeOnVisitorTyped). The CRM contact found becomes a `crm` identity, which joins the bridge
   * contacts holding it: found by a value that may not merge (an e-mail a stranger typed, under
   * `mergeOnVisitorTyped: [person]`), the link merged him with the customer and put his chats on
   * her CRM record. Such a value is still written to the CRM contact, only not searched by.
   */
  function searchable(contact: Contact, kind: 'phone' | 'email', value: string): boolean {
    const rules = deps.identity;
    if (!rules) return true;
    if (!rules.mergeOn.includes(kind)) return false;
    if (rules.mergeOnVisitorTyped.includes(kind)) return true;
    return contact.identities.some(
      (item) => item.kind === kind && item.value === value && item.provenance === 'verified',
    );
  }

  /**
   * The CRM ids this bridge contact is linked to, best first, without those known to be gone:
   * its own `crm` identities for this destination, then the links kept in the store (the one
   * of its own id is rewritten on every upsert, so it is the newest).
   */
  async function linkedIds(contact: Contact): Promise<string[]> {
    const own = contact.identities
      .filter((item) => item.kind === 'crm' && item.channelId === destinationId)
      .map((item) => item.value);
    const ids = [...new Set([contact.id, ...contact.records])];
    const stored = await store.mget(ids.map((id) => crmKeys.link(destinationId, id)));
    const candidates = [...new Set([...own, ...stored.filter((value): value is string => value !== null)])];
    if (candidates.length === 0) return [];
    const gone = await store.mget(candidates.map((id) => crmKeys.gone(destinationId, id)));
    return candidates.filter((_, index) => gone[index] === null);
  }

  /** The CRM said it has no contact `crmId`: never take that link again. */
  async function forget(crmId: string) {
    await store.set(crmKeys.gone(destinationId, crmId), '1', { ttlMs: LINK_TTL_MS });
  }

  /** Step 1. Returns the CRM contact id and whether this delivery created it. */
  async function upsertContact(
    contact: Contact,
    body: DeliveredBody,
    responsibleUserId: string | null,
    api: CrmApi,
    create: (input: CrmContactInput) => Promise<string>,
  ): Promise<{ id: string; created: boolean; existing: CrmContact | null }> {
    const phones = phonesOf(contact);
    const emails = emailsOf(contact);
    const keys = [contact.id, ...phones, ...emails].map((key) => crmKeys.upsert(destinationId, key));
    return locked([...new Set(keys)], async (stillHeld) => {
      let id: string | null = null;
      // The linked contact is read anyway (to add what it lacks): reading it here costs no extra
      // call, and a contact a manager deleted or merged away is found out before anything is
      // put on it.
      let existing: CrmContact | null = null;
      for (const candidate of await linkedIds(contact)) {
        existing = await api.getContact(candidate);
        if (existing) {
          id = candidate;
          break;
        }
        await forget(candidate);
      }
      let created = false;
      const search = {
        phones: phones.filter((phone) => searchable(contact, 'phone', phone)),
        emails: emails.filter((email) => searchable(contact, 'email', email)),
      };
      if (id === null && (search.phones.length > 0 || search.emails.length > 0)) {
        const matches = await api.findContacts(search);
        // Several CRM contacts may match (duplicates made by hand): the oldest (lowest id) wins.
        matches.sort((a, b) => Number(a.id) - Number(b.id) || a.id.localeCompare(b.id));
        id = matches[0]?.id ?? null;
      }
      if (id === null) {
        const values = displayValues(body);
        await stillHeld();
        id = await create({
          name: contact.name ?? values.contactName,
          phones,
          emails,
          responsibleUserId,
          source: render(destination.crm.source, values),
          externalId: contact.id,
        });
        created = true;
      }
      // Remembered before the lock goes: the next event of this person finds it without a search.
      await store.set(crmKeys.link(destinationId, contact.id), id, { ttlMs: LINK_TTL_MS });
      return { id, created, existing };
    });
  }

  /** False when the CRM no longer has the contact (the caller finds or makes it again). */
  async function addMissingValues(
    contact: Contact,
    crmId: string,
    known: CrmContact | null,
    api: CrmApi,
  ): Promise<boolean> {
    const existing = known?.id === crmId ? known : await api.getContact(crmId);
    if (!existing) return false;
    const have = new Set([
      // A CRM phone value may hold several numbers ("+7 916 …, 8 926 …", typed by a manager):
      // each is a phone the contact has, as the bridge reads such a field from a chat vendor.
      // Read whole, it was no phone, and every number in it was added to the contact again.
      ...existing.phones
        .flatMap(splitPhones)
        .map((phone) => normalizePhone(phone, deps.defaultCountry) ?? phone),
      ...existing.emails.map((email) => normalizeEmail(email) ?? email),
    ]);
    const phones = phonesOf(contact).filter((phone) => !have.has(phone));
    const emails = emailsOf(contact).filter((email) => !have.has(email));
    if (phones.length > 0 || emails.length > 0) await api.addContactValues(existing, { phones, emails });
    return true;
  }

  async function linkBack(contact: Contact, crmId: string, api: CrmApi, body: DeliveredBody) {
    const url = api.contactUrl(crmId);
    const own = contact.identities.filter((item) => item.kind === 'crm' && item.channelId === destinationId);
    if (own.some((item) => item.value === crmId)) {
      if (contact.crmLink === url) return;
      // Linked already, but "Open in CRM" shows another CRM contact of this destination: a merge
      // joined two bridge contacts linked to two CRM contacts, and the newer link showed while
      // the events went on the survivor's (linkedIds: its own first). The link follows the
      // events. Written to the record that holds this CRM id (its identity alone finds it), so
      // an unmerge leaves each contact its own link; a link of another destination is left.
      const ownUrls = new Set(own.map((item) => api.contactUrl(item.value)));
      if (contact.crmLink !== null && !ownUrls.has(contact.crmLink)) return;
      await deps.contacts.observe({
        channelId: destinationId,
        vendor: destination.kind,
        at: deps.now().toISOString(),
        idempotencyKey: `crm-relink:${destinationId}:${crmId}:${contact.id}:${body.id}`,
        identifiers: [{ kind: 'crm', value: crmId, channelId: destinationId, provenance: 'verified' }],
        crmLink: url,
        timeline: [
          {
            at: deps.now().toISOString(),
            type: 'crm.linked',
            summary: `Linked to ${deps.displayName} contact ${crmId} (events of the merged contact go there)`,
            data: { destination: destinationId, crmId, url, event: body.id },
          },
        ],
      });
      return;
    }
    // Another bridge contact holding this CRM id: the CRM matched two contacts the identity rules
    // keep apart (colleagues behind one switchboard, whose numbers with an extension never merge;
    // values the rules do not merge on, in the CRM under one contact). As an identity the id
    // would merge them (it did): this one is linked without it (the link in the store and its
    // crmLink), so its events still go on that CRM contact and the contacts stay two.
    // Who holds it is decided by one atomic claim, not by looking first: two link-backs at once
    // (two instances) both found no holder and both observed the identity, and the second
    // observation merged the two contacts. The claim is kept by a record id: this contact's
    // when it claimed it before (a retry after the observation failed) or absorbed the claimant.
    const holderKey = crmKeys.holder(destinationId, crmId);
    const claimed = await store.set(holderKey, contact.id, { nx: true, ttlMs: LINK_TTL_MS });
    const claimant = claimed ? contact.id : await store.get(holderKey);
    const ours = claimant === null || claimant === contact.id || contact.records.includes(claimant);
    // Contacts linked before the claim existed hold the id with no claim: found by the identity.
    const holder = ours
      ? await deps.contacts.findByIdentifier({ kind: 'crm', value: crmId, channelId: destinationId })
      : null;
    const shared = !ours || (holder !== null && holder.id !== contact.id);
    if (shared && contact.crmLink === url) return;
    // The observation must land on this bridge contact: it carries the identifiers that resolve
    // to it, plus the new `crm` identity (scoped to this destination, so it never merges across).
    // Its ids (vendor-local, person) when it has any, not its phones and e-mails: the contact
    // shows a phone given with an extension as the bare number, and observed again so it became
    // a claim on that number (an extension keeps a phone search-only), which merged the next
    // colleague behind the same switchboard into this contact.
    const ids = contact.identities.filter((item) => item.channelId !== undefined || item.kind === 'person');
    const identifiers: Identifier[] =
      ids.length > 0 ? ids : contact.identities.filter((item) => GLOBAL_KINDS.has(item.kind));
    await deps.contacts.observe({
      channelId: destinationId,
      vendor: destination.kind,
      at: deps.now().toISOString(),
      idempotencyKey: `crm-link:${destinationId}:${crmId}:${contact.id}`,
      // The CRM's own id is verified (issue 10 item 5); the contact's identities keep the
      // provenance the contact shows (a visitor-typed e-mail stays visitor-typed).
      identifiers: [
        ...identifiers,
        ...(shared
          ? []
          : [{ kind: 'crm', value: crmId, channelId: destinationId, provenance: 'verified' as const }]),
      ],
      crmLink: url,
      timeline: [
        {
          at: deps.now().toISOString(),
          type: 'crm.linked',
          summary: `Linked to ${deps.displayName} contact ${crmId}${shared ? ' (linked to another contact too: not merged with it)' : ''}`,
          data: { destination: destinationId, crmId, url, event: body.id },
        },
      ],
    });
  }

  function pipelineFor(body: DeliveredBody): { pipelineId: string | null; stageId: string | null } {
    const channelId = body.channel?.id;
    const { pipeline, stage } = destination.crm;
    const pipelineId = (channelId ? pipeline.byChannel[channelId] : undefined) ?? pipeline.default ?? null;
    const byChannel = channelId ? stage.byChannel[channelId] : undefined;
    const stageId = byChannel !== undefined ? byChannel : (stage.default ?? null);
    return { pipelineId, stageId };
  }

  async function deal(
    body: DeliveredBody,
    crmContactId: string,
    responsibleUserId: string | null,
    api: CrmApi,
    create: (creation: CrmCreation) => Promise<string>,
    /** Something (a task, the transcript note) goes on the deal: a kept id must still exist. */
    writesOnDeal: boolean,
  ): Promise<string> {
    const { pipelineId, stageId } = pipelineFor(body);
    const values = displayValues(body);
    const conversation = dataSchema.safeParse(body.data);
    const conversationId = conversation.success ? conversation.data.conversationId : null;
    const conversationKey =
      destination.crm.deals === 'per-conversation' && conversationId && body.channel
        ? crmKeys.conversationDeal(destinationId, body.channel.id, conversationId)
        : null;
    // Events of one person in different lanes (e.g. two bridge contacts merged meanwhile) must
    // not both miss the open deal and both create one: find-or-create under a lock.
    return locked(
      [crmKeys.upsert(destinationId, `deal:${crmContactId}:${conversationKey ?? pipelineId ?? '-'}`)],
      async (stillHeld) => {
        if (conversationKey) {
          // The chat's deal, unless someone deleted it in the CRM since: a note or task on it
          // would be refused for good, so the chat gets a new one (and the key points at it).
          // Asked of the CRM only when something goes on the deal: every customer message is a
          // deal event, and one more read each would spend amoCRM's ~7 requests/s on nothing.
          const known = await store.get(conversationKey);
          if (known && (!writesOnDeal || (await api.dealExists(known)))) return known;
        } else if (destination.crm.deals === 'one-open') {
          const open = await api.findOpenDeal(crmContactId, pipelineId);
          if (open) return open;
        }
        await stillHeld();
        return await createDeal();
      },
    );

    async function createDeal() {
      const id = await create({
        kind: 'deal',
        input: {
          name: render(destination.crm.dealName, values),
          pipelineId,
          stageId,
          responsibleUserId,
          contactId: crmContactId,
          source: render(destination.crm.source, values),
          utm: body.contact ? utmOf(body.contact, body.data) : {},
          externalId: conversationId ? `${body.channel?.id ?? ''}:${conversationId}` : body.id,
        },
      });
      if (conversationKey) await store.set(conversationKey, id, { ttlMs: LINK_TTL_MS });
      return id;
    }
  }

  return {
    /**
     * Run the event's steps from `progress` on. `checkpoint` must have stored a step's result
     * before it resolves; the next step starts only then.
     */
    async run(
      body: DeliveredBody,
      api: CrmApi,
      start: CrmProgress,
      checkpoint: (patch: CrmProgress) => Promise<void>,
    ): Promise<CrmProgress> {
      const progress: CrmProgress = { ...start };
      const save = async (patch: CrmProgress) => {
        Object.assign(progress, patch);
        await checkpoint(patch);
      };
      const send = (creation: CrmCreation): Promise<string> => {
        switch (creation.kind) {
          case 'contact':
            return api.createContact(creation.input);
          case 'deal':
            return api.createDeal(creation.input);
          case 'task':
            return api.createTask(creation.input);
          case 'note':
            return api.createNote(creation.input);
        }
      };
      /**
       * Create once: the in-flight mark is recorded first, and cleared when the CRM answered
       * that it did not create (an error answer other than a 504); it stays when the answer was
       * lost (CrmError.maybeApplied) or the process died meanwhile, so the retry looks the
       * object up before sending the same create again.
       */
      const createOnce = async (creation: CrmCreation): Promise<string> => {
        const key = `${creation.kind}Pending`;
        const since = progress[key];
        if (since) {
          const found = await api.findCreated({ ...creation, since: new Date(since) });
          if (found.state === 'found') return found.id;
          if (found.state === 'unknown') {
            // Cleared, so a replay (asked for by someone who checked the CRM) creates it.
            await save({ [key]: '' });
            const where =
              'on' in creation.input ? ` on ${creation.input.on.type} ${creation.input.on.id}` : '';
            throw new CrmError(
              'permanent',
              null,
              `${deps.displayName}: the ${creation.kind} sent by an earlier attempt got no answer (timeout or 504), and ${found.reason}; it is not sent again, so as not to make a duplicate: look for it${where} in the CRM, and replay this delivery if it is missing`,
            );
          }
        }
        await save({ [key]: deps.now().toISOString() });
        try {
          return await send(creation);
        } catch (error) {
          if (!(error instanceof CrmError && error.maybeApplied)) await save({ [key]: '' });
          throw error;
        }
      };
      // Events about no one (agents.synced) have nothing to write in a CRM.
      if (!body.contact) return progress;
      // The contact as it is now, not as the event saw it: merged since (the event waited for a
      // retry or a replay meanwhile), it is the surviving contact, whose CRM link, records and
      // phones/e-mails find the CRM contact it already has; the event's own copy would find
      // none of them and make a second CRM contact for the same person.
      const contact = (await deps.contacts.get(body.contact.id))?.contact ?? body.contact;
      const responsibleUserId = await responsible(body);

      const dealStep = destination.crm.deals !== 'none' && DEAL_EVENTS.has(body.type);
      const task = body.routing.task;
      const taskDue = body.type === 'offline_message.received' && !!task && progress.task === undefined;
      const note = body.routing.note;
      const noteDue =
        body.type === 'conversation.finished' &&
        !!note &&
        destination.crm.transcriptNote &&
        progress.note === undefined;
      // Something still to be put on the deal, or on the contact without one.
      const writesOn = taskDue || noteDue;
      // Something still to be put on the contact itself (a replay of a finished delivery has not).
      const contactDue = dealStep ? !progress.deal : writesOn;
      // A contact found but gone by the time its values are synced (a retry after a manager
      // merged it away) is forgotten and the step runs again: at most once more. So is one an
      // earlier attempt recorded, when the deal (or what goes on the contact) is still to be
      // made: the retry may come hours later, after a manager deleted or merged the new contact,
      // and a deal on it would be refused for good, replay or not.
      const resumed = !!start.contact;
      for (let round = 0; ; round++) {
        let known: CrmContact | null = null;
        if (!progress.contact) {
          const { id, created, existing } = await upsertContact(
            contact,
            body,
            responsibleUserId,
            api,
            (input) => createOnce({ kind: 'contact', input }),
          );
          known = existing;
          await save({ contact: id, ...(created ? { contactCreated: 'true' } : {}) });
        }
        if (progress.contactCreated === 'true' || progress.valuesSynced) {
          const recheck = resumed && round === 0 && contactDue;
          if (!recheck || (await api.getContact(progress.contact!))) break;
        } else if (await addMissingValues(contact, progress.contact!, known, api)) {
          await save({ valuesSynced: 'true' });
          break;
        }
        await forget(progress.contact!);
        if (round > 0) {
          throw new CrmError(
            'retry',
            null,
            `${deps.displayName} contact ${progress.contact} vanished while it was being linked`,
          );
        }
        // Nothing of the gone contact's is kept: the next one is linked back in its place.
        await save({ contact: '', contactCreated: '', valuesSynced: '', linked: '' });
      }
      const crmContactId = progress.contact!;
      if (!progress.linked) {
        await linkBack(contact, crmContactId, api, body);
        await save({ linked: 'true' });
      }

      let on: CrmEntityRef = { type: 'contact', id: crmContactId };
      if (dealStep) {
        // A deal an earlier attempt recorded, with the task or note still to go on it: someone
        // may have deleted it in the CRM since (Bitrix24 refuses a comment on it for good,
        // OWNER_NOT_FOUND), and then the event's deal is found or made again.
        if (start.deal && progress.deal && writesOn && !(await api.dealExists(progress.deal)))
          await save({ deal: '' });
        if (!progress.deal) {
          await save({
            deal: await deal(body, crmContactId, responsibleUserId, api, createOnce, writesOn),
          });
        }
        on = { type: 'deal', id: progress.deal! };
      }

      if (taskDue && task) {
        const values = { ...displayValues(body), text: task.text };
        const id = await createOnce({
          kind: 'task',
          input: {
            on,
            text: render(destination.crm.offlineTask.text, values),
            dueAt: new Date(task.dueAt),
            responsibleUserId,
            externalId: body.id,
          },
        });
        await save({ task: id });
      }

      if (noteDue && note) {
        await save({
          note: await createOnce({ kind: 'note', input: { on, text: note.text, externalId: body.id } }),
        });
      }
      return progress;
    },
  };
}
