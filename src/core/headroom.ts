/**
 * Buffers with free room in front, so that a prefix (Ferry's Received: field and added headers) can be put
 * before a large message without copying the message. The room belongs to whoever made the buffer; only a
 * view registered here is known to have it, and it can be used once. A buffer made with a `maxLength` can
 * grow in place up to it (a resizable ArrayBuffer: its address space is reserved once and pages are only
 * backed by memory when written), so a message of unknown size is never copied to make room for more.
 */

const room = new WeakMap<ArrayBuffer, number>();

/**
 * A zeroed view of `length` octets with `headroom` free octets before it in its own buffer; with `maxLength`,
 * the buffer can grow in place ({@link growInPlace}) until the view holds `maxLength` octets.
 */
export function withHeadroom(length: number, headroom: number, maxLength?: number): Uint8Array<ArrayBuffer> {
  const buffer = maxLength === undefined
    ? new ArrayBuffer(headroom + length)
    : new ArrayBuffer(headroom + length, { maxByteLength: headroom + Math.max(length, maxLength) });
  room.set(buffer, headroom);
  return new Uint8Array(buffer, headroom, length);
}

/**
 * `view` (from {@link withHeadroom} with a `maxLength`) grown to `length` octets without copying: the same
 * buffer, resized, so what it holds stays where it is and the room in front stays. Undefined when its buffer
 * cannot grow that far.
 */
export function growInPlace(
  view: Uint8Array<ArrayBuffer>,
  length: number,
): Uint8Array<ArrayBuffer> | undefined {
  const buffer = view.buffer;
  const end = view.byteOffset + length;
  if (!buffer.resizable || end > buffer.maxByteLength) return undefined;
  if (end > buffer.byteLength) buffer.resize(end);
  return new Uint8Array(buffer, view.byteOffset, length);
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
