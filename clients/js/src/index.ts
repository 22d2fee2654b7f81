// @roomcast/client: roomcast's frontend behaviour on the stock socket.io-client.
export * from "./contract.js";
export { RoomcastError } from "./errors.js";
export { classify, type Arrival } from "./gap.js";
export { roomKind, rooms, syncStyleOf, type SyncStyle } from "./rooms.js";
export { RoomSync, decideResource, isFinal, splitChanges, type Caller, type RoomStatus, type ChangeSet, type RoomHandlers, type RoomSyncOptions, type SyncReason } from "./room.js";
export { ResourceStore, MessageStore, type Applied, type StoreListener } from "./store.js";
export { tokenExpiry, isExpired, refreshable, revokedRefusal, type TokenSource } from "./token.js";
export {
  connect,
  RoomcastClient,
  type ClientOptions,
  type CollectionOptions,
  type IdStorage,
  type RoomHandle,
  type Status,
  type VisibilitySource,
} from "./client.js";
