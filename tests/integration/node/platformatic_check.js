'use strict'
// @platformatic/kafka against a real Riptide broker; driven by tests/integration/test_platformatic.py.
//
//   node platformatic_check.js admin      --bootstrap H:P --topic T
//   node platformatic_check.js roundtrip  --bootstrap H:P --topic T --group G --count 10000
//   node platformatic_check.js resume     --bootstrap H:P --topic T --group G --count 3000
//   node platformatic_check.js idempotent --bootstrap H:P --topic T --group G --count 5000
//   node platformatic_check.js txn        --bootstrap H:P --topic T --group G --count 300
//
// Prints one JSON line (see common.js); the pytest side makes the assertions.
// The package is ESM; node >= 20.19 loads it with require().

const {
  Admin, Producer, Consumer, ProduceAcks, ConfigResourceTypes, MessagesStreamModes,
  MessagesStreamFallbackModes, FetchIsolationLevels, stringSerializers, stringDeserializers
} = require('@platformatic/kafka')
const {
  log, waitFor, withDeadline, message, Seen, TXN_PHASES, txnRecord, offsetsEqual, errorSummary, toJSONSafe, run
} = require('./common')

const PARTITIONS = 3
const CONSUME_TIMEOUT_MS = 120000
const STEP_TIMEOUT_MS = 60000
const VERSION = require('@platformatic/kafka').clientSoftwareVersion

function base(opts, clientId) {
  return { clientId, bootstrapBrokers: [opts.bootstrap], timeout: 30000, connectTimeout: 10000, retries: 5, retryDelay: 200 }
}

async function createTopic(admin, topic, configs) {
  return withDeadline(
    admin.createTopics({ topics: [topic], partitions: PARTITIONS, replicas: 1, configs }),
    STEP_TIMEOUT_MS,
    `createTopics ${topic}`
  )
}

/**
 * {partition: {high}} through Admin.listOffsets (ListOffsets, timestamp -1 = latest): the high
 * watermark (read_uncommitted, the client's default), or the LSO with READ_COMMITTED.
 */
async function endOffsets(admin, topic, isolationLevel = FetchIsolationLevels.READ_UNCOMMITTED) {
  const partitions = []
  for (let p = 0; p < PARTITIONS; p++) partitions.push({ partitionIndex: p, timestamp: -1n })
  const [result] = await admin.listOffsets({ topics: [{ name: topic, partitions }], isolationLevel })
  const out = {}
  for (const p of result.partitions) out[p.partitionIndex] = { high: Number(p.offset) }
  return out
}

async function committedOffsets(admin, group, topic) {
  const [g] = await admin.listConsumerGroupOffsets({ groups: [group] })
  const out = {}
  for (const t of g.topics) {
    if (t.name !== topic) continue
    for (const p of t.partitions) out[p.partitionIndex] = Number(p.committedOffset)
  }
  return out
}

/** Keyed messages first..first+count-1, sent sequentially in batches of `batch` (order per key). */
async function produceKeyed(producer, topic, first, count, { batch = 500, tag, compression } = {}) {
  const acks = []
  for (let start = first; start < first + count; start += batch) {
    const messages = []
    for (let i = start; i < Math.min(first + count, start + batch); i++) messages.push({ topic, ...message(i, tag) })
    const result = await withDeadline(
      producer.send({ messages, acks: ProduceAcks.ALL, compression }),
      STEP_TIMEOUT_MS,
      `send of messages ${start}..`
    )
    for (const o of result.offsets || []) acks.push([o.partition, 0, Number(o.offset)])
  }
  return acks
}

/**
 * A group consumer on `topic` (mode committed, falling back to earliest) until
 * `done(seen, stream)` holds (deadline CONSUME_TIMEOUT_MS). `onMessage(m)` returns false to leave
 * a message unrecorded. The client's default isolation level is read_committed.
 */
