package kopd.it;

import static kopd.it.Util.describe;
import static kopd.it.Util.failure;
import static kopd.it.Util.get;
import static kopd.it.Util.leaders;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.DeletedRecords;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.consumer.OffsetOutOfRangeException;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.compress.Compression;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.message.ApiVersionsResponseData.ApiVersion;
import org.apache.kafka.common.message.ProduceRequestData;
import org.apache.kafka.common.message.ProduceResponseData;
import org.apache.kafka.common.protocol.ApiKeys;
import org.apache.kafka.common.protocol.Errors;
import org.apache.kafka.common.record.internal.MemoryRecords;
import org.apache.kafka.common.record.internal.SimpleRecord;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.requests.AbstractRequest;
import org.apache.kafka.common.requests.AbstractResponse;
import org.apache.kafka.common.requests.ApiVersionsRequest;
import org.apache.kafka.common.requests.ApiVersionsResponse;
import org.apache.kafka.common.requests.ProduceRequest;
import org.apache.kafka.common.requests.ProduceResponse;
import org.apache.kafka.common.requests.RequestHeader;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Produce / Fetch / ListOffsets / DeleteRecords with Apache Kafka's own Java clients
 * (KafkaProducer with its defaults: idempotence on, acks=all; KafkaConsumer with assign/seek).
 */
class ProduceConsumeTest {
    static final int PARTITIONS = 8;

    @TempDir
    static Path dataDir;

    static Kopd kopd;
    static Admin admin;

    @BeforeAll
    static void startKopd() throws Exception {
        kopd = Kopd.start(dataDir, 2);
        admin = kopd.admin();
    }

    @AfterAll
    static void stopKopd() {
        if (admin != null) {
            admin.close(Duration.ofSeconds(5));
        }
        if (kopd != null) {
            kopd.close();
        }
    }

    // ---- helpers ------------------------------------------------------------------------------

