// {{name}}: a Pincer tool in JavaScript (jco componentize). Called with `{}`
// it answers with a greeting and the host clock's time; edit `invoke`.
import { nowMs } from "pincer:plugin/clock@0.2.0";
import { increment } from "pincer:plugin/kv@0.2.0";
import { write } from "pincer:plugin/log@0.2.0";

export const plugin = {
  name() { return "{{name}}"; },
  lastActivity() { return nowMs(); },
  restart() {},
};

export const tool = {
  describe() {
    return {
      name: "{{name}}",
      description: "Says hello and tells the time (scaffolded by `pincer plugin new`).",
      parametersSchema: '{"type":"object","properties":{}}',
    };
  },
  invoke(args) {
    const now = nowMs();
    const calls = increment("calls", 1n);
    write("info", "invoked", [["calls", String(calls)]]);
    return JSON.stringify({ greeting: "Hello from {{name}}!", now_ms: Number(now), calls: Number(calls) });
  },
};
