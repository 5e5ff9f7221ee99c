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
 * (V8's Utf8Length/WriteUtf8, not simdutf). Here every item is written once, straight into the
 * bytes sent (encodeCall): the keys prefixed while writing, a short ASCII item copied a byte per
 * character, any other encoded to UTF-8 exactly once, which also gives its length (one of
 * ENCODE_TRANSCODED_UNITS or more through simdutf: src/utf8.ts). The bytes on the wire are what
 * ioredis writes (test: test/store.script-command.test.ts compares them).
 *
 * What ioredis's Script does and this keeps: EVAL with the script text the first time on each
 * connection, EVALSHA after; a NOSCRIPT reply (the server was restarted or flushed its scripts)
 * forgets that the connection has it and sends the call once more, as EVAL. Everything else
 * (queueing, timeouts, replies, reconnection and resending) is ioredis's, through sendCommand.
 * Not for a Cluster client (it routes a command by its arguments, which this command does not
 * show it): the store uses ioredis's defineCommand there.
 */

/**
 * Arguments and keys up to this many UTF-16 units are written byte by byte while they are ASCII
 * (encodeCall); longer ones, and any that is not ASCII, through Buffer#write.
 */
const SHORT_ITEM = 256;

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
 * Where a call too large for the slab (below) is written before it is copied into a Buffer of its
 * own size: reused, so a chat_finished entry does not cost a fresh ~90 KB allocation each time.
 * Calls are encoded synchronously, one at a time, so one arena serves them all.
 */
const arena = Buffer.allocUnsafeSlow(256 * 1024);

/**
 * Calls are written into a shared slab, as Node's own pool does for Buffers under 4 KB: a
 * guarded batch is 2–6 KB, past that pool, and an ArrayBuffer of its own per call (two per new
 * contact) was ~0.9 µs of its encoding in a loop, and more for the garbage collector, which
 * tracks each backing store. A call takes what it wrote and gives back the rest of the room it
 * was given (its bound, see encodeCall). A slab lives until the last call cut from it has been
 * written.
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

/** The bytes of a RESP bulk string's frame beside its item: `$`, the length's digits, 2 × CRLF. */
const FRAME_BYTES = 16;

/** How many decimal digits `value` (a non-negative integer) takes. */
function decimalDigits(value: number): number {
  let digits = 1;
  while (value >= 10) {
    value = Math.floor(value / 10);
    digits++;
  }
  return digits;
}

/** Writes `value`'s decimal digits into `to` at `at`; returns where they end. */
function writeDigits(to: Buffer, at: number, value: number): number {
  const end = at + decimalDigits(value);
  for (let index = end - 1; index >= at; index--) {
    to[index] = 48 + (value % 10);
    value = Math.floor(value / 10);
  }
  return end;
}

/**
 * `<name> <script> <numkeys> <keys…> <args…>` as RESP (an array of bulk strings), written once
 * into the bytes that are sent. A short item that is ASCII — nearly all of them: keys, ids,
 * digests, counts — is copied a character a byte by a loop here, its frame's digits with it;
 * any other item is written by Buffer#write (UTF-8) past room for its longest frame, which is
 * moved up when the frame is shorter. Each item's UTF-8 is at most 3 bytes per UTF-16 unit, so
 * the call's bound is known before any of it is written, and the call goes straight into the
 * slab (or, when larger, the arena, then a Buffer of its size).
 *
 * Before, short items were gathered into text runs (a template string per item), measured with
 * Buffer.byteLength and then written: two passes over a flattened copy of the run and ~12 KB of
 * strings per known webhook. Captured calls in a loop, paired blocks (bench/HISTORY.md,
 * twenty-eighth round): a new contact's guarded batch in 57–70 % of the time, a known one's in
 * 55–75 %, the group read in 45–75 %; ~2–3 µs less per new-contact webhook.
 */
export function encodeCall(
  name: string,
  script: string,
  keys: readonly string[],
  keyPrefix: string,
  args: readonly ScriptArgument[],
): Buffer {
  let bound = 2 * FRAME_BYTES + 3 * (name.length + script.length) + FRAME_BYTES + 30;
  bound += keys.length * (3 * keyPrefix.length + FRAME_BYTES);
  for (const key of keys) bound += 3 * key.length;
  for (const arg of args)
    bound +=
      FRAME_BYTES + (typeof arg === 'string' ? 3 * arg.length : typeof arg === 'number' ? 72 : arg.length);
  let to: Buffer;
  let at: number;
  if (bound <= SLAB_BYTES / 4) {
    if (slabUsed + bound > SLAB_BYTES) {
      slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      slabUsed = 0;
    }
    to = slab;
    at = slabUsed;
  } else {
    to = bound <= arena.length ? arena : Buffer.allocUnsafe(bound);
    at = 0;
  }
  const start = at;

  // `at` is shared by these closures, so each works on a local copy and stores it back: a loop
  // on the shared one reads and writes it through their context at every byte (~15 % slower).
  const putBytes = (bytes: Buffer) => {
    let p = at;
    to[p++] = 36; // $
    p = writeDigits(to, p, bytes.length);
    to[p++] = 13;
    to[p++] = 10;
    p += bytes.copy(to, p);
    to[p++] = 13;
    to[p++] = 10;
    at = p;
  };
  /** Any text, as UTF-8 (lone surrogates as U+FFFD, as ioredis writes them). */
  const putText = (text: string) => {
    // A long text that is not ASCII is transcoded from its UTF-16, written where its bytes go; a
    // lone surrogate in it goes the other way, as before. (The engine hands a long timeline entry
    // over as its bytes already: engine.ts, timed.)
    if (text.length >= ENCODE_TRANSCODED_UNITS) {
      const bytes = utf8BytesVia(text, to, at);
      if (bytes !== undefined) return putBytes(bytes);
    }
    let p = at;
    const room = 3 + decimalDigits(3 * text.length);
    const bytes = to.write(text, p + room, 'utf8');
    const frame = 3 + decimalDigits(bytes);
    if (frame !== room) to.copyWithin(p + frame, p + room, p + room + bytes);
    to[p++] = 36;
    p = writeDigits(to, p, bytes);
    to[p++] = 13;
    to[p++] = 10;
    p += bytes;
    to[p++] = 13;
    to[p++] = 10;
    at = p;
  };
  /** `prefix` and `item` as one bulk string (a key and the client's prefix). */
  const put = (item: string, prefix: string) => {
    const units = prefix.length + item.length;
    if (units <= SHORT_ITEM) {
      let p = at;
      to[p++] = 36;
      p = writeDigits(to, p, units);
      to[p++] = 13;
      to[p++] = 10;
      let ascii = true;
      for (let index = 0; index < prefix.length; index++) {
        const unit = prefix.charCodeAt(index);
        if (unit > 127) {
          ascii = false;
          break;
        }
        to[p++] = unit;
      }
      if (ascii)
        for (let index = 0; index < item.length; index++) {
          const unit = item.charCodeAt(index);
          if (unit > 127) {
            ascii = false;
            break;
          }
          to[p++] = unit;
        }
      if (ascii) {
        to[p++] = 13;
        to[p++] = 10;
        at = p;
        return;
      }
      // Not ASCII: its bytes are more than its units; written again from `at` below.
    }
    putText(prefix === '' ? item : prefix + item);
  };

  to[at++] = 42; // *
  at = writeDigits(to, at, 3 + keys.length + args.length);
  to[at++] = 13;
  to[at++] = 10;
  put(name, '');
  put(script, '');
  put(String(keys.length), '');
  for (const key of keys) put(key, keyPrefix);
  for (const arg of args) {
    if (typeof arg === 'string') put(arg, '');
    else if (typeof arg === 'number') put(String(arg), '');
    else putBytes(arg);
  }
  if (to === slab) {
    slabUsed = (at + 7) & ~7; // 8-byte aligned, as Node's pool
    return slab.subarray(start, at);
  }
  if (to !== arena) return to.subarray(0, at);
  const out = callBuffer(at);
  arena.copy(out, 0, 0, at);
  return out;
}
