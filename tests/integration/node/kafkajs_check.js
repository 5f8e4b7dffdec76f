'use strict'
// KafkaJS against a real Riptide broker; driven by tests/integration/test_kafkajs.py.
//
//   node kafkajs_check.js admin      --bootstrap H:P --topic T
//   node kafkajs_check.js roundtrip  --bootstrap H:P --topic T --group G --count 10000
//   node kafkajs_check.js resume     --bootstrap H:P --topic T --group G --count 3000
//   node kafkajs_check.js idempotent --bootstrap H:P --topic T --group G --count 5000
//   node kafkajs_check.js txn        --bootstrap H:P --topic T --group G --count 300
//
// Prints one JSON line (see common.js); the pytest side makes the assertions.

const { Kafka, logLevel, Partitioners, CompressionTypes, ConfigResourceTypes } = require('kafkajs')
const { log, waitFor, withDeadline, message, Seen, TXN_PHASES, txnRecord, offsetsEqual, run } = require('./common')

const PARTITIONS = 3
const CONSUME_TIMEOUT_MS = 120000
const STEP_TIMEOUT_MS = 60000

// --ca FILE: TLS trusting that CA; --mechanism/--username/--password: SASL.
function security(opts) {
  const out = {}
  if (opts.ca) out.ssl = { ca: [require('fs').readFileSync(opts.ca, 'utf8')] }
  if (opts.mechanism) out.sasl = { mechanism: opts.mechanism, username: opts.username, password: opts.password }
  return out
}

function client(opts, clientId) {
  return new Kafka({
    clientId,
    brokers: [opts.bootstrap],
    ...security(opts),
    connectionTimeout: 10000,
    requestTimeout: 30000,
    retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 2000 },
    logLevel: logLevel.WARN,
    logCreator: () => ({ namespace, level, label, log: entry }) => {
      const { message: text, ...extra } = entry
      log(`kafkajs ${label} [${namespace}] ${text} ${JSON.stringify(extra)}`)
    }
  })
}

async function createTopic(admin, topic, configEntries) {
  return withDeadline(
    admin.createTopics({
      topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1, configEntries }],
      waitForLeaders: true,
      timeout: 30000
    }),
    STEP_TIMEOUT_MS,
    `createTopics ${topic}`
  )
}

async function endOffsets(admin, topic) {
  const out = {}
  for (const { partition, high, low } of await admin.fetchTopicOffsets(topic)) {
    out[partition] = { low: Number(low), high: Number(high) }
  }
  return out
}

async function committedOffsets(admin, groupId, topic) {
  const [entry] = await admin.fetchOffsets({ groupId, topics: [topic] })
  const out = {}
  for (const { partition, offset } of entry.partitions) out[partition] = Number(offset)
  return out
}

/** Keyed messages first..first+count-1, sent sequentially in batches of `batch` (order per key). */
async function produceKeyed(producer, topic, first, count, { batch = 500, compression, tag } = {}) {
  const acks = []
  for (let start = first; start < first + count; start += batch) {
    const messages = []
    for (let i = start; i < Math.min(first + count, start + batch); i++) messages.push(message(i, tag))
    const meta = await withDeadline(
      producer.send({ topic, acks: -1, timeout: 30000, compression, messages }),
      STEP_TIMEOUT_MS,
      `send of messages ${start}..`
    )
    for (const m of meta) acks.push([m.partition, m.errorCode, Number(m.baseOffset)])
  }
  return acks
}

/**
 * Runs a group consumer on `topic` until `done(seen, state)` holds (deadline CONSUME_TIMEOUT_MS).
 * `onMessage(consumer, partition, message)` returns false to leave a message unrecorded.
 * `state.positions` is {partition: offset after the last batch processed}, batches that held only
 * control records or aborted records included (END_BATCH_PROCESS).
 */
