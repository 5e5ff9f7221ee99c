import type { Logger } from 'pino';
import { z } from 'zod';
import type { Metrics } from '../../src/metrics.js';
import type { Store } from '../../src/store/types.js';
import type { ChatvisorClient } from './client.js';
import { ChatvisorAuthError } from './errors.js';
import { profileDigest } from './mapper.js';
import { type Customer, type CustomerIdentity, customerIdentitySchema } from './schemas.js';
import { storeKeys } from './state.js';

/**
 * Customer profiles (DESIGN §7): a webhook or a polled conversation names only Chatvisor's
 * vendor-local `customerId`; the profile read over REST (getCustomer) says who the customer is —
 * the company's own id (`id`, identifier kind `person`), e-mail and names.
 *
 * The identity part of each profile is cached per channel in the store
 * (`chatvisor:<channel>:profiles`), so a busy conversation costs one profile read, not one per
 * message, and every later event of that customer lands on the person's contact directly. A
 * cached profile is read again
 * - when a new conversation starts (the moment a customer is most likely to have logged in or
 *   changed their details),
 * - when it is older than the channel's `profileRefresh`,
 * - and whenever a listing hands it to us anyway (polling by customers), at no cost.
 * A read that finds different identity fields is a change: the caller links the new identity and
 * pushes labels again.
 *
 * A read that fails never loses anything: the event is already on the vendor-local contact. The
 * customer is marked pending (`…:profiles:pending`) and identified on its next event or poll. A
 * customer with no cached profile is marked pending before its first read, too, so a process that
 * dies during that read does not leave it unidentified until its next conversation.
 */
export const cachedProfileSchema = z.object({
  identity: customerIdentitySchema,
  digest: z.string(),
  fetchedAt: z.string(),
  /**
   * The agent (e-mail, lower case) a read found the customer assigned to, null when none, once
   * the contact has it (assignmentSaved): a read's new assignee is not kept here before that.
   * Absent in profiles cached by a version that did not keep it: the next read's assignee is new.
   * Kept beside the identity, not in it: a reassignment is no new identity (no labels pushed again).
   */
  assignedUser: z.string().nullable().optional(),
});
export type CachedProfile = z.infer<typeof cachedProfileSchema>;

export interface Identification {
  /** The best identity known: fresh, or the cached one when a read failed; null when none. */
  identity: CustomerIdentity | null;
  /** The identity differs from the cached one (a first read counts as a change). */
  changed: boolean;
  source: 'cache' | 'fetched' | 'offered' | 'failed';
  /**
   * The agent (e-mail, lower case) this read found the customer assigned to, when it found one
   * that differs from the one found before (a first assignee counts): the contact's responsible
   * agent (README, Responsible agent). Undefined otherwise, also when the read found none: that is
   * no unassignment (assigneeOf).
   */
  assigned?: string;
}

/**
 * The customer's assignee as the read says it: `assignedUser`, the agent's e-mail ("Assign
 * customer" [S1]; the read field is assumed, operations.ts), lower-cased. Null for none: the
 * customer may be assigned to a team instead, or the tenant may not assign customers at all, so
 * the bridge takes no assignee as no news, never as an unassignment.
 */
export function assigneeOf(customer: Customer): string | null {
  const email = customer.assignedUser?.trim().toLowerCase();
  return email ? email : null;
}

export interface ProfilesOptions {
  channelId: string;
  client: ChatvisorClient;
  store: Store;
  logger: Logger;
  metrics: Metrics;
  /** ms after which a cached profile is read again on the customer's next event. */
  refreshMs: number;
  now(): Date;
}

export function identityOf(customer: Customer): CustomerIdentity {
  return {
    customerId: customer.customerId,
    externalId: customer.externalId,
    email: customer.email,
    firstname: customer.firstname,
    lastname: customer.lastname,
  };
}

