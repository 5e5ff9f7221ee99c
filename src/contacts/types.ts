import { z } from 'zod';

/**
 * The contact model (DESIGN §7) as adapters feed it and as the API shows it.
 * Adapters never write contacts directly: they hand `Observation`s to the ContactService,
 * which resolves identities, merges, dedupes and writes the timeline.
 */

/**
 * `person`, `email` and `phone` are global kinds. Any other kind (`visitor`, `client`,
 * `customer`, ...) is vendor-local and must carry the channel it belongs to: it identifies a
 * contact within that channel only and never merges across channels by itself.
 */
export const identifierSchema = z.object({
  kind: z.string().regex(/^[a-z][a-z0-9_]*$/),
  value: z.string().min(1).max(512),
  channelId: z.string().optional(),
  /**
   * Where the value comes from (issue 10 item 5): `verified` (the company's own id from an
   * authorised widget or app, a CRM id) or `visitor` (typed by the visitor). When absent: person
   * ids are verified, e-mails and phones visitor-typed. Only observations carry it.
   */
  provenance: z.enum(['verified', 'visitor']).optional(),
});
export type Identifier = z.infer<typeof identifierSchema>;

export const attributeTypeSchema = z.enum(['string', 'number', 'boolean', 'date', 'url', 'email', 'phone']);
export type AttributeType = z.infer<typeof attributeTypeSchema>;

export const attributeValueSchema = z.object({
  value: z.union([z.string(), z.number(), z.boolean()]),
  label: z.string().optional(),
  type: attributeTypeSchema.optional(),
});
export type AttributeValue = z.infer<typeof attributeValueSchema>;

/**
 * Attributes keyed by vendor-chosen names, kept in a null-prototype object: zod's record would
 * drop `__proto__`, and a plain object confuses `constructor` or `toString` with inherited
 * members (issue 10 item 14).
 */
export const attributeMapSchema = z
  .custom<Record<string, z.input<typeof attributeValueSchema>>>(
    (value) => typeof value === 'object' && value !== null && !Array.isArray(value),
    'an object of attributes',
  )
  .transform((input, ctx) => {
    const out: Record<string, AttributeValue> = Object.create(null);
    for (const [name, value] of Object.entries(input)) {
      const parsed = attributeValueSchema.safeParse(value);
      if (parsed.success) out[name] = parsed.data;
      else
        for (const issue of parsed.error.issues)
          ctx.addIssue({ ...issue, path: [name, ...issue.path] } as never);
    }
    return out;
  });

export const timelineEntryInputSchema = z.object({
  /** Stable within the observation; with the idempotency key it makes the entry id deterministic. */
  key: z.string().min(1).default('0'),
  at: z.iso.datetime({ offset: true }),
  type: z.string().min(1),
  summary: z.string(),
  data: z.record(z.string(), z.unknown()).default({}),
});
export type TimelineEntryInput = z.input<typeof timelineEntryInputSchema>;

export const timelineEntrySchema = z.object({
  id: z.string(),
  at: z.string(),
  channelId: z.string(),
  vendor: z.string(),
  type: z.string(),
  summary: z.string(),
  data: z.record(z.string(), z.unknown()),
});
export type TimelineEntry = z.infer<typeof timelineEntrySchema>;

/**
 * The entry types the bridge and its adapters write today (the console's type filter offers
 * these). The set is open — an adapter may add one, and stored history keeps whatever it was
 * written with — so a filter takes any type of this form, not only these.
 */
export const timelineEntryTypes = [
  'conversation.started',
  'conversation.assigned',
  'conversation.updated',
  'conversation.finished',
  'conversation.rated',
  'message.received',
  'offline_message.received',
  'call.updated',
  'crm.linked',
  'contact.merged',
  'contact.unmerged',
  'contact.reindexed',
] as const;
export const timelineEntryTypeSchema = z
  .string()
  .max(64)
  .regex(/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/, 'an entry type such as conversation.finished');

export const agentRefSchema = z.object({
  email: z.string().optional(),
  name: z.string().optional(),
  id: z.string().optional(),
});
export type AgentRef = z.infer<typeof agentRefSchema>;

