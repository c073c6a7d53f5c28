/**
 * Buffers with free room in front, so that a prefix (Ferry's Received: field and added headers) can be put
 * before a large message without copying the message. The room belongs to whoever made the buffer; only a
 * view registered here is known to have it, and it can be used once.
 */

const room = new WeakMap<ArrayBuffer, number>();

/** A zeroed view of `length` octets with `headroom` free octets before it in its own buffer. */
export function withHeadroom(length: number, headroom: number): Uint8Array<ArrayBuffer> {
  const buffer = new ArrayBuffer(headroom + length);
  room.set(buffer, headroom);
  return new Uint8Array(buffer, headroom, length);
}

/**
 * `prefix` followed by `view`, written into the room in front of `view` when it has enough (no copy of the
 * view), else undefined. The room is used up either way.
 */
export function prependInPlace(view: Uint8Array, prefix: Uint8Array): Uint8Array | undefined {
  const buffer = view.buffer;
  if (!(buffer instanceof ArrayBuffer)) return undefined;
  const free = room.get(buffer);
  if (free === undefined || view.byteOffset !== free || prefix.length > free) return undefined;
  room.delete(buffer);
  const start = free - prefix.length;
  const out = new Uint8Array(buffer, start, prefix.length + view.length);
  out.set(prefix, 0);
  return out;
}