async function consumeUntil(kafka, { topic, groupId, autoCommit, done, onMessage, what, readUncommitted = false }) {
  const consumer = kafka.consumer({
    groupId,
    sessionTimeout: 30000,
    rebalanceTimeout: 30000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: 200,
    allowAutoTopicCreation: false,
    readUncommitted
  })
  const seen = new Seen()
  const state = { joins: [], crash: null, positions: {} }
  consumer.on(consumer.events.END_BATCH_PROCESS, e => {
    const { partition, lastOffset } = e.payload
    state.positions[partition] = Math.max(state.positions[partition] || 0, Number(lastOffset) + 1)
  })
  consumer.on(consumer.events.GROUP_JOIN, e => {
    const { memberAssignment, groupProtocol, isLeader } = e.payload
    state.joins.push({ assignment: memberAssignment, groupProtocol, isLeader })
  })
  consumer.on(consumer.events.CRASH, e => {
    state.crash = String(e.payload.error && e.payload.error.stack)
  })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    autoCommit,
    eachMessage: async ({ partition, message: m }) => {
      if (onMessage && onMessage(consumer, partition, m) === false) return
      seen.add(partition, m.offset, m.key.toString(), m.value.toString())
      if (m.batchContext) {
        const { producerId, producerEpoch, firstSequence, firstOffset } = m.batchContext
        seen.rows[seen.rows.length - 1].push(
          Number(producerId), producerEpoch, firstSequence + (Number(m.offset) - Number(firstOffset))
        )
      }
    }
  })
  try {
    await waitFor(
      () => {
        if (state.crash) throw new Error(`consumer crashed: ${state.crash}`)
        return done(seen, state)
      },
      CONSUME_TIMEOUT_MS,
      what,
      () => `(consumed ${seen.count} unique, per partition ${JSON.stringify(seen.perPartition())}, ` +
        `positions ${JSON.stringify(state.positions)})`
    )
  } catch (err) {
    await consumer.disconnect().catch(() => {})
    throw err
  }
  return { consumer, seen, state }
}

// ---- scenarios -------------------------------------------------------------------------------

async function admin(opts) {
  const kafka = client(opts, 'riptide-it-kafkajs-admin')
  const admin = kafka.admin()
  await admin.connect()
  try {
    const topic = opts.topic
    const cluster = await admin.describeCluster()
    const created = await createTopic(admin, topic, [{ name: 'retention.ms', value: '3600000' }])
    const createdAgain = await createTopic(admin, topic)
    const listed = await admin.listTopics()
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
    const configs = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms', 'cleanup.policy'] }]
    })
    const offsets = await endOffsets(admin, topic)
    await admin.deleteTopics({ topics: [topic], timeout: 30000 })
    // Deleted topics leave the metadata (polled with a deadline).
    const gone = await waitFor(async () => !(await admin.listTopics()).includes(topic), 30000, `${topic} to disappear`)
    return {
      cluster: { brokers: cluster.brokers, controller: cluster.controller, clusterId: cluster.clusterId },
      created,
      createdAgain,
      listed: listed.includes(topic),
      metadata: topics.map(t => ({
        name: t.name,
        partitions: t.partitions
          .map(p => ({ partition: p.partitionId, leader: p.leader, replicas: p.replicas, isr: p.isr, errorCode: p.partitionErrorCode }))
          .sort((a, b) => a.partition - b.partition)
      })),
      configs: configs.resources.map(r => ({
        errorCode: r.errorCode,
        name: r.resourceName,
        entries: Object.fromEntries(r.configEntries.map(c => [c.configName, c.configValue]))
      })),
      offsets,
      goneAfterDelete: gone
    }
  } finally {
    await admin.disconnect()
  }
}

async function roundtrip(opts) {
  const count = Number(opts.count || 10000)
  const { topic, group } = opts
  const kafka = client(opts, 'riptide-it-kafkajs')
  const admin = kafka.admin()
  await admin.connect()
  try {
    await createTopic(admin, topic)
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false })
    await producer.connect()
    const t0 = Date.now()
    let acks
    try {
      acks = await produceKeyed(producer, topic, 0, count, { compression: CompressionTypes.GZIP, tag: 'rt' })
    } finally {
      await producer.disconnect()
    }
    const produceMs = Date.now() - t0
    const end = await endOffsets(admin, topic)

    const t1 = Date.now()
    const { consumer, seen, state } = await consumeUntil(kafka, {
      topic, groupId: group, autoCommit: true, done: s => s.count >= count, what: `${count} messages`
    })
    const consumeMs = Date.now() - t1
    const described = await admin.describeGroups([group])
    await consumer.disconnect() // commits the consumed offsets (autoCommit)
    const committed = await committedOffsets(admin, group, topic)
    return {
      count, acks, end, produce_ms: produceMs, consume_ms: consumeMs,
      consumed: seen.rows, duplicates: seen.duplicates, joins: state.joins,
      group: described.groups.map(g => ({
        groupId: g.groupId, state: g.state, protocolType: g.protocolType, protocol: g.protocol, members: g.members.length
      })),
      committed
    }
  } finally {
    await admin.disconnect()
  }
}