/**
 * The one shape of a chat message, wherever it travels (issue 12 item 1): a finished
 * conversation's transcript (`data.messages` of `conversation.finished` timeline entries and
 * outbound events) and a single message (`message.received`: the message's fields are the event
 * data's). Every adapter produces it; delivery (the CRM note) and the console read only it.
 */
export const transcriptAuthorTypes = ['visitor', 'agent', 'bot', 'system', 'unknown'] as const;

export const transcriptAuthorSchema = z.object({
  /** Who wrote it; a vendor's own word for it that is none of these is `unknown`. */
  type: z.enum(transcriptAuthorTypes),
  /** The vendor's id of the agent, when it gives one. */
  id: z.string().optional(),
  name: z.string().optional(),
  email: z.string().optional(),
});
export type TranscriptAuthor = z.infer<typeof transcriptAuthorSchema>;

/**
 * Entries stored before issue 12 may hold Chatvisor's old form, `author: "customer" | "agent" |
 * "system"` with `agentEmail` beside it; it is read as the one shape, so history stays readable.
 */
function fromStoredForm(value: unknown): unknown {
  if (
    typeof value !== 'object' ||
    value === null ||
    typeof (value as { author?: unknown }).author !== 'string'
  )
    return value;
  const { author, agentEmail, ...rest } = value as { author: string; agentEmail?: unknown };
  const type =
    author === 'customer' ? 'visitor' : author === 'agent' || author === 'system' ? author : 'unknown';
  return { ...rest, author: { type, ...(typeof agentEmail === 'string' ? { email: agentEmail } : {}) } };
}

export const transcriptMessageSchema = z.preprocess(
  fromStoredForm,
  z.object({
    /** ISO 8601; null when the vendor gave no time. */
    at: z.string().nullable(),
    author: transcriptAuthorSchema,
    text: z.string(),
  }),
);
export type TranscriptMessage = z.infer<typeof transcriptMessageSchema>;

/**
 * The transcript in a conversation's data (`data.messages`), each message in the one shape; what
 * does not fit it is left out. Empty when there is none.
 */
export function transcriptOf(data: Record<string, unknown> | null | undefined): TranscriptMessage[] {
  const messages = data?.messages;
  if (!Array.isArray(messages)) return [];
  const out: TranscriptMessage[] = [];
  for (const raw of messages) {
    const parsed = transcriptMessageSchema.safeParse(raw);
    if (parsed.success) out.push(parsed.data);
  }
  return out;
}

/** An outbound event an adapter wants delivered (conversation.*, message.received, ...). */
export const eventInputSchema = z.object({
  type: z.string(),
  /** Stable within the observation, for a deterministic event id. */
  key: z.string().default('0'),
  data: z.record(z.string(), z.unknown()).default({}),
});
export type EventInput = z.input<typeof eventInputSchema>;

export const observationSchema = z.object({
  channelId: z.string(),
  vendor: z.string(),
  /** When the vendor says this happened (ISO 8601). */
  at: z.iso.datetime({ offset: true }),
  /**
   * Derived by the adapter from the payload; the same delivery repeated gives the same key,
   * and a repeated key changes nothing (DESIGN §7 Idempotency).
   */
  idempotencyKey: z.string().min(1).max(512),
  /**
   * Keys an older version gave this same event, when the adapter's keying changed since: a
   * redelivery of an event that version recorded (a vendor's retry across the upgrade, or a
   * deferred item an older worker recorded before it stopped) is found under one of them. The
   * engine looks them up only while such keys can still exist (engine.ts, formerKeysUntil), and
   * counts one only for the contact the observation's identifiers lead to.
   */
  formerIdempotencyKeys: z.array(z.string().min(1).max(512)).max(4).optional(),
  /**
   * Keys this event shares with other deliveries that report the same fact in another form (a
   * LiveTex rating carried by the dialog's close and by its own rated event): a delivery that
   * finds one of them recorded for its contact is a repeat, and recording it records them all.
   * Checked in the same atomic write as idempotencyKey, so two such deliveries that arrive
   * together record the fact once, whichever instance takes each (no lock).
   */
  sharedIdempotencyKeys: z.array(z.string().min(1).max(512)).max(4).optional(),
  /**
   * The observation restates a state (a client card, a conversation's status, a dialog's
   * operators) rather than reporting a one-off event: its key makes a repeat only for
   * identity.snapshotDedupeSeconds, which spans the vendor's retries. After that the same state
   * again is a return to it (a card back on its earlier responsible agent), news to record.
   */
  snapshot: z.boolean().optional(),
  /** Every identifier the payload carries: person, email, phone and vendor-local ids. */
  identifiers: z.array(identifierSchema).default([]),
  names: z.array(z.string()).default([]),
  attributes: attributeMapSchema.default({}),
  labels: z.array(z.string()).default([]),
  /**
   * The customer's responsible agent as the vendor names them (README, Responsible agent). Absent:
   * the observation says nothing about it. `null`: the vendor says explicitly that nobody is
   * (an unassignment), which clears it like a newer agent would replace it. An agent with no
   * e-mail, name or id says nothing either.
   */
  responsibleAgent: agentRefSchema.nullable().optional(),
  crmLink: z.string().optional(),
  timeline: z.array(timelineEntryInputSchema).default([]),
  events: z.array(eventInputSchema).default([]),
});
export type Observation = z.input<typeof observationSchema>;
export type ParsedObservation = z.output<typeof observationSchema>;

