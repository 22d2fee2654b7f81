// The all-in-one program as an operator meets it: embedded NATS with stream
// ROOMS and its buckets, stored-then-republished messages with sequence
// headers, health endpoints, and a clean stop on SIGTERM.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startStack, nats, publish, jc, once } from "./stack.mjs";

test("roomcast serve: NATS, stream, buckets, republish, health, SIGTERM", async () => {
  const stack = await startStack();
  let stopped = false;
  try {
    for (const path of ["/healthz", "/readyz", "/metrics"]) {
      const r = await fetch(stack.httpURL + path);
      assert.equal(r.status, 200, `${path} answers 200`);
    }

    const nc = await nats(stack);
    try {
      const jsm = await nc.jetstreamManager();
      const si = await jsm.streams.info("ROOMS");
      assert.deepEqual(si.config.subjects.sort(), ["rooms.board.>", "rooms.chat.>", "rooms.org.>", "rooms.user.>"]);
      assert.deepEqual(si.config.republish, { src: ">", dest: "live.>" });
      assert.equal(si.config.duplicate_window, 2 * 60 * 1e9);
      const js = nc.jetstream();
      for (const bucket of ["ROOM_STATE", "PRESENCE"]) {
        const kv = await js.views.kv(bucket, { bindOnly: true });
        const st = await kv.status();
        assert.equal(st.bucket, bucket);
      }

      const live = nc.subscribe("live.rooms.board.b1.tasks", { max: 2 });
      const got = [];
      const done = (async () => {
        for await (const m of live) got.push(m);
      })();
      const env1 = { event: "create-task", id: "t1", updatedAt: Date.now(), data: { title: "one" } };
      const env2 = { event: "update-task", id: "t1", updatedAt: Date.now() + 1, diff: { title: "two" } };
      const a1 = await publish(nc, "rooms.board.b1.tasks", env1, "m1");
      const a2 = await publish(nc, "rooms.board.b1.tasks", env2, "m2");
      const dup = await publish(nc, "rooms.board.b1.tasks", env2, "m2");
      assert.equal(dup.duplicate, true, "a retried publish with the same Nats-Msg-Id is stored once");
      await Promise.race([done, new Promise((_, f) => setTimeout(() => f(new Error("no republish")), 5000))]);
      assert.equal(got.length, 2);
      assert.deepEqual(jc.decode(got[0].data), env1);
      assert.equal(got[0].headers.get("Nats-Sequence"), String(a1.seq));
      assert.equal(got[0].headers.get("Nats-Last-Sequence"), "0");
      assert.equal(got[1].headers.get("Nats-Sequence"), String(a2.seq));
      assert.equal(got[1].headers.get("Nats-Last-Sequence"), String(a1.seq));
      assert.equal(got[1].headers.get("Nats-Stream"), "ROOMS");
    } finally {
      await nc.close();
    }

    const t0 = Date.now();
    const { code, signal } = await stack.stop();
    stopped = true;
    assert.equal(signal, null);
    assert.equal(code, 0, `exit code 0 after SIGTERM; logs:\n${stack.logs()}`);
    assert.ok(Date.now() - t0 < 8000, "stops within a few seconds");
  } finally {
    if (!stopped) await stack.stop();
  }
});
