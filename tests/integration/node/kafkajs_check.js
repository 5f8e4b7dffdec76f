'use strict'
// KafkaJS against a real Riptide broker; driven by tests/integration/test_kafkajs.py.
//
//   node kafkajs_check.js admin      --bootstrap H:P --topic T
//   node kafkajs_check.js roundtrip  --bootstrap H:P --topic T --group G --count 10000
//   node kafkajs_check.js resume     --bootstrap H:P --topic T --group G --count 3000
//   node kafkajs_check.js idempotent --bootstrap H:P --topic T --group G --count 5000
//
// Prints one JSON line (see common.js); the pytest side makes the assertions.

const { Kafka, logLevel, Partitioners, CompressionTypes, ConfigResourceTypes } = require('kafkajs')
const { log, waitFor, withDeadline, message, Seen, run } = require('./common')

const PARTITIONS = 3
const CONSUME_TIMEOUT_MS = 120000
const STEP_TIMEOUT_MS = 60000

function client(opts, clientId) {
  return new Kafka({
    clientId,
    brokers: [opts.bootstrap],
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
 * Runs a group consumer on `topic` until `done(seen)` holds (deadline CONSUME_TIMEOUT_MS).
 * `onMessage(consumer, partition, message)` returns false to leave a message unrecorded.
 */
async function consumeUntil(kafka, { topic, groupId, autoCommit, done, onMessage, what }) {
  const consumer = kafka.consumer({
    groupId,
    sessionTimeout: 30000,
    rebalanceTimeout: 30000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: 200,
    allowAutoTopicCreation: false
  })
  const seen = new Seen()
  const state = { joins: [], crash: null }
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
        return done(seen)
      },
      CONSUME_TIMEOUT_MS,
      what,
      () => `(consumed ${seen.count} unique, per partition ${JSON.stringify(seen.perPartition())})`
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

const scenarios = { admin, roundtrip, resume, idempotent }

run(async opts => {
  const scenario = scenarios[opts.scenario]
  if (!scenario) throw new Error(`unknown scenario ${opts.scenario}; known: ${Object.keys(scenarios)}`)
  log(`kafkajs ${require('kafkajs/package.json').version}: ${opts.scenario} against ${opts.bootstrap}`)
  return { client: 'kafkajs', version: require('kafkajs/package.json').version, ...(await scenario(opts)) }
})
