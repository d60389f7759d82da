/**
 * Task contracts apart from their handlers: a producer process that imports only the contract enqueues it (its
 * module graph cannot reach the handler: the handler's dependency throws when imported outside a worker), a worker
 * process runs the implementation with a service its handler requires, and results and typed failures are read back
 * through the contract. A worker without an implementation for a claimed name fails it at once; a bare contract is
 * refused by `Worker.run`.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue, terminalStates } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import { eventually, sharedStorage } from "./support/backends.js"
import { spawnFixture } from "./support/process.js"
import { Greet, Orphan } from "./fixtures/contracts/greet.contract.js"

describe("Task contracts", () => {
  it.live("a contract-only producer process enqueues; a worker process runs the implementation", () => {
    const shared = sharedStorage("sqlite")
    return Effect.gen(function* () {
      const queue = yield* TaskQueue
      // The guard is real: importing the handler module outside a worker throws.
      const importFailed = yield* Effect.promise(() =>
        import("./fixtures/contracts/greet.worker.js").then(
          () => false,
          () => true
        )
      )
      assert.isTrue(importFailed)

      const worker = spawnFixture("contract-worker.ts", shared.descriptor, { BATON_ROLE: "worker" })
      try {
        yield* Effect.promise(() => worker.waitForLine("ready"))
        const producer = spawnFixture("contract-producer.ts", shared.descriptor, {}, ["ada", "nobody"])
        const line = yield* Effect.promise(() => producer.waitForLine(/^enqueued /))
        assert.strictEqual(yield* Effect.promise(() => producer.exited), 0)
        const [ada, nobody, orphan] = line.slice("enqueued ".length).split(" ") as [string, string, string]
        yield* eventually(
          Effect.map(
            Effect.forEach([ada, nobody, orphan], (id) => queue.get(id)),
            (infos) => infos.every((info) => terminalStates.includes(info.state))
          ),
          "the three tasks to end"
        )
        // Results decode through the contract (no handler in this process).
        const result = yield* queue.result(Greet, ada)
        assert.deepStrictEqual(result, Option.some({ text: "hello ada!", pid: worker.process.pid! }))
        const refused = yield* queue.get(nobody)
        assert.strictEqual(refused.state, "dead")
        assert.strictEqual(Option.getOrThrow(refused.error).kind, "failure")
        assert.deepStrictEqual(Option.getOrThrow(refused.error).error, { _tag: "Refused", who: "nobody" })
        const unknown = yield* queue.get(orphan)
        assert.strictEqual(unknown.state, "failed")
        assert.strictEqual(unknown.attempts, 1)
        assert.strictEqual(Option.getOrThrow(unknown.error).kind, "unknown_task")
        assert.include(Option.getOrThrow(unknown.error).message, Orphan.name)
      } finally {
        worker.kill("SIGTERM")
      }
    }).pipe(Effect.provide(SqlTaskQueue.layer.pipe(Layer.provideMerge(shared.layer))))
  })

  it.scoped("Worker.run refuses a contract without a handler, naming it", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Worker.run({ tasks: [Orphan as unknown as Task.AnyTask] }))
      assert.strictEqual(error.field, "tasks")
      assert.include(error.message, "contract.orphan")
      assert.include(error.message, "Task.implement")
    }).pipe(Effect.provide(SqlTaskQueue.layer.pipe(Layer.provideMerge(Storage.layerMemory))))
  )

  it("implement keeps the contract's Schemas and defaults; Task.make is a contract and its handler at once", () => {
    const contract = Task.contract("contract.double", { payload: Schema.Number, success: Schema.Number, priority: 3 })
    const implemented = Task.implement(contract, (n: number) => Effect.succeed(n * 2))
    const piped = contract.implement((n) => Effect.succeed(n * 2))
    for (const task of [implemented, piped]) {
      assert.strictEqual(task._tag, "Task")
      assert.strictEqual(task.contract, contract)
      assert.strictEqual(task.payload, contract.payload)
      assert.deepStrictEqual(task.defaults, { priority: 3 })
    }
    const made = Task.make("contract.made", {
      payload: Schema.Number,
      success: Schema.Number,
      handler: (n) => Effect.succeed(n)
    })
    assert.strictEqual(made.contract._tag, "TaskContract")
    assert.strictEqual(made.contract.name, "contract.made")
    assert.isTrue(Task.isTask(made))
    assert.isFalse(Task.isTask(contract))
  })
})