async function resume(opts) {
  const count = Number(opts.count || 3000)
  const stopAt = Math.floor(count / 2)
  const { topic, group } = opts
  const kafka = client(opts, 'riptide-it-kafkajs-resume')
  const admin = kafka.admin()
  await admin.connect()
  try {
    await createTopic(admin, topic)
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner })
    await producer.connect()
    try {
      await produceKeyed(producer, topic, 0, count, { tag: 'rs' })
    } finally {
      await producer.disconnect()
    }
    const end = await endOffsets(admin, topic)

    // First consumer: processes stopAt messages, commits exactly what it processed, leaves.
    const processed = {} // partition -> next offset to process
    let taken = 0
    const first = await consumeUntil(kafka, {
      topic, groupId: group, autoCommit: false, what: `${stopAt} messages (first consumer)`,
      onMessage: (_c, partition, m) => {
        if (taken >= stopAt) return false // "crashed" after stopAt messages: later ones are not processed
        taken++
        processed[partition] = Number(m.offset) + 1
        return true
      },
      done: () => taken >= stopAt
    })
    await first.consumer.commitOffsets(
      Object.entries(processed).map(([partition, offset]) => ({ topic, partition: Number(partition), offset: String(offset) }))
    )
    await first.consumer.disconnect()
    const committedFirst = await committedOffsets(admin, group, topic)

    // Second consumer, same group: must start at the committed offsets (earliest where none).
    const expected = Object.keys(end).reduce((n, p) => n + end[p].high - (processed[p] || 0), 0)
    const second = await consumeUntil(kafka, {
      topic, groupId: group, autoCommit: true, what: `${expected} messages (second consumer)`,
      done: s => s.count >= expected
    })
    await second.consumer.disconnect()
    const committedSecond = await committedOffsets(admin, group, topic)
    return {
      count, end, processed, committed_first: committedFirst, first: first.seen.rows,
      first_duplicates: first.seen.duplicates, expected_second: expected, second: second.seen.rows,
      second_duplicates: second.seen.duplicates, second_first_offsets: second.seen.firstOffsets(),
      committed_second: committedSecond
    }
  } finally {
    await admin.disconnect()
  }
}

async function idempotent(opts) {
  const count = Number(opts.count || 5000)
  const extra = 500
  const { topic, group } = opts
  const kafka = client(opts, 'riptide-it-kafkajs-idem')
  const admin = kafka.admin()
  await admin.connect()
  try {
    await createTopic(admin, topic)
    // KafkaJS keeps one sequence per partition and advances it on the response, so an
    // idempotent producer sends one request at a time (its documented setting).
    const acks = []
    for (const [first, n] of [[0, count], [count, extra]]) {
      const producer = kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        createPartitioner: Partitioners.DefaultPartitioner,
        // Unbounded retries (KafkaJS warns about fewer for an idempotent producer); every send
        // still has STEP_TIMEOUT_MS.
        retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 100, maxRetryTime: 2000 }
      })
      await producer.connect()
      try {
        acks.push(await produceKeyed(producer, topic, first, n, { batch: 100, tag: 'idem' }))
      } finally {
        await producer.disconnect()
      }
    }
    const end = await endOffsets(admin, topic)
    const total = count + extra
    const { consumer, seen } = await consumeUntil(kafka, {
      topic, groupId: group, autoCommit: true, done: s => s.count >= total, what: `${total} messages`
    })
    await consumer.disconnect()
    return { count, extra, acks, end, consumed: seen.rows, duplicates: seen.duplicates }
  } finally {
    await admin.disconnect()
  }
}

// ---- transactions ----------------------------------------------------------------------------

const TXN_PARTITIONS = Array.from({ length: PARTITIONS }, (_v, p) => p)

/** A transactional producer as KafkaJS documents it: idempotent, one request in flight. */
function txnProducer(kafka, transactionalId) {
  return kafka.producer({
    transactionalId,
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
    // Unbounded retries (KafkaJS warns about fewer for an idempotent producer); every step
    // still has STEP_TIMEOUT_MS.
    retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 100, maxRetryTime: 1000 }
  })
}

/** {partition: offset} of ListOffsets(latest); KafkaJS's admin asks with read_committed: the LSO. */
async function stableOffsets(admin, topic) {
  const out = {}
  for (const { partition, high } of await admin.fetchTopicOffsets(topic)) out[partition] = Number(high)
  return out
}