async function consumeUntil(opts, { topic, group, autocommit, done, onMessage, what, isolationLevel }) {
  const consumer = new Consumer({
    ...base(opts, 'riptide-it-platformatic-consumer'),
    groupId: group,
    sessionTimeout: 30000,
    rebalanceTimeout: 30000,
    heartbeatInterval: 1000,
    maxWaitTime: 200,
    deserializers: stringDeserializers,
    ...(isolationLevel === undefined ? {} : { isolationLevel })
  })
  const seen = new Seen()
  const state = { joins: [], error: null }
  consumer.on('consumer:group:join', payload => {
    state.joins.push({
      generationId: payload.generationId, isLeader: payload.isLeader,
      assignments: (payload.assignments || []).map(a => ({ topic: a.topic, partitions: a.partitions }))
    })
  })
  consumer.on('consumer:heartbeat:error', payload => log('heartbeat error:', JSON.stringify(errorSummary(payload.error))))
  const stream = await withDeadline(
    consumer.consume({
      topics: [topic],
      mode: MessagesStreamModes.COMMITTED,
      fallbackMode: MessagesStreamFallbackModes.EARLIEST,
      autocommit,
      sessionTimeout: 30000,
      rebalanceTimeout: 30000,
      heartbeatInterval: 1000,
      maxWaitTime: 200
    }),
    STEP_TIMEOUT_MS,
    'consumer.consume (group join)'
  )
  stream.on('error', err => {
    state.error = errorSummary(err)
  })
  stream.on('data', m => {
    if (onMessage && onMessage(m) === false) return
    seen.add(m.partition, m.offset, m.key, m.value)
  })
  const close = async () => {
    await withDeadline(stream.close(), STEP_TIMEOUT_MS, 'stream.close')
    await withDeadline(consumer.close(), STEP_TIMEOUT_MS, 'consumer.close')
  }
  try {
    await waitFor(
      () => {
        if (state.error) throw new Error(`consumer stream failed: ${JSON.stringify(state.error)}`)
        return done(seen, stream)
      },
      CONSUME_TIMEOUT_MS,
      what,
      () => `(consumed ${seen.count} unique, per partition ${JSON.stringify(seen.perPartition())}, ` +
        `next offsets ${JSON.stringify(toJSONSafe(stream.offsetsToFetch))})`
    )
  } catch (err) {
    await close().catch(() => {})
    throw err
  }
  return { consumer, stream, seen, state, close }
}

// ---- scenarios -------------------------------------------------------------------------------

async function admin(opts) {
  const topic = opts.topic
  const admin = new Admin(base(opts, 'riptide-it-platformatic-admin'))
  try {
    const created = await createTopic(admin, topic, [{ name: 'retention.ms', value: '3600000' }])
    let createdAgain
    try {
      createdAgain = { ok: true, result: await createTopic(admin, topic) }
    } catch (err) {
      createdAgain = { ok: false, error: errorSummary(err) }
    }
    const listed = await admin.listTopics()
    const md = await admin.metadata({ topics: [topic], forceUpdate: true })
    const t = md.topics.get(topic)
    const configs = await admin.describeConfigs({
      resources: [{ resourceType: ConfigResourceTypes.TOPIC, resourceName: topic, configurationKeys: ['retention.ms', 'cleanup.policy'] }]
    })
    const offsets = await endOffsets(admin, topic)
    await admin.deleteTopics({ topics: [topic] })
    // Deleted topics leave the metadata (polled with a deadline).
    const gone = await waitFor(async () => !(await admin.listTopics()).includes(topic), 30000, `${topic} to disappear`)
    return {
      cluster: { id: md.id, brokers: Array.from(md.brokers.keys()), controllerId: md.controllerId },
      created,
      createdAgain,
      listed: listed.includes(topic),
      metadata: {
        name: topic,
        id: t.id,
        partitionsCount: t.partitionsCount,
        partitions: t.partitions.map((p, i) => ({ partition: i, leader: p.leader, replicas: p.replicas, isr: p.isr }))
      },
      configs: configs.map(r => ({
        name: r.resourceName,
        entries: Object.fromEntries(r.configs.map(c => [c.name, c.value]))
      })),
      offsets,
      goneAfterDelete: gone
    }
  } finally {
    await admin.close()
  }
}

