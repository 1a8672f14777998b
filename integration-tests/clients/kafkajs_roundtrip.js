// KafkaJS 2.x against a Causeway broker: admin topic creation, an idempotent producer with keys
// and headers, a consumer group reading everything, and the group's committed offsets.
// Usage: node kafkajs_roundtrip.js HOST:PORT TOPIC. Prints one JSON line; exits 1 on failure.
const { Kafka, logLevel } = require('kafkajs');

const [broker, topic] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'causeway-kafkajs-test', brokers: [broker], logLevel: logLevel.ERROR });
const RECORDS = 50;

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  const producer = kafka.producer({ idempotent: true });
  await producer.connect();
  await producer.send({
    topic,
    messages: Array.from({ length: RECORDS }, (_, i) => ({ key: `k${i}`, value: `v${i}`, headers: { n: `${i}` } })),
  });
  const consumer = kafka.consumer({ groupId: `${topic}-group` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${seen.length} records within 30 s`)), 30000);
    consumer.run({
      eachMessage: async ({ message }) => {
        seen.push({ key: message.key.toString(), value: message.value.toString(), n: message.headers.n.toString() });
        if (seen.length === RECORDS) { clearTimeout(timer); resolve(); }
      },
    });
  });
  await consumer.disconnect();
  const offsets = await admin.fetchOffsets({ groupId: `${topic}-group`, topics: [topic] });
  const committed = offsets[0].partitions.reduce((sum, p) => sum + Number(p.offset), 0);
  await producer.disconnect();
  await admin.disconnect();
  console.log(JSON.stringify({ consumed: seen.length, distinct: new Set(seen.map((r) => r.key)).size,
    consistent: seen.every((r) => r.key.slice(1) === r.value.slice(1) && r.n === r.key.slice(1)), committed }));
}

main().catch((error) => { console.error(error); process.exit(1); });