/** Waits until the LSO of every partition of `topic` is `want` ({partition: offset}). */
async function waitForStable(admin, topic, want) {
  let last
  await waitFor(
    async () => offsetsEqual((last = await stableOffsets(admin, topic)), want),
    STEP_TIMEOUT_MS,
    `${topic}: last stable offsets ${JSON.stringify(want)}`,
    () => `(last ${JSON.stringify(last)})`
  )
  return last
}

/**
 * A group consumer (own group, from the beginning) that reads `topic` until its position reaches
 * `ends` on every partition. Rows: [partition, offset, value, producerId, inTransaction].
 */
async function readTo(kafka, { topic, groupId, ends, readUncommitted }) {
  const rows = []
  const { consumer, seen, state } = await consumeUntil(kafka, {
    topic, groupId, autoCommit: false, readUncommitted,
    what: `${readUncommitted ? 'read_uncommitted' : 'read_committed'} consumer of ${topic} at ${JSON.stringify(ends)}`,
    onMessage: (_c, partition, m) => {
      rows.push([partition, Number(m.offset), m.value.toString(), Number(m.batchContext.producerId), m.batchContext.inTransaction])
      return true
    },
    done: (_s, st) => Object.keys(ends).every(p => (st.positions[p] || 0) >= ends[p])
  })
  await consumer.disconnect()
  return { rows, duplicates: seen.duplicates, positions: state.positions }
}

/**
 * Three transactions over the partitions of `topic` (TXN_PHASES: commit, abort, commit), each
 * written with two sends; then a read_committed and a read_uncommitted consumer read it all.
 */
async function commitAbortCommit(kafka, admin, topic, group) {
  await createTopic(admin, topic)
  const producer = txnProducer(kafka, `${topic}-tid`)
  await producer.connect()
  const phases = []
  try {
    for (const [tag, n, outcome] of TXN_PHASES) {
      const t0 = Date.now()
      const txn = await withDeadline(producer.transaction(), STEP_TIMEOUT_MS, `transaction ${tag}`)
      const acks = []
      for (const [from, to] of [[0, n / 2], [n / 2, n]]) {
        const messages = []
        for (const p of TXN_PARTITIONS) for (let i = from; i < to; i++) messages.push(txnRecord(tag, p, i))
        const meta = await withDeadline(
          txn.send({ topic, acks: -1, timeout: 30000, messages }), STEP_TIMEOUT_MS, `send ${tag} ${from}..${to}`
        )
        for (const m of meta) acks.push([m.partition, m.errorCode, Number(m.baseOffset)])
      }
      await withDeadline(outcome === 'commit' ? txn.commit() : txn.abort(), STEP_TIMEOUT_MS, `${outcome} ${tag}`)
      phases.push({ tag, count: n, outcome, acks, ms: Date.now() - t0 })
      log(`transaction ${tag}: ${outcome} after ${Date.now() - t0} ms`)
    }
  } finally {
    await producer.disconnect()
  }
  // Every record and one marker per transaction and partition.
  const end = TXN_PHASES.reduce((sum, [, n]) => sum + n + 1, 0)
  const ends = Object.fromEntries(TXN_PARTITIONS.map(p => [p, end]))
  const lso = await waitForStable(admin, topic, ends)
  const [committed, uncommitted] = await Promise.all([
    readTo(kafka, { topic, groupId: `${group}-rc`, ends, readUncommitted: false }),
    readTo(kafka, { topic, groupId: `${group}-ru`, ends, readUncommitted: true })
  ])
  return { phases, lso, read_committed: committed, read_uncommitted: uncommitted }
}

/**
 * Consume-transform-produce: `count` keyed records on `${topic}-in`; a read_committed group
 * consumer hands each fetched batch (one partition) to a transaction that writes `out|value` to
 * the same partition of `${topic}-out` and sends the batch's next offset for the group
 * (sendOffsets), then commits. Afterwards the group's committed offsets and a read_committed
 * read of the output.
 */
