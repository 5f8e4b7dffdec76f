'use strict'
// @platformatic/kafka against a real Riptide broker; driven by tests/integration/test_platformatic.py.
//
//   node platformatic_check.js admin      --bootstrap H:P --topic T
//   node platformatic_check.js roundtrip  --bootstrap H:P --topic T --group G --count 10000
//   node platformatic_check.js resume     --bootstrap H:P --topic T --group G --count 3000
//   node platformatic_check.js idempotent --bootstrap H:P --topic T --group G --count 5000
//
// Prints one JSON line (see common.js); the pytest side makes the assertions.
// The package is ESM; node >= 20.19 loads it with require().

const {
  Admin, Producer, Consumer, ProduceAcks, ConfigResourceTypes, MessagesStreamModes,
  MessagesStreamFallbackModes, stringSerializers, stringDeserializers
} = require('@platformatic/kafka')
const { log, waitFor, withDeadline, message, Seen, errorSummary, toJSONSafe, run } = require('./common')

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

/** {partition: high watermark} through Admin.listOffsets (ListOffsets, timestamp -1 = latest). */
async function endOffsets(admin, topic) {
  const partitions = []
  for (let p = 0; p < PARTITIONS; p++) partitions.push({ partitionIndex: p, timestamp: -1n })
  const [result] = await admin.listOffsets({ topics: [{ name: topic, partitions }] })
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
 * A group consumer on `topic` (mode committed, falling back to earliest) until `done(seen)` holds
 * (deadline CONSUME_TIMEOUT_MS). `onMessage(m)` returns false to leave a message unrecorded.
 */
async function consumeUntil(opts, { topic, group, autocommit, done, onMessage, what }) {
  const consumer = new Consumer({
    ...base(opts, 'riptide-it-platformatic-consumer'),
    groupId: group,
    sessionTimeout: 30000,
    rebalanceTimeout: 30000,
    heartbeatInterval: 1000,
    maxWaitTime: 200,
    deserializers: stringDeserializers
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
        return done(seen)
      },
      CONSUME_TIMEOUT_MS,
      what,
      () => `(consumed ${seen.count} unique, per partition ${JSON.stringify(seen.perPartition())})`
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

const scenarios = { admin, roundtrip, resume, idempotent }

run(async opts => {
  const scenario = scenarios[opts.scenario]
  if (!scenario) throw new Error(`unknown scenario ${opts.scenario}; known: ${Object.keys(scenarios)}`)
  log(`@platformatic/kafka ${VERSION} on node ${process.version}: ${opts.scenario} against ${opts.bootstrap}`)
  return { client: '@platformatic/kafka', version: VERSION, ...(await scenario(opts)) }
})