async function roundtrip(opts) {
  const count = Number(opts.count || 10000)
  const { topic, group } = opts
  const admin = new Admin(base(opts, 'riptide-it-platformatic-admin'))
  try {
    await createTopic(admin, topic)
    const producer = new Producer({ ...base(opts, 'riptide-it-platformatic-producer'), serializers: stringSerializers, autocreateTopics: false })
    const t0 = Date.now()
    let acks
    try {
      acks = await produceKeyed(producer, topic, 0, count, { tag: 'rt' })
    } finally {
      await producer.close()
    }
    const produceMs = Date.now() - t0
    const end = await endOffsets(admin, topic)

    const t1 = Date.now()
    const c = await consumeUntil(opts, { topic, group, autocommit: true, done: s => s.count >= count, what: `${count} messages` })
    const consumeMs = Date.now() - t1
    const described = await admin.describeGroups({ groups: [group] })
    await c.close() // flushes the pending autocommit, leaves the group
    const committed = await committedOffsets(admin, group, topic)
    return {
      count, acks, end, produce_ms: produceMs, consume_ms: consumeMs,
      consumed: c.seen.rows, duplicates: c.seen.duplicates, joins: c.state.joins,
      group: Array.from(described.values()).map(g => ({
        groupId: g.id, state: g.state, protocolType: g.protocolType, protocol: g.protocol, members: g.members.size
      })),
      committed
    }
  } finally {
    await admin.close()
  }
}

async function resume(opts) {
  const count = Number(opts.count || 3000)
  const stopAt = Math.floor(count / 2)
  const { topic, group } = opts
  const admin = new Admin(base(opts, 'riptide-it-platformatic-admin'))
  try {
    await createTopic(admin, topic)
    const producer = new Producer({ ...base(opts, 'riptide-it-platformatic-producer'), serializers: stringSerializers })
    try {
      await produceKeyed(producer, topic, 0, count, { tag: 'rs' })
    } finally {
      await producer.close()
    }
    const end = await endOffsets(admin, topic)

    // First consumer: processes stopAt messages, commits exactly what it processed (Message.commit
    // of the last processed message per partition), leaves.
    const processed = {} // partition -> next offset to process
    const last = {} // partition -> last processed message
    let taken = 0
    const first = await consumeUntil(opts, {
      topic, group, autocommit: false, what: `${stopAt} messages (first consumer)`,
      onMessage: m => {
        if (taken >= stopAt) return false // "crashed" after stopAt messages: later ones are not processed
        taken++
        processed[m.partition] = Number(m.offset) + 1
        last[m.partition] = m
        return true
      },
      done: () => taken >= stopAt
    })
    for (const m of Object.values(last)) await withDeadline(m.commit(), STEP_TIMEOUT_MS, 'Message.commit')
    await first.close()
    const committedFirst = await committedOffsets(admin, group, topic)

    // Second consumer, same group: must start at the committed offsets (earliest where none).
    const expected = Object.keys(end).reduce((n, p) => n + end[p].high - (processed[p] || 0), 0)
    const second = await consumeUntil(opts, {
      topic, group, autocommit: true, what: `${expected} messages (second consumer)`, done: s => s.count >= expected
    })
    await second.close()
    const committedSecond = await committedOffsets(admin, group, topic)
    return {
      count, end, processed, committed_first: committedFirst, first: first.seen.rows,
      first_duplicates: first.seen.duplicates, expected_second: expected, second: second.seen.rows,
      second_duplicates: second.seen.duplicates, second_first_offsets: second.seen.firstOffsets(),
      committed_second: committedSecond
    }
  } finally {
    await admin.close()
  }
}

