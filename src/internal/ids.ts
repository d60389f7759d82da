/**
 * Schemas that both `TaskQueue` and `CompletionBackend` use, here so that neither module imports the other at load
 * time. Public through `TaskQueue` (`TaskQueue.TaskId`, `TaskQueue.InvalidInput`).
 */
import * as Schema from "effect/Schema"

/** A task's id. */
export const TaskId = Schema.String.pipe(Schema.brand("baton/TaskId"))
/** A task's id. */
export type TaskId = typeof TaskId.Type

/**
 * An option or argument is out of range or malformed (a negative delay, a NaN priority, a name with NUL or a lone
 * surrogate, too many tags, ...); `field` names it and `message` says what is allowed. Nothing was written.
 */
export class InvalidInput extends Schema.TaggedError<InvalidInput>()("InvalidInput", {
  field: Schema.String,
  message: Schema.String
}) {}
