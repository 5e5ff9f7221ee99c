import { Command, type Redis } from 'ioredis';
import { digestUtf8 } from '../digest.js';
import { ENCODE_TRANSCODED_UNITS, utf8BytesVia } from '../utf8.js';

/**
 * Calls of the store's two hot Lua scripts (the guarded batch and readGroups: one each per
 * observation), written to the socket as one Buffer made here instead of through ioredis's
 * Script and Command. Why not ioredis's own: its Command copies and flattens the arguments,
 * prefixes each key, and writes the RESP text by concatenating a string per argument, and its
 * byte lengths cost a UTF-8 pass over every argument before the socket's own encoding makes a
 * second. A guarded batch has ~50 arguments; a chat_finished one carries a timeline entry of
 * ~30,000 UTF-16 units of Cyrillic, for which each of those passes costs ~30–40 µs in Node 20
 * (V8's Utf8Length/WriteUtf8, not simdutf). Here the keys are prefixed while writing, the short
 * arguments go into one string per run, and each long argument is encoded to UTF-8 exactly once,
 * which also gives its length (one of ENCODE_TRANSCODED_UNITS or more through simdutf: src/utf8.ts). The bytes on the wire are what ioredis writes (test:
 * test/store.script-command.test.ts compares them).
 *
 * What ioredis's Script does and this keeps: EVAL with the script text the first time on each
 * connection, EVALSHA after; a NOSCRIPT reply (the server was restarted or flushed its scripts)
 * forgets that the connection has it and sends the call once more, as EVAL. Everything else
 * (queueing, timeouts, replies, reconnection and resending) is ioredis's, through sendCommand.
 * Not for a Cluster client (it routes a command by its arguments, which this command does not
 * show it): the store uses ioredis's defineCommand there.
 */

/** Arguments up to this many UTF-16 units are framed as text; longer ones are encoded on their own. */
const LONG_ARGUMENT = 1024;

/** A Buffer is sent as its bytes (an outbox entry set aside as it was read). */
export type ScriptArgument = string | number | Buffer;

export type ScriptCall = (keys: readonly string[], args: readonly ScriptArgument[]) => Promise<unknown>;

/** A caller of `lua` on `client`, whose keys get `keyPrefix` (ioredis's keyPrefix is not applied). */
export function scriptCall(client: Redis, lua: string, keyPrefix: string): ScriptCall {
  const sha = digestUtf8('sha1', lua, 'hex');
  /** Sockets this script was sent to with EVAL (so EVALSHA finds it), as ioredis's Script keeps them. */
  const loaded = new WeakSet<object>();

  class ScriptCommand extends Command {
    constructor(
      private readonly callKeys: readonly string[],
      private readonly callArgs: readonly ScriptArgument[],
    ) {
      // No arguments for ioredis to process: they are written by toWritable. Replies as strings,
      // as ioredis's defined commands give them.
      super('evalsha', [], { replyEncoding: 'utf8' });
    }

    override toWritable(socket: object): Buffer {
      const withText = !loaded.has(socket);
      if (withText) loaded.add(socket);
      this.name = withText ? 'eval' : 'evalsha';
      const reject = this.reject;
      this.reject = (error: Error) => {
        if (error.message.includes('NOSCRIPT')) loaded.delete(socket);
        reject.call(this, error);
      };
      return encodeCall(this.name, withText ? lua : sha, this.callKeys, keyPrefix, this.callArgs);
    }
  }

  return async (keys, args) => {
    try {
      return await client.sendCommand(new ScriptCommand(keys, args));
    } catch (error) {
      if (!(error instanceof Error) || !error.message.includes('NOSCRIPT')) throw error;
      // The connection lost the script: this one goes as EVAL (see toWritable).
      return client.sendCommand(new ScriptCommand(keys, args));
    }
  };
}

/**
 * Where long items are encoded before they are copied into the call's Buffer: reused, so a
 * chat_finished entry does not cost a fresh ~90 KB allocation each time. Calls are encoded
 * synchronously, one at a time, so one arena serves them all.
 */
const arena = Buffer.allocUnsafeSlow(256 * 1024);

