import type { Logger } from 'pino';
import type { Contact } from '../../src/contacts/types.js';
import type { Metrics } from '../../src/metrics.js';
import type { Store } from '../../src/store/types.js';
import type { ChatvisorClient } from './client.js';
import { cachedProfileSchema } from './profiles.js';
import { LABEL_PLACEHOLDER } from './schemas.js';
import { storeKeys } from './state.js';

/**
 * Customer labels: as soon as a Chatvisor customer is identified (its profile or another channel
 * gave the contact a person id, e-mail, phone or attributes), the channel's label templates are
 * rendered for that contact and pushed with tagUser — and again whenever the rendered set differs
 * from the one last pushed for that customer (kept in the store), so a steady contact costs no
 * vendor call.
 */

/**
 * The company's id for this Chatvisor customer: the id its own profile carries (the one Chatvisor
 * matches it by), else the contact's person id when it has exactly one. A merged contact can hold
 * several person ids (two accounts sharing an e-mail); taking the first of them would write
 * another person's id onto the customer in Chatvisor, so with several and none of its own there is
 * none to send.
 */
export function customerPerson(contact: Contact, ownId?: string | null): string | undefined {
  if (ownId) return ownId;
  const persons = new Set(
    contact.identities.filter((identity) => identity.kind === 'person').map((identity) => identity.value),
  );
  return persons.size === 1 ? [...persons][0] : undefined;
}

function placeholderValue(name: string, contact: Contact, person: string | undefined): string | undefined {
  if (name === 'person') return person;
  if (name === 'email') return contact.emails[0];
  if (name === 'phone') return contact.phones[0];
  if (name === 'name') return contact.name ?? undefined;
  if (name === 'contactId') return contact.id;
  if (name.startsWith('attributes.')) {
    const attribute = contact.attributes[name.slice('attributes.'.length)];
    return attribute === undefined ? undefined : String(attribute.value);
  }
  return undefined;
}

/**
 * Render every template; a template with a placeholder that has no value (or an empty one) is
 * left out rather than pushed half-filled ("segment:" would be a wrong label). Sorted and deduped,
 * so the same contact always renders the same set.
 */
export function renderLabels(
  templates: readonly string[],
  contact: Contact,
  person: string | undefined = customerPerson(contact),
): string[] {
  const out = new Set<string>();
  for (const template of templates) {
    let missing = false;
    const label = template.replace(LABEL_PLACEHOLDER, (_match, name: string) => {
      const value = placeholderValue(name, contact, person);
      if (value === undefined || value.trim() === '') missing = true;
      return value ?? '';
    });
    if (!missing && label.trim() !== '') out.add(label.trim());
  }
  return [...out].sort();
}

/**
 * Whether the customer is identified: the contact carries a global identifier (the company's
 * person id, an e-mail, a phone — from the customer's profile or another channel) or attributes.
 * A customer known only by Chatvisor's own id has nothing to be labelled with.
 */
export function isLinked(contact: Contact): boolean {
  return (
    contact.emails.length > 0 ||
    contact.phones.length > 0 ||
    contact.identities.some(
      (identity) => identity.kind === 'person' || identity.kind === 'email' || identity.kind === 'phone',
    ) ||
    Object.keys(contact.attributes).length > 0
  );
}

export interface LabelPusherOptions {
  channelId: string;
  templates: readonly string[];
  client: ChatvisorClient;
  store: Store;
  logger: Logger;
  metrics: Metrics;
}

export type LabelOutcome = 'pushed' | 'unchanged' | 'not_linked' | 'no_templates';

export class LabelPusher {
  private readonly pushes;
  constructor(private readonly options: LabelPusherOptions) {
    this.pushes = options.metrics.counter(
      'chatbridge_chatvisor_label_pushes_total',
      'Chatvisor customer label pushes (tagUser), by channel and outcome (pushed, unchanged, failed)',
      ['channel', 'outcome'] as const,
    );
  }

  /** Call after an observation from this channel resolved the customer to `contact`. */
  async sync(customerId: string, contact: Contact, signal?: AbortSignal): Promise<LabelOutcome> {
    const { templates, store, client, channelId } = this.options;
    if (templates.length === 0) return 'no_templates';
    if (!isLinked(contact)) return 'not_linked';
    const person = customerPerson(contact, await this.ownId(customerId));
    const labels = renderLabels(templates, contact, person);
    const key = storeKeys(channelId).pushedLabels;
    const previous = await store.hget(key, customerId);
    const serialized = JSON.stringify(labels);
    // Never pushed and nothing to push: there is nothing to clear either.
    if (serialized === (previous ?? '[]')) {
      this.pushes.inc({ channel: channelId, outcome: 'unchanged' });
      return 'unchanged';
    }
    try {
      await client.tagUser(customerId, { externalId: person, labels }, { signal });
    } catch (error) {
      this.pushes.inc({ channel: channelId, outcome: 'failed' });
      throw error;
    }
    // Remembered only after Chatvisor took it: a failed push is tried again on the next observation.
    await store.hset(key, customerId, serialized);
    this.pushes.inc({ channel: channelId, outcome: 'pushed' });
    this.options.logger.debug({ customerId, labels: labels.length }, 'chatvisor labels pushed');
    return 'pushed';
  }

  /** The company's id the customer's cached profile carries (profiles.ts), if any. */
  private async ownId(customerId: string): Promise<string | null> {
    const { store, channelId } = this.options;
    const raw = await store.hget(storeKeys(channelId).profiles, customerId);
    if (!raw) return null;
    try {
      const parsed = cachedProfileSchema.safeParse(JSON.parse(raw));
      return parsed.success ? parsed.data.identity.externalId : null;
    } catch {
      return null;
    }
  }
}
