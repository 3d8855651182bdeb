/**
 * ts-webhook: a generic signed-webhook channel written in TypeScript.
 *
 * In: the host verifies `X-Signature-256` (HMAC-SHA256 of the raw body with
 * the `signing_secret`) and hands the push to `handleWebhook`; the body is
 * one message or `{"messages": [...]}`, each
 * `{id, conversation, sender, text, sender_name?, chat_type?, thread?, timestamp_ms?}`.
 * Out: `send` POSTs `{conversation, text, thread, reply_to, format}` to the
 * configured `reply_url` (with `authorization: Bearer <reply_token>` when
 * that secret is granted) and takes the message id from the answer's `id`.
 */
import type {
  Capabilities,
  ChatType,
  InboundMessage,
  OutboundMessage,
  WebhookRequest,
  WebhookResponse,
} from 'pincer:plugin/channel@0.2.0';
import { clock, errors, guard, http, kv, log, secrets } from './pincer.js';

let replyUrl = '';
let maxLength = 4000;
let lastContact = 0;

interface Push {
  id?: unknown;
  conversation?: unknown;
  sender?: unknown;
  sender_name?: unknown;
  text?: unknown;
  chat_type?: unknown;
  thread?: unknown;
  timestamp_ms?: unknown;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

function inbound(p: Push): InboundMessage {
  const conversation = str(p.conversation);
  const sender = str(p.sender);
  if (!conversation || !sender || typeof p.text !== 'string') {
    throw errors.permanent('each message needs string conversation, sender and text');
  }
  const chatType: ChatType = p.chat_type === 'group' ? 'group' : 'direct';
  // Without an id from the platform, a counter keeps ids unique (the host
  // deduplicates redeliveries by id).
  const id = str(p.id) ?? `in-${kv.increment('inbound-seq')}`;
  return {
    id,
    conversation,
    chatType,
    thread: str(p.thread),
    sender,
    senderName: str(p.sender_name),
    senderIsBot: false,
    mentioned: chatType === 'direct',
    replyTo: undefined,
    text: p.text,
    attachments: [],
    reaction: undefined,
    timestamp: BigInt(typeof p.timestamp_ms === 'number' ? p.timestamp_ms : clock.nowMs()),
  };
}

export const plugin = {
  name: (): string => 'ts-webhook',
  lastActivity: (): bigint => BigInt(lastContact),
  restart: (): void => {},
};

const unsupported = (what: string) => () => guard(() => {
  throw errors.unsupported(`ts-webhook does not support ${what}`);
});

export const channel = {
  describe: (): Capabilities => ({
    mode: 'webhook',
    edit: false,
    typing: false,
    maxMessageLength: maxLength,
    streaming: 'final-only',
    minEditIntervalMs: 0,
    typingTtlMs: 0,
    readReceipts: false,
    attachments: false,
  }),

  start: (config: [string, string][]): void =>
    guard(() => {
      const c = new Map(config);
      const url = c.get('reply_url') ?? '';
      if (!/^https?:\/\//.test(url)) throw errors.config('reply_url must be an http(s) URL');
      replyUrl = url;
      const max = Number(c.get('max_message_length') ?? '4000');
      if (!Number.isInteger(max) || max < 1) throw errors.config('max_message_length must be a positive integer');
      maxLength = max;
      log.info('ts-webhook started', { account: c.get('account') ?? '', reply_url: url });
    }),

  poll: unsupported('poll (it receives pushes)'),

  handleWebhook: (req: WebhookRequest): WebhookResponse =>
    guard(() => {
      if (req.verified !== 'hmac-sha256') throw errors.auth('push was not verified by the host');
      let messages: InboundMessage[];
      try {
        const body = JSON.parse(new TextDecoder().decode(req.body)) as Push & { messages?: unknown };
        const list = Array.isArray(body.messages) ? (body.messages as Push[]) : [body];
        messages = list.map(inbound);
      } catch (e) {
        // Bad input is the sender's problem: say so (400), and do not make
        // the platform retry a push that can never succeed.
        const error = e instanceof SyntaxError ? 'push body is not JSON' : String((e as Error).message ?? e);
        log.warn('push refused', { error });
        return {
          status: 400,
          headers: [['content-type', 'application/json']],
          body: new TextEncoder().encode(JSON.stringify({ ok: false, error })),
          messages: [],
          statuses: [],
        };
      }
      lastContact = clock.nowMs();
      log.debug('push received', { messages: messages.length });
      return {
        status: 200,
        headers: [['content-type', 'application/json']],
        body: new TextEncoder().encode(JSON.stringify({ ok: true, received: messages.length })),
        messages,
        statuses: [],
      };
    }),

  send: (m: OutboundMessage): string =>
    guard(() => {
      if (!replyUrl) throw errors.config('not started: reply_url unknown');
      const headers: Record<string, string> = {};
      if (secrets.exists('reply_token')) headers.authorization = `Bearer ${secrets.placeholder('reply_token')}`;
      const resp = http
        .post(replyUrl, {
          headers,
          json: { conversation: m.conversation, text: m.text, thread: m.thread ?? null, reply_to: m.replyTo ?? null, format: m.format },
          timeoutMs: 10_000,
        })
        .ok();
      lastContact = clock.nowMs();
      let id: string | undefined;
      try {
        id = str((resp.json() as { id?: unknown }).id);
      } catch {
        id = undefined;
      }
      return id ?? `out-${kv.increment('outbound-seq')}`;
    }),

  edit: unsupported('edit'),
  draft: unsupported('draft'),
  typing: unsupported('typing'),
  markRead: unsupported('mark-read'),
  fetchAttachment: unsupported('attachments'),
};