    static void createTopic(String name, int partitions) throws Exception {
        get(admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1))).all());
        Util.eventually(Duration.ofSeconds(10), () -> {
            TopicDescription d = describe(admin, name);
            assertEquals(partitions, d.partitions().size(), "partitions of " + name);
            for (TopicPartitionInfo p : d.partitions()) {
                assertNotNull(p.leader(), "leader of " + name + "-" + p.partition());
            }
        });
    }

    static List<TopicPartition> partitions(String topic, int n) {
        return IntStream.range(0, n).mapToObj(p -> new TopicPartition(topic, p)).collect(Collectors.toList());
    }

    static KafkaProducer<byte[], byte[]> producer(Map<String, String> overrides) {
        Properties p = kopd.producerProps();
        p.putAll(overrides);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<byte[], byte[]> consumer(Map<String, String> overrides) {
        Properties p = kopd.consumerProps();
        p.putAll(overrides);
        return new KafkaConsumer<>(p);
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static byte[] longBytes(long v) {
        return ByteBuffer.allocate(8).putLong(v).array();
    }

    /**
     * Polls {@code c} (already assigned and positioned) until every partition's position reaches
     * {@code until}; bounded by {@code within}.
     */
    static Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> readUntil(
            KafkaConsumer<byte[], byte[]> c, Map<TopicPartition, Long> until, Duration within) {
        Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> got = new HashMap<>();
        until.keySet().forEach(tp -> got.put(tp, new ArrayList<>()));
        long deadline = System.nanoTime() + within.toNanos();
        while (true) {
            boolean done = true;
            for (Map.Entry<TopicPartition, Long> e : until.entrySet()) {
                if (c.position(e.getKey(), Duration.ofSeconds(30)) < e.getValue()) {
                    done = false;
                }
            }
            if (done) {
                return got;
            }
            if (System.nanoTime() > deadline) {
                Map<TopicPartition, Long> pos = new TreeMap<>((a, b) -> Integer.compare(a.partition(), b.partition()));
                until.keySet().forEach(tp -> pos.put(tp, c.position(tp)));
                fail("consumer did not reach " + until + " within " + within + "; positions " + pos);
            }
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                got.get(new TopicPartition(r.topic(), r.partition())).add(r);
            }
        }
    }

    static List<Header> headerList(Iterable<Header> hs) {
        List<Header> out = new ArrayList<>();
        hs.forEach(out::add);
        return out;
    }

    static void assertHeadersEqual(Iterable<Header> expected, Iterable<Header> actual, String what) {
        List<Header> e = headerList(expected);
        List<Header> a = headerList(actual);
        assertEquals(e.size(), a.size(), what + ": header count; expected " + e + " got " + a);
        for (int i = 0; i < e.size(); i++) {
            assertEquals(e.get(i).key(), a.get(i).key(), what + ": header " + i + " key");
            assertArrayEquals(e.get(i).value(), a.get(i).value(), what + ": header " + i + " (" + e.get(i).key() + ") value");
        }
    }

    // ---- round trip per compression codec -----------------------------------------------------

    record Sent(int seq, ProducerRecord<byte[], byte[]> record, RecordMetadata md) {}

    @ParameterizedTest(name = "compression.type={0}")
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void roundTripWithDefaultProducer(String codec) throws Exception {
        String topic = "rt-" + codec;
        createTopic(topic, PARTITIONS);
        int n = 4000;
        Random rnd = new Random(codec.hashCode());
        long base = System.currentTimeMillis() - 600_000;
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            byte[] key = i % 50 == 49 ? null : utf8("key-" + (i % 97));
            byte[] value;
            if (i % 333 == 0) {
                value = null;
            } else if (i % 101 == 0) {
                value = new byte[0];
            } else if (i % 2 == 0) {
                value = utf8(("value " + i + " of " + codec + " ").repeat(1 + i % 40));
            } else {
                value = new byte[rnd.nextInt(2000)];
                rnd.nextBytes(value);
            }
            List<Header> headers = new ArrayList<>();
            if (i % 13 != 0) {
                headers.add(new RecordHeader("seq", utf8(Integer.toString(i))));
                headers.add(new RecordHeader("codec", utf8(codec)));
                if (i % 3 == 0) {
                    headers.add(new RecordHeader("dup", utf8("first")));
                    headers.add(new RecordHeader("dup", utf8("second")));
                }
                if (i % 7 == 0) {
                    headers.add(new RecordHeader("null-value", (byte[]) null));
                }
                if (i % 11 == 0) {
                    headers.add(new RecordHeader("empty", new byte[0]));
                }
                if (i % 17 == 0) {
                    byte[] bin = new byte[64];
                    rnd.nextBytes(bin);
                    headers.add(new RecordHeader("bin\u00e9", bin));
                }
            }
            records.add(new ProducerRecord<>(topic, null, base + i * 10L, key, value, headers));
        }

        List<Sent> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec))) {
            List<Future<RecordMetadata>> futures = new ArrayList<>();
            for (ProducerRecord<byte[], byte[]> r : records) {
                futures.add(p.send(r));
            }
            p.flush();
            for (int i = 0; i < n; i++) {
                RecordMetadata md = futures.get(i).get(60, TimeUnit.SECONDS);
                sent.add(new Sent(i, records.get(i), md));
            }
        }

        // What the producer was told: contiguous offsets from 0 per partition, in send order.
        Map<Integer, List<Sent>> byPartition = new TreeMap<>();
        for (Sent s : sent) {
            assertTrue(s.md().partition() >= 0 && s.md().partition() < PARTITIONS, "partition " + s.md());
            assertEquals(s.record().timestamp(), s.md().timestamp(), "CreateTime timestamp in metadata of record " + s.seq());
            byPartition.computeIfAbsent(s.md().partition(), k -> new ArrayList<>()).add(s);
        }
        assertTrue(byPartition.size() > 1, "records spread over partitions: " + byPartition.keySet());
        Map<TopicPartition, Long> end = new HashMap<>();
        for (Map.Entry<Integer, List<Sent>> e : byPartition.entrySet()) {
            List<Sent> l = e.getValue();
            for (int j = 0; j < l.size(); j++) {
                assertEquals(j, l.get(j).md().offset(),
                        "offset of the " + j + "th record sent to partition " + e.getKey() + " (seq " + l.get(j).seq() + ")");
            }
            end.put(new TopicPartition(topic, e.getKey()), (long) l.size());
        }
        for (TopicPartition tp : partitions(topic, PARTITIONS)) {
            end.putIfAbsent(tp, 0L);
        }

        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of())) {
            List<TopicPartition> tps = partitions(topic, PARTITIONS);
            assertEquals(end, c.endOffsets(tps, Duration.ofSeconds(30)), "endOffsets");
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> got = readUntil(c, end, Duration.ofSeconds(60));
            for (Map.Entry<Integer, List<Sent>> e : byPartition.entrySet()) {
                List<Sent> exp = e.getValue();
                List<ConsumerRecord<byte[], byte[]>> act = got.get(new TopicPartition(topic, e.getKey()));
                assertEquals(exp.size(), act.size(), "records read from partition " + e.getKey());
                for (int j = 0; j < exp.size(); j++) {
                    ProducerRecord<byte[], byte[]> x = exp.get(j).record();
                    ConsumerRecord<byte[], byte[]> a = act.get(j);
                    String what = codec + " partition " + e.getKey() + " offset " + j + " (seq " + exp.get(j).seq() + ")";
                    assertEquals(j, a.offset(), what + ": offset (per-partition order)");
                    assertArrayEquals(x.key(), a.key(), what + ": key");
                    assertArrayEquals(x.value(), a.value(), what + ": value");
                    assertEquals(x.timestamp(), a.timestamp(), what + ": timestamp");
                    assertEquals(TimestampType.CREATE_TIME, a.timestampType(), what + ": timestamp type");
                    assertHeadersEqual(x.headers(), a.headers(), what);
                }
            }
        }
    }

    // ---- 1,000,000 records --------------------------------------------------------------------

    static final int MILLION = 1_000_000;

    static byte[] millionKey(int i) {
        return utf8("k" + i);
    }

    static byte[] millionValue(int i) {
        byte[] v = new byte[100];
        long x = 0x9E3779B97F4A7C15L * (i + 1);
        for (int j = 0; j < v.length; j += 8) {
            x ^= x << 13;
            x ^= x >>> 7;
            x ^= x << 17;
            for (int k = 0; k < 8 && j + k < v.length; k++) {
                v[j + k] = (byte) (x >>> (8 * k));
            }
        }
        return v;
    }

    @Test
    @Timeout(value = 330, unit = TimeUnit.SECONDS)
    void millionRecordsRoundTrip() throws Exception {
        String topic = "million";
        createTopic(topic, PARTITIONS);
        long budgetNs = TimeUnit.MINUTES.toNanos(5);
        long t0 = System.nanoTime();
        long deadline = t0 + budgetNs;
        long base = System.currentTimeMillis() - 1_800_000;

        AtomicLong acked = new AtomicLong();
        AtomicLong errors = new AtomicLong();
        AtomicReference<String> firstProblem = new AtomicReference<>();
        Map<String, String> cfg = Map.of(
                ProducerConfig.LINGER_MS_CONFIG, "5",
                ProducerConfig.BATCH_SIZE_CONFIG, Integer.toString(256 * 1024),
                ProducerConfig.BUFFER_MEMORY_CONFIG, Long.toString(64L << 20));
        try (KafkaProducer<byte[], byte[]> p = producer(cfg)) {
            for (int i = 0; i < MILLION; i++) {
                if ((i & 0x3fff) == 0 && System.nanoTime() > deadline) {
                    fail("producing 1,000,000 records took over 5 min; sent " + i + ", acked " + acked.get());
                }
                final int seq = i;
                int partition = i % PARTITIONS;
                ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, partition, base + i,
                        millionKey(i), millionValue(i), List.of(new RecordHeader("i", longBytes(i))));
                p.send(r, (md, ex) -> {
                    if (ex != null) {
                        errors.incrementAndGet();
                        firstProblem.compareAndSet(null, "record " + seq + " failed: " + ex);
                    } else if (md.partition() != partition || md.offset() != seq / PARTITIONS) {
                        errors.incrementAndGet();
                        firstProblem.compareAndSet(null, "record " + seq + " acked at " + md.partition() + "@"
                                + md.offset() + ", expected " + partition + "@" + (seq / PARTITIONS));
                    } else {
                        acked.incrementAndGet();
                    }
                });
            }
            p.flush();
        }
        long t1 = System.nanoTime();
        assertEquals(0, errors.get(), "producer errors; first: " + firstProblem.get());
        assertEquals(MILLION, acked.get(), "acknowledged records");
        double produceS = (t1 - t0) / 1e9;
        System.out.printf("kopd million: produced %d records in %.1f s = %.0f records/s%n",
                MILLION, produceS, MILLION / produceS);

        List<TopicPartition> tps = partitions(topic, PARTITIONS);
        long perPartition = MILLION / PARTITIONS;
        long total = 0;
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "10000"))) {
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(30));
            for (TopicPartition tp : tps) {
                assertEquals(perPartition, end.get(tp), "end offset of " + tp);
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            long[] next = new long[PARTITIONS];
            while (total < MILLION) {
                if (System.nanoTime() > deadline) {
                    fail("round trip took over 5 min; consumed " + total + " of " + MILLION
                            + ", next offsets " + Arrays.toString(next));
                }
                ConsumerRecords<byte[], byte[]> batch = c.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    int p = r.partition();
                    assertEquals(next[p], r.offset(), "offsets contiguous in partition " + p);
                    assertTrue(r.offset() < perPartition, "record past the end: " + p + "@" + r.offset());
                    int i = (int) (r.offset() * PARTITIONS + p);
                    String what = "record " + i + " (" + p + "@" + r.offset() + ")";
                    assertArrayEquals(millionKey(i), r.key(), what + ": key");
                    assertArrayEquals(millionValue(i), r.value(), what + ": value");
                    assertEquals(base + i, r.timestamp(), what + ": timestamp");
                    Header[] hs = r.headers().toArray();
                    assertEquals(1, hs.length, what + ": header count");
                    assertEquals("i", hs[0].key(), what + ": header key");
                    assertArrayEquals(longBytes(i), hs[0].value(), what + ": header value");
                    next[p]++;
                    total++;
                }
            }
            Thread.sleep(200);
            assertTrue(c.poll(Duration.ofMillis(500)).isEmpty(), "records beyond the 1,000,000 produced");
        }
        long t2 = System.nanoTime();
        assertEquals(MILLION, total, "records consumed");
        double consumeS = (t2 - t1) / 1e9;
        double allS = (t2 - t0) / 1e9;
        System.out.printf("kopd million: consumed %d records in %.1f s = %.0f records/s; round trip %.1f s%n",
                MILLION, consumeS, MILLION / consumeS, allS);
    }

    // ---- seek, ListOffsets, DeleteRecords ------------------------------------------------------

    @Test
    void seekListOffsetsAndDeleteRecords() throws Exception {
        String topic = "offsets";
        createTopic(topic, 2);
        TopicPartition tp0 = new TopicPartition(topic, 0);
        TopicPartition tp1 = new TopicPartition(topic, 1);
        int n = 100;
        long base = System.currentTimeMillis() - 3_000_000;
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of())) {
            // four flushes, so the log has batch boundaries as well as offsets inside batches
            for (int chunk = 0; chunk < 4; chunk++) {
                List<Future<RecordMetadata>> fs = new ArrayList<>();
                for (int j = chunk * 25; j < (chunk + 1) * 25; j++) {
                    for (int part = 0; part < 2; part++) {
                        fs.add(p.send(new ProducerRecord<>(topic, part, base + j * 1000L,
                                utf8("k" + j), utf8("p" + part + "-v" + j))));
                    }
                }
                p.flush();
                for (Future<RecordMetadata> f : fs) {
                    f.get(60, TimeUnit.SECONDS);
                }
            }
        }

        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of())) {
            List<TopicPartition> tps = List.of(tp0, tp1);
            assertEquals(Map.of(tp0, 0L, tp1, 0L), c.beginningOffsets(tps, Duration.ofSeconds(30)), "beginningOffsets");
            assertEquals(Map.of(tp0, (long) n, tp1, (long) n), c.endOffsets(tps, Duration.ofSeconds(30)), "endOffsets");

            // seek to the middle (inside a batch)
            c.assign(List.of(tp0));
            c.seek(tp0, 37);
            List<ConsumerRecord<byte[], byte[]>> got = readUntil(c, Map.of(tp0, (long) n), Duration.ofSeconds(30)).get(tp0);
            assertEquals(n - 37, got.size(), "records read after seek(37)");
            for (int j = 0; j < got.size(); j++) {
                ConsumerRecord<byte[], byte[]> r = got.get(j);
                assertEquals(37 + j, r.offset(), "offset after seek");
                assertEquals("p0-v" + (37 + j), new String(r.value(), StandardCharsets.UTF_8), "value at offset " + r.offset());
                assertEquals(base + (37 + j) * 1000L, r.timestamp(), "timestamp at offset " + r.offset());
            }

            // offsetsForTimes
            Map<TopicPartition, Long> query = new HashMap<>();
            query.put(tp0, base + 42_000L);          // exact timestamp of offset 42
            query.put(tp1, base + 60_500L);          // between 60 and 61 -> 61
            Map<TopicPartition, OffsetAndTimestamp> ft = c.offsetsForTimes(query, Duration.ofSeconds(30));
            assertNotNull(ft.get(tp0), "offsetsForTimes(tp0) " + ft);
            assertEquals(42, ft.get(tp0).offset(), "offsetsForTimes exact timestamp");
            assertEquals(base + 42_000L, ft.get(tp0).timestamp(), "offsetsForTimes timestamp");
            assertNotNull(ft.get(tp1), "offsetsForTimes(tp1) " + ft);
            assertEquals(61, ft.get(tp1).offset(), "offsetsForTimes between two timestamps");
            assertEquals(base + 61_000L, ft.get(tp1).timestamp());
            ft = c.offsetsForTimes(Map.of(tp0, base - 5_000L, tp1, base + n * 1000L + 1), Duration.ofSeconds(30));
            assertNotNull(ft.get(tp0), "offsetsForTimes before the first record " + ft);
            assertEquals(0, ft.get(tp0).offset(), "offsetsForTimes before the first record");
            assertNull(ft.get(tp1), "offsetsForTimes after the last record must be null: " + ft);
        }

        // the same through the AdminClient (ListOffsets), including max-timestamp
        ListOffsetsResult lo = admin.listOffsets(Map.of(tp0, OffsetSpec.earliest(), tp1, OffsetSpec.latest()));
        assertEquals(0, get(lo.partitionResult(tp0)).offset(), "admin earliest");
        assertEquals(n, get(lo.partitionResult(tp1)).offset(), "admin latest");
        ListOffsetsResult.ListOffsetsResultInfo mx = get(admin.listOffsets(Map.of(tp0, OffsetSpec.maxTimestamp()))
                .partitionResult(tp0));
        assertEquals(n - 1, mx.offset(), "admin max-timestamp offset");
        assertEquals(base + (n - 1) * 1000L, mx.timestamp(), "admin max-timestamp timestamp");
        assertEquals(10, get(admin.listOffsets(Map.of(tp0, OffsetSpec.forTimestamp(base + 10_000L)))
                .partitionResult(tp0)).offset(), "admin forTimestamp");

        // DeleteRecords moves the log start offset
        DeletedRecords dr = get(admin.deleteRecords(Map.of(tp0, RecordsToDelete.beforeOffset(30))).lowWatermarks().get(tp0));
        assertEquals(30, dr.lowWatermark(), "deleteRecords low watermark");
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of())) {
            assertEquals(Map.of(tp0, 30L, tp1, 0L), c.beginningOffsets(List.of(tp0, tp1), Duration.ofSeconds(30)),
                    "beginningOffsets after deleteRecords(tp0, 30)");
            assertEquals(Map.of(tp0, (long) n), c.endOffsets(List.of(tp0), Duration.ofSeconds(30)),
                    "endOffsets after deleteRecords");

            c.assign(List.of(tp0));
            c.seekToBeginning(List.of(tp0));
            List<ConsumerRecord<byte[], byte[]>> got = readUntil(c, Map.of(tp0, (long) n), Duration.ofSeconds(30)).get(tp0);
            assertEquals(n - 30, got.size(), "records after deleteRecords");
            assertEquals(30, got.get(0).offset(), "first offset after deleteRecords");
            assertEquals("p0-v30", new String(got.get(0).value(), StandardCharsets.UTF_8));

            // a fetch below the log start is out of range (auto.offset.reset=none)
            c.seek(tp0, 10);
            assertThrows(OffsetOutOfRangeException.class, () -> {
                long dl = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                while (System.nanoTime() < dl) {
                    c.poll(Duration.ofMillis(500));
                }
            }, "fetching offset 10 after deleteRecords(30) must be OFFSET_OUT_OF_RANGE");
        }
        assertEquals(30, get(admin.listOffsets(Map.of(tp0, OffsetSpec.earliest())).partitionResult(tp0)).offset(),
                "admin earliest after deleteRecords");

        // beyond the high watermark: OffsetOutOfRange; -1 = up to the high watermark
        Throwable t = failure(admin.deleteRecords(Map.of(tp0, RecordsToDelete.beforeOffset(n + 50))).all());
        assertInstanceOf(org.apache.kafka.common.errors.OffsetOutOfRangeException.class, t,
                "deleteRecords beyond the high watermark: " + t);
        DeletedRecords all = get(admin.deleteRecords(Map.of(tp1, RecordsToDelete.beforeOffset(-1))).lowWatermarks().get(tp1));
        assertEquals(n, all.lowWatermark(), "deleteRecords(-1) deletes up to the high watermark");
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of())) {
            RecordMetadata md = p.send(new ProducerRecord<>(topic, 1, utf8("after"), utf8("after-delete"))).get(60, TimeUnit.SECONDS);
            assertEquals(n, md.offset(), "offset of a record produced after deleting everything");
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of())) {
            assertEquals(Map.of(tp1, (long) n), c.beginningOffsets(List.of(tp1), Duration.ofSeconds(30)));
            c.assign(List.of(tp1));
            c.seekToBeginning(List.of(tp1));
            List<ConsumerRecord<byte[], byte[]>> got = readUntil(c, Map.of(tp1, n + 1L), Duration.ofSeconds(30)).get(tp1);
            assertEquals(1, got.size(), "records after deleting all and producing one");
            assertEquals("after-delete", new String(got.get(0).value(), StandardCharsets.UTF_8));
        }

        // a timestamp whose record was deleted: the first offset at or after the log start
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of())) {
            OffsetAndTimestamp early = c.offsetsForTimes(Map.of(tp0, base + 10_000L), Duration.ofSeconds(30)).get(tp0);
            assertNotNull(early, "offsetsForTimes for a deleted timestamp");
            assertEquals(30, early.offset(), "offsetsForTimes for a timestamp below the log start");
            assertEquals(base + 30_000L, early.timestamp(), "timestamp of offsetsForTimes below the log start");
        }
    }

    // ---- leaders and routing -------------------------------------------------------------------

    @Test
    void leadersSpreadAndProducerRoutesToEachLeader() throws Exception {
        String topic = "spread";
        createTopic(topic, PARTITIONS);
        TopicDescription d = describe(admin, topic);
        Map<Integer, Integer> leaders = leaders(d);
        assertEquals(Set.of(0, 1), new TreeSet<>(leaders.values()), "leaders spread over both brokers: " + leaders);

        int per = 10;
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of())) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int j = 0; j < per; j++) {
                for (int part = 0; part < PARTITIONS; part++) {
                    fs.add(p.send(new ProducerRecord<>(topic, part, utf8("k"), utf8(part + ":" + j))));
                }
            }
            p.flush();
            for (int i = 0; i < fs.size(); i++) {
                RecordMetadata md = fs.get(i).get(60, TimeUnit.SECONDS);
                assertEquals(i % PARTITIONS, md.partition(), "partition of send " + i);
                assertEquals(i / PARTITIONS, md.offset(), "offset of send " + i);
            }
        }
        Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
        partitions(topic, PARTITIONS).forEach(tp -> latest.put(tp, OffsetSpec.latest()));
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> ends = get(admin.listOffsets(latest).all());
        for (TopicPartition tp : partitions(topic, PARTITIONS)) {
            assertEquals(per, ends.get(tp).offset(), "end offset of " + tp);
        }
    }

    /** A raw Kafka connection: size-prefixed request/response frames built with kafka-clients' codec. */
    static final class Raw implements AutoCloseable {
        final Socket socket;
        final DataInputStream in;
        final DataOutputStream out;
        final AtomicInteger correlation = new AtomicInteger(1);

        Raw(int port) throws Exception {
            socket = new Socket();
            socket.connect(new InetSocketAddress("127.0.0.1", port), 5000);
            socket.setSoTimeout(20000);
            in = new DataInputStream(socket.getInputStream());
            out = new DataOutputStream(socket.getOutputStream());
        }

        AbstractResponse send(AbstractRequest req, ApiKeys key) throws Exception {
            RequestHeader h = new RequestHeader(key, req.version(), "kopd-raw-test", correlation.getAndIncrement());
            ByteBuffer b = req.serializeWithHeader(h);
            byte[] bytes = new byte[b.remaining()];
            b.get(bytes);
            out.writeInt(bytes.length);
            out.write(bytes);
            out.flush();
            int size = in.readInt();
            byte[] resp = new byte[size];
            in.readFully(resp);
            return AbstractResponse.parseResponse(ByteBuffer.wrap(resp), h);
        }

        short maxVersion(ApiKeys key) throws Exception {
            ApiVersionsResponse r = (ApiVersionsResponse) send(new ApiVersionsRequest.Builder().build((short) 3), ApiKeys.API_VERSIONS);
            assertEquals(Errors.NONE.code(), r.data().errorCode(), "ApiVersions error");
            ApiVersion v = r.data().apiKeys().find(key.id);
            assertNotNull(v, key + " missing from ApiVersions");
            return v.maxVersion();
        }

        @Override
        public void close() throws Exception {
            socket.close();
        }
    }

    static ProduceResponseData.PartitionProduceResponse rawProduce(Raw raw, short version, String topic, int partition,
            byte[] value) throws Exception {
        MemoryRecords recs = MemoryRecords.withRecords(Compression.NONE,
                new SimpleRecord(System.currentTimeMillis(), utf8("raw"), value));
        ProduceRequestData data = new ProduceRequestData()
                .setAcks((short) -1)
                .setTimeoutMs(10000)
                .setTopicData(new ProduceRequestData.TopicProduceDataCollection(List.of(
                        new ProduceRequestData.TopicProduceData()
                                .setName(topic)
                                .setPartitionData(List.of(new ProduceRequestData.PartitionProduceData()
                                        .setIndex(partition)
                                        .setRecords(recs)))).iterator()));
        ProduceResponse resp = (ProduceResponse) raw.send(new ProduceRequest.Builder(version, version, data).build(version),
                ApiKeys.PRODUCE);
        List<ProduceResponseData.PartitionProduceResponse> parts = new ArrayList<>();
        resp.data().responses().forEach(t -> parts.addAll(t.partitionResponses()));
        assertEquals(1, parts.size(), "partition responses: " + resp.data());
        assertEquals(partition, parts.get(0).index(), "partition in response: " + resp.data());
        return parts.get(0);
    }

    @Test
    void produceToANonLeaderIsRejected() throws Exception {
        String topic = "wrong-broker";
        createTopic(topic, PARTITIONS);
        Map<Integer, Integer> leaders = leaders(describe(admin, topic));
        int partition = 3;
        int leader = leaders.get(partition);
        int other = 1 - leader;
        short version;
        try (Raw raw = new Raw(kopd.port + leader)) {
            // v13 names topics by id; the name-based versions are what this test builds
            version = (short) Math.min(raw.maxVersion(ApiKeys.PRODUCE), 12);
            assertTrue(version >= 3, "Produce max version " + version);
        }
        try (Raw raw = new Raw(kopd.port + other)) {
            ProduceResponseData.PartitionProduceResponse r = rawProduce(raw, version, topic, partition, utf8("misrouted"));
            assertEquals(Errors.NOT_LEADER_OR_FOLLOWER, Errors.forCode(r.errorCode()),
                    "produce v" + version + " of partition " + partition + " (leader " + leader + ") to broker " + other + ": " + r);
            if (version >= 10) {
                // KIP-951: the response names the current leader
                assertEquals(leader, r.currentLeader().leaderId(), "currentLeader in NOT_LEADER_OR_FOLLOWER response: " + r);
            }
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of())) {
            TopicPartition tp = new TopicPartition(topic, partition);
            assertEquals(0L, c.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp), "a rejected produce appended nothing");
        }
        try (Raw raw = new Raw(kopd.port + leader)) {
            ProduceResponseData.PartitionProduceResponse r = rawProduce(raw, version, topic, partition, utf8("routed"));
            assertEquals(Errors.NONE, Errors.forCode(r.errorCode()), "produce to the leader: " + r);
            assertEquals(0, r.baseOffset(), "base offset of the first record: " + r);
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of())) {
            TopicPartition tp = new TopicPartition(topic, partition);
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> got = readUntil(c, Map.of(tp, 1L), Duration.ofSeconds(30)).get(tp);
            assertEquals(1, got.size());
            assertEquals("routed", new String(got.get(0).value(), StandardCharsets.UTF_8));
        }
    }
}