async function idempotent(opts) {
  const count = Number(opts.count || 5000)
  const extra = 500
  const { topic, group } = opts
  const admin = new Admin(base(opts, 'riptide-it-platformatic-admin'))
  try {
    await createTopic(admin, topic)
    // The client advances its per-partition sequence on the response: one send at a time.
    const producerIds = []
    const acks = []
    for (const [first, n] of [[0, count], [count, extra]]) {
      const producer = new Producer({
        ...base(opts, 'riptide-it-platformatic-idem'), serializers: stringSerializers, idempotent: true
      })
      try {
        const info = await withDeadline(producer.initIdempotentProducer({}), STEP_TIMEOUT_MS, 'InitProducerId')
        producerIds.push({ producerId: info.producerId, producerEpoch: info.producerEpoch })
        try {
          acks.push(await produceKeyed(producer, topic, first, n, { batch: 100, tag: 'idem' }))
        } catch (err) {
          const ids = JSON.stringify(toJSONSafe(producerIds))
          throw new Error(`idempotent producer #${producerIds.length} failed to send (InitProducerId answers so far: ${ids}): ${err.message}`, { cause: err })
        }
      } finally {
        await producer.close()
      }
    }
    const end = await endOffsets(admin, topic)
    const total = count + extra
    const c = await consumeUntil(opts, { topic, group, autocommit: true, done: s => s.count >= total, what: `${total} messages` })
    await c.close()
    return { count, extra, acks, end, producers: producerIds, consumed: c.seen.rows, duplicates: c.seen.duplicates }
  } finally {
    await admin.close()
  }
}

// ---- transactions ----------------------------------------------------------------------------

const TXN_PARTITIONS = Array.from({ length: PARTITIONS }, (_v, p) => p)
// Records per consume-transform-produce transaction (at most).
const CTP_BATCH = 40

/**
 * A transactional producer: transactionalId + idempotent. The client retries a request that got
 * a retriable error (CONCURRENT_TRANSACTIONS while the previous transaction's markers are being
 * written, for one) `retries` times, `retryDelay` ms apart.
 */
function txnProducer(opts, transactionalId) {
  return new Producer({
    ...base(opts, 'riptide-it-platformatic-txn'),
    transactionalId,
    idempotent: true,
    serializers: stringSerializers,
    autocreateTopics: false,
    retries: 50,
    retryDelay: 100
  })
}