async function consumeTransformProduce(kafka, admin, topic, group, count) {
  const input = `${topic}-in`
  const output = `${topic}-out`
  await createTopic(admin, input)
  await createTopic(admin, output)
  const plain = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false })
  await plain.connect()
  try {
    await produceKeyed(plain, input, 0, count, { batch: 30, tag: 'in' }) // small batches: several transactions
  } finally {
    await plain.disconnect()
  }
  const inputEnd = await stableOffsets(admin, input) // no transactions there: the high watermarks

  const producer = txnProducer(kafka, `${topic}-ctp-tid`)
  await producer.connect()
  const consumer = kafka.consumer({
    groupId: group,
    readUncommitted: false,
    sessionTimeout: 30000,
    rebalanceTimeout: 30000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: 200,
    maxBytesPerPartition: 1024,
    allowAutoTopicCreation: false
  })
  const state = { crash: null, failure: null }
  const covered = {} // partition -> input offset the committed transactions cover up to
  const txns = []
  consumer.on(consumer.events.CRASH, e => {
    state.crash = String(e.payload.error && e.payload.error.stack)
  })
  const t0 = Date.now()
  try {
    await consumer.connect()
    await consumer.subscribe({ topics: [input], fromBeginning: true })
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        if (state.failure || batch.isEmpty()) return
        const { partition } = batch
        const next = Number(batch.lastOffset()) + 1
        const t = { ranges: [[partition, Number(batch.firstOffset()), next]], count: batch.messages.length }
        let txn
        try {
          txn = await producer.transaction()
          const meta = await txn.send({
            topic: output,
            acks: -1,
            timeout: 30000,
            messages: batch.messages.map(m => ({ key: m.key, value: `out|${m.value.toString()}`, partition }))
          })
          t.out = meta.map(m => [m.partition, m.errorCode, Number(m.baseOffset)])
          await txn.sendOffsets({
            consumerGroupId: group,
            topics: [{ topic: input, partitions: [{ partition, offset: String(next) }] }]
          })
          await txn.commit()
        } catch (err) {
          log(`transaction for ${input}/${partition} ${JSON.stringify(t.ranges)} failed: ${err.stack}`)
          state.failure = err
          if (txn && txn.isActive()) await txn.abort().catch(e => log(`abort after the failure: ${e.message}`))
          return
        }
        covered[partition] = next
        txns.push(t)
      }
    })
    await waitFor(
      () => {
        if (state.crash) throw new Error(`consumer crashed: ${state.crash}`)
        if (state.failure) throw state.failure
        return offsetsEqual(covered, inputEnd)
      },
      CONSUME_TIMEOUT_MS,
      `transactions covering ${input} up to ${JSON.stringify(inputEnd)}`,
      () => `(covered ${JSON.stringify(covered)}, ${txns.length} transactions)`
    )
  } finally {
    await consumer.disconnect().catch(e => log(`consumer disconnect: ${e.message}`))
    await producer.disconnect().catch(e => log(`producer disconnect: ${e.message}`))
  }
  const transformMs = Date.now() - t0

  // The offsets become the group's when the commit marker reaches the offsets partition.
  let committed
  let polls = 0
  await waitFor(
    async () => {
      polls++
      return offsetsEqual((committed = await committedOffsets(admin, group, input)), inputEnd)
    },
    STEP_TIMEOUT_MS,
    `group ${group} to have committed ${JSON.stringify(inputEnd)} on ${input}`,
    () => `(last ${JSON.stringify(committed)})`
  )
  // Output: each transaction's records plus one commit marker.
  const outputEnd = Object.fromEntries(TXN_PARTITIONS.map(p => [p, 0]))
  for (const t of txns) for (const [p, from, next] of t.ranges) outputEnd[p] += next - from + 1
  const outputLso = await waitForStable(admin, output, outputEnd)
  const read = await readTo(kafka, { topic: output, groupId: `${group}-verify`, ends: outputEnd, readUncommitted: false })
  return {
    count, input_end: inputEnd, txns, transform_ms: transformMs, committed, committed_polls: polls,
    output_lso: outputLso, output: read
  }
}

async function txn(opts) {
  const count = Number(opts.count || 300)
  const { topic, group } = opts
  const kafka = client(opts, 'riptide-it-kafkajs-txn')
  const admin = kafka.admin()
  await admin.connect()
  try {
    const basic = await commitAbortCommit(kafka, admin, topic, group)
    const ctp = await consumeTransformProduce(kafka, admin, topic, `${group}-ctp`, count)
    return { basic, ctp }
  } finally {
    await admin.disconnect()
  }
}

const scenarios = { admin, roundtrip, resume, idempotent, txn }

run(async opts => {
  const scenario = scenarios[opts.scenario]
  if (!scenario) throw new Error(`unknown scenario ${opts.scenario}; known: ${Object.keys(scenarios)}`)
  log(`kafkajs ${require('kafkajs/package.json').version}: ${opts.scenario} against ${opts.bootstrap}`)
  return { client: 'kafkajs', version: require('kafkajs/package.json').version, ...(await scenario(opts)) }
})
