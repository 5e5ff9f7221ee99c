import type { z } from 'zod';
import type { CrmDestinationConfig } from '../config/schema.js';

/**
 * The contract between the core and a CRM connector (DESIGN §10): an adapter on the outbound
 * side. The core (src/crm) owns the steps of one event — contact upsert, link back, deal, task,
 * note — with their exactly-once bookkeeping, retries, rate limit and secrecy; a connector only
 * says what each step is in its CRM's API. Connectors are listed in adapters/index.ts.
 */

/** A CRM contact as the core needs it: raw values as the CRM stores them (any format). */
export interface CrmContact {
  id: string;
  phones: string[];
  emails: string[];
}

export interface CrmContactInput {
  name: string;
  /** E.164. */
  phones: string[];
  /** Lower-case. */
  emails: string[];
  responsibleUserId: string | null;
  /** The rendered `crm.source`. */
  source: string;
  /** The bridge contact id (an external id where the CRM has one). */
  externalId: string;
}

export interface CrmDealInput {
  name: string;
  pipelineId: string | null;
  /** null: the pipeline's first stage. */
  stageId: string | null;
  responsibleUserId: string | null;
  contactId: string;
  source: string;
  /** utm_source, utm_medium, ... (lower-case keys) as the chat reported them. */
  utm: Record<string, string>;
  /** Stable per event, for the CRM's external-id / request_id fields. */
  externalId: string;
}

export type CrmEntityRef = { type: 'deal' | 'contact'; id: string };

export interface CrmTaskInput {
  on: CrmEntityRef;
  text: string;
  dueAt: Date;
  responsibleUserId: string | null;
  externalId: string;
}

export interface CrmNoteInput {
  on: CrmEntityRef;
  text: string;
  externalId: string;
}

/**
 * A create whose outcome is unknown (a timeout, a 504: the CRM may have made the object), asked
 * again on the retry with exactly what was sent. `since`: when it was first sent (our clock).
 */
export type CrmCreatedQuery = CrmCreation & { since: Date };

/** One object the flow creates, with what the create is sent. */
export type CrmCreation =
  | { kind: 'contact'; input: CrmContactInput }
  | { kind: 'deal'; input: CrmDealInput }
  | { kind: 'task'; input: CrmTaskInput }
  | { kind: 'note'; input: CrmNoteInput };

/**
 * `found`: that create's object; `absent`: the CRM has none (safe to create); `unknown`: the
 * CRM offers no way to tell (the reason says why), so creating again could make a duplicate.
 */
export type CrmLookup =
  | { state: 'found'; id: string }
  | { state: 'absent' }
  | { state: 'unknown'; reason: string };

export interface CrmUser {
  id: string;
  email: string | null;
  name: string;
  active: boolean;
}

/**
 * A pipeline's stage as `crm check` shows it. `closed`: a deal in it is won or lost, so it is
 * never reused as the contact's open deal; `incoming`: the stage of leads waiting to be sorted
 * (amoCRM's Incoming), not one to create deals in. Absent: an ordinary open stage.
 */
export interface CrmStage {
  id: string;
  name: string;
  kind?: 'closed' | 'incoming';
}

export interface CrmCheckReport {
  /** e.g. "account example (id 31361463)"; never a credential. */
  account: string;
  pipelines: { id: string; name: string; stages: CrmStage[] }[];
  users: CrmUser[];
  /**
   * Why the users could not be listed, when the credential may not (amoCRM lists users to
   * admins only): deliveries then use agents[].crmUserId and the default, unchecked.
   */
  usersUnavailable?: string;
  /**
   * Why tasks would be refused (a Bitrix24 webhook without the `task` scope): offline messages
   * routed to the destination could not become tasks.
   */
  tasksUnavailable?: string;
}

/** What the core lends a connector to reach its CRM. */
export interface CrmTransport {
  /**
   * One HTTP call, under the destination's shared rate limit. Network errors and timeouts
   * become retryable CrmErrors whose message names neither the URL nor a credential.
   */
  send(request: {
    method: 'GET' | 'POST' | 'PATCH';
    url: string;
    headers?: Record<string, string>;
    body?: unknown;
  }): Promise<{ status: number; headers: Record<string, string>; text: string; json: unknown }>;
}

/** One CRM account's API, as the steps of DESIGN §10 use it. */
export interface CrmApi {
  /** Contacts having any of these phones (E.164, matched however the CRM stores them) or e-mails. */
  findContacts(query: { phones: string[]; emails: string[] }): Promise<CrmContact[]>;
  getContact(id: string): Promise<CrmContact | null>;
  createContact(input: CrmContactInput): Promise<string>;
  /** Add phones/e-mails to a contact, keeping every value it has. */
  addContactValues(contact: CrmContact, add: { phones: string[]; emails: string[] }): Promise<void>;
  /** An open deal of this contact in this pipeline (null pipeline: any), or null. */
  findOpenDeal(contactId: string, pipelineId: string | null): Promise<string | null>;
  /** False when the CRM no longer has the deal (deleted by someone in the CRM). */
  dealExists(id: string): Promise<boolean>;
  createDeal(input: CrmDealInput): Promise<string>;
  createTask(input: CrmTaskInput): Promise<string>;
  createNote(input: CrmNoteInput): Promise<string>;
  /** The object an earlier create of exactly this input made, if the CRM can say. */
  findCreated(query: CrmCreatedQuery): Promise<CrmLookup>;
  listUsers(): Promise<CrmUser[]>;
  /** One call round: account, pipelines with stages, users. */
  check(): Promise<CrmCheckReport>;
  /** The contact's page in the CRM ("Open in CRM"). */
  contactUrl(id: string): string;
}

export interface ConnectorDefinition {
  /** The destination `kind`, e.g. `amocrm`. */
  kind: string;
  /** As the CRM calls itself in messages: "token rejected by amoCRM". */
  displayName: string;
  /** What a destination of this kind takes besides the common keys and `crm` (credentials, URL). */
  settings: z.ZodObject;
  /** The CRM's published request rate per second, kept under by default. */
  requestsPerSecond: number;
  /**
   * The shape of the CRM's ids the `crm` block names (pipeline, stage, user), checked with the
   * config: an id the CRM cannot take (`web-leads` for an integer pipeline id) would otherwise
   * be sent as null and land the deal in the CRM's default pipeline. Absent = any id.
   */
  idFormats?: Partial<Record<'pipeline' | 'stage' | 'user', { pattern: RegExp; message: string }>>;
  /**
   * When the destination's credential expires, for the warnings before it does
   * (src/crm/credentials.ts): `expiresAt` null when it may expire but the connector cannot tell
   * when; `renew` says how to get a new one. Absent: the credential has no expiry the bridge can
   * read (a Bitrix24 inbound webhook).
   */
  credentialExpiry?(destination: CrmDestinationConfig): { expiresAt: Date | null; renew: string };
  /** Setting values that are secrets: never logged, shown, or put in an error. */
  secretsOf(destination: CrmDestinationConfig): string[];
  create(destination: CrmDestinationConfig, transport: CrmTransport): CrmApi;
}
