// The reference store's rules: idempotent, last updatedAt wins, deletes
// remove and are not undone by older events.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ResourceStore, MessageStore } from "../../dist/index.js";

const create = (id, updatedAt, data) => ({ event: "create-task", id, updatedAt, data });
const update = (id, updatedAt, diff) => ({ event: "update-task", id, updatedAt, diff });
const del = (id, updatedAt) => ({ event: "delete-task", id, updatedAt });

test("create, update and delete apply; repeats change nothing", () => {
  const s = new ResourceStore();
  let notified = 0;
  s.subscribe(() => notified++);
  assert.equal(s.apply(create("t1", 10, { title: "a", done: false })), "applied");
  assert.equal(s.apply(update("t1", 20, { title: "b" })), "applied");
  assert.deepEqual(s.get("t1"), { id: "t1", updatedAt: 20, title: "b", done: false });
  assert.equal(s.apply(update("t1", 20, { title: "b" })), "applied", "a tie is applied again: idempotent");
  assert.deepEqual(s.get("t1"), { id: "t1", updatedAt: 20, title: "b", done: false });
  assert.equal(s.apply(del("t1", 30)), "applied");
  assert.equal(s.size, 0);
  assert.equal(s.apply(del("t1", 30)), "stale", "a repeated delete");
  assert.equal(notified, 4);
});

test("last updatedAt wins: older events do not overwrite newer state", () => {
  const s = new ResourceStore();
  s.apply(create("t1", 10, { title: "a" }));
  s.apply(update("t1", 30, { title: "new" }));
  assert.equal(s.apply(update("t1", 20, { title: "old" })), "stale");
  assert.equal(s.apply(create("t1", 10, { title: "a" })), "stale", "the create seen again after an update");
  assert.equal(s.get("t1").title, "new");
  assert.equal(s.upsert({ id: "t1", updatedAt: 40, title: "fetched" }), "applied");
  assert.equal(s.get("t1").title, "fetched");
});

test("a delete is not undone by an older create or update, nor by a stale snapshot", () => {
  const s = new ResourceStore();
  s.apply(create("t1", 10, { title: "a" }));
  s.apply(del("t1", 20));
  assert.equal(s.apply(update("t1", 15, { title: "late" })), "stale");
  assert.equal(s.apply(create("t1", 10, { title: "a" })), "stale");
  s.replaceAll([{ id: "t1", updatedAt: 10, title: "a" }, { id: "t2", updatedAt: 5 }]);
  assert.deepEqual(s.all().map((r) => r.id), ["t2"], "the snapshot was read before the delete");
  assert.equal(s.remove("t3", 50), "stale", "deleting what is not held is recorded");
  assert.equal(s.upsert({ id: "t3", updatedAt: 40 }), "stale", "so an older create does not bring it in");
});

test("a delete older than the held version does not remove it", () => {
  const s = new ResourceStore();
  s.upsert({ id: "t1", updatedAt: 50 });
  assert.equal(s.remove("t1", 40), "stale");
  assert.ok(s.has("t1"));
});

test("an update of a resource the store does not hold is missing: fetch it whole", () => {
  const s = new ResourceStore();
  assert.equal(s.apply(update("t9", 10, { title: "x" })), "missing");
  assert.equal(s.size, 0);
});

test("replaceAll installs a snapshot whole; all() is ordered by updatedAt then id", () => {
  const s = new ResourceStore();
  s.upsert({ id: "gone", updatedAt: 1 });
  s.replaceAll([{ id: "b", updatedAt: 2 }, { id: "a", updatedAt: 2 }, { id: "c", updatedAt: 1 }]);
  assert.deepEqual(s.all().map((r) => r.id), ["c", "a", "b"]);
  assert.equal(s.latest(), 2);
});

test("chat messages are deduplicated by id and ordered by time", () => {
  const m = new MessageStore();
  const msg = (id, t) => ({ event: "new-message", id, updatedAt: t, data: { text: id } });
  assert.equal(m.add(msg("m2", 20), msg("m1", 10)), 2);
  assert.equal(m.add(msg("m1", 10), msg("m3", 30)), 1);
  assert.deepEqual(m.all().map((x) => x.id), ["m1", "m2", "m3"]);
});
