// A reference store for the resources of a room: the rules every frontend
// needs and easily gets subtly wrong. Events may arrive twice (a broadcast
// and then a resync's read of the same change), out of order across a
// refetch, or after a delete: applying them here is idempotent, the last
// updatedAt wins per resource, and a delete leaves a tombstone so a late
// create or update of the same or an older time cannot bring it back.
import { opOf, type Envelope, type Resource } from "./contract.js";

export type StoreListener<T> = (items: T[]) => void;

/** What applying one change did. */
export type Applied = "applied" | "stale" | "missing";

export class ResourceStore<T extends Resource = Resource> {
  private readonly items = new Map<string, T>();
  /** id → updatedAt of its delete. */
  private readonly tombstones = new Map<string, number>();
  private readonly listeners = new Set<StoreListener<T>>();

  get(id: string): T | undefined {
    return this.items.get(id);
  }

  has(id: string): boolean {
    return this.items.has(id);
  }

  get size(): number {
    return this.items.size;
  }

  /** all is every resource, ordered by updatedAt then id (stable for rendering and comparing). */
  all(): T[] {
    return [...this.items.values()].sort((a, b) => a.updatedAt - b.updatedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** The time of the latest change the store holds (resources and deletes). */
  latest(): number {
    let m = 0;
    for (const r of this.items.values()) m = Math.max(m, r.updatedAt);
    for (const t of this.tombstones.values()) m = Math.max(m, t);
    return m;
  }

  /** subscribe calls fn after every change that altered the store. */
  subscribe(fn: StoreListener<T>): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** upsert puts a whole resource, unless the store holds a newer version or a newer delete. */
  upsert(item: T): Applied {
    const r = this.put(item);
    if (r === "applied") this.emit();
    return r;
  }

  /** upsertMany puts whole resources (one notification). */
  upsertMany(items: T[]): void {
    let changed = false;
    for (const it of items) changed = this.put(it) === "applied" || changed;
    if (changed) this.emit();
  }

  /**
   * patch merges the changed fields of an update. A resource the store does
   * not hold is "missing": the app must fetch it whole (a diff is not a
   * resource).
   */
  patch(id: string, updatedAt: number, diff: Record<string, unknown>): Applied {
    if ((this.tombstones.get(id) ?? -Infinity) >= updatedAt) return "stale";
    const cur = this.items.get(id);
    if (!cur) return "missing";
    if (cur.updatedAt > updatedAt) return "stale";
    this.items.set(id, { ...cur, ...diff, id, updatedAt } as T);
    this.emit();
    return "applied";
  }

  /** remove deletes a resource unless the store holds a version newer than the delete. */
  remove(id: string, updatedAt: number): Applied {
    const cur = this.items.get(id);
    if (cur && cur.updatedAt > updatedAt) return "stale";
    if ((this.tombstones.get(id) ?? -Infinity) < updatedAt) this.tombstones.set(id, updatedAt);
    if (!cur) return "stale";
    this.items.delete(id);
    this.emit();
    return "applied";
  }

  /** apply applies a broadcast envelope by its event's op. */
  apply(env: Envelope): Applied {
    switch (opOf(env.event)) {
      case "create":
        return this.upsert({ ...(env as { data: object }).data, id: env.id, updatedAt: env.updatedAt } as unknown as T);
      case "update":
        return this.patch(env.id, env.updatedAt, (env as { diff: Record<string, unknown> }).diff ?? {});
      case "delete":
        return this.remove(env.id, env.updatedAt);
      default:
        return "stale";
    }
  }

  /**
   * replaceAll installs a whole snapshot from the domain API: the store
   * holds exactly its resources afterwards, except those a delete at least
   * as new has removed (a snapshot read before the delete reached the API).
   */
  replaceAll(items: T[]): void {
    this.items.clear();
    for (const it of items) this.put(it);
    this.emit();
  }

  private put(item: T): Applied {
    if ((this.tombstones.get(item.id) ?? -Infinity) >= item.updatedAt) return "stale";
    const cur = this.items.get(item.id);
    if (cur && cur.updatedAt > item.updatedAt) return "stale";
    this.items.set(item.id, item);
    return "applied";
  }

  private emit(): void {
    if (this.listeners.size === 0) return;
    const all = this.all();
    for (const fn of this.listeners) fn(all);
  }
}

/** A chat's messages: deduplicated by id, ordered by updatedAt then arrival. */
export class MessageStore<M extends Envelope = Envelope> {
  private readonly byId = new Map<string, { m: M; n: number }>();
  private n = 0;
  private readonly listeners = new Set<(messages: M[]) => void>();

  /** add takes messages (a broadcast or a resync's page); repeats are ignored. */
  add(...messages: M[]): number {
    let added = 0;
    for (const m of messages) {
      if (this.byId.has(m.id)) continue;
      this.byId.set(m.id, { m, n: this.n++ });
      added++;
    }
    if (added > 0) {
      const all = this.all();
      for (const fn of this.listeners) fn(all);
    }
    return added;
  }

  all(): M[] {
    return [...this.byId.values()].sort((a, b) => a.m.updatedAt - b.m.updatedAt || a.n - b.n).map((x) => x.m);
  }

  get size(): number {
    return this.byId.size;
  }

  subscribe(fn: (messages: M[]) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}
