/**
 * Pincer plugin SDK for JavaScript and TypeScript (jco / componentize-js).
 *
 * A thin layer over the component imports of `sdk/wit` (the
 * `pincer:plugin@0.2.0` worlds plus `wasi:http`), whose TypeScript types
 * `jco guest-types` generates at build time:
 *
 * - `http.request(...)`: outbound HTTP through `wasi:http` (the host checks
 *   allowed hosts and fills in secret placeholders);
 * - `kv`: the plugin's durable key-value store (bytes, text or JSON);
 * - `log`: structured lines in the host's log, tagged with the plugin;
 * - `secrets`, `clock`;
 * - typed errors (`PincerError` and `errors.*`) that reach the host as the
 *   contract's `error` variant; `guard(fn)` wraps an export so any throw does.
 *
 * The build copies this file next to the plugin's sources: import it as
 * `./pincer.js`.
 */
import * as hostKv from 'pincer:plugin/kv@0.2.0';
import * as hostLog from 'pincer:plugin/log@0.2.0';
import * as hostSecrets from 'pincer:plugin/secrets@0.2.0';
import * as hostClock from 'pincer:plugin/clock@0.2.0';
import type { Error as WitError } from 'pincer:plugin/types@0.2.0';
import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import {
  Fields,
  OutgoingBody,
  OutgoingRequest,
  RequestOptions,
  type Method,
} from 'wasi:http/types@0.2.12';

/** A typed failure; `guard` turns it into the contract's `error` variant. */
export class PincerError extends Error {
  constructor(
    /** The `error` case: config, auth, transient, rate-limited, permanent, unsupported, formatting. */
    public readonly kind: WitError['tag'],
    message: string,
    /** For `rate-limited`: how long the host waits before retrying. */
    public readonly retryAfterMs: number = 1000,
  ) {
    super(message);
  }

  /** The value the host receives. */
  toWit(): WitError {
    if (this.kind === 'rate-limited') {
      return { tag: 'rate-limited', val: { retryAfterMs: BigInt(this.retryAfterMs), message: this.message } };
    }
    return { tag: this.kind, val: this.message } as WitError;
  }
}

/** Shorthands for the typed errors. */
export const errors = {
  config: (m: string) => new PincerError('config', m),
  auth: (m: string) => new PincerError('auth', m),
  transient: (m: string) => new PincerError('transient', m),
  rateLimited: (m: string, retryAfterMs: number) => new PincerError('rate-limited', m, retryAfterMs),
  permanent: (m: string) => new PincerError('permanent', m),
  unsupported: (m: string) => new PincerError('unsupported', m),
  formatting: (m: string) => new PincerError('formatting', m),
};

/** A host import's failure (jco throws an error carrying the `error` value as `payload`). */
function fromHost(e: unknown): PincerError {
  const payload = (e as { payload?: WitError })?.payload;
  if (payload && typeof payload === 'object' && 'tag' in payload) {
    if (payload.tag === 'rate-limited') {
      return new PincerError('rate-limited', payload.val.message, Number(payload.val.retryAfterMs));
    }
    return new PincerError(payload.tag, String(payload.val));
  }
  return new PincerError('permanent', String(e));
}

function hostCall<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw fromHost(e);
  }
}

/** Run an export's body; any throw reaches the host as a typed `error`. */
export function guard<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof PincerError) throw e.toWit();
    throw { tag: 'permanent', val: e instanceof Error ? `${e.name}: ${e.message}` : String(e) };
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The plugin's durable key-value store. */
export const kv = {
  get: (key: string): Uint8Array | undefined => hostCall(() => hostKv.get(key)),
  set: (key: string, value: Uint8Array | string): void =>
    hostCall(() => hostKv.set(key, typeof value === 'string' ? enc.encode(value) : value)),
  delete: (key: string): void => hostCall(() => hostKv.delete(key)),
  listKeys: (prefix = ''): string[] => hostCall(() => hostKv.listKeys(prefix)),
  increment: (key: string, delta = 1): number => Number(hostCall(() => hostKv.increment(key, BigInt(delta)))),
  getText: (key: string): string | undefined => {
    const v = kv.get(key);
    return v === undefined ? undefined : dec.decode(v);
  },
  getJson: <T>(key: string): T | undefined => {
    const v = kv.getText(key);
    return v === undefined ? undefined : (JSON.parse(v) as T);
  },
  setJson: (key: string, value: unknown): void => kv.set(key, JSON.stringify(value)),
};

type Fieldset = Record<string, string | number | boolean>;
const pairs = (fields: Fieldset): [string, string][] =>
  Object.entries(fields).map(([k, v]) => [k, String(v)]);

/** Structured log lines in the host's log. */
export const log = {
  trace: (m: string, f: Fieldset = {}) => hostLog.write('trace', m, pairs(f)),
  debug: (m: string, f: Fieldset = {}) => hostLog.write('debug', m, pairs(f)),
  info: (m: string, f: Fieldset = {}) => hostLog.write('info', m, pairs(f)),
  warn: (m: string, f: Fieldset = {}) => hostLog.write('warn', m, pairs(f)),
  error: (m: string, f: Fieldset = {}) => hostLog.write('error', m, pairs(f)),
};

/** Secrets stay in the host; put `placeholder(name)` where the value belongs. */
export const secrets = {
  exists: (name: string): boolean => hostSecrets.exists(name),
  placeholder: (name: string): string => hostSecrets.placeholder(name),
};

/** The host's clock. */
export const clock = {
  nowMs: (): number => Number(hostClock.nowMs()),
};