export const contactChannelSchema = z.object({
  channelId: z.string(),
  vendor: z.string(),
  firstSeen: z.string(),
  lastSeen: z.string(),
  observations: z.number(),
  /** Timeline entries of type conversation.finished seen in this channel. */
  conversations: z.number(),
});

export const mergeRecordSchema = z.object({
  at: z.string(),
  /** The record that joined this contact. */
  recordId: z.string(),
  /** The identifier that caused it. */
  via: identifierSchema,
  /** `false`: a group joined only through visitor-typed values (issue 10 item 5). Absent: proven. */
  verified: z.literal(false).optional(),
});

/** The unified contact as the API, the vendor answers and outbound events see it. */
export const contactSchema = z.object({
  id: z.string(),
  name: z.string().nullable(),
  names: z.array(z.string()),
  emails: z.array(z.string()),
  phones: z.array(z.string()),
  identities: z.array(identifierSchema),
  labels: z.array(z.string()),
  attributes: z.record(z.string(), attributeValueSchema.extend({ channelId: z.string(), at: z.string() })),
  responsibleAgent: agentRefSchema.nullable(),
  crmLink: z.string().nullable(),
  channels: z.array(contactChannelSchema),
  /** Record ids merged into this contact (the contact's own id first). */
  records: z.array(z.string()),
  merges: z.array(mergeRecordSchema),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type Contact = z.infer<typeof contactSchema>;

/**
 * What became of an identity conflict, read from its contacts now (src/contacts/conflicts.ts):
 * `open` while two of them are apart, `merged` once staff merged them by hand, `resolved` once a
 * later merge (a chat naming them) made them one contact.
 */
export const conflictStateSchema = z.enum(['open', 'merged', 'resolved']);
export type ConflictState = z.infer<typeof conflictStateSchema>;

/** An identity conflict as GET /api/v1/identity/conflicts lists it. */
export const conflictSchema = z.object({
  at: z.string(),
  /** A merge the guard rails refused (too_large, unmerged_before), or a re-index finding (renormalized). */
  reason: z.enum(['too_large', 'unmerged_before', 'renormalized']),
  /** The contacts the identifier named, as they were then. */
  roots: z.array(z.string()),
  via: identifierSchema,
  channelId: z.string().optional(),
  /** renormalized: the identifier's stored form before the re-index. */
  was: z.string().optional(),
  state: conflictStateSchema,
  /** merged or resolved: the contact they are one of now. */
  mergedInto: z.string().optional(),
});
export type Conflict = z.infer<typeof conflictSchema>;

export interface ObserveResult {
  contact: Contact;
  created: boolean;
  /** The idempotency key had been seen: nothing was written. */
  duplicate: boolean;
}

/** A fact shown to an agent (JivoChat custom_data, LiveTex attributes), most useful first. */
export const factSchema = z.object({
  key: z.string(),
  label: z.string(),
  value: z.string(),
  type: attributeTypeSchema.default('string'),
  link: z.string().optional(),
  /**
   * `false` when the fact rests only on visitor-typed values (issue 10 item 5): the chat reached
   * this contact through an e-mail or phone the visitor typed, not a verified id. Absent: verified.
   */
  verified: z.literal(false).optional(),
});
export type Fact = z.infer<typeof factSchema>;
