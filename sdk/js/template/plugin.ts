/**
 * A Pincer tool in TypeScript: build with `../build.sh .` (or
 * `sdk/js/build.sh path/to/project`), then copy hello-ts.wasm and
 * hello-ts.toml into the gateway's plugins directory. Plain JavaScript
 * works the same way: name the file plugin.js.
 */
import type { ToolInfo } from 'pincer:plugin/tool@0.2.0';
import { clock, guard, kv } from './pincer.js';

export const plugin = {
  name: (): string => 'hello-ts',
  lastActivity: (): bigint => 0n,
  restart: (): void => {},
};

export const tool = {
  describe: (): ToolInfo => ({
    name: 'hello-ts',
    description: "Greets someone and tells the host's time.",
    parametersSchema: JSON.stringify({
      type: 'object',
      properties: { name: { type: 'string' } },
      additionalProperties: false,
    }),
  }),
  invoke: (argumentsJson: string): string =>
    guard(() => {
      const args = JSON.parse(argumentsJson || '{}') as { name?: string };
      const who = args.name || 'world';
      const calls = kv.increment('calls');
      return JSON.stringify({ greeting: `Hello, ${who}!`, now_ms: clock.nowMs(), calls });
    }),
};