/** A whole HTTP response. */
export class Response {
  constructor(
    public readonly status: number,
    public readonly headers: [string, string][],
    public readonly body: Uint8Array,
  ) {}
  header(name: string): string | undefined {
    const n = name.toLowerCase();
    return this.headers.find(([k]) => k.toLowerCase() === n)?.[1];
  }
  text(): string {
    return dec.decode(this.body);
  }
  json<T = unknown>(): T {
    try {
      return JSON.parse(this.text()) as T;
    } catch (e) {
      throw errors.permanent(`response is not JSON: ${String(e)}`);
    }
  }
  /** This response for a status below 400, else the typed error the status means. */
  ok(): this {
    const s = this.status;
    if (s < 400) return this;
    const msg = `HTTP ${s}: ${this.text().slice(0, 300)}`;
    if (s === 429) return this.fail(errors.rateLimited(msg, 1000 * (Number(this.header('retry-after')) || 1)));
    if (s === 401 || s === 403) return this.fail(errors.auth(msg));
    if (s === 408 || s >= 500) return this.fail(errors.transient(msg));
    return this.fail(errors.permanent(msg));
  }
  private fail(e: PincerError): never {
    throw e;
  }
}

/** What `http.request` takes. */
export interface RequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  /** A JSON value to send (sets the body and `content-type`). */
  json?: unknown;
  timeoutMs?: number;
}

function drop(resource: unknown): void {
  const r = resource as Record<symbol, (() => void) | undefined>;
  const d = r[(Symbol as unknown as { dispose?: symbol }).dispose ?? Symbol.for('dispose')];
  if (typeof d === 'function') d.call(resource);
}

const METHODS: Record<string, Method['tag']> = {
  GET: 'get', HEAD: 'head', POST: 'post', PUT: 'put', DELETE: 'delete', PATCH: 'patch', OPTIONS: 'options',
};

/** Outbound HTTP through `wasi:http` (allowed hosts only; placeholders filled by the host). */
export const http = {
  /** Send one request and read the whole response. Failures are typed:
   * refusals by the host and network errors are `transient`, bad URLs `permanent`. */
  request(url: string, init: RequestInit = {}): Response {
    try {
      return sendRequest(url, init);
    } catch (e) {
      if (e instanceof PincerError) throw e;
      const payload = (e as { payload?: unknown })?.payload;
      throw errors.transient(`http: ${payload !== undefined ? JSON.stringify(payload) : String(e)}`);
    }
  },
  get: (url: string, init: RequestInit = {}) => http.request(url, { ...init, method: 'GET' }),
  post: (url: string, init: RequestInit = {}) => http.request(url, { ...init, method: 'POST' }),
};

function sendRequest(url: string, init: RequestInit): Response {
  {
    const m = /^(https?):\/\/([^/?#]+)([^#]*)/.exec(url);
    if (!m) throw errors.permanent(`not an http(s) URL: ${url}`);
    const headers: [string, Uint8Array][] = Object.entries(init.headers ?? {}).map(([k, v]) => [
      k.toLowerCase(),
      enc.encode(v),
    ]);
    let body = init.body ?? new Uint8Array();
    if (init.json !== undefined) {
      body = JSON.stringify(init.json);
      headers.push(['content-type', enc.encode('application/json')]);
    }
    const bytes = typeof body === 'string' ? enc.encode(body) : body;
    const req = new OutgoingRequest(Fields.fromList(headers));
    const method = (init.method ?? 'GET').toUpperCase();
    const tag = METHODS[method];
    req.setMethod(tag ? ({ tag } as Method) : { tag: 'other', val: method });
    req.setScheme(m[1] === 'https' ? { tag: 'HTTPS' } : { tag: 'HTTP' });
    req.setAuthority(m[2]);
    req.setPathWithQuery(m[3] || '/');
    let options: RequestOptions | undefined;
    if (init.timeoutMs !== undefined) {
      options = new RequestOptions();
      options.setFirstByteTimeout(BigInt(init.timeoutMs) * 1_000_000n);
      options.setBetweenBytesTimeout(BigInt(init.timeoutMs) * 1_000_000n);
    }
    const outBody = req.body();
    let future;
    try {
      future = handle(req, options);
    } catch (e) {
      throw errors.permanent(`request refused: ${JSON.stringify((e as { payload?: unknown }).payload ?? String(e))}`);
    }
    if (bytes.length > 0) {
      const stream = outBody.write();
      for (let i = 0; i < bytes.length; i += 4096) stream.blockingWriteAndFlush(bytes.subarray(i, i + 4096));
      drop(stream);
    }
    OutgoingBody.finish(outBody, undefined);
    const pollable = future.subscribe();
    pollable.block();
    drop(pollable);
    const outer = future.get();
    drop(future);
    if (!outer || outer.tag !== 'ok') throw errors.transient('response not ready');
    const inner = outer.val;
    if (inner.tag !== 'ok') throw errors.transient(`request failed: ${JSON.stringify(inner.val)}`);
    const resp = inner.val;
    const status = resp.status();
    const respHeaders: [string, string][] = resp.headers().entries().map(([k, v]) => [k, dec.decode(v)]);
    const incoming = resp.consume();
    const stream = incoming.stream();
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      let chunk: Uint8Array;
      try {
        chunk = stream.blockingRead(65536n);
      } catch {
        break;
      }
      chunks.push(chunk);
      total += chunk.length;
    }
    drop(stream);
    drop(incoming);
    drop(resp);
    const all = new Uint8Array(total);
    let off = 0;
    for (const c of chunks) {
      all.set(c, off);
      off += c.length;
    }
    return new Response(status, respHeaders, all);
  }
}