/** {partition: LSO} (read_committed ListOffsets). */
async function stableOffsets(admin, topic) {
  const end = await endOffsets(admin, topic, FetchIsolationLevels.READ_COMMITTED)
  return Object.fromEntries(Object.entries(end).map(([p, { high }]) => [p, high]))
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
 * A group consumer (own group, from the beginning) that reads `topic` until its next fetch
 * offset reaches `ends` on every partition. Rows: [partition, offset, value].
 */
async function readTo(opts, { topic, group, ends, isolationLevel }) {
  const rows = []
  let positions = {}
  const c = await consumeUntil(opts, {
    topic, group, autocommit: false, isolationLevel,
    what: `${isolationLevel === FetchIsolationLevels.READ_COMMITTED ? 'read_committed' : 'read_uncommitted'} ` +
      `consumer of ${topic} at ${JSON.stringify(ends)}`,
    onMessage: m => {
      rows.push([m.partition, Number(m.offset), m.value])
      return true
    },
    done: (_s, stream) => {
      positions = {}
      for (const p of Object.keys(ends)) positions[p] = Number(stream.offsetsToFetch.get(`${topic}:${p}`) ?? -1)
      return Object.keys(ends).every(p => positions[p] >= ends[p])
    }
  })
  await c.close()
  return { rows, duplicates: c.seen.duplicates, positions }
}

/**
 * Three transactions over the partitions of `topic` (TXN_PHASES: commit, abort, commit), each
 * written with two sends; then a read_committed and a read_uncommitted consumer read it all.
 */
async function commitAbortCommit(opts, admin, topic, group) {
  await createTopic(admin, topic)
  const producer = txnProducer(opts, `${topic}-tid`)
  const phases = []
  try {
    for (const [tag, n, outcome] of TXN_PHASES) {
      const t0 = Date.now()
      const txn = await withDeadline(producer.beginTransaction(), STEP_TIMEOUT_MS, `beginTransaction ${tag}`)
      const acks = []
      for (const [from, to] of [[0, n / 2], [n / 2, n]]) {
        const messages = []
        for (const p of TXN_PARTITIONS) for (let i = from; i < to; i++) messages.push({ topic, ...txnRecord(tag, p, i) })
        const result = await withDeadline(txn.send({ messages }), STEP_TIMEOUT_MS, `send ${tag} ${from}..${to}`)
        for (const o of result.offsets || []) acks.push([o.partition, 0, Number(o.offset)])
      }
      await withDeadline(outcome === 'commit' ? txn.commit() : txn.abort(), STEP_TIMEOUT_MS, `${outcome} ${tag}`)
      phases.push({
        tag, count: n, outcome, acks, ms: Date.now() - t0,
        producer: { producerId: producer.producerId, producerEpoch: producer.producerEpoch }
      })
      log(`transaction ${tag}: ${outcome} after ${Date.now() - t0} ms`)
    }
  } finally {
    await producer.close()
  }
  // Every record and one marker per transaction and partition.
  const end = TXN_PHASES.reduce((sum, [, n]) => sum + n + 1, 0)
  const ends = Object.fromEntries(TXN_PARTITIONS.map(p => [p, end]))
  const lso = await waitForStable(admin, topic, ends)
  const hw = Object.fromEntries(Object.entries(await endOffsets(admin, topic)).map(([p, { high }]) => [p, high]))
  const [committed, uncommitted] = await Promise.all([
    readTo(opts, { topic, group: `${group}-rc`, ends, isolationLevel: FetchIsolationLevels.READ_COMMITTED }),
    readTo(opts, { topic, group: `${group}-ru`, ends, isolationLevel: FetchIsolationLevels.READ_UNCOMMITTED })
  ])
  return { phases, lso, hw, read_committed: committed, read_uncommitted: uncommitted }
}

/**
 * Consume-transform-produce: `count` keyed records on `${topic}-in`; a read_committed group
 * consumer (no autocommit) streams them; up to CTP_BATCH of them at a time become a transaction
 * that writes `out|value` to the same partition of `${topic}-out`, adds the consumer's group
 * (AddOffsetsToTxn) and the last message of each partition (TxnOffsetCommit), and commits.
 * Afterwards the group's committed offsets and a read_committed read of the output.
 */
async function consumeTransformProduce(opts, admin, topic, group, count) {
  const input = `${topic}-in`
  const output = `${topic}-out`
  await createTopic(admin, input)
  await createTopic(admin, output)
  const plain = new Producer({ ...base(opts, 'riptide-it-platformatic-producer'), serializers: stringSerializers, autocreateTopics: false })
  try {
    await produceKeyed(plain, input, 0, count, { batch: 30, tag: 'in' })
  } finally {
    await plain.close()
  }
  const inputEnd = Object.fromEntries(Object.entries(await endOffsets(admin, input)).map(([p, { high }]) => [p, high]))

  const producer = txnProducer(opts, `${topic}-ctp-tid`)
  const consumer = new Consumer({
    ...base(opts, 'riptide-it-platformatic-ctp'),
    groupId: group,
    sessionTimeout: 30000,
    rebalanceTimeout: 30000,
    heartbeatInterval: 1000,
    maxWaitTime: 200,
    isolationLevel: FetchIsolationLevels.READ_COMMITTED,
    deserializers: stringDeserializers
  })
  const pending = []
  const state = { error: null }
  const covered = {} // partition -> input offset the committed transactions cover up to
  const txns = []
  const t0 = Date.now()
  let stream
  try {
    stream = await withDeadline(
      consumer.consume({
        topics: [input],
        mode: MessagesStreamModes.COMMITTED,
        fallbackMode: MessagesStreamFallbackModes.EARLIEST,
        autocommit: false,
        maxWaitTime: 200
      }),
      STEP_TIMEOUT_MS,
      'consumer.consume (group join)'
    )
    stream.on('error', err => {
      state.error = errorSummary(err)
    })
    stream.on('data', m => pending.push(m))
    const deadline = Date.now() + CONSUME_TIMEOUT_MS
    while (!offsetsEqual(covered, inputEnd)) {
      await waitFor(
        () => {
          if (state.error) throw new Error(`consumer stream failed: ${JSON.stringify(state.error)}`)
          return pending.length > 0
        },
        Math.max(deadline - Date.now(), 1),
        `input records past ${JSON.stringify(covered)} (input ends at ${JSON.stringify(inputEnd)})`,
        () => `(${txns.length} transactions so far)`
      )
      const batch = pending.splice(0, CTP_BATCH)
      const last = new Map() // partition -> last message of the batch there
      const ranges = new Map() // partition -> [first offset, next offset]
      for (const m of batch) {
        last.set(m.partition, m)
        const r = ranges.get(m.partition)
        if (r) r[1] = Number(m.offset) + 1
        else ranges.set(m.partition, [Number(m.offset), Number(m.offset) + 1])
      }
      const t = { ranges: Array.from(ranges, ([p, [from, next]]) => [p, from, next]), count: batch.length }
      const txn = await withDeadline(producer.beginTransaction(), STEP_TIMEOUT_MS, 'beginTransaction')
      try {
        const result = await withDeadline(
          txn.send({ messages: batch.map(m => ({ topic: output, key: m.key, value: `out|${m.value}`, partition: m.partition })) }),
          STEP_TIMEOUT_MS,
          `send of ${batch.length} transformed records`
        )
        t.out = (result.offsets || []).map(o => [o.partition, 0, Number(o.offset)])
        await withDeadline(txn.addConsumer(consumer), STEP_TIMEOUT_MS, 'addConsumer (AddOffsetsToTxn)')
        // One TxnOffsetCommit per partition (the client commits message.offset + 1); sequential,
        // since the client merges concurrent ones.
        for (const m of last.values()) await withDeadline(txn.addOffset(m), STEP_TIMEOUT_MS, 'addOffset (TxnOffsetCommit)')
        await withDeadline(txn.commit(), STEP_TIMEOUT_MS, 'commit (EndTxn)')
      } catch (err) {
        log(`transaction ${JSON.stringify(t.ranges)} failed: ${err.stack}`)
        if (!txn.completed) await txn.abort().catch(e => log(`abort after the failure: ${e.message}`))
        throw err
      }
      for (const [p, , next] of t.ranges) covered[p] = next
      txns.push(t)
    }
  } finally {
    if (stream) await withDeadline(stream.close(), STEP_TIMEOUT_MS, 'stream.close').catch(e => log(`stream close: ${e.message}`))
    await withDeadline(consumer.close(), STEP_TIMEOUT_MS, 'consumer.close').catch(e => log(`consumer close: ${e.message}`))
    await producer.close().catch(e => log(`producer close: ${e.message}`))
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
  // Output: each transaction's records plus one commit marker per partition it wrote to.
  const outputEnd = Object.fromEntries(TXN_PARTITIONS.map(p => [p, 0]))
  for (const t of txns) for (const [p, from, next] of t.ranges) outputEnd[p] += next - from + 1
  const outputLso = await waitForStable(admin, output, outputEnd)
  const read = await readTo(opts, {
    topic: output, group: `${group}-verify`, ends: outputEnd, isolationLevel: FetchIsolationLevels.READ_COMMITTED
  })
  return {
    count, input_end: inputEnd, txns, transform_ms: transformMs, committed, committed_polls: polls,
    output_lso: outputLso, output: read
  }
}

async function txn(opts) {
  const count = Number(opts.count || 300)
  const { topic, group } = opts
  const admin = new Admin(base(opts, 'riptide-it-platformatic-admin'))
  try {
    const basic = await commitAbortCommit(opts, admin, topic, group)
    const ctp = await consumeTransformProduce(opts, admin, topic, `${group}-ctp`, count)
    return { basic, ctp }
  } finally {
    await admin.close()
  }
}

const scenarios = { admin, roundtrip, resume, idempotent, txn }

run(async opts => {
  const scenario = scenarios[opts.scenario]
  if (!scenario) throw new Error(`unknown scenario ${opts.scenario}; known: ${Object.keys(scenarios)}`)
  log(`@platformatic/kafka ${VERSION} on node ${process.version}: ${opts.scenario} against ${opts.bootstrap}`)
  return { client: '@platformatic/kafka', version: VERSION, ...(await scenario(opts)) }
})
