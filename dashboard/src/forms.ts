import { ApiError } from "./api/client";

/**
 * The API's message for one form field. The server names fields by their JSON
 * path (`source.git`, `routes[0].path`, `health.interval_secs`); a form input
 * claims the names it edits, by exact name or by prefix.
 */
export function fieldError(error: unknown, ...names: string[]): string | undefined {
  if (!(error instanceof ApiError) || !error.field) return undefined;
  const field = error.field;
  const match = names.some(
    (name) => field === name || field.startsWith(name + ".") || field.startsWith(name + "["),
  );
  return match ? error.message : undefined;
}

/** Whether an error belongs to none of the fields a form shows. */
export function isFormLevel(error: unknown, fields: readonly string[]): boolean {
  if (!error) return false;
  return fields.every((f) => fieldError(error, f) === undefined);
}