function parseCached(raw: string | null | undefined): CachedProfile | null {
  if (!raw) return null;
  try {
    const parsed = cachedProfileSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export class CustomerProfiles {
  private readonly reads;

  constructor(private readonly options: ProfilesOptions) {
    this.reads = options.metrics.counter(
      'chatbridge_chatvisor_profile_reads_total',
      'Chatvisor customer profile lookups, by channel and outcome (cached, fetched, changed, failed)',
      ['channel', 'outcome'] as const,
    );
  }

  private get keys() {
    return storeKeys(this.options.channelId);
  }

  async cached(customerId: string): Promise<CachedProfile | null> {
    return parseCached(await this.options.store.hget(this.keys.profiles, customerId));
  }

  /**
   * The cached profiles of `customerIds` (a poll page's) and which of them are pending, added to
   * `profiles` and `pending`: their fields only (HMGET), as the poller reads the conversation
   * state. The hashes hold one field per customer the channel ever had, a profile of some size each.
   */
  async readSome(
    customerIds: readonly string[],
    profiles: Map<string, CachedProfile>,
    pending: Set<string>,
  ): Promise<void> {
    if (customerIds.length === 0) return;
    const [cached, marks] = await Promise.all([
      this.options.store.hmget(this.keys.profiles, customerIds),
      this.options.store.hmget(this.keys.profilePending, customerIds),
    ]);
    customerIds.forEach((customerId, index) => {
      const parsed = parseCached(cached[index]);
      if (parsed) profiles.set(customerId, parsed);
      if (marks[index] != null) pending.add(customerId);
    });
  }

  /** Customers whose profile could not be read yet. */
  async pending(): Promise<Set<string>> {
    return new Set(Object.keys(await this.options.store.hgetall(this.keys.profilePending)));
  }

  /** Mark a customer to be identified later (its next event or poll reads the profile). */
  async markPending(customerId: string, reason: string): Promise<void> {
    await this.options.store.hset(
      this.keys.profilePending,
      customerId,
      JSON.stringify({ at: this.options.now().toISOString(), reason }),
    );
  }

  async isPending(customerId: string): Promise<boolean> {
    return (await this.options.store.hget(this.keys.profilePending, customerId)) !== null;
  }

  private stale(cached: CachedProfile): boolean {
    const age = this.options.now().getTime() - Date.parse(cached.fetchedAt);
    return !(age < this.options.refreshMs);
  }

  /**
   * Who the customer is: from the cache when it is fresh, otherwise read from Chatvisor.
   * `refresh` forces a read (a new conversation). `cached` may be passed by a caller that has
   * just read it. A failed read is recorded as pending and answered with the cached identity, if
   * any; only a revoked token (and shutdown) is thrown, because then nothing else will work either.
   */
  async identify(
    customerId: string,
    input: { refresh?: boolean; cached?: CachedProfile | null; signal?: AbortSignal | undefined } = {},
  ): Promise<Identification> {
    const cached = input.cached !== undefined ? input.cached : await this.cached(customerId);
    if (cached && !input.refresh && !this.stale(cached) && !(await this.isPending(customerId))) {
      this.reads.inc({ channel: this.options.channelId, outcome: 'cached' });
      return { identity: cached.identity, changed: false, source: 'cache' };
    }
    // A customer with nothing cached is marked pending for as long as its first read runs (done
    // clears it, a failure overwrites it with why): a process that dies meanwhile leaves a
    // customer no later poll would read otherwise — poll runs read only pending customers, and
    // its status is recorded already. One write per customer's first read, not per event.
    if (!cached) await this.markPending(customerId, 'first profile read not finished');
    let customer: Customer;
    try {
      customer = await this.options.client.getCustomer(customerId, { signal: input.signal });
    } catch (error) {
      this.reads.inc({ channel: this.options.channelId, outcome: 'failed' });
      await this.markPending(customerId, (error as Error).message);
      this.options.logger.warn(
        { customerId, err: error },
        'could not read the Chatvisor customer profile; the customer is identified later',
      );
      if (error instanceof ChatvisorAuthError || input.signal?.aborted) throw error;
      return { identity: cached?.identity ?? null, changed: false, source: 'failed' };
    }
    return this.remember(identityOf(customer), assigneeOf(customer), cached, 'fetched');
  }

  /**
   * A profile that came with a listing (polling by customers): cached without a call. Written
   * only when it changed or the cached one is stale, so a steady customer costs no store write.
   */
  async offer(customer: Customer, cached: CachedProfile | null): Promise<Identification> {
    const identity = identityOf(customer);
    const assignee = assigneeOf(customer);
    if (
      cached &&
      cached.digest === profileDigest(identity) &&
      !this.stale(cached) &&
      (assignee === null || cached.assignedUser === assignee)
    ) {
      return { identity: cached.identity, changed: false, source: 'cache' };
    }
    return this.remember(identity, assignee, cached, 'offered');
  }

  /**
   * The customer's new assignee (Identification.assigned) is on the contact now: remembered, so
   * the next read finding it again is no news. Nothing to do when the profile is no longer cached
   * (forgotten meanwhile: its next read is a first one).
   */
  async assignmentSaved(customerId: string, assignee: string): Promise<void> {
    const cached = await this.cached(customerId);
    if (!cached || cached.assignedUser === assignee) return;
    const entry: CachedProfile = { ...cached, assignedUser: assignee };
    await this.options.store.hset(this.keys.profiles, customerId, JSON.stringify(entry));
  }

  private async remember(
    identity: CustomerIdentity,
    assignee: string | null,
    cached: CachedProfile | null,
    source: 'fetched' | 'offered',
  ): Promise<Identification> {
    const { store, channelId, now } = this.options;
    const digest = profileDigest(identity);
    const changed = cached?.digest !== digest;
    // A read that finds no assignee keeps the one found before: the next read finding that one
    // again is then no news either (assigneeOf: none is not an unassignment). A new one is not
    // remembered here but once the contact has it (assignmentSaved): if saving it fails, the
    // next read finds it new again and says it again, instead of taking it for known.
    const assignedUser = cached?.assignedUser ?? null;
    const assigned = assignee !== null && assignee !== cached?.assignedUser ? assignee : undefined;
    const entry: CachedProfile = { identity, digest, fetchedAt: now().toISOString(), assignedUser };
    await store.hset(this.keys.profiles, identity.customerId, JSON.stringify(entry));
    await store.hdel(this.keys.profilePending, identity.customerId);
    if (source === 'fetched') this.reads.inc({ channel: channelId, outcome: 'fetched' });
    if (changed) this.reads.inc({ channel: channelId, outcome: 'changed' });
    return { identity, changed, source, ...(assigned === undefined ? {} : { assigned }) };
  }
}