/**
 * The calls' Buffers are cut from a shared slab, as Node's own pool does for Buffers under 4 KB:
 * a guarded batch is 2–6 KB, past that pool, and an ArrayBuffer of its own per call (two per new
 * contact) was ~0.9 µs of its encoding in a loop, and more for the garbage collector, which
 * tracks each backing store. A slab lives until the last call cut from it has been written.
 */
const SLAB_BYTES = 64 * 1024;
let slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
let slabUsed = 0;
function callBuffer(size: number): Buffer {
  if (size > SLAB_BYTES / 4) return Buffer.allocUnsafe(size);
  if (slabUsed + size > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabUsed = 0;
  }
  const out = slab.subarray(slabUsed, slabUsed + size);
  slabUsed = (slabUsed + size + 7) & ~7; // 8-byte aligned, as Node's pool
  return out;
}

/**
 * `<name> <script> <numkeys> <keys…> <args…>` as RESP: an array of bulk strings. Short items and
 * the framing are gathered into text runs (each written with one encode); a long item is encoded
 * once, which gives its length for the frame, and copied.
 *
 * A run is framed first with each item's length in UTF-16 units, which is its length in UTF-8
 * bytes when the item is ASCII — nearly always (keys, ids, digests, counts) — and checked with
 * one UTF-8 measure of the whole run: any other character takes more bytes than units, so the
 * run's byte length equals its length only when every item in it is ASCII. A run that is not
 * (a Cyrillic name word in a key) is framed again, item by item, with their UTF-8 lengths.
 * Measuring each of a guarded batch's ~50 items instead, and joining an array of their parts,
 * was ~40 % of this function's time (bench/HISTORY.md, twenty-fourth round).
 */
export function encodeCall(
  name: string,
  script: string,
  keys: readonly string[],
  keyPrefix: string,
  args: readonly ScriptArgument[],
): Buffer {
  /** Text runs and, between them, long items' bytes (a view of `arena`, or a Buffer of their own). */
  const chunks: Array<string | Buffer> = [];
  let total = 0;
  /** The current run's short items, framed as if ASCII, and the items themselves (to frame again). */
  let run = '';
  const items: string[] = [];
  /** What ends the run before it: `\r\n` after a long item, or the array's header. */
  let lead = `*${3 + keys.length + args.length}\r\n`;
  let used = 0;
  const endRun = (): string => {
    let text = lead + run;
    let bytes = Buffer.byteLength(text, 'utf8');
    if (bytes !== text.length) {
      text = lead;
      for (const item of items) text += `$${Buffer.byteLength(item, 'utf8')}\r\n${item}\r\n`;
      bytes = Buffer.byteLength(text, 'utf8');
    }
    total += bytes;
    run = '';
    items.length = 0;
    return text;
  };
  const putBytes = (bytes: Buffer) => {
    const frame = `$${bytes.length}\r\n`;
    chunks.push(endRun() + frame, bytes);
    total += frame.length + bytes.length;
    lead = '\r\n';
  };
  const put = (item: string) => {
    if (item.length <= LONG_ARGUMENT) {
      run += `$${item.length}\r\n${item}\r\n`;
      items.push(item);
      return;
    }
    // A long text that is not ASCII is transcoded from its UTF-16, written past the arena's bytes
    // still to be copied; a lone surrogate in it goes the other way, as before. (The engine hands
    // a long timeline entry over as its bytes already: engine.ts, timed.)
    let bytes =
      item.length >= ENCODE_TRANSCODED_UNITS && used + item.length * 2 <= arena.length
        ? utf8BytesVia(item, arena, used)
        : undefined;
    if (bytes === undefined) {
      if (used + item.length * 3 <= arena.length) {
        bytes = arena.subarray(used, used + arena.write(item, used, 'utf8'));
        used += bytes.length;
      } else {
        bytes = Buffer.from(item, 'utf8');
      }
    }
    putBytes(bytes);
  };
  put(name);
  put(script);
  put(String(keys.length));
  for (const key of keys) put(keyPrefix + key);
  for (const arg of args) {
    if (typeof arg === 'string') put(arg);
    else if (typeof arg === 'number') put(String(arg));
    else putBytes(arg);
  }
  chunks.push(endRun());
  const out = callBuffer(total);
  let offset = 0;
  for (const chunk of chunks)
    offset += typeof chunk === 'string' ? out.write(chunk, offset, 'utf8') : chunk.copy(out, offset);
  return out;
}
