/** The message of anything thrown, for logs and replies' detail. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
