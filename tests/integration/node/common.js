'use strict'
// Shared by kafkajs_check.js and platformatic_check.js: argument parsing, the JSON result line,
// deadlines, the messages the checks produce and the bookkeeping of what a consumer saw.
//
// Protocol with the pytest side (tests/integration/node_clients.py): the script's only stdout
// line is one JSON object (the result); client logs and diagnostics go to stderr. A failure
// prints {"ok": false, "error": ...} and exits with code 1.

/** `node x.js SCENARIO --bootstrap HOST:PORT --topic T [--count N] [--group G]` */
function parseArgs(argv = process.argv.slice(2)) {
  const [scenario, ...rest] = argv
  const opts = { scenario }
  for (let i = 0; i < rest.length; i += 2) {
    if (!rest[i].startsWith('--') || i + 1 >= rest.length) {
      throw new Error(`bad arguments: ${rest.join(' ')}`)
    }
    opts[rest[i].slice(2)] = rest[i + 1]
  }
  opts.bootstrap = opts.bootstrap || process.env.RIPTIDE_BOOTSTRAP
  if (!scenario || !opts.bootstrap) {
    throw new Error('usage: SCENARIO --bootstrap HOST:PORT [--topic T] [--count N] [--group G]')
  }
  return opts
}

function log(...args) {
  process.stderr.write(`[${new Date().toISOString()}] ${args.join(' ')}\n`)
}

/**
 * Resolves with predicate()'s first truthy value (the predicate may be async); rejects after
 * timeoutMs naming `what` and describe(), or as soon as the predicate throws.
 */
async function waitFor(predicate, timeoutMs, what, describe = () => '', intervalMs = 20) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await predicate()
    if (value) return value
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} ${describe()}`)
    }
    await new Promise(resolve => setTimeout(resolve, intervalMs)) // poll interval, not a synchronisation sleep
  }
}

/** Rejects if `promise` has not settled within timeoutMs. */
function withDeadline(promise, timeoutMs, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${timeoutMs} ms`)), timeoutMs)
    })
  ]).finally(() => clearTimeout(timer))
}

const KEYS = 97

/** Message i of a run: key `key-(i % 97)`, value `key|per-key sequence|i`. */
function message(i, tag = 'm') {
  const key = `key-${i % KEYS}`
  const seq = Math.floor(i / KEYS)
  return { key, value: `${key}|${seq}|${i}|${tag}` }
}

/**
 * The `txn` scenarios' first part: three transactions over the same partitions, in this order:
 * [tag, records per partition, outcome]. Mirrored by TXN_PHASES in node_clients.py.
 */
const TXN_PHASES = [['c1', 100, 'commit'], ['a2', 30, 'abort'], ['c3', 10, 'commit']]

/** Record i of transaction `tag` on `partition`: key `p<partition>`, value `tag|p<partition>|i`. */
function txnRecord(tag, partition, i) {
  return { key: `p${partition}`, value: `${tag}|p${partition}|${i}`, partition }
}

/** {partition: offset} maps equal on the given partitions (offsets compared as numbers). */
function offsetsEqual(got, want) {
  const keys = Object.keys(want)
  return keys.length === Object.keys(got || {}).length && keys.every(p => Number(got[p]) === Number(want[p]))
}

/** What a consumer saw, in delivery order: [partition, offset, key, value] rows. */
class Seen {
  constructor() {
    this.rows = []
    this.unique = new Set()
    this.duplicates = 0
  }

  add(partition, offset, key, value) {
    const id = `${partition}:${offset}`
    if (this.unique.has(id)) this.duplicates++
    else this.unique.add(id)
    this.rows.push([partition, Number(offset), key, value])
  }

  get count() {
    return this.unique.size
  }

  firstOffsets() {
    const first = {}
    for (const [p, o] of this.rows) if (!(p in first)) first[p] = o
    return first
  }

  perPartition() {
    const n = {}
    for (const [p] of this.rows) n[p] = (n[p] || 0) + 1
    return n
  }
}

function toJSONSafe(value) {
  return JSON.parse(
    JSON.stringify(value, (_k, v) => {
      if (typeof v === 'bigint') return Number(v)
      if (v instanceof Map) return Object.fromEntries(v)
      if (v instanceof Set) return Array.from(v)
      return v
    })
  )
}

/** An error and everything it wraps (errors[], cause, response), as plain JSON. */
function errorSummary(err, depth = 0) {
  if (err === null || err === undefined || depth > 5) return null
  if (typeof err !== 'object') return String(err)
  const out = { name: err.name, message: err.message }
  for (const k of ['code', 'type', 'apiId', 'apiCode', 'serverErrorMessage', 'retriable', 'broker']) {
    if (err[k] !== undefined) out[k] = err[k]
  }
  if (Array.isArray(err.errors) && err.errors.length) out.errors = err.errors.map(e => errorSummary(e, depth + 1))
  if (err.cause) out.cause = errorSummary(err.cause, depth + 1)
  if (err.response !== undefined) {
    try {
      out.response = toJSONSafe(err.response)
    } catch (_) {
      out.response = String(err.response)
    }
  }
  return out
}

/** Runs main(opts), prints its result as the one stdout line, exits 0 (or 1 with the error). */
function run(main) {
  let opts
  try {
    opts = parseArgs()
  } catch (err) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(err.message) }) + '\n')
    process.exit(2)
  }
  const started = Date.now()
  main(opts).then(
    result => {
      const out = toJSONSafe({ ok: true, scenario: opts.scenario, elapsed_ms: Date.now() - started, ...result })
      process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0))
    },
    err => {
      log('FAILED:', err && err.stack ? err.stack : String(err))
      const detail = { ok: false, scenario: opts.scenario, error: String(err && err.message ? err.message : err), detail: errorSummary(err) }
      process.stdout.write(JSON.stringify(detail) + '\n', () => process.exit(1))
    }
  )
}

module.exports = {
  parseArgs, log, waitFor, withDeadline, message, Seen, KEYS, TXN_PHASES, txnRecord, offsetsEqual, toJSONSafe, errorSummary, run
}
